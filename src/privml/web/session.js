// Signing in to the coordinator's dashboard pages (/ and /runs).
//
// Theory of operation: the admin types the admin token once; it goes to
// POST /v1/admin/session in the Authorization header (never in a URL or a stored field),
// the input is cleared and the token dropped. The coordinator answers with a session cookie
// that scripts cannot read (HttpOnly, Secure, SameSite=Strict) and a CSRF token, kept
// here in memory only; after a reload GET /v1/admin/session hands the CSRF token back to
// the session itself. Every later call rides on the cookie: reads as they are, changes with
// the X-CSRF-Token header. A 401 anywhere means the session is gone (signed out, expired,
// its token revoked): the page shows the sign-in form again.

const $ = (id) => document.getElementById(id);
const PROTOCOL = {"X-Privml-Protocol": "1"};

export class SignedOut extends Error {
  constructor(detail) {
    super(detail || "not signed in");
    this.name = "SignedOut";
  }
}

export const session = {label: null, csrf: null};

async function errorOf(resp) {
  const body = await resp.json().catch(() => ({}));
  return `${resp.status} ${body.error || "error"}: ${body.detail || resp.statusText}`;
}

/** GET a dashboard endpoint with the session cookie; SignedOut on 401. */
export async function getJson(path) {
  const resp = await fetch(path, {headers: PROTOCOL, cache: "no-store",
                                  credentials: "same-origin"});
  if (resp.status === 401) throw new SignedOut(await errorOf(resp));
  if (!resp.ok) throw new Error(await errorOf(resp));
  return resp.json();
}

/** A state-changing call: the cookie and the session's CSRF token. */
export async function postJson(path, body) {
  const resp = await fetch(path, {
    method: "POST", cache: "no-store", credentials: "same-origin",
    headers: {...PROTOCOL, "X-CSRF-Token": session.csrf || "",
              "Content-Type": "application/json"},
    body: JSON.stringify(body || {})});
  if (resp.status === 401) throw new SignedOut(await errorOf(resp));
  if (!resp.ok) throw new Error(await errorOf(resp));
  return resp.json();
}

function say(text, kind = "") {
  const msg = $("signin-msg");
  msg.textContent = text;
  msg.className = `msg ${kind}`;
}

function showSignedIn(signedIn) {
  $("signin").hidden = signedIn;
  $("who").hidden = !signedIn;
  $("board").hidden = !signedIn;
  $("who-label").textContent = signedIn ? `Signed in as ${session.label}` : "";
}

/** Show the sign-in form (with why), and forget the session. */
export function signedOut(why) {
  session.label = null;
  session.csrf = null;
  showSignedIn(false);
  if (why) say(why, "error");
  $("admin-token").focus();
}

async function signIn(token) {
  const resp = await fetch("/v1/admin/session", {
    method: "POST", cache: "no-store", credentials: "same-origin",
    headers: {...PROTOCOL, "Authorization": `Bearer ${token}`}});
  if (!resp.ok) {
    const body = await resp.json().catch(() => ({}));
    if (resp.status === 401) {
      throw new Error("This admin token was refused: it is wrong, expired or revoked.");
    }
    if (resp.status === 403) {
      throw new Error("This is not an admin token (a client token cannot open the " +
                      "dashboard).");
    }
    throw new Error(`The coordinator refused (${resp.status} ${body.error || ""}).`);
  }
  const body = await resp.json();
  session.label = body.label;
  session.csrf = body.csrf;
}

/**
 * Wire the sign-in form and the sign-out button; calls onSignedIn() once signed in (now,
 * from an existing session, or after the form), onSignedOut() when the admin signs out.
 */
export async function startSession(onSignedIn, onSignedOut = () => {}) {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("admin-token");
    const token = input.value.trim();
    input.value = "";  // posted once, then forgotten
    if (!token) {
      say("Enter the admin token (privml tokens create DIR --kind admin).", "error");
      return;
    }
    say("Signing in…");
    try {
      await signIn(token);
    } catch (err) {
      say(err.message, "error");
      input.focus();
      return;
    }
    say("");
    showSignedIn(true);
    onSignedIn();
  });
  $("sign-out").addEventListener("click", async () => {
    try {
      await postJson("/v1/admin/session/logout");
    } catch (err) {
      // Signed out already, or the coordinator is away: the page forgets the session anyway.
    }
    onSignedOut();
    signedOut("Signed out.");
  });
  try {
    const who = await getJson("/v1/admin/session");
    session.label = who.label;
    session.csrf = who.csrf;
    showSignedIn(true);
    onSignedIn();
  } catch (err) {
    signedOut(err instanceof SignedOut ? "" : `The coordinator is unreachable: ${err.message}`);
  }
}

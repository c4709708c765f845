// The coordinator's web-port API as the pages use it: a bearer token in a header (never in
// a URL), the protocol header, and retries.
//
// Theory of operation: a request that fails to reach the coordinator (network error) or
// that it answers 5xx is retried with exponential backoff and full jitter, for as long as
// the caller's `shouldGo()` says so; the page shows each wait through `onWait`. Requests
// that change state carry an id chosen before the first try (the update id, the SecAgg
// message itself), so a retry is answered as the first try was and counts once. A 401 is a
// TokenError (wrong, expired or revoked token: retrying cannot help); any other 4xx is a
// Refused error carrying the coordinator's error code.

export class TokenError extends Error {
  constructor(detail) {
    super("This join token was refused: it is wrong, expired or revoked. Ask the " +
          "federation's operator for a new one." + (detail ? ` (${detail})` : ""));
    this.name = "TokenError";
    this.code = "unauthorized";
  }
}

export class Refused extends Error {
  constructor(status, code, detail) {
    super(`the coordinator refused (${status} ${code}): ${detail}`);
    this.name = "Refused";
    this.status = status;
    this.code = code;
  }
}

export class Stopped extends Error {
  constructor() {
    super("stopped");
    this.name = "Stopped";
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Api {
  constructor({token, base = "", onWait = () => {}, shouldGo = () => true,
               backoff = 250, maxDelay = 8000} = {}) {
    this.token = token;
    this.base = base;
    this.onWait = onWait;
    this.shouldGo = shouldGo;
    this.backoff = backoff;
    this.maxDelay = maxDelay;
    this.retries = 0;
  }

  headers(extra = {}) {
    return {"Authorization": `Bearer ${this.token}`, "X-Privml-Protocol": "1", ...extra};
  }

  /** fetch with retries; returns the Response of a 2xx/3xx answer. */
  async request(method, path, {body, headers = {}, params} = {}) {
    const query = params ? "?" + new URLSearchParams(params).toString() : "";
    for (let attempt = 0; ; attempt++) {
      if (!this.shouldGo()) throw new Stopped();
      let resp = null;
      let why = "";
      try {
        resp = await fetch(this.base + path + query, {method, body, cache: "no-store",
                                                      headers: this.headers(headers)});
      } catch (err) {
        why = `coordinator unreachable (${err.message})`;
      }
      if (resp !== null && resp.status < 500) {
        if (resp.status === 401) throw new TokenError(await detailOf(resp));
        if (resp.status >= 400) {
          const body = await resp.json().catch(() => ({}));
          throw new Refused(resp.status, body.error || "http_error", body.detail || "");
        }
        return resp;
      }
      if (resp !== null) why = `coordinator answered ${resp.status}`;
      const delay = Math.random() * Math.min(this.maxDelay, this.backoff * 2 ** attempt);
      this.retries += 1;
      this.onWait(why, delay);
      await sleep(delay);
    }
  }

  async json(method, path, options = {}) {
    return (await this.request(method, path, options)).json();
  }

  async bytes(method, path, options = {}) {
    return new Uint8Array(await (await this.request(method, path, options)).arrayBuffer());
  }
}

async function detailOf(resp) {
  const body = await resp.json().catch(() => ({}));
  return body.detail || "";
}

/** A fresh random id (for update ids): 22 url-safe characters. */
export function randomId() {
  const raw = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

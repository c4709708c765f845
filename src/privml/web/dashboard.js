// The coordinator's dashboard (/): the current run, live, without reloading.
//
// Theory of operation: once signed in (session.js), the page opens one EventSource on
// /v1/admin/events; the coordinator sends a small `status` snapshot whenever the run
// changes (coalesced to a few a second), which updates the figures at once. When a snapshot
// shows a round closed, an evaluation or a privacy charge came in, or a request was refused,
// the page fetches /v1/admin/overview (one at a time; a change during a fetch brings one
// more) and redraws the charts and tables. A stream lasts 20 s and the browser
// reconnects by itself; if it cannot (the session ended), the page asks the session and
// shows the sign-in form. Everything from the coordinator goes in through textContent.

import {RoundChart, chartFigure, fmt} from "./charts.js";
import {SignedOut, getJson, signedOut, startSession} from "./session.js";

const $ = (id) => document.getElementById(id);
const board = {source: null, snapshot: null, overview: null, charts: {}, events: 0,
               overviews: 0, fetching: false, again: false};
globalThis.privmlDashboard = board;  // for people (and tests) looking from the console

// The snapshot figures that the overview draws from: when one moves (whatever the event's
// kinds say: a reconnect may have skipped versions), the page fetches the overview again.
const DRAWN = ["run", "closed", "evaluations", "spent", "refusals", "finished"];

function needsOverview(before, s) {
  return !before || DRAWN.some((k) => before[k] !== s[k]);
}

function percent(v) {
  return v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)} %`;
}

function makeCharts() {
  const box = $("charts");
  box.replaceChildren();
  const specs = {
    accuracy: {heading: "Accuracy and loss (federated evaluation)",
               opts: {title: "Accuracy and loss", yLabel: "accuracy", y2Label: "loss",
                      series: [{key: "accuracy", label: "accuracy", digits: 3},
                               {key: "loss", label: "loss", digits: 3, scale: "y2"}]}},
    privacy: {heading: "Privacy budget: ε spent",
              opts: {title: "ε spent", yLabel: "ε",
                     series: [{key: "epsilon", label: "ε spent", digits: 3},
                              {key: "target", label: "ε budget", digits: 3,
                               dash: [6, 4]}]}},
    clients: {heading: "Clients per round",
              opts: {title: "Clients per round", yLabel: "clients", whole: true,
                     series: [{key: "enrolled", label: "enrolled", digits: 0},
                              {key: "sampled", label: "sampled", digits: 0},
                              {key: "reported", label: "reported", digits: 0},
                              {key: "dropped", label: "dropped or late", digits: 0}]}},
  };
  for (const [name, spec] of Object.entries(specs)) {
    const fig = chartFigure(`chart-${name}`, spec.heading);
    box.append(fig);
    board.charts[name] = new RoundChart(fig, spec.opts);
  }
}

function showSnapshot(s) {
  const before = board.snapshot;
  board.snapshot = s;
  $("run").textContent = s.run ? s.run.slice(0, 12) : "none (idle)";
  $("run").title = s.run || "";
  $("round").textContent = s.run ? String(s.round) : "–";
  $("rounds").textContent = s.rounds === null ? "–" : String(s.rounds);
  $("phase").textContent = s.phase;
  $("secagg").textContent = s.secagg_stage === null ? "off or not started"
    : `${s.secagg_stage} (waiting for ${s.secagg_waiting})`;
  $("enrolled").textContent = String(s.enrolled);
  $("sampled").textContent = String(s.sampled);
  $("reported").textContent = String(s.phase === "evaluating" ? s.reported : s.accepted);
  $("pending").textContent = String(s.pending);
  $("accuracy").textContent = percent(s.accuracy);
  $("epsilon").textContent = s.epsilon === null && s.target_epsilon === null ? "no DP"
    : `${fmt(s.epsilon ?? 0, 3)} / ${s.target_epsilon === null ? "no budget"
                                                                   : fmt(s.target_epsilon, 2)}`;
  $("refusals").textContent = String(s.refusals);
  // The live region speaks only when the round or the phase changes, not at every update.
  if (!before || before.round !== s.round || before.phase !== s.phase || before.run !== s.run) {
    $("round-status").textContent = !s.run ? "No run is being served."
      : s.finished ? `Run finished after round ${s.round} of ${s.rounds}.`
        : `Round ${s.round} of ${s.rounds}: ${s.phase}.`;
  }
}

function showOverview(o) {
  board.overview = o;
  const rounds = o.rounds_table || [];
  board.charts.clients.setRows(rounds.map((r) => ({
    round: r.round, enrolled: r.enrolled, sampled: r.sampled, reported: r.reported,
    dropped: r.dropped + r.timed_out})));
  board.charts.accuracy.setRows(o.evaluations || []);
  const privacy = o.privacy;
  board.charts.privacy.empty = privacy ? "no round charged yet"
    : "no differential privacy in this run";
  board.charts.privacy.setRows(privacy ? privacy.per_round.map((p) => ({
    round: p.round, epsilon: p.epsilon, target: privacy.target_epsilon})) : []);
  showSecurity(o.security);
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  return tr;
}

function showSecurity(sec) {
  const codes = Object.entries(sec.by_code);
  $("security-summary").textContent = sec.total === 0 ? "No request was refused."
    : `${sec.total} request${sec.total === 1 ? "" : "s"} refused (by code below; the ` +
      "most recent first).";
  $("security-codes").tBodies[0].replaceChildren(...codes.map(([c, n]) => row([c, String(n)])));
  $("security-recent").tBodies[0].replaceChildren(...sec.recent.map((e) => row([
    new Date(e.at * 1000).toISOString().slice(11, 19), e.code, e.client, e.path])));
}

async function refreshOverview() {
  if (board.fetching) {
    board.again = true;
    return;
  }
  board.fetching = true;
  try {
    do {
      board.again = false;
      showOverview(await getJson("/v1/admin/overview"));
      board.overviews += 1;
    } while (board.again);
  } catch (err) {
    if (err instanceof SignedOut) stop("Your session has ended: sign in again.");
  } finally {
    board.fetching = false;
  }
}

function stop(why) {
  if (board.source) board.source.close();
  board.source = null;
  signedOut(why);
}

function connect() {
  if (board.source) board.source.close();
  const source = new EventSource("/v1/admin/events");
  board.source = source;
  source.addEventListener("open", () => { $("conn").textContent = "connected"; });
  source.addEventListener("status", (event) => {
    board.events += 1;
    const s = JSON.parse(event.data);
    const before = board.snapshot;
    showSnapshot(s);
    if (needsOverview(before, s)) refreshOverview();
  });
  source.addEventListener("session", () => stop("Your session has ended: sign in again."));
  source.addEventListener("error", async () => {
    $("conn").textContent = "reconnecting";
    if (source.readyState !== EventSource.CLOSED) return;  // the browser retries itself
    try {
      await getJson("/v1/admin/session");
      setTimeout(connect, 2000);  // the coordinator was away: try again
    } catch (err) {
      if (err instanceof SignedOut) stop("Your session has ended: sign in again.");
      else setTimeout(connect, 5000);
    }
  });
}

function signedIn() {
  if (!board.charts.accuracy) makeCharts();
  connect();
  refreshOverview();
}

startSession(signedIn, () => {
  if (board.source) board.source.close();
  board.source = null;
});

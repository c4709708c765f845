// The runs page (/runs): past runs of the coordinator's store, one run's curves, or two
// side by side.
//
// Theory of operation: GET /v1/admin/runs/history lists the runs with their configuration
// and final figures; "Open" fetches one run's per-round rows (/v1/admin/runs/history/ID)
// and draws them with the dashboard's charts; ticking two runs and "Compare" draws both in
// two columns (one under the other in a narrow window) above a table of the settings that
// differ. All text from the coordinator goes in through textContent.

import {RoundChart, chartFigure, fmt} from "./charts.js";
import {SignedOut, getJson, signedOut, startSession} from "./session.js";

const $ = (id) => document.getElementById(id);
const view = {runs: [], shown: [], charts: []};
globalThis.privmlRuns = view;  // for people (and tests) looking from the console

function say(text, kind = "") {
  $("runs-msg").textContent = text;
  $("runs-msg").className = `msg ${kind}`;
}

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  return td;
}

function selected() {
  return [...document.querySelectorAll("#runs input[type=checkbox]:checked")]
    .map((box) => box.value);
}

function listRuns(runs) {
  view.runs = runs;
  const rows = runs.map((r) => {
    const tr = document.createElement("tr");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = r.run;
    box.setAttribute("aria-label", `compare run ${r.run.slice(0, 12)}`);
    box.addEventListener("change", () => {
      $("compare").disabled = selected().length !== 2;
    });
    const open = document.createElement("button");
    open.type = "button";
    open.className = "secondary open-run";
    open.textContent = `Open ${r.run.slice(0, 12)}`;
    open.setAttribute("aria-label", `open run ${r.run}`);
    open.addEventListener("click", () => show([r.run]));
    const cfg = r.config || {};
    tr.append(cell(box), cell(open), cell((r.created_at || "–").slice(0, 19).replace("T", " ")),
              cell(r.status), cell(`${r.rounds_closed} / ${cfg.rounds ?? "?"}`),
              cell(r.clients === null ? "–" : String(r.clients)),
              cell(r.accuracy === null ? "–" : `${(100 * r.accuracy).toFixed(1)} %`),
              cell(fmt(r.loss, 3)), cell(r.epsilon === null ? "no DP" : fmt(r.epsilon, 3)),
              cell(String(cfg.strategy ?? "–")), cell(cfg.secagg ? "on" : "off"));
    return tr;
  });
  $("runs").tBodies[0].replaceChildren(...rows);
  say(runs.length ? `${runs.length} run${runs.length === 1 ? "" : "s"}.`
    : "No runs yet: the coordinator's store holds none.");
}

function panel(run) {
  const box = document.createElement("article");
  box.className = "run-panel";
  box.dataset.run = run.run;
  const h = document.createElement("h3");
  h.textContent = `Run ${run.run}`;
  const facts = document.createElement("dl");
  const f = run.final;
  const items = [["status", run.status], ["started", (run.created_at || "–").slice(0, 19)],
                 ["rounds closed", `${f.rounds_closed} (${f.rounds_completed} completed)`],
                 ["final accuracy", f.accuracy === null ? "–"
                   : `${(100 * f.accuracy).toFixed(1)} %`],
                 ["final loss", fmt(f.loss, 3)],
                 ["ε spent", f.epsilon === null ? "no DP" : fmt(f.epsilon, 3)],
                 ...Object.entries(run.config).map(([k, v]) => [k, String(v)])];
  for (const [k, v] of items) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    facts.append(dt, dd);
  }
  const charts = document.createElement("div");
  charts.className = "charts";
  box.append(h, facts, charts);
  return {box, charts};
}

function draw(run, charts) {
  const id = run.run.slice(0, 8);
  const acc = chartFigure(`acc-${id}`, "Accuracy and loss", "h4");
  const eps = chartFigure(`eps-${id}`, "ε spent", "h4");
  const cli = chartFigure(`cli-${id}`, "Clients per round", "h4");
  charts.append(acc, eps, cli);
  const a = new RoundChart(acc, {title: `Run ${id}: accuracy and loss`, yLabel: "accuracy",
                                 y2Label: "loss",
                                 series: [{key: "accuracy", label: "accuracy"},
                                          {key: "loss", label: "loss", scale: "y2"}]});
  a.setRows(run.evaluations);
  const e = new RoundChart(eps, {title: `Run ${id}: ε spent`, yLabel: "ε",
                                 empty: run.target_epsilon === null && !run.privacy.length
                                   ? "no differential privacy in this run" : "no data",
                                 series: [{key: "epsilon", label: "ε spent"},
                                          {key: "target", label: "ε budget", dash: [6, 4]}]});
  e.setRows(run.privacy.map((p) => ({...p, target: run.target_epsilon})));
  const c = new RoundChart(cli, {title: `Run ${id}: clients`, yLabel: "clients",
                                 whole: true,
                                 series: [{key: "sampled", label: "sampled", digits: 0},
                                          {key: "reported", label: "reported", digits: 0},
                                          {key: "dropped", label: "dropped or late",
                                           digits: 0}]});
  c.setRows(run.rounds_table.map((r) => ({...r, dropped: r.dropped + r.timed_out})));
  view.charts.push(a, e, c);
}

function differences(runs) {
  const box = $("differences");
  box.replaceChildren();
  if (runs.length !== 2) return;
  const [a, b] = runs.map((r) => r.full_config || r.config);
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])]
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k])).sort();
  const table = document.createElement("table");
  table.className = "data";
  table.id = "diff-table";
  const caption = document.createElement("caption");
  caption.textContent = keys.length ? "Settings that differ"
    : "The two runs have the same settings";
  const head = document.createElement("tr");
  for (const label of ["setting", runs[0].run.slice(0, 12), runs[1].run.slice(0, 12)]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    head.append(th);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  const tbody = document.createElement("tbody");
  for (const k of keys) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = k;
    tr.append(th, cell(JSON.stringify(a[k] ?? null)), cell(JSON.stringify(b[k] ?? null)));
    tbody.append(tr);
  }
  table.append(caption, thead, tbody);
  const wrap = document.createElement("div");
  wrap.className = "scroll";
  wrap.tabIndex = 0;  // a scrolling region must be reachable from the keyboard
  wrap.setAttribute("role", "region");
  wrap.setAttribute("aria-label", "Settings that differ");
  wrap.append(table);
  box.append(wrap);
}

async function show(ids) {
  let runs;
  try {
    runs = await Promise.all(ids.map((id) => getJson(`/v1/admin/runs/history/${
      encodeURIComponent(id)}`)));
  } catch (err) {
    if (err instanceof SignedOut) signedOut("Your session has ended: sign in again.");
    else say(err.message, "error");
    return;
  }
  for (const chart of view.charts) chart.destroy();
  view.charts = [];
  view.shown = runs.map((r) => r.run);
  $("detail").hidden = false;
  $("detail-h").textContent = runs.length === 2
    ? `Comparing ${runs[0].run.slice(0, 12)} and ${runs[1].run.slice(0, 12)}`
    : `Run ${runs[0].run.slice(0, 12)}`;
  const panels = runs.map(panel);
  $("panels").replaceChildren(...panels.map((p) => p.box));
  runs.forEach((run, i) => draw(run, panels[i].charts));
  differences(runs);
  $("detail").focus();
}

async function load() {
  try {
    const body = await getJson("/v1/admin/runs/history");
    listRuns(body.runs);
  } catch (err) {
    if (err instanceof SignedOut) signedOut("Your session has ended: sign in again.");
    else say(`Could not list the runs: ${err.message}`, "error");
  }
}

$("compare").addEventListener("click", () => {
  const ids = selected();
  if (ids.length === 2) show(ids);
});
startSession(load);

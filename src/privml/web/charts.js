// Per-round line charts (uPlot, served by the coordinator from npm) with a text alternative.
//
// Each chart draws into a canvas that a screen reader cannot read, so it comes with a
// one-line summary of the latest values (its accessible name, updated with the data) and a
// data table inside a <details> element, for everyone who prefers numbers. The chart
// follows its container's width (a ResizeObserver), so the page works in a narrow window.

import uPlot from "/vendor/uPlot.esm.js";

const PALETTE = ["#2457c5", "#c0392b", "#19713a", "#8e44ad", "#b9770e"];
// Rounds (and client counts) are whole numbers: ticks only at whole steps.
const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

function ink() {
  return getComputedStyle(document.body).color || "#222";
}

function fmt(value, digits) {
  return value === null || value === undefined || Number.isNaN(value) ? "–"
    : Number(value).toFixed(digits);
}

export class RoundChart {
  /**
   * el: the chart's <figure>, holding .chart, .summary and a <table>.
   * series: [{key, label, digits, scale?, dash?}]; x is the round. `whole`: the y axis
   * counts (whole ticks); `empty`: what the summary says while there is no data.
   */
  constructor(el, {series, title, yLabel = "", y2Label = null, height = 220, whole = false,
                   empty = "no data yet"}) {
    this.el = el;
    this.series = series;
    this.title = title;
    this.empty = empty;
    this.box = el.querySelector(".chart");
    this.summary = el.querySelector(".summary");
    this.table = el.querySelector("table");
    this.rounds = [];
    this.values = series.map(() => []);
    const axisInk = ink();
    const axes = [{label: "round", stroke: axisInk, grid: {stroke: "#8884"}, incrs: WHOLE},
                  {label: yLabel, stroke: axisInk, grid: {stroke: "#8884"}, scale: "y",
                   ...(whole ? {incrs: WHOLE} : {})}];
    if (y2Label) axes.push({label: y2Label, stroke: axisInk, side: 1, scale: "y2",
                            grid: {show: false}});
    this.plot = new uPlot({
      width: this.width(), height,
      scales: {x: {time: false}},
      legend: {live: false},
      cursor: {drag: {x: false, y: false}},
      axes,
      series: [{label: "round"}, ...series.map((s, i) => ({
        label: s.label, scale: s.scale || "y", stroke: s.color || PALETTE[i % PALETTE.length],
        width: 2, dash: s.dash, points: {show: true, size: 5},
        value: (_, v) => fmt(v, s.digits ?? 3)}))],
    }, [[], ...series.map(() => [])], this.box);
    this.box.setAttribute("role", "img");
    this.observer = new ResizeObserver(() => this.plot.setSize({width: this.width(), height}));
    this.observer.observe(this.box);
    this.describe();
  }

  width() {
    return Math.max(240, Math.floor(this.box.getBoundingClientRect().width || 320));
  }

  /** rows: [{round, <key>: value}], keys in the order of `series` (their .key). */
  setRows(rows) {
    this.rounds = rows.map((r) => r.round);
    this.values = this.series.map((s) => rows.map((r) => (r[s.key] ?? null)));
    this.plot.setData([this.rounds, ...this.values]);
    this.el.dataset.points = String(this.rounds.length);
    this.describe();
    this.fillTable(rows);
  }

  describe() {
    const n = this.rounds.length;
    let text;
    if (n === 0) {
      text = `${this.title}: ${this.empty}.`;
    } else {
      const last = this.series.map((s, i) => `${s.label} ${fmt(this.values[i][n - 1],
                                                                  s.digits ?? 3)}`);
      text = `${this.title}: ${n} point${n === 1 ? "" : "s"}; at round ` +
             `${this.rounds[n - 1]}: ${last.join(", ")}.`;
    }
    this.summary.textContent = text;
    this.box.setAttribute("aria-label", text);
  }

  fillTable(rows) {
    const head = document.createElement("tr");
    for (const label of ["round", ...this.series.map((s) => s.label)]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = label;
      head.append(th);
    }
    const body = rows.map((r) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = String(r.round);
      tr.append(th);
      for (const s of this.series) {
        const td = document.createElement("td");
        td.textContent = fmt(r[s.key], s.digits ?? 3);
        tr.append(td);
      }
      return tr;
    });
    const thead = document.createElement("thead");
    thead.append(head);
    const tbody = document.createElement("tbody");
    tbody.append(...body);
    this.table.replaceChildren(thead, tbody);
  }

  destroy() {
    this.observer.disconnect();
    this.plot.destroy();
  }
}

/** A <figure> for a chart: heading, canvas box, summary, data table (built, not parsed). */
export function chartFigure(id, heading, level = "h3") {
  const fig = document.createElement("figure");
  fig.className = "chart-figure";
  fig.id = id;
  const h = document.createElement(level);
  h.id = `${id}-h`;
  h.textContent = heading;
  const box = document.createElement("div");
  box.className = "chart";
  const summary = document.createElement("p");
  summary.className = "summary";
  const details = document.createElement("details");
  const sum = document.createElement("summary");
  sum.textContent = "Data table";
  const table = document.createElement("table");
  table.className = "data";
  const scroll = document.createElement("div");  // wide tables scroll, not the page
  scroll.className = "scroll";
  scroll.tabIndex = 0;
  scroll.setAttribute("role", "region");
  scroll.setAttribute("aria-label", `${heading}: data table`);
  scroll.append(table);
  details.append(sum, scroll);
  fig.append(h, box, summary, details);
  fig.setAttribute("aria-labelledby", h.id);
  return fig;
}

export {fmt};

"""A run's report as one self-contained HTML page (``privml report RUN --html FILE``).

Theory of operation: everything on the page comes from the run database — the run's row and
configuration, its rounds, its privacy ledger and the audits recorded with it — so a report
can be made for any past run, and the same database gives the same page byte for byte. The
page must open anywhere with no network: the figures are PNGs in ``data:`` URIs, the CSS is
one ``<style>`` element, and there is no script, no font and no link out of the page. Every
figure is also given as numbers (the per-round table) and its alt text states its final
values, so a reader who cannot see the figures loses nothing.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privml._exceptions import DataError
from privml.sim._runs import RunRow, RunStore

__all__ = ["RunData", "render_report", "write_report"]

_SEVERITIES = ("critical", "high", "medium", "low", "info")
_BLUE, _ORANGE, _RED, _GREY = "#0b57d0", "#a04000", "#b3261e", "#444444"


@dataclass(frozen=True, slots=True)
class RunData:
    """What a report shows, read from the run database."""

    row: RunRow
    config: dict[str, Any]
    rounds: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    audits: list[dict[str, Any]]

    @classmethod
    def load(cls, store: RunStore, run_id: int) -> RunData:
        row, config = store.run(run_id)
        return cls(row, config, store.rounds(run_id), store.ledger(run_id),
                   store.audits(run_id))

    @property
    def epsilon(self) -> float | None:
        return float(self.ledger[-1]["epsilon"]) if self.ledger else None

    @property
    def delta(self) -> float | None:
        return float(self.ledger[-1]["delta"]) if self.ledger else None

    @property
    def dp_configured(self) -> bool:
        return any(self.config.get(k) is not None for k in ("target_epsilon",
                                                            "noise_multiplier"))

    def epsilon_by_round(self) -> dict[int, float]:
        return {int(e["round"]): float(e["epsilon"]) for e in self.ledger}


def _num(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    return format(value, spec)


def _floats(rows: list[dict[str, Any]], key: str) -> list[float]:
    """One column for plotting: SQLite keeps NaN as NULL, matplotlib wants NaN back."""
    return [math.nan if x[key] is None else float(x[key]) for x in rows]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()  # no "Software" tag: the page names no URL, not even inside a PNG
    fig.savefig(buf, format="png", dpi=150, metadata={"Software": None})
    return buf.getvalue()


def _axes(title: str, ylabel: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.6), constrained_layout=True)
    ax = fig.subplots()
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.grid(alpha=0.3)
    return fig, ax


@dataclass(frozen=True, slots=True)
class _Figure:
    caption: str
    alt: str
    png: bytes


def _figures(d: RunData) -> list[_Figure]:
    r = d.rounds
    if not r:
        return []
    xs = [int(x["round"]) for x in r]
    acc = _floats(r, "test_accuracy")
    fig, ax = _axes("Test accuracy per round", "test accuracy")
    ax.plot(xs, acc, "o-", color=_BLUE, ms=3, label="test accuracy")
    failed = [x for x in r if x["outcome"] != "completed"]
    if failed:
        ax.plot([x["round"] for x in failed], _floats(failed, "test_accuracy"), "x",
                color=_RED, ms=8, mew=2, label="round not completed")
        ax.legend(loc="lower right")
    ax.set_ylim(0, 1)
    best = max(((a, x) for a, x in zip(acc, xs, strict=True) if not math.isnan(a)),
               default=(math.nan, xs[-1]))
    alt = (f"Line chart of test accuracy over rounds {xs[0]} to {xs[-1]}: {_num(acc[0])} "
           f"after round {xs[0]}, {_num(acc[-1])} after round {xs[-1]} (best {_num(best[0])}, "
           f"round {best[1]}).")
    if failed:
        alt += (" Rounds not completed, marked with crosses: "
                + ", ".join(str(x["round"]) for x in failed) + ".")
    out = [_Figure("Test accuracy of the global model after each round.", alt, _png(fig))]
    fig, ax = _axes("Loss per round", "cross-entropy loss")
    test, train = _floats(r, "test_loss"), _floats(r, "train_loss")
    ax.plot(xs, test, "o-", color=_BLUE, ms=3, label="test loss")
    ax.plot(xs, train, "s--", color=_ORANGE, ms=3, label="training loss (mean of clients)")
    ax.legend(loc="best")
    out.append(_Figure(
        "Test loss of the global model and mean local training loss, per round.",
        f"Line chart of loss over rounds {xs[0]} to {xs[-1]}: test loss from "
        f"{_num(test[0])} to {_num(test[-1])}; mean training loss of the clients from "
        f"{_num(train[0])} to {_num(train[-1])}.", _png(fig)))
    if d.ledger:
        out.append(_epsilon_figure(d))
    return out


def _epsilon_figure(d: RunData) -> _Figure:
    spent = d.epsilon_by_round()
    target = d.config.get("target_epsilon")
    fig, ax = _axes("Privacy spent (ε) per round", "ε spent so far")
    ax.plot(list(spent), list(spent.values()), "o-", color=_BLUE, ms=3,
            label=f"ε spent ({d.ledger[-1]['accountant']} accountant)")
    if target is not None:
        ax.axhline(float(target), color=_GREY, ls="--", label=f"target ε = {target:g}")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    last = max(spent)
    alt = (f"Line chart of the privacy spent, ε, after each round at δ = {d.delta:g}: it "
           f"rises to ε = {spent[last]:.4f} after round {last}")
    alt += (f", against a target of ε = {target:g} (dashed line)." if target is not None
            else "; no target was set.")
    return _Figure("Privacy spent so far (ε, from the run's privacy ledger) after each "
                   "round, against the run's target.", alt, _png(fig))


def _guarantee(d: RunData) -> str:
    e = html.escape
    eps, delta = d.epsilon, d.delta
    if eps is None or delta is None:
        if d.dp_configured:
            return ("<p class='claim'><strong>Differential privacy was set up, but no round "
                    "ran under it: the privacy ledger is empty and no privacy was "
                    "spent.</strong></p>")
        return ("<p class='claim'><strong>No differential privacy: this run gives no formal "
                "privacy guarantee.</strong> Nothing bounds what the final model, or the "
                "figures in this report, reveal about any one client or training example — "
                "a model can memorise its training data.</p><p>To get a guarantee, train with "
                "a privacy budget: <code>privml sim --target-epsilon 8</code>, or "
                "<code>privml demo</code> with its default <code>--dp</code>.</p>")
    last = d.ledger[-1]
    factor = f"e<sup>ε</sup> ≈ {math.exp(eps):.4g}" if eps < 700 else "e<sup>ε</sup>"
    if last["unit"] == "client":
        from privml.dp._fedavg import _CENTRAL, _DISTRIBUTED

        distributed = last["placement"] == "distributed"
        parts = [
            f"<p class='claim'><strong>Each client's whole contribution is protected at "
            f"ε = {eps:.4f}, δ = {delta:g}.</strong></p>",
            "<p>This is <em>client-level</em> differential privacy: whether or not any one "
            "client took part — all of its data, in every round it was picked — changes the "
            f"probability of any outcome of this run (the final model, these figures) by at "
            f"most a factor of {factor}, except with probability δ.</p>",
            "<p>The noise was <strong>" + ("distributed" if distributed else "central")
            + "</strong>: " + ("each client added its share of discrete Gaussian noise "
                               "before secure aggregation." if distributed else
                               "it was added once, to the sum of the clipped updates.")
            + f" The guarantee assumes that {e(_DISTRIBUTED if distributed else _CENTRAL)}."
            "</p>"]
    else:
        from privml.dp._example import ASSUMPTION

        parts = [
            f"<p class='claim'><strong>Each training example is protected at ε = {eps:.4f}, "
            f"δ = {delta:g}.</strong></p>",
            "<p>This is <em>example-level</em> differential privacy (DP-SGD on every "
            "client): adding or removing any one training example (one row, one image) "
            f"changes the probability of any outcome of this run by at most a factor of "
            f"{factor}, except with probability δ. It does not protect a client's data as a "
            "whole: a client, or a person, with many examples is protected less.</p>",
            f"<p>The guarantee assumes that {e(ASSUMPTION)}.</p>"]
    target = d.config.get("target_epsilon")
    within = ("" if target is None else
              f"; the target was ε = {float(target):g}, "
              + ("met" if eps <= float(target) * (1 + 1e-9) else "<strong>exceeded</strong>"))
    parts.append(f"<p>Accounted by the {e(str(last['accountant']).upper())} accountant over "
                 f"{len(d.ledger)} private rounds{within}.</p>")
    if d.config.get("insecure_dp_seed") is not None:
        parts.append("<p class='warn'><strong>Warning:</strong> this run used a fixed noise "
                     "seed (for tests only): its noise can be predicted, so the guarantee "
                     "above does not hold.</p>")
    return "".join(parts)


def _secagg(d: RunData) -> str:
    if d.config.get("secagg"):
        return ("<p><strong>Secure aggregation (SecAgg+) was on:</strong> the server saw only "
                "the sum of each round's updates, never one client's update.</p>")
    return ("<p><strong>Secure aggregation was off:</strong> the server (here, the party that "
            "aggregates) saw each client's model update on its own.</p>")


def _glance(d: RunData) -> str:
    row = d.row
    done = sum(x["outcome"] == "completed" for x in d.rounds)
    accs = [x["test_accuracy"] for x in d.rounds if x["test_accuracy"] is not None]
    if d.epsilon is not None:
        privacy = (f"ε = {d.epsilon:.4f}, δ = {d.delta:g} "
                   f"({html.escape(str(d.ledger[-1]['unit']))}-level)")
    else:
        privacy = "no differential privacy"
    items = [("Final test accuracy", f"{_num(row.final_accuracy)} (after round "
              f"{d.rounds[-1]['round'] if d.rounds else 'none'})"),
             ("Final test loss", _num(row.final_loss)),
             ("Best test accuracy", _num(max(accs, default=None))),
             ("Rounds completed", f"{done} of {len(d.rounds)} (planned: "
              f"{d.config.get('rounds', row.rounds)})"),
             ("Privacy", privacy),
             ("Secure aggregation", "on" if d.config.get("secagg") else "off"),
             ("Clients", f"{row.clients} ({d.config.get('per_round', '?')} per round)"),
             ("Time", f"{row.seconds_total:.1f} s in all, {row.seconds_per_round:.3f} s a "
              "round"),
             ("Audits recorded", str(len(d.audits)))]
    return "<dl class='glance'>" + "".join(
        f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in items) + "</dl>"


def _table(caption: str, ident: str, head: list[str], rows: list[list[str]],
           kind: str = "text") -> str:
    """A data table in a labelled, focusable region that scrolls on its own when it is
    wider than the screen (the page itself never does). The first cell heads its row;
    ``kind`` (a CSS class): "nums" never breaks a number, "pairs" breaks long values."""
    th = "".join(f"<th scope='col'>{h}</th>" for h in head)
    body = "".join("<tr><th scope='row'>" + r[0] + "</th>"
                   + "".join(f"<td>{c}</td>" for c in r[1:]) + "</tr>" for r in rows)
    return (f"<div class='wrap' role='region' tabindex='0' aria-labelledby='{ident}'>"
            f"<table class='{kind}'>"
            f"<caption id='{ident}'>{caption}</caption><thead><tr>{th}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def _rounds_table(d: RunData) -> str:
    eps = d.epsilon_by_round()
    head = ["Round", "Outcome", "Updates", "Dropped", "Training loss", "Test loss",
            "Test accuracy"] + (["ε spent"] if eps else [])
    rows = [[str(x["round"]), html.escape(str(x["outcome"])), str(x["updates"]),
             str(x["dropped"]), _num(x["train_loss"]), _num(x["test_loss"]),
             _num(x["test_accuracy"])] + ([_num(eps.get(x["round"]))] if eps else [])
            for x in d.rounds]
    return _table("The figures of every round", "rounds-caption", head, rows, "nums")


def _config_value(key: str, value: Any) -> str:
    if key == "audit_canaries" and isinstance(value, dict):  # the audit's secret
        return (f"{value.get('m', '?')} canaries (which ones were trained on is secret: kept "
                "in the run database, not shown)")
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value if isinstance(value, str) else json.dumps(value)


def _config_table(d: RunData) -> str:
    rows = [[html.escape(k), html.escape(_config_value(k, v))]
            for k, v in sorted(d.config.items())]
    return _table("The run's settings, as recorded", "config-caption", ["Setting", "Value"],
                  rows, "pairs")


def _audit(i: int, a: dict[str, Any]) -> str:
    e, rep, kind = html.escape, a["report"], str(a["kind"])
    findings = rep.get("findings", [])
    worst = next((s for s in _SEVERITIES if any(f["severity"] == s for f in findings)), None)
    rows = [[f"<span class='sev {e(f['severity'])}'>{e(f['severity'])}</span> "
             f"<span class='id'>{e(f['id'])}</span>", e(f["title"]), e(f["evidence"]),
             e(f["fix"])]
            for f in findings]
    found = (f"{len(findings)} finding{'s' * (len(findings) != 1)}" if findings
             else "No findings") + (f", the worst <span class='sev {worst}'>{worst}</span>"
                                    if worst else "")
    parts = [f"<section aria-labelledby='audit-{i}'><h3 id='audit-{i}'>"
             f"{e(kind.capitalize())} audit, {e(a['audited_at'])}</h3><p>What was audited: "
             f"{e(str(rep.get('target', '')))}. {found}; {len(rep.get('passed', []))} "
             "checks passed.</p>"]
    if rows:
        parts.append(_table(f"Findings of the {e(kind)} audit", f"audit-{i}-findings",
                            ["Severity and id", "Finding", "Evidence", "Fix"], rows))
    metrics = rep.get("metrics") or {}
    if metrics:
        parts.append(f"<details><summary>Measured figures ({len(metrics)})</summary>"
                     + _table("Figures the audit measured", f"audit-{i}-metrics",
                              ["Figure", "Value"],
                              [[e(str(k)), e(_metric(v))] for k, v in metrics.items()],
                              "pairs")
                     + "</details>")
    if rep.get("passed"):
        parts.append(f"<details><summary>Checks passed ({len(rep['passed'])})</summary><ul>"
                     + "".join(f"<li>{e(str(p))}</li>" for p in rep["passed"])
                     + "</ul></details>")
    return "".join(parts) + "</section>"


def _metric(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _audits(d: RunData) -> str:
    if not d.audits:
        return (f"<p>No audit has been recorded for this run. <code>privml audit privacy "
                f"--run {d.row.id}</code> attacks its model and checks its privacy ledger; "
                "the other audits record their findings here when given "
                f"<code>--run {d.row.id}</code>.</p>")
    return "".join(_audit(i, a) for i, a in enumerate(d.audits, start=1))


_HOW_TO_READ = """<dl>
<dt>Test accuracy</dt><dd>The share of held-out test examples — never used for training — that
the model classifies correctly, from 0 to 1. Higher is better.</dd>
<dt>Loss</dt><dd>How wrong the model's predictions are on average (cross-entropy). Lower is
better. A training loss far below the test loss is a sign the model memorises its data.</dd>
<dt>ε (epsilon)</dt><dd>The privacy budget of differential privacy: how much the outcome of the
run may depend on what it protects. Smaller is more private: ε of 1 or less is strong, 8 to 10
is common for machine learning, and well above that the guarantee says little.</dd>
<dt>δ (delta)</dt><dd>The small chance that the ε bound does not hold. It should be far below one
over the number of people or examples protected.</dd>
<dt>Secure aggregation and differential privacy</dt><dd>Secure aggregation hides each client's
update from the server while training; differential privacy limits what anyone — the server
included — can learn from the results: the model and these figures.</dd>
<dt>Audits</dt><dd>An audit attacks the run or checks its settings. Only ε is a guarantee; an
attack that finds nothing never proves privacy, but one that beats ε shows a broken one.</dd>
</dl>"""

_CSS = """*{box-sizing:border-box}html{color-scheme:light;-webkit-text-size-adjust:100%}
body{margin:0;background:#fff;color:#1b1b1b;font:1rem/1.55 system-ui,sans-serif}
header,main,footer{max-width:60rem;margin:0 auto;padding:0 1rem}header{padding-top:1rem}
footer{padding-bottom:2rem;color:#4a4a4a;font-size:.9rem}h1{font-size:1.6rem;line-height:1.25}
h2{font-size:1.3rem;margin-top:2rem;border-bottom:2px solid #d0d0d0}h3{font-size:1.1rem}
a{color:#0b57d0}:focus-visible{outline:3px solid #0b57d0;outline-offset:2px}
.skip{position:absolute;left:.5rem;top:.5rem;padding:.5rem 1rem;background:#fff;
border:2px solid #0b57d0;transform:translateY(-300%)}.skip:focus{transform:none}
nav ul{display:flex;flex-wrap:wrap;gap:.25rem 1rem;padding:0;list-style:none}
p,dd,li,code{overflow-wrap:anywhere}td{overflow-wrap:break-word}code{font-family:ui-monospace,monospace;
background:#f1f1f1;padding:0 .2rem}dl dt{font-weight:600}dl dd{margin:0 0 .6rem 0}
.glance{display:grid;grid-template-columns:repeat(auto-fit,minmax(13rem,1fr));gap:.5rem}
.glance div{border:1px solid #c8c8c8;border-radius:.4rem;padding:.4rem .6rem}
.glance dt{font-size:.85rem;font-weight:400;color:#4a4a4a}.glance dd{margin:0;font-weight:600}
.claim,.warn{font-size:1.1rem;border-left:.3rem solid #0b57d0;padding-left:.75rem}
.warn{border-color:#b3261e}figure{margin:1rem 0}figcaption{color:#4a4a4a;font-size:.9rem}
img{display:block;max-width:100%;height:auto;border:1px solid #d0d0d0}
.wrap{max-width:100%;overflow-x:auto;margin:1rem 0}table{border-collapse:collapse;
font-size:.9rem;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:600}
th,td{border:1px solid #c8c8c8;padding:.25rem .5rem;text-align:left;vertical-align:top}
thead th{background:#eef2f8}.nums td,.pairs tbody th{white-space:nowrap}
.pairs td{overflow-wrap:anywhere}main:focus{outline:none}.id{white-space:nowrap}
.sev{padding:0 .35rem;border-radius:.25rem;font-weight:700}
.critical{background:#7a0012;color:#fff}.high{background:#fde7e9;color:#8c1d18}
.medium{background:#fff1cc;color:#5c3b00}.low{background:#e3f1f5;color:#00475a}
.info{background:#eee;color:#333}summary{cursor:pointer;margin:.5rem 0}
@media print{.skip,nav{display:none}}"""

_SECTIONS = (("glance", "At a glance"), ("privacy", "Privacy"), ("curves", "Curves"),
             ("rounds", "Every round"), ("audits", "Audits"), ("config", "Configuration"),
             ("how", "How to read this"))


def render_report(data: RunData) -> str:
    """The page: landmarks, a skip link, one h1, a section per part, no script."""
    e, row = html.escape, data.row
    figures = "".join(
        f"<figure><img src='data:image/png;base64,{base64.b64encode(f.png).decode()}' "
        f"width='700' height='360' alt='{e(f.alt)}'><figcaption>Figure {i}. {e(f.caption)}"
        "</figcaption></figure>" for i, f in enumerate(_figures(data), start=1))
    body = {
        "glance": _glance(data),
        "privacy": _guarantee(data) + _secagg(data),
        "curves": figures or "<p>The run recorded no rounds.</p>",
        "rounds": _rounds_table(data) if data.rounds else "<p>No rounds.</p>",
        "audits": _audits(data),
        "config": _config_table(data),
        "how": _HOW_TO_READ,
    }
    title = f"privml run {row.id}: {row.dataset} / {row.model}, {row.strategy}"
    nav = "".join(f"<li><a href='#{k}'>{v}</a></li>" for k, v in _SECTIONS)
    sections = "".join(
        f"<section id='{k}' aria-labelledby='{k}-h'><h2 id='{k}-h'>{v}</h2>{body[k]}"
        "</section>" for k, v in _SECTIONS)
    from privml import __version__

    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
        "<a class='skip' href='#main'>Skip to the report</a>"
        f"<header><h1>{e(title)}</h1><p>A {e(row.kind)} run started {e(row.started_at)}"
        f": {row.clients} clients, {len(data.rounds)} rounds.</p>"
        f"<nav aria-label='Sections of this report'><ul>{nav}</ul></nav></header>"
        f"<main id='main' tabindex='-1'>{sections}</main>"
        f"<footer><p>Made by privml {e(__version__)} from run {row.id} of the run database. "
        "This page is self-contained: it loads nothing from anywhere.</p></footer>"
        "</body></html>\n")


def write_report(store: RunStore, run_id: int, path: str | Path) -> Path:
    """Write run ``run_id``'s report to ``path`` atomically; DataError if there is no such
    run or the file cannot be written."""
    page = render_report(RunData.load(store, run_id))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path

"""``privml report RUN --html FILE`` on real runs: a page that opens with no network (no
external URL, checked by a scan and by headless Debian chromium with the network cut), that
shows the figures the run database holds, says the privacy guarantee right for each DP mode,
lists the audits recorded with the run, and reads with a keyboard in a 360 px window. Also
the audits table of the run database, ``privml demo`` writing a report, and bad input."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import sqlite3
import struct
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from privml._exceptions import DataError
from privml.cli import app
from privml.sim import RunStore
from tests._browser import CHROMIUM, FLAGS
from tests.conftest import DemoRun

runner = CliRunner()
SMALL = ["sim", "--dataset", "digits", "--model", "logreg", "--alpha", "iid", "--rounds", "3",
         "--epochs", "1", "--backend", "inline", "--threads", "1", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "120")


def _sim(db: Path, tmp: Path, name: str, *extra: str) -> int:
    done = runner.invoke(app, [*SMALL, *extra, "--db", str(db),
                               "--json", str(tmp / f"{name}.json")])
    assert done.exit_code == 0, done.output
    return int(json.loads((tmp / f"{name}.json").read_text())["run_id"])


@dataclass(frozen=True)
class Runs:
    tmp: Path
    db: Path
    plain: int  # no DP, no audit
    private: int  # client-level DP (central noise), canaries, audited for privacy


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp = tmp_path_factory.mktemp("report")
    db = tmp / "runs.db"
    plain = _sim(db, tmp, "plain", "--clients", "4", "--per-round", "2")
    private = _sim(db, tmp, "private", "--clients", "20", "--per-round", "10",
                   "--target-epsilon", "2", "--audit-canaries", "50",
                   "--save-model", str(tmp / "private.safetensors"))
    done = runner.invoke(app, ["audit", "privacy", "--run", str(private), "--db", str(db),
                               "--members", "300"])
    assert done.exit_code == 0, done.output
    assert f"recorded with run {private}" in done.output
    return Runs(tmp, db, plain, private)


def _report(db: Path, run: int | str, path: Path) -> str:
    done = runner.invoke(app, ["report", str(run), "--html", str(path), "--db", str(db)])
    assert done.exit_code == 0, done.output
    assert f"report: {path}" in " ".join(done.stdout.split())
    return path.read_text(encoding="utf-8")


# ---- reading a page ------------------------------------------------------------------------


class Page(HTMLParser):
    """The parts of a report the tests look at: tags, tables, headings, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.tables: dict[str, list[list[str]]] = {}  # caption -> rows, the header first
        self.headings: list[tuple[int, str]] = []
        self.chunks: list[str] = []
        self._open: list[list[str]] = []  # the text of open cells, captions, headings
        self._rows: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag == "table":
            self._rows = []
        elif tag == "tr":
            self._rows.append([])
        if tag in {"td", "th", "caption", "h1", "h2", "h3", "h4"}:
            self._open.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag not in {"td", "th", "caption", "h1", "h2", "h3", "h4"}:
            return
        text = " ".join("".join(self._open.pop()).split())
        if tag in {"td", "th"}:
            self._rows[-1].append(text)
        elif tag == "caption":
            self.tables[text] = self._rows
        else:
            self.headings.append((int(tag[1]), text))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        for buf in self._open:
            buf.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def assert_self_contained(html: str) -> None:
    """No external URL of any kind: nothing in the page can make a request."""
    low = html.lower()
    for needle in ("http://", "https://", "@import", "<script", "<link", "<iframe",
                   "<object", "<embed", "http-equiv"):
        assert needle not in low, needle
    assert not re.findall(r"url\(\s*['\"]?(?!data:)", low)
    for tag, attrs in parse(html).tags:
        for name in ("src", "href", "srcset", "action", "formaction", "poster", "data",
                     "xlink:href", "background"):
            value = attrs.get(name)
            if value is None:
                continue
            if value.startswith("data:"):  # base64 may hold "//": the payload is checked
                head, _, payload = value.partition(",")
                assert head == "data:image/png;base64", (tag, head)
                assert base64.b64decode(payload, validate=True)[:8] == PNG
            else:
                assert value.startswith("#") and "//" not in value, (tag, name, value)


def _pngs(page: Page) -> list[bytes]:
    return [base64.b64decode(a["src"].partition(",")[2]) for a in page.all("img")]


# ---- the tests -----------------------------------------------------------------------------


def test_the_page_shows_the_runs_figures_from_the_database(runs: Runs) -> None:
    for run, dp in ((runs.plain, False), (runs.private, True)):
        html = _report(runs.db, run, runs.tmp / f"{run}.html")
        assert_self_contained(html)
        page = parse(html)
        with RunStore(runs.db) as store:
            row, config = store.run(run)
            rounds, ledger = store.rounds(run), store.ledger(run)
        assert bool(ledger) is dp
        eps = {e["round"]: e["epsilon"] for e in ledger}
        table = page.tables["The figures of every round"]
        assert table[0][-1] == ("ε spent" if dp else "Test accuracy")
        assert table[1:] == [
            [str(r["round"]), r["outcome"], str(r["updates"]), str(r["dropped"]),
             f"{r['train_loss']:.4f}", f"{r['test_loss']:.4f}", f"{r['test_accuracy']:.4f}"]
            + ([f"{eps[r['round']]:.4f}"] if dp else []) for r in rounds]
        assert f"Final test accuracy {row.final_accuracy:.4f} (after round 3)" in page.text
        assert f"Final test loss {row.final_loss:.4f}" in page.text
        # the curves: accuracy and loss, and epsilon spent when the run had DP
        imgs = page.all("img")
        assert len(imgs) == (3 if dp else 2)
        for png in _pngs(page):
            assert png[:8] == PNG and struct.unpack(">II", png[16:24]) == (1050, 540)
        assert f"{row.final_accuracy:.4f} after round 3" in imgs[0]["alt"]
        assert f"to {row.final_loss:.4f}" in imgs[1]["alt"]
        settings = dict(map(tuple, page.tables["The run's settings, as recorded"][1:]))
        assert settings["clients"] == str(row.clients) and settings["rounds"] == "3"
        assert settings["secagg"] == "no" and "Secure aggregation was off" in page.text
        if dp:
            e, d = ledger[-1]["epsilon"], ledger[-1]["delta"]
            assert 0 < e <= 2.0 + 1e-9 and d == 1e-5
            assert (f"Each client's whole contribution is protected at ε = {e:.4f}, "
                    f"δ = {d:g}.") in page.text
            assert f"rises to ε = {e:.4f} after round 3" in imgs[2]["alt"]
            assert "target of ε = 2" in imgs[2]["alt"]
            from privml.dp._fedavg import _CENTRAL

            assert "The noise was central" in page.text and _CENTRAL in page.text
            assert "the target was ε = 2, met" in page.text
            # the canaries' secret (which were trained on) never reaches the page
            assert config["audit_canaries"]["included"] not in html
            assert "50 canaries (which ones were trained on is secret" in page.text
        else:
            assert ("No differential privacy: this run gives no formal privacy guarantee."
                    in page.text)
            assert "protected at" not in page.text and "ε spent" not in html


def test_the_recorded_privacy_audit_is_in_the_report(runs: Runs) -> None:
    with RunStore(runs.db) as store:
        audits = store.audits(runs.private)
        assert store.audits(runs.plain) == []
    assert [a["kind"] for a in audits] == ["privacy"]
    findings = audits[0]["report"]["findings"]
    assert "PMA-PRIV-001" not in {f["id"] for f in findings}  # the run had DP
    metrics = audits[0]["report"]["metrics"]
    assert metrics["dp_unit"] == "client" and metrics["canaries"] == 50
    page = parse(_report(runs.db, runs.private, runs.tmp / "audited.html"))
    assert (2, "Audits") in page.headings
    assert (3, f"Privacy audit, {audits[0]['audited_at']}") in page.headings
    if findings:
        rows = page.tables["Findings of the privacy audit"][1:]
        assert [r[0] for r in rows] == [f"{f['severity']} {f['id']}" for f in findings]
        assert [r[2] for r in rows] == [f["evidence"] for f in findings]
    figures = dict(map(tuple, page.tables["Figures the audit measured"][1:]))
    assert figures["epsilon_accountant"] == f"{metrics['epsilon_accountant']:.4g}"
    assert figures["attack_auc"] == f"{metrics['attack_auc']:.4g}"
    plain = parse(_report(runs.db, runs.plain, runs.tmp / "plain.html"))
    assert "No audit has been recorded for this run." in plain.text


def test_other_audits_record_with_run_and_refuse_an_unknown_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run = _sim(db, tmp_path, "r", "--clients", "4", "--per-round", "2")
    settings = tmp_path / "fed.json"
    settings.write_text(json.dumps({"rounds": 3, "clients_per_round": 2, "secagg": False}))
    done = runner.invoke(app, ["audit", "config", str(settings), "--run", "999",
                               "--db", str(db)])
    assert done.exit_code == 2 and "no run 999" in done.output
    done = runner.invoke(app, ["audit", "config", str(settings), "--db", str(db)])
    assert done.exit_code == 1 and "recorded with run" not in done.output  # no --run: not recorded
    with RunStore(db) as store:
        assert store.audits(run) == []
    done = runner.invoke(app, ["audit", "config", str(settings), "--run", str(run),
                               "--db", str(db)])
    assert done.exit_code == 1 and "PMA-CFG-001" in done.output  # high: secagg off
    with RunStore(db) as store:
        (audit,) = store.audits(run)
    assert audit["kind"] == "config" and audit["report"]["target"] == str(settings)
    page = parse(_report(db, run, tmp_path / "r.html"))
    rows = page.tables["Findings of the config audit"][1:]
    assert "high PMA-CFG-001" in [r[0] for r in rows]


def test_the_markup_is_accessible(runs: Runs) -> None:
    html = _report(runs.db, runs.private, runs.tmp / "a11y.html")
    page = parse(html)
    (root,) = page.all("html")
    assert root["lang"] == "en"
    assert any(a.get("name") == "viewport" for a in page.all("meta"))
    assert [t for t, _ in page.tags].count("main") == 1 and page.all("nav")
    assert page.all("header") and page.all("footer")
    first_link = page.all("a")[0]
    assert first_link["href"] == "#main" and first_link["class"] == "skip"
    ids = {a["id"] for _, a in page.tags if "id" in a}
    assert all(a["href"][1:] in ids for a in page.all("a"))  # every in-page link lands
    assert [lvl for lvl, _ in page.headings].count(1) == 1
    levels = [lvl for lvl, _ in page.headings]
    assert all(b <= a + 1 for a, b in itertools.pairwise(levels))  # no skips
    assert all(len(a["alt"]) > 40 for a in page.all("img"))
    assert all(a.get("scope") in {"col", "row"} for a in page.all("th"))
    assert len(page.all("caption")) == len(page.all("table"))
    for region in (a for a in page.all("div") if a.get("role") == "region"):
        assert region["tabindex"] == "0" and region["aria-labelledby"] in ids


def test_the_report_opens_offline_in_chromium(runs: Runs, tmp_path: Path) -> None:
    """The page in a real browser with the network cut: nothing is requested, every figure
    renders, no horizontal scrolling at 360 px, text contrast >= 4.5, the skip link works."""
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    _report(runs.db, runs.private, path)
    url = path.resolve().as_uri()
    attempted: list[str] = []

    def refuse(route: Any) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 360, "height": 740})
            context.route("**/*", refuse)
            page = context.new_page()
            page.on("request", lambda r: None if r.url in (url,) or r.url.startswith("data:")
                    else attempted.append(r.url))
            page.goto(url, wait_until="load")
            imgs = page.eval_on_selector_all("img", """els => els.map(e => [e.complete,
                e.naturalWidth, e.getBoundingClientRect().width,
                e.getBoundingClientRect().height])""")
            assert len(imgs) == 3
            assert all(done and nw == 1050 and 0 < w <= 360 and h > 0
                       for done, nw, w, h in imgs), imgs
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            assert page.evaluate(_LOW_CONTRAST) == []
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.className") == "skip"
            page.keyboard.press("Enter")
            assert page.evaluate("[location.hash, document.activeElement.id]") == [
                "#main", "main"]
            _screenshot(page, tmp_path / "run-report-narrow.png")
            page.set_viewport_size({"width": 1000, "height": 900})
            _screenshot(page, tmp_path / "run-report.png")
        finally:
            browser.close()
    assert attempted == []


# Every element with its own text: WCAG contrast of its colour on the nearest opaque
# background behind it (the page is light only: color-scheme light).
_LOW_CONTRAST = """() => {
  const lum = c => { const v = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(x => {
      x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const behind = el => { for (; el; el = el.parentElement) {
      const m = getComputedStyle(el).backgroundColor.match(/[\\d.]+/g);
      if (m && (m.length < 4 || +m[3] > 0)) return getComputedStyle(el).backgroundColor; }
    return 'rgb(255, 255, 255)'; };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const a = lum(getComputedStyle(el).color), b = lum(behind(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push([el.tagName, el.textContent.slice(0, 30), ratio]);
  }
  return low;
}"""


def _screenshot(page: Any, path: Path) -> None:
    """``PRIVML_SCREENSHOTS=DIR`` keeps a copy there; none is kept otherwise."""
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == PNG
    if keep := os.environ.get("PRIVML_SCREENSHOTS"):
        shutil.copy(path, Path(keep) / path.name)


def test_example_level_dp_in_the_demos_report(demo_run: DemoRun) -> None:
    """`privml demo` (DP-SGD on every client, SecAgg+) writes its report and names it."""
    s = demo_run.summary
    path = Path(str(s["report"]))
    assert path == demo_run.out / "report.html"
    assert f"report: {path}" in " ".join(demo_run.stdout.split())
    html = path.read_text(encoding="utf-8")
    assert_self_contained(html)
    page = parse(html)
    with RunStore(demo_run.home / "runs.db") as store:
        ledger = store.ledger(int(str(s["run_id"])))
    e = ledger[-1]["epsilon"]
    assert e == pytest.approx(float(str(s["epsilon"])))
    assert f"Each training example is protected at ε = {e:.4f}, δ = 1e-05." in page.text
    assert "example-level differential privacy" in page.text
    assert "each client runs DP-SGD on its own data as instructed" in page.text
    assert "Secure aggregation (SecAgg+) was on" in page.text
    assert len(page.all("img")) == 3
    assert len(page.tables["The figures of every round"]) == 31


def test_demo_sim_writes_the_report_and_names_it(tmp_path: Path) -> None:
    out, db = tmp_path / "demo", tmp_path / "runs.db"
    done = runner.invoke(app, ["demo", "--sim", "--out", str(out), "--db", str(db),
                               "--json", str(tmp_path / "s.json"), "--no-progress"])
    assert done.exit_code == 0, done.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["report"] == str(out / "report.html") and s["plot"] == str(out / "accuracy.png")
    assert f"report: {out / 'report.html'}" in " ".join(done.stdout.split())
    html = (out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(html)
    page = parse(html)
    assert f"privml run {s['run_id']}: digits / mlp, fedavg" in page.text
    assert f"Final test accuracy {s['final_accuracy']:.4f} (after round 30)" in page.text
    assert "No differential privacy" in page.text and len(page.all("img")) == 2


def test_bad_input_is_one_line_and_exit_2(runs: Runs, tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    for run, says in (("999", "no run 999"), ("abc", "RUN must be a run id"),
                      ("0", "RUN must be a run id")):
        done = runner.invoke(app, ["report", run, "--html", str(html), "--db", str(runs.db)])
        assert done.exit_code == 2 and says in done.output, done.output
        assert "Traceback" not in done.output and not html.exists()
    missing = tmp_path / "nothing" / "runs.db"
    done = runner.invoke(app, ["report", "latest", "--html", str(html), "--db", str(missing)])
    assert done.exit_code == 2 and "no run database at" in done.output
    assert not missing.exists() and not html.exists()  # nothing created on the way
    done = runner.invoke(app, ["report", "1", "--html", str(html)])  # $PRIVML_HOME: empty
    assert done.exit_code == 2 and "no run database at" in done.output
    done = runner.invoke(app, ["report", "1", "--html", str(tmp_path), "--db", str(runs.db)])
    assert done.exit_code == 2 and "is a folder" in done.output
    done = runner.invoke(app, ["report", "1", "--db", str(runs.db)])
    assert done.exit_code == 2 and "--html" in done.output  # required
    empty = tmp_path / "empty.db"
    RunStore(empty).close()
    done = runner.invoke(app, ["report", "latest", "--html", str(html), "--db", str(empty)])
    assert done.exit_code == 2 and "no runs in" in done.output
    latest = parse(_report(runs.db, "latest", html))
    assert latest.headings[0][1].startswith(f"privml run {max(runs.plain, runs.private)}:")


def test_an_old_run_database_opens_and_gains_the_audits_table(tmp_path: Path) -> None:
    from privml.sim import _runs

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    for version in (1, 2):  # a database as privml wrote it before audits were recorded
        con.executescript(_runs._MIGRATIONS[version])
    con.execute("PRAGMA user_version = 2")
    con.execute("INSERT INTO runs VALUES (1, '2026-01-01T00:00:00+00:00', 'sim', 'digits',"
                " 'mlp', 'fedavg', 4, 1, 0.5, 1.2, 1.0, 1.0, '{}')")
    con.execute("INSERT INTO rounds VALUES (1, 1, 'completed', 2, 0, 1.5, 1.2, 0.5, 1.0)")
    con.commit()
    con.close()
    with RunStore(db) as store:
        assert store.run(1)[0].final_accuracy == 0.5 and store.audits(1) == []
        first = store.add_audit(1, {"kind": "model", "findings": [], "passed": ["x"],
                                    "metrics": {"ci": (0.1, 0.2)}}, kind="model")
        assert store.audits(1) == [{"id": first, "audited_at": store.audits(1)[0][
            "audited_at"], "kind": "model", "report": {"kind": "model", "findings": [],
                                                      "passed": ["x"],
                                                      "metrics": {"ci": [0.1, 0.2]}}}]
        with pytest.raises(DataError, match="no run 7"):
            store.add_audit(7, {}, kind="model")
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == _runs.SCHEMA_VERSION == 3
    con.close()
    page = parse(_report(db, 1, tmp_path / "old.html"))  # a run with no config: still a page
    assert "Model audit" in " ".join(h for _, h in page.headings)

"""The coordinator's dashboard and runs pages, end to end: a real coordinator on 127.0.0.1
(both ports, TLS 1.3, a federation CA, real tokens and store), real Python clients on the
device port, and headless Debian chromium (playwright) on the web port. Also the session
and CSRF refusals and the live stream over httpx, and the session table and feed alone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from privml._exceptions import RequestError
from privml.data import ClientData, load_dataset, partition
from privml.models import build_torch, zoo
from privml.train import get_params
from privml.transport._coordinator import Coordinator, RunConfig
from privml.transport._feed import LiveFeed, changed_kinds
from privml.transport._serve import ServerThread
from privml.transport._sessions import COOKIE, SessionTable, check_csrf
from privml.transport._store import CoordinatorStore
from privml.transport._tokens import TokenStore, default_tokens_path
from privml.transport._webapp import create_web_app
from privml.transport.client import FederatedClient
from privml.transport.server import ServerState, create_device_app
from privml.transport.tls import (
    FederationPaths,
    Revocations,
    client_ssl_context,
    init_federation,
    issue_client,
    server_ssl_context,
)
from tests._browser import CHROMIUM, FLAGS, spki_flag

HDR = {"X-Privml-Protocol": "1"}
CLIENTS = ("alice", "bob")


@dataclass
class Fed:
    paths: FederationPaths
    tokens: TokenStore
    admin: str
    client_token: str
    store: CoordinatorStore
    train: list[ClientData]
    test: list[ClientData]
    tmp: Path


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    tmp = tmp_path_factory.mktemp("dashboard")
    paths = init_federation(tmp / "fed")
    for name in CLIENTS:
        issue_client(paths.dir, name)
    tokens = TokenStore(default_tokens_path(paths.dir))
    ds = load_dataset("digits", seed=0)
    rng = np.random.default_rng(0)
    train = partition(ds.y_train, 2, alpha=None, rng=rng).clients(ds.x_train, ds.y_train)
    test = partition(ds.y_test, 2, alpha=None, rng=rng).clients(ds.x_test, ds.y_test)
    with CoordinatorStore(tmp / "server.db") as store:
        yield Fed(paths, tokens, tokens.create("admin", label="ops"),
                  tokens.create("client", label="browser"), store, train, test, tmp)


@pytest.fixture(scope="module")
def browser(fed: Fed) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM,
                                      args=[*FLAGS, spki_flag(fed.paths.server_cert)])
        try:
            yield chromium
        finally:
            chromium.close()


def _config(**kw: Any) -> RunConfig:
    base: dict[str, Any] = {"rounds": 3, "clients_per_round": 2, "min_clients": 2,
                            "min_updates": 2, "epochs": 1, "eval_every": 1,
                            "round_timeout": 60.0}
    return RunConfig(**(base | kw))


@contextlib.contextmanager
def _serving(fed: Fed, config: RunConfig | None, *,
             sessions: SessionTable | None = None) -> Iterator[tuple[ServerState, str, str]]:
    """Both ports over TLS 1.3 with ``fed.store``; a run of ``config`` (None: idle)."""
    coord = None
    if config is not None:
        spec = zoo("logreg", input_shape=(8, 8, 1), num_classes=10)
        torch.manual_seed(0)
        coord = Coordinator(config, run_id=f"run-{time.monotonic_ns()}",
                            model_spec_json=spec.to_json(),
                            initial=get_params(build_torch(spec)), store=fed.store)
    state = ServerState(coord, Revocations(fed.paths.revoked).is_revoked, tick_seconds=0.05,
                        store=fed.store)
    device = ServerThread(create_device_app(state),
                          ssl_context=server_ssl_context(fed.paths, require_client_cert=True))
    web = ServerThread(create_web_app(state, fed.tokens, sessions=sessions),
                       ssl_context=server_ssl_context(fed.paths, require_client_cert=False))
    with device, web:
        yield state, web.url, device.url


class _Paced(FederatedClient):
    """A client whose local training takes at least ``pace`` seconds, so that a person (or
    a test) watching the dashboard sees each round go by."""

    pace = 0.0

    def _dp_train_fn(self, dp: dict[str, Any]) -> Any:
        return self._paced(super()._dp_train_fn(dp))

    def _paced(self, fn: Any) -> Any:
        def train(*args: Any) -> Any:
            t0 = time.monotonic()
            result = fn(*args)
            time.sleep(max(0.0, self.pace - (time.monotonic() - t0)))
            return result

        return train


def _clients(fed: Fed, device_url: str, *, max_seconds: float = 120,
             pace: float = 0.0) -> list[threading.Thread]:
    threads = []
    for i, name in enumerate(CLIENTS):
        cert, key = fed.paths.client(name)
        client = _Paced(device_url, ca=fed.paths.ca_cert, cert=cert, key=key,
                        data=fed.train[i], eval_data=fed.test[i], long_poll=2.0)
        client.pace = pace
        client.train_fn = client._paced(client.train_fn)
        thread = threading.Thread(target=client.run, kwargs={"max_seconds": max_seconds},
                                  daemon=True)
        thread.start()
        threads.append(thread)
    return threads


@pytest.fixture(scope="module")
def past_run(fed: Fed) -> str:
    """One finished run in the store (example-level DP, so it has an ε curve)."""
    with _serving(fed, _config(dp_unit="example", target_epsilon=8.0, clip_norm=0.5,
                               dp_sample_rate=0.15, lr=1.0)) as (state, _, device):
        for t in _clients(fed, device):
            t.join(150)
        assert state.current is not None and state.current.finished
        return state.current.run_id


def _web(url: str, fed: Fed) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, verify=client_ssl_context(fed.paths.ca_cert))


def _sign_in(h: httpx.Client, token: str) -> tuple[str, str, httpx.Response]:
    """(cookie value, CSRF token, answer) of a sign-in; the client keeps no cookie jar."""
    r = h.post("/v1/admin/session", headers={**HDR, "Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    h.cookies.clear()
    cookie = r.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    return cookie, r.json()["csrf"], r


def _with(cookie: str, **extra: str) -> dict[str, str]:
    return {**HDR, "Cookie": f"{COOKIE}={cookie}", **extra}


# ---- the API: sessions, refusals, CSRF, the live stream --------------------------------

def test_sessions_cookies_and_refusals(fed: Fed) -> None:
    with _serving(fed, _config()) as (state, url, _), _web(url, fed) as h:
        def refused(r: httpx.Response, status: int, code: str) -> None:
            assert r.status_code == status, r.text
            assert r.json()["error"] == code and r.json()["detail"]
            h.cookies.clear()

        before = state.refusals
        refused(h.get("/v1/admin/overview", headers=HDR), 401, "unauthorized")
        refused(h.get("/v1/admin/overview", headers=_with("made-up")), 401, "unauthorized")
        refused(h.get("/v1/admin/events"), 401, "unauthorized")
        bearer = {**HDR, "Authorization": f"Bearer {fed.client_token}"}
        refused(h.get("/v1/admin/overview", headers=bearer), 403, "forbidden")
        refused(h.post("/v1/admin/session", headers=bearer), 403, "forbidden")
        # The admin token anywhere but the Authorization header is no credential.
        refused(h.post(f"/v1/admin/session?token={fed.admin}", headers=HDR), 401,
                "unauthorized")
        refused(h.post("/v1/admin/session", headers=HDR, json={"token": fed.admin}), 401,
                "unauthorized")
        assert state.refusals == before + 7
        assert {e.code for e in list(state.security_log)[-7:]} == {"unauthorized", "forbidden"}

        cookie, csrf, r = _sign_in(h, fed.admin)
        flags = [p.strip().lower() for p in r.headers["set-cookie"].split(";")]
        assert r.headers["set-cookie"].startswith(f"{COOKIE}=")
        assert {"httponly", "secure", "samesite=strict", "path=/"} <= set(flags)
        assert not any(p.startswith("domain") for p in flags)
        assert len(cookie) >= 43 and len(csrf) >= 43 and cookie != csrf
        assert r.headers["cache-control"] == "no-store"
        assert r.json()["label"] == "ops" and fed.admin not in r.text

        ok = h.get("/v1/admin/overview", headers=_with(cookie))
        assert ok.status_code == 200 and ok.json()["run"] == state.current.run_id
        assert h.get("/v1/admin/session", headers=_with(cookie)).json()["csrf"] == csrf
        h.cookies.clear()
        # The cookie is no credential outside the admin endpoints.
        refused(h.get("/v1/status", headers=_with(cookie)), 401, "unauthorized")

        # Changes made with the cookie need the session's CSRF token, from this site.
        refused(h.post("/v1/admin/stop", headers=_with(cookie)), 403, "csrf")
        refused(h.post("/v1/admin/stop", headers=_with(cookie, **{"X-CSRF-Token": "x" * 43})),
                403, "csrf")
        other_cookie, other_csrf, _ = _sign_in(h, fed.admin)
        refused(h.post("/v1/admin/stop", headers=_with(cookie, **{"X-CSRF-Token": other_csrf})),
                403, "csrf")
        refused(h.post("/v1/admin/stop", headers=_with(
            cookie, **{"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"})), 403, "csrf")
        refused(h.post("/v1/admin/session/logout", headers=_with(cookie)), 403, "csrf")
        assert not state.current.finished and not state.stop_requested.is_set()

        out = h.post("/v1/admin/session/logout", headers=_with(cookie, **{"X-CSRF-Token": csrf}))
        assert out.status_code == 200 and f'{COOKIE}=""' in out.headers["set-cookie"]
        h.cookies.clear()
        refused(h.get("/v1/admin/overview", headers=_with(cookie)), 401, "unauthorized")
        # The other session is untouched, and with its token it may stop the run.
        r = h.post("/v1/admin/stop", headers=_with(other_cookie, **{"X-CSRF-Token": other_csrf}))
        assert r.status_code == 200 and state.current.finished


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) of a server-sent-events stream; comments come as ("", "")."""
    name, data = "message", ""
    for line in lines:
        if line.startswith(":"):
            yield "", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "":
            if data:
                yield name, data
            name, data = "message", ""


def test_live_stream_coalesces_and_ends_with_the_session(fed: Fed) -> None:
    sessions = SessionTable(lifetime=8.0)
    with _serving(fed, _config(), sessions=sessions) as (state, url, _), _web(url, fed) as h:
        cookie, csrf, _ = _sign_in(h, fed.admin)
        # No protocol header: EventSource cannot send one.
        with h.stream("GET", "/v1/admin/events", headers={"Cookie": f"{COOKIE}={cookie}"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-store"
            events = _events(r.iter_lines())
            name, data = next(e for e in events if e[0])
            first = json.loads(data)
            assert name == "status" and first["run"] == state.current.run_id
            assert first["phase"] == "waiting" and first["refusals"] == state.refusals
            with _web(url, fed) as other:  # three refusals at once: coalesced
                for _ in range(3):
                    assert other.get("/v1/task", headers=HDR).status_code == 401
            seen = 0
            while True:
                name, data = next(e for e in events if e[0])
                change = json.loads(data)
                seen += 1
                assert name == "status" and "refusal" in change["kinds"], change
                if change["refusals"] == first["refusals"] + 3:
                    break
            assert seen < 3 and change["version"] == first["version"] + seen
            # The session ends (its lifetime is 8 s here): so does the stream.
            t0 = time.monotonic()
            tail = [e for e in events if e[0]]
            assert tail[-1] == ("session", '{"ended":true}'), tail
            assert time.monotonic() - t0 < 10
        h.cookies.clear()
        r = h.get("/v1/admin/events", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert csrf  # (not needed to read)
        # An admin's bearer token reads the stream too (tools, curl).
        with h.stream("GET", "/v1/admin/events",
                      headers={**HDR, "Authorization": f"Bearer {fed.admin}"}) as r:
            assert r.status_code == 200
            assert next(e for e in _events(r.iter_lines()) if e[0])[0] == "status"


def test_a_revoked_admin_token_ends_its_sessions(fed: Fed) -> None:
    label = f"short-{time.monotonic_ns()}"
    token = fed.tokens.create("admin", label=label)
    sessions = SessionTable(recheck=0.0)
    with _serving(fed, None, sessions=sessions) as (_state, url, _), _web(url, fed) as h:
        cookie, _, _ = _sign_in(h, token)
        assert h.get("/v1/admin/overview", headers=_with(cookie)).status_code == 200
        h.cookies.clear()
        fed.tokens.revoke(label)
        r = h.get("/v1/admin/overview", headers=_with(cookie))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        h.cookies.clear()
        assert h.get("/v1/admin/overview", headers=_with(cookie)).status_code == 401


def test_history_endpoints(fed: Fed, past_run: str) -> None:
    with _serving(fed, None) as (_state, url, _), _web(url, fed) as h:
        admin = {**HDR, "Authorization": f"Bearer {fed.admin}"}
        runs = h.get("/v1/admin/runs/history", headers=admin).json()["runs"]
        past = next(r for r in runs if r["run"] == past_run)
        assert past["status"] == "finished" and past["rounds_closed"] == 3
        assert past["clients"] == 2 and 0 < past["epsilon"] <= 8.0
        assert 0 <= past["accuracy"] <= 1 and past["config"]["dp_unit"] == "example"
        detail = h.get(f"/v1/admin/runs/history/{past_run}", headers=admin).json()
        assert [r["round"] for r in detail["rounds_table"]] == [1, 2, 3]
        assert all(r["sampled"] == 2 and r["reported"] == 2 for r in detail["rounds_table"])
        assert [e["round"] for e in detail["evaluations"]] == [1, 2, 3]
        eps = [p["epsilon"] for p in detail["privacy"]]
        assert len(eps) == 3 and eps == sorted(eps) and detail["target_epsilon"] == 8.0
        r = h.get("/v1/admin/runs/history/no-such-run", headers=admin)
        assert r.status_code == 404 and r.json()["error"] == "no_such_run"


def test_pages_are_served_with_the_same_strict_headers(fed: Fed) -> None:
    with _serving(fed, None) as (_state, url, _), _web(url, fed) as h:
        for path in ("/", "/runs", "/client", "/web/dashboard.js", "/web/runs.js",
                     "/web/charts.js", "/web/session.js", "/web/dashboard.css",
                     "/vendor/uPlot.esm.js", "/vendor/uPlot.min.css"):
            r = h.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "unsafe-inline" not in csp and "'unsafe-eval'" not in csp
            assert "script-src 'self' 'wasm-unsafe-eval';" in csp
        assert "coordinator dashboard" in h.get("/").text
        assert "train in your browser" in h.get("/client").text


# ---- the pure parts ------------------------------------------------------------------------

def test_session_table_expiry_idle_revocation_and_bounds() -> None:
    now = [0.0]
    table = SessionTable(lifetime=100.0, idle=10.0, recheck=5.0, max_sessions=3,
                         clock=lambda: now[0])
    sid, session = table.create("ops", "pma_x")
    assert table.get(sid).label == "ops"
    now[0] = 9.0
    table.get(sid)  # used: the idle clock starts again
    now[0] = 18.0
    assert table.get(sid) is session
    now[0] = 29.0  # 11 s unused
    with pytest.raises(RequestError, match="expired"):
        table.get(sid)
    sid, _ = table.create("ops", "pma_x")
    for t in range(30, 131, 9):
        now[0] = float(t)
        if t < 29 + 100:
            table.get(sid)
    with pytest.raises(RequestError, match="expired"):
        table.get(sid)  # past its 100 s lifetime however busy
    sid, _ = table.create("ops", "pma_x")

    def revoked(token: str) -> None:
        raise RequestError("revoked", code="unauthorized", status=401)

    now[0] += 6.0
    with pytest.raises(RequestError, match="revoked"):
        table.get(sid, reverify=revoked)
    with pytest.raises(RequestError):
        table.get(sid)  # gone for good
    ids = [table.create("ops", "pma_x")[0] for _ in range(4)]
    assert len(table) == 3 and not table.alive(ids[0]) and table.alive(ids[-1])
    with pytest.raises(RequestError, match="sign in"):
        table.get(None)
    _, s = table.create("ops", "pma_x")
    check_csrf(s, s.csrf)
    for bad in (None, "", s.csrf[:-1], s.csrf + "x"):
        with pytest.raises(RequestError) as err:
            check_csrf(s, bad)
        assert err.value.code == "csrf" and err.value.status == 403


def test_feed_coalesces_changes_into_one_version() -> None:
    spec = zoo("logreg", input_shape=(8, 8, 1), num_classes=10)
    coord = Coordinator(_config(), run_id="feed", model_spec_json=spec.to_json(),
                        initial=get_params(build_torch(spec)))
    state = ServerState(coord, lambda _: False)

    async def main() -> None:
        feed = LiveFeed(state, interval=0.01)
        assert feed.poll() and feed.version == 1 and feed.snapshot is not None
        assert not feed.poll()  # nothing changed
        for i in range(100):
            with state.lock:
                coord.enrol(f"c{i}", time.monotonic())
                state.changes += 1
        assert feed.poll() and feed.version == 2
        assert feed.snapshot["enrolled"] == 100 and feed.snapshot["phase"] == "training"
        assert b'"kinds":["clients","round"]' in feed.message
        waiter = asyncio.create_task(feed.wait(2, timeout=5.0))
        await asyncio.sleep(0.01)
        state.changes += 1
        with state.lock:
            state.refusals += 1
        assert feed.poll()
        await asyncio.wait_for(waiter, 1.0)
        assert feed.enrolled_at == {1: 100}

    asyncio.run(main())
    assert changed_kinds(None, {"round": 1}) == ["snapshot"]
    assert changed_kinds({"round": 1, "accepted": 0}, {"round": 1, "accepted": 1}) == ["update"]


# ---- the pages in a browser -------------------------------------------------------------------

class _Watch:
    """A page's requests, navigations and console messages."""

    def __init__(self, page: Any) -> None:
        self.urls: list[str] = []
        self.navigations: list[str] = []
        self.console: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("framenavigated", lambda f: self.navigations.append(f.url))
        page.on("console", lambda m: self.console.append(m.text))

    def clean(self, *secrets: str) -> None:
        for url in self.urls:
            assert "token" not in url.lower(), url
            for secret in secrets:
                assert secret not in url, url
        assert not [c for c in self.console if "Content Security Policy" in c], self.console


def _wait(page: Any, expression: str, timeout: float = 60.0) -> Any:
    """Poll ``expression`` with page.evaluate (wait_for_function would use eval, which the
    CSP refuses) until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(expression)):
        if time.monotonic() > deadline:
            shown = page.evaluate("document.body.innerText")
            raise AssertionError(f"timed out on {expression}: {shown}")
        time.sleep(0.1)
    return value


def _sign_in_page(page: Any, token: str) -> None:
    page.focus("#admin-token")
    page.keyboard.type(token)
    page.keyboard.press("Enter")  # the form works from the keyboard


def _screenshot(page: Any, name: str, tmp: Path) -> None:
    """The page as a user sees it; ``PRIVML_SCREENSHOTS=DIR`` keeps a copy there (the
    README's image is made this way)."""
    path = tmp / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    if keep := os.environ.get("PRIVML_SCREENSHOTS"):
        shutil.copy(path, Path(keep) / name)


def _fits(page: Any, width: int = 360) -> None:
    """Nothing is wider than a narrow window (tables scroll in their own region)."""
    page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    page.set_viewport_size({"width": width, "height": 800})
    time.sleep(0.3)
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_dashboard_signs_in_and_follows_a_run_live(fed: Fed, browser: Any) -> None:
    config = _config(rounds=5, dp_unit="example", target_epsilon=8.0, clip_norm=0.5,
                     dp_sample_rate=0.15, lr=1.0)
    with _serving(fed, config) as (state, url, device):
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        watch = _Watch(page)
        page.goto(url + "/")
        _wait(page, "!document.querySelector('#signin').hidden")
        assert page.is_hidden("#board")
        _sign_in_page(page, fed.client_token)
        _wait(page, "document.querySelector('#signin-msg').textContent.includes('not an admin')")
        _sign_in_page(page, "pma_" + "A" * 43)
        _wait(page, "document.querySelector('#signin-msg').textContent.includes('refused')")
        assert page.input_value("#admin-token") == ""  # posted, then forgotten
        _sign_in_page(page, fed.admin)
        _wait(page, "!document.querySelector('#board').hidden")
        assert page.input_value("#admin-token") == ""
        assert "ops" in page.text_content("#who-label")
        (cookie,) = [c for c in context.cookies() if c["name"] == COOKIE]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/" and cookie["domain"] == "127.0.0.1"
        assert page.evaluate("document.cookie") == ""  # no script can read it
        _wait(page, "window.privmlDashboard.events >= 1")
        assert page.text_content("#phase") == "waiting"
        page.evaluate("window.stillHere = 'no reload'")
        navigations = len(watch.navigations)

        threads = _clients(fed, device, pace=0.6)
        rounds_seen, points_seen = set(), set()
        deadline = time.monotonic() + 150
        while not (state.current.finished
                   and page.evaluate("Number(document.querySelector('#chart-accuracy')"
                                     ".dataset.points || 0)") == 5):
            assert time.monotonic() < deadline, (rounds_seen, points_seen)
            shown = str(page.text_content("#round"))
            rounds_seen.add(int(shown) if shown.isdigit() else 0)
            points_seen.add(page.evaluate(
                "Number(document.querySelector('#chart-accuracy').dataset.points || 0)"))
            time.sleep(0.05)
        for t in threads:
            t.join(30)
        assert len(rounds_seen - {0}) >= 3, rounds_seen  # the counter advanced live
        assert len(points_seen) >= 3, points_seen  # and so did the accuracy chart
        assert page.evaluate("window.stillHere") == "no reload"
        assert len(watch.navigations) == navigations
        # The uPlot chart holds the evaluations, and its text alternative says so.
        assert page.evaluate("window.privmlDashboard.charts.accuracy.plot.data[0].length") == 5
        assert "at round 5" in page.get_attribute("#chart-accuracy .chart", "aria-label")
        assert page.evaluate("window.privmlDashboard.charts.privacy.rounds.length") == 5
        _wait(page, "document.querySelector('#round-status').textContent.includes('finished')")
        assert page.get_attribute("#round-status", "aria-live") == "polite"
        eps = float(page.text_content("#epsilon").split("/")[0])
        assert 0 < eps <= 8.0
        watch.clean(fed.admin, fed.client_token)
        _screenshot(page, "dashboard.png", fed.tmp)
        _fits(page)
        page.click("#sign-out")
        _wait(page, "!document.querySelector('#signin').hidden")
        assert not [c for c in context.cookies() if c["name"] == COOKIE]
        context.close()


def test_runs_page_lists_opens_and_compares(fed: Fed, browser: Any, past_run: str) -> None:
    with _serving(fed, _config(rounds=2, eval_every=1, epochs=2)) as (state, url, device):
        for t in _clients(fed, device):
            t.join(150)
        assert state.current.finished
        newer = state.current.run_id
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        watch = _Watch(page)
        page.goto(url + "/runs")
        _wait(page, "!document.querySelector('#signin').hidden")
        _sign_in_page(page, fed.admin)
        _wait(page, "document.querySelectorAll('#runs tbody tr').length >= 2")
        listed = page.evaluate("window.privmlRuns.runs.map((r) => r.run)")
        assert listed[0] == newer and past_run in listed  # newest first
        row = page.locator("#runs tbody tr").first
        assert "finished" in row.inner_text() and "2 / 2" in row.inner_text()
        # Open the newest run from the keyboard.
        page.focus(f"button[aria-label='open run {newer}']")
        page.keyboard.press("Enter")
        _wait(page, "window.privmlRuns.shown.length === 1")
        _wait(page, "document.querySelectorAll('#panels .chart-figure').length === 3")
        points = page.evaluate("[...document.querySelectorAll('#panels .chart-figure')]"
                               ".map((f) => Number(f.dataset.points || 0))")
        assert points == [2, 0, 2], points  # no DP in this run: no ε curve
        # Compare it with the DP run.
        for run in (newer, past_run):
            page.check(f"input[type=checkbox][value='{run}']")
        page.click("#compare")
        _wait(page, "window.privmlRuns.shown.length === 2")
        assert page.evaluate("window.privmlRuns.shown") == [newer, past_run] or \
            page.evaluate("window.privmlRuns.shown") == [past_run, newer]
        assert page.locator("#panels .run-panel").count() == 2
        diff = page.inner_text("#diff-table")
        assert "dp_unit" in diff and "target_epsilon" in diff and "rounds" in diff
        watch.clean(fed.admin)
        _screenshot(page, "runs.png", fed.tmp)
        _fits(page)
        context.close()

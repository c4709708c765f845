"""The browser client page end to end: headless Debian chromium (playwright) loads /client
from the coordinator's web port over TLS 1.3, joins with a token, reads a CSV the user
picks, trains with TensorFlow.js and takes part in secure aggregation next to Python clients
on the device port. Also: what the page stores and sends, token refusals, an outage mid-
round, and the /predict page."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from privml import params as pm
from privml.data import ClientData, load_digits, partition_dirichlet
from privml.models import ModelSpec, build_torch, zoo
from privml.secagg import FixedPoint
from privml.train import get_params, set_params
from privml.transport._coordinator import Coordinator, RunConfig
from privml.transport._serve import ServerThread
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
PARTS = 6  # 4 Python clients and 2 browser pages


@dataclass
class World:
    paths: FederationPaths
    tokens: TokenStore
    browser: Any
    tmp: Path
    data: Any = field(default=None)
    parts: Any = field(default=None)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("browser-client")
    paths = init_federation(tmp / "fed")
    for i in range(4):
        issue_client(paths.dir, f"py-{i}")
    tokens = TokenStore(default_tokens_path(paths.dir))
    data = load_digits()
    parts = partition_dirichlet(data.y_train, PARTS, alpha=0.5, rng=np.random.default_rng(0))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=[*FLAGS, spki_flag(paths.server_cert)])
        try:
            yield World(paths, tokens, browser, tmp, data, parts)
        finally:
            browser.close()


def _csv(world: World, k: int) -> Path:
    """Partition k of the digits training split as the CSV a user would pick."""
    ix = world.parts.indices[k]
    x = world.data.x_train[ix].reshape(len(ix), -1)
    path = world.tmp / f"part-{k}.csv"
    rows = [",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])]
    rows += [",".join([*(f"{v:.6g}" for v in row), str(int(y))])
             for row, y in zip(x, world.data.y_train[ix], strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


@contextlib.contextmanager
def _serving(world: World, config: RunConfig, *, model: str = "mlp",
             web_port: int = 0) -> Iterator[tuple[Coordinator, ServerState, ServerThread,
                                                  ServerThread]]:
    spec = zoo(model, input_shape=(8, 8, 1), num_classes=10)
    torch.manual_seed(0)
    coord = Coordinator(config, run_id=f"run-{model}-{time.monotonic_ns()}",
                        model_spec_json=spec.to_json(), initial=get_params(build_torch(spec)))
    state = ServerState(coord, Revocations(world.paths.revoked).is_revoked, tick_seconds=0.05)
    device = ServerThread(create_device_app(state),
                          ssl_context=server_ssl_context(world.paths, require_client_cert=True))
    web = ServerThread(create_web_app(state, world.tokens), port=web_port,
                       ssl_context=server_ssl_context(world.paths, require_client_cert=False))
    with device, web:
        yield coord, state, device, web


class _Recorder:
    """Every request a page makes, with its body: the network log."""

    def __init__(self, page: Any) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.console: list[str] = []
        page.on("request", lambda r: self.requests.append(
            (r.method, r.url, r.post_data_buffer or b"")))
        page.on("console", lambda msg: self.console.append(msg.text))


def _open_client(world: World, url: str, token: str, csv: Path | None) -> tuple[Any, _Recorder]:
    context = world.browser.new_context()
    page = context.new_page()
    rec = _Recorder(page)
    page.goto(f"{url}/client")
    _wait(page, "window.privmlClient && window.privmlClient.ready")
    page.fill("#token", token)
    page.click("#join")
    _wait(page, "document.querySelector('#join-msg').textContent !== ''")
    if csv is not None:
        page.set_input_files("#csv", str(csv))
        _wait(page, "document.querySelector('#data-msg').textContent !== ''")
        assert "examples from" in page.text_content("#data-msg"), page.text_content("#data-msg")
    return page, rec


def _wait(page: Any, expression: str, timeout: float = 60_000) -> None:
    """Poll ``expression`` in the page until it is truthy. (playwright's wait_for_function
    evaluates strings with eval, which the page's CSP rightly refuses.)"""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            shown = page.evaluate("document.body.innerText")
            raise AssertionError(f"timed out waiting for {expression}; the page: {shown}")
        time.sleep(0.2)


def _text(page: Any, selector: str) -> str:
    return str(page.text_content(selector))


class _Capturing(FederatedClient):
    """A Python client that also keeps what it put into each secure sum (its encoding)."""

    encoded: dict[int, np.ndarray]

    def _secure_submit(self, task: dict[str, Any], delta: Any, num_examples: int) -> None:
        s = task["secagg"]
        if s.get("kind") == "ddg":  # noised by the client: nothing exact to compare
            super()._secure_submit(task, delta, num_examples)
            return
        fp = FixedPoint(clip=float(s["clip"]), clients=int(s["clients"]),
                        max_weight=int(s["max_weight"]), bits=int(s["bits"]),
                        noise_bound=int(s["noise_bound"]), frac_bits=int(s["frac_bits"]))
        flat = pm.flatten({k: delta[k] for k in self._params})
        self.encoded[int(task["round"])] = fp.encode(flat, num_examples)
        super()._secure_submit(task, delta, num_examples)


def _python_clients(world: World, device_url: str) -> list[_Capturing]:
    clients = []
    for i in range(4):
        cert, key = world.paths.client(f"py-{i}")
        client = _Capturing(device_url, ca=world.paths.ca_cert, cert=cert, key=key,
                            data=ClientData(world.data.x_train, world.data.y_train,
                                            world.parts.indices[i]), long_poll=2.0)
        client.encoded = {}
        clients.append(client)
    return clients


def _accuracy(spec_json: str, params: Any, data: Any) -> float:
    model = build_torch(ModelSpec.from_json(spec_json))
    set_params(model, params)
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    return float((pred == data.y_test).mean())


def test_mixed_federation_with_secure_aggregation(world: World) -> None:
    """4 Python clients (mTLS) and 2 browser pages (tokens) in one SecAgg+ run on digits:
    it reaches the target, every round's revealed sum is exactly the modular sum of the six
    encoded updates, no request of a page carries its data, and IndexedDB holds only
    ciphertext."""
    rounds = 4
    config = RunConfig(rounds=rounds, clients_per_round=PARTS, min_clients=PARTS,
                       min_updates=PARTS, round_timeout=120, epochs=2, secagg=True,
                       secagg_stage_timeout=60)
    with _serving(world, config) as (coord, _state, device, web):
        pages = []
        for k in (4, 5):
            token = world.tokens.create("client", label=f"browser-{k}-{time.monotonic_ns()}")
            page, rec = _open_client(world, web.url, token, _csv(world, k))
            assert "Joined as web-browser-" in _text(page, "#join-msg")
            page.click("#start")
            pages.append((page, rec, k))
        clients = _python_clients(world, device.url)
        threads = [threading.Thread(target=c.run, kwargs={"max_seconds": 400}, daemon=True)
                   for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(420)
        assert coord.finished, coord.status()
        for page, _, _ in pages:
            _wait(page, "document.querySelector('#train-msg').textContent"
                                   ".includes('finished')", timeout=60_000)
        statuses = coord.status()
        assert statuses["completed"] == rounds, statuses
        # Exact: the sum the coordinator decoded is the modular sum of what each party put
        # in. The pages keep their last input only, so the last round is checked in full.
        survivors, total = coord.secure_sums[rounds]
        assert len(survivors) == PARTS
        want = sum((c.encoded[rounds] for c in clients), start=np.zeros_like(total))
        for page, _, _ in pages:
            got = page.evaluate("""(r) => {
              const e = window.privmlClient.encoded;
              return e.round === r ? Array.from(e.values, (v) => v.toString()) : null; }""",
                                rounds)
            assert got is not None and len(got) == total.size
            want = want + np.array([int(v) for v in got], dtype=np.uint64).astype(total.dtype)
        np.testing.assert_array_equal(total, want)
        assert total.dtype == np.uint32 and int(total.view(np.int32)[-1]) == sum(
            len(ix) - len(ix) // 5 for ix in world.parts.indices[4:]) + sum(
            c.encoded[rounds].view(np.int32)[-1] for c in clients)  # the weight lane
        accuracy = _accuracy(coord.model_spec_json, coord.params, world.data)
        assert accuracy >= 0.85, accuracy
        print(f"mixed federation: test accuracy {accuracy:.3f} after {rounds} rounds")
        _screenshot(pages[0][0], world.tmp / "client-page.png")
        for page, rec, k in pages:
            assert _text(page, "#rounds") == str(rounds)
            assert "%" in _text(page, "#accuracy")
            _no_data_in_requests(world, rec, k)
            _only_ciphertext_in_indexeddb(world, page, k, coord)
            assert not [c for c in rec.console if "Content Security Policy" in c], rec.console


def _screenshot(page: Any, path: Path) -> None:
    """The page as a user sees it (``PRIVML_SCREENSHOTS=DIR`` keeps a copy there: the
    README's image is made this way)."""
    import os
    import shutil

    page.set_viewport_size({"width": 900, "height": 1000})
    page.evaluate("document.querySelector('details').open = true")
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    if keep := os.environ.get("PRIVML_SCREENSHOTS"):
        shutil.copy(path, Path(keep) / path.name)


def _no_data_in_requests(world: World, rec: _Recorder, k: int) -> None:
    ix = world.parts.indices[k]
    x = world.data.x_train[ix].reshape(len(ix), -1)
    csv_text = _csv(world, k).read_text().splitlines()
    needles = [row.encode() for row in csv_text[1:40]]
    needles += [x[i].astype("<f4").tobytes()[8:40] for i in range(20)]
    assert any(b for _, _, b in rec.requests), "the page sent nothing"
    for method, url, body in rec.requests:
        for needle in needles:
            assert needle not in body, (method, url)
        assert "token" not in url.lower() and "pmt_" not in url


_RAW_IDB = """async () => {
  const names = (await indexedDB.databases()).map((d) => d.name);
  const out = [];
  const walk = (v) => {
    if (v instanceof ArrayBuffer) out.push(Array.from(new Uint8Array(v)));
    else if (ArrayBuffer.isView(v)) {
      out.push(Array.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)));
    }
    else if (typeof v === "string") out.push(Array.from(new TextEncoder().encode(v)));
    else if (v && typeof v === "object" && !(v instanceof CryptoKey)) {
      Object.values(v).forEach(walk);
    }
  };
  for (const name of names) {
    const db = await new Promise((ok, no) => {
      const r = indexedDB.open(name);
      r.onsuccess = () => ok(r.result);
      r.onerror = () => no(r.error); });
    for (const store of db.objectStoreNames) {
      const all = await new Promise((ok, no) => {
        const r = db.transaction(store).objectStore(store).getAll();
        r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
      all.forEach(walk);
    }
    db.close();
  }
  return out.map((a) => btoa(String.fromCharCode(...a)));
}"""


def _only_ciphertext_in_indexeddb(world: World, page: Any, k: int, coord: Coordinator) -> None:
    import base64

    blobs = b"\x00".join(base64.b64decode(b) for b in page.evaluate(_RAW_IDB))
    assert len(blobs) > 10_000  # the sealed data, model and state are there
    ix = world.parts.indices[k]
    x = world.data.x_train[ix].reshape(len(ix), -1)
    for i in range(0, len(ix), 7):
        assert x[i].astype("<f4").tobytes()[16:48] not in blobs
    from privml.models import to_tfjs

    _, weights = to_tfjs(ModelSpec.from_json(coord.model_spec_json), coord.params)
    for at in range(0, len(weights) - 32, 4096):
        assert weights[at:at + 32] not in blobs
    assert b"label" not in blobs and b"pmt_" not in blobs and b"web-browser" not in blobs


def test_reload_resumes_from_sealed_state(world: World) -> None:
    """A page reloaded mid-run comes back from its sealed storage (token, data, state) and
    goes on contributing without the user doing anything."""
    config = RunConfig(rounds=3, clients_per_round=1, round_timeout=60, epochs=1)
    with _serving(world, config) as (coord, _state, _device, web):
        token = world.tokens.create("client", label=f"reload-{time.monotonic_ns()}")
        page, _ = _open_client(world, web.url, token, _csv(world, 4))
        page.click("#start")
        _wait(page, "Number(document.querySelector('#rounds').textContent) >= 1",
                               timeout=60_000)
        page.reload()
        _wait(page, "window.privmlClient && window.privmlClient.ready")
        assert "restored from sealed storage" in _text(page, "#data-msg")
        assert "(restored)" in _text(page, "#join-msg")
        _wait(page, "document.querySelector('#train-msg').textContent"
                               ".includes('finished')", timeout=90_000)
        assert coord.finished and coord.status()["completed"] == 3
        assert _text(page, "#rounds") == "3"


@pytest.mark.parametrize("kind", ["wrong", "expired"])
def test_wrong_or_expired_token_is_refused_with_a_clear_message(world: World,
                                                                kind: str) -> None:
    config = RunConfig(rounds=1, clients_per_round=1)
    with _serving(world, config) as (_coord, state, _device, web):
        if kind == "wrong":
            token = "pmt_" + "A" * 43
        else:
            token = world.tokens.create("client", ttl_seconds=1,
                                        label=f"short-{time.monotonic_ns()}")
            time.sleep(1.5)
        page, _ = _open_client(world, web.url, token, None)
        message = _text(page, "#join-msg")
        assert "join token was refused" in message and "wrong, expired or revoked" in message
        assert "new one" in message
        assert page.is_disabled("#start")
        assert any(e.code == "unauthorized" for e in state.security_log)


def test_coordinator_down_mid_round_the_page_retries_and_completes(world: World) -> None:
    """The web port goes away while the page trains; the page retries with backoff, keeps
    its sealed update, and completes the round when the port is back."""
    config = RunConfig(rounds=2, clients_per_round=1, round_timeout=120, epochs=40,
                       batch_size=8)
    with _serving(world, config) as (coord, state, _device, web):
        token = world.tokens.create("client", label=f"outage-{time.monotonic_ns()}")
        page, _ = _open_client(world, web.url, token, _csv(world, 5))
        page.click("#start")
        _wait(page, "document.querySelector('#train-msg').textContent"
                               ".includes('training locally')", timeout=60_000)
        port = web.port
        web.stop()
        _wait(page, "document.querySelector('#train-msg').textContent"
                               ".includes('retrying')", timeout=90_000)
        assert coord.status()["accepted"] == 0
        time.sleep(1.0)
        back = ServerThread(create_web_app(state, world.tokens), port=port,
                            ssl_context=server_ssl_context(world.paths,
                                                           require_client_cert=False))
        with back:
            _wait(page, "document.querySelector('#train-msg').textContent"
                                   ".includes('finished')", timeout=120_000)
        assert coord.finished and coord.status()["completed"] == 2
        assert page.evaluate("window.privmlClient.api.retries") > 0
        assert _text(page, "#rounds") == "2"


def test_predict_page_never_sends_the_input(world: World) -> None:
    config = RunConfig(rounds=1, clients_per_round=1)
    with _serving(world, config, model="cnn") as (coord, _state, _device, web):
        token = world.tokens.create("client", label=f"predict-{time.monotonic_ns()}")
        page = world.browser.new_context().new_page()
        rec = _Recorder(page)
        page.goto(f"{web.url}/predict")
        page.fill("#token", token)
        page.click("#load")
        _wait(page, "document.querySelector('#model-msg').textContent"
                               ".includes('loaded')", timeout=60_000)
        assert "cpu backend" in _text(page, "#model-msg")  # convolutions: cpu, set explicitly
        before = len(rec.requests)
        x = world.data.x_test[:1]
        page.fill("#row", ",".join(f"{v:.6g}" for v in x.ravel()))
        page.click("#predict")
        _wait(page, "window.privmlPredict.last !== undefined")
        got = page.evaluate("window.privmlPredict.last")
        assert len(rec.requests) == before  # nothing at all went out with the input
        model = build_torch(ModelSpec.from_json(coord.model_spec_json))
        set_params(model, coord.params)
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(
                np.round(x, 6).astype(np.float32))), 1).numpy()[0]
        np.testing.assert_allclose(got["probs"], probs, atol=1e-4)
        assert got["best"] == int(probs.argmax())


def test_pages_are_public_and_locked_down(world: World) -> None:
    config = RunConfig(rounds=1, clients_per_round=1)
    with _serving(world, config) as (_coord, _state, _device, web), httpx.Client(
            base_url=web.url, verify=client_ssl_context(world.paths.ca_cert)) as h:
        for path in ("/client", "/predict", "/web/client.js", "/web/secagg/protocol.js",
                     "/vendor/tf.min.js", "/vendor/tfjs-backend-wasm-simd.wasm"):
            r = h.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "'wasm-unsafe-eval'" in csp and "'unsafe-eval'" not in csp.replace(
                "'wasm-unsafe-eval'", "") and "unsafe-inline" not in csp
            assert r.headers["strict-transport-security"].startswith("max-age=")
            assert "access-control-allow-origin" not in r.headers
        assert h.get("/vendor/tfjs-backend-wasm.wasm").headers["content-type"] == \
            "application/wasm"
        for path in ("/web/../_webapp.py", "/web/vendor.json", "/vendor/../../setup.py",
                     "/web/%2e%2e/client.html"):
            r = h.get(path)  # (a client may normalise the dots away: then it is no page)
            assert r.status_code in (404, 426), path
            assert b"import" not in r.content
        r = h.get("/v1/task", headers=HDR)  # the API still needs a token
        assert r.status_code == 401
        admin = world.tokens.create("admin", label=f"adm-{time.monotonic_ns()}")
        r = h.post("/v1/enrol", headers={**HDR, "Authorization": f"Bearer {admin}"})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        page_headers = h.get("/client").headers
        assert page_headers["x-content-type-options"] == "nosniff"
        assert page_headers["x-frame-options"] == "DENY"


def test_a_folder_of_images_and_the_demo_partition(world: World) -> None:
    """The page reads a folder of images (sub-folder = label, resized to 8x8 grey, scaled to
    [0, 1]) exactly as the digits are; and the coordinator's demo partition (--web-demo)."""
    from PIL import Image

    from privml.transport._webdemo import demo_partitions

    folder = world.tmp / "pictures"
    x, y = world.data.x_train[:12], world.data.y_train[:12]
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
        grey = np.round(img[:, :, 0] * 255).astype(np.uint8)
        Image.fromarray(grey, mode="L").resize((32, 32), Image.NEAREST).save(
            folder / str(int(label)) / f"img-{i}.png")
    (folder / "notes.txt").write_text("not an image")
    config = RunConfig(rounds=1, clients_per_round=1)
    with _serving(world, config) as (_coord, state, _device, web):
        token = world.tokens.create("client", label=f"pictures-{time.monotonic_ns()}")
        page, _ = _open_client(world, web.url, token, None)
        page.set_input_files("#images", str(folder))
        _wait(page, "document.querySelector('#data-msg').textContent !== ''")
        assert "12 examples" in _text(page, "#data-msg"), _text(page, "#data-msg")
        got = page.evaluate("""() => ({x: Array.from(window.privmlClient.data.x),
                                       y: Array.from(window.privmlClient.data.y)})""")
        # The page's order is the folder listing's: match each of its rows to an image.
        rows, want = np.array(got["x"]).reshape(12, -1), x.reshape(12, -1)
        gap = np.abs(rows[:, None, :] - want[None, :, :]).max(axis=2)  # (page, image)
        match = gap.argmin(axis=1)
        assert sorted(match) == list(range(12)) and gap.min(axis=1).max() < 1.5 / 255
        assert [int(v) for v in y[match]] == got["y"]
        page.click("#demo")  # not offered yet: a clear refusal
        _wait(page, "document.querySelector('#data-msg').textContent.includes('demo')")
        assert "offers no demo data" in _text(page, "#data-msg")
        state.demo_data = demo_partitions("digits", 4)
        page.click("#demo")
        _wait(page, "document.querySelector('#data-msg').textContent.includes('partition')")
        n = int(_text(page, "#data-msg").split()[0])
        assert n in {len(p) for p in np.array_split(np.arange(len(world.data.x_train)), 4)}


@pytest.mark.parametrize("mode", ["example", "distributed"])
def test_the_page_honours_the_runs_dp_unit(world: World, mode: str) -> None:
    """Example-level DP: the page runs DP-SGD with the steps the coordinator accounts.
    Client-level DP with SecAgg+: the page clips, rounds and adds its discrete Gaussian
    share (DDG) before masking; a Python client does the same and the run's budget is
    charged for the survivors."""
    if mode == "example":
        config = RunConfig(rounds=1, clients_per_round=2, min_clients=2, min_updates=2,
                           round_timeout=120, epochs=1, dp_unit="example",
                           target_epsilon=5.0, dp_sample_rate=0.2, secagg=True,
                           secagg_stage_timeout=60)
    else:
        config = RunConfig(rounds=1, clients_per_round=2, min_clients=2, min_updates=2,
                           round_timeout=120, epochs=1, target_epsilon=20.0, clip_norm=0.5,
                           secagg=True, secagg_stage_timeout=60)
    with _serving(world, config) as (coord, _state, device, web):
        token = world.tokens.create("client", label=f"dp-{mode}-{time.monotonic_ns()}")
        page, rec = _open_client(world, web.url, token, _csv(world, 4))
        page.click("#start")
        (client,) = _python_clients(world, device.url)[:1]
        thread = threading.Thread(target=client.run, kwargs={"max_seconds": 300},
                                  daemon=True)
        thread.start()
        thread.join(320)
        _wait(page, "document.querySelector('#train-msg').textContent.includes('finished')")
        status = coord.status()
        assert status["completed"] == 1, status
        privacy = status["privacy"]
        assert privacy["dp_unit"] == ("example" if mode == "example" else "client")
        assert 0 < privacy["epsilon"] <= (5.0 if mode == "example" else 20.0) + 1e-9
        print(f"{mode}: epsilon {privacy['epsilon']:.3f} after one round")
        assert _text(page, "#rounds") == "1"
        _no_data_in_requests(world, rec, 4)
        log = _text(page, "#log")
        if mode == "example":
            assert "DP-SGD" in log and "steps" in log
        else:
            assert "distributed discrete Gaussian" in log
            sent = page.evaluate("window.privmlClient.encoded.values.length")
            assert sent == sum(int(np.prod(v.shape)) for v in coord.params.values())

"""The TF.js converter, checked in a real browser: headless Debian chromium loads the
converted ``model.json`` with the npm build of TensorFlow.js (wasm backend for dense models,
cpu for convolutions, as the client page sets them) and predicts what torch predicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from privml.models import build_torch, write_tfjs, zoo
from privml.train import get_params, set_params
from tests._browser import CHROMIUM, FLAGS, static_server

_PAGE = """<!doctype html><meta charset="utf-8"><title>converter check</title>
<script src="/vendor/tf.min.js"></script>
<script src="/vendor/tf-backend-wasm.min.js"></script>"""

_PREDICT = """async ([url, backend, shape, flat]) => {
  if (backend === "wasm") tf.wasm.setWasmPaths("/vendor/");
  await tf.setBackend(backend);
  await tf.ready();
  const model = await tf.loadLayersModel(url);
  const out = model.predict(tf.tensor(flat, shape, "float32"));
  return {backend: tf.getBackend(), shape: out.shape, values: Array.from(await out.data())};
}"""


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def page(pw: Any) -> Iterator[Any]:
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    try:
        yield browser.new_page()
    finally:
        browser.close()


@pytest.mark.parametrize(("kind", "backend"), [("mlp", "wasm"), ("logreg", "wasm"),
                                               ("cnn", "cpu")])
def test_browser_predictions_equal_torch(tmp_path: Path, page: Any, kind: str,
                                         backend: str) -> None:
    torch.manual_seed(0)
    spec = zoo(kind, input_shape=(8, 8, 1), num_classes=10)
    model = build_torch(spec)
    rng = np.random.default_rng(1)
    params = {k: (rng.normal(size=v.shape) * 0.3).astype(np.float32)
              for k, v in get_params(model).items()}
    set_params(model, params)
    write_tfjs(tmp_path / "model", spec, params)
    (tmp_path / "index.html").write_text(_PAGE)
    x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    with static_server(tmp_path) as url:
        page.goto(f"{url}/index.html")
        got = page.evaluate(_PREDICT, [f"{url}/model/model.json", backend, list(x.shape),
                                       x.ravel().tolist()])
    assert got["backend"] == backend
    assert got["shape"] == list(want.shape)
    np.testing.assert_allclose(np.array(got["values"]).reshape(want.shape), want,
                               rtol=1e-5, atol=1e-5)


_FROM_COORDINATOR = """async ([url, token, shape, flat]) => {
  await tf.setBackend("cpu");
  const headers = {"Authorization": "Bearer " + token, "X-Privml-Protocol": "1"};
  const model = await tf.loadLayersModel(url, {requestInit: {headers}});
  const out = model.predict(tf.tensor(flat, shape, "float32"));
  return Array.from(await out.data());
}"""


def test_browser_loads_the_coordinators_model_over_tls_with_a_token(tmp_path: Path,
                                                                   pw: Any) -> None:
    """Chromium trusts only the federation's server key, fetches the current model from the
    web port with a bearer token in a header (same origin: no CORS), and predicts as torch."""
    from privml.transport._coordinator import Coordinator, RunConfig
    from privml.transport._serve import ServerThread
    from privml.transport._tokens import TokenStore, default_tokens_path
    from privml.transport._webapp import create_web_app
    from privml.transport.server import ServerState
    from privml.transport.tls import Revocations, init_federation, server_ssl_context
    from tests._browser import spki_flag

    paths = init_federation(tmp_path / "fed")
    spec = zoo("cnn", input_shape=(8, 8, 1), num_classes=10)
    model = build_torch(spec)
    coord = Coordinator(RunConfig(rounds=1, clients_per_round=1), run_id="run-tfjs",
                        model_spec_json=spec.to_json(), initial=get_params(model))
    state = ServerState(coord, Revocations(paths.revoked).is_revoked)
    tokens = TokenStore(default_tokens_path(paths.dir))
    token = tokens.create("client")
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 1)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    web = ServerThread(create_web_app(state, tokens),
                       ssl_context=server_ssl_context(paths, require_client_cert=False))
    with web:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=[*FLAGS, spki_flag(paths.server_cert)])
        try:
            page = browser.new_page()
            page.goto(f"{web.url}/predict")  # the coordinator's own page: it loads TF.js
            got = page.evaluate(_FROM_COORDINATOR, [f"{web.url}/v1/tfjs/{coord.etag}/model.json",
                                                    token, list(x.shape), x.ravel().tolist()])
        finally:
            browser.close()
    np.testing.assert_allclose(np.array(got).reshape(want.shape), want, rtol=1e-5, atol=1e-5)


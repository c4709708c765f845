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
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
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

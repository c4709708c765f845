"""The browser's differential privacy (``privml/web/dp.js``) in headless Debian chromium,
against its Python twins: client-level clipping (``clip_l2``), the secure samplers (the
discrete Gaussian against its exact pmf), the distributed discrete Gaussian encoding (decoded
by ``DistributedDiscreteGaussian.decode``), DP-SGD (against ``train_dp``) and plain local
training (against a torch SGD loop), on TF.js's cpu backend, the training twins on wasm too.

Statistical checks use n ~ 2e5 draws and fail at 5 standard errors or a p-value of 1e-4;
each also shows that it can fail, by rejecting a slightly wrong distribution."""

from __future__ import annotations

import base64
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import stats

from privml.data import ClientData
from privml.dp import DistributedDiscreteGaussian, clip_l2
from privml.models import ModelSpec, build_torch, write_tfjs, zoo
from privml.train import DPSGDConfig, TrainConfig, get_params, set_params, train_dp
from privml.train._ghost import clipped_grad_sum
from tests._browser import CHROMIUM, FLAGS, ROOT, static_server

ALPHA = 1e-4  # a statistical check fails below this p-value (or beyond 5 standard errors)

# Every evaluated snippet starts with: `dp` the module, the backend `arg.backend` (cpu unless
# given) selected, `seeded(s)` a reproducible rng (mulberry32, two words per 53-bit uniform),
# `caught(f)` an exception as "Name: message", `base64(typedArray)` its bytes.
_PRELUDE = """
const dp = await import("/dp.js");
const backend = (arg && arg.backend) || "cpu";
if (tf.getBackend() !== backend) { await tf.setBackend(backend); await tf.ready(); }
const seeded = (seed) => {
  let a = seed >>> 0;
  const word = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return {uniform01: () => ((word() >>> 5) * 67108864 + (word() >>> 6)) / 9007199254740992};
};
const caught = (f) => { try { f(); return null; } catch (e) { return `${e.name}: ${e.message}`; } };
const weightsOf = (model) => model.getWeights().map((w) => Array.from(w.dataSync()));
const base64 = (typed) => {
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 32768) {
    text += String.fromCharCode(...bytes.subarray(i, i + 32768));
  }
  return btoa(text);
};
"""


@dataclass(frozen=True, slots=True)
class Page:
    tab: Any
    folder: Path
    url: str

    def run(self, body: str, arg: Any = None) -> Any:
        return self.tab.evaluate("async (arg) => {" + _PRELUDE + body + "}", arg)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("dp-page")
    shutil.copy(ROOT / "src" / "privml" / "web" / "dp.js", folder / "dp.js")
    (folder / "index.html").write_text('<!doctype html><meta charset="utf-8"><title>dp</title>'
                                       '<script src="/vendor/tf.min.js"></script>'
                                       '<script src="/vendor/tf-backend-wasm.min.js"></script>')
    with sync_playwright() as pw, static_server(folder) as url:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            tab = browser.new_page()
            tab.set_default_timeout(120_000)
            tab.goto(f"{url}/index.html")
            tab.evaluate('tf.wasm.setWasmPaths("/vendor/")')  # before the backend starts
            assert tab.evaluate("window.isSecureContext && typeof tf.train.sgd")
            yield Page(tab, folder, url)
        finally:
            browser.close()


# ---- clipping -------------------------------------------------------------------------------


def test_clip_update_matches_clip_l2(page: Page) -> None:
    rng = np.random.default_rng(0)
    big = (rng.normal(size=1000) * 3).astype(np.float32)  # norm ~95
    small = (rng.normal(size=1000) * 0.01).astype(np.float32)  # norm ~0.3
    got = page.run("""
      const [big, small] = [Float32Array.from(arg.big), Float32Array.from(arg.small)];
      const clipped = dp.clipUpdate(big, 10);
      const same = dp.clipUpdate(small, 10);
      return {clipped: Array.from(clipped), type: clipped.constructor.name,
              norm: dp.l2Norm(big), same: Array.from(same), copy: same !== small,
              clipped64: Array.from(dp.clipUpdate(Float64Array.from(big), 10)),
              nan: caught(() => dp.clipUpdate(Float32Array.of(1, NaN), 1)),
              inf: caught(() => dp.clipUpdate(Float32Array.of(Infinity), 1)),
              zero: caught(() => dp.clipUpdate(big, 0)),
              plain: caught(() => dp.clipUpdate([1, 2], 1))};
    """, {"big": big.tolist(), "small": small.tolist()})
    want, norm = clip_l2(big, bound=10.0)
    assert got["type"] == "Float32Array"
    assert got["norm"] == pytest.approx(norm, rel=1e-12)
    np.testing.assert_allclose(got["clipped"], want, rtol=0, atol=1e-6)
    assert np.linalg.norm(np.array(got["clipped"], np.float32).astype(np.float64)) <= 10.0
    want64, _ = clip_l2(big.astype(np.float64), bound=10.0)
    np.testing.assert_allclose(got["clipped64"], want64, rtol=0, atol=1e-12)
    assert np.array_equal(np.array(got["same"], np.float32), small) and got["copy"]
    assert got["nan"].startswith("RangeError") and got["inf"].startswith("RangeError")
    assert got["zero"].startswith("RangeError") and got["plain"].startswith("TypeError")


# ---- samplers -------------------------------------------------------------------------------


def _chi_square(hist: dict[int, int], pmf: dict[int, float], n: int) -> float:
    """p-value of the histogram against ``pmf``; bins with expected count >= 5, the tails
    pooled into the outermost bins."""
    keys = sorted(k for k, p in pmf.items() if n * p >= 5)
    lo, hi = keys[0], keys[-1]
    observed = np.array([sum(c for k, c in hist.items() if k <= lo), *(
        hist.get(k, 0) for k in keys[1:-1]), sum(c for k, c in hist.items() if k >= hi)])
    probs = np.array([sum(p for k, p in pmf.items() if k <= lo), *(
        pmf[k] for k in keys[1:-1]), sum(p for k, p in pmf.items() if k >= hi)])
    expected = n * probs / probs.sum()
    stat = float(((observed - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(stat, len(keys) - 1))


def _discrete_pmf(sigma: float) -> dict[int, float]:
    k = np.arange(-int(15 * sigma) - 10, int(15 * sigma) + 11)
    w = np.exp(-(k.astype(np.float64) ** 2) / (2 * sigma * sigma))
    return dict(zip(k.tolist(), (w / w.sum()).tolist(), strict=True))


@pytest.mark.parametrize("sigma", [0.5, 3.0, 20.0])
def test_discrete_gaussian_matches_the_exact_pmf(page: Page, sigma: float) -> None:
    n = 200_000
    got = page.run("""
      const s = dp.discreteGaussian(arg.n, arg.sigma);
      const hist = {};
      let nonInteger = 0;
      for (const v of s) { if (!Number.isInteger(v)) nonInteger++; hist[v] = (hist[v] || 0) + 1; }
      return {type: s.constructor.name, length: s.length, nonInteger, hist};
    """, {"n": n, "sigma": sigma})
    assert (got["type"], got["length"], got["nonInteger"]) == ("Float64Array", n, 0)
    hist = {int(k): c for k, c in got["hist"].items()}
    pmf = _discrete_pmf(sigma)
    var = sum(k * k * p for k, p in pmf.items())  # 0.2150 for sigma 1/2; sigma^2 from ~2 on
    m4 = sum(k**4 * p for k, p in pmf.items())
    values = np.repeat(np.array(list(hist)), list(hist.values())).astype(np.float64)
    assert abs(values.mean()) < 5 * math.sqrt(var / n)
    assert abs(values.var() - var) < 5 * math.sqrt((m4 - var * var) / n)
    if sigma >= 3:
        assert var == pytest.approx(sigma * sigma, rel=1e-9)
    assert _chi_square(hist, pmf, n) > ALPHA
    # The check has power: a 3% wider discrete Gaussian is rejected outright, and so (at
    # sigma 1/2) is the rounded continuous Gaussian, which has variance ~1/3, not 0.2150.
    assert _chi_square(hist, _discrete_pmf(sigma * 1.03), n) < 1e-10
    if sigma < 1:
        edges = stats.norm.cdf((np.arange(-8, 9) + 0.5) / sigma)
        rounded = dict(zip(range(-7, 9), np.diff(edges).tolist(), strict=True))
        assert _chi_square(hist, rounded, n) < 1e-10


def test_gaussian_moments_and_shape(page: Page) -> None:
    n, sigma = 200_001, 2.5
    got = page.run("""
      const s = dp.gaussian(arg.n, arg.sigma);
      return {type: s.constructor.name, values: base64(s),
              zero: Array.from(dp.gaussian(3, 0)), bad: caught(() => dp.gaussian(3, -1)),
              badRng: caught(() => dp.gaussian(3, 1, {})),
              u: Array.from({length: 1000}, () => dp.uniform01())};
    """, {"n": n, "sigma": sigma})
    x = np.frombuffer(base64.b64decode(got["values"]), dtype="<f8")
    assert got["type"] == "Float64Array" and x.shape == (n,)
    assert abs(x.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(x.var() - sigma**2) < 5 * sigma**2 * math.sqrt(2 / n)
    assert stats.kstest(x / sigma, "norm").pvalue > ALPHA
    assert stats.kstest(x / (sigma * 1.05), "norm").pvalue < 1e-10  # the check has power
    assert got["zero"] == [0, 0, 0]
    assert got["bad"].startswith("RangeError") and got["badRng"].startswith("TypeError")
    u = np.array(got["u"])
    assert ((u >= 0) & (u < 1)).all() and len(set(got["u"])) == 1000


def test_randomness_comes_from_get_random_values(page: Page) -> None:
    """With Math.random made to throw, the samplers and an encoding still run, and every
    draw is a crypto.getRandomValues call (a 64 KiB pool holds 8192 uniforms)."""
    settings = {**DistributedDiscreteGaussian(clip=1.0, gamma=0.01, sigma=2.0, dim=50,
                                              clients=5, bits=32).describe(), "kind": "ddg"}
    calls = page.run("""
      const real = crypto.getRandomValues.bind(crypto);
      let calls = 0;
      crypto.getRandomValues = (a) => { calls++; return real(a); };
      const mathRandom = Math.random;
      Math.random = () => { throw new Error("Math.random was used"); };
      try {
        dp.gaussian(20000, 1);
        dp.discreteGaussian(20000, 3);
        dp.ddgEncode(arg, new Float32Array(50).fill(0.3));
      } finally {
        crypto.getRandomValues = real;
        Math.random = mathRandom;
      }
      return calls;
    """, settings)
    # 20000 Gaussians need 20000 uniforms, the discrete ones at least 3 per draw
    assert calls >= (20000 + 3 * 20000) // 8192


# ---- the distributed discrete Gaussian ------------------------------------------------------


def _ddg(**kw: Any) -> DistributedDiscreteGaussian:
    base: dict[str, Any] = {"clip": 1.0, "gamma": 1e-3, "sigma": 20.0, "dim": 300,
                            "clients": 40, "bits": 32}
    return DistributedDiscreteGaussian(**{**base, **kw})


def _settings(ddg: DistributedDiscreteGaussian) -> dict[str, Any]:
    return {**ddg.describe(), "kind": "ddg"}


def test_ddg_without_noise_decodes_to_the_clipped_update(page: Page) -> None:
    """An rng that always draws 0 rounds every coordinate up and makes the discrete noise 0
    (both geometrics are 0 and the proposal 0 is accepted): the encoding is then exact."""
    ddg = _ddg(sigma=1.0, clients=10)
    rng = np.random.default_rng(3)
    # negative entries: rounding up shrinks the norm, so the first try meets Delta_2
    neg = -np.abs(rng.normal(size=ddg.dim) * 0.2).astype(np.float32)
    pos = -neg
    got = page.run("""
      const zero = {uniform01: () => 0};
      const [neg, pos] = [Float32Array.from(arg.neg), Float32Array.from(arg.pos)];
      const enc = dp.ddgEncode(arg.settings, neg, {rng: zero});
      return {enc: Array.from(enc), type: enc.constructor.name,
              round: Array.from(dp.ddgRound(arg.settings, neg, {rng: zero})),
              stuck: caught(() => dp.ddgEncode(arg.settings, pos, {rng: zero}))};
    """, {"settings": _settings(ddg), "neg": neg.tolist(), "pos": pos.tolist()})
    clipped, norm = clip_l2(neg.astype(np.float64), bound=ddg.clip)
    assert norm > ddg.clip  # the clip is exercised
    y = clipped / ddg.gamma
    want = np.floor(y) + (y > np.floor(y))
    assert want @ want <= math.floor(ddg.l2_bound**2)
    assert got["type"] == "Uint32Array" and len(got["enc"]) == ddg.dim
    assert np.array_equal(got["round"], want)
    decoded = ddg.decode(np.array(got["enc"], dtype=np.uint32))
    np.testing.assert_array_equal(decoded, want * ddg.gamma)
    assert np.abs(decoded - clipped).max() <= ddg.gamma
    # positive entries rounded up always exceed Delta_2: the retry rule gives up, as Python's
    up = np.ceil(clip_l2(pos.astype(np.float64), bound=ddg.clip)[0] / ddg.gamma)
    assert up @ up > ddg.l2_bound**2
    assert got["stuck"].startswith("RangeError: conditional rounding kept failing")


def test_ddg_conditional_rounding_meets_delta2(page: Page) -> None:
    """beta = 0.95 leaves Delta_2^2 only ~60 above ||y||^2 + d/6: unconditioned, about half
    the roundings would exceed it; every browser rounding is within it and one step away."""
    ddg = _ddg(beta=0.95)
    update = (np.random.default_rng(4).normal(size=ddg.dim) * 0.2).astype(np.float32)
    got = page.run("""
      const u = Float32Array.from(arg.update);
      return Array.from({length: 200}, () => Array.from(dp.ddgRound(arg.settings, u)));
    """, {"settings": _settings(ddg), "update": update.tolist()})
    r = np.array(got)
    y = clip_l2(update.astype(np.float64), bound=ddg.clip)[0] / ddg.gamma
    limit = math.floor(ddg.l2_bound**2)
    assert ((r == np.floor(y)) | (r == np.floor(y) + 1)).all()
    assert (np.einsum("ij,ij->i", r, r) <= limit).all()
    gen = np.random.default_rng(5)
    free = np.floor(y) + (gen.random((2000, ddg.dim)) < y - np.floor(y))
    assert (np.einsum("ij,ij->i", free, free) > limit).mean() > 0.3
    assert len({tuple(row) for row in got}) == 200  # fresh randomness every call


@pytest.mark.parametrize("bits", [32, 64])
def test_ddg_sum_of_browser_encodings_decodes_in_python(page: Page, bits: int) -> None:
    """40 browser encodings summed mod 2^bits and decoded by Python give the sum of the
    clipped updates plus noise whose per-coordinate std is gamma sqrt(40 sigma^2 + rounding
    variance): the z-scores have mean ~0 and mean square ~1."""
    ddg, k = _ddg(dim=500, bits=bits), 40
    updates = (np.random.default_rng(6).normal(size=(k, ddg.dim)) * 0.1).astype(np.float32)
    got = page.run("""
      const out = arg.updates.map((u) => dp.ddgEncode(arg.settings, Float32Array.from(u)));
      return {type: out[0].constructor.name, length: out[0].length,
              values: out.map((e) => Array.from(e, String))};
    """, {"settings": _settings(ddg), "updates": updates.tolist()})
    assert got["type"] == ("Uint32Array" if bits == 32 else "BigUint64Array")
    assert got["length"] == ddg.dim
    enc = np.array([[int(v) for v in row] for row in got["values"]], dtype=ddg.dtype)
    total = enc.sum(axis=0, dtype=ddg.dtype)  # wraps mod 2^bits, as secure aggregation does
    clipped = np.array([clip_l2(u.astype(np.float64), bound=ddg.clip)[0] for u in updates])
    assert (np.linalg.norm(updates, axis=1) > ddg.clip).all()
    frac = clipped / ddg.gamma - np.floor(clipped / ddg.gamma)
    sd = ddg.gamma * np.sqrt(k * ddg.sigma**2 + (frac * (1 - frac)).sum(axis=0))
    z = (ddg.decode(total) - clipped.sum(axis=0)) / sd
    assert abs(z.mean()) < 5 / math.sqrt(ddg.dim)
    assert abs((z**2).mean() - 1) < 5 * math.sqrt(2 / ddg.dim)
    assert np.abs(z).max() < 5.5


def test_ddg_refuses_what_python_refuses(page: Page) -> None:
    good = _settings(_ddg(dim=4))
    bad = [{**good, "kind": "gaussian"}, {**good, "sigma": 0.25}, {**good, "bits": 16},
           {**good, "beta": 1.0}, {**good, "gamma": 0}, {**good, "dim": 0},
           {**good, "clients": 10**7},  # the sum could wrap mod 2^32
           {k: v for k, v in good.items() if k != "clip"}]
    for settings in bad:
        with pytest.raises(Exception, match=r"."):
            DistributedDiscreteGaussian.from_json(settings)
    got = page.run("""
      const enc = (s, u) => caught(() => dp.ddgEncode(s, u));
      return {good: enc(arg.good, Float32Array.of(0.1, 0.2, 0.3, 0.4)),
              bad: arg.bad.map((s) => enc(s, Float32Array.of(0.1, 0.2, 0.3, 0.4))),
              nan: enc(arg.good, Float32Array.of(0.1, NaN, 0.3, 0.4)),
              inf: enc(arg.good, Float64Array.of(0.1, -Infinity, 0.3, 0.4)),
              short: enc(arg.good, Float32Array.of(0.1, 0.2, 0.3)),
              plain: enc(arg.good, [0.1, 0.2, 0.3, 0.4])};
    """, {"good": good, "bad": bad})
    assert got["good"] is None
    assert all(e is not None and e.split(":")[0] in ("TypeError", "RangeError")
               for e in got["bad"]), got["bad"]
    assert got["nan"].startswith("RangeError") and "finite" in got["nan"]
    assert got["inf"].startswith("RangeError") and "finite" in got["inf"]
    assert got["short"].startswith("RangeError") and got["plain"].startswith("TypeError")


# ---- training -------------------------------------------------------------------------------


def _model(page: Page, name: str, spec: ModelSpec, seed: int) -> tuple[str, dict[str, Any]]:
    """A torch-initialised model written as TF.js files the page can load: (url, params)."""
    params = get_params(build_torch(spec, seed=seed))
    write_tfjs(page.folder / name, spec, params)
    return f"{page.url}/{name}/model.json", params


def _torch_layout(weights: list[list[float]], like: dict[str, Any]) -> dict[str, np.ndarray]:
    """TF.js weights (model.getWeights() order) in torch layout: Dense kernels transposed."""
    out = {}
    for flat, (name, ref) in zip(weights, like.items(), strict=True):
        arr = np.array(flat, np.float32)
        out[name] = arr.reshape(ref.shape[::-1]).T if ref.ndim == 2 else arr.reshape(ref.shape)
    return out


_TRAIN = """
  const model = await tf.loadLayersModel(arg.url);
  const xs = tf.tensor(arg.x, arg.shape, "float32");
  const ys = tf.tensor1d(arg.y, "int32");
  const before = tf.memory().numTensors;
  const entry = weightsOf(model);
  const seen = [];
  if (arg.fn.endsWith("Async")) arg.opts = {...arg.opts, onProgress: (p) => seen.push(p)};
  const result = await dp[arg.fn](model, xs, ys, arg.opts);
  if (arg.fn.endsWith("Async")) result.progress = seen;
  const out = {result, entry, weights: weightsOf(model), leaked: tf.memory().numTensors - before,
               backend: tf.getBackend()};
  tf.dispose([xs, ys]);
  model.dispose();
  return out;
"""


def _train(page: Page, url: str, fn: str, x: np.ndarray, y: np.ndarray, opts: dict[str, Any],
           setup: str = "", backend: str = "cpu") -> Any:
    arg = {"url": url, "fn": fn, "x": x.ravel().tolist(), "shape": list(x.shape),
           "y": y.tolist(), "opts": opts, "backend": backend}
    return page.run(setup + _TRAIN, arg)


def _train_dp_reference(spec: ModelSpec, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
                        *, clip: float, steps: int, lr: float, momentum: float
                        ) -> dict[str, np.ndarray]:
    model = build_torch(spec)
    set_params(model, params)
    result = train_dp(model, ClientData(x, y, np.arange(len(x), dtype=np.int64)),
                      TrainConfig(epochs=steps, batch_size=len(x), lr=lr, momentum=momentum),
                      dp=DPSGDConfig(noise_multiplier=0.0, max_grad_norm=clip, insecure_seed=0,
                                     sample_rate=1.0), seed=0)
    assert result.steps == steps
    return get_params(model)


@pytest.mark.parametrize(("backend", "momentum"), [("cpu", 0.0), ("cpu", 0.5), ("wasm", 0.5)])
def test_dpsgd_without_noise_equals_train_dp(page: Page, backend: str, momentum: float) -> None:
    """sample_rate 1 and no noise: three steps of per-example clipped mean gradients, the
    clip set to the median per-example norm so that it bites on half the examples; on the cpu
    backend and on wasm (which the client page uses for dense models)."""
    spec = zoo("mlp", input_shape=(6,), num_classes=3)
    url, params = _model(page, f"dpsgd-{backend}-{momentum}", spec, seed=1)
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(12, 6)) * 2).astype(np.float32)
    y = rng.integers(0, 3, size=12).astype(np.int64)
    model = build_torch(spec)
    set_params(model, params)
    norms = clipped_grad_sum(model, torch.from_numpy(x), torch.from_numpy(y), max_grad_norm=1.0)[1]
    clip = float(np.median(norms.numpy()))
    want = _train_dp_reference(spec, params, x, y, clip=clip, steps=3, lr=0.5, momentum=momentum)
    unclipped = _train_dp_reference(spec, params, x, y, clip=1e6, steps=3, lr=0.5,
                                    momentum=momentum)
    got = _train(page, url, "dpsgdTrain", x, y, {
        "noise_multiplier": 0, "max_grad_norm": clip, "sample_rate": 1, "steps": 3, "lr": 0.5,
        "momentum": momentum}, backend=backend)
    assert got["backend"] == backend
    assert got["result"] == {"steps": 3, "numExamples": 12}
    assert got["leaked"] == 0
    weights = _torch_layout(got["weights"], want)
    for name, ref in want.items():
        np.testing.assert_allclose(weights[name], ref, rtol=0, atol=1e-5, err_msg=name)
    # the comparison can fail: without the clip the weights end elsewhere
    assert max(np.abs(want[k] - unclipped[k]).max() for k in want) > 1e-2


def test_dpsgd_noise_honours_steps_and_steps_on_empty_batches(page: Page) -> None:
    """q = 1e-9: every batch is empty (P(any example) ~ 5e-8), yet each of the 4 steps adds
    N(0, (z C)^2) / (q n) per weight, so the weights move by lr sqrt(4) z C / (q n) in std."""
    spec = zoo("mlp", input_shape=(20,), num_classes=3)  # 3075 weights
    url, _ = _model(page, "dpsgd-noise", spec, seed=2)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(12, 20)).astype(np.float32)
    y = rng.integers(0, 3, size=12).astype(np.int64)
    q, lr, steps = 1e-9, 1e-8, 4
    got = _train(page, url, "dpsgdTrain", x, y, {
        "noise_multiplier": 1.0, "max_grad_norm": 1.0, "sample_rate": q, "steps": steps,
        "lr": lr, "momentum": 0})
    assert got["result"] == {"steps": steps, "numExamples": 12} and got["leaked"] == 0
    moved = np.concatenate([np.subtract(a, b) for a, b in
                            zip(got["weights"], got["entry"], strict=True)])
    want_sd = lr * math.sqrt(steps) * 1.0 * 1.0 / (q * len(x))  # 1.67; 3 steps: 1.44
    assert moved.std() == pytest.approx(want_sd, rel=0.06)
    assert abs(moved.mean()) < 5 * want_sd / math.sqrt(moved.size)
    assert stats.kstest(moved / want_sd, "norm").pvalue > ALPHA
    # ordinary batches, noise and momentum: the step count still holds, nothing leaks
    busy = _train(page, url, "dpsgdTrain", x, y, {
        "noise_multiplier": 1.1, "max_grad_norm": 1.0, "sample_rate": 0.5, "steps": 5,
        "lr": 0.05, "momentum": 0.9})
    assert busy["result"] == {"steps": 5, "numExamples": 12} and busy["leaked"] == 0
    assert all(np.isfinite(w).all() for w in busy["weights"])
    assert busy["weights"] != busy["entry"]


def _torch_plain(spec: ModelSpec, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
                 orders: list[list[int]], *, batch_size: int, lr: float, momentum: float
                 ) -> tuple[dict[str, np.ndarray], float]:
    """_loop.py's step on given orders: mean cross-entropy of the logits, torch SGD."""
    model = build_torch(spec)
    set_params(model, params)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    losses = []
    for order in orders:
        for start in range(0, len(x), batch_size):
            idx = np.array(order[start:start + batch_size])
            loss = F.cross_entropy(model.logits(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return get_params(model), float(np.mean(losses))


@pytest.mark.parametrize(("backend", "fn"), [("cpu", "trainPlain"), ("wasm", "trainPlain"),
                                             ("cpu", "trainPlainAsync")])
def test_train_plain_equals_torch_sgd_with_momentum(page: Page, backend: str,
                                                    fn: str) -> None:
    spec = zoo("mlp", input_shape=(6,), num_classes=3)
    url, params = _model(page, f"plain-{backend}-{fn}", spec, seed=3)
    rng = np.random.default_rng(9)
    x = (rng.normal(size=(23, 6)) * 2).astype(np.float32)
    y = rng.integers(0, 3, size=23).astype(np.int64)
    opts = {"epochs": 2, "batch_size": 5, "lr": 0.1, "momentum": 0.9}
    orders = page.run(
        "const r = seeded(11); return [0, 1].map(() => Array.from(dp.permutation(23, r)));")
    assert all(sorted(o) == list(range(23)) for o in orders) and orders[0] != orders[1]
    got = _train(page, url, fn, x, y, opts,
                 setup="arg.opts = {...arg.opts, rng: seeded(11)};", backend=backend)
    assert got["backend"] == backend
    if fn.endswith("Async"):  # the same steps, each reported to the page as it goes
        assert [p["done"] for p in got["result"].pop("progress")] == list(range(1, 11))
    want, loss = _torch_plain(spec, params, x, y, orders, batch_size=5, lr=0.1, momentum=0.9)
    assert got["result"]["steps"] == 10 and got["result"]["numExamples"] == 23
    assert got["result"]["loss"] == pytest.approx(loss, abs=1e-5)
    assert got["leaked"] == 0
    weights = _torch_layout(got["weights"], want)
    for name, ref in want.items():
        np.testing.assert_allclose(weights[name], ref, rtol=0, atol=1e-5, err_msg=name)
    without, _ = _torch_plain(spec, params, x, y, orders, batch_size=5, lr=0.1, momentum=0.0)
    assert max(np.abs(want[k] - without[k]).max() for k in want) > 1e-2  # momentum matters


def test_training_refuses_bad_input_and_restores_a_diverged_model(page: Page) -> None:
    spec = zoo("mlp", input_shape=(6,), num_classes=3)
    url, _ = _model(page, "bad", spec, seed=4)
    x = (np.random.default_rng(10).normal(size=(8, 6)) * 3).astype(np.float32)
    got = page.run("""
      const model = await tf.loadLayersModel(arg.url);
      const xs = tf.tensor(arg.x, [8, 6], "float32");
      const ys = tf.tensor1d([0, 1, 2, 0, 1, 2, 0, 1], "int32");
      const badYs = tf.tensor1d([0, 1, 2, 3, 0, 1, 2, 0], "int32");
      const entry = weightsOf(model);
      const dpOpts = {noise_multiplier: 1, max_grad_norm: 1, sample_rate: 0.5, steps: 2, lr: 0.1};
      const before = tf.memory().numTensors;
      const out = {
        steps0: caught(() => dp.dpsgdTrain(model, xs, ys, {...dpOpts, steps: 0})),
        rate: caught(() => dp.dpsgdTrain(model, xs, ys, {...dpOpts, sample_rate: 1.5})),
        label: caught(() => dp.dpsgdTrain(model, xs, badYs, dpOpts)),
        momentum: caught(() => dp.trainPlain(model, xs, ys,
                                             {epochs: 1, batch_size: 4, lr: 0.1, momentum: 1})),
        diverged: caught(() => dp.trainPlain(model, xs, ys, {epochs: 3, batch_size: 4, lr: 1e30})),
        dpDiverged: caught(() => dp.dpsgdTrain(model, xs, ys, {...dpOpts, sample_rate: 1, steps: 3,
                                                               max_grad_norm: 1e30, lr: 1e30})),
      };
      out.unchanged = JSON.stringify(weightsOf(model)) === JSON.stringify(entry);
      out.leaked = tf.memory().numTensors - before;
      return out;
    """, {"url": url, "x": x.ravel().tolist()})
    for key in ("steps0", "rate", "label", "momentum"):
        assert got[key] is not None and got[key].startswith("RangeError"), (key, got[key])
    assert got["diverged"].startswith("Error: training diverged"), got["diverged"]
    assert got["dpDiverged"].startswith("Error: training diverged"), got["dpDiverged"]
    assert got["unchanged"]
    assert got["leaked"] == 0


def test_page_module_is_self_contained() -> None:
    """dp.js imports nothing: the page hands it TF.js (or it reads globalThis.tf)."""
    text = (ROOT / "src" / "privml" / "web" / "dp.js").read_text()
    assert not any(line.startswith("import ") for line in text.splitlines())
    assert "Math.random" not in text.replace("Math.random is never used", "")

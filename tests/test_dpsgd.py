"""Sample-level DP-SGD: the fast clipped sum against a per-example loop, the noise, the
Poisson sampling, the secure/insecure seeding and a learning run."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from privml import ConfigError
from privml.data import ClientData, load_dataset
from privml.models import build_torch, zoo
from privml.train import (
    DPSGDConfig,
    DPTrainResult,
    TrainConfig,
    TrainFn,
    clipped_grad_sum,
    dp_train_fn,
    evaluate,
    get_params,
    train_dp,
    train_local,
)
from privml.train._dpsgd import add_noise, poisson_positions
from privml.train._ghost import _unfold_is_faster, use_gram


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # These batches are tiny: with two intra-op threads on a 2-core VM, torch spends 10x
    # longer waking threads than computing (measured: 48 s vs 13 s for this file).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- the reference


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    fn = getattr(model, "logits", None)
    out: Tensor = fn(x) if callable(fn) else model(x)
    return out


def per_example_grads(model: nn.Module, x: Tensor, y: Tensor) -> list[dict[str, Tensor]]:
    """The slow, obviously right way: one backward pass per example."""
    out = []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(_logits(model, x[i:i + 1]), y[i:i + 1], reduction="sum").backward()
        out.append({n: p.grad.detach().clone() for n, p in model.named_parameters()
                    if p.grad is not None})
    model.zero_grad(set_to_none=True)
    return out


def loop_reference(model: nn.Module, x: Tensor, y: Tensor, c: float
                   ) -> tuple[dict[str, Tensor], Tensor, list[dict[str, Tensor]]]:
    """(clipped sum, per-sample norms, clipped per-sample gradients) by the loop."""
    grads = per_example_grads(model, x, y)
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    norms, clipped = [], []
    for g in grads:
        norm = torch.sqrt(sum(t.square().sum() for t in g.values()))
        factor = min(1.0, c / float(norm)) if float(norm) > 0 else 1.0
        norms.append(norm)
        clipped.append({n: factor * t for n, t in g.items()})
        for n, t in g.items():
            total[n] += factor * t
    return total, torch.stack(norms), clipped


# ---------------------------------------------------------------------- the models


class GroupNormNet(nn.Module):
    """Conv, GroupNorm, LayerNorm and a grouped conv: the vmap fallback and both conv paths."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)  # fallback path
        self.wide = nn.Conv2d(8, 16, 3, padding=1, stride=2)    # few positions: Gram path
        self.head = nn.Linear(16 * 2 * 2, 4)
        self.ln = nn.LayerNorm(4)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.gn(self.conv(x)))
        x = F.max_pool2d(F.relu(self.grouped(x)), 2)
        return self.ln(self.head(F.relu(self.wide(x)).flatten(1)))


class SequenceNet(nn.Module):
    """Linear layers on (B, T, d) input: one takes the Gram path, one the per-sample one."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)    # T=3, p=d=8: Gram
        self.b = nn.Linear(8, 2)    # T=3, p=2, d=8: per-sample layer gradient
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.b(torch.tanh(self.a(x))).flatten(1))


class DeepConvNet(nn.Module):
    """Many input channels on a small map: the im2col + bmm per-sample path (T <= 64,
    d >= 256), with a GroupNorm over a flat (B, C) input."""

    def __init__(self) -> None:
        super().__init__()
        self.deep = nn.Conv2d(32, 6, 3, padding=1)  # T=16, p=6, d=288
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(6 * 4 * 4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.gn(self.head(torch.tanh(self.deep(x)).flatten(1)))


class EmbeddingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 5)
        self.head = nn.Linear(5, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.emb(x).mean(1))


def _spec_model(name: str, shape: tuple[int, ...]) -> Callable[[], nn.Module]:
    return lambda: build_torch(zoo(name, input_shape=shape, num_classes=3), seed=1)


CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Generator, int], Tensor]]] = {
    "mlp": (_spec_model("mlp", (6, 6, 1)),
            lambda g, b: torch.randn(b, 6, 6, 1, generator=g, dtype=torch.float64)),
    "logreg": (_spec_model("logreg", (10,)),
               lambda g, b: torch.randn(b, 10, generator=g, dtype=torch.float64)),
    "cnn": (_spec_model("cnn", (8, 8, 2)),
            lambda g, b: torch.randn(b, 8, 8, 2, generator=g, dtype=torch.float64)),
    "groupnorm": (GroupNormNet,
                  lambda g, b: torch.randn(b, 3, 6, 6, generator=g, dtype=torch.float64)),
    "sequence": (SequenceNet,
                 lambda g, b: torch.randn(b, 3, 8, generator=g, dtype=torch.float64)),
    "embedding": (EmbeddingNet, lambda g, b: torch.randint(0, 12, (b, 4), generator=g)),
    "deepconv": (DeepConvNet,
                 lambda g, b: torch.randn(b, 32, 4, 4, generator=g, dtype=torch.float64)),
}


def _case(name: str, batch: int, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    make, inputs = CASES[name]
    torch.manual_seed(seed)
    model = make().double()
    g = torch.Generator().manual_seed(seed)
    return model, inputs(g, batch), torch.randint(0, 3, (batch,), generator=g)


def test_the_cases_cover_both_weight_paths() -> None:
    assert use_gram(3, 8, 8) and not use_gram(3, 2, 8)           # SequenceNet
    assert not use_gram(16, 6, 288) and _unfold_is_faster(16, 288)  # DeepConvNet
    assert use_gram(4, 16, 72) and not use_gram(64, 16, 18)      # wide conv, zoo cnn conv1


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_clipped_sum_equals_the_per_example_loop(name: str) -> None:
    model, x, y = _case(name, batch=9)
    _, ref_norms, _ = loop_reference(model, x, y, 1.0)
    # Between the smallest and largest norm: some examples are clipped, some are not.
    c = float(ref_norms.median())
    assert (ref_norms < c).any() and (ref_norms > c).any()
    want, want_norms, _ = loop_reference(model, x, y, c)
    got, norms = clipped_grad_sum(model, x, y, max_grad_norm=c)
    assert set(got) == {n for n, _ in model.named_parameters()}
    torch.testing.assert_close(norms, want_norms, atol=1e-5, rtol=1e-5)
    for n, t in want.items():
        torch.testing.assert_close(got[n], t, atol=1e-5, rtol=1e-5, msg=n)
    assert all(p.grad is None for p in model.parameters())


def test_float32_spec_cnn_agrees_too() -> None:
    model = build_torch(zoo("cnn", input_shape=(8, 8, 1), num_classes=10), seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 8, 8, 1, generator=g), torch.randint(0, 10, (6,), generator=g)
    want, want_norms, _ = loop_reference(model, x, y, 0.3)
    got, norms = clipped_grad_sum(model, x, y, max_grad_norm=0.3)
    torch.testing.assert_close(norms, want_norms, atol=1e-5, rtol=1e-4)
    for n, t in want.items():
        torch.testing.assert_close(got[n], t, atol=1e-5, rtol=1e-4)


@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 6),
       c=st.floats(1e-3, 10.0), name=st.sampled_from(["mlp", "cnn", "groupnorm"]))
def test_clipped_gradients_never_exceed_c(seed: int, batch: int, c: float, name: str) -> None:
    model, x, y = _case(name, batch, seed)
    got, norms = clipped_grad_sum(model, x, y, max_grad_norm=c)
    flat = torch.cat([t.flatten() for t in got.values()])
    # The clipped sum of B examples is at most B*C long; for one example it is exactly
    # min(norm, C), which fails if the factor is wrong either way.
    assert float(flat.norm()) <= batch * c * (1 + 1e-9)
    if batch == 1:
        assert math.isclose(float(flat.norm()), min(float(norms[0]), c), rel_tol=1e-6)
    _, _, clipped = loop_reference(model, x, y, c)
    for g in clipped:
        assert float(torch.sqrt(sum(t.square().sum() for t in g.values()))) <= c * (1 + 1e-9)


def test_empty_batch_gives_zeros() -> None:
    model, x, y = _case("mlp", batch=0)
    got, norms = clipped_grad_sum(model, x, y, max_grad_norm=1.0)
    assert norms.shape == (0,)
    assert all(float(t.abs().sum()) == 0 for t in got.values())


@pytest.mark.parametrize("bad", [
    nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)),
    nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 3)),
])
def test_models_without_per_sample_gradients_are_refused(bad: nn.Module) -> None:
    with pytest.raises(ConfigError):
        clipped_grad_sum(bad, torch.randn(3, 4), torch.tensor([0, 1, 2]), max_grad_norm=1.0)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(torch.tanh(self.layer(x)))


def test_tied_weights_and_reused_layers_are_refused() -> None:
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    with pytest.raises(ConfigError, match="shared"):
        clipped_grad_sum(tied, torch.randn(3, 4), torch.tensor([0, 1, 2]), max_grad_norm=1.0)
    with pytest.raises(ConfigError, match="more than once"):
        clipped_grad_sum(Twice(), torch.randn(3, 4), torch.tensor([0, 1, 2]), max_grad_norm=1.0)


@pytest.mark.parametrize("c", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_bad_max_grad_norm(c: object) -> None:
    with pytest.raises(ConfigError):
        clipped_grad_sum(nn.Linear(2, 2), torch.randn(1, 2), torch.tensor([0]),
                         max_grad_norm=c)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- config


@pytest.mark.parametrize("kwargs", [
    {"noise_multiplier": -0.1, "max_grad_norm": 1.0},
    {"noise_multiplier": float("nan"), "max_grad_norm": 1.0},
    {"noise_multiplier": 1.0, "max_grad_norm": 0.0},
    {"noise_multiplier": 1.0, "max_grad_norm": float("inf")},
    {"noise_multiplier": "1", "max_grad_norm": 1.0},
    {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "insecure_seed": -1},
])
def test_dpsgd_config_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DPSGDConfig(**kwargs)  # type: ignore[arg-type]


def test_privacy_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        train_dp(nn.Linear(2, 2), [], TrainConfig(), DPSGDConfig(  # type: ignore[misc]
            noise_multiplier=1.0, max_grad_norm=1.0), 0)


# ---------------------------------------------------------------------- noise and sampling


def test_noise_std_is_z_times_c() -> None:
    z, c, n = 1.3, 0.7, 100_000
    noisy = add_noise({"w": torch.zeros(n, dtype=torch.float64)}, std=z * c,
                      generator=torch.Generator().manual_seed(5))["w"]
    # (n-1) s^2 / sigma^2 ~ chi2(n-1), so s / sigma has sd ~ 1/sqrt(2n) = 0.22%: a 2% band
    # is ~9 sd wide (failure odds below 1e-18); the mean has sd sigma/sqrt(n) = 0.3% sigma.
    assert abs(float(noisy.std()) / (z * c) - 1) < 0.02
    assert abs(float(noisy.mean())) < 0.02 * z * c


def _zero_gradient_client(n: int, width: int) -> tuple[nn.Module, ClientData]:
    # All-zero inputs and no bias: every weight gradient is exactly zero, so a step moves
    # the weights by the noise alone.
    model = nn.Linear(width, 100, bias=False)
    x = np.zeros((n, width), np.float32)
    return model, ClientData(x, np.zeros(n, np.int64), np.arange(n, dtype=np.int64))


def test_train_dp_noise_end_to_end() -> None:
    z, c = 1.3, 0.7
    model, data = _zero_gradient_client(1, 1000)
    before = model.weight.detach().clone()
    dp = DPSGDConfig(noise_multiplier=z, max_grad_norm=c)
    res = train_dp(model, data, TrainConfig(epochs=1, batch_size=1, lr=1.0), dp=dp, seed=0)
    assert (res.steps, res.sample_rate) == (1, 1.0)
    delta = (model.weight.detach() - before).double()  # -lr * noise / (q n), q n = 1
    assert abs(float(delta.std()) / (z * c) - 1) < 0.02  # same chi-square bound as above


class Recording:
    """A ClientDataLike that notes the size of every batch asked of it."""

    def __init__(self, data: ClientData) -> None:
        self.data, self.sizes = data, []  # type: list[int]

    def __len__(self) -> int:
        return len(self.data)

    def take(self, positions: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.data.take(positions)
        self.sizes.append(len(y))
        return x, y


@pytest.fixture(scope="module")
def digits() -> tuple[ClientData, np.ndarray, np.ndarray]:
    ds = load_dataset("digits", seed=0)
    idx = np.arange(len(ds.y_train), dtype=np.int64)
    return ClientData(ds.x_train, ds.y_train, idx), ds.x_test, ds.y_test


def test_poisson_batches_are_binomial(digits: tuple[ClientData, np.ndarray, np.ndarray]
                                      ) -> None:
    data = Recording(ClientData(digits[0].x, digits[0].y, np.arange(200, dtype=np.int64)))
    model = build_torch(zoo("logreg", input_shape=(8, 8, 1), num_classes=10))
    res = train_dp(model, data, TrainConfig(epochs=60, batch_size=10, lr=0.1),
                   dp=DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0), seed=0)
    q, n = 10 / 200, 200
    assert (res.sample_rate, res.steps, len(data.sizes)) == (q, 60 * 20, 1200)
    sizes = np.array(data.sizes)
    # Binomial(200, 0.05): mean 10, variance 9.5; over 1200 draws the mean's sd is 0.09
    # and the sample variance's relative sd ~ 4%.
    assert abs(sizes.mean() - q * n) < 0.6
    assert abs(sizes.var() / (n * q * (1 - q)) - 1) < 0.25
    rng = np.random.default_rng(0)
    one = poisson_positions(rng, 50, 0.5)
    assert one.dtype == np.int64 and np.all(np.diff(one) > 0)


def test_empty_batches_still_take_noisy_steps() -> None:
    model, data = _zero_gradient_client(50, 4)
    rec = Recording(data)
    before = model.weight.detach().clone()
    dp = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0, insecure_seed=3)
    res = train_dp(model, rec, TrainConfig(epochs=1, batch_size=1, lr=0.1), dp=dp, seed=0)
    assert res.steps == 50 and len(rec.sizes) == 50 and 0 in rec.sizes
    assert not torch.equal(model.weight.detach(), before)


# ---------------------------------------------------------------------- seeds, training


def _run(data: ClientData, dp: DPSGDConfig, seed: int = 0) -> dict[str, np.ndarray]:
    model = build_torch(zoo("mlp", input_shape=(8, 8, 1), num_classes=10), seed=0)
    train_dp(model, data, TrainConfig(epochs=1, batch_size=32, lr=0.1), dp=dp, seed=seed)
    return get_params(model)


def test_insecure_seed_reproduces_and_secure_runs_differ(
        digits: tuple[ClientData, np.ndarray, np.ndarray]) -> None:
    data = ClientData(digits[0].x, digits[0].y, np.arange(256, dtype=np.int64))
    fixed = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0, insecure_seed=7)
    a, b = _run(data, fixed), _run(data, fixed)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = _run(data, DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0, insecure_seed=8))
    assert not all(np.array_equal(a[k], other[k]) for k in a)
    secure = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0)
    c, d = _run(data, secure), _run(data, secure)
    assert not all(np.array_equal(c[k], d[k]) for k in c)


def test_no_noise_huge_c_full_batch_matches_train_local(
        digits: tuple[ClientData, np.ndarray, np.ndarray]) -> None:
    # q = 1 and nothing clipped: the DP step is the plain full-batch mean-gradient step.
    data = ClientData(digits[0].x, digits[0].y, np.arange(120, dtype=np.int64))
    cfg = TrainConfig(epochs=3, batch_size=120, lr=0.1, momentum=0.5)
    plain = build_torch(zoo("cnn", input_shape=(8, 8, 1), num_classes=10), seed=0)
    private = build_torch(zoo("cnn", input_shape=(8, 8, 1), num_classes=10), seed=0)
    train_local(plain, data, cfg, seed=0)
    train_dp(private, data, cfg, dp=DPSGDConfig(noise_multiplier=0.0, max_grad_norm=1e6),
             seed=0)
    a, b = get_params(plain), get_params(private)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_dp_train_fn_learns_digits(digits: tuple[ClientData, np.ndarray, np.ndarray]) -> None:
    data, x_test, y_test = digits
    fn: TrainFn = dp_train_fn(DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0,
                                          insecure_seed=0))
    model = build_torch(zoo("mlp", input_shape=(8, 8, 1), num_classes=10), seed=0)
    res = fn(model, data, TrainConfig(epochs=4, batch_size=64, lr=0.5, momentum=0.5), 0, None)
    assert isinstance(res, DPTrainResult)
    assert res.num_examples == len(data) and res.noise_multiplier == 1.0
    assert res.steps == 4 * round(len(data) / 64) and math.isfinite(res.loss)
    assert evaluate(model, x_test, y_test).accuracy > 0.6  # chance is 0.1


def test_fedprox_and_bad_inputs_are_refused(
        digits: tuple[ClientData, np.ndarray, np.ndarray]) -> None:
    model = build_torch(zoo("logreg", input_shape=(8, 8, 1), num_classes=10))
    before = get_params(model)
    dp = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0)
    with pytest.raises(ConfigError, match="FedProx"):
        train_dp(model, digits[0], TrainConfig(prox_mu=0.1), dp=dp, seed=0,
                 global_params=before)
    with pytest.raises(ConfigError):
        train_dp(model, digits[0], TrainConfig(), dp="z=1", seed=0)  # type: ignore[arg-type]
    empty = ClientData(digits[0].x, digits[0].y, np.zeros(0, np.int64))
    with pytest.raises(ConfigError):
        train_dp(model, empty, TrainConfig(), dp=dp, seed=0)
    with pytest.raises(ConfigError):
        dp_train_fn("z=1")  # type: ignore[arg-type]
    after = get_params(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_failing_run_leaves_the_model_as_it_was(
        digits: tuple[ClientData, np.ndarray, np.ndarray]) -> None:
    model = build_torch(zoo("logreg", input_shape=(8, 8, 1), num_classes=10))
    before = get_params(model)
    bad = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10))
    with pytest.raises(ConfigError):
        train_dp(bad, digits[0], TrainConfig(), dp=DPSGDConfig(noise_multiplier=1.0,
                 max_grad_norm=1.0), seed=0)
    diverge = TrainConfig(epochs=3, batch_size=64, lr=1e38)
    with pytest.raises(ConfigError, match="diverged"):
        train_dp(model, digits[0], diverge, dp=DPSGDConfig(noise_multiplier=1.0,
                 max_grad_norm=1.0), seed=0)
    after = get_params(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_fixed_sample_rate_is_the_same_for_clients_of_any_size() -> None:
    """One q for every client: the expected batch scales with the data instead."""
    import numpy as np

    from privml.data import ClientData, load_dataset
    from privml.models import build_torch, zoo
    from privml.train import DPSGDConfig, TrainConfig, train_dp

    ds = load_dataset("digits", seed=0)
    spec = zoo("logreg", input_shape=ds.input_shape, num_classes=10)
    dp = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25)
    for n in (40, 400):
        data = ClientData(ds.x_train, ds.y_train, np.arange(n, dtype=np.int64))
        r = train_dp(build_torch(spec), data, TrainConfig(epochs=1, batch_size=16), dp=dp,
                     seed=0)
        assert r.sample_rate == 0.25 and r.steps == 4
    with pytest.raises(ValueError, match="sample_rate"):
        DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=1.5)

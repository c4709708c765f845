"""privml.dp: accounting over dp-accounting, clipping, central and distributed noise.

Statistical checks state their confidence: each bound below is >= 6 standard deviations of
the statistic under the correct distribution, so a correct sampler fails it with
probability < 1e-8; the insecure seeds make them deterministic in CI anyway.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import privml
from privml import dp
from privml._exceptions import BudgetExceededError, ConfigError, ParamsError

DELTA = 1e-5
MNIST = {"q": 256 / 60000, "noise_multiplier": 1.1}
STEPS = 14062


# ---- accounting -----------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "golden"), [("rdp", 2.5966), ("pld", 2.3817)])
def test_golden_values(kind: str, golden: float) -> None:
    # Abadi et al. 2016 MNIST setting (batch 256 of 60000, z = 1.1, 60 epochs); the values
    # are those dp-accounting 0.6 and Opacus report for it.
    acct = dp.PrivacyAccountant(kind=kind)  # type: ignore[arg-type]
    acct.compose(dp.poisson(**MNIST), count=STEPS)
    assert acct.epsilon(delta=DELTA) == pytest.approx(golden, abs=1e-3)


def test_noise_for_inverts_rdp() -> None:
    z = dp.noise_for(target_epsilon=2.0, delta=DELTA, q=MNIST["q"], steps=STEPS)
    acct = dp.PrivacyAccountant(kind="rdp")
    acct.compose(dp.poisson(q=MNIST["q"], noise_multiplier=z), count=STEPS)
    assert 0 <= 2.0 - acct.epsilon(delta=DELTA) <= 1e-3


def test_noise_for_inverts_pld() -> None:
    z = dp.noise_for(target_epsilon=0.3, delta=DELTA, q=0.01, steps=200, accountant="pld")
    acct = dp.PrivacyAccountant(kind="pld")
    acct.compose(dp.poisson(q=0.01, noise_multiplier=z), count=200)
    assert 0 <= 0.3 - acct.epsilon(delta=DELTA) <= 1e-3


def test_noise_for_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError):
        dp.noise_for(target_epsilon=1.0, delta=DELTA, q=0.01, steps=10, sampling="fixed_size")
    with pytest.raises(ConfigError):
        dp.noise_for(target_epsilon=-1.0, delta=DELTA, q=0.01, steps=10)
    with pytest.raises(ConfigError):
        dp.noise_for(target_epsilon=1.0, delta=1.5, q=0.01, steps=10)


def _mixed_accountant() -> dp.PrivacyAccountant:
    acct = dp.PrivacyAccountant(kind="rdp")
    acct.compose(dp.poisson(q=0.01, noise_multiplier=1.0), count=100)
    acct.compose(dp.gaussian(noise_multiplier=5.0))
    ddg = dp.DistributedDiscreteGaussian(clip=1.0, gamma=1e-3, sigma=100.0, dim=100,
                                         clients=50)
    acct.compose(ddg.event(survivors=40), count=3)
    acct.compose(dp.repeated(dp.poisson(q=0.02, noise_multiplier=2.0), count=10))
    return acct


def test_record_json_round_trip_rebuilds_the_same_epsilon() -> None:
    acct = _mixed_accountant()
    text = json.dumps(acct.record())
    again = dp.PrivacyAccountant.from_record(json.loads(text))
    assert again.record() == acct.record()
    assert again.epsilon(delta=DELTA) == acct.epsilon(delta=DELTA)
    rebuilt = dp.PrivacyAccountant.from_events(acct.events, kind="rdp",
                                               relation="add_or_remove")
    assert rebuilt.epsilon(delta=DELTA) == acct.epsilon(delta=DELTA)


@pytest.mark.parametrize("bad", [
    {}, {"version": 1, "kind": "rdp", "relation": "add_or_remove", "events": "x"},
    {"version": 1, "kind": "rdp", "relation": "add_or_remove", "events": [{"count": 1}]},
    {"version": 1, "kind": "rdp", "relation": "add_or_remove",
     "events": [{"event": {"type": "laplace"}, "count": 1}]},
    {"version": 1, "kind": "rdp", "relation": "add_or_remove",
     "events": [{"event": {"type": "gaussian"}, "count": 1}]},
    {"version": 1, "kind": "rdp", "relation": "add_or_remove",
     "events": [{"event": {"type": "gaussian", "noise_multiplier": 1.0}, "count": 0}]},
    {"version": 1, "kind": "xyz", "relation": "add_or_remove", "events": []},
])
def test_malformed_records_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError):
        dp.PrivacyAccountant.from_record(bad)


def test_fixed_size_and_poisson_both_work_and_differ() -> None:
    fixed = dp.PrivacyAccountant(kind="rdp", relation="replace_one")
    fixed.compose(dp.fixed_size(sample_size=10, population=1000, noise_multiplier=1.0),
                  count=20)
    pois = dp.PrivacyAccountant(kind="rdp")
    pois.compose(dp.poisson(q=0.01, noise_multiplier=1.0), count=20)
    e_fixed, e_pois = fixed.epsilon(delta=DELTA), pois.epsilon(delta=DELTA)
    assert 0 < e_fixed < math.inf and 0 < e_pois < math.inf
    assert abs(e_fixed - e_pois) > 0.05
    again = dp.PrivacyAccountant.from_record(json.loads(json.dumps(fixed.record())))
    assert again.epsilon(delta=DELTA) == e_fixed


def test_unsupported_combinations_raise_and_change_nothing() -> None:
    fixed = dp.fixed_size(sample_size=10, population=1000, noise_multiplier=1.0)
    for acct in (dp.PrivacyAccountant(kind="rdp"), dp.PrivacyAccountant(kind="pld"),
                 dp.PrivacyAccountant(kind="pld", relation="replace_one")):
        with pytest.raises(ConfigError):
            acct.compose(fixed)
        assert acct.events == [] and acct.epsilon(delta=DELTA) == 0.0
    with pytest.raises(ConfigError):
        dp.PrivacyAccountant(kind="rdp", relation="replace_one").compose(
            dp.poisson(q=0.1, noise_multiplier=1.0))
    for make in (lambda: dp.poisson(q=1.5, noise_multiplier=1.0),
                 lambda: dp.poisson(q=0.1, noise_multiplier=0.0),
                 lambda: dp.fixed_size(sample_size=11, population=10, noise_multiplier=1.0),
                 lambda: dp.repeated(dp.gaussian(noise_multiplier=1.0), count=0)):
        with pytest.raises(ConfigError):
            make()


def test_budget_is_checked_before_composing() -> None:
    acct = dp.PrivacyAccountant(kind="rdp")
    event = dp.poisson(q=0.01, noise_multiplier=1.0)
    spent = acct.compose_within(event, target_epsilon=2.0, delta=DELTA, count=100)
    assert spent == acct.epsilon(delta=DELTA) <= 2.0
    before = acct.record()
    after = acct.epsilon_after(event, delta=DELTA, count=10_000)
    assert after > 2.0 and acct.record() == before
    with pytest.raises(BudgetExceededError) as info:
        acct.compose_within(event, target_epsilon=2.0, delta=DELTA, count=10_000)
    assert info.value.epsilon == pytest.approx(after) and info.value.target == 2.0
    assert acct.record() == before and acct.epsilon(delta=DELTA) == spent
    assert privml.BudgetExceededError is BudgetExceededError
    assert issubclass(BudgetExceededError, privml.PrivmlError)


# ---- clipping and central noise -----------------------------------------------------------

@settings(max_examples=40)
@given(arrays(np.float64, st.integers(1, 50),
              elements=st.floats(-1e6, 1e6, allow_nan=False)),
       st.floats(1e-3, 1e3))
def test_clip_bound_holds(x: np.ndarray, bound: float) -> None:
    clipped, norm = dp.clip_l2(x, bound=bound)
    assert np.linalg.norm(clipped) <= bound
    assert norm == pytest.approx(float(np.linalg.norm(x)))
    if norm <= bound:
        assert np.array_equal(clipped, x)
    else:  # direction kept
        assert np.allclose(clipped * norm / np.linalg.norm(clipped), x, rtol=1e-9, atol=1e-9)


def test_clip_refuses_bad_input() -> None:
    with pytest.raises(ConfigError):
        dp.clip_l2(np.array([1.0, np.nan]), bound=1.0)
    with pytest.raises(ConfigError):
        dp.clip_l2(np.array([1.0]), bound=0.0)
    with pytest.raises(ConfigError):
        dp.clip_l2(np.array([1, 2]), bound=1.0)


def test_central_noise_std() -> None:
    # (N-1) s^2 / std^2 ~ chi^2(N-1): s/std has sd ~ 1/sqrt(2N) = 0.22% at N = 1e5, so the
    # 2% window is ~9 sd wide; the mean's sd is std/sqrt(N).
    std, n = 3.0, 100_000
    x = dp.gaussian_noise(n, std=std, insecure_seed=7)
    assert abs(x.std(ddof=1) / std - 1) < 0.02
    assert abs(x.mean()) < 6 * std / math.sqrt(n)
    assert dp.gaussian_noise((2, 3), std=1.0).shape == (2, 3)


def test_insecure_seed_reproducible_default_not() -> None:
    a = dp.gaussian_noise(8, std=1.0, insecure_seed=1)
    assert np.array_equal(a, dp.gaussian_noise(8, std=1.0, insecure_seed=1))
    assert not np.array_equal(dp.gaussian_noise(8, std=1.0), dp.gaussian_noise(8, std=1.0))
    d1 = dp.discrete_gaussian(50, sigma=5.0, insecure_seed=3)
    assert np.array_equal(d1, dp.discrete_gaussian(50, sigma=5.0, insecure_seed=3))
    assert not np.array_equal(dp.discrete_gaussian(50, sigma=50.0),
                              dp.discrete_gaussian(50, sigma=50.0))
    with pytest.raises(ConfigError):
        dp.gaussian_noise(2, std=1.0, rng=dp.insecure_rng(1), insecure_seed=1)


# ---- adaptive clipping -------------------------------------------------------------------

def test_adaptive_noise_multiplier_formula() -> None:
    z, sb = 1.0, 5.0
    expected = (z**-2 - (2 * sb) ** -2) ** -0.5  # Andrew et al. 2021, Section 3
    assert dp.adaptive_noise_multiplier(noise_multiplier=z, bit_noise_std=sb) == \
        pytest.approx(expected)
    assert expected == pytest.approx(1 / math.sqrt(0.99))
    clip = dp.AdaptiveClip(initial=1.0, bit_noise_std=sb)
    assert clip.update_noise_multiplier(z) == pytest.approx(expected) and expected > z
    with pytest.raises(ConfigError):
        dp.adaptive_noise_multiplier(noise_multiplier=2.0, bit_noise_std=1.0)


def test_adaptive_clip_update_direction_and_convergence() -> None:
    clip = dp.AdaptiveClip(initial=1.0, bit_noise_std=1.0, target_quantile=0.5,
                           learning_rate=0.2)
    assert clip.updated(0.9).bound < 1.0 < clip.updated(0.1).bound
    assert clip.updated(0.5).bound == pytest.approx(1.0)
    assert clip.updated(0.9).bound == pytest.approx(math.exp(-0.2 * 0.4))
    rng = dp.insecure_rng(11)
    clip = dp.AdaptiveClip(initial=0.01, bit_noise_std=1.0, target_quantile=0.5,
                           learning_rate=0.2)
    for _ in range(300):  # norms ~ |N(0, 1) * 10| + 5: median ~ 11.7
        norms = np.abs(rng.normal(size=100)) * 10 + 5
        bits = sum(clip.clip_bit(float(v)) for v in norms)
        clip = clip.updated(clip.noisy_fraction(bits, clients=100, rng=rng))
    median = 5 + 10 * 0.6745
    assert abs(clip.bound - median) / median < 0.15
    with pytest.raises(ConfigError):
        dp.AdaptiveClip(initial=1.0, bit_noise_std=1.0, target_quantile=1.0)


# ---- distributed discrete Gaussian ---------------------------------------------------------

def test_discrete_gaussian_moments_and_symmetry() -> None:
    # sigma = 3: the variance of N_Z(0, 9) equals 9 to ~1e-70. Sample-variance sd is
    # sqrt(2/N) sigma^2 ~ 0.04, mean sd ~ 0.0095; bounds are >= 6 sd.
    sigma, n = 3.0, 100_000
    x = dp.discrete_gaussian(n, sigma=sigma, insecure_seed=5)
    assert x.dtype == np.int64 and x.shape == (n,)
    assert abs(x.mean()) < 6 * sigma / math.sqrt(n)
    assert abs(x.var() - sigma**2) < 6 * math.sqrt(2 / n) * sigma**2
    pos, neg = int((x > 0).sum()), int((x < 0).sum())
    assert abs(pos - neg) < 6 * math.sqrt(n)
    # the mass at 0 is 1 / sum_k exp(-k^2 / 18) ~ 0.13298
    p0 = 1 / sum(math.exp(-k * k / (2 * sigma**2)) for k in range(-60, 61))
    assert abs((x == 0).mean() - p0) < 6 * math.sqrt(p0 * (1 - p0) / n)
    small = dp.discrete_gaussian((3, 4), sigma=0.5, insecure_seed=1)
    assert small.shape == (3, 4)


def _ddg(**kw: object) -> dp.DistributedDiscreteGaussian:
    args: dict[str, object] = {"clip": 1.0, "gamma": 0.05, "sigma": 4.0, "dim": 64,
                               "clients": 20}
    args.update(kw)
    return dp.DistributedDiscreteGaussian(**args)  # type: ignore[arg-type]


@settings(max_examples=30)
@given(arrays(np.float64, 64, elements=st.floats(-10, 10, allow_nan=False)),
       st.integers(0, 2**32), st.sampled_from([0.0, 0.1, math.exp(-0.5)]))
def test_conditional_rounding_respects_bound(x: np.ndarray, seed: int, beta: float) -> None:
    mech = _ddg(beta=beta)
    r = mech.round_conditional(x, insecure_seed=seed)
    assert r.dtype == np.int64
    assert float(np.linalg.norm(r)) <= mech.l2_bound


def test_conditional_rounding_is_nearly_unbiased() -> None:
    mech = _ddg()
    rng = dp.insecure_rng(2)
    x = rng.normal(size=64)
    x *= 0.9 / np.linalg.norm(x)
    mean = np.mean([mech.round_conditional(x, rng=rng) for _ in range(2000)], axis=0)
    # per-coordinate rounding sd <= 1/2, so the mean's sd <= 0.011; conditioning adds a
    # tiny bias. Loose: every coordinate within 0.1 grid steps.
    assert np.abs(mean - x / mech.gamma).max() < 0.1


def test_ddg_secure_sum_decodes_to_the_clipped_sum() -> None:
    mech = _ddg(bits=32)
    rng = dp.insecure_rng(9)
    updates = [rng.normal(size=64) * 0.3 for _ in range(mech.clients)]
    total = np.zeros(64, dtype=mech.dtype)
    for u in updates:
        total += mech.encode(u, rng=rng)  # uint32 wraparound is the modulus
    clipped = sum(dp.clip_l2(u, bound=1.0)[0] for u in updates)
    err = mech.decode(total) - clipped
    # rounding error per coordinate <= clients * gamma; noise sd = gamma sqrt(n) sigma
    noise_sd = mech.gamma * math.sqrt(mech.clients) * mech.sigma
    assert np.abs(err).max() < mech.clients * mech.gamma + 6 * noise_sd
    with pytest.raises(ParamsError):
        mech.encode(np.ones(3))
    with pytest.raises(ParamsError):
        mech.decode(np.zeros(64, dtype=np.uint64))


def test_ddg_epsilon_matches_gaussian_when_tau_vanishes() -> None:
    mech = dp.DistributedDiscreteGaussian(clip=1.0, gamma=1e-3, sigma=50.0, dim=1000,
                                          clients=100)
    assert dp.ddg_tau(sigma=50.0, survivors=100) < 1e-300
    z = math.sqrt(100) * 50.0 / mech.l2_bound
    gauss = dp.PrivacyAccountant(kind="rdp")
    gauss.compose(dp.gaussian(noise_multiplier=z), count=5)
    eps = mech.epsilon(delta=DELTA, survivors=100, rounds=5)
    assert eps == pytest.approx(gauss.epsilon(delta=DELTA), rel=1e-9)
    # fewer survivors means less noise in the sum: epsilon grows
    assert mech.epsilon(delta=DELTA, survivors=60, rounds=5) > eps
    with pytest.raises(ConfigError):
        mech.epsilon(delta=DELTA, survivors=101)


def test_ddg_tau_term_dominates_for_tiny_sigma() -> None:
    tiny = _ddg(sigma=0.5, gamma=0.5)
    assert dp.ddg_tau(sigma=0.5, survivors=20) > 0.1
    s = math.sqrt(20) * 0.5
    assert tiny.rho(survivors=20) > (tiny.l2_bound / s) ** 2 / 2
    assert dp.ddg_tau(sigma=0.5, survivors=1) == 0.0


def test_ddg_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError):
        _ddg(sigma=0.4)
    with pytest.raises(ConfigError):
        _ddg(bits=16)
    with pytest.raises(ConfigError):
        _ddg(beta=1.0)
    with pytest.raises(ConfigError):  # wraps: 10^4 clients of ~2^20 each in 32 bits
        dp.DistributedDiscreteGaussian(clip=1.0, gamma=1e-6, sigma=10.0, dim=10,
                                       clients=10_000, bits=32)
    mech = _ddg()
    assert mech.worst_abs_sum < 2 ** (mech.min_bits - 1)
    assert mech.noise_bound >= 6 * math.sqrt(mech.clients) * mech.sigma

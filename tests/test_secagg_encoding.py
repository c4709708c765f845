"""The fixed-point encoding of updates: FedAvg exact up to the documented bound, and a sum
that cannot wrap for any input the configuration admits (checked at n = 500).

Reference means are computed with exact rationals (Fraction), so "within the bound" is a
statement about the encoding, not about the float64 rounding of the test's own arithmetic.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml import ConfigError, ParamsError
from privml.secagg import FixedPoint

Item = tuple[np.ndarray, int]


def _sum(fp: FixedPoint, items: list[Item]) -> np.ndarray:
    acc = np.zeros(len(items[0][0]) + 1, dtype=fp.dtype)
    for x, w in items:
        np.add(acc, fp.encode(x, w), out=acc)  # wraparound is the modulus
    return acc


def _exact_mean(fp: FixedPoint, items: list[Item]) -> list[Fraction]:
    """The exact example-weighted mean of the clipped updates, weights clipped too."""
    ws = [min(w, fp.max_weight) for _, w in items]
    clipped = [np.clip(x.astype(np.float64), -fp.clip, fp.clip) for x, _ in items]
    d = len(items[0][0])
    return [sum((Fraction(float(y[j])) * w for y, w in zip(clipped, ws, strict=True)),
                Fraction(0)) / sum(ws) for j in range(d)]


def _max_err(mean: np.ndarray, exact: list[Fraction]) -> Fraction:
    return max(abs(Fraction(float(m)) - e) for m, e in zip(mean, exact, strict=True))


# ---- round trip and FedAvg -----------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=20),
       st.integers(1, 5000), st.sampled_from([32, 64]), st.sampled_from([0.01, 1.0, 3.0]))
def test_one_client_round_trips_within_the_bound(
        xs: list[float], weight: int, bits: int, clip: float) -> None:
    fp = FixedPoint(clip=clip, clients=8, bits=bits)
    x = np.array(xs, dtype=np.float32)
    enc = fp.encode(x, weight)
    assert enc.dtype == fp.dtype and enc.shape == (x.size + 1,)
    mean, w = fp.decode(enc)
    assert w == min(weight, fp.max_weight)
    assert mean.dtype == np.float64
    assert _max_err(mean, _exact_mean(fp, [(x, weight)])) <= fp.error_bound(1, w)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.sampled_from([32, 64]), st.sampled_from([0.5, 1.0, 3.0]),
       st.integers(0, 2**32 - 1))
def test_fedavg_is_exact_up_to_the_bound(n: int, bits: int, clip: float, seed: int) -> None:
    fp = FixedPoint(clip=clip, clients=50, bits=bits)
    rng = np.random.default_rng(seed)
    items = [(rng.normal(0, 1.5 * clip, 16).astype(np.float32),  # some beyond the clip
              int(rng.integers(1, 3000))) for _ in range(n)]  # some beyond max_weight
    mean, weight = fp.decode(_sum(fp, items))
    assert weight == sum(min(w, fp.max_weight) for _, w in items)
    bound = fp.error_bound(n, weight)
    assert _max_err(mean, _exact_mean(fp, items)) <= bound
    assert bound < 1e-3  # and the bound is not vacuous


def test_negative_values_go_through_twos_complement() -> None:
    fp = FixedPoint(clip=1.0, clients=4)
    enc = fp.encode(np.array([-0.5, 0.25], dtype=np.float64), 2)
    assert int(enc[0]) == 2**32 - int(0.5 * 2 * fp.scale)  # -q mod 2^32
    items = [(np.array([-0.5, 0.25]), 2), (np.array([-1.0, -1.0]), 3)]
    mean, weight = fp.decode(_sum(fp, items))
    assert weight == 5
    np.testing.assert_allclose(mean, [-4 / 5, -2.5 / 5], atol=fp.error_bound(2, 5))


# ---- the wrap check --------------------------------------------------------------------------

def _lift(fp: FixedPoint, total: np.ndarray) -> list[int]:
    return [int(v) for v in total.view(np.int32 if fp.bits == 32 else np.int64)]


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("sign", ["+", "-", "mixed"])
def test_no_wrap_at_500_clients_for_the_most_adversarial_inputs(bits: int, sign: str) -> None:
    fp = FixedPoint(clip=1.0, clients=500, max_weight=1024, bits=bits)
    vals = {"+": [1.0] * 500, "-": [-1.0] * 500,
            "mixed": [1.0] * 250 + [-1.0] * 249 + [1.0]}[sign]
    items = [(np.full(8, v * 10, dtype=np.float32), 10**6) for v in vals]  # both clipped
    total = _sum(fp, items)
    q = round(1.0 * 1024 * fp.scale)  # each summand's |q| at +-clip and max_weight
    assert _lift(fp, total) == [q * round(sum(vals))] * 8 + [500 * 1024]  # no wrap
    if sign != "mixed":
        assert 500 * q > 2 ** (bits - 2)  # the all-same-sign sum really is near the edge
    mean, weight = fp.decode(total)
    assert weight == 500 * 1024
    assert np.max(np.abs(mean - np.mean(vals))) <= fp.error_bound(500, weight)


@pytest.mark.parametrize("bits", [32, 64])
def test_admitted_noise_does_not_wrap_either(bits: int) -> None:
    fp = FixedPoint(clip=1.0, clients=500, bits=bits, noise_bound=2 ** (bits - 3))
    items = [(np.full(4, s, dtype=np.float32), 1024) for s in (1.0, -1.0)]
    for sign, (x, w) in zip((1, -1), items, strict=True):
        total = _sum(fp, [(x, w)] * 500)
        noise = np.full(5, sign * fp.noise_bound, dtype=np.int64)  # what a DP layer adds
        noise[-1] = 0
        np.add(total, noise.astype(fp.dtype), out=total)  # int64 -> uint: mod 2^bits
        q = round(1024 * fp.scale)
        assert _lift(fp, total)[:-1] == [sign * (500 * q + fp.noise_bound)] * 4


def test_the_auto_fraction_bits_are_the_tight_maximum() -> None:
    for bits, expected in ((32, 12), (64, 44)):
        fp = FixedPoint(clip=1.0, clients=500, max_weight=1024, bits=bits)
        assert fp.frac_bits == expected
        assert FixedPoint(clip=1.0, clients=500, bits=bits, frac_bits=expected) == fp
        with pytest.raises(ConfigError, match=r"wrap.*bits=64"):
            FixedPoint(clip=1.0, clients=500, bits=bits, frac_bits=expected + 1)
        assert 0 <= fp.describe()["headroom_bits"] < 1


def test_the_wrap_check_is_what_keeps_the_sum_exact() -> None:
    """Past the check the sum really wraps: one more fraction bit overflows 2^31."""
    f = FixedPoint(clip=1.0, clients=500).frac_bits
    assert f is not None
    assert 500 * round(1.0 * 1024 * 2.0 ** (f + 1)) >= 2**31


def test_configurations_that_could_wrap_are_refused() -> None:
    with pytest.raises(ConfigError, match="weight sum wraps"):  # n x max_weight alone
        FixedPoint(clip=1.0, clients=500, max_weight=2**23)
    FixedPoint(clip=1.0, clients=500, max_weight=2**23, bits=64)
    with pytest.raises(ConfigError, match="frac_bits=0"):  # clip x weight x n beyond 2^31
        FixedPoint(clip=1e6, clients=500, max_weight=1024)
    FixedPoint(clip=1e6, clients=500, max_weight=1024, bits=64)  # 64 bits hold it
    with pytest.raises(ConfigError, match="wrap"):
        FixedPoint(clip=1e300, clients=2, bits=64)


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-3, 1e4), st.integers(1, 1000), st.integers(1, 4096),
       st.sampled_from([32, 64]))
def test_auto_frac_bits_pass_and_one_more_fails(
        clip: float, n: int, max_weight: int, bits: int) -> None:
    try:
        fp = FixedPoint(clip=clip, clients=n, max_weight=max_weight, bits=bits)
    except ConfigError:
        assert n * clip * max_weight >= 2 ** (bits - 2)  # refused only when truly large
        return
    assert fp.frac_bits is not None
    q = round(clip * (max_weight * fp.scale))  # the largest |q| encode can produce
    assert n * q < 2 ** (bits - 1) and n * max_weight < 2 ** (bits - 1)
    assert int(fp.encode(np.array([clip]), max_weight)[0]) == q
    if fp.frac_bits < 52:
        with pytest.raises(ConfigError):
            FixedPoint(clip=clip, clients=n, max_weight=max_weight, bits=bits,
                       frac_bits=fp.frac_bits + 1)


def test_noise_bound_is_counted() -> None:
    quiet = FixedPoint(clip=1.0, clients=100)
    noisy = FixedPoint(clip=1.0, clients=100, noise_bound=2**30)
    assert noisy.frac_bits is not None and quiet.frac_bits is not None
    assert noisy.frac_bits < quiet.frac_bits
    assert noisy.describe()["max_abs_sum"] < 2**31
    with pytest.raises(ConfigError, match="wrap"):  # fits without the noise, not with it
        FixedPoint(clip=1.0, clients=100, noise_bound=2**30, frac_bits=quiet.frac_bits)
    with pytest.raises(ConfigError, match="noise_bound"):  # no room at all
        FixedPoint(clip=1.0, clients=100, noise_bound=2**31)


def test_64_bits_shrink_the_error_bound() -> None:
    b32 = FixedPoint(clip=1.0, clients=100).error_bound(100, 10_000)
    b64 = FixedPoint(clip=1.0, clients=100, bits=64).error_bound(100, 10_000)
    assert b64 < b32 / 1e6


def test_the_demo_setting_has_a_small_bound() -> None:
    fp = FixedPoint(clip=1.0, clients=8)
    assert fp.frac_bits == 17
    assert fp.error_bound(8, 8 * 200) < 2e-8


# ---- weights ---------------------------------------------------------------------------------

def test_weights_above_max_weight_count_as_max_weight() -> None:
    fp = FixedPoint(clip=1.0, clients=2, max_weight=100)
    x = np.array([0.5, -0.25], dtype=np.float32)
    assert np.array_equal(fp.encode(x, 10_000), fp.encode(x, 100))
    assert int(fp.encode(x, 10_000)[-1]) == 100
    assert int(fp.encode(x, np.int64(7))[-1]) == 7  # numpy integers are integers


@pytest.mark.parametrize("weight", [0, -1, True, False, 1.5, 2.0, "3", None])
def test_bad_weights_are_refused(weight: object) -> None:
    with pytest.raises(ConfigError, match="weight"):
        FixedPoint(clip=1.0, clients=2).encode(np.zeros(3, dtype=np.float32),
                                               weight)  # type: ignore[arg-type]


# ---- bad inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize(("update", "why"), [
    (np.array([1.0, np.nan], dtype=np.float32), "finite"), (np.array([np.inf]), "finite"),
    (np.array([0.0, -np.inf]), "index 1"), (np.zeros((2, 2)), "1-D"),
    (np.zeros(0, dtype=np.float32), "empty"), (np.zeros(3, dtype=np.int32), "float32"),
    (np.zeros(3, dtype=np.float16), "float16"), (np.array(1.0), "1-D")])
def test_bad_updates_are_refused(update: np.ndarray, why: str) -> None:
    with pytest.raises(ParamsError, match=why):
        FixedPoint(clip=1.0, clients=2).encode(update, 3)


def _weighted(dtype: type, weight: int, d: int = 4) -> np.ndarray:
    total = np.zeros(d + 1, dtype=np.int64)
    total[-1] = weight
    return total.astype(dtype)


@pytest.mark.parametrize(("total", "why"), [
    (np.zeros(5, dtype=np.uint64), "dtype"), (_weighted(np.int32, 3), "dtype"),
    (_weighted(np.float64, 3), "dtype"), (np.zeros(1, dtype=np.uint32), "1-D"),
    (np.ones((2, 3), dtype=np.uint32), "1-D"), (np.zeros(5, dtype=np.uint32), "no weight"),
    (_weighted(np.uint32, -3), "no weight"), (_weighted(np.uint32, 2 * 1024 + 1), "corrupt"),
    ([0, 0, 3], "numpy array")])
def test_bad_sums_are_refused(total: np.ndarray, why: str) -> None:
    with pytest.raises(ParamsError, match=why):
        FixedPoint(clip=1.0, clients=2).decode(total)


@pytest.mark.parametrize(("kw", "field"), [
    ({"clip": 0.0}, "clip"), ({"clip": -1.0}, "clip"), ({"clip": float("nan")}, "clip"),
    ({"clip": float("inf")}, "clip"), ({"clip": True}, "clip"), ({"clip": "1"}, "clip"),
    ({"clients": 0}, "clients"), ({"clients": True}, "clients"), ({"clients": 2.0}, "clients"),
    ({"max_weight": 0}, "max_weight"), ({"bits": 16}, "bits"), ({"bits": 32.0}, "bits"),
    ({"noise_bound": -1}, "noise_bound"), ({"frac_bits": -1}, "frac_bits"),
    ({"frac_bits": 53}, "frac_bits"), ({"frac_bits": 3.0}, "frac_bits")])
def test_bad_settings_are_refused(kw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        FixedPoint(**{"clip": 1.0, "clients": 2, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("summands", "total_weight"), [(0, 5), (3, 2), (True, 5), (2, 2.5)])
def test_bad_error_bound_arguments_are_refused(summands: object, total_weight: object) -> None:
    with pytest.raises(ConfigError):
        FixedPoint(clip=1.0, clients=4).error_bound(summands, total_weight)  # type: ignore[arg-type]


# ---- describe --------------------------------------------------------------------------------

def test_describe_is_json_and_rebuilds_the_same_encoding() -> None:
    fp = FixedPoint(clip=2.5, clients=20, max_weight=500, bits=64, noise_bound=1000)
    summary = json.loads(json.dumps(fp.describe()))
    assert set(summary) == {"bits", "frac_bits", "clip", "max_weight", "clients",
                            "noise_bound", "max_abs_sum", "headroom_bits"}
    keys = ("clip", "clients", "max_weight", "bits", "noise_bound", "frac_bits")
    assert FixedPoint(**{k: summary[k] for k in keys}) == fp
    assert summary["max_abs_sum"] < 2**63
    assert summary["headroom_bits"] > 0


@pytest.mark.parametrize("bits", [32, 64])
def test_the_unmasked_sum_of_an_unclipped_input_is_refused(bits: int) -> None:
    """The check of the unmasked aggregate: a client that skips clipping (here one encoding
    of 3x clip, made by hand) is caught by the sum's range, while honest sums at the very
    edge (every input at +-clip, the DP layer's admitted noise added) still decode."""
    fp = FixedPoint(clip=1.0, clients=10, bits=bits, noise_bound=1000)
    honest = [(np.full(4, 5.0, dtype=np.float32), 100)] * 9
    total = _sum(fp, honest)
    edge = total.copy()
    np.add(edge, np.array([1000] * 4 + [0], dtype=np.int64).astype(fp.dtype), out=edge)
    mean, weight = fp.decode(edge)  # above clip by the noise only: accepted
    assert np.all(mean <= 1.0 + (1000 + 1) / (fp.scale * weight))
    rogue = fp.encode(np.full(4, 1.0, dtype=np.float32), 100).view(fp._signed).copy()
    rogue[:-1] *= 3  # what encode would never send: 3x the clip
    bad = total + rogue.view(fp.dtype)
    with pytest.raises(ParamsError, match="not clipped"):
        fp.decode(bad)
    fine = total + fp.encode(np.full(4, 1.0, dtype=np.float32), 100)
    assert fp.decode(fine)[0] == pytest.approx(np.ones(4))

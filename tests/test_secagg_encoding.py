"""The fixed-point encoding of updates: FedAvg exact up to the documented bound, and a sum
that cannot wrap for any input the configuration admits (checked at n = 500)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml import ConfigError, ParamsError
from privml.secagg import FixedPoint


def _sum(fp: FixedPoint, items: list[tuple[np.ndarray, int]]) -> np.ndarray:
    acc = np.zeros(len(items[0][0]) + 1, dtype=fp.dtype)
    for x, w in items:
        np.add(acc, fp.encode(x, w), out=acc)
    return acc


def _exact(fp: FixedPoint, items: list[tuple[np.ndarray, int]]) -> np.ndarray:
    ws = [min(w, fp.max_weight) for _, w in items]
    total = sum(np.clip(x.astype(np.float64), -fp.clip, fp.clip) * w
                for (x, _), w in zip(items, ws, strict=True))
    return total / sum(ws)


def test_one_client_round_trips_within_the_bound() -> None:
    fp = FixedPoint(clip=1.0, clients=8)
    x = np.linspace(-2, 2, 101).astype(np.float32)
    mean, weight = fp.decode(fp.encode(x, 37))
    assert weight == 37
    assert np.max(np.abs(mean - np.clip(x, -1, 1))) <= fp.error_bound(1, 37)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 50), st.sampled_from([32, 64]), st.data())
def test_fedavg_is_exact_up_to_the_bound(n: int, bits: int, data: st.DataObject) -> None:
    fp = FixedPoint(clip=2.0, clients=50, bits=bits)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    items = [(rng.normal(0, 1.5, 64).astype(np.float32),  # some beyond the clip range
              int(rng.integers(1, 3000))) for _ in range(n)]  # some beyond max_weight
    mean, weight = fp.decode(_sum(fp, items))
    assert weight == sum(min(w, fp.max_weight) for _, w in items)
    err = np.max(np.abs(mean - _exact(fp, items)))
    assert err <= fp.error_bound(n, weight)
    assert fp.error_bound(n, weight) < 1e-3  # and the bound is not vacuous


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("sign", ["+", "-", "mixed"])
def test_no_wrap_at_500_clients_for_the_most_adversarial_inputs(bits: int, sign: str) -> None:
    fp = FixedPoint(clip=1.0, clients=500, max_weight=1024, bits=bits)
    d = 16
    vals = {"+": [1.0] * 500, "-": [-1.0] * 500,
            "mixed": [1.0] * 250 + [-1.0] * 249 + [1.0]}[sign]
    items = [(np.full(d, v * 10, dtype=np.float32), 10**6) for v in vals]  # both clipped
    mean, weight = fp.decode(_sum(fp, items))
    assert weight == 500 * 1024
    expected = np.full(d, np.mean(vals))
    assert np.max(np.abs(mean - expected)) <= fp.error_bound(500, weight)


def test_a_configuration_that_could_wrap_is_refused() -> None:
    fp = FixedPoint(clip=1.0, clients=500, max_weight=1024)
    assert fp.frac_bits is not None
    with pytest.raises(ConfigError, match="wrap"):  # the chosen fraction bits are tight
        FixedPoint(clip=1.0, clients=500, max_weight=1024, frac_bits=fp.frac_bits + 1)
    FixedPoint(clip=1.0, clients=500, max_weight=1024, frac_bits=fp.frac_bits)
    with pytest.raises(ConfigError, match="wrap"):  # n x max_weight alone overflows
        FixedPoint(clip=1.0, clients=500, max_weight=2**23)
    with pytest.raises(ConfigError, match="wrap"):  # clip x weight x n beyond 2^31
        FixedPoint(clip=1e6, clients=500, max_weight=1024)
    FixedPoint(clip=1e6, clients=500, max_weight=1024, bits=64)  # 64 bits hold it


def test_the_wrap_check_is_what_keeps_the_sum_exact() -> None:
    """Past the check, the sum really wraps: the guard is not decoration."""
    safe = FixedPoint(clip=1.0, clients=500, max_weight=1024)
    assert safe.frac_bits is not None
    unsafe_scale = 2.0 ** (safe.frac_bits + 2)
    q = np.int64(np.rint(1.0 * 1024 * unsafe_scale))
    assert 500 * q >= 2**31  # what FixedPoint refuses to configure


def test_noise_bound_is_counted() -> None:
    quiet = FixedPoint(clip=1.0, clients=100)
    noisy = FixedPoint(clip=1.0, clients=100, noise_bound=2**30)
    assert noisy.frac_bits is not None and quiet.frac_bits is not None
    assert noisy.frac_bits < quiet.frac_bits
    assert noisy.describe()["max_abs_sum"] < 2**31


def test_64_bits_shrink_the_error_bound() -> None:
    b32 = FixedPoint(clip=1.0, clients=100).error_bound(100, 10_000)
    b64 = FixedPoint(clip=1.0, clients=100, bits=64).error_bound(100, 10_000)
    assert b64 < b32 / 1e6


@pytest.mark.parametrize("weight", [0, -1, True, 1.5, "3"])
def test_bad_weights_are_refused(weight: object) -> None:
    with pytest.raises(ConfigError):
        FixedPoint(clip=1.0, clients=2).encode(np.zeros(3, dtype=np.float32),
                                               weight)  # type: ignore[arg-type]


@pytest.mark.parametrize("update", [
    np.array([1.0, np.nan], dtype=np.float32), np.array([np.inf]), np.zeros((2, 2)),
    np.zeros(0, dtype=np.float32), np.zeros(3, dtype=np.int32)])
def test_bad_updates_are_refused(update: np.ndarray) -> None:
    with pytest.raises(ParamsError):
        FixedPoint(clip=1.0, clients=2).encode(update, 3)


@pytest.mark.parametrize("total", [
    np.zeros(5, dtype=np.uint64), np.zeros(1, dtype=np.uint32), np.zeros(5, dtype=np.uint32),
    np.zeros((2, 3), dtype=np.uint32)])
def test_bad_sums_are_refused(total: np.ndarray) -> None:
    with pytest.raises(ParamsError):
        FixedPoint(clip=1.0, clients=2).decode(total)


@pytest.mark.parametrize("kw", [{"clip": 0.0}, {"clip": float("nan")}, {"clients": 0},
                                {"max_weight": 0}, {"bits": 16}, {"noise_bound": -1},
                                {"frac_bits": 60}])
def test_bad_settings_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        FixedPoint(**{"clip": 1.0, "clients": 2, **kw})  # type: ignore[arg-type]

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save

from privml import ConfigError, ParamsError
from privml import params as pm


def sample() -> pm.Params:
    rng = np.random.default_rng(0)
    return {
        "dense1.weight": rng.normal(size=(4, 3)).astype(np.float32),
        "dense1.bias": rng.normal(size=(4,)).astype(np.float32),
        "conv.weight": rng.normal(size=(2, 1, 3, 3)).astype(np.float32),
    }


def test_round_trip_keeps_values_and_order() -> None:
    p = sample()
    data = pm.encode(p)
    q = pm.decode(data, pm.spec_of(p))
    assert list(q) == list(p)
    for name in p:
        np.testing.assert_array_equal(p[name], q[name])
        assert q[name].dtype == np.float32


def test_decode_without_spec_and_metadata() -> None:
    p = sample()
    data = pm.encode(p, metadata={"model_spec": "{}"})
    assert list(pm.decode(data)) == list(p)
    meta = pm.metadata(data)
    assert meta["format"] == "privml.params" and meta["version"] == "1"
    assert meta["model_spec"] == "{}"


def test_reserved_metadata_refused() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        pm.encode(sample(), metadata={"format": "x"})


@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=5),
                  elements=st.floats(-1e6, 1e6, width=32)))
def test_round_trip_property(arr: np.ndarray) -> None:
    p = {"t": arr, "u": arr * 2}
    q = pm.decode(pm.encode(p), pm.spec_of(p))
    np.testing.assert_array_equal(q["t"], arr)


def test_missing_tensor_named() -> None:
    p = sample()
    spec = pm.spec_of(p)
    del p["dense1.bias"]
    with pytest.raises(ParamsError, match=r"'dense1.bias'.*missing"):
        pm.decode(pm.encode(p), spec)


def test_extra_tensor_named() -> None:
    p = sample()
    spec = pm.spec_of(p)
    p["evil"] = np.zeros(1, np.float32)
    with pytest.raises(ParamsError, match=r"'evil'.*not in the model"):
        pm.decode(pm.encode(p), spec)


def test_wrong_shape_named() -> None:
    p = sample()
    spec = pm.spec_of(p)
    p["dense1.weight"] = np.zeros((3, 4), np.float32)
    with pytest.raises(ParamsError, match=r"'dense1.weight'.*shape \(3, 4\)"):
        pm.decode(pm.encode(p), spec)


def test_wrong_dtype_named() -> None:
    p = sample()
    spec = pm.spec_of(p)
    bad = {k: v.astype(np.float64) if k == "conv.weight" else v for k, v in p.items()}
    data = save(bad, metadata={"format": "privml.params", "version": "1",
                               "order": json.dumps(list(p))})
    with pytest.raises(ParamsError, match=r"'conv.weight'.*float64"):
        pm.decode(data, spec)
    with pytest.raises(ParamsError, match="float64"):
        pm.encode(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_named(value: float) -> None:
    p = sample()
    p["dense1.bias"] = p["dense1.bias"].copy()
    p["dense1.bias"][2] = value
    with pytest.raises(ParamsError, match=r"'dense1.bias'.*NaN or Inf"):
        pm.encode(p)
    data = save(p, metadata={"format": "privml.params", "version": "1",
                             "order": json.dumps(list(p))})
    with pytest.raises(ParamsError, match=r"'dense1.bias'.*NaN or Inf"):
        pm.decode(data, pm.spec_of(sample()))


@pytest.mark.parametrize("cut", [0, 4, 8, 20, -1, -7])
def test_truncated_bytes(cut: int) -> None:
    data = pm.encode(sample())
    with pytest.raises(ParamsError):
        pm.decode(data[:cut])


@pytest.mark.parametrize("junk", [b"", b"garbage", b"\xff" * 64, struct.pack("<Q", 5) + b"[1,2]",
                                  struct.pack("<Q", 2**40) + b"{}"])
def test_garbage_bytes(junk: bytes) -> None:
    with pytest.raises(ParamsError):
        pm.decode(junk)


def test_foreign_safetensors_refused() -> None:
    data = save({"a": np.zeros(2, np.float32)})
    with pytest.raises(ParamsError, match=r"not privml\.params"):
        pm.decode(data)
    data = save({"a": np.zeros(2, np.float32)}, metadata={"format": "privml.params",
                                                         "version": "9"})
    with pytest.raises(ParamsError, match="version"):
        pm.decode(data)


def test_not_bytes_refused() -> None:
    with pytest.raises(ParamsError):
        pm.decode("a string")  # type: ignore[arg-type]


def test_flatten_unflatten_round_trip() -> None:
    p = sample()
    v = pm.flatten(p)
    assert v.shape == (4 * 3 + 4 + 18,)
    q = pm.unflatten(v, pm.spec_of(p))
    for name in p:
        np.testing.assert_array_equal(p[name], q[name])
    with pytest.raises(ParamsError):
        pm.unflatten(v[:-1], pm.spec_of(p))


def test_norm_and_arithmetic() -> None:
    p = sample()
    assert pm.l2_norm(p) == pytest.approx(float(np.linalg.norm(pm.flatten(p))), rel=1e-6)
    s = pm.weighted_sum([p, p], [0.25, 0.75])
    np.testing.assert_allclose(pm.flatten(s), pm.flatten(p), rtol=1e-6)
    np.testing.assert_allclose(pm.flatten(pm.subtract(p, p)), 0.0)
    np.testing.assert_allclose(pm.flatten(pm.scale(p, 2.0)), 2 * pm.flatten(p), rtol=1e-6)
    with pytest.raises(ParamsError):
        pm.add(p, {"x": np.zeros(1, np.float32)})
    with pytest.raises(ConfigError):
        pm.weighted_sum([p], [1.0, 2.0])

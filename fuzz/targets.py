"""One entry per fuzz target: the parser of untrusted bytes it drives, and its seeds.

Shared by the atheris scripts (``fuzz/fuzz_<name>.py``) and the regression test
(``tests/test_fuzz_corpus.py``), so both feed an input to exactly the same code. This module
never imports atheris: ``make test`` runs it without.

Each target takes the fuzzer's bytes, swallows the errors its parser documents (privml's
error tree: :class:`~privml.ParamsError`, :class:`~privml.SecAggError`,
:class:`~privml.IntegrityError`, :class:`~privml.DataError`, :class:`~privml.ConfigError`,
:class:`~privml.RequestError`, and ``pydantic.ValidationError`` at the HTTP edge) and
returns whether the input was accepted. Anything else escaping (IndexError, OverflowError,
UnicodeDecodeError, RecursionError, a pyarrow error...) is a crash. Targets that cover
several parsers take the first byte as a selector and give the rest to the parser.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TARGETS", "seeds"]

# A fixed key and associated data: the store target fuzzes the parsing of sealed bytes made
# under a key the reader holds (a wrong key is one opaque IntegrityError, nothing to parse).
_KEY = bytes(range(32))
_AAD = b"privml-fuzz"
_SPEC = {"dense.weight": (3, 4), "dense.bias": (3,)}


@functools.cache
def _scratch() -> Path:
    """A private folder for targets whose parser reads a file (one per process)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return Path(tempfile.mkdtemp(prefix="privml-fuzz-", dir=base))


def _file(name: str, data: bytes) -> Path:
    path = _scratch() / name
    path.write_bytes(data)
    return path


def _split(data: bytes, modes: int) -> tuple[int, bytes]:
    return (data[0] % modes, data[1:]) if data else (0, b"")


# ---- params: safetensors bytes checked against a spec, and model files ------------------


def params(data: bytes) -> bool:
    from privml import ParamsError, params
    from privml._exceptions import DataError
    from privml.models import load_model

    mode, body = _split(data, 3)
    try:
        if mode == 0:  # an update, checked against the model's spec
            params.decode(body, _SPEC)
        elif mode == 1:
            params.decode(body)
        else:  # a model file: the spec comes from the header itself
            load_model(_file("model.safetensors", body))
    except (ParamsError, DataError):
        return False
    return True


def _params_seeds() -> list[bytes]:
    from privml import params
    from privml.models import ModelSpec, save_model

    rng = np.random.default_rng(0)
    p = {n: rng.standard_normal(s).astype(np.float32) for n, s in _SPEC.items()}
    spec = ModelSpec.from_dict({"input_shape": [4], "layers": [
        {"type": "Dense", "name": "dense", "units": 3}]})
    save_model(_scratch() / "seed.safetensors", spec, p)
    model = (_scratch() / "seed.safetensors").read_bytes()
    return [b"\x00" + params.encode(p), b"\x01" + params.encode(p, metadata={"note": "x"}),
            b"\x02" + model]


# ---- secagg: SecAgg+ message decoding ------------------------------------------------


def secagg(data: bytes) -> bool:
    from privml import SecAggError
    from privml.secagg import decode, encode

    try:
        msg = decode(data)
    except SecAggError:
        return False
    # "a message has exactly one encoding": whatever decodes must encode to the same bytes
    if encode(msg) != bytes(data):
        raise AssertionError(f"{type(msg).__name__} decoded from non-canonical bytes")
    return True


def _secagg_seeds() -> list[bytes]:
    from privml.secagg import (
        AdvertiseKeys,
        KeyDirectory,
        MaskedInput,
        RoundParams,
        ShareInbox,
        ShareKeys,
        UnmaskRequest,
        UnmaskShares,
        encode,
    )

    k1, k2 = b"\x01" * 32, b"\x02" * 32
    params = RoundParams(neighbours=2, shamir_threshold=2, min_survivors=2, bits=32, length=4)
    msgs = [
        AdvertiseKeys("run", 1, "a", k1, k2),
        KeyDirectory("run", 1, "a", params, ("a", "b", "c"), (("b", k1, k2), ("c", k2, k1))),
        ShareKeys("run", 1, "a", (("b", b"s" * 40), ("c", b"t" * 40))),
        ShareInbox("run", 1, "a", (("b", b"s" * 40),)),
        MaskedInput("run", 1, "a", np.arange(4, dtype=np.uint32)),
        MaskedInput("run", 2, "client-7", np.arange(3, dtype=np.uint64)),
        UnmaskRequest("run", 1, "a", ("a", "b")),
        UnmaskShares("run", 1, "a", (("b", b"x" * 33),), (("c", b"y" * 33),)),
    ]
    return [encode(m) for m in msgs]


# ---- store: sealed segments, sealed files, typed values ----------------------------------


def store(data: bytes) -> bool:
    from privml import DataError, IntegrityError, ParamsError
    from privml.store._seal import open_stream
    from privml.store._url import decode_value, load

    mode, body = _split(data, 3)
    try:
        if mode == 0:  # the segmented format: header, then segments
            for _ in open_stream(io.BytesIO(body), key=_KEY, aad=_AAD):
                pass
        elif mode == 1:  # a file:// value: header, wrapped data key, segments, value
            load(f"file://{_file('value.sealed', body)}", key=_KEY)
        else:  # the typed value inside (also what https:// serves for a shared dataset)
            decode_value(body)
    except (IntegrityError, DataError, ParamsError):
        return False
    return True


def _store_seeds() -> list[bytes]:
    import pandas as pd

    from privml.store._seal import seal_stream
    from privml.store._url import encode_value, save

    out = []
    for payload, size in ((b"", 16), (b"hello sealed world" * 3, 16), (b"x" * 40, 1 << 20)):
        buf = io.BytesIO()
        seal_stream(payload, buf, key=_KEY, aad=_AAD, segment_size=size)
        out.append(b"\x00" + buf.getvalue())
    path = _scratch() / "seed.sealed"
    save(np.arange(6, dtype=np.int16).reshape(2, 3), f"file://{path}", key=_KEY)
    out.append(b"\x01" + path.read_bytes())
    values = [np.arange(5, dtype=np.float32), {"w": np.ones((2, 2), np.float32)},
              pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})]
    out += [b"\x02" + encode_value(v) for v in values]
    return out


# ---- idx: IDX (MNIST) files, raw or gzip ------------------------------------------------


def idx(data: bytes) -> bool:
    from privml import DataError
    from privml.data import read_idx

    mode, body = _split(data, 2)
    try:
        read_idx(_file("data.idx.gz" if mode else "data.idx", body))
    except DataError:
        return False
    return True


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _idx_seeds() -> list[bytes]:
    images = _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)
    return [b"\x00" + images,
            b"\x00" + _idx_bytes(np.array([0.5, -1.0], dtype=np.float32), 0x0D),
            b"\x00" + _idx_bytes(np.array([[1, -2]], dtype=np.int32), 0x0C),
            b"\x01" + gzip.compress(images, mtime=0)]


# ---- csv: feature/label CSV files -------------------------------------------------------


def csv(data: bytes) -> bool:
    from privml import DataError
    from privml.data import load_csv, read_feature_csv

    mode, body = _split(data, 2)
    path = _file("data.csv", body)
    try:
        if mode == 0:
            load_csv(path)
        else:
            read_feature_csv(path, label="label")
    except DataError:
        return False
    return True


def _csv_seeds() -> list[bytes]:
    table = b"a,b,label\n1,2.5,x\n3,-4e3,y\n5,6,x\n7,8,y\n"
    return [b"\x00" + table, b"\x00" + b"\xef\xbb\xbff1,label\r\n1,10\r\n2,2\r\n\r\n",
            b"\x01" + b"a,b,label\n1,2,0\n3,4,1\n", b"\x01" + b"a,b\n1,2\n"]


# ---- requests: what the HTTP edge validates ---------------------------------------------


def _headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in raw.split(b"\n"):
        name, sep, value = line.partition(b":")
        if sep:
            out.append((name.strip().lower(), value.strip()))
    return out


def requests(data: bytes) -> bool:
    from pydantic import ValidationError
    from starlette.requests import Request

    from privml import PeerError
    from privml.transport._runconfig import EvaluationReport
    from privml.transport._webapp import RunRequest, _bearer
    from privml.transport.server import update_meta

    mode, body = _split(data, 4)
    try:
        if mode == 0:  # POST /v1/admin/runs
            RunRequest.model_validate_json(body)
        elif mode == 1:  # POST /v1/evaluation
            EvaluationReport.model_validate_json(body)
        else:  # an update's metadata headers; the Authorization header
            request = Request({"type": "http", "method": "POST", "path": "/v1/update",
                               "headers": _headers(body)})
            if mode == 2:
                update_meta(request)
            else:
                _bearer(request)
    except (ValidationError, PeerError):
        return False
    return True


def _requests_seeds() -> list[bytes]:
    run = {"rounds": 3, "clients_per_round": 2, "strategy": "fedavg", "secagg": True,
           "target_epsilon": 3.0, "delta": 1e-5, "seed": 7, "trim": 0.1}
    report = {"run": "r1", "round": 2, "num_examples": 10, "loss": 0.5, "accuracy": 0.9}
    meta = (b"x-privml-run: r1\nx-privml-round: 3\nx-privml-update-id: abcdefgh12\n"
            b"x-privml-examples: 12\nx-privml-metrics: {\"loss\": 0.25, \"acc\": 1}\n")
    return [b"\x00" + json.dumps(run).encode(), b"\x01" + json.dumps(report).encode(),
            b"\x02" + meta, b"\x03" + b"authorization: Bearer pmc_abcdef\n"]


# ---- tfjs: weights uploaded by a browser, TF.js model folders, model specs ---------------


@functools.cache
def _tfjs_spec() -> Any:
    from privml.models import ModelSpec

    return ModelSpec.from_dict({"input_shape": [2, 2, 1], "layers": [
        {"type": "Conv2D", "name": "conv", "filters": 2, "kernel_size": 2},
        {"type": "Flatten"}, {"type": "Dense", "name": "out", "units": 3}]})


def tfjs(data: bytes) -> bool:
    from privml import ConfigError, DataError, ParamsError
    from privml.models import ModelSpec, from_tfjs_weights, read_tfjs, tfjs_weight_spec

    spec = _tfjs_spec()
    mode, body = _split(data, 4)
    manifest, _, weights = body.partition(b"\x00")  # JSON never holds a raw NUL
    try:
        if mode == 0:  # POST /v1/update on the web port: the manifest is the server's own
            fixed = [{"name": n, "shape": list(s), "dtype": "float32"}
                     for n, s in tfjs_weight_spec(spec).items()]
            from_tfjs_weights(spec, fixed, body)
        elif mode == 1:
            try:
                entries = json.loads(manifest)
            except (ValueError, RecursionError):
                return False  # not JSON: nothing of privml's to fuzz
            from_tfjs_weights(spec, entries, weights)
        elif mode == 2:  # a model.json + weights.bin folder
            folder = _scratch() / "tfjs"
            folder.mkdir(exist_ok=True)
            (folder / "model.json").write_bytes(manifest)
            (folder / "weights.bin").write_bytes(weights)
            read_tfjs(folder, spec)
        else:
            ModelSpec.from_json(body.decode("utf-8", "surrogateescape"))
    except (ParamsError, DataError, ConfigError):
        return False
    return True


def _tfjs_seeds() -> list[bytes]:
    from privml.models import build_torch, to_tfjs
    from privml.train import get_params

    spec = _tfjs_spec()
    model_json, weights = to_tfjs(spec, get_params(build_torch(spec)))
    manifest = json.dumps(model_json["weightsManifest"][0]["weights"]).encode()
    return [b"\x00" + weights, b"\x01" + manifest + b"\x00" + weights,
            b"\x02" + json.dumps(model_json).encode() + b"\x00" + weights,
            b"\x03" + spec.to_json().encode()]


# ---- policy: anonymization policies and generalisation hierarchies (YAML) ---------------


def policy(data: bytes) -> bool:
    from privml import ConfigError
    from privml.anonymize.tabular._hierarchy import load_hierarchies
    from privml.anonymize.text._policy import Policy

    mode, body = _split(data, 2)
    path = _file("policy.yaml", body)
    try:
        if mode == 0:
            Policy.from_yaml(path)
        else:
            load_hierarchies(path)
    except ConfigError:
        return False
    return True


def _policy_seeds() -> list[bytes]:
    from importlib import resources

    default = resources.files("privml.anonymize.text").joinpath("default_policy.yaml")
    custom = b"""version: 1
entities: [EMAIL, EMPLOYEE_ID]
regions: [US, GB]
threshold: 0.4
recognizers:
  - {entity: EMPLOYEE_ID, regex: "E-[0-9]{6}", score: 0.9, context: [employee]}
  - {entity: CITY_CODE, deny_list: [NYC, LAX], ignore_case: true}
operators:
  default: redact
  EMAIL: {type: mask, keep_last: 4}
columns: {notes: text, id: drop, email: EMAIL}
"""
    hierarchies = b"""hierarchies:
  age: {widths: [5, 10, 20], start: 0}
  zip: {rows: [[12345, 1234*, 123**], [12346, 1234*, 123**]]}
  sex: {levels: [{M: any, F: any}]}
  score: {cuts: [[0, 50, 100]]}
"""
    return [b"\x00" + default.read_bytes(), b"\x00" + custom, b"\x01" + hierarchies]


TARGETS: dict[str, Callable[[bytes], bool]] = {
    "params": params, "secagg": secagg, "store": store, "idx": idx, "csv": csv,
    "requests": requests, "tfjs": tfjs, "policy": policy,
}
_SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "params": _params_seeds, "secagg": _secagg_seeds, "store": _store_seeds,
    "idx": _idx_seeds, "csv": _csv_seeds, "requests": _requests_seeds,
    "tfjs": _tfjs_seeds, "policy": _policy_seeds,
}


def seeds(name: str) -> list[bytes]:
    """Valid inputs for target ``name``, made by privml's own encoders."""
    return _SEEDS[name]()

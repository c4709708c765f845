"""privml.save / privml.load by URL: local://, file://, https:// (a real coordinator over
mutual TLS, checked against its sha256 ETag); plain http:// refused."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import privml
from privml import ConfigError, DataError, IntegrityError
from privml.store._url import encode_value

KEY = os.urandom(32)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PRIVML_STORE_KEY", base64.b64encode(KEY).decode())


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"dense/kernel": rng.normal(size=(64, 10)).astype(np.float32),
            "dense/bias": np.zeros(10, np.float32)}


def test_local_and_file_round_trips_of_params_arrays_and_frames(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": [31, 45], "city": ["Lyon", "Oslo"]})
    array = np.arange(12, dtype=np.int64).reshape(3, 4)
    for obj in (_params(), array, frame):
        for url in ("local://thing", f"file://{tmp_path / 'thing.sealed'}"):
            saved = privml.save(obj, url)
            back = privml.load(saved)
            if isinstance(obj, pd.DataFrame):
                pd.testing.assert_frame_equal(back, obj)  # type: ignore[arg-type]
            elif isinstance(obj, np.ndarray):
                np.testing.assert_array_equal(back, obj)  # type: ignore[arg-type]
            else:
                assert set(back) == set(obj)  # type: ignore[arg-type]
                for k in obj:
                    np.testing.assert_array_equal(back[k], obj[k])  # type: ignore[index]
    assert privml.save(array, "local://thing").endswith("@4")  # every save a new version
    np.testing.assert_array_equal(privml.load("local://thing@2"), array)  # type: ignore[arg-type]


def test_a_sealed_file_is_unreadable_with_another_key_or_a_flipped_byte(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'p.sealed'}"
    privml.save(_params(), url)
    with pytest.raises(IntegrityError):
        privml.load(url, key=os.urandom(32))
    raw = bytearray((tmp_path / "p.sealed").read_bytes())
    for i in range(0, len(raw), 97):
        bad = bytearray(raw)
        bad[i] ^= 4
        (tmp_path / "p.sealed").write_bytes(bytes(bad))
        with pytest.raises(IntegrityError):
            privml.load(url)


def test_bad_urls_and_objects_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http://"):
        privml.load("http://127.0.0.1:1/v1/model")
    with pytest.raises(ConfigError, match="cannot save"):
        privml.save(_params(), "s3://bucket/x")
    with pytest.raises(ConfigError, match="not a passphrase"):
        privml.save(_params(), f"file://{tmp_path / 'x.sealed'}", key="a passphrase")
    with pytest.raises(ConfigError, match="cannot save a"):
        privml.save(object(), "local://x")
    with pytest.raises(ConfigError, match="no record"):
        privml.save(np.zeros(1), "local://y")
        privml.load("local://missing")


def test_https_load_from_a_coordinator_checks_the_etag(tmp_path: Path) -> None:
    from privml.data import load_dataset
    from privml.models import build_torch, zoo
    from privml.train import get_params
    from privml.transport._coordinator import Coordinator, RunConfig
    from privml.transport._serve import ServerThread
    from privml.transport.server import ServerState, create_device_app
    from privml.transport.tls import (
        Revocations,
        init_federation,
        issue_client,
        server_ssl_context,
    )

    paths = init_federation(tmp_path / "fed")
    cert, key = issue_client(paths.dir, "alice")
    ds = load_dataset("digits", seed=0)
    spec = zoo("logreg", input_shape=ds.input_shape, num_classes=10)
    initial = get_params(build_torch(spec))
    coord = Coordinator(RunConfig(rounds=1), run_id="run-url", model_spec_json=spec.to_json(),
                        initial=initial)
    state = ServerState(coord, Revocations(paths.revoked).is_revoked)
    with ServerThread(create_device_app(state),
                      ssl_context=server_ssl_context(paths, require_client_cert=True)) as srv:
        tls = {"ca": paths.ca_cert, "cert": cert, "key": key}
        got = privml.load(f"{srv.url}/v1/model", tls=tls)
        for k in initial:
            np.testing.assert_array_equal(got[k], initial[k])  # type: ignore[index]
        # datasets the coordinator shares: an array and a table, checked the same way
        frame = pd.DataFrame({"age": [31, 47], "city": ["Lyon", "Oslo"]})
        state.share("eval-x", encode_value(np.arange(12, dtype=np.float32).reshape(3, 4)))
        state.share("eval-meta", encode_value(frame))
        np.testing.assert_array_equal(privml.load(f"{srv.url}/v1/data/eval-x", tls=tls),
                                      np.arange(12, dtype=np.float32).reshape(3, 4))
        pd.testing.assert_frame_equal(privml.load(f"{srv.url}/v1/data/eval-meta", tls=tls),
                                      frame)
        with pytest.raises(DataError, match="404"):
            privml.load(f"{srv.url}/v1/data/missing", tls=tls)
        with pytest.raises(ConfigError, match="needs tls"):
            privml.load(f"{srv.url}/v1/data/eval-x")
        digest, body = state.shared["eval-x"]
        state.shared["eval-x"] = (digest, body[:-1] + bytes([body[-1] ^ 1]))
        with pytest.raises(IntegrityError):
            privml.load(f"{srv.url}/v1/data/eval-x", tls=tls)
        coord.etag = "0" * 64  # the bytes no longer match what the server claims
        with pytest.raises(IntegrityError):
            privml.load(f"{srv.url}/v1/model", tls=tls)
    with pytest.raises(ConfigError, match="dataset name"):
        state.share("../etc", b"")


def test_dataset_files_a_coordinator_shares(tmp_path: Path) -> None:
    from privml.store._url import decode_value, read_data_file

    np.save(tmp_path / "a.npy", np.eye(3))
    pd.DataFrame({"x": [1, 2]}).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"y": [0.5]}).to_parquet(tmp_path / "t.parquet")
    np.testing.assert_array_equal(decode_value(read_data_file(tmp_path / "a.npy")), np.eye(3))
    assert decode_value(read_data_file(tmp_path / "t.csv"))["x"].tolist() == [1, 2]
    assert decode_value(read_data_file(tmp_path / "t.parquet"))["y"].tolist() == [0.5]
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="cannot read"):  # a pickled array is never loaded
        read_data_file(tmp_path / "o.npy")
    with pytest.raises(ConfigError, match=r"\.npy, \.parquet or \.csv"):
        read_data_file(tmp_path / "x.pkl")

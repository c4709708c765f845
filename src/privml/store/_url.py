"""``privml.save`` / ``privml.load``: parameters, arrays and tables by URL, in the manner of
TensorFlow.js's ``indexeddb://`` and ``localstorage://`` handlers.

- ``local://NAME``: a record of the sealed store under ``$PRIVML_HOME/store`` (or ``store=``);
  each save is a new version.
- ``file://PATH``: one sealed file: ``FILE_MAGIC | version | wrapped data key`` then the
  segmented value (:mod:`privml.store._seal`); written to a temporary file and renamed.
- ``https://HOST/...`` (load only): fetched with the federation's TLS settings (``tls=``:
  the CA, and a client certificate and key for mutual TLS) and checked against the sha256
  ETag the coordinator sends; plain ``http://`` is refused. The coordinator serves the
  current model at ``/v1/model`` (parameters) and the datasets it shares
  (``privml server --share NAME=FILE``) at ``/v1/data/NAME`` (typed values).

Values are typed by a small header: ``VALUE_MAGIC | version | kind`` then safetensors bytes
(parameters: a mapping of names to float32 arrays), ``.npy`` bytes (one numpy array, no
pickle) or Parquet bytes (a pandas DataFrame). Loading never runs code.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from privml._exceptions import ConfigError, DataError, IntegrityError
from privml.store._keys import key_from_env, unwrap, wrap
from privml.store._local import LocalStore
from privml.store._seal import open_stream, seal_stream

__all__ = ["decode_value", "encode_value", "load", "read_data_file", "save"]

VALUE_MAGIC = b"PMVAL"
FILE_MAGIC = b"PMFILE"
_VERSION = 1
_PARAMS, _ARRAY, _TABLE = 1, 2, 3
_WRAPPED = 4 + 1 + 12 + 32 + 16


def encode_value(obj: Any) -> bytes:
    """``obj`` (parameters, a numpy array or a DataFrame) as typed value bytes."""
    from privml import params as pm

    head = VALUE_MAGIC + bytes([_VERSION])
    if isinstance(obj, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return head + bytes([_ARRAY]) + buf.getvalue()
    if type(obj).__name__ == "DataFrame":
        buf = io.BytesIO()
        obj.to_parquet(buf)
        return head + bytes([_TABLE]) + buf.getvalue()
    if hasattr(obj, "state_dict"):  # a torch module: its parameters
        from privml.train import get_params

        obj = get_params(obj)
    if isinstance(obj, Mapping):
        return head + bytes([_PARAMS]) + pm.encode(obj)
    raise ConfigError(f"cannot save a {type(obj).__name__}: give parameters (a mapping of "
                      "float32 arrays or a torch module), a numpy array or a DataFrame")


def decode_value(data: bytes) -> Any:
    """What :func:`encode_value` wrote; never runs code."""
    from privml import params as pm

    n = len(VALUE_MAGIC)
    if data[:n] != VALUE_MAGIC or len(data) < n + 2 or data[n] != _VERSION:
        raise DataError("not a privml value (bad magic or version)")
    kind, body = data[n + 1], data[n + 2:]
    if kind == _PARAMS:
        return pm.decode(body)
    # The value may come off the wire (a dataset a coordinator shares). numpy's and
    # pyarrow's readers refuse bad bytes with a zoo of types (ValueError, OSError, EOFError,
    # tokenize.TokenError, ArrowInvalid, JSONDecodeError of pandas metadata...), so every
    # failure of theirs is one DataError here.
    if kind == _ARRAY:
        try:
            return np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as exc:
            raise DataError(f"bad array value: {type(exc).__name__}: {exc}"[:300]) from None
    if kind == _TABLE:
        import pandas as pd  # type: ignore[import-untyped]

        try:
            return pd.read_parquet(io.BytesIO(body))
        except Exception as exc:
            raise DataError(f"bad table value: {type(exc).__name__}: {exc}"[:300]) from None
    raise DataError(f"unknown value kind {kind}")


def _key(key: bytes | str | None) -> bytes:
    if isinstance(key, str):  # never fall back silently to another key
        raise ConfigError("file:// values take a 32-byte key, not a passphrase (use "
                          "local:// for a passphrase-protected store)")
    key = key if key is not None else key_from_env()
    if key is None or len(key) != 32:
        raise ConfigError("file:// values need a 32-byte key (key=, or PRIVML_STORE_KEY)")
    return key


def _file_path(url: str) -> Path:
    parsed = urlparse(url)
    path = unquote(parsed.netloc + parsed.path)
    if not path:
        raise ConfigError(f"no path in {url!r}")
    return Path(path)


def _local_name(url: str) -> str:
    name = url[len("local://"):]
    if not name:
        raise ConfigError(f"no record name in {url!r}")
    return name


def save(obj: Any, url: str, *, key: bytes | str | None = None,
         store: Path | str | None = None) -> str:
    """Seal ``obj`` at ``url`` (``local://NAME`` or ``file://PATH``); returns the URL, with
    the version for ``local://`` (``local://NAME@3``)."""
    data = encode_value(obj)
    if url.startswith("local://"):
        from privml._home import privml_home

        name = _local_name(url)
        with LocalStore(store or privml_home() / "store", key=key) as st:
            return f"local://{name}@{st.put(name, data)}"
    if url.startswith("file://"):
        kek = _key(key)
        path = _file_path(url)
        header = FILE_MAGIC + bytes([_VERSION])
        data_key = secrets.token_bytes(32)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "wb") as out:
            out.write(header + wrap(kek, data_key, header))
            seal_stream(data, out, key=data_key, aad=header)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return url
    raise ConfigError(f"cannot save to {url!r}: use local://NAME or file://PATH")


def load(url: str, *, key: bytes | str | None = None, store: Path | str | None = None,
         tls: Mapping[str, Path | str] | None = None) -> Any:
    """What :func:`save` sealed at ``url`` (``local://NAME[@VERSION]``, ``file://PATH``), or
    parameters from a coordinator (``https://...``, ``tls={"ca": ..., "cert": ...,
    "key": ...}``), checked against its sha256 ETag."""
    if url.startswith("local://"):
        from privml._home import privml_home

        name, _, version = _local_name(url).partition("@")
        with LocalStore(store or privml_home() / "store", key=key, create=False) as st:
            try:
                return decode_value(st.get(name, int(version) if version else None))
            except KeyError:
                raise ConfigError(f"no record {url!r}") from None
    if url.startswith("file://"):
        kek = _key(key)
        try:
            fh = open(_file_path(url), "rb")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot open {url!r}: {exc.strerror}") from None
        with fh:
            header = fh.read(len(FILE_MAGIC) + 1)
            if header != FILE_MAGIC + bytes([_VERSION]):
                raise IntegrityError()
            data_key = unwrap(kek, fh.read(_WRAPPED), header)
            return decode_value(b"".join(open_stream(fh, key=data_key, aad=header)))
    if url.startswith("https://"):
        return _fetch(url, tls or {})
    if url.startswith("http://"):
        raise ConfigError("plain http:// is refused: models travel over TLS (https://)")
    raise ConfigError(f"cannot load {url!r}: use local://, file:// or https://")


def _fetch(url: str, tls: Mapping[str, Path | str]) -> Any:
    import httpx

    from privml import params as pm
    from privml.transport.tls import client_ssl_context

    if "ca" not in tls:
        raise ConfigError("https:// needs tls={'ca': ..., and for mutual TLS 'cert', 'key'}")
    cert, key = tls.get("cert"), tls.get("key")
    ctx = client_ssl_context(Path(tls["ca"]), cert=None if cert is None else Path(cert),
                             key=None if key is None else Path(key))
    with httpx.Client(verify=ctx, timeout=60) as http:
        resp = http.get(url, headers={"X-Privml-Protocol": "1"})
    if resp.status_code != 200:
        raise DataError(f"{url} answered {resp.status_code}")
    etag = resp.headers.get("etag", "").strip('"')
    if not etag or hashlib.sha256(resp.content).hexdigest() != etag:
        raise IntegrityError()
    if resp.content.startswith(VALUE_MAGIC):  # a shared dataset (or any typed value)
        return decode_value(resp.content)
    return pm.decode(resp.content)


def read_data_file(path: Path | str) -> bytes:
    """A dataset file (``.npy``, ``.parquet`` or ``.csv``) as typed value bytes, for a
    coordinator to share; never unpickles."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return encode_value(np.load(path, allow_pickle=False))
        import pandas as pd

        if suffix == ".parquet":
            return encode_value(pd.read_parquet(path))
        if suffix == ".csv":
            return encode_value(pd.read_csv(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the dataset {path}: {exc}") from None
    raise ConfigError(f"cannot share {path}: give a .npy, .parquet or .csv file")

"""House rule 2: every package re-exports its public API with an explicit, complete __all__."""

from __future__ import annotations

import importlib
import inspect

import pytest

import privml

PACKAGES = ["privml", "privml.params", "privml.protocol", "privml.strategies", "privml.data",
            "privml.models", "privml.train", "privml.sim", "privml.cli", "privml.transport",
            "privml.secagg", "privml.secagg.hazmat", "privml.dp", "privml.audit"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_explicit_and_complete(name: str) -> None:
    mod = importlib.import_module(name)
    exported = mod.__all__
    assert len(set(exported)) == len(exported), "duplicate names in __all__"
    for item in exported:
        assert hasattr(mod, item), f"{name}.__all__ names missing {item!r}"
    public = {
        k for k, v in vars(mod).items()
        if not k.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
        and (v.__module__ == name or v.__module__.startswith(name + "."))
    }
    assert public <= set(exported), f"{name}: public but not in __all__: {public - set(exported)}"


def test_exception_tree() -> None:
    assert issubclass(privml.ConfigError, ValueError)
    for exc in (privml.ParamsError, privml.ProtocolError, privml.LateUpdateError,
                privml.DuplicateUpdateError, privml.UnknownClientError):
        assert issubclass(exc, privml.PeerError)
    for exc in (privml.ConfigError, privml.DataError, privml.PeerError):
        assert issubclass(exc, privml.PrivmlError)
    assert not issubclass(privml.ConfigError, privml.PeerError)

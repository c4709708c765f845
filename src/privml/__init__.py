"""privml: privacy-first machine learning."""

from privml._exceptions import (
    BudgetExceededError,
    ConfigError,
    DataError,
    DuplicateUpdateError,
    IntegrityError,
    LateUpdateError,
    ParamsError,
    PeerError,
    PrivmlError,
    ProtocolError,
    ReplayError,
    RequestError,
    RoundAbortedError,
    SecAggError,
    UnknownClientError,
    UnreachableError,
)

__version__ = "0.1.0"


def save(obj: object, url: str, **kw: object) -> str:
    """Seal parameters, an array or a table at ``local://NAME`` or ``file://PATH``
    (:func:`privml.store.save`)."""
    from privml.store._url import save as _save

    return _save(obj, url, **kw)  # type: ignore[arg-type]


def load(url: str, **kw: object) -> object:
    """Load what :func:`save` sealed, or parameters from a coordinator over https://
    (:func:`privml.store.load`)."""
    from privml.store._url import load as _load

    return _load(url, **kw)  # type: ignore[arg-type]


__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "DataError",
    "DuplicateUpdateError",
    "IntegrityError",
    "LateUpdateError",
    "ParamsError",
    "PeerError",
    "PrivmlError",
    "ProtocolError",
    "ReplayError",
    "RequestError",
    "RoundAbortedError",
    "SecAggError",
    "UnknownClientError",
    "UnreachableError",
    "__version__",
    "load",
    "save",
]

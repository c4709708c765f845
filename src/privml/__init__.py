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
)

__version__ = "0.1.0"

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
    "__version__",
]

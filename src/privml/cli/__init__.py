"""The ``privml`` command line."""

from privml.cli import (  # noqa: F401  (importing registers the commands)
    _anonymize,
    _audit,
    _certs,
    _net,
    _predict,
    _report,
    _server,
    _sim,
    _store,
)
from privml.cli._app import app, main

__all__ = ["app", "main"]

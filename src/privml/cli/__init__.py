"""The ``privml`` command line."""

from privml.cli import _certs, _net, _predict, _server, _sim, _store  # noqa: F401  (importing registers the commands)
from privml.cli._app import app, main

__all__ = ["app", "main"]

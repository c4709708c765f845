"""Transport: the HTTPS coordinator, the Python client, TLS 1.3 certificates and contexts.

- :mod:`~privml.transport.tls` — federation CA, server and client certificates, revocation,
  TLS-1.3-only SSL contexts.
- :class:`Coordinator` — the server's run state over the round state machine: every check
  on an update, every state change (no sockets; tested directly).
- :func:`create_device_app` / :class:`ServerThread` — FastAPI on uvicorn, mutual TLS.
- :class:`FederatedClient` — get task, train locally, submit; retries are idempotent.
"""

from privml.transport._coordinator import Coordinator, RunConfig, UpdateMeta
from privml.transport._network import NetworkConfig, run_network_federation
from privml.transport._serve import ServerThread
from privml.transport._tokens import TokenStore
from privml.transport._uvicorn_tls import TLSH11Protocol, make_uvicorn_config
from privml.transport._webapp import create_web_app
from privml.transport.client import ClientReport, FederatedClient, ServerRefusedError
from privml.transport.server import ServerState, create_device_app
from privml.transport.tls import (
    ClientInfo,
    FederationPaths,
    Revocations,
    cert_fingerprint,
    client_id_of,
    client_ssl_context,
    init_federation,
    issue_client,
    list_clients,
    revoke_client,
    server_ssl_context,
)

__all__ = [
    "ClientInfo",
    "ClientReport",
    "Coordinator",
    "FederatedClient",
    "FederationPaths",
    "NetworkConfig",
    "Revocations",
    "RunConfig",
    "ServerRefusedError",
    "ServerState",
    "ServerThread",
    "TLSH11Protocol",
    "TokenStore",
    "UpdateMeta",
    "cert_fingerprint",
    "client_id_of",
    "client_ssl_context",
    "create_device_app",
    "create_web_app",
    "init_federation",
    "issue_client",
    "list_clients",
    "make_uvicorn_config",
    "revoke_client",
    "run_network_federation",
    "server_ssl_context",
]

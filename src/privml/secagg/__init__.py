"""Secure aggregation (SecAgg+, Bell et al. 2020): the coordinator only ever sees the sum.

Sans-IO machines for both sides (:class:`SecAggClient`, :class:`SecAggServer`), their
messages with one byte encoding each (:func:`encode` / :func:`decode`), the fixed-point
encoding of updates (:class:`FixedPoint`), and :func:`run_round`, one round with every party
in this process (for the simulator, tests and benchmarks). The HTTPS coordinator drives the
same machines (:mod:`privml.transport._secure`). Primitives live in :mod:`.hazmat`.

Security model: a semi-honest (honest-but-curious) coordinator that follows the protocol
but reads everything it is sent. It learns the sum of at least ``min_survivors`` clients'
inputs and nothing else about any one input, as long as fewer than ``shamir_threshold`` of
a client's neighbours collude with it. A malicious coordinator (one that lies about who
dropped) and malicious clients (bad inputs, bad shares) are outside this guarantee: a bad
share is detected for mask keys (the rebuilt key must match the advertised one), not for
self-mask seeds.
"""

from privml.secagg import hazmat
from privml.secagg._client import ClientStage, SecAggClient
from privml.secagg._encoding import FixedPoint
from privml.secagg._messages import (
    AdvertiseKeys,
    ClientMessage,
    KeyDirectory,
    MaskedInput,
    Message,
    ServerMessage,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
)
from privml.secagg._params import RoundParams, SecAggConfig
from privml.secagg._server import SecAggServer, ServerStage
from privml.secagg._session import RoundResult, run_round

__all__ = [
    "AdvertiseKeys",
    "ClientMessage",
    "ClientStage",
    "FixedPoint",
    "KeyDirectory",
    "MaskedInput",
    "Message",
    "RoundParams",
    "RoundResult",
    "SecAggClient",
    "SecAggConfig",
    "SecAggServer",
    "ServerMessage",
    "ServerStage",
    "ShareInbox",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskShares",
    "decode",
    "encode",
    "hazmat",
    "run_round",
]

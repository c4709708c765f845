"""Putting a run back together after a crash: the interrupted round, and the server
optimizer state as stored (see ``Coordinator.resume``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from privml import params as pm
from privml._exceptions import DataError
from privml.strategies import ClientUpdate, ServerState
from privml.transport._store import StoredState, StoredUpdate

if TYPE_CHECKING:
    from privml.transport._coordinator import Coordinator

__all__ = ["Accepted", "reload_open_round", "server_state", "stored_state"]


@dataclass(slots=True)
class Accepted:
    """An accepted update, as the coordinator keeps it until its round closes."""

    update_id: str
    sha256: str
    update: ClientUpdate
    metrics: dict[str, float]


def reload_open_round(c: Coordinator, round_: int, sampled: tuple[str, ...],
                       updates: list[StoredUpdate]) -> None:
    """Put the interrupted round's accepted updates back; it reopens on the first request."""
    if round_ != c.machine.round:
        raise DataError(f"run {c.run_id!r}: open round {round_} follows no closed round")
    for u in updates:
        if u.delta is None:
            raise DataError(f"run {c.run_id!r}: update {u.update_id!r} lost its delta")
        c._accepted[u.client_id] = Accepted(
            u.update_id, u.body_sha256,
            ClientUpdate(pm.decode(u.delta, c.spec), u.num_examples), dict(u.metrics))
    c._restore = (sampled, {u.client_id: u.num_examples for u in updates})
    c._recorded_round = round_


def stored_state(state: ServerState) -> StoredState:
    return StoredState(state.step, pm.encode(state.m) if state.m else None,
                       pm.encode(state.v) if state.v else None)


def server_state(stored: StoredState) -> ServerState:
    return ServerState(stored.step,
                       pm.decode(stored.m) if stored.m is not None else {},
                       pm.decode(stored.v) if stored.v is not None else {})

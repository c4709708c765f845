"""The dashboard's live feed: what changed in the coordinator, told to every open dashboard.

Theory of operation. The coordinator's two threads (device port, web port) already hold
``state.lock`` whenever they change something; at each change worth showing (an enrolment,
an accepted update, a SecAgg+ message, an evaluation, a round closed by its deadline, a run
started or stopped, a refusal) they add one to ``state.changes`` — an integer, nothing else:
the request paths do no work at all for dashboards, and no thread ever touches another
thread's event loop.

On the web port's event loop one :class:`LiveFeed` task looks at that counter every
``interval`` seconds (0.25 s). When it moved, the feed takes one small snapshot of the run
under the lock (:func:`live_snapshot`), names what changed against the snapshot before
(:func:`changed_kinds`), formats one server-sent-events message, and wakes every stream
waiting on it (one ``asyncio.Event``, replaced at each version). So however many changes
happen in 0.25 s, and however many dashboards are open, the coordinator pays for one
snapshot per interval and each stream for one write of the same bytes: changes are
coalesced, never queued per client. A dashboard that needs more than the snapshot (a round
closed, an evaluation, a new ε, a refusal) asks for the overview, built once per change
and shared too (:mod:`._overview`).

The feed also notes how many clients were enrolled (available) when it first saw each round
of the current run: the per-round "enrolled" figure (``None`` for a round it never saw,
e.g. one that began and ended within one interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from privml.transport.server import ServerState

__all__ = ["LiveFeed", "changed_kinds", "live_snapshot"]

# snapshot key -> the event kind a change of it is reported as
_KINDS = {"run": "run", "phase": "round", "round": "round", "closed": "round",
          "accepted": "update", "reported": "evaluation", "evaluations": "evaluation",
          "secagg_stage": "secagg", "secagg_waiting": "secagg", "spent": "privacy",
          "refusals": "refusal", "enrolled": "clients", "finished": "round"}


def live_snapshot(state: ServerState) -> dict[str, Any]:
    """The figures a dashboard shows at once (small, cheap): take ``state.lock`` first."""
    coord = state.current
    base: dict[str, Any] = {"run": None, "phase": "idle", "round": 0, "rounds": None,
                            "closed": 0, "completed": 0, "failed": 0, "enrolled": 0,
                            "sampled": 0, "accepted": 0, "reported": 0, "pending": 0,
                            "evaluations": 0, "accuracy": None, "loss": None,
                            "secagg_stage": None, "secagg_waiting": None, "spent": 0,
                            "epsilon": None, "target_epsilon": None, "finished": False,
                            "refusals": state.refusals}
    if coord is None:
        return base
    m = coord.machine
    last = coord.evaluations[-1] if coord.evaluations else {}
    secure = _secagg(coord)
    ledger = coord.privacy.dp.ledger if coord.privacy is not None else []
    base.update(
        run=coord.run_id, phase=m.phase.value, round=m.round, rounds=coord.config.rounds,
        closed=len(coord.history), completed=m.completed, failed=m.failed,
        enrolled=len(m.available), sampled=len(m.sampled), accepted=len(m.accepted),
        reported=len(m.reported), pending=len(m.pending), evaluations=len(coord.evaluations),
        accuracy=last.get("accuracy"), loss=last.get("loss"),
        secagg_stage=None if secure is None else secure["stage"],
        secagg_waiting=None if secure is None else secure["waiting"],
        spent=len(ledger), epsilon=float(ledger[-1]["epsilon"]) if ledger else None,
        target_epsilon=coord.config.target_epsilon, finished=coord.finished)
    return base


def _secagg(coord: Any) -> dict[str, Any] | None:
    # The coordinator keeps its open SecAgg+ round private; its status() shows it, but also
    # recomputes epsilon, which a snapshot taken four times a second should not pay for.
    secure = getattr(coord, "_secure", None)
    return None if secure is None else dict(secure.status())


def changed_kinds(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """What happened between two snapshots, as event kinds (sorted, each once)."""
    if before is None:
        return ["snapshot"]
    return sorted({kind for key, kind in _KINDS.items() if before.get(key) != after.get(key)})


class LiveFeed:
    """Watches ``state.changes`` and wakes the dashboards' streams (on one event loop)."""

    def __init__(self, state: ServerState, *, interval: float = 0.25) -> None:
        self.state = state
        self.interval = interval
        self.version = 0
        self.snapshot: dict[str, Any] | None = None
        self.message = b""
        self.enrolled_at: dict[int, int] = {}  # round of the current run -> enrolled then
        self._run: str | None = None
        self._seen = -1
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.streams = 0

    def ensure_started(self) -> None:
        """Start the watcher on the running loop (once; again if it died)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def poll(self) -> bool:
        """One look at the counter: a new version (and its message) when it moved."""
        changes = self.state.changes
        if changes == self._seen and self.snapshot is not None:
            return False
        self._seen = changes
        with self.state.lock:
            snap = live_snapshot(self.state)
        if snap["run"] != self._run:
            self._run, self.enrolled_at = snap["run"], {}
        if snap["run"] is not None and snap["phase"] == "training":
            self.enrolled_at.setdefault(snap["round"], snap["enrolled"])
        kinds = changed_kinds(self.snapshot, snap)
        if not kinds:
            return False
        self.snapshot = snap
        self.version += 1
        body = json.dumps({"version": self.version, "kinds": kinds, **snap},
                          separators=(",", ":"))
        self.message = f"id: {self.version}\nevent: status\ndata: {body}\n\n".encode()
        self.kick()
        return True

    def kick(self) -> None:
        """Wake every waiting stream (a new version, or a session ended)."""
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

    async def wait(self, version: int, timeout: float) -> None:
        """Until the feed moves past ``version``, a kick, or ``timeout`` seconds."""
        if self.version != version:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)

    async def _watch(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.interval)

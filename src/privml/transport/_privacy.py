"""The coordinator's differential-privacy state: the mechanism for the run's DP unit, its
accountant and ledger (written to the store entry by entry), and the budget.

* ``dp_unit="client"``: client-level DP-FedAvg (:class:`privml.dp.ClientLevelDP`). Central
  noise (no secure aggregation): a round is admitted and charged when it aggregates; a round
  that fails is charged as if it had run. Distributed noise (with secure aggregation, the
  distributed discrete Gaussian from the clients): a round is admitted before its tasks go
  out as if only the fewest survivors SecAgg+ reveals had added noise, and charged, when
  its sum is revealed, for the survivors actually in it; an aborted round reveals nothing
  and is not charged. The accounting assumes every survivor added its noise honestly.
* ``dp_unit="example"``: every client trains with DP-SGD (:class:`privml.dp.ExampleLevelDP`);
  a round is admitted *before* its tasks go out — the cost falls when clients release their
  updates — and charged when it closes, whatever its outcome.

A round past the budget is refused: nothing applied, the ledger unchanged; ``budget_refused``
says which round and what ε it would have reached, and the coordinator stops the run.
"""

from __future__ import annotations

from typing import Any

from privml._exceptions import BudgetExceededError
from privml.dp import ClientLevelDP, ExampleLevelDP, PrivacyAccountant
from privml.transport._runconfig import RunConfig
from privml.transport._store import CoordinatorStore

__all__ = ["RunPrivacy"]


class RunPrivacy:
    def __init__(self, config: RunConfig, *, dim: int, run_id: str) -> None:
        self.dp: ClientLevelDP | ExampleLevelDP = (
            config.example_dp() if config.dp_unit == "example"
            else ClientLevelDP(config.dp_settings(), dim,
                               noisers=config.noisers() if config.secagg else None))
        self.run_id = run_id
        self.budget_refused: dict[str, float] | None = None
        self.started_round = 0  # example unit: the last round admitted (tasks sent)

    @property
    def example_level(self) -> bool:
        return isinstance(self.dp, ExampleLevelDP)

    @property
    def distributed(self) -> bool:
        return isinstance(self.dp, ClientLevelDP) and self.dp.ddg is not None

    @property
    def admits_at_start(self) -> bool:
        return self.example_level or self.distributed

    def admit(self, round_: int, clients: int) -> bool:
        """Whether the round fits the budget; if not, it is noted and the run will stop."""
        if self.budget_refused is not None:
            return False
        try:
            self.dp.admit(clients)
        except BudgetExceededError as exc:
            self.budget_refused = {"round": float(round_), "epsilon_would_be": exc.epsilon,
                                   "target_epsilon": exc.target}
            return False
        return True

    def start(self, round_: int) -> bool:
        """Admit round ``round_`` once, before its first task goes out (example unit and
        distributed noise; central noise admits at aggregation: always True here)."""
        if not self.admits_at_start or round_ <= self.started_round:
            return True
        worst = self.dp.noisers if isinstance(self.dp, ClientLevelDP) else 0
        if not self.admit(round_, worst or 0):
            return False
        self.started_round = round_
        return True

    def record(self, round_: int, clients: int, store: CoordinatorStore | None) -> None:
        self.dp.record(round_, clients)
        if store is not None:
            store.add_ledger_entry(self.run_id, self.dp.ledger[-1])

    def restore(self, store: CoordinatorStore, started: int) -> None:
        """After a crash: the budget spent before it still counts; ``started`` is the last
        round that had begun (its tasks were out, so it was admitted)."""
        ledger = store.ledger(self.run_id)
        self.dp.accountant = PrivacyAccountant.from_events(
            [{"event": e["event"], "count": 1} for e in ledger],
            kind=self.dp.accountant.kind, relation=self.dp.accountant.relation)
        self.dp.ledger = ledger
        self.started_round = started

    def train_options(self) -> dict[str, Any]:
        """What a training task adds: the DP-SGD settings every client must run."""
        if isinstance(self.dp, ExampleLevelDP):
            return {"dp": self.dp.train_options()}
        if not self.distributed and self.dp.clip is None:
            # Client unit, central noise, a fixed bound: the coordinator clips every update
            # anyway; a client may clip it itself first (the browser page does) to send
            # nothing beyond the bound. Adaptive bounds are not sent: they need the norm bit.
            return {"client_clip": self.dp.bound}
        return {}

    def status(self) -> dict[str, Any]:
        return ({k: v for k, v in self.dp.summary().items() if k != "ledger"}
                | {"budget_refused": self.budget_refused})

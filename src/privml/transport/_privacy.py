"""The coordinator's differential-privacy state: the mechanism for the run's DP unit, its
accountant and ledger (written to the store entry by entry), and the budget.

* ``dp_unit="client"``: client-level DP-FedAvg with central noise
  (:class:`privml.dp.ClientLevelDP`); a round is admitted and charged when it aggregates.
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
            else ClientLevelDP(config.dp_settings(), dim))
        self.run_id = run_id
        self.budget_refused: dict[str, float] | None = None
        self.started_round = 0  # example unit: the last round admitted (tasks sent)

    @property
    def example_level(self) -> bool:
        return isinstance(self.dp, ExampleLevelDP)

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
        """Example unit: admit round ``round_`` once, before its first task goes out (the
        client unit admits at aggregation: always True here)."""
        if not self.example_level or round_ <= self.started_round:
            return True
        if not self.admit(round_, 0):
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
        return {"dp": self.dp.train_options()} if isinstance(self.dp, ExampleLevelDP) else {}

    def status(self) -> dict[str, Any]:
        return ({k: v for k, v in self.dp.summary().items() if k != "ledger"}
                | {"budget_refused": self.budget_refused})

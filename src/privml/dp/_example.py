"""Example-level DP for a federation of a few data holders (cross-silo): every client trains
with DP-SGD (:func:`privml.train.train_dp`) at the same Poisson rate ``q``, noise multiplier
``z`` and per-example clip ``C``, and the coordinator keeps the ledger.

What is accounted: an example held by a client that trains in *every* round — the worst
case — goes through ``steps_per_round`` Poisson-sampled Gaussian steps per round, so each
round is one ``repeated(poisson(q, z), steps_per_round)`` event; ε is that of the whole
sequence (add-or-remove adjacency). Assumptions, stated in every summary: each client runs
DP-SGD honestly on its own data (it is the client's own examples that are protected, so the
client has every reason to), and the number of examples a client holds is public (it is sent
in the clear as the aggregation weight, as Opacus treats the expected batch size q·n).

The cost is incurred when a client releases its update, so a round is charged once it starts
(whether or not it completes), and admitted *before* any task goes out: a round that would
take ε past the target is refused, nothing trained, the ledger and the model unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from privml._exceptions import ConfigError
from privml.dp._accounting import PrivacyAccountant, event_to_json, noise_for, poisson, repeated

__all__ = ["ExampleLevelDP", "dpsgd_steps"]

ASSUMPTION = ("each client runs DP-SGD on its own data as instructed; client data sizes are "
              "public (they weight the aggregate)")


def dpsgd_steps(epochs: int, q: float) -> int:
    """DP-SGD steps of one local training: ``epochs`` epochs of round(1/q) steps (at least
    one), each a Poisson batch that sees n·q examples in expectation."""
    return epochs * max(1, round(1.0 / q))


@dataclass
class ExampleLevelDP:
    """The coordinator's side of example-level DP: calibration, admission, ledger."""

    sample_rate: float
    epochs: int
    rounds: int
    delta: float
    clip_norm: float
    accountant_name: str = "rdp"
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    z: float = field(init=False)
    accountant: PrivacyAccountant = field(init=False)
    ledger: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        q = self.sample_rate
        if isinstance(q, bool) or not isinstance(q, float | int) or not 0 < q <= 1:
            raise ConfigError(f"sample_rate must be in (0, 1], got {q!r}")
        if self.accountant_name not in ("rdp", "pld"):
            raise ConfigError(f"accountant must be 'rdp' or 'pld', got "
                              f"{self.accountant_name!r}")
        self.accountant = PrivacyAccountant(
            kind="pld" if self.accountant_name == "pld" else "rdp")
        if self.noise_multiplier is not None:
            self.z = float(self.noise_multiplier)
        elif self.target_epsilon is not None:
            self.z = noise_for(target_epsilon=self.target_epsilon, delta=self.delta,
                               q=float(q), steps=self.rounds * self.steps_per_round,
                               accountant=self.accountant.kind)
        else:
            raise ConfigError("example-level DP needs target_epsilon or noise_multiplier")
        if not (math.isfinite(self.z) and self.z > 0):
            raise ConfigError(f"noise_multiplier must be > 0, got {self.z}")

    @property
    def steps_per_round(self) -> int:
        return dpsgd_steps(self.epochs, float(self.sample_rate))

    @property
    def placement(self) -> str:
        return "local (DP-SGD on each client)"

    def train_options(self) -> dict[str, float]:
        """What a training task tells each client to run (``privml.train.DPSGDConfig``)."""
        return {"noise_multiplier": self.z, "max_grad_norm": self.clip_norm,
                "sample_rate": float(self.sample_rate), "steps": self.steps_per_round}

    def event(self, survivors: int = 0) -> Any:
        """One round for an example of a participating client (``survivors`` is unused:
        the bound holds for every client that trains)."""
        return repeated(poisson(q=float(self.sample_rate), noise_multiplier=self.z),
                        count=self.steps_per_round)

    def admit(self, survivors: int = 0) -> float:
        """ε after one more round; BudgetExceededError (nothing changed) past the target."""
        if self.target_epsilon is None:
            return self.accountant.epsilon_after(self.event(), delta=self.delta)
        return self.accountant.check_budget(self.event(), target_epsilon=self.target_epsilon,
                                            delta=self.delta)

    def record(self, round_: int, survivors: int) -> None:
        event = self.event()
        self.accountant.compose(event)
        self.ledger.append({
            "round": round_, "unit": "example", "placement": self.placement,
            "sampling": "poisson", "survivors": survivors, "event": event_to_json(event),
            "epsilon": self.accountant.epsilon(delta=self.delta), "delta": self.delta,
            "accountant": self.accountant_name})

    def summary(self) -> dict[str, Any]:
        return {"epsilon": self.accountant.epsilon(delta=self.delta) if self.ledger else 0.0,
                "delta": self.delta, "accountant": self.accountant_name,
                "dp_unit": "example", "dp_placement": self.placement,
                "noise_multiplier": self.z, "clip_norm": self.clip_norm,
                "sample_rate": float(self.sample_rate),
                "steps_per_round": self.steps_per_round,
                "target_epsilon": self.target_epsilon, "assumption": ASSUMPTION,
                "ledger": list(self.ledger)}

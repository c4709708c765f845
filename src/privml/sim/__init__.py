"""The in-process federated simulator, its run history and its plots."""

from privml.sim._config import RoundRecord, SimConfig, SimResult
from privml.sim._engine import run_simulation
from privml.sim._plot import plot_history
from privml.sim._runs import RunRow, RunStore, default_db

__all__ = [
    "RoundRecord",
    "RunRow",
    "RunStore",
    "SimConfig",
    "SimResult",
    "default_db",
    "plot_history",
    "run_simulation",
]

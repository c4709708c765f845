"""PNG plots of a run's history (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from privml.sim._config import RoundRecord

__all__ = ["plot_history"]


def plot_history(history: Sequence[RoundRecord], path: str | Path, *, title: str = "") -> Path:
    """Test accuracy and loss per round, written atomically as a PNG."""
    import matplotlib  # here, not at import: ~0.3 s and tens of MB a simulation need not pay

    matplotlib.use("Agg")  # no display on devices or CI; must precede pyplot
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rounds = [r.round for r in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    try:
        ax_acc.plot(rounds, [r.test_accuracy for r in history], marker="o", ms=3)
        ax_acc.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1), title="accuracy")
        ax_acc.grid(alpha=0.3)
        ax_loss.plot(rounds, [r.test_loss for r in history], marker="o", ms=3, label="test")
        ax_loss.plot(rounds, [r.train_loss for r in history], marker=".", ms=3,
                     label="train (local mean)")
        ax_loss.set(xlabel="round", ylabel="cross-entropy", title="loss")
        ax_loss.grid(alpha=0.3)
        ax_loss.legend()
        failed = [r.round for r in history if r.outcome != "completed"]
        for r in failed:
            ax_acc.axvline(r, color="tab:red", alpha=0.3)
        if title:
            fig.suptitle(title)
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path

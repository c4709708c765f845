"""Server-side aggregation strategies: pure functions over parameters.

A client trains from the global parameters ``w`` and reports its *update*
``delta = w_local - w`` with its number of examples. Every strategy first forms the
example-weighted mean of the deltas (FedAvg's pseudo-gradient) and then applies it:

- ``fedavg``  — ``w + mean(delta)``: the example-weighted mean of the clients' models.
- ``fedprox`` — FedAvg's aggregation; clients add ``(mu/2)·||w_local - w||²`` to their loss.
- ``fedadam`` / ``fedyogi`` — the mean delta is a pseudo-gradient fed to a server-side
  Adam / Yogi optimizer (Reddi et al. 2021, "Adaptive Federated Optimization").

Robust strategies (``median``, ``trimmed_mean``, ``krum``, ``multikrum``, ``normbound``;
:mod:`._robust`) aggregate the individual updates instead, so they cannot run under secure
aggregation.

Strategies hold no mutable state: the optimizer moments travel in a :class:`ServerState`
that :meth:`Strategy.aggregate` takes and returns, so a coordinator can persist and resume it.
"""

from privml.strategies._core import (
    STRATEGIES,
    ClientUpdate,
    FedAdam,
    FedAvg,
    FedProx,
    FedYogi,
    ServerState,
    Strategy,
    make_strategy,
    needs_updates,
    weighted_mean_delta,
)
from privml.strategies._robust import ROBUST, Krum, Median, MultiKrum, NormBound, TrimmedMean

__all__ = [
    "ROBUST",
    "STRATEGIES",
    "ClientUpdate",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "Krum",
    "Median",
    "MultiKrum",
    "NormBound",
    "ServerState",
    "Strategy",
    "TrimmedMean",
    "make_strategy",
    "needs_updates",
    "weighted_mean_delta",
]

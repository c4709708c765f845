"""Poisoning attacks by a chosen fraction of simulated clients, to measure what the robust
strategies stop.

- ``sign_flip`` — an attacker trains honestly, then sends ``-scale`` times its update
  (default scale 4): it pushes the model back the way honest clients move it.
- ``scale`` — model boosting: ``scale`` times the honest update (default 10), so one client
  weighs as much as ten (Bhagoji et al. 2019).
- ``label_flip`` — a data attack: every label ``y`` of an attacker's examples becomes
  ``C - 1 - y``; its update is trained honestly on the flipped data.
- ``backdoor`` — a data attack: on half of each attacker's examples a trigger (the
  bottom-right 3x3 pixels of an image set to the data's maximum; the last 4 features of
  tabular data) is stamped and the label set to ``target``. Success is measured as the share
  of test examples of other classes that the triggered input turns into ``target``
  (:func:`backdoor_success`). With ``scale`` > 1 the attacker also boosts its update (model
  replacement, Bagdasaryan et al. 2020); by default it does not.

The attackers are drawn once per run (seeded) from all clients: ``round(fraction * clients)``
of them, so how many are sampled in a round varies as it would in a real federation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch

from privml._exceptions import ConfigError
from privml.data import Dataset

__all__ = ["ATTACKS", "Attack", "backdoor_success"]

ATTACKS = ("none", "sign_flip", "scale", "label_flip", "backdoor")
_DEFAULT_SCALE = {"sign_flip": 4.0, "scale": 10.0, "label_flip": 1.0, "backdoor": 1.0,
                  "none": 1.0}
BACKDOOR_SHARE = 0.5  # of an attacker's examples stamped with the trigger


def check_attack(kind: str, fraction: float, scale: float | None, target: int) -> None:
    if kind not in ATTACKS:
        raise ConfigError(f"unknown attack {kind!r}; choose from {', '.join(ATTACKS)}")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) \
            or not 0 <= fraction < 1:
        raise ConfigError(f"attackers must be a fraction in [0, 1), got {fraction!r}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float)
                              or not np.isfinite(scale) or scale <= 0):
        raise ConfigError(f"attack_scale must be a finite number > 0, got {scale!r}")
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise ConfigError(f"backdoor_target must be a class index >= 0, got {target!r}")


@dataclass(frozen=True, slots=True)
class Attack:
    """What the attacking clients do; ``clients`` holds their indices (sorted)."""

    kind: str
    clients: frozenset[int]
    scale: float
    target: int = 0

    @classmethod
    def draw(cls, kind: str, *, fraction: float, num_clients: int, seed: int,
             scale: float | None = None, target: int = 0) -> Attack:
        check_attack(kind, fraction, scale, target)
        count = 0 if kind == "none" else round(fraction * num_clients)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA77AC4]))
        chosen = rng.choice(num_clients, size=count, replace=False)
        return cls(kind, frozenset(int(k) for k in chosen),
                   _DEFAULT_SCALE[kind] if scale is None else float(scale), target)

    @property
    def active(self) -> bool:
        return bool(self.clients)

    @property
    def alters_updates(self) -> bool:
        """The attack rewrites the attackers' updates (not only their data)."""
        return self.active and (self.kind in ("sign_flip", "scale") or self.scale != 1.0)

    def factor(self, client: int) -> float:
        """What the update of ``client`` is multiplied by before it is sent."""
        if client not in self.clients:
            return 1.0
        return -self.scale if self.kind == "sign_flip" else self.scale

    def poison(self, ds: Dataset, order: npt.NDArray[np.int64],
               offsets: npt.NDArray[np.int64], seed: int) -> Dataset:
        """``ds`` with the attackers' training rows poisoned (a copy; ``ds`` is untouched).
        Only the data attacks change anything; each row belongs to one client."""
        if not self.active or self.kind not in ("label_flip", "backdoor"):
            return ds
        if self.kind == "backdoor" and not 0 <= self.target < ds.num_classes:
            raise ConfigError(f"backdoor_target {self.target} is not a class of "
                              f"{ds.name!r} (0..{ds.num_classes - 1})")
        rows = np.concatenate([order[offsets[k]:offsets[k + 1]] for k in sorted(self.clients)])
        x, y = ds.x_train, ds.y_train.copy()
        if self.kind == "label_flip":
            y[rows] = ds.num_classes - 1 - y[rows]
        else:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBAC4D0]))
            stamped = rows[rng.random(rows.size) < BACKDOOR_SHARE]
            x = ds.x_train.copy()
            x[stamped] = stamp(x[stamped], ds)
            y[stamped] = self.target
        return replace(ds, x_train=x, y_train=y)


def _trigger_mask(ds: Dataset) -> npt.NDArray[np.bool_]:
    shape = ds.input_shape
    mask = np.zeros(shape, dtype=bool)
    if len(shape) >= 2:  # an image, channels last: the bottom-right 3x3 pixels
        mask[-3:, -3:, ...] = True
    else:
        mask[-4:] = True
    return mask


def stamp(x: npt.NDArray[np.float32], ds: Dataset) -> npt.NDArray[np.float32]:
    """``x`` (rows of ``ds``'s shape) with the backdoor trigger stamped on."""
    out = x.copy()
    out[:, _trigger_mask(ds)] = float(ds.x_train.max())
    return out


def backdoor_success(model: torch.nn.Module, ds: Dataset, target: int) -> float:
    """The share of test examples whose label is not ``target`` that the trigger turns
    into ``target``: the backdoor's success rate."""
    from privml.train import predict_proba

    keep = ds.y_test != target
    if not keep.any():
        return float("nan")
    pred = predict_proba(model, stamp(ds.x_test[keep], ds)).argmax(axis=1)
    return float(np.mean(pred == target))

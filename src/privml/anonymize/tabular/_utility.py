"""How much a release lost: generalisation loss (GCP/NCP), discernibility, average class
size, non-uniform entropy, and the accuracy of a classifier trained on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]

from ._models import Generalised, factorize

__all__ = ["Utility", "classification_utility", "utility"]


@dataclass(frozen=True, slots=True)
class Utility:
    """``gcp``: mean normalised generalisation of the QI cells (0 raw, 1 all ``*``; a
    suppressed cell counts 1). ``discernibility``: sum of squared class sizes, each suppressed
    record costing the table size. ``c_avg``: (records kept / classes) / k, 1 is ideal.
    ``nonuniform_entropy``: bits needed to recover the raw QI values from the released ones,
    ``-sum log2 P(raw | released)`` with P taken over the table. ``classification``: raw and
    anonymised test accuracy of one model, when a target was given."""

    gcp: float
    discernibility: float
    c_avg: float
    nonuniform_entropy: float
    classification: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def utility(raw: pd.DataFrame, gen: Generalised, qi: Sequence[str], k: int) -> Utility:
    n = len(raw)
    kept = ~gen.suppressed
    n_supp = int(gen.suppressed.sum())
    sizes = np.bincount(gen.classes[kept])
    sizes = sizes[sizes > 0]
    disc = float((sizes.astype(np.float64) ** 2).sum() + n_supp * n)
    c_avg = float((n - n_supp) / len(sizes) / k) if len(sizes) else 0.0
    return Utility(
        float(gen.loss.mean()) if gen.loss.size else 0.0,
        disc,
        c_avg,
        _nonuniform_entropy(raw, gen, qi),
    )


def _nonuniform_entropy(raw: pd.DataFrame, gen: Generalised, qi: Sequence[str]) -> float:
    """``-sum log2 P(raw | released)`` over the QI cells, P counted over the table. Released
    labels are factorised per class (a row's label is its class's), raw values per row."""
    bits = 0.0
    for col in qi:
        raw_codes = factorize(raw[col])[0]
        rel_codes = factorize(gen.class_labels[col])[0][gen.classes]
        pair = rel_codes * (int(raw_codes.max()) + 1) + raw_codes
        pair_inv = pd.factorize(pair)[0]
        pair_n = np.bincount(pair_inv)
        rel_n = np.bincount(rel_codes)
        p = pair_n[pair_inv] / rel_n[rel_codes]
        bits -= float(np.log2(p).sum())
    return bits


def classification_utility(
    raw: pd.DataFrame,
    released: pd.DataFrame,
    qi: Sequence[str],
    target: str,
    *,
    seed: int = 0,
    test_size: float = 0.3,
) -> dict[str, Any]:
    """Train one decision tree on the raw and one on the released one-hot QIs, with the same
    train/test split of the same rows, and report both test accuracies."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    y = raw[target].astype(str).to_numpy()
    idx_train, idx_test = train_test_split(
        np.arange(len(raw)), test_size=test_size, random_state=seed
    )
    scores = {}
    for name, frame in (("raw", raw), ("anonymised", released)):
        x = frame[list(qi)].astype(str).to_numpy()
        enc = OneHotEncoder(handle_unknown="ignore")
        x_train = enc.fit_transform(x[idx_train])
        clf = DecisionTreeClassifier(min_samples_leaf=5, random_state=seed)
        clf.fit(x_train, y[idx_train])
        scores[name] = float(clf.score(enc.transform(x[idx_test]), y[idx_test]))
    return {
        "target": target,
        "model": "DecisionTreeClassifier(min_samples_leaf=5) on one-hot QIs",
        "raw_accuracy": scores["raw"],
        "anonymised_accuracy": scores["anonymised"],
        "test_rows": len(idx_test),
    }

"""The release path: labels kept per class, the per-class check (measure_release) against the
per-row checker (measure), and utility figures pinned to those of the per-row implementation
they replaced."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml.anonymize.tabular import anonymize_table, load_hierarchies, measure
from privml.anonymize.tabular._models import (
    Generalised,
    PrivacyModel,
    encode_sensitive,
    equivalence_classes,
    measure_release,
)
from privml.anonymize.tabular._mondrian import _distinct
from privml.anonymize.tabular._table import _hierarchies, _run
from privml.anonymize.tabular._utility import utility

from .test_tabular_anonymize import HIER, QI, patients

SA = "diagnosis"
RUNS = [
    {"algorithm": "mondrian", "k": 5, "l": 2},
    {"algorithm": "mondrian", "k": 4, "hierarchies": HIER},
    {"algorithm": "fulldomain", "k": 6, "hierarchies": HIER, "suppression": 0.05},
]
# (gcp, discernibility, c_avg, nonuniform entropy) of patients(3, 300) for RUNS, from the
# per-row implementation (labels per row, np.unique over rows) this one replaced
PINNED = [
    (0.03882185990338164, 2132.0, 1.3333333333333335, 979.8678859388855),
    (0.024685645272601798, 1800.0, 1.4150943396226414, 1007.2339112386901),
    (0.0725443409247757, 5483.0, 2.1376811594202896, 1489.2299480289587),
]


def per_row_utility(
    raw: pd.DataFrame, released: pd.DataFrame, gen: Generalised, qi: Sequence[str], k: int
) -> tuple[float, float, float, float]:
    """The replaced implementation, on the released table's per-row labels."""
    n = len(raw)
    kept = ~gen.suppressed
    n_supp = int(gen.suppressed.sum())
    kept_classes = np.unique(gen.classes[kept])
    sizes = np.bincount(gen.classes[kept])
    sizes = sizes[sizes > 0]
    disc = float((sizes.astype(np.float64) ** 2).sum() + n_supp * n)
    c_avg = float((n - n_supp) / len(kept_classes) / k) if len(kept_classes) else 0.0
    bits = 0.0
    for col in qi:
        raw_codes = pd.factorize(raw[col], use_na_sentinel=False)[0].astype(np.int64)
        rel_codes = pd.factorize(released[col])[0].astype(np.int64)
        pair = rel_codes * (int(raw_codes.max()) + 1) + raw_codes
        _, pair_inv, pair_n = np.unique(pair, return_inverse=True, return_counts=True)
        rel_n = np.bincount(rel_codes)
        p = pair_n[pair_inv.reshape(-1)] / rel_n[rel_codes]
        bits -= float(np.log2(p).sum())
    return float(gen.loss.mean()), disc, c_avg, bits


def release(df: pd.DataFrame, run: dict[str, object]) -> tuple[pd.DataFrame, Generalised]:
    """The facade's output and the Generalised it was built from (rebuilt the same way)."""
    kw = {k: v for k, v in run.items() if k not in ("algorithm", "hierarchies")}
    model = PrivacyModel(**kw)  # type: ignore[arg-type]
    hs = _hierarchies(run.get("hierarchies"), {*QI, SA})  # type: ignore[arg-type]
    sens = encode_sensitive(df, SA, hs.get(SA))
    alg = str(run["algorithm"])
    gen = _run(df, QI, sens, model, hs=hs, algorithm=alg, search="flash", progress=None)
    out, _ = anonymize_table(df, qi=QI, sensitive=SA, **run)  # type: ignore[arg-type]
    return out, gen


@pytest.mark.parametrize("i", range(len(RUNS)))
def test_utility_is_pinned_to_the_per_row_implementation(i: int) -> None:
    df = patients(3, 300)
    out, gen = release(df, RUNS[i])
    for col in QI:
        assert (pd.Series(gen.labels(col), dtype=object) == out[col]).all()
    u = utility(df, gen, QI, int(RUNS[i]["k"]))  # type: ignore[call-overload]
    got = (u.gcp, u.discernibility, u.c_avg, u.nonuniform_entropy)
    assert got == PINNED[i]
    assert got == per_row_utility(df, out, gen, QI, int(RUNS[i]["k"]))  # type: ignore[call-overload]
    _, rep = anonymize_table(df, qi=QI, sensitive=SA, **RUNS[i])  # type: ignore[arg-type]
    assert (rep.utility.gcp, rep.utility.discernibility) == PINNED[i][:2]


@pytest.mark.parametrize("i", range(len(RUNS)))
def test_measure_release_equals_measure_of_the_table(i: int) -> None:
    df = patients(4, 300)
    out, gen = release(df, RUNS[i])
    hs = RUNS[i].get("hierarchies")
    h = None if hs is None else load_hierarchies(hs)[SA]  # type: ignore[arg-type]
    sens = encode_sensitive(out, SA, h)
    for include in (True, False):
        got = measure_release(gen, QI, sens, include_suppressed=include)
        assert got == measure(out, QI, SA, sensitive_hierarchy=h, include_suppressed=include)


def test_classes_with_equal_labels_are_one_class() -> None:
    """Two algorithm classes that print the same labels (a root class beside the suppressed
    rows, equal labels of different nodes) are one class of the released table."""
    labels = {
        "a": np.array(["*", "x", "*", "x"], dtype=object),
        "b": np.array(["*", "y", "*", "z"], dtype=object),
    }
    classes = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, 0], dtype=np.int64)
    gen = Generalised(labels, np.zeros((10, 2)), classes, classes == 0, {})
    table = pd.DataFrame({c: gen.labels(c) for c in "ab"})
    table["s"] = list("pqrspqrspq")
    sens = encode_sensitive(table, "s")
    for include in (True, False):
        got = measure_release(gen, ["a", "b"], sens, include_suppressed=include)
        assert got == measure(table, ["a", "b"], "s", include_suppressed=include)
    assert measure_release(gen, ["a", "b"], sens, include_suppressed=True).classes == 3


def test_generalised_refuses_labels_not_one_per_class() -> None:
    with pytest.raises(ValueError, match="2 labels"):
        Generalised(
            {"a": np.array(["x", "y"], dtype=object)},
            np.zeros((3, 1)),
            np.array([0, 1, 2]),
            np.zeros(3, dtype=bool),
            {},
        )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["*", "a", "b", 1, 2.5, None]), st.sampled_from(["*", "c"])),
        min_size=1,
        max_size=40,
    )
)
def test_equivalence_classes_group_equal_tuples(rows: list[tuple[object, str]]) -> None:
    """The mixed-radix grouping makes the classes np.unique over the code rows made."""
    df = pd.DataFrame(rows, columns=["p", "q"], dtype=object)
    ids, n = equivalence_classes(df, ["p", "q"])
    codes = [pd.factorize(df[c], use_na_sentinel=False)[0] for c in ("p", "q")]
    _, want = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    pairs = set(zip(ids.tolist(), want.reshape(-1).tolist(), strict=True))
    assert n == int(want.max()) + 1 == len(pairs) == len(set(ids.tolist()))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2999)), min_size=1, max_size=60))
def test_distinct_counts_per_segment_both_ways(rows: list[tuple[int, int]]) -> None:
    """Mondrian's width of a categorical QI: distinct codes per partition, from a presence
    table (few codes) or by sorting (many codes); both agree with a set per segment."""
    seg = np.array(sorted(s for s, _ in rows), dtype=np.int64)
    codes = np.array([c for _, c in rows], dtype=np.int64)
    want = [len({c for s2, c in zip(seg, codes, strict=True) if s2 == s}) for s in range(6)]
    for n_codes in (3000, 10**7):  # 6 x 10**7 exceeds the presence table's bound
        assert _distinct(codes, seg, 6, n_codes).tolist() == want

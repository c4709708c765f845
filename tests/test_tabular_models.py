"""The checker (measure), the EMDs and hierarchy parsing, against pycanon and by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pycanon import anonymity

from privml._exceptions import ConfigError
from privml.anonymize import tabular
from privml.anonymize.tabular import Hierarchy, compile_column, load_hierarchies, measure

QI = ["age", "zip", "sex"]


def released_table(seed: int, n: int = 120, numeric_sa: bool = False) -> pd.DataFrame:
    """A table as a release might look: few QI labels, a '*' class, a sensitive column."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.choice(["[20-29]", "[30-39]", "[40-49]"], n),
            "zip": rng.choice(["130**", "148**"], n),
            "sex": rng.choice(["M", "F"], n),
            "diagnosis": rng.choice(["flu", "hiv", "cold", "cancer"], n, p=[0.4, 0.1, 0.3, 0.2]),
            "income": rng.choice([10, 20, 35, 50, 80], n),
        }
    )
    df.loc[: n // 10, QI] = "*"
    return df


def test_public_api_matches_all() -> None:
    public = {n for n in dir(tabular) if not n.startswith("_")}
    assert set(tabular.__all__) == public - {
        "_fulldomain",
        "_hierarchy",
        "_models",
        "_mondrian",
        "_table",
        "_utility",
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measure_matches_pycanon(seed: int) -> None:
    df = released_table(seed)
    for sa, kind_col in (("diagnosis", "equal"), ("income", "ordered")):
        got = measure(df, QI, sa, include_suppressed=True)
        assert got.k == anonymity.k_anonymity(df, QI)
        assert got.l_distinct == anonymity.l_diversity(df, QI, [sa])
        assert math.floor(got.l_entropy + 1e-9) == anonymity.entropy_l_diversity(df, QI, [sa])
        assert got.t == pytest.approx(anonymity.t_closeness(df, QI, [sa]), abs=1e-12), kind_col


def test_measure_leaves_out_the_suppressed_class_by_default() -> None:
    df = released_table(3)
    n_supp = int((df[QI] == "*").all(axis=1).sum())
    got = measure(df, QI, "diagnosis")
    kept = df[~(df[QI] == "*").all(axis=1)].reset_index(drop=True)
    assert got.suppressed == n_supp > 0
    assert got.k == anonymity.k_anonymity(kept, QI)
    assert got.l_distinct == anonymity.l_diversity(kept, QI, ["diagnosis"])
    assert got.classes == kept.groupby(QI).ngroups


@settings()
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 4)),
        min_size=2,
        max_size=40,
    )
)
def test_measure_matches_pycanon_on_random_tables(rows: list[tuple[int, int, int]]) -> None:
    df = pd.DataFrame(rows, columns=["a", "b", "s"])
    assume(df["s"].nunique() > 1)  # pycanon's ordered EMD divides by (values - 1)
    df["a"] = df["a"].map({0: "x", 1: "y", 2: "z"})
    df["cat"] = df["s"].map(lambda v: f"v{v}")
    for sa in ("s", "cat"):
        got = measure(df, ["a", "b"], sa, include_suppressed=True)
        assert got.k == anonymity.k_anonymity(df, ["a", "b"])
        assert got.l_distinct == anonymity.l_diversity(df, ["a", "b"], [sa])
        assert got.t == pytest.approx(anonymity.t_closeness(df, ["a", "b"], [sa]), abs=1e-12)


def test_hierarchical_emd_flat_hierarchy_is_equal_distance() -> None:
    df = released_table(4)
    flat = Hierarchy(levels=({v: "*" for v in ["flu", "hiv", "cold", "cancer"]},))
    got = measure(df, QI, "diagnosis", sensitive_hierarchy=flat, include_suppressed=True)
    assert got.t == pytest.approx(anonymity.t_closeness(df, QI, ["diagnosis"]), abs=1e-12)


def test_hierarchical_emd_by_hand() -> None:
    # Li et al.'s example shape: two subtrees {flu, cold} and {hiv, cancer}, height 2.
    h = Hierarchy(levels=({"flu": "resp", "cold": "resp", "hiv": "serious", "cancer": "serious"},))
    sa = ["flu", "cold", "hiv", "cancer"] * 2
    df = pd.DataFrame({"q": ["a"] * 4 + ["b"] * 4, "dx": sa})
    df.loc[:3, "dx"] = ["flu", "flu", "cold", "cold"]  # class a: all respiratory
    # P = {flu .375, cold .375, hiv .125, cancer .125}; class a Q = {.5, .5, 0, 0}.
    # Level 1: within resp, extras +.125/+.125 (no negatives): 0. Within serious, -.125/-.125.
    # Root (h=2/2): resp extra +.25, serious -.25 -> .25 moved at distance 1.
    got = measure(df, ["q"], "dx", sensitive_hierarchy=h)
    assert got.t == pytest.approx(0.25)
    # equal distance would be .5 * (.125+.125+.125+.125) = .25 too; a finer split differs:
    df2 = pd.DataFrame({"q": ["a", "a", "b", "b"], "dx": ["flu", "cold", "hiv", "cancer"]})
    assert measure(df2, ["q"], "dx", sensitive_hierarchy=h).t == pytest.approx(0.5)
    df3 = pd.DataFrame({"q": ["a", "a", "b", "b"], "dx": ["flu", "hiv", "cold", "cancer"]})
    # each class holds one of each subtree: mass moves only inside subtrees (distance 1/2)
    assert measure(df3, ["q"], "dx", sensitive_hierarchy=h).t == pytest.approx(0.25)
    assert measure(df3, ["q"], "dx").t == pytest.approx(0.5)


def test_hierarchy_kinds_compile() -> None:
    hs = load_hierarchies(
        {
            "hierarchies": {
                "sex": {"levels": [{"M": "*", "F": "*"}]},
                "zip": {"rows": [[13053, "1305*", "130**"], [13068, "1306*", "130**"]]},
                "age": {"widths": [10, 20], "start": 20},
                "bmi": {"cuts": [[0, 18.5, 25, 60]]},
            }
        }
    )
    age = compile_column("age", pd.Series([20, 29, 30, 55]), hs["age"])
    labels = np.asarray(age.labels, dtype=object)
    assert list(labels[age.nodes[age.leaf, 1]]) == ["[20-29]", "[20-29]", "[30-39]", "[50-59]"]
    assert list(labels[age.nodes[age.leaf, 2]]) == ["[20-39]", "[20-39]", "[20-39]", "[40-59]"]
    assert age.height == 3  # two interval levels and the root
    zipc = compile_column("zip", pd.Series([13053, 13068]), hs["zip"])
    assert [zipc.labels[i] for i in zipc.nodes[zipc.leaf, 2]] == ["130**", "130**"]
    bmi = compile_column("bmi", pd.Series([17.0, 22.5, 60.0]), hs["bmi"])
    assert [bmi.labels[i] for i in bmi.nodes[bmi.leaf, 1]] == ["[0-18.5)", "[18.5-25)", "[25-60)"]


def test_hierarchy_yaml_file(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "h.yaml"  # type: ignore[operator]
    path.write_text("sex:\n  levels:\n    - {M: '*', F: '*'}\nage:\n  widths: [5, 10]\n")
    hs = load_hierarchies(path)
    assert hs["age"].widths == (5.0, 10.0)
    assert hs["sex"].levels[0] == {"M": "*", "F": "*"}


def test_hierarchy_errors_name_value_and_column() -> None:
    h = load_hierarchies({"zip": {"levels": [{"13053": "130**"}]}})["zip"]
    with pytest.raises(ConfigError, match=r"column 'zip'.*value '14850'"):
        compile_column("zip", pd.Series([13053, 14850]), h)
    with pytest.raises(ConfigError, match="value 'top2' at level 3"):
        bad = Hierarchy(levels=({"a": "x", "b": "y"}, {"x": "top1", "y": "top2"}, {"top1": "*"}))
        compile_column("c", pd.Series(["a", "b"]), bad)
    with pytest.raises(ConfigError, match=r"not a tree: .\[10-19\]. has two parents"):
        compile_column("v", pd.Series([5, 12, 17]), Hierarchy(cuts=((0, 10, 20), (0, 15, 20))))
    with pytest.raises(ConfigError, match="do not cover value 99"):
        compile_column("age", pd.Series([10, 99]), Hierarchy(cuts=((0, 50),)))
    with pytest.raises(ConfigError, match="unknown keys"):
        load_hierarchies({"age": {"width": [5]}})
    with pytest.raises(ConfigError, match="maps to both"):
        load_hierarchies({"z": {"rows": [["a", "x"], ["a", "y"]]}})

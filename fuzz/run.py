"""Run every fuzz target for a bounded time and record what happened (``make fuzz``).

Each target (``fuzz/fuzz_<name>.py``) runs in its own process for ``FUZZ_SECONDS`` (default
60) from a corpus seeded by privml's own encoders (``runs/fuzz/corpus/<name>/``, kept
between runs, git-ignored). A crash stops libFuzzer: its input is copied to
``tests/fuzz_corpus/<name>/`` (the regression test replays every file there) and the target
is restarted for the time left, at most ``MAX_CRASHES`` times. The figures go to
``fuzz/results.json`` and to the section of ``SECURITY.md`` between the fuzz markers (for
a full run of at least 60 s a target; shorter or partial runs write ``runs/fuzz/results.json``
only).

    python fuzz/run.py [TARGET ...]      FUZZ_SECONDS=5 python fuzz/run.py params
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import targets  # noqa: E402  (the shared target definitions, next to this file)

WORK = ROOT / "runs" / "fuzz"
REGRESSION = ROOT / "tests" / "fuzz_corpus"
RESULTS = HERE / "results.json"
SECURITY = ROOT / "SECURITY.md"
START, END = "<!-- fuzz:start -->", "<!-- fuzz:end -->"
MAX_CRASHES = 5
RECORD_SECONDS = 60
RSS_LIMIT_MB = 2048
PER_INPUT_TIMEOUT_S = 10  # one input running longer is a hang: libFuzzer writes timeout-*
MAX_LEN = {"store": 8192, "tfjs": 8192, "params": 8192}  # others: 4096
ARTIFACTS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


def _executions(log: str) -> int:
    stat = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    if stat:
        return int(stat[-1])
    # a crash ends the run before the final stats: take the last status line (#N ...)
    lines = re.findall(r"^#(\d+)\s", log, flags=re.MULTILINE)
    return int(lines[-1]) if lines else 0


def _error_of(log: str) -> str:
    """The exception line of the Python traceback atheris printed, or libFuzzer's reason."""
    if "Uncaught Python exception: ===" in log:
        tail = log.split("Uncaught Python exception: ===", 1)[1]
        first = next((line.strip() for line in tail.splitlines() if line.strip()), "")
        if first:
            return first[:200]
    found = re.search(r"ERROR: libFuzzer: ([^\n]+)", log)
    return found.group(1).strip()[:200] if found else "unknown (see the log)"


def _run_once(name: str, seconds: int, corpus: Path, artifacts: Path, log: Path) -> tuple[
        int, int, list[Path]]:
    before = set(artifacts.iterdir())
    cmd = [sys.executable, str(HERE / f"fuzz_{name}.py"), str(corpus),
           f"-max_total_time={seconds}", f"-rss_limit_mb={RSS_LIMIT_MB}",
           f"-timeout={PER_INPUT_TIMEOUT_S}", f"-max_len={MAX_LEN.get(name, 4096)}",
           f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                              timeout=seconds + 300, check=False)
    new = sorted(p for p in set(artifacts.iterdir()) - before if p.name.startswith(ARTIFACTS))
    return proc.returncode, _executions(log.read_text(errors="replace").rsplit("$ ", 1)[-1]), new


def _reproduces(name: str, path: Path) -> bool:
    """Whether the input also crashes the target in a plain interpreter (no atheris): the
    instrumentation itself can misbehave, and the regression test runs without it."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import targets; "
            "targets.TARGETS[sys.argv[2]](open(sys.argv[3], 'rb').read())")
    proc = subprocess.run([sys.executable, "-c", code, str(HERE), name, str(path)],
                          capture_output=True, cwd=ROOT, timeout=300, check=False)
    return proc.returncode != 0


def fuzz_target(name: str, seconds: int) -> dict[str, object]:
    corpus, artifacts = WORK / "corpus" / name, WORK / "artifacts" / name
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(targets.seeds(name)):
        (corpus / f"seed-{i}").write_bytes(seed)
    log = WORK / f"{name}.log"
    log.write_text("")
    executions, crashes, runs = 0, [], 0
    deadline = time.monotonic() + seconds
    while (left := int(deadline - time.monotonic())) >= 2 and len(crashes) < MAX_CRASHES:
        rc, execs, new = _run_once(name, left, corpus, artifacts, log)
        executions, runs = executions + execs, runs + 1
        if rc == 0 and not new:
            break
        if not new:  # it failed without an input to blame: start-up error, not a finding
            raise SystemExit(f"fuzz target {name} failed (rc {rc}); see {log}")
        error = _error_of(log.read_text(errors="replace").rsplit("$ ", 1)[-1])
        for path in new:
            dest = REGRESSION / name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            again = _reproduces(name, dest)
            crashes.append({"input": str(dest.relative_to(ROOT)), "error": error,
                            "reproduces_without_atheris": again})
            print(f"  {name}: CRASH {error} -> {dest.relative_to(ROOT)}"
                  f"{'' if again else ' (does NOT reproduce without atheris)'}", flush=True)
    return {"target": name, "seconds": seconds, "executions": executions, "runs": runs,
            "corpus_files": sum(1 for _ in corpus.iterdir()), "crashes": crashes}


def _markdown(results: dict[str, object]) -> str:
    rows = results["targets"]
    assert isinstance(rows, list)
    lines = [
        START,
        "## Fuzzing",
        "",
        f"`make fuzz` ran {len(rows)} atheris targets (`fuzz/`) for {results['seconds']} s "
        f"each on {results['date']} (atheris {results['atheris']}, Python "
        f"{results['python']}, {results['cpus']} CPUs): {results['executions']:,} "
        f"executions in all, {results['crashes']} crash(es) found "
        f"({results['crashes_reproduced']} reproduced without atheris). Every crashing input is "
        "kept under `tests/fuzz_corpus/<target>/` with hand-made nasty inputs, and "
        "`tests/test_fuzz_corpus.py` (in `make test`) replays them all.",
        "",
        "| target | parser(s) of untrusted input | executions | crashes |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| `{r['target']}` | {_WHAT[r['target']]} | {r['executions']:,} | "
                     f"{len(r['crashes'])} |")
    found = [c for r in rows for c in r["crashes"]]
    if found:
        lines += ["", "Crashes found in this run (each has its input as a regression test):",
                  ""]
        lines += [f"- `{c['input']}`: {c['error']}"
                  + ("" if c["reproduces_without_atheris"] else
                     " (an artifact of atheris: does not reproduce without it)")
                  for c in found]
    kept = [p for p in REGRESSION.glob("*/*") if p.is_file()]
    crashes = sum(p.name.startswith("crash-") for p in kept)
    lines += ["", f"The regression corpus holds {crashes} crashing inputs found by earlier "
              f"runs, all fixed, and {len(kept) - crashes} other (hand-made) inputs; "
              "`tests/fuzz_corpus/README.md` lists every crash found (by the fuzzer or by "
              "a hand-made input) and its fix. Figures: `fuzz/results.json`.", END]
    return "\n".join(lines) + "\n"


_WHAT = {
    "params": "`privml.params.decode` (safetensors, with and without a spec), model files",
    "secagg": "SecAgg+ message decoding (and that a decoded message re-encodes identically)",
    "store": "sealed segments (`open_stream`), `file://` sealed values, typed values",
    "idx": "IDX files, raw and gzip (`read_idx`)",
    "csv": "CSV datasets (`load_csv`, `read_feature_csv`)",
    "requests": "`RunRequest`, `EvaluationReport`, update metadata headers, `Authorization`",
    "tfjs": "browser weight uploads, TF.js `model.json` folders, model specs",
    "policy": "anonymization policies and generalisation hierarchies (YAML)",
}


def write_security(section: str) -> None:
    text = SECURITY.read_text() if SECURITY.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    SECURITY.write_text(text)


def main(argv: list[str]) -> int:
    import atheris

    names = argv or list(targets.TARGETS)
    unknown = [n for n in names if n not in targets.TARGETS]
    if unknown:
        raise SystemExit(f"unknown fuzz target(s) {unknown}; known: {list(targets.TARGETS)}")
    seconds = int(os.environ.get("FUZZ_SECONDS", "60"))
    rows = []
    for name in names:
        print(f"fuzzing {name} for {seconds} s", flush=True)
        row = fuzz_target(name, seconds)
        print(f"  {name}: {row['executions']:,} executions, {len(row['crashes'])} crash(es)",
              flush=True)
        rows.append(row)
    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": seconds, "atheris": getattr(atheris, "__version__", "2.3.0"),
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "targets": rows, "executions": sum(int(r["executions"]) for r in rows),
        "crashes": sum(len(r["crashes"]) for r in rows),
        "crashes_reproduced": sum(1 for r in rows for c in r["crashes"]
                                  if c["reproduces_without_atheris"]),
    }
    # Only a full run at the recorded bound replaces the record; a quick or partial one
    # (FUZZ_SECONDS=5, one target) leaves its figures under runs/fuzz/.
    recorded = set(names) == set(targets.TARGETS) and seconds >= RECORD_SECONDS
    out = RESULTS if recorded else WORK / "results.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    if recorded:
        write_security(_markdown(results))
    print(f"{len(rows)} targets, {results['executions']:,} executions, "
          f"{results['crashes']} crash(es); figures in {out.relative_to(ROOT)}")
    return 1 if results["crashes_reproduced"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The atheris side of a fuzz target: instrument privml, check the seeds, fuzz.

Run by ``fuzz/run.py`` (``make fuzz``) as ``python fuzz/fuzz_<name>.py CORPUS_DIR
-max_total_time=S ...``; any libFuzzer flag passes through. An input that makes the target
raise anything but the errors its parser documents is a crash: libFuzzer writes it to
``-artifact_prefix`` and exits non-zero.
"""

from __future__ import annotations

import sys

import atheris


def main(name: str) -> None:
    # Coverage feedback from privml's own code. Not from PyYAML: atheris 2.3.0's bytecode
    # rewriting breaks its scanner on Python 3.11 (an AttributeError that uninstrumented
    # PyYAML never raises: tests/fuzz_corpus/policy/atheris-false-positive-yaml).
    with atheris.instrument_imports(include=["privml", "targets"]):
        import targets

        target = targets.TARGETS[name]
        for seed in targets.seeds(name):  # imports every module the target touches
            if not target(seed):
                raise SystemExit(f"fuzz target {name}: a seed made by privml is refused")

    def one_input(data: bytes) -> None:
        target(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

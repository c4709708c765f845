"""Replays every input under tests/fuzz_corpus/<target>/ through the fuzz target's own entry
(fuzz/targets.py, shared with the atheris scripts): each must be accepted or refused with
the parser's documented error, never crash. Crashes `make fuzz` finds land there, and so do
hand-made nasty inputs. Needs no atheris."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"


def _load_targets():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("privml_fuzz_targets",
                                                  ROOT / "fuzz" / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


targets = _load_targets()
CASES = sorted(p for p in CORPUS.glob("*/*") if p.is_file())


def test_every_target_has_a_regression_corpus() -> None:
    assert set(targets.TARGETS) == {p.name for p in CORPUS.iterdir() if p.is_dir()}
    for name in targets.TARGETS:
        assert len(list((CORPUS / name).iterdir())) >= 3, name
    assert {f"fuzz_{n}.py" for n in targets.TARGETS} <= {p.name for p in (ROOT / "fuzz")
                                                          .iterdir()}


# Odd but valid: every other input here must be refused (with the documented error), so a
# fix that stops a crash by accepting garbage fails too.
VALID = {"csv/one-class-two-rows", "idx/zero-size", "requests/meta-metrics-bool-and-int",
         "tfjs/spec-huge-dense"}


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_input_is_refused_cleanly(path: Path) -> None:
    # a documented refusal returns False, a valid input True; anything else is the crash
    accepted = targets.TARGETS[path.parent.name](path.read_bytes())
    assert accepted == (f"{path.parent.name}/{path.name}" in VALID)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_seeds_are_accepted(name: str) -> None:
    """The fuzzers start from valid inputs made by privml's own encoders."""
    for seed in targets.seeds(name):
        assert targets.TARGETS[name](seed), seed[:60]

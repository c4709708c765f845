"""Fuzz target: the HTTP edge: RunRequest, EvaluationReport, update metadata headers, Authorization.

``python fuzz/fuzz_requests.py CORPUS [libFuzzer flags]``; the input handling is
``targets.requests`` (shared with tests/test_fuzz_corpus.py).
"""

from _harness import main

if __name__ == "__main__":
    main("requests")

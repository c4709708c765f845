"""Fuzz target: SecAgg+ message decoding (privml.secagg.decode), which must also be canonical.

``python fuzz/fuzz_secagg.py CORPUS [libFuzzer flags]``; the input handling is
``targets.secagg`` (shared with tests/test_fuzz_corpus.py).
"""

from _harness import main

if __name__ == "__main__":
    main("secagg")

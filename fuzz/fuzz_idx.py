"""Fuzz target: the IDX reader (privml.data.read_idx), raw and gzip.

``python fuzz/fuzz_idx.py CORPUS [libFuzzer flags]``; the input handling is
``targets.idx`` (shared with tests/test_fuzz_corpus.py).
"""

from _harness import main

if __name__ == "__main__":
    main("idx")

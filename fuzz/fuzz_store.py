"""Fuzz target: the sealed segmented format (open_stream), file:// sealed values, typed values.

``python fuzz/fuzz_store.py CORPUS [libFuzzer flags]``; the input handling is
``targets.store`` (shared with tests/test_fuzz_corpus.py).
"""

from _harness import main

if __name__ == "__main__":
    main("store")

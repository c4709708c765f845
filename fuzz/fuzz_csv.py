"""Fuzz target: the CSV readers (privml.data.load_csv, read_feature_csv).

``python fuzz/fuzz_csv.py CORPUS [libFuzzer flags]``; the input handling is
``targets.csv`` (shared with tests/test_fuzz_corpus.py).
"""

from _harness import main

if __name__ == "__main__":
    main("csv")

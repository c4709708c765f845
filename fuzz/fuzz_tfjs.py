"""Fuzz target: TF.js weights uploaded by browsers, model.json folders (read_tfjs) and model specs.

``python fuzz/fuzz_tfjs.py CORPUS [libFuzzer flags]``; the input handling is
``targets.tfjs`` (shared with tests/test_fuzz_corpus.py).
"""

from _harness import main

if __name__ == "__main__":
    main("tfjs")

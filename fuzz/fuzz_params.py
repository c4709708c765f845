"""Fuzz target: privml.params.decode (safetensors, with a spec and without), model files.

``python fuzz/fuzz_params.py CORPUS [libFuzzer flags]``; the input handling is
``targets.params`` (shared with tests/test_fuzz_corpus.py).
"""

from _harness import main

if __name__ == "__main__":
    main("params")

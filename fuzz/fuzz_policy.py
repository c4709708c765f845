"""Fuzz target: anonymization policies (Policy.from_yaml) and generalisation hierarchies (YAML).

``python fuzz/fuzz_policy.py CORPUS [libFuzzer flags]``; the input handling is
``targets.policy`` (shared with tests/test_fuzz_corpus.py).
"""

from _harness import main

if __name__ == "__main__":
    main("policy")

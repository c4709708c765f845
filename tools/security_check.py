"""`make security`: bandit on the source tree, and every accepted finding justified.

    python tools/security_check.py [SRC ...]        (default: src)

Two checks, both over every ``.py`` file under each SRC:

1. bandit, with ``[tool.bandit]`` of pyproject.toml, at every severity and confidence, with
   nothing skipped or excluded. A file bandit cannot parse is a failure, not a skip.
2. every ``# nosec`` comment names the bandit test ids it silences and says why, as
   ``# nosec B603  # argv list, no shell``; and every ``# noqa`` that silences a ruff
   security rule (``S###``) carries a reason after its codes. A bare ``# nosec`` would
   silence every test on its line; one without a reason leaves the next reader guessing.

Each problem is printed as ``path:line: ...``; the exit status is 1 if there is any, else 0.
``tests/test_static_analysis.py`` runs this same script on a copy of ``src/`` with a
finding planted in it.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"

_NOSEC = re.compile(r"#\s*nosec\b", re.IGNORECASE)
# `# nosec B101[, B603]  # reason`: bandit reads test ids up to the next `#`, so the reason
# after it is not mistaken for test names.
_JUSTIFIED = re.compile(r"#\s*nosec\s+B\d{3}(?:\s*,\s*B\d{3})*\s+#\s*(?P<why>.*)")
_NOQA_S = re.compile(r"#\s*noqa:\s*(?P<codes>[A-Z]+\d+(?:\s*,\s*[A-Z]+\d+)*)(?P<rest>.*)")
_MIN_WORDS = 2


def bandit(srcs: list[Path]) -> tuple[list[str], int]:
    """bandit's findings as ``path:line: ...`` lines, and how many nosec comments it honoured."""
    cmd = [sys.executable, "-m", "bandit", "-c", str(CONFIG), "-r", *map(str, srcs),
           "-f", "json", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        sys.stderr.write(proc.stderr)
        return [f"bandit gave no report (exit status {proc.returncode})"], 0
    problems = [f"{r['filename']}:{r['line_number']}: {r['test_id']} "
                f"[{r['issue_severity'].lower()}/{r['issue_confidence'].lower()}] "
                f"{r['issue_text']}" for r in report["results"]]
    problems += [f"{e['filename']}: bandit could not scan it: {e['reason']}"
                 for e in report["errors"]]
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not problems):
        sys.stderr.write(proc.stderr)
        problems.append(f"bandit failed (exit status {proc.returncode})")
    return problems, int(report["metrics"]["_totals"].get("skipped_tests", 0))


def comment_problems(path: Path) -> list[str]:
    """Each ``# nosec`` / security ``# noqa`` in ``path`` without test ids and a reason."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text("utf-8")).readline))
    except (SyntaxError, tokenize.TokenError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot read its comments: {exc}"]
    out = []
    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        where = f"{path}:{tok.start[0]}"
        if (m := _NOSEC.search(tok.string)) is not None:
            just = _JUSTIFIED.match(tok.string, m.start())
            if just is None or len(just["why"].split()) < _MIN_WORDS:
                out.append(f"{where}: unjustified nosec: write `# nosec BXXX  # why it is "
                           f"safe`, not {tok.string[m.start():]!r}")
        if (q := _NOQA_S.search(tok.string)) is not None \
                and re.search(r"\bS\d{3}\b", q["codes"]) \
                and len(q["rest"].strip(" #").split()) < _MIN_WORDS:
            out.append(f"{where}: a noqa of a security rule needs a reason after its codes")
    return out


def main(argv: list[str]) -> int:
    srcs = [Path(a) for a in argv] or [ROOT / "src"]
    missing = [s for s in srcs if not s.is_dir()]
    if missing:
        print(f"no such folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    problems, accepted = bandit(srcs)
    files = sorted(p for s in srcs for p in s.rglob("*.py"))
    for path in files:
        problems += comment_problems(path)
    for line in problems:
        print(line)
    if problems:
        print(f"security: {len(problems)} problem(s); fix each, or accept it on its line with "
              "`# nosec BXXX  # why it is safe`", file=sys.stderr)
        return 1
    print(f"security: ok: bandit finds nothing in {len(files)} files; {accepted} accepted "
          "finding(s), each justified on its line")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``privml anonymize text|table``: PII found and neutralised in text files and table columns
(by a YAML policy), and tables made k-anonymous, l-diverse and t-close.

Nothing is written unless the whole job succeeds: outputs go to a temporary file in the
destination folder and are renamed into place at the end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from privml._exceptions import ConfigError
from privml.cli._app import app, err, guarded, out

anon_app = typer.Typer(
    name="anonymize", no_args_is_help=True,
    help="De-identify data: PII in text and columns; k-anonymity, l-diversity, t-closeness.")
app.add_typer(anon_app, name="anonymize")

InArg = Annotated[Path, typer.Argument(metavar="IN", help="Input file.", show_default=False)]
OutArg = Annotated[Path, typer.Argument(metavar="OUT", help="Output file (same formats).",
                                        show_default=False)]
PolicyOpt = Annotated[Path | None, typer.Option(
    "--policy", help="YAML policy: entities, recognizers, operators, columns (default: the "
    "built-in policy).", show_default=False)]
KeyFileOpt = Annotated[Path | None, typer.Option(
    "--key-file", help="The 32-byte key for hash, pseudonymize and encrypt (raw or base64; "
    "default: PRIVML_ANON_KEY).", show_default=False)]


@contextmanager
def _bar(label: str) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar driven by ``progress(stage, done, total)`` calls (total 0: not
    known yet)."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.completed:,.0f}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(label, total=None)

        def update(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"{label}: {stage}", completed=done,
                       total=total or None)

        yield update


def _csv(value: str | None) -> list[str]:
    return [] if not value else [v.strip() for v in value.split(",") if v.strip()]


@contextmanager
def _staging(dst: Path) -> Iterator[Path]:
    """A temporary file beside ``dst`` (same suffix) for an intermediate step; removed after."""
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=dst.suffix,
                                dir=dst.parent if str(dst.parent) else ".")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _print_report(report: Any) -> None:
    a, u = report.achieved, report.utility
    table = Table("measure", "requested", "achieved", title=f"{report.algorithm}, "
                  f"{report.rows:,} rows, QI: {', '.join(report.qi)}")
    req = report.requested
    table.add_row("k", str(req["k"]), str(a.k))
    if req.get("l") is not None:
        achieved_l = a.l_distinct if req.get("l_kind") == "distinct" else a.l_entropy
        table.add_row(f"l ({req.get('l_kind')})", f"{req['l']:g}", f"{achieved_l:.3g}")
    if req.get("t") is not None:
        table.add_row("t", f"{req['t']:g}", f"{a.t:.4f}")
    table.add_row("suppressed rows", f"<= {req['suppression']:.1%}", f"{a.suppressed:,}")
    table.add_row("equivalence classes", "", f"{a.classes:,}")
    table.add_row("generalisation loss (GCP)", "", f"{u.gcp:.4f}")
    table.add_row("average class size / k", "", f"{u.c_avg:.3f}")
    if u.classification:
        c = u.classification
        table.add_row("classification accuracy", f"raw {c.get('raw_accuracy', 0):.3f}",
                      f"{c.get('anonymized_accuracy', 0):.3f}")
    out.print(table)


@anon_app.command("table")
@guarded
def table_cmd(
    src: InArg, dst: OutArg,
    policy: PolicyOpt = None, key_file: KeyFileOpt = None,
    k: Annotated[int | None, typer.Option("--k", help="k-anonymity: every record shares its "
                                          "QI values with at least k-1 others.",
                                          show_default=False)] = None,
    l_value: Annotated[float | None, typer.Option(
        "--l", help="l-diversity of the sensitive column in each class.",
        show_default=False)] = None,
    l_kind: Annotated[str, typer.Option(help="distinct or entropy l-diversity.")] = "distinct",
    t: Annotated[float | None, typer.Option(
        "--t", help="t-closeness (earth mover's distance) of the sensitive column.",
        show_default=False)] = None,
    qi: Annotated[str | None, typer.Option(
        help="Quasi-identifier columns, comma-separated.", show_default=False)] = None,
    sensitive: Annotated[str | None, typer.Option(
        help="The sensitive column (for --l and --t).", show_default=False)] = None,
    hierarchies: Annotated[Path | None, typer.Option(
        help="YAML generalisation hierarchies per column.", show_default=False)] = None,
    algorithm: Annotated[str, typer.Option(help="mondrian or fulldomain.")] = "mondrian",
    suppression: Annotated[float, typer.Option(
        help="Largest fraction of rows that may be suppressed.")] = 0.0,
    target: Annotated[str | None, typer.Option(
        help="A label column: report a classifier's accuracy on raw vs anonymised QIs.",
        show_default=False)] = None,
    report: Annotated[Path | None, typer.Option(
        help="Also write the report (achieved k/l/t, utility) as JSON.",
        show_default=False)] = None,
) -> None:
    """Anonymize a CSV/Parquet (or JSONL, PII only) table: PII in its columns by --policy,
    and/or k-anonymity (--k, --qi) with l-diversity (--l, --sensitive) and t-closeness (--t)."""
    kanon = k is not None or qi is not None
    if kanon and (k is None or not _csv(qi)):
        raise ConfigError("k-anonymity needs both --k and --qi")
    if (l_value is not None or t is not None) and not kanon:
        raise ConfigError("--l and --t need --k, --qi and --sensitive")
    if not kanon:
        if policy is None:
            raise ConfigError("nothing to do: give --policy (PII) and/or --k with --qi")
        _pii_file(src, dst, policy, key_file)
        return
    if l_kind not in ("distinct", "entropy"):
        raise ConfigError(f"--l-kind is distinct or entropy, got {l_kind!r}")
    options = {"qi": _csv(qi), "k": k, "sensitive": sensitive, "l": l_value, "l_kind": l_kind,
               "t": t, "algorithm": algorithm, "hierarchies": hierarchies,
               "suppression": suppression, "target": target}
    if policy is None:
        rep = _kanon(src, dst, report, options)
    else:  # PII first (to a staging file), then k-anonymity over its output
        with _staging(dst) as stage:
            _pii_file(src, stage, policy, key_file)
            rep = _kanon(stage, dst, report, options)
    _print_report(rep)
    out.print(f"wrote {dst}" + (f" and {report}" if report else ""), highlight=False)


def _kanon(src: Path, dst: Path, report: Path | None, options: dict[str, Any]) -> Any:
    from privml.anonymize.tabular import anonymize_table_file

    with _bar("k-anonymity") as progress:
        return anonymize_table_file(src, dst, report_path=report, progress=progress,
                                    **options)


def _pii_file(src: Path, dst: Path, policy_path: Path | None, key_file: Path | None) -> None:
    """Find and neutralise PII in ``src`` (text, CSV, Parquet, JSONL) into ``dst`` under the
    policy, with a progress bar; prints what was found per type and each column's fate."""
    from privml.anonymize.text import AnonKey, Policy, anonymize_file

    policy = Policy.builtin() if policy_path is None else Policy.from_yaml(policy_path)
    key = AnonKey.from_file(key_file) if key_file is not None else AnonKey.from_env()
    with _bar("PII") as progress:
        summary = anonymize_file(src, dst, policy, key=key,
                                 progress=lambda rows: progress("rows", rows, 0))
    table = Table("entity", "replaced", title=f"{summary.rows:,} rows, "
                  f"{summary.documents:,} documents analyzed")
    for entity, count in sorted(summary.entities.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(entity, f"{count:,}")
    out.print(table)
    if summary.columns:
        out.print("columns: " + ", ".join(f"{c} ({how})" for c, how in summary.columns.items()),
                  highlight=False)
    out.print(f"wrote {dst}", highlight=False)


@anon_app.command("text")
@guarded
def text_cmd(src: InArg, dst: OutArg, policy: PolicyOpt = None,
             key_file: KeyFileOpt = None) -> None:
    """Find and neutralise PII in a text file (one document per line) or the free-text
    cells of a CSV, Parquet or JSONL file, by the policy's operator per entity type."""
    _pii_file(src, dst, policy, key_file)

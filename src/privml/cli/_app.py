"""The ``privml`` command line: ``sim``, ``demo``, ``runs`` and ``predict``.

Every refusal of bad input is one line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from privml._exceptions import PrivmlError

__all__ = ["app", "err", "guarded", "main", "out"]

app = typer.Typer(
    name="privml", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="privml: privacy-first machine learning (federated, private, encrypted, audited).")
out = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a PrivmlError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PrivmlError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    tmp.replace(path)


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def summary_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("dataset / model", f"{summary['dataset']} / {summary['model']}"),
        ("strategy", summary["strategy"]),
        ("clients (per round)", f"{summary['clients']} ({summary['per_round']})"),
        ("alpha", "iid" if summary["alpha"] is None else str(summary["alpha"])),
        ("rounds completed", f"{summary['rounds_completed']} / {summary['rounds']}"),
        ("final test accuracy", _fmt(summary["final_accuracy"], ".4f")),
        ("final test loss", _fmt(summary["final_loss"], ".4f")),
        ("seconds (total / per round)",
         f"{summary['seconds_total']:.1f} / {summary['seconds_per_round']:.3f}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command("runs")
@guarded
def runs_cmd(
    limit: Annotated[int, typer.Option(help="How many recent runs to list.")] = 20,
    db: Annotated[Path | None, typer.Option(help="Run database (default $PRIVML_HOME/runs.db).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
    = False,
) -> None:
    """List past runs with their figures."""
    from privml.sim import RunStore

    with RunStore(db) as store:
        rows = store.runs(limit=limit)
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in rows]))
        return
    if not rows:
        out.print("no runs yet: try `privml demo`")
        return
    table = Table(title="privml runs")
    for col in ("id", "started (UTC)", "kind", "dataset", "model", "strategy", "clients",
                "rounds", "accuracy", "s total", "s/round"):
        table.add_column(col, justify="right" if col in {"id", "clients", "rounds"} else "left")
    for r in rows:
        table.add_row(str(r.id), r.started_at, r.kind, r.dataset, r.model, r.strategy,
                      str(r.clients), str(r.rounds), _fmt(r.final_accuracy, ".4f"),
                      _fmt(r.seconds_total, ".1f"), _fmt(r.seconds_per_round, ".3f"))
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    app()

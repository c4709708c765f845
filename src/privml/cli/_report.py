"""``privml report RUN --html FILE``: a run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from privml._exceptions import ConfigError, DataError
from privml.cli._app import app, guarded, out


def run_id(text: str) -> int | None:
    """A run id from the command line: a whole number, or ``latest`` (None)."""
    if text.strip().lower() == "latest":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"RUN must be a run id from `privml runs` (a whole number >= 1) or "
                          f"'latest', got {text!r}")
    return value


@app.command("report")
@guarded
def report_cmd(
    run: Annotated[str, typer.Argument(metavar="RUN", help="The run's id (privml runs), or "
                                       "'latest'.", show_default=False)],
    html: Annotated[Path, typer.Option(
        "--html", metavar="FILE", help="Write the report here: one HTML file with its figures "
        "embedded, opened with no network.", show_default=False)],
    db: Annotated[Path | None, typer.Option(help="Run database (default: "
                                            "$PRIVML_HOME/runs.db).", show_default=False)]
    = None,
) -> None:
    """A run's report: its curves, configuration, privacy guarantee in plain words and the
    findings of the audits recorded with it."""
    from privml.sim import RunStore, default_db
    from privml.sim._report import write_report

    wanted = run_id(run)
    path = db if db is not None else default_db()
    if not path.is_file():  # never create an empty database just to find no run in it
        raise DataError(f"no run database at {path}: run `privml sim` or `privml demo` first")
    if html.is_dir():
        raise ConfigError(f"--html {html} is a folder; give a file name")
    with RunStore(path) as store:
        written = write_report(store, store.latest() if wanted is None else wanted, html)
    out.print(f"report: {written}", highlight=False, soft_wrap=True)

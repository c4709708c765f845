"""``privml audit deployment|config|model|deps|privacy``: findings, not first failures.

Every command prints a table of findings (id, severity, evidence, fix), can write the same
report as ``--json``, ``--sarif`` (code scanning in CI) and ``--html`` (self-contained), and
exits 1 when a finding at or above ``--fail-on`` (default: high) exists — 0 otherwise, 2 for
bad input. ``privml audit privacy`` records its report with the run it audited in the run
database; the other audits do when given ``--run ID`` (``privml report`` shows them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from privml.cli._app import app, guarded, out

audit_app = typer.Typer(
    name="audit", no_args_is_help=True,
    help="Security and privacy audits: a live deployment, a configuration, model files, "
    "dependencies, a trained model's privacy.")
app.add_typer(audit_app, name="audit")

JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.",
                                              show_default=False)]
SarifOpt = Annotated[Path | None, typer.Option(
    "--sarif", help="Write the report as SARIF 2.1.0 (code scanning).", show_default=False)]
HtmlOpt = Annotated[Path | None, typer.Option(
    "--html", help="Write a self-contained HTML report.", show_default=False)]
FailOpt = Annotated[str, typer.Option(
    "--fail-on", help="Exit 1 when a finding at or above this severity exists: critical, "
    "high, medium, low or info.")]
RunOpt = Annotated[int | None, typer.Option(
    "--run", help="Record the report with this run (privml runs) in the run database, for "
    "`privml report`.", show_default=False)]
DbOpt = Annotated[Path | None, typer.Option(
    help="Run database (default: $PRIVML_HOME/runs.db).", show_default=False)]


def _check_run(run: int | None, db: Path | None) -> None:
    """Refuse an unknown ``--run`` before auditing, not after (an audit can take minutes)."""
    if run is not None:
        from privml.sim import RunStore

        with RunStore(db) as store:
            store.run(run)


def _finish(report: object, json_path: Path | None, sarif: Path | None, html: Path | None,
            fail_on: str, *, run: int | None = None, db: Path | None = None) -> None:
    from privml.audit import AuditReport, Severity
    from privml.audit._output import print_report, to_html, to_json, to_sarif

    assert isinstance(report, AuditReport)  # nosec B101  # narrowing: typed object only to keep imports lazy
    threshold = Severity.parse(fail_on)
    print_report(report, out)
    for path, render in ((json_path, to_json), (sarif, to_sarif), (html, to_html)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(render(report))
            tmp.replace(path)
            out.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if run is not None:
        from privml.sim import RunStore

        with RunStore(db) as store:
            store.add_audit(run, report.to_dict(), kind=report.kind)
            out.print(f"recorded with run {run} in {store.path}", highlight=False,
                      soft_wrap=True)
    if report.failing(threshold):
        raise typer.Exit(code=1)


@audit_app.command("deployment")
@guarded
def deployment_cmd(
    url: Annotated[str, typer.Option(help="The coordinator's web port, https://HOST:PORT.")],
    ca: Annotated[Path | None, typer.Option(
        help="The federation's CA certificate (default: the system's).",
        show_default=False)] = None,
    device_url: Annotated[str | None, typer.Option(
        help="The device port too (mutual TLS), https://HOST:PORT.", show_default=False)]
    = None,
    token: Annotated[str | None, typer.Option(
        envvar="PRIVML_AUDIT_TOKEN", help="A client token, to check that admin endpoints "
        "refuse it and that the size limit holds (env PRIVML_AUDIT_TOKEN).",
        show_default=False)] = None,
    json_path: JsonOpt = None, sarif: SarifOpt = None, html: HtmlOpt = None,
    fail_on: FailOpt = "high", run: RunOpt = None, db: DbOpt = None,
) -> None:
    """Probe a running coordinator: TLS, certificates, authentication, headers, limits."""
    from privml.audit._deployment import audit_deployment

    _check_run(run, db)
    report = audit_deployment(url, device_url=device_url, ca=ca, token=token)
    _finish(report, json_path, sarif, html, fail_on, run=run, db=db)


@audit_app.command("config")
@guarded
def config_cmd(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="JSON or YAML settings.",
                                         show_default=False)],
    json_path: JsonOpt = None, sarif: SarifOpt = None, html: HtmlOpt = None,
    fail_on: FailOpt = "high", run: RunOpt = None, db: DbOpt = None,
) -> None:
    """Check a federation's settings: TLS, secure aggregation, DP, thresholds, budget."""
    from privml.audit._config import audit_config

    _check_run(run, db)
    _finish(audit_config(file), json_path, sarif, html, fail_on, run=run, db=db)


@audit_app.command("privacy")
@guarded
def privacy_cmd(
    run: Annotated[int, typer.Option(help="The run's id (privml runs); the report is "
                                     "recorded with it in the run database.")],
    db: Annotated[Path | None, typer.Option(help="Run database (default: "
                                            "$PRIVML_HOME/runs.db).", show_default=False)]
    = None,
    model: Annotated[Path | None, typer.Option(help="The run's final model (default: the "
                                               "file it saved).", show_default=False)] = None,
    members: Annotated[int, typer.Option(help="At most this many training and this many "
                                         "test examples for the loss attack.")] = 2000,
    beta: Annotated[float, typer.Option(help="1 - confidence of the empirical bound.")]
    = 0.05,
    lira: Annotated[int, typer.Option(
        metavar="K", help="Also run LiRA (Carlini et al. 2022) with K shadow federations of "
        "the same configuration (costs K runs). 0: off.")] = 0,
    json_path: JsonOpt = None, sarif: SarifOpt = None, html: HtmlOpt = None,
    fail_on: FailOpt = "high",
) -> None:
    """The run's privacy: its ledger against its target, a membership-inference attack on
    its model, and the one-run empirical epsilon lower bound from its canaries."""
    from rich.progress import Progress

    from privml.audit._privacy import audit_privacy

    with Progress(transient=True) as bar:
        task = bar.add_task("LiRA shadow federations", total=lira or 1, visible=bool(lira))
        report = audit_privacy(run, db=db, model=model, members=members, beta=beta,
                               lira=lira, progress=lambda done, _: bar.update(
                                   task, completed=done))
    _finish(report, json_path, sarif, html, fail_on, run=run, db=db)


@audit_app.command("deps")
@guarded
def deps_cmd(
    requirements: Annotated[Path | None, typer.Option(
        "--requirements", "-r", help="Audit this pinned requirements list (no installs: "
        "pip-audit's --no-deps --disable-pip) instead of an environment.",
        show_default=False)] = None,
    python: Annotated[Path | None, typer.Option(
        help="Audit another environment: its python or venv folder (default: this one).",
        show_default=False)] = None,
    advisories: Annotated[str | None, typer.Option(
        help="Offline: an OSV-format advisory file (served to pip-audit on loopback), or "
        "a local OSV endpoint URL. Default: PyPI's advisory database (network).",
        show_default=False)] = None,
    timeout: Annotated[float, typer.Option(help="Seconds pip-audit may take.")] = 300.0,
    json_path: JsonOpt = None, sarif: SarifOpt = None, html: HtmlOpt = None,
    fail_on: FailOpt = "high", run: RunOpt = None, db: DbOpt = None,
) -> None:
    """Installed packages (or a requirements list) against known vulnerabilities; a
    package that could not be checked is a finding, never a silent pass."""
    from privml.audit._deps import audit_deps

    _check_run(run, db)
    _finish(audit_deps(requirements=requirements, python=python, advisories=advisories,
                       timeout=timeout), json_path, sarif, html, fail_on, run=run, db=db)


@audit_app.command("model")
@guarded
def model_cmd(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="A model file or a folder.",
                                         show_default=False)],
    json_path: JsonOpt = None, sarif: SarifOpt = None, html: HtmlOpt = None,
    fail_on: FailOpt = "high", run: RunOpt = None, db: DbOpt = None,
) -> None:
    """Model files scanned, never loaded: safetensors pass; pickles are checked with
    picklescan's strict policy, and anything but a plain tensor state dict is a finding."""
    from privml.audit._model import audit_model

    _check_run(run, db)
    _finish(audit_model(path), json_path, sarif, html, fail_on, run=run, db=db)

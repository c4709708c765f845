"""``privml sim`` and ``privml demo``."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from privml._exceptions import ConfigError
from privml.cli._app import app, err, guarded, out, summary_table, write_json

if TYPE_CHECKING:
    from privml.sim import RunStore

DEMO_TARGET = 0.90
DEMO_DP_TARGET = 0.85  # with DP-SGD at epsilon <= 10, delta 1e-5 (issue 5)


def _alpha(value: str) -> float | None:
    if value.lower() == "iid":
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"alpha must be a number > 0 or 'iid', got {value!r}") from None


def _finish(result: object, *, kind: str, json_path: Path | None, plot: Path | None,
            save_model: Path | None, db: Path | None, title: str,
            canaries: dict[str, object] | None = None) -> dict[str, object]:
    from privml.sim import RunStore, SimResult, plot_history

    assert isinstance(result, SimResult)  # nosec B101  # narrowing: typed object only to keep imports lazy
    summary = result.summary()
    config = summary["config"]
    assert isinstance(config, dict)  # nosec B101  # narrowing: SimResult.summary() always has a config dict
    if canaries is not None:  # the audit's secret: in the run database, not the JSON
        config["audit_canaries"] = canaries
    if save_model is not None:  # where `privml audit privacy --run` finds the model
        config["model_file"] = str(save_model.resolve())
    with RunStore(db) as store:
        summary["run_id"] = store.add_summary(summary, kind=kind)
    config.pop("audit_canaries", None)
    if plot is not None:
        summary["plot"] = str(plot_history(result.history, plot, title=title))
    if save_model is not None and result.model_spec_json is not None:
        from privml.models import ModelSpec
        from privml.models import save_model as save

        save(save_model, ModelSpec.from_json(result.model_spec_json), result.params)
        summary["model_file"] = str(save_model)
    if json_path is not None:
        write_json(json_path, summary)
    out.print(summary_table(summary, title))
    if summary.get("workers"):
        engine = "+".join(str(e) for e in summary.get("engines") or []) or "-"
        out.print(f"engine: {summary['backend']}, {summary['workers']} workers ({engine}); "
                  f"start-up {float(summary.get('startup_s', 0)):.2f} s", highlight=False)
        history = result.history
        restarts = sum(r.worker_restarts for r in history)
        if restarts:
            err.print(f"[yellow]workers restarted: {restarts}[/] (clients retried: "
                      f"{sum(r.clients_retried for r in history)}, left out: "
                      f"{sum(r.clients_lost for r in history)})")
    if "epsilon" in summary:
        out.print(f"client-level DP ({summary['dp_placement']} noise, z = "
                  f"{summary['noise_multiplier']:.4g}, C = {summary['clip_norm']:g}): "
                  f"epsilon = {summary['epsilon']:.4f} at delta = {summary['delta']:g} "
                  f"({summary['accountant']})", highlight=False)
        refused = summary.get("budget_refused")
        if isinstance(refused, dict):
            err.print(f"round {refused['round']} refused: epsilon would reach "
                      f"{refused['epsilon_would_be']:.4f} > target "
                      f"{refused['target_epsilon']:g}; the model is that of the round "
                      "before")
    attack = summary.get("attack")
    if isinstance(attack, dict):
        line = (f"attack: {attack['kind']} by {attack['attackers']} of "
                f"{summary['clients']} clients (x{attack['scale']:g})")
        if "backdoor_success" in attack:
            line += f"; backdoor success {attack['backdoor_success']:.3f}"
        out.print(line, highlight=False)
    for key in ("plot", "model_file"):
        if key in summary:
            out.print(f"{key.replace('_', ' ')}: {summary[key]}")
    return summary


@app.command("sim")
@guarded
def sim_cmd(
    dataset: Annotated[str, typer.Option(help="digits, fashion-mnist or csv.")] = "digits",
    model: Annotated[str, typer.Option(help="logreg, mlp or cnn.")] = "mlp",
    clients: Annotated[int, typer.Option(help="Number of simulated clients.")] = 20,
    per_round: Annotated[int, typer.Option(help="Clients sampled per round.")] = 10,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 30,
    alpha: Annotated[str, typer.Option(help="Dirichlet alpha over labels (> 0), or 'iid'.")]
    = "0.5",
    strategy: Annotated[str, typer.Option(
        help="fedavg, fedprox, fedadam, fedyogi, or robust: median, trimmed_mean, krum, "
        "multikrum, normbound.")]
    = "fedavg",
    seed: Annotated[int, typer.Option(help="Seed for partition, sampling and training.")] = 0,
    epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Local batch size.")] = 16,
    lr: Annotated[float, typer.Option(help="Local learning rate.")] = 0.05,
    optimizer: Annotated[str, typer.Option(help="Local optimizer: sgd or adam.")] = "sgd",
    momentum: Annotated[float, typer.Option(help="Local SGD momentum.")] = 0.9,
    mu: Annotated[float, typer.Option(help="FedProx proximal weight.")] = 0.01,
    server_lr: Annotated[float, typer.Option(help="FedAdam/FedYogi server step.")] = 0.1,
    trim: Annotated[float, typer.Option(
        help="trimmed_mean: the fraction dropped at each end of every coordinate.")] = 0.2,
    byzantine: Annotated[float, typer.Option(
        help="krum/multikrum: the fraction of a round's updates assumed malicious.")] = 0.2,
    bound_factor: Annotated[float, typer.Option(
        help="normbound: updates clipped to this times the round's median norm.")] = 1.0,
    dropout: Annotated[float, typer.Option(help="Chance a sampled client never answers.")]
    = 0.0,
    min_updates: Annotated[int, typer.Option(help="Updates needed to aggregate a round.")] = 1,
    data_path: Annotated[str | None, typer.Option(help="Dataset file or folder.")] = None,
    label: Annotated[str, typer.Option(help="Label column of a CSV dataset.")] = "label",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write a JSON summary.")]
    = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of accuracy per round.")]
    = None,
    save_model: Annotated[Path | None, typer.Option(help="Write the final model file.")]
    = None,
    db: Annotated[Path | None, typer.Option(help="Run database (default $PRIVML_HOME).")]
    = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    threads: Annotated[int, typer.Option(help="Torch threads (1 is fastest for small "
                                         "models; 0 keeps torch's default).")] = 1,
    secagg: Annotated[bool, typer.Option(help="Secure aggregation (SecAgg+) of each round: "
                                         "only the sum of the updates is revealed.")] = False,
    secagg_clip: Annotated[float, typer.Option(help="With --secagg: update coordinates are "
                                               "clipped to [-clip, clip].")] = 2.0,
    secagg_bits: Annotated[int, typer.Option(help="With --secagg: the sum lives in "
                                             "Z_{2^bits} (32 or 64).")] = 32,
    target_epsilon: Annotated[float | None, typer.Option(
        help="Client-level DP: the privacy budget; noise is calibrated to it and a round "
        "that would pass it is refused.", show_default=False)] = None,
    delta: Annotated[float, typer.Option(help="Client-level DP: the delta.")] = 1e-5,
    noise_multiplier: Annotated[float | None, typer.Option(
        help="Client-level DP: the noise multiplier z (instead of calibrating it).",
        show_default=False)] = None,
    clip_norm: Annotated[float, typer.Option(
        help="Client-level DP: each update's L2 norm is clipped to this (the starting "
        "bound with --clip-quantile).")] = 1.0,
    clip_quantile: Annotated[float | None, typer.Option(
        help="Client-level DP, central noise: adaptive clipping, the bound tracks this "
        "quantile of update norms (Andrew et al. 2021), e.g. 0.5.", show_default=False)]
    = None,
    dp_sampling: Annotated[str, typer.Option(
        help="Client-level DP: 'poisson' (rate per-round/clients) or 'fixed'.")] = "poisson",
    accountant: Annotated[str, typer.Option(help="'rdp' or 'pld'.")] = "rdp",
    backend: Annotated[str, typer.Option(
        help="Where clients train: 'local' (worker processes, one per core), 'ray' (Ray "
        "actors; pip install 'privml[ray]') or 'inline' (one after another in this "
        "process).")] = "local",
    workers: Annotated[int | None, typer.Option(
        help="Worker processes or Ray actors (default: one per core / per cluster CPU).",
        show_default=False)] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="With --backend ray: join this Ray cluster (e.g. ray://head:10001 or auto) "
        "instead of starting a local one.", show_default=False)] = None,
    vectorize: Annotated[str, typer.Option(
        help="Train many clients at once with torch.func.vmap: auto (measured on the first "
        "round), on or off.")] = "auto",
    on_worker_failure: Annotated[str, typer.Option(
        help="A worker that dies mid-round is restarted; its clients are retried once "
        "('retry') or left out of the round ('drop').")] = "retry",
    attack: Annotated[str, typer.Option(
        help="Poisoning by a fraction of the clients: none, sign_flip, scale, label_flip "
        "or backdoor (README, Robust aggregation).")] = "none",
    attackers: Annotated[float, typer.Option(
        help="With --attack: the fraction of clients that attack.")] = 0.2,
    attack_scale: Annotated[float | None, typer.Option(
        help="With --attack: sign_flip sends -SCALE x its update (4), scale SCALE x (10); "
        "backdoor boosts by SCALE (1).")] = None,
    backdoor_target: Annotated[int, typer.Option(
        help="With --attack backdoor: the label the trigger turns inputs into.")] = 0,
    audit_canaries: Annotated[int, typer.Option(
        metavar="N", help="Insert N canaries for `privml audit privacy` (each in the "
        "training data with probability 1/2, secretly). 0: none.")] = 0,
) -> None:
    """Run a federated simulation in this process."""
    from privml.sim import SimConfig, run_simulation

    cfg = SimConfig(dataset=dataset, model=model, clients=clients, per_round=per_round,
                    rounds=rounds, alpha=_alpha(alpha), strategy=strategy, seed=seed,
                    epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                    momentum=momentum, mu=mu, server_lr=server_lr, trim=trim,
                    byzantine=byzantine, bound_factor=bound_factor, dropout=dropout,
                    min_updates=min_updates, data_path=data_path, label=label,
                    secagg=secagg, secagg_clip=secagg_clip, secagg_bits=secagg_bits,
                    target_epsilon=target_epsilon, delta=delta,
                    noise_multiplier=noise_multiplier, clip_norm=clip_norm,
                    clip_quantile=clip_quantile,
                    dp_sampling=dp_sampling, accountant=accountant, backend=backend,
                    workers=workers, ray_address=ray_address, vectorize=vectorize,
                    on_worker_failure=on_worker_failure, attack=attack,
                    attackers=attackers, attack_scale=attack_scale,
                    backdoor_target=backdoor_target)
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    ds, canaries = None, None
    if audit_canaries:
        from privml.audit._canaries import with_canaries
        from privml.data import load_dataset

        ds, record = with_canaries(load_dataset(
            dataset, seed=seed, path=data_path, label=label), audit_canaries)
        canaries = record.to_dict()
    result = run_simulation(cfg, dataset=ds, progress=progress, threads=threads or None)
    _finish(result, kind="sim", json_path=json_path, plot=plot, save_model=save_model, db=db,
            title=f"privml sim: {dataset}/{model}, {strategy}", canaries=canaries)


@app.command("demo")
@guarded
def demo_cmd(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write a JSON summary.")]
    = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Work folder: certificates, logs, "
                                          "plot, model and report.html.")]
    = Path("privml-demo"),
    db: Annotated[Path | None, typer.Option(help="Run database (default $PRIVML_HOME).")]
    = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    sim: Annotated[bool, typer.Option("--sim", help="Run the federation in this process "
                                      "(20 simulated clients) instead of over the network.")]
    = False,
    secagg: Annotated[bool, typer.Option(
        help="Secure aggregation (SecAgg+): the coordinator sees only the sum of the "
        "updates.")] = True,
    dp: Annotated[bool, typer.Option(
        help="Example-level differential privacy: DP-SGD on every client, (epsilon, delta) "
        "accounted for the whole run.")] = True,
    target_epsilon: Annotated[float, typer.Option(
        help="The run's privacy budget epsilon (with --dp).")] = 8.0,
    delta: Annotated[float, typer.Option(help="The run's delta (with --dp).")] = 1e-5,
) -> None:
    """Run the main job on the embedded defaults.

    A federation CA and certificates are made in the work folder, the coordinator starts on
    127.0.0.1 (a free port, TLS 1.3, mutual TLS), and 8 client processes — each holding its
    own Dirichlet(0.5) share of the digits — train 30 rounds of FedAvg with DP-SGD (example-
    level DP, epsilon 8 at delta 1e-5 for the whole run) and secure aggregation. ``--sim``
    runs the in-process simulator instead (20 clients, 10 per round, no DP).
    """
    if sim:
        _demo_sim(json_path, out_dir, db, progress)
        return
    from privml.sim import RunStore, plot_history
    from privml.sim._config import RoundRecord
    from privml.transport import NetworkConfig, run_network_federation

    cfg = NetworkConfig(secagg=secagg, target_epsilon=target_epsilon if dp else None,
                        delta=delta)
    out.print(f"[bold]privml demo[/]: coordinator on 127.0.0.1 over mutual TLS, {cfg.clients} "
              f"client processes on digits (Dirichlet alpha {cfg.alpha}), {cfg.rounds} rounds"
              f"{', secure aggregation (SecAgg+)' if secagg else ''}"
              f"{f', DP-SGD on every client (epsilon {target_epsilon:g})' if dp else ''}")
    summary = run_network_federation(cfg, out_dir, progress=progress)
    names = [f.name for f in fields(RoundRecord)]
    history = [RoundRecord(**{k: h[k] for k in names if k in h}) for h in summary["history"]]
    title = "privml demo: 8 clients over mutual TLS, FedAvg"
    if dp:
        title += f", DP-SGD (eps {summary['epsilon']:.2f}, delta {delta:g})"
    summary["plot"] = str(plot_history(history, out_dir / "accuracy.png", title=title))
    with RunStore(db) as store:
        summary["run_id"] = store.add_summary(summary, kind="demo")
        summary["report"] = _report(store, int(summary["run_id"]), out_dir)
    if json_path is not None:
        write_json(json_path, summary)
    out.print(summary_table(summary, "privml demo over HTTPS (mutual TLS)"))
    out.print(f"transport: {summary['transport']} ({summary['tls_version']}), "
              f"secure aggregation: {'on' if summary['secagg'] else 'off'}, "
              f"security events: {summary['security_events']}")
    out.print(f"federated evaluation (final model, on the clients' own held-out data): "
              f"{summary['federated_accuracy']:.4f} on {summary['federated_examples']:.0f} "
              f"examples ({len(summary['evaluations'])} evaluation rounds)", highlight=False)
    if dp:
        out.print(f"example-level DP (DP-SGD on each client, q = {summary['sample_rate']:g}, "
                  f"z = {summary['noise_multiplier']:.4g}, C = {summary['clip_norm']:g}): "
                  f"epsilon = {summary['epsilon']:.4f} at delta = {summary['delta']:g} "
                  f"({summary['accountant']}); assumes {summary['assumption']}",
                  highlight=False)
    for key in ("plot", "model_file", "report"):
        out.print(f"{key.replace('_', ' ')}: {summary[key]}", highlight=False, soft_wrap=True)
    _verdict(float(summary["final_accuracy"]), DEMO_DP_TARGET if dp else DEMO_TARGET)


def _demo_sim(json_path: Path | None, out_dir: Path, db: Path | None, progress: bool) -> None:
    from privml.sim import RunStore, SimConfig, run_simulation

    cfg = SimConfig(backend="local")
    out.print(f"[bold]privml demo --sim[/]: {cfg.clients} clients on digits, Dirichlet alpha "
              f"{cfg.alpha}, {cfg.per_round} per round, {cfg.rounds} rounds of {cfg.strategy}")
    result = run_simulation(cfg, progress=progress)
    # The JSON is written here, not by _finish: it names the report, made from the run's row.
    summary = _finish(result, kind="demo-sim", json_path=None,
                      plot=out_dir / "accuracy.png", save_model=out_dir / "model.safetensors",
                      db=db, title="privml demo --sim: digits, 20 clients, FedAvg")
    run_id = summary["run_id"]
    assert isinstance(run_id, int)  # nosec B101  # narrowing: _finish stored the run: its int id
    with RunStore(db) as store:
        summary["report"] = _report(store, run_id, out_dir)
    if json_path is not None:
        write_json(json_path, summary)
    out.print(f"report: {summary['report']}", highlight=False, soft_wrap=True)
    _verdict(float(summary["final_accuracy"]))  # type: ignore[arg-type]


def _report(store: RunStore, run_id: int, out_dir: Path) -> str:
    """The run's HTML report in the demo's work folder (``privml report`` makes the same)."""
    from privml.sim._report import write_report

    return str(write_report(store, run_id, out_dir / "report.html"))


def _verdict(acc: float, target: float = DEMO_TARGET) -> None:
    verdict = "[green]met[/]" if acc >= target else "[red]NOT met[/]"
    out.print(f"target test accuracy >= {target}: {verdict} ({acc:.4f})")

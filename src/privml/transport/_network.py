"""A whole federation over the network on this machine: certificates, the coordinator on
127.0.0.1, and N real client processes, each holding only its own partition of the data."""

from __future__ import annotations

import math
import socket
import ssl
import subprocess  # nosec B404  # argv lists only, never a shell
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from privml._exceptions import PrivmlError
from privml.params import Params
from privml.protocol import CloseRound

__all__ = ["NetworkConfig", "run_network_federation"]


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    clients: int = 8
    per_round: int = 8
    rounds: int = 30
    alpha: float = 0.5
    seed: int = 0
    model: str | None = None  # logreg with DP (fewer coordinates to noise), mlp without
    round_timeout: float = 60.0
    eval_every: int = 5  # evaluation rounds on the clients' held-out data (and after the last)
    secagg: bool = True  # secure aggregation: the coordinator sees only the sum of updates
    # Example-level DP: every client trains with DP-SGD (Poisson rate dp_sample_rate,
    # per-example clip clip_norm, z calibrated so the whole run spends target_epsilon).
    # None: no DP. Measured on these defaults: see BENCHMARKS.md ("demo").
    target_epsilon: float | None = 8.0
    delta: float = 1e-5
    clip_norm: float = 0.5
    dp_sample_rate: float = 0.15
    # Local training; None: the default for the DP setting (noisy, clipped gradients want
    # one epoch at a larger step).
    epochs: int | None = None  # 1 with DP, 5 without
    lr: float | None = None  # 1.0 with DP, 0.05 without
    momentum: float | None = None  # 0.5 with DP, 0.9 without

    @property
    def dp(self) -> bool:
        return self.target_epsilon is not None

    @property
    def model_name(self) -> str:
        return self.model or ("logreg" if self.dp else "mlp")

    def run_config(self) -> Any:
        """The coordinator's RunConfig for this federation."""
        from privml.transport._coordinator import RunConfig

        dp = self.dp
        return RunConfig(
            rounds=self.rounds, clients_per_round=self.per_round,
            epochs=self.epochs if self.epochs is not None else (1 if dp else 5),
            lr=self.lr if self.lr is not None else (1.0 if dp else 0.05),
            momentum=self.momentum if self.momentum is not None else (0.5 if dp else 0.9),
            round_timeout=self.round_timeout, seed=self.seed, eval_every=self.eval_every,
            secagg=self.secagg, target_epsilon=self.target_epsilon, delta=self.delta,
            clip_norm=self.clip_norm, dp_unit="example", dp_sample_rate=self.dp_sample_rate)


@dataclass(slots=True)
class _Tracker:
    """Evaluates each new global model on the held-out test set (simulator-style figures)."""

    x_test: Any
    y_test: Any
    model: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    last: float = field(default_factory=time.monotonic)

    def on_round(self, close: CloseRound, params: Params, accepted: dict[str, Any]) -> None:
        from privml.train import evaluate, set_params

        set_params(self.model, params)
        ev = evaluate(self.model, self.x_test, self.y_test)
        losses = [a.metrics.get("train_loss", math.nan) for a in accepted.values()]
        now = time.monotonic()
        self.history.append({
            "round": close.round, "outcome": close.outcome.value,
            "updates": len(close.accepted), "dropped": len(close.dropped) + len(close.timed_out),
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "test_loss": ev.loss, "test_accuracy": ev.accuracy, "seconds": now - self.last,
            "federated_accuracy": math.nan, "federated_loss": math.nan,
            "federated_examples": 0.0})
        self.last = now

    def on_evaluation(self, close: Any, summary: dict[str, float]) -> None:
        """An evaluation round (after training round ``close.round``) closed."""
        for h in self.history:
            if h["round"] == close.round:
                h.update(federated_accuracy=summary.get("accuracy", math.nan),
                         federated_loss=summary.get("loss", math.nan),
                         federated_examples=summary["examples"])
        self.last = time.monotonic()  # the next round's time excludes the evaluation


def _tls_version(host: str, port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection((host, port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        return str(tls.version())


def _client_cmd(cfg: NetworkConfig, url: str, ca: Path, pair: tuple[Path, Path],
                index: int) -> list[str]:
    cert, key = pair
    return [sys.executable, "-m", "privml", "client", "--server", url, "--ca", str(ca),
            "--cert", str(cert), "--key", str(key), "--dataset", "digits",
            "--partition", str(index), "--of", str(cfg.clients), "--alpha", str(cfg.alpha),
            "--seed", str(cfg.seed)]


def run_network_federation(cfg: NetworkConfig, work: Path, *, progress: bool = True,
                           console: Console | None = None,
                           timeout: float = 900.0) -> dict[str, Any]:
    """Run the federation over mutual TLS on loopback; returns the summary."""
    from privml.data import load_dataset
    from privml.models import build_torch, zoo
    from privml.train import get_params
    from privml.transport._coordinator import Coordinator
    from privml.transport._serve import ServerThread
    from privml.transport.server import ServerState, create_device_app
    from privml.transport.tls import (
        Revocations,
        client_ssl_context,
        init_federation,
        issue_client,
        server_ssl_context,
    )

    t0 = time.monotonic()
    paths = init_federation(work / "federation", force=True)
    names = [f"client-{i}" for i in range(cfg.clients)]
    certs = [issue_client(paths.dir, name, force=True) for name in names]
    ds = load_dataset("digits", seed=cfg.seed)
    spec = zoo(cfg.model_name, input_shape=ds.input_shape, num_classes=ds.num_classes)
    model = build_torch(spec, seed=cfg.seed)
    tracker = _Tracker(ds.x_test, ds.y_test, build_torch(spec))
    coord = Coordinator(
        cfg.run_config(),
        run_id=uuid.uuid4().hex, model_spec_json=spec.to_json(), initial=get_params(model),
        on_round=tracker.on_round, on_evaluation=tracker.on_evaluation)
    state = ServerState(coord, Revocations(paths.revoked).is_revoked)
    server = ServerThread(create_device_app(state),
                          ssl_context=server_ssl_context(paths, require_client_cert=True))
    procs: list[subprocess.Popen[bytes]] = []
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with server:
        tls = _tls_version("127.0.0.1", server.port,
                           client_ssl_context(paths.ca_cert, cert=certs[0][0], key=certs[0][1]))
        for i, (cert, key) in enumerate(certs):
            with (logs / f"{names[i]}.log").open("wb") as log:
                procs.append(subprocess.Popen(  # noqa: S603  # nosec B603  # argv list, no shell: this Python running privml
                    _client_cmd(cfg, server.url, paths.ca_cert, (cert, key), i),
                    stdout=log, stderr=subprocess.STDOUT))
        try:
            _wait(coord, procs, cfg, progress=progress, console=console, tracker=tracker,
                  deadline=t0 + timeout)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            codes = [p.wait(timeout=30) for p in procs]
    final = tracker.history[-1] if tracker.history else {}
    model_file = work / "model.safetensors"
    from privml.models import save_model

    save_model(model_file, spec, coord.params)
    n = len(tracker.history)
    return {
        "transport": "https", "tls_version": tls, "clients": cfg.clients,
        "secagg": cfg.secagg,
        "secagg_encoding": coord.config.encoding().describe() if cfg.secagg else None,
        "per_round": cfg.per_round, "rounds": n,
        "rounds_completed": sum(h["outcome"] == "completed" for h in tracker.history),
        "final_accuracy": final.get("test_accuracy", math.nan),
        "final_loss": final.get("test_loss", math.nan),
        "best_accuracy": max((h["test_accuracy"] for h in tracker.history), default=math.nan),
        # The final model measured by an evaluation round on the clients' own held-out data.
        "federated_accuracy": final.get("federated_accuracy", math.nan),
        "federated_examples": final.get("federated_examples", 0.0),
        "evaluations": list(coord.evaluations),
        "seconds_total": time.monotonic() - t0,
        "seconds_per_round": sum(h["seconds"] for h in tracker.history) / n if n else 0.0,
        "client_exit_codes": codes, "security_events": len(state.security_log),
        "dataset": "digits", "model": cfg.model_name, "strategy": "fedavg", "alpha": cfg.alpha,
        "seed": cfg.seed, "config": asdict(cfg), "model_file": str(model_file),
        "history": tracker.history,
    } | _privacy(coord)


def _privacy(coord: Any) -> dict[str, Any]:
    """The run's (epsilon, delta) and ledger for the summary (empty without DP)."""
    if coord.privacy is None:
        return {}
    status = coord.privacy.status()
    return {k: status[k] for k in ("epsilon", "delta", "accountant", "dp_unit",
                                   "dp_placement", "noise_multiplier", "clip_norm",
                                   "sample_rate", "steps_per_round", "target_epsilon",
                                   "assumption", "budget_refused")} \
        | {"ledger": list(coord.privacy.dp.ledger)}


def _wait(coord: Any, procs: list[subprocess.Popen[bytes]], cfg: NetworkConfig, *,
          progress: bool, console: Console | None, tracker: _Tracker, deadline: float) -> None:
    bar = Progress(TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(),
                   TextColumn("acc {task.fields[acc]:.3f}"), TimeElapsedColumn(),
                   console=console or Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task("rounds", total=cfg.rounds, acc=0.0)
        while not coord.finished:
            if time.monotonic() > deadline:
                raise PrivmlError("the network federation did not finish in time")
            if all(p.poll() is not None for p in procs):
                raise PrivmlError("every client process exited before the run finished "
                                  "(see the logs folder)")
            done = len(tracker.history)
            acc = tracker.history[-1]["test_accuracy"] if done else 0.0
            bar.update(task, completed=done, acc=acc)
            time.sleep(0.1)
        bar.update(task, completed=len(tracker.history),
                   acc=tracker.history[-1]["test_accuracy"] if tracker.history else 0.0)
    for p in procs:  # clients see "done" on their next poll
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.terminate()

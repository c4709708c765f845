"""``privml server`` (the coordinator on a device port and a web port) and ``privml tokens``.

The device port takes Python clients over mutual TLS; the web port takes bearer tokens
(``privml tokens create``). Without a federation's certificates the server refuses to
start; ``--insecure-dev`` instead makes a throwaway federation in a temporary folder (still
TLS 1.3, but with certificates nobody else trusts) and binds loopback only.
"""

from __future__ import annotations

import datetime as dt
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from privml._exceptions import ConfigError, PrivmlError
from privml.cli._app import app, err, guarded, out

if TYPE_CHECKING:
    from privml.models import ModelSpec
    from privml.transport._coordinator import Coordinator
    from privml.transport._serve import ServerThread
    from privml.transport._store import CoordinatorStore
    from privml.transport._tokens import TokenStore
    from privml.transport.tls import FederationPaths

tokens_app = typer.Typer(
    name="tokens", no_args_is_help=True,
    help="Bearer tokens for the web port: browser clients (pmt_) and admins (pma_).")
app.add_typer(tokens_app, name="tokens")

DirArg = Annotated[Path, typer.Argument(
    metavar="DIR", help="Federation folder (tokens live in DIR/tokens.db).", show_default=False)]
LOOPBACK = ("127.0.0.1", "localhost")
# After the last round the ports stay open this long, so polling clients learn the run is
# done instead of finding the server gone (they poll every ~0.5 s).
DRAIN_SECONDS = 2.0


def _store(dir: Path) -> TokenStore:
    from privml.transport._tokens import TokenStore, default_tokens_path

    if not dir.is_dir():
        raise ConfigError(f"federation folder {dir} does not exist")
    return TokenStore(default_tokens_path(dir))


@tokens_app.command("create")
@guarded
def tokens_create_cmd(
    dir: DirArg,
    kind: Annotated[str, typer.Option(help="client (browsers) or admin.")] = "client",
    ttl: Annotated[int | None, typer.Option(
        help="Seconds the token stays valid (default 3600 for client, 7 days for admin).")]
    = None,
    label: Annotated[str | None, typer.Option(help="Name to list and revoke it by.")] = None,
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    token = _store(dir).create(kind, ttl_seconds=ttl, label=label)
    # Plain stdout, nothing else on the line: made for `TOKEN=$(privml tokens create ...)`.
    print(token, flush=True)


@tokens_app.command("list")
@guarded
def tokens_list_cmd(dir: DirArg) -> None:
    """List tokens by label, kind and expiry (never the tokens or their hashes)."""
    infos = _store(dir).list_tokens()
    if not infos:
        out.print(f"no tokens in {dir}: try `privml tokens create {dir}`", highlight=False,
                  soft_wrap=True)
        return
    now = dt.datetime.now(dt.UTC)
    table = Table(title=f"tokens of {dir}", title_justify="left")
    for col in ("label", "kind", "created (UTC)", "expires (UTC)", "state"):
        table.add_column(col, no_wrap=True)
    for t in infos:
        state = "revoked" if t.revoked else "active" if t.active(now) else "expired"
        table.add_row(t.label, t.kind, t.created.strftime("%Y-%m-%d %H:%M"),
                      t.expires.strftime("%Y-%m-%d %H:%M"), state)
    out.print(table)


@tokens_app.command("revoke")
@guarded
def tokens_revoke_cmd(
    dir: DirArg,
    label: Annotated[str, typer.Argument(metavar="LABEL", show_default=False)],
) -> None:
    """Revoke a token; a running server refuses it from its next request."""
    _store(dir).revoke(label)
    out.print(f"revoked token {label}", highlight=False)


# ---- privml server --------------------------------------------------------------------------

def _federation(dir: Path, *, insecure_dev: bool, host: str, tmp_dir: Path) -> FederationPaths:
    from privml.transport.tls import FederationPaths, init_federation

    paths = FederationPaths.at(dir)
    if insecure_dev:
        if host not in LOOPBACK:
            raise ConfigError(f"--insecure-dev binds loopback only (127.0.0.1 or localhost), "
                              f"not {host!r}")
        dev = init_federation(tmp_dir / "federation")
        err.print(Panel(
            "[bold]--insecure-dev[/]: serving with a THROWAWAY federation made for this run "
            f"in {dev.dir} (self-signed CA; deleted at exit).\nStill TLS 1.3, but nobody "
            "trusts these certificates; bound to loopback only. Never use this outside your own "
            "machine.\n"
            f"Issue dev client certificates with `privml certs client {dev.dir} NAME`.",
            title="INSECURE DEVELOPMENT MODE", border_style="bold red", style="red"))
        return dev
    missing = [p.name for p in (paths.ca_cert, paths.server_cert, paths.server_key)
               if not p.is_file()]
    if missing:
        raise ConfigError(f"no certificates in {dir} (missing {', '.join(missing)}): run "
                          f"`privml certs init {dir}` first, or pass --insecure-dev for a "
                          "throwaway local federation")
    return paths


def _coordinator(*, model: str, dataset: str, seed: int, run: dict[str, Any],
                 store: CoordinatorStore) -> tuple[Coordinator, ModelSpec]:
    from privml.data import load_dataset
    from privml.models import build_torch, zoo
    from privml.train import get_params
    from privml.transport._coordinator import Coordinator, RunConfig

    ds = load_dataset(dataset, seed=seed)  # only to size the model's input and output
    spec = zoo(model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    coord = Coordinator(RunConfig(seed=seed, **run), run_id=uuid.uuid4().hex,
                        model_spec_json=spec.to_json(),
                        initial=get_params(build_torch(spec, seed=seed)), store=store)
    return coord, spec


def _resume(store: CoordinatorStore, run_id: str) -> tuple[Coordinator, ModelSpec]:
    """The run to continue: ``run_id``, or with "latest" the newest unfinished one."""
    from privml.models import ModelSpec
    from privml.transport._coordinator import Coordinator

    if run_id == "latest":
        running = [r for r in store.run_ids() if store.run(r).status == "running"]
        if not running:
            raise ConfigError(f"no unfinished run to resume in {store.path}")
        run_id = running[-1]
    elif run_id not in store.run_ids():
        raise ConfigError(f"no run {run_id!r} in {store.path}")
    coord = Coordinator.resume(store, run_id)
    return coord, ModelSpec.from_json(coord.model_spec_json)


def _bind(app_: Any, ctx: Any, host: str, port: int, name: str) -> ServerThread:
    from privml.transport._serve import ServerThread

    try:
        return ServerThread(app_, ssl_context=ctx, host=host, port=port)
    except OSError as exc:
        raise ConfigError(f"cannot bind the {name} port {host}:{port}: {exc.strerror}") from None


def _wait(coord: Coordinator, stop: threading.Event, servers: list[ServerThread]) -> str:
    """Block until the run finishes, an admin asks to stop, or a server dies."""
    seen = 0
    while True:
        history = list(coord.history)
        for close in history[seen:]:
            out.print(f"round {close.round}/{coord.config.rounds}: {close.outcome.value}, "
                      f"{len(close.accepted)} updates", highlight=False)
        seen = len(history)
        if coord.finished:
            return "finished"
        if stop.is_set():
            return "stopped by an admin"
        for s in servers:
            if not s.thread.is_alive():
                raise PrivmlError(f"the server on port {s.port} stopped: {s.error!r}")
        time.sleep(0.1)


def _serve_run(paths: FederationPaths, out_dir: Path, host: str, ports: tuple[int, int],
               coord: Coordinator, spec: ModelSpec) -> None:
    from privml.models import save_model
    from privml.transport._tokens import TokenStore, default_tokens_path
    from privml.transport._webapp import create_web_app
    from privml.transport.server import ServerState, create_device_app
    from privml.transport.tls import Revocations, server_ssl_context

    tokens = TokenStore(default_tokens_path(out_dir))
    state = ServerState(coord, Revocations(paths.revoked).is_revoked)
    device = _bind(create_device_app(state), server_ssl_context(paths, require_client_cert=True),
                   host, ports[0], "device")
    try:
        web = _bind(create_web_app(state, tokens),
                    server_ssl_context(paths, require_client_cert=False), host, ports[1], "web")
    except PrivmlError:
        device.sock.close()
        raise
    with device, web:
        out.print(f"run {coord.run_id}", highlight=False)
        out.print(f"device port (mTLS): {device.url}", highlight=False, soft_wrap=True)
        out.print(f"web port (tokens): {web.url}", highlight=False, soft_wrap=True)
        out.print(f"CA certificate: {paths.ca_cert}", highlight=False, soft_wrap=True)
        try:
            outcome = _wait(coord, state.stop_requested, [device, web])
            if outcome == "finished":
                time.sleep(DRAIN_SECONDS)
        except KeyboardInterrupt:
            outcome = "interrupted"
    model_file = out_dir / "runs" / coord.run_id / "model.safetensors"
    model_file.parent.mkdir(parents=True, exist_ok=True)
    with state.lock:
        save_model(model_file, spec, coord.params)
        done = len(coord.history)
    out.print(f"{outcome} after {done} rounds; model: {model_file}", highlight=False,
              soft_wrap=True)
    if outcome == "interrupted":
        raise typer.Exit(code=130)


@app.command("server")
@guarded
def server_cmd(
    federation: Annotated[Path, typer.Option(help="Federation folder (certificates, "
                                             "tokens.db; runs/ is written here).")],
    rounds: Annotated[int, typer.Option(help="Federated rounds.")],
    clients_per_round: Annotated[int, typer.Option(help="Clients sampled per round.")],
    min_updates: Annotated[int, typer.Option(help="Updates a round needs to count.")] = 1,
    round_timeout: Annotated[float, typer.Option(help="Seconds a round waits.")] = 60.0,
    device_port: Annotated[int, typer.Option(help="mTLS port for Python clients "
                                             "(0: any free port).")] = 8443,
    web_port: Annotated[int, typer.Option(help="Bearer-token port (0: any free port).")]
    = 8444,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    model: Annotated[str, typer.Option(help="logreg, mlp or cnn.")] = "mlp",
    dataset: Annotated[str, typer.Option(help="Dataset whose shape sizes the model.")]
    = "digits",
    strategy: Annotated[str, typer.Option(help="fedavg, fedprox, fedadam or fedyogi.")]
    = "fedavg",
    epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the model and the sampling.")] = 0,
    insecure_dev: Annotated[bool, typer.Option(
        "--insecure-dev", help="Without certificates: a throwaway self-signed federation, "
        "loopback only. Never in production.")] = False,
    resume: Annotated[str | None, typer.Option(
        help="Continue a run after a crash from DIR/server.db: a run id, or 'latest'.")]
    = None,
) -> None:
    """Run the coordinator until the run finishes, an admin stops it, or Ctrl-C."""
    if not federation.is_dir():
        raise ConfigError(f"federation folder {federation} does not exist")
    for name, port in (("device", device_port), ("web", web_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"--{name}-port must be 0..65535, got {port}")
    with tempfile.TemporaryDirectory(prefix="privml-dev-") as tmp_name:
        paths = _federation(federation, insecure_dev=insecure_dev, host=host,
                            tmp_dir=Path(tmp_name))
        from privml.transport._store import CoordinatorStore

        # Every accepted update and closed round is in DIR/server.db before it is answered,
        # so `--resume` continues a killed server without losing or double-counting one.
        store = CoordinatorStore(federation / "server.db")
        if resume is not None:
            coord, spec = _resume(store, resume)
            out.print(f"resuming run {coord.run_id} at round {coord.machine.round}",
                      highlight=False)
        else:
            coord, spec = _coordinator(
                model=model, dataset=dataset, seed=seed, store=store,
                run={"rounds": rounds, "clients_per_round": clients_per_round,
                     "min_updates": min_updates, "round_timeout": round_timeout,
                     "strategy": strategy, "epochs": epochs})
        # SIGTERM ends the run like Ctrl-C: the model so far is still written.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            _serve_run(paths, federation, host, (device_port, web_port), coord, spec)
        finally:
            signal.signal(signal.SIGTERM, previous)

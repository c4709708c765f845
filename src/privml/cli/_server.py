"""``privml server`` (the coordinator on a device port and a web port) and ``privml tokens``.

The device port takes Python clients over mutual TLS; the web port takes bearer tokens
(``privml tokens create``). Without a federation's certificates the server refuses to
start; ``--insecure-dev`` instead makes a throwaway federation in a temporary folder (still
TLS 1.3, but with certificates nobody else trusts) and binds loopback only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import tempfile
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
    from privml.transport.server import RunFactory, ServerState
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
STORE_FAILED = "stopped: the store failed"


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


class _Runs:
    """Follows the server's runs one after another: prints each closed round, and writes each
    run's final model to ``runs/<id>/model.safetensors`` when it ends."""

    def __init__(self, state: ServerState, out_dir: Path, servers: list[ServerThread]) -> None:
        self.state, self.out_dir, self.servers = state, out_dir, servers
        self.current: Coordinator | None = None  # the run being followed, until it is saved
        self.last: Coordinator | None = None  # the last run saved
        self.announced = state.current  # the run started at launch, already printed

    def serve(self, *, keep_serving: bool) -> str | None:
        """Follow runs until a one-shot server's run ends (its outcome) or its admin stops it
        while idle (None); a server that keeps serving returns only if its store fails."""
        while True:
            coord = self._next_run(keep_serving=keep_serving)
            if coord is None:
                return None
            self.current = coord
            if coord is not self.announced:
                out.print(f"run {coord.run_id}", highlight=False)
            outcome = self._follow(coord)
            self.finish(outcome)
            if outcome == STORE_FAILED:
                return outcome
            if not keep_serving:
                time.sleep(DRAIN_SECONDS)
                return outcome

    def _alive(self) -> None:
        for s in self.servers:
            if not s.thread.is_alive():
                raise PrivmlError(f"the server on port {s.port} stopped: {s.error!r}")

    def _next_run(self, *, keep_serving: bool) -> Coordinator | None:
        while True:
            self._alive()
            with self.state.lock:
                coord, stop = self.state.current, self.state.stop_requested.is_set()
            if coord is not None and coord is not self.last:
                return coord
            if stop and not keep_serving:
                return None
            time.sleep(0.1)

    def _follow(self, coord: Coordinator) -> str:
        """Block until the run ends (finished, stopped by an admin, or its store failed)."""
        seen = 0
        while True:
            with self.state.lock:
                history = list(coord.history)
                ended = coord.finished or self.state.current is not coord
                failed = self.state.stop_requested.is_set() and not ended
                status = coord.store.run(coord.run_id).status if ended and coord.store else ""
            for close in history[seen:]:
                out.print(f"round {close.round}/{coord.config.rounds}: {close.outcome.value}, "
                          f"{len(close.accepted)} updates", highlight=False)
            seen = len(history)
            if ended:
                if coord.budget_refused is not None:
                    return "stopped by the privacy budget"
                return "stopped by an admin" if status == "stopped" else "finished"
            if failed:  # (an admin's stop ends the run first; only the store leaves it open)
                return STORE_FAILED
            self._alive()
            time.sleep(0.1)

    def finish(self, outcome: str) -> None:
        """Write the run's model so far and say how it ended."""
        from privml.models import ModelSpec, save_model

        coord = self.current
        if coord is None:
            return
        model_file = self.out_dir / "runs" / coord.run_id / "model.safetensors"
        model_file.parent.mkdir(parents=True, exist_ok=True)
        with self.state.lock:
            save_model(model_file, ModelSpec.from_json(coord.model_spec_json), coord.params)
            done = len(coord.history)
        out.print(f"{outcome} after {done} rounds; model: {model_file}", highlight=False,
                  soft_wrap=True)
        if coord.privacy is not None:
            spent = coord.privacy.status()
            out.print(f"{spent['dp_unit']}-level DP: epsilon = {spent['epsilon']:.4f} at "
                      f"delta = "
                      f"{spent['delta']:g} ({spent['accountant']}, z = "
                      f"{spent['noise_multiplier']:.4g}, C = {spent['clip_norm']:g})",
                      highlight=False)
        self.current, self.last = None, coord


def _run_factory(*, model: str, dataset: str, seed: int, defaults: dict[str, Any],
                 store: CoordinatorStore) -> RunFactory:
    """How ``POST /v1/admin/runs`` builds a run: its settings over the server's flags."""

    def new_run(settings: dict[str, Any]) -> Coordinator:
        run = {**defaults, **settings}
        coord, _ = _coordinator(model=run.pop("model", model), dataset=dataset,
                                seed=run.pop("seed", seed), run=run, store=store)
        return coord

    return new_run


def _one_run(state: ServerState, factory: RunFactory) -> RunFactory:
    """A factory that builds one run only (a server that exits when its run is done)."""

    def new_run(settings: dict[str, Any]) -> Coordinator:
        coord = factory(settings)
        state.new_run = None  # (the web app calls this holding state.starting)
        return coord

    return new_run


def _serve(paths: FederationPaths, out_dir: Path, host: str, ports: tuple[int, int],
           state: ServerState, *, keep_serving: bool) -> None:
    from privml.transport._tokens import TokenStore, default_tokens_path
    from privml.transport._webapp import create_web_app
    from privml.transport.server import create_device_app
    from privml.transport.tls import server_ssl_context

    tokens = TokenStore(default_tokens_path(out_dir))
    device = _bind(create_device_app(state), server_ssl_context(paths, require_client_cert=True),
                   host, ports[0], "device")
    try:
        web = _bind(create_web_app(state, tokens),
                    server_ssl_context(paths, require_client_cert=False), host, ports[1], "web")
    except PrivmlError:
        device.sock.close()
        raise
    runs = _Runs(state, out_dir, [device, web])
    outcome: str | None = "interrupted"
    with device, web:
        if state.current is not None:
            out.print(f"run {state.current.run_id}", highlight=False)
        out.print(f"device port (mTLS): {device.url}", highlight=False, soft_wrap=True)
        out.print(f"web port (tokens): {web.url}", highlight=False, soft_wrap=True)
        out.print(f"browser client page: {web.url}/client  (inference: {web.url}/predict)",
                  highlight=False, soft_wrap=True)
        out.print(f"dashboard: {web.url}/  (runs: {web.url}/runs; sign in with an admin "
                  "token)", highlight=False, soft_wrap=True)
        out.print(f"CA certificate: {paths.ca_cert}", highlight=False, soft_wrap=True)
        if state.current is None:
            out.print("idle: an admin starts a run with POST /v1/admin/runs", highlight=False)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM: outcome stays
            outcome = runs.serve(keep_serving=keep_serving)
    if outcome == "interrupted":
        if runs.current is not None:  # a run was cut short: keep its model so far
            runs.finish(outcome)
            raise typer.Exit(code=130)
        out.print("stopped serving (no run was open)", highlight=False)
    elif outcome == STORE_FAILED and runs.last is not None:
        raise PrivmlError(f"the coordinator's store failed; continue run {runs.last.run_id} "
                          f"with --resume {runs.last.run_id}")
    elif outcome is None:
        out.print("stopped by an admin before any run", highlight=False)


def _share(state: ServerState, shares: list[str]) -> None:
    from privml.store._url import read_data_file

    for item in shares:
        name, sep, file = item.partition("=")
        if not sep or not file:
            raise ConfigError(f"--share takes NAME=FILE, got {item!r}")
        state.share(name, read_data_file(file))
        out.print(f"sharing {file} at /v1/data/{name}", highlight=False)


@app.command("server")
@guarded
def server_cmd(
    federation: Annotated[Path, typer.Option(help="Federation folder (certificates, "
                                             "tokens.db; runs/ is written here).")],
    rounds: Annotated[int | None, typer.Option(
        help="Federated rounds. With --clients-per-round a run starts at launch; without "
        "both the server starts idle.", show_default=False)] = None,
    clients_per_round: Annotated[int | None, typer.Option(
        help="Clients sampled per round.", show_default=False)] = None,
    min_updates: Annotated[int, typer.Option(help="Updates a round needs to count.")] = 1,
    trim: Annotated[float, typer.Option(
        help="trimmed_mean: the fraction dropped at each end of every coordinate.")] = 0.2,
    byzantine: Annotated[float, typer.Option(
        help="krum/multikrum: the fraction of a round's updates assumed malicious.")] = 0.2,
    bound_factor: Annotated[float, typer.Option(
        help="normbound: updates clipped to this times the round's median norm.")] = 1.0,
    round_timeout: Annotated[float, typer.Option(help="Seconds a round waits.")] = 60.0,
    min_clients: Annotated[int, typer.Option(
        help="Enrolled clients a round waits for before it starts.")] = 1,
    eval_every: Annotated[int, typer.Option(
        help="An evaluation round after every k-th round and the last (0: none).")] = 5,
    secagg: Annotated[bool, typer.Option(
        help="Secure aggregation (SecAgg+): the server sees only the sum of the updates.")]
    = False,
    secagg_clip: Annotated[float, typer.Option(
        help="With --secagg: each update coordinate is clipped to [-clip, clip].")] = 2.0,
    secagg_bits: Annotated[int, typer.Option(
        help="With --secagg: the sum lives in Z_{2^bits} (32 or 64).")] = 32,
    target_epsilon: Annotated[float | None, typer.Option(
        help="DP: the budget; a round that would pass it is refused and the run stops.",
        show_default=False)] = None,
    delta: Annotated[float, typer.Option(help="DP: the delta.")] = 1e-5,
    noise_multiplier: Annotated[float | None, typer.Option(
        help="DP: z (default: calibrated to --target-epsilon).",
        show_default=False)] = None,
    clip_norm: Annotated[float, typer.Option(
        help="DP: the L2 clip of each update (client unit) or of each example's gradient "
        "(example unit).")] = 1.0,
    clip_quantile: Annotated[float | None, typer.Option(
        help="Client unit, central noise: adaptive clipping, the bound tracks this "
        "quantile of update norms.", show_default=False)] = None,
    dp_unit: Annotated[str, typer.Option(
        help="DP unit: 'client' (DP-FedAvg, central noise; for many clients) or 'example' "
        "(DP-SGD on every client; for a few data holders, combines with --secagg).")]
    = "client",
    dp_sample_rate: Annotated[float, typer.Option(
        help="Example unit: each client's Poisson sampling rate per DP-SGD step.")] = 0.1,
    min_survivors: Annotated[int | None, typer.Option(
        help="With --secagg: the fewest clients whose sum may be revealed "
        "(default max(2, n/2)).", show_default=False)] = None,
    shamir_threshold: Annotated[int | None, typer.Option(
        help="With --secagg: shares that rebuild a client's secret (default: a majority "
        "of its neighbours).", show_default=False)] = None,
    device_port: Annotated[int, typer.Option(help="mTLS port for Python clients "
                                             "(0: any free port).")] = 8443,
    web_port: Annotated[int, typer.Option(help="Bearer-token port (0: any free port).")]
    = 8444,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    model: Annotated[str, typer.Option(help="logreg, mlp or cnn.")] = "mlp",
    dataset: Annotated[str, typer.Option(help="Dataset whose shape sizes the model.")]
    = "digits",
    strategy: Annotated[str, typer.Option(
        help="fedavg, fedprox, fedadam, fedyogi, or robust: median, trimmed_mean, krum, "
        "multikrum, normbound.")]
    = "fedavg",
    epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the model and the sampling.")] = 0,
    keep_serving: Annotated[bool | None, typer.Option(
        "--keep-serving/--exit-when-done", show_default=False,
        help="After a run, wait for an admin to start the next (until Ctrl-C), or exit. "
        "Default: exit if a run started at launch, else keep serving.")] = None,
    insecure_dev: Annotated[bool, typer.Option(
        "--insecure-dev", help="Without certificates: a throwaway self-signed federation, "
        "loopback only. Never in production.")] = False,
    resume: Annotated[str | None, typer.Option(
        help="Continue a run after a crash from DIR/server.db: a run id, or 'latest'.")]
    = None,
    share: Annotated[list[str] | None, typer.Option(
        metavar="NAME=FILE", help="Share a dataset (.npy, .parquet or .csv) with the clients "
        "at /v1/data/NAME on the device port (privml.load('https://.../v1/data/NAME')). "
        "Repeatable.", show_default=False)] = None,
    web_demo: Annotated[int, typer.Option(
        metavar="N", help="Offer browser pages a demo partition: one of N IID parts of the "
        "--dataset's training split per token (public data only). 0: off.")] = 0,
) -> None:
    """Serve the coordinator: one run, or (idle, --keep-serving) runs an admin starts."""
    if not federation.is_dir():
        raise ConfigError(f"federation folder {federation} does not exist")
    for name, port in (("device", device_port), ("web", web_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"--{name}-port must be 0..65535, got {port}")
    if (rounds is None) != (clients_per_round is None):
        raise ConfigError("give both --rounds and --clients-per-round to start a run at "
                          "launch, or neither to start idle (an admin then starts runs)")
    at_launch = resume is not None or rounds is not None
    keep = not at_launch if keep_serving is None else keep_serving
    with tempfile.TemporaryDirectory(prefix="privml-dev-") as tmp_name:
        paths = _federation(federation, insecure_dev=insecure_dev, host=host,
                            tmp_dir=Path(tmp_name))
        from privml.transport._store import CoordinatorStore
        from privml.transport.server import ServerState
        from privml.transport.tls import Revocations

        # Every accepted update and closed round is in DIR/server.db before it is answered,
        # so `--resume` continues a killed server without losing or double-counting one.
        store = CoordinatorStore(federation / "server.db")
        defaults = {"min_updates": min_updates, "round_timeout": round_timeout,
                    "strategy": strategy, "epochs": epochs, "min_clients": min_clients,
                    "trim": trim, "byzantine": byzantine, "bound_factor": bound_factor,
                    "eval_every": eval_every, "secagg": secagg, "secagg_clip": secagg_clip,
                    "secagg_bits": secagg_bits, "target_epsilon": target_epsilon,
                    "delta": delta, "noise_multiplier": noise_multiplier,
                    "clip_norm": clip_norm, "clip_quantile": clip_quantile,
                    "dp_unit": dp_unit, "dp_sample_rate": dp_sample_rate,
                    "min_survivors": min_survivors, "shamir_threshold": shamir_threshold}
        factory = _run_factory(model=model, dataset=dataset, seed=seed, defaults=defaults,
                               store=store)
        coord: Coordinator | None = None
        if resume is not None:
            coord, _ = _resume(store, resume)
            out.print(f"resuming run {coord.run_id} at round {coord.machine.round}",
                      highlight=False)
        elif rounds is not None:
            coord = factory({"rounds": rounds, "clients_per_round": clients_per_round})
        state = ServerState(coord, Revocations(paths.revoked).is_revoked, store=store)
        _share(state, share or [])
        if web_demo:
            from privml.transport._webdemo import demo_partitions

            state.demo_data = demo_partitions(dataset, web_demo, seed=seed)
        if keep:
            state.new_run = factory
        elif coord is None:
            state.new_run = _one_run(state, factory)
        # SIGTERM ends the server like Ctrl-C: the model so far is still written.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            _serve(paths, federation, host, (device_port, web_port), state, keep_serving=keep)
        finally:
            signal.signal(signal.SIGTERM, previous)

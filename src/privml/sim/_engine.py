"""The in-process simulator: the round state machine driven with N clients in one process.

Clients are index views into one shared dataset and share one torch module whose parameters
are swapped in before each client trains, so a thousand clients cost no more memory than ten.
Time is virtual: a straggler (``dropout``) simply never answers, and when nothing else is
left to do the clock jumps to the round's deadline, exactly as a real coordinator's would.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from privml import params as pm
from privml._exceptions import (
    BudgetExceededError,
    ConfigError,
    ParamsError,
    RoundAbortedError,
)
from privml.data import ClientData, Dataset, load_dataset, partition
from privml.models import build_torch, zoo
from privml.params import Params
from privml.protocol import (
    Action,
    Aggregate,
    ClientAvailable,
    CloseRound,
    Finished,
    Phase,
    RoundConfig,
    RoundMachine,
    SendTask,
    Tick,
    UpdateReceived,
)
from privml.secagg import run_round
from privml.sim._config import RoundRecord, SimConfig, SimResult
from privml.sim._parallel import Parallel, RoundOutput, WorkerError, csr
from privml.sim._vmap import vectorizable
from privml.sim._worker import WorkerSetup
from privml.sim.attacks import Attack, backdoor_success
from privml.strategies import ClientUpdate, ServerState, make_strategy, needs_updates
from privml.train import TrainConfig, TrainFn, evaluate, get_params, set_params, train_local

__all__ = ["run_simulation"]

ModelFn = Callable[[], torch.nn.Module]
RoundCallback = Callable[[RoundRecord], None]


def _client_seed(seed: int, round_: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, round_, index]).generate_state(1)[0])


class _Federation:
    """The shell's state for one run: global model, pending updates, history."""

    def __init__(self, cfg: SimConfig, dataset: Dataset, model: torch.nn.Module,
                 train_fn: TrainFn) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.model = model
        self.train_fn = train_fn
        self.strategy = make_strategy(cfg.strategy, mu=cfg.mu, server_lr=cfg.server_lr,
                                      trim=cfg.trim, byzantine=cfg.byzantine,
                                      bound_factor=cfg.bound_factor)
        self.train_cfg = TrainConfig(
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
            momentum=cfg.momentum, prox_mu=self.strategy.client_options().get("prox_mu", 0.0))
        seeds = np.random.SeedSequence(cfg.seed).spawn(3)
        part = partition(dataset.y_train, cfg.clients, alpha=cfg.alpha,
                         rng=np.random.default_rng(seeds[0]))
        width = len(str(cfg.clients - 1))
        # The partition as one index array and offsets: per client, two integers.
        self.order, self.offsets = csr(part)
        del part
        self.attack = Attack.draw(cfg.attack, fraction=cfg.attackers, num_clients=cfg.clients,
                                  seed=cfg.seed, scale=cfg.attack_scale,
                                  target=cfg.backdoor_target)
        self.dataset = self.attack.poison(dataset, self.order, self.offsets, cfg.seed)
        # Every client's own update is needed: SecAgg encodes each, robust strategies
        # compare them, update attacks rewrite the attackers'. Else the pool sends one sum.
        self.each = cfg.secagg or needs_updates(self.strategy) or self.attack.alters_updates
        self._width = width  # ids are formatted when needed: no per-client list here
        self.pool: Parallel | None = None  # worker processes or Ray actors; None: inline
        self.pooled: RoundOutput | None = None  # this round's reduced sum, from the pool
        self.faults = [0, 0, 0]  # this round's worker restarts, clients retried, lost
        poisson = cfg.dp and cfg.dp_sampling == "poisson"
        self.machine = RoundMachine(
            RoundConfig(num_rounds=cfg.rounds,
                        clients_per_round=None if poisson else cfg.per_round,
                        poisson_rate=cfg.per_round / cfg.clients if poisson else None,
                        # Every round samples from the whole population: wait for all of
                        # it (else round 1 would take the first clients to enrol).
                        min_clients=cfg.clients,
                        min_updates=cfg.min_updates, round_timeout=cfg.round_timeout),
            rng=np.random.default_rng(seeds[1]))
        self.straggle_rng = np.random.default_rng(seeds[2])
        self.global_params: Params = get_params(model)
        if cfg.dp:  # imported only for DP runs: the accountants load scipy (~0.8 s)
            from privml.dp import ClientLevelDP
        self.dp = (ClientLevelDP(cfg, sum(v.size for v in self.global_params.values()))
                   if cfg.dp else None)
        self.refused: dict[str, float] | None = None  # the round the budget stopped
        self.state = ServerState()
        self.updates: dict[str, ClientUpdate] = {}
        self.losses: list[float] = []
        self.history: list[RoundRecord] = []
        self.clock = 0.0
        self.created = time.perf_counter()
        self.round_started = self.created
        self.startup_s = 0.0  # from the call to the first round: data, model, pool
        self.engines: set[str] = set()  # how the pool's workers trained ("vmap", "loop")

    def cid(self, index: int) -> str:
        """Client ``index``'s id: ``client-0042``."""
        return f"client-{index:0{self._width}d}"

    @staticmethod
    def index(cid: str) -> int:
        """The client's number: ``client-0042`` -> 42 (no per-client lookup table)."""
        return int(cid.rpartition("-")[2])

    def train_client(self, task: SendTask) -> list[Action]:
        cid = task.client_id
        set_params(self.model, self.global_params)
        k = self.index(cid)
        data = ClientData(x=self.dataset.x_train, y=self.dataset.y_train,
                          indices=self.order[self.offsets[k]:self.offsets[k + 1]])
        result = self.train_fn(self.model, data, self.train_cfg,
                               _client_seed(self.cfg.seed, task.round, k),
                               self.global_params)
        # The update is checked like one off the wire: names, shapes, finite values.
        local = pm.validate(get_params(self.model), pm.spec_of(self.global_params))
        delta = pm.subtract(local, self.global_params)
        if (factor := self.attack.factor(k)) != 1.0:
            delta = pm.scale(delta, factor)
        self.updates[cid] = ClientUpdate(delta, result.num_examples)
        self.losses.append(result.loss)
        return self.machine.handle(UpdateReceived(cid, task.round, result.num_examples),
                                   self.clock)

    def train_batch(self, tasks: list[SendTask]) -> list[Action]:
        """Train one round's sampled clients: inline, one after another, or on the pool."""
        if self.pool is None:
            return [a for task in tasks for a in self.train_client(task)]
        round_ = tasks[0].round
        jobs = [(k, _client_seed(self.cfg.seed, round_, k))
                for k in (self.index(t.client_id) for t in tasks)]
        if self.dp is not None and not self.each:
            mode, bound = "clip", self.dp.bound
        else:
            mode, bound = ("each" if self.each else "sum"), None
        out = self.pool.round(jobs, mode=mode, bound=bound,
                              flat=pm.flatten(self.global_params))
        self.faults = [a + b for a, b in zip(self.faults, (out.restarts, out.retried,
                                                           len(out.lost)), strict=True)]
        self.losses.extend(out.losses)
        self.engines |= out.engines
        if mode == "each":
            spec = pm.spec_of(self.global_params)
            for k, (index, n) in enumerate(zip(out.clients, out.num_examples, strict=True)):
                assert out.total is not None  # nosec B101  # narrowing: the pool sets total (_pooled_total raises if not)
                flat = out.total[k] * np.float32(self.attack.factor(index))
                self.updates[self.cid(index)] = ClientUpdate(pm.unflatten(flat, spec), n)
        else:
            self.pooled = out
        return [a for index, n in zip(out.clients, out.num_examples, strict=True)
                for a in self.machine.handle(UpdateReceived(self.cid(index), round_, n),
                                             self.clock)]

    def _pooled_total(self, action: Aggregate) -> RoundOutput:
        out = self.pooled
        if out is None or out.total is None or \
                {self.cid(i) for i in out.clients} != set(action.client_ids):
            raise WorkerError("the pool's sum does not cover the round's accepted clients")
        return out

    def aggregate(self, action: Aggregate) -> None:
        spec = pm.spec_of(self.global_params)
        if self.dp is not None:
            self.dp.admit(len(action.client_ids))  # BudgetExceededError: nothing applied
            if self.pool is not None and not self.each:
                out = self._pooled_total(action)
                assert out.total is not None  # nosec B101  # narrowing: the pool sets total (_pooled_total raises if not)
                noisy = self.dp.noisy_mean_of_clipped(out.total, out.fits)
            else:
                flat = {c: pm.flatten(self.updates[c].delta) for c in action.client_ids}
                noisy = self.dp.noisy_mean(flat, run=f"sim-{self.cfg.seed}",
                                           round_=action.round)
            self.global_params, self.state = self.strategy.apply(
                self.global_params,
                pm.unflatten(noisy.astype(np.float32), pm.spec_of(self.global_params)),
                self.state)
            self.dp.record(action.round, len(action.client_ids))
            return
        if self.cfg.secagg:
            mean = self._secure_mean(action)
            if mean is not None:
                self.global_params, self.state = self.strategy.apply(self.global_params, mean,
                                                                     self.state)
            return
        if self.pool is not None and not self.each:
            out = self._pooled_total(action)
            assert out.total is not None  # nosec B101  # narrowing: the pool sets total (_pooled_total raises if not)
            mean = pm.unflatten((out.total / out.weight).astype(np.float32), spec)
            self.global_params, self.state = self.strategy.apply(self.global_params, mean,
                                                                 self.state)
            return
        ups = [self.updates[c] for c in action.client_ids]
        self.global_params, self.state = self.strategy.aggregate(self.global_params, ups,
                                                                 self.state)

    def _secure_mean(self, action: Aggregate) -> Params | None:
        """The round's mean delta through SecAgg+ (every party in this process, every
        message through its bytes); None, and the model kept, if the round aborts."""
        fp = self.cfg.encoding()
        inputs = {c: fp.encode(pm.flatten(self.updates[c].delta), self.updates[c].num_examples)
                  for c in action.client_ids}
        try:
            result = run_round(inputs, run=f"sim-{self.cfg.seed}", round_=action.round,
                               bits=fp.bits)
        except RoundAbortedError:
            return None
        try:
            mean, _ = fp.decode(result.total)
        except ParamsError:  # the check of the unmasked aggregate refused it
            return None
        return pm.unflatten(mean.astype(np.float32), pm.spec_of(self.global_params))

    def close(self, action: CloseRound) -> RoundRecord:
        if self.dp is not None and not action.accepted:
            self.dp.admit(0)  # a failed round is charged as if it had run (module doc)
            self.dp.record(action.round, 0)
        set_params(self.model, self.global_params)
        ev = evaluate(self.model, self.dataset.x_test, self.dataset.y_test)
        now = time.perf_counter()
        record = RoundRecord(
            round=action.round, outcome=action.outcome.value, updates=len(action.accepted),
            dropped=len(action.dropped) + len(action.timed_out),
            train_loss=float(np.mean(self.losses)) if self.losses else float("nan"),
            test_loss=ev.loss, test_accuracy=ev.accuracy, seconds=now - self.round_started,
            worker_restarts=self.faults[0], clients_retried=self.faults[1],
            clients_lost=self.faults[2])
        self.round_started = now
        self.faults = [0, 0, 0]
        self.pooled = None
        self.updates.clear()
        self.losses.clear()
        self.history.append(record)
        return record

    def run(self, on_round: RoundCallback) -> None:
        queue: deque[Action] = deque()
        for cid in map(self.cid, range(self.cfg.clients)):
            queue.extend(self.machine.handle(ClientAvailable(cid), self.clock))
        while queue or self.machine.phase is not Phase.FINISHED:
            if not queue:
                # Only stragglers are left: let virtual time run to the deadline.
                self.clock = max(self.clock, self.machine.deadline)
                queue.extend(self.machine.handle(Tick(), self.clock))
                continue
            action = queue.popleft()
            if isinstance(action, SendTask):
                # The round's tasks go out together: the pool trains them in parallel.
                tasks = [action]
                while queue and isinstance(queue[0], SendTask) \
                        and queue[0].round == action.round:
                    tasks.append(queue.popleft())  # type: ignore[arg-type]
                # One straggler draw per task, in order, as the inline engine always made.
                live = [t for t in tasks if self.straggle_rng.random() >= self.cfg.dropout]
                if live:
                    queue.extend(self.train_batch(live))
            elif isinstance(action, Aggregate):
                try:
                    self.aggregate(action)
                except BudgetExceededError as exc:
                    self.refused = {"round": action.round, "epsilon_would_be": exc.epsilon,
                                    "target_epsilon": exc.target}
                    break
            elif isinstance(action, CloseRound):
                on_round(self.close(action))
            elif isinstance(action, Finished):
                break


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(),
        TextColumn("acc {task.fields[acc]:.3f}  loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(), console=console, transient=False)


def run_simulation(config: SimConfig, *, dataset: Dataset | None = None,
                   model_fn: ModelFn | None = None, train_fn: TrainFn | None = None,
                   progress: bool = False, on_round: RoundCallback | None = None,
                   console: Console | None = None, threads: int | None = 1) -> SimResult:
    """Run a federated simulation and return its history and final parameters.

    ``dataset`` overrides ``config.dataset``; ``model_fn`` builds any torch module instead of
    the zoo model (then no portable spec is recorded); ``train_fn`` replaces the built-in
    local training (same signature as :func:`privml.train.train_local`). ``threads`` sets
    torch's intra-op threads for the run (restored afterwards): clients train one after
    another on small batches, where extra threads only add synchronisation — on a loaded
    2-core machine one thread ran the demo 2-3x faster than two. ``None`` leaves torch's.
    """
    with _torch_threads(threads):
        return _run(config, dataset=dataset, model_fn=model_fn, train_fn=train_fn,
                    progress=progress, on_round=on_round, console=console)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run(config: SimConfig, *, dataset: Dataset | None, model_fn: ModelFn | None,
         train_fn: TrainFn | None, progress: bool, on_round: RoundCallback | None,
         console: Console | None) -> SimResult:
    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(
        config.dataset, seed=config.seed, path=config.data_path, label=config.label)
    spec_json: str | None = None
    if model_fn is None:
        spec = zoo(config.model, input_shape=ds.input_shape, num_classes=ds.num_classes)
        model: torch.nn.Module = build_torch(spec, seed=config.seed)
        spec_json = spec.to_json()
    else:
        model = model_fn()
    fed = _Federation(config, ds, model, train_fn or train_local)
    fed.created = t0  # start-up counts from the call: data, partition, model, pool
    if config.backend != "inline":
        if config.vectorize == "on":
            why = "a custom train_fn" if train_fn else vectorizable(model, fed.train_cfg)
            if why is not None:
                raise ConfigError(f"vectorize='on' cannot apply: {why}")
        setup = WorkerSetup(train_cfg=fed.train_cfg, spec_json=spec_json,
                            model_fn=model_fn, train_fn=train_fn, vectorize=config.vectorize)
        fed.pool = Parallel(backend=config.backend, workers=config.workers,
                            ray_address=config.ray_address, policy=config.on_worker_failure,
                            setup=setup, dataset=fed.dataset, order=fed.order,
                            offsets=fed.offsets)
    try:
        _drive(fed, config, on_round=on_round, progress=progress, console=console)
    finally:
        if fed.pool is not None:
            fed.pool.close()
    extra: dict[str, object] = {"secagg": config.secagg, "startup_s": fed.startup_s,
                                "backend": config.backend}
    if fed.pool is not None:
        extra.update(fed.pool.describe(), engines=sorted(fed.engines),
                     worker_restarts=fed.pool.restarts)
    if fed.dp is not None:
        extra.update(fed.dp.summary(), budget_refused=fed.refused)
    if fed.attack.active:
        extra["attack"] = _attack_summary(fed)
    return SimResult(config=config, history=fed.history, params=fed.global_params,
                     seconds_total=time.perf_counter() - t0, model_spec_json=spec_json,
                     extra=extra)


def _attack_summary(fed: _Federation) -> dict[str, object]:
    attack, cfg = fed.attack, fed.cfg
    summary: dict[str, object] = {"kind": attack.kind, "fraction": cfg.attackers,
                                  "attackers": len(attack.clients), "scale": attack.scale}
    if attack.kind == "backdoor":
        set_params(fed.model, fed.global_params)
        summary.update(target=attack.target, backdoor_success=backdoor_success(
            fed.model, fed.dataset, attack.target))
    return summary


def _drive(fed: _Federation, config: SimConfig, *, on_round: RoundCallback | None,
           progress: bool, console: Console | None) -> None:
    fed.startup_s = time.perf_counter() - fed.created
    fed.round_started = time.perf_counter()
    callbacks = [on_round] if on_round else []

    def notify(record: RoundRecord) -> None:
        for callback in callbacks:
            callback(record)

    if progress:
        bar = _progress(console or Console(stderr=True))
        task = bar.add_task("rounds", total=config.rounds, acc=0.0, loss=float("nan"))

        def advance(r: RoundRecord) -> None:
            bar.update(task, advance=1, acc=r.test_accuracy, loss=r.test_loss)

        callbacks.append(advance)
        with bar:
            fed.run(notify)
    else:
        fed.run(notify)

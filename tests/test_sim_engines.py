"""The pooled simulation engines: worker processes and Ray actors against the inline one.

Same seed, same model (to float tolerance: only the order of additions differs); vmap
training = the loop; a worker killed mid-round is restarted and its clients retried or
dropped, and the round says so; training data is mapped, never copied per client.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from privml import ConfigError
from privml import params as pm
from privml.data import Dataset, load_dataset
from privml.sim import SimConfig, run_simulation
from privml.sim._memory import PeakSampler, process_tree, tree_pss
from privml.sim._parallel import WorkerError
from privml.train import TrainConfig, TrainResult, train_local

TASK = {"clients": 40, "per_round": 8, "rounds": 4, "epochs": 1, "batch_size": 16,
        "alpha": 0.5}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def inline(digits: Dataset) -> Any:
    return run_simulation(SimConfig(**TASK), dataset=digits)


def _flat(result: Any) -> np.ndarray:
    return pm.flatten(result.params)


def _workers() -> list[int]:
    """Simulation worker processes still alive under this one."""
    out = []
    for pid in process_tree()[1:]:
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pytest" in name or b"python" in name:
            out.append(pid)
    return out


@pytest.mark.parametrize("vectorize", ["off", "on"])
def test_local_pool_gives_the_inline_model(digits: Dataset, inline: Any,
                                           vectorize: str) -> None:
    before = set(_workers())
    result = run_simulation(SimConfig(**TASK, backend="local", workers=2,
                                      vectorize=vectorize), dataset=digits)
    np.testing.assert_allclose(_flat(result), _flat(inline), atol=2e-6)
    assert [r.updates for r in result.history] == [r.updates for r in inline.history]
    assert result.final_accuracy == pytest.approx(inline.final_accuracy, abs=1e-9)
    assert result.extra["backend"] == "local" and result.extra["workers"] == 2
    assert result.extra["engines"] == ["vmap" if vectorize == "on" else "loop"]
    assert set(_workers()) <= before  # the pool is gone


def test_vmap_matches_the_loop_with_prox_and_weight_decay(digits: Dataset) -> None:
    cfg = {**TASK, "strategy": "fedprox", "mu": 0.1, "epochs": 3, "batch_size": 4,
           "rounds": 2}
    loop = run_simulation(SimConfig(**cfg), dataset=digits)
    vec = run_simulation(SimConfig(**cfg, backend="local", workers=1, vectorize="on"),
                         dataset=digits)
    np.testing.assert_allclose(_flat(vec), _flat(loop), atol=1e-5)
    assert [r.train_loss for r in vec.history] == pytest.approx(
        [r.train_loss for r in loop.history], rel=1e-5)


def test_vectorize_on_refused_where_it_cannot_apply(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="adam"):
        run_simulation(SimConfig(**TASK, optimizer="adam", backend="local",
                                 vectorize="on"), dataset=digits)
    with pytest.raises(ConfigError, match="backend"):
        SimConfig(backend="threads")
    with pytest.raises(ConfigError, match="ray_address"):
        SimConfig(ray_address="auto")
    with pytest.raises(ConfigError, match="workers"):
        SimConfig(backend="local", workers=0)


def test_central_dp_and_secagg_on_the_pool(digits: Dataset) -> None:
    """Clipping in the workers (central DP) and per-client updates for SecAgg+."""
    dp = {**TASK, "noise_multiplier": 0.5, "clip_norm": 0.5, "insecure_dp_seed": 7,
          "dp_sampling": "fixed"}
    a = run_simulation(SimConfig(**dp), dataset=digits)
    b = run_simulation(SimConfig(**dp, backend="local", workers=2), dataset=digits)
    np.testing.assert_allclose(_flat(b), _flat(a), atol=2e-6)
    assert b.extra["epsilon"] == pytest.approx(a.extra["epsilon"])
    sec = {**TASK, "rounds": 2, "secagg": True}
    c = run_simulation(SimConfig(**sec), dataset=digits)
    d = run_simulation(SimConfig(**sec, backend="local", workers=2), dataset=digits)
    np.testing.assert_allclose(_flat(d), _flat(c), atol=1e-4)


# --------------------------------------------------------------------------- failures

def _killer(marker: Path, victim: int, round_: int = 2) -> Any:
    """A train_fn that SIGKILLs its own worker on client ``victim``'s training in round
    ``round_`` (once: a marker file remembers), and otherwise trains normally."""
    calls = {"n": 0}

    def train(model: torch.nn.Module, data: Any, cfg: TrainConfig, seed: int,
              global_params: Any) -> TrainResult:
        calls["n"] += 1
        if len(data) == victim and not marker.exists() and os.getpid() != PARENT:
            marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        return train_local(model, data, cfg, seed, global_params)

    return train


PARENT = os.getpid()


def _victim(digits: Dataset) -> int:
    """A client size present in round 2's sample (train_fn sees sizes, not ids)."""
    sizes: list[int] = []

    def spy(model: Any, data: Any, cfg: Any, seed: int, g: Any) -> TrainResult:
        sizes.append(len(data))
        return train_local(model, data, cfg, seed, g)

    run_simulation(SimConfig(**{**TASK, "rounds": 2}), dataset=digits, train_fn=spy)
    return sizes[TASK["per_round"] + 1]


def test_a_killed_worker_is_restarted_and_its_clients_retried(
        digits: Dataset, inline: Any, tmp_path: Path) -> None:
    victim = _victim(digits)
    marker = tmp_path / "killed"
    result = run_simulation(SimConfig(**TASK, backend="local", workers=2),
                            dataset=digits, train_fn=_killer(marker, victim))
    assert marker.exists()
    restarts = [r.worker_restarts for r in result.history]
    assert sum(restarts) == 1 and result.extra["worker_restarts"] == 1
    hit = result.history[restarts.index(1)]
    assert hit.clients_retried >= 1 and hit.clients_lost == 0 and hit.dropped == 0
    assert hit.updates == TASK["per_round"]
    # Retried clients train from their own seed: the model is the uninterrupted one.
    np.testing.assert_allclose(_flat(result), _flat(inline), atol=2e-6)


def test_a_killed_worker_drops_its_clients_under_drop(digits: Dataset, tmp_path: Path
                                                       ) -> None:
    victim = _victim(digits)
    marker = tmp_path / "killed"
    result = run_simulation(SimConfig(**TASK, backend="local", workers=2,
                                      on_worker_failure="drop", round_timeout=5.0),
                            dataset=digits, train_fn=_killer(marker, victim))
    hit = next(r for r in result.history if r.worker_restarts)
    assert hit.clients_lost >= 1 and hit.clients_retried == 0
    assert hit.dropped == hit.clients_lost
    assert hit.updates == TASK["per_round"] - hit.clients_lost
    assert hit.outcome == "completed" and len(result.history) == TASK["rounds"]
    assert result.history[-1].worker_restarts == 0  # the new worker serves the next rounds


def test_a_worker_killed_from_outside_mid_round(digits: Dataset, tmp_path: Path) -> None:
    """SIGKILL sent by another process while a worker trains (not by the worker itself)."""
    started = tmp_path / "started"

    def slow(model: Any, data: Any, cfg: Any, seed: int, g: Any) -> TrainResult:
        if os.getpid() != PARENT:
            try:  # the first worker here claims the file (atomically) and stalls
                fd = os.open(started, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return train_local(model, data, cfg, seed, g)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            import time
            time.sleep(30)  # killed long before this ends
        return train_local(model, data, cfg, seed, g)

    import threading

    def assassin() -> None:
        import time
        for _ in range(600):
            if started.exists() and started.read_text():
                os.kill(int(started.read_text()), signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=assassin)
    thread.start()
    result = run_simulation(SimConfig(**TASK, backend="local", workers=2), dataset=digits,
                            train_fn=slow)
    thread.join()
    assert sum(r.worker_restarts for r in result.history) == 1
    assert all(r.clients_lost == 0 for r in result.history)


def test_training_errors_in_a_worker_are_raised_and_the_pool_closed(digits: Dataset) -> None:
    before = set(_workers())
    with pytest.raises(ConfigError, match="training diverged"):  # as inline
        run_simulation(SimConfig(**TASK, lr=1e30, momentum=0.0, backend="local", workers=2),
                       dataset=digits)

    def broken(*args: Any) -> TrainResult:
        raise RuntimeError("a bug in a custom train_fn")

    with pytest.raises(WorkerError, match="RuntimeError: a bug in a custom train_fn"):
        run_simulation(SimConfig(**TASK, backend="local", workers=2), dataset=digits,
                       train_fn=broken)
    assert set(_workers()) <= before


# --------------------------------------------------------------------------- memory

def test_client_data_is_mapped_not_copied() -> None:
    """A 100 MB training set over 4,000 clients: the pool's workers share the parent's
    pages; if they held a copy each (or copies per client), the tree would grow by
    >= 200 MB."""
    rng = np.random.default_rng(0)
    rows, dim = 100_000, 256
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    y = rng.integers(0, 4, rows).astype(np.int64)
    ds = Dataset(name="big", x_train=x, y_train=y, x_test=x[:500].copy(),
                 y_test=y[:500].copy(), num_classes=4, input_shape=(dim,),
                 classes=("a", "b", "c", "d"))
    size = x.nbytes
    # Warm up first (torch._dynamo, imported once by the coordinating process: ~80 MB).
    run_simulation(SimConfig(model="logreg", clients=40, per_round=2, rounds=1, epochs=1,
                             backend="local", workers=2), dataset=ds)
    base = tree_pss()
    assert base is not None
    with PeakSampler(interval=0.02) as peak:
        result = run_simulation(SimConfig(model="logreg", clients=4000, per_round=20,
                                          rounds=3, epochs=1, alpha=None,
                                          backend="local", workers=2), dataset=ds)
    assert len(result.history) == 3
    assert peak.peak is not None
    growth = peak.peak - base
    # Two workers' own state: ~15 MB each alone, up to ~30 MB each forked from a large
    # process (pages its objects share get copied as workers touch them). A copy of the
    # data per worker would add 2 x 102 MB; per client, more.
    assert growth < 0.9 * size, f"tree grew {growth / 1e6:.0f} MB for {size / 1e6:.0f} MB"


# --------------------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _node_ip_address="127.0.0.1")
    # This module's functions (the killing train_fn) travel to the actors by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def test_ray_engine_gives_the_local_model(ray_cluster: Any, digits: Dataset,
                                          inline: Any) -> None:
    local = run_simulation(SimConfig(**TASK, backend="local", workers=2), dataset=digits)
    on_ray = run_simulation(SimConfig(**TASK, backend="ray", workers=2), dataset=digits)
    np.testing.assert_allclose(_flat(on_ray), _flat(local), atol=2e-6)
    np.testing.assert_allclose(_flat(on_ray), _flat(inline), atol=2e-6)
    assert on_ray.extra["backend"] == "ray" and on_ray.extra["workers"] == 2
    assert ray_cluster.is_initialized()  # a cluster it joined is left running


def test_ray_actor_killed_mid_round_is_replaced(ray_cluster: Any, digits: Dataset,
                                               inline: Any, tmp_path: Path) -> None:
    victim = _victim(digits)
    marker = tmp_path / "killed"
    result = run_simulation(SimConfig(**TASK, backend="ray", workers=2), dataset=digits,
                            train_fn=_killer(marker, victim))
    assert marker.exists()
    assert sum(r.worker_restarts for r in result.history) == 1
    assert all(r.clients_lost == 0 for r in result.history)
    np.testing.assert_allclose(_flat(result), _flat(inline), atol=2e-6)


def test_spawned_workers_map_the_arrays_from_files(digits: Dataset) -> None:
    """Where a process cannot fork, the arrays go to .npy files every worker maps
    read-only; the shares come back as from forked workers."""
    from privml.data import partition
    from privml.models import build_torch, zoo
    from privml.sim._parallel import csr
    from privml.sim._pool import ProcessPool
    from privml.sim._worker import WorkerSetup
    from privml.train import get_params

    spec = zoo("logreg", input_shape=digits.input_shape, num_classes=10)
    setup = WorkerSetup(train_cfg=TrainConfig(epochs=1, batch_size=16), spec_json=spec.to_json(),
                        vectorize="off")
    part = partition(digits.y_train, 20, alpha=None, rng=np.random.default_rng(0))
    arrays = (digits.x_train, digits.y_train, *csr(part))
    flat = pm.flatten(get_params(build_torch(spec)))
    heads: list[dict[str, Any] | None] = [
        {"mode": "sum", "bound": None, "clients": [[0, 1], [1, 2]]},
        {"mode": "each", "bound": None, "clients": [[2, 3]]}]
    answers = []
    for method in ("spawn", "fork"):
        pool = ProcessPool(setup, arrays, 2, start_method=method)
        try:
            if method == "spawn":
                assert pool.shared is not None
                maps = Path(f"/proc/{pool.pids()[0]}/maps").read_text()
                assert str(pool.shared.directory / "x.npy") in maps
            answers.append(pool.run(heads, flat))
        finally:
            pool.close()
        if method == "spawn":
            assert pool.shared is not None and not pool.shared.directory.exists()
    for slot in (0, 1):
        (ra, aa), (rb, ab) = answers[0][slot], answers[1][slot]  # type: ignore[misc]
        assert ra["clients"] == rb["clients"] and ra["num_examples"] == rb["num_examples"]
        np.testing.assert_array_equal(aa, ab)


@pytest.mark.slow
def test_cli_joins_a_running_ray_cluster(tmp_path: Path) -> None:
    """`ray start --head` (its own processes, as on a real cluster's head node), then
    `privml sim --backend ray --ray-address ...` as a real process that joins it."""
    import json
    import shutil
    import socket
    import subprocess
    import tempfile

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_bin = Path(sys.executable).parent / "ray"
    # Ray's unix sockets live under its temp dir: it must be short (AF_UNIX paths).
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_tmp}
    started = subprocess.run(
        [str(ray_bin), "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--include-dashboard", "false", "--disable-usage-stats"],
        check=False, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        out = tmp_path / "sim.json"
        res = subprocess.run(
            [str(Path(sys.executable).parent / "privml"), "sim", "--backend", "ray",
             "--ray-address", "auto", "--workers", "2", "--clients", "30",
             "--per-round", "6", "--rounds", "2", "--epochs", "1", "--json", str(out),
             "--db", str(tmp_path / "runs.db"), "--no-progress"],
            check=False, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        summary = json.loads(out.read_text())
        assert summary["backend"] == "ray" and summary["workers"] == 2
        assert summary["rounds_completed"] == 2
    finally:
        # Only this cluster's processes (`ray stop` would stop every Ray on the machine).
        subprocess.run(["pkill", "-9", "-f", ray_tmp], check=False, timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)

"""Secure aggregation inside the coordinator (no sockets), and over mutual TLS with real
clients: the coordinator only ever holds the sum, and FedAvg comes out as without it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from privml import ProtocolError, SecAggError
from privml import params as pm
from privml.data import load_dataset
from privml.models import build_torch, zoo
from privml.params import Params
from privml.secagg import (
    FixedPoint,
    KeyDirectory,
    SecAggClient,
    ShareInbox,
    UnmaskRequest,
    decode,
    encode,
)
from privml.train import get_params
from privml.transport._coordinator import Coordinator, RunConfig, UpdateMeta

IDS = ["alice", "bob", "carol", "dave"]
Encoder = Callable[[np.ndarray, int], np.ndarray]


def _model() -> tuple[str, Params]:
    ds = load_dataset("digits", seed=0)
    spec = zoo("logreg", input_shape=ds.input_shape, num_classes=10)
    return spec.to_json(), get_params(build_torch(spec))


def _coordinator(**kw: object) -> Coordinator:
    spec, initial = _model()
    cfg = RunConfig(**{"rounds": 2, "clients_per_round": 4, "secagg": True,
                       "round_timeout": 10.0, "secagg_stage_timeout": 5.0, **kw})
    coord = Coordinator(cfg, run_id="run-sa", model_spec_json=spec, initial=initial)
    for cid in IDS:
        coord.enrol(cid, 0.0)
    return coord


def _deltas(coord: Coordinator, seed: int = 0) -> dict[str, tuple[Params, int]]:
    rng = np.random.default_rng(seed)
    return {cid: ({k: rng.normal(0, 0.3, v.shape).astype(np.float32)
                   for k, v in coord.params.items()}, int(rng.integers(20, 200)))
            for cid in coord.machine.sampled}


def _fixed_point(settings: dict[str, object]) -> Encoder:
    fp = FixedPoint(**{k: settings[k] for k in ("clip", "clients", "max_weight", "bits",
                                                 "noise_bound", "frac_bits")})
    return fp.encode


def _play(coord: Coordinator, deltas: dict[str, tuple[Params, int]], *,
          silent_after: dict[str, str] | None = None, now: float = 1.0,
          encoder: Callable[[dict[str, object]], Encoder] = _fixed_point) -> None:
    """Each client walks the SecAgg+ stages through the coordinator's API; a client in
    ``silent_after`` stops after posting that step."""
    silent_after = silent_after or {}
    rnd = coord.machine.round
    tasks = {cid: coord.task(cid, now) for cid in deltas}
    settings = tasks[IDS[0]]["secagg"]
    encode_update = encoder(settings)
    clients = {cid: SecAggClient(run=coord.run_id, round_=rnd, client_id=cid) for cid in deltas}
    alive = set(deltas)
    steps = ["advertise-keys", "share-keys", "masked-input", "unmask-shares"]
    gets = [None, "key-directory", "share-inbox", "unmask-request"]
    for step, get in zip(steps, gets, strict=True):
        secure = coord._secure
        assert secure is not None
        if secure.outcome is not None:
            break  # aborted
        stage = secure.server.stage
        for cid in sorted(alive):
            c = clients[cid]
            if get is None:
                msg = c.advertise()
            else:
                data = coord.secagg_get(cid, get, rnd, now)
                assert data is not None
                got = decode(data)
                if isinstance(got, KeyDirectory):
                    msg = c.share_keys(got)
                elif isinstance(got, ShareInbox):
                    delta, n = deltas[cid]
                    msg = c.masked_input(got, encode_update(
                        pm.flatten({k: delta[k] for k in coord.params}), n))
                else:
                    assert isinstance(got, UnmaskRequest)
                    msg = c.unmask(got)
            coord.secagg_post(cid, step, encode(msg), now)
        alive -= {c for c, s in silent_after.items() if s == step}
        if secure.server.stage is stage:  # the silent ones hold it open: its deadline passes
            now += coord.config.secagg_stage_timeout + 0.1
            coord.tick(now)


def _fedavg(params: Params, deltas: dict[str, tuple[Params, int]], ids: list[str],
            clip: float) -> Params:
    total = sum(deltas[c][1] for c in ids)
    out = {}
    for k, v in params.items():
        acc = sum(np.clip(deltas[c][0][k].astype(np.float64), -clip, clip) * deltas[c][1]
                  for c in ids)
        out[k] = (v + acc / total).astype(np.float32)
    return out


def test_secure_round_equals_fedavg_up_to_quantization() -> None:
    coord = _coordinator()
    before = coord.params
    deltas = _deltas(coord)
    _play(coord, deltas)
    assert coord.history[-1].outcome.value == "completed"
    assert sorted(coord.history[-1].accepted) == sorted(deltas)
    expected = _fedavg(before, deltas, sorted(deltas), coord.config.secagg_clip)
    bound = coord.config.encoding().error_bound(4, sum(n for _, n in deltas.values()))
    for k in expected:
        np.testing.assert_allclose(coord.params[k], expected[k], atol=bound + 1e-6)
    assert coord.status()["secagg"] == {"round": 2, "stage": "advertise", "waiting": 4,
                                        "aborted": None}  # the next round


def test_a_client_silent_after_sharing_keys_is_unmasked_away() -> None:
    coord = _coordinator(shamir_threshold=2, min_survivors=2)
    before = coord.params
    deltas = _deltas(coord, seed=1)
    _play(coord, deltas, silent_after={"dave": "share-keys"})
    last = coord.history[-1]
    assert last.outcome.value == "completed" and "dave" not in last.accepted
    survivors = [c for c in sorted(deltas) if c != "dave"]
    expected = _fedavg(before, deltas, survivors, coord.config.secagg_clip)
    for k in expected:
        np.testing.assert_allclose(coord.params[k], expected[k], atol=1e-4)


def test_too_many_silent_clients_abort_the_round_and_keep_the_model() -> None:
    coord = _coordinator(min_survivors=4)
    before = coord.params
    _play(coord, _deltas(coord), silent_after={"dave": "share-keys"})
    assert coord.history[-1].outcome.value == "failed"
    for k in before:
        np.testing.assert_array_equal(coord.params[k], before[k])
    assert "min_survivors" in coord.status()["secagg"]["aborted"]


def test_plain_updates_and_bad_secagg_posts_are_refused() -> None:
    coord = _coordinator()
    with pytest.raises(ProtocolError) as err:
        coord.submit("alice", UpdateMeta("run-sa", 1, "a" * 16, 10), b"x", 1.0)
    assert err.value.code == "secagg_required"
    adv = SecAggClient(run="run-sa", round_=1, client_id="alice").advertise()
    with pytest.raises(SecAggError) as sa_err:
        coord.secagg_post("bob", "advertise-keys", encode(adv), 1.0)  # posing as alice
    assert sa_err.value.code == "wrong_sender"
    with pytest.raises(SecAggError) as sa_err:
        coord.secagg_post("alice", "share-keys", encode(adv), 1.0)
    assert sa_err.value.code == "wrong_stage"
    coord.secagg_post("alice", "advertise-keys", encode(adv), 1.0)
    with pytest.raises(SecAggError) as sa_err:
        coord.secagg_post("alice", "advertise-keys", encode(adv), 1.0)
    assert sa_err.value.code == "replay"
    assert coord.secagg_get("alice", "key-directory", 1, 1.0) is None  # still open
    assert coord.task("alice", 1.0)["action"] == "wait"  # done training: it takes part


def test_secagg_settings_are_checked_when_the_run_is_configured() -> None:
    with pytest.raises(ValueError, match="norm_bound"):
        RunConfig(secagg=True, norm_bound=1.0)
    with pytest.raises(ValueError):
        RunConfig(secagg=True, clients_per_round=500, secagg_clip=1e6)  # the sum could wrap


# ---- over mutual TLS, real clients --------------------------------------------------------

@pytest.fixture(scope="module")
def fed_paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from privml.transport.tls import init_federation, issue_client

    paths = init_federation(tmp_path_factory.mktemp("sa") / "federation")
    for name in IDS[:3]:
        issue_client(paths.dir, name)
    yield paths


def _federate(paths: object, *, secagg: bool) -> Coordinator:
    from privml.data import partition
    from privml.transport._serve import ServerThread
    from privml.transport.client import FederatedClient
    from privml.transport.server import ServerState, create_device_app
    from privml.transport.tls import Revocations, server_ssl_context

    spec, initial = _model()
    cfg = RunConfig(rounds=2, clients_per_round=3, epochs=1, round_timeout=30.0,
                    secagg=secagg, secagg_stage_timeout=10.0)
    coord = Coordinator(cfg, run_id="run-tls", model_spec_json=spec, initial=initial)
    state = ServerState(coord, Revocations(paths.revoked).is_revoked,  # type: ignore[attr-defined]
                        tick_seconds=0.05)
    ds = load_dataset("digits", seed=0)
    part = partition(ds.y_train, 3, alpha=None, rng=np.random.default_rng(0))
    data = list(part.clients(ds.x_train, ds.y_train))

    def run(name: str, index: int) -> None:
        cert, key = paths.client(name)  # type: ignore[attr-defined]
        with FederatedClient(server.url, ca=paths.ca_cert, cert=cert, key=key,  # type: ignore[attr-defined]
                             data=data[index]) as c:
            c.run(max_seconds=120)

    server = ServerThread(create_device_app(state),
                          ssl_context=server_ssl_context(paths, require_client_cert=True))  # type: ignore[arg-type]
    with server:
        threads = [threading.Thread(target=run, args=(n, i)) for i, n in enumerate(IDS[:3])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    assert coord.finished
    return coord


def test_over_mtls_secure_aggregation_gives_the_plain_fedavg_model(fed_paths: object,
                                                                    tmp_path: Path) -> None:
    secure = _federate(fed_paths, secagg=True)
    plain = _federate(fed_paths, secagg=False)
    assert [c.outcome.value for c in secure.history] == ["completed", "completed"]
    assert all(len(c.accepted) == 3 for c in secure.history)
    for k in plain.params:  # same clients, same seeds: only clipping and rounding differ
        np.testing.assert_allclose(secure.params[k], plain.params[k], atol=1e-4)


def test_secagg_endpoints_refuse_bad_messages_over_mtls(fed_paths: object) -> None:
    """Each refusal answers with its code, lands in the security log and leaves the stage
    waiting for the same clients."""
    import httpx

    from privml.transport._serve import ServerThread
    from privml.transport.server import ServerState, create_device_app
    from privml.transport.tls import Revocations, client_ssl_context, server_ssl_context

    spec, initial = _model()
    coord = Coordinator(RunConfig(rounds=1, clients_per_round=3, secagg=True),
                        run_id="run-http", model_spec_json=spec, initial=initial)
    state = ServerState(coord, Revocations(fed_paths.revoked).is_revoked)  # type: ignore[attr-defined]
    server = ServerThread(create_device_app(state), ssl_context=server_ssl_context(
        fed_paths, require_client_cert=True))  # type: ignore[arg-type]
    hdr = {"X-Privml-Protocol": "1", "Content-Type": "application/octet-stream"}
    with server:
        clients = {}
        for name in IDS[:3]:
            cert, key = fed_paths.client(name)  # type: ignore[attr-defined]
            clients[name] = httpx.Client(base_url=server.url, timeout=10, verify=client_ssl_context(
                fed_paths.ca_cert, cert=cert, key=key))  # type: ignore[attr-defined]
            clients[name].post("/v1/enrol", headers=hdr)
        alice = clients["alice"]
        adv = encode(SecAggClient(run="run-http", round_=1, client_id="alice").advertise())
        cases = [("advertise-keys", adv[:-3], "truncated"),
                 ("advertise-keys", b"garbage", "bad_message"),
                 ("share-keys", adv, "wrong_stage")]
        for step, body, code in cases:
            r = alice.post(f"/v1/secagg/{step}", content=body, headers=hdr)
            assert r.status_code == 409 and r.json()["error"] == code, r.text
        bob_posts_alice = clients["bob"].post("/v1/secagg/advertise-keys", content=adv,
                                              headers=hdr)
        assert bob_posts_alice.json()["error"] == "wrong_sender"
        assert alice.post("/v1/secagg/advertise-keys", content=adv, headers=hdr).status_code \
            == 200
        again = alice.post("/v1/secagg/advertise-keys", content=adv, headers=hdr)
        assert again.json()["error"] == "replay"
        r = alice.get("/v1/secagg/key-directory", params={"round": 1}, headers=hdr)
        assert r.status_code == 202  # bob and carol have not advertised yet
        assert alice.get("/v1/secagg/nonsense", params={"round": 1},
                         headers=hdr).status_code == 422
        plain = alice.post("/v1/update", content=b"x", headers={
            **hdr, "X-Privml-Run": "run-http", "X-Privml-Round": "1",
            "X-Privml-Update-Id": "u" * 16, "X-Privml-Examples": "3"})
        assert plain.json()["error"] == "secagg_required"
        codes = [e.code for e in state.security_log]
        assert codes.count("replay") == 1 and "wrong_sender" in codes
        assert coord.status()["secagg"]["waiting"] == 2  # bob and carol, as before
        for c in clients.values():
            c.close()


def test_a_coordinator_killed_mid_secagg_resumes_and_redoes_the_round(tmp_path: Path) -> None:
    """Nothing of an open SecAgg+ round is on disk (the coordinator never holds an update):
    after a restart the round starts over with fresh keys, and its model is the one the
    uninterrupted run makes from the same updates."""
    from privml.transport._store import CoordinatorStore

    spec, initial = _model()
    cfg = RunConfig(rounds=1, clients_per_round=4, secagg=True, round_timeout=10.0,
                    secagg_stage_timeout=5.0)
    with CoordinatorStore(tmp_path / "server.db") as store:
        first = Coordinator(cfg, run_id="run-crash", model_spec_json=spec, initial=initial,
                            store=store)
        for cid in IDS:
            first.enrol(cid, 0.0)
        deltas = _deltas(first, seed=5)
        for cid in IDS[:2]:  # two clients advertise keys, then the coordinator dies
            adv = SecAggClient(run="run-crash", round_=1, client_id=cid).advertise()
            first.secagg_post(cid, "advertise-keys", encode(adv), 1.0)
    with CoordinatorStore(tmp_path / "server.db") as store:
        again = Coordinator.resume(store, "run-crash")
        for cid in IDS:
            again.enrol(cid, 2.0)
        assert again.task("alice", 2.0)["action"] == "train"  # not "wait": keys are new
        _play(again, deltas, now=2.0)
        assert again.finished and again.history[-1].outcome.value == "completed"
        expected = _fedavg(initial, deltas, sorted(deltas), cfg.secagg_clip)
        for k in expected:
            np.testing.assert_allclose(again.params[k], expected[k], atol=1e-5)
        assert store.run("run-crash").status == "finished"


# ---- client-level DP with secure aggregation: the distributed discrete Gaussian -----------

def _ddg(settings: dict[str, object]) -> Encoder:
    from privml.dp import DistributedDiscreteGaussian, secure_rng

    ddg = DistributedDiscreteGaussian.from_json(settings)
    return lambda flat, n: ddg.encode(flat.astype(np.float64), rng=secure_rng())


def test_distributed_dp_round_sums_client_noise_and_charges_the_survivors() -> None:
    """Each client noises its own clipped update (the coordinator never holds a noise-free
    sum); the round is charged for the 3 survivors whose noise is in the sum."""
    from privml.dp import DistributedDiscreteGaussian

    coord = _coordinator(noise_multiplier=0.05, clip_norm=1.0, shamir_threshold=2,
                         min_survivors=2)
    assert coord.privacy is not None and coord.privacy.distributed
    before = coord.params
    deltas = _deltas(coord, seed=3)
    _play(coord, deltas, silent_after={"dave": "share-keys"}, encoder=_ddg)
    last = coord.history[-1]
    assert last.outcome.value == "completed" and sorted(last.accepted) == IDS[:3]
    entry = coord.privacy.dp.ledger[-1]
    ddg = coord.privacy.dp.ddg
    assert isinstance(ddg, DistributedDiscreteGaussian)
    assert entry["placement"] == "distributed" and entry["survivors"] == 3
    assert "withholds its noise" in coord.status()["privacy"]["assumption"]
    assert entry["event"] == {"type": "zcdp", "rho": ddg.rho(survivors=3), "xi": 0.0}
    # The step is the survivors' clipped updates summed, over the expected 4, plus noise of
    # std gamma*sqrt(3)*sigma per coordinate (z*C*sqrt(3/2) here: calibrated for 2 noisers).
    flat = {c: pm.flatten({k: deltas[c][0][k] for k in coord.params}).astype(np.float64)
            for c in IDS[:3]}
    clipped = sum(v * min(1.0, 1.0 / np.linalg.norm(v)) for v in flat.values())
    step = pm.flatten(coord.params).astype(np.float64) - pm.flatten(before)
    std = ddg.gamma * np.sqrt(3) * ddg.sigma / 4
    resid = step - clipped / 4
    assert abs(resid.std() - std) < 0.2 * std  # the noise is there, and it is that size
    assert abs(resid.mean()) < 5 * std / np.sqrt(resid.size)


def test_distributed_dp_an_aborted_round_reveals_nothing_and_is_not_charged() -> None:
    coord = _coordinator(noise_multiplier=0.5, min_survivors=4)
    _play(coord, _deltas(coord), silent_after={"dave": "share-keys"}, encoder=_ddg)
    assert coord.history[-1].outcome.value == "failed"
    assert coord.privacy is not None and coord.privacy.dp.ledger == []


def test_distributed_dp_admits_each_round_for_the_fewest_survivors() -> None:
    """Calibrated so that every round with only min_survivors noisers still fits: two full
    rounds spend less than the target, and nothing is refused."""
    coord = _coordinator(target_epsilon=4.0, clip_norm=1.0)
    assert coord.privacy is not None
    for seed in (0, 1):
        _play(coord, _deltas(coord, seed=seed), encoder=_ddg, now=1.0 + 100 * seed)
    assert coord.finished and coord.budget_refused is None
    eps = coord.privacy.dp.accountant.epsilon(delta=1e-5)
    worst = coord.privacy.dp.ddg.epsilon(delta=1e-5, survivors=2, rounds=2)  # type: ignore[union-attr]
    assert eps < worst <= 4.0 and worst > 4.0 - 0.05
    assert [e["survivors"] for e in coord.privacy.dp.ledger] == [4, 4]


def test_distributed_dp_a_round_past_the_budget_gets_no_task() -> None:
    probe = _coordinator(noise_multiplier=1.0)
    assert probe.privacy is not None and probe.privacy.dp.ddg is not None
    one = probe.privacy.dp.ddg.epsilon(delta=1e-5, survivors=2, rounds=1)
    two = probe.privacy.dp.ddg.epsilon(delta=1e-5, survivors=2, rounds=2)
    coord = _coordinator(noise_multiplier=1.0, target_epsilon=(one + two) / 2)
    _play(coord, _deltas(coord), encoder=_ddg)
    assert coord.history[0].outcome.value == "completed"
    before = coord.params
    assert coord.finished and coord.budget_refused is not None
    assert coord.budget_refused["round"] == 2
    assert coord.task("alice", 50.0)["action"] == "done"
    assert coord.params is before and coord.privacy is not None
    assert len(coord.privacy.dp.ledger) == 1

"""SecAgg+ machines: exact sums with dropouts at every stage, privacy of the server's view,
and refusal of replayed, truncated and forged messages without breaking the round."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml import RoundAbortedError, SecAggError
from privml.secagg import (
    AdvertiseKeys,
    ClientStage,
    KeyDirectory,
    MaskedInput,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
    hazmat,
    run_round,
)
from privml.secagg._client import mask_key, self_mask_key
from privml.secagg._graph import graph_seed, neighbours

RUN = "run-1"
STAGES = [ClientStage.ADVERTISE, ClientStage.SHARE_KEYS, ClientStage.MASKED_INPUT,
          ClientStage.UNMASK]


def _inputs(n: int, d: int, seed: int = 0, bits: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dtype = np.uint32 if bits == 32 else np.uint64
    return {f"c{i:03d}": rng.integers(0, 2**bits, size=d, dtype=dtype) for i in range(n)}


def _sum(vectors: list[np.ndarray]) -> np.ndarray:
    acc = np.zeros_like(vectors[0])
    for v in vectors:
        np.add(acc, v, out=acc)
    return acc


# ---- the graph ---------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "k"), [(10, 4), (10, 3), (11, 4), (100, 14), (500, 20), (5, 4),
                                      (5, 9)])
def test_graph_is_regular_symmetric_and_checkable(n: int, k: int) -> None:
    ids = [f"c{i}" for i in range(n)]
    seed = graph_seed(RUN, 1, ids)
    g = neighbours(ids, k, seed)
    assert {len(v) for v in g.values()} == {min(k, n - 1)}
    assert all(a in g[b] for a in g for b in g[a])
    assert all(a not in g[a] for a in g)
    assert neighbours(list(reversed(ids)), k, seed) == g  # order of the list does not matter
    if k < n - 1:
        assert neighbours(ids, k, graph_seed(RUN, 2, ids)) != g  # another round, another graph


def test_default_parameters() -> None:
    p = SecAggConfig().resolve(100, bits=32, length=10)
    assert (p.neighbours, p.shamir_threshold, p.min_survivors) == (16, 9, 50)
    assert SecAggConfig().resolve(3, bits=32, length=1).neighbours == 2  # complete graph
    with pytest.raises(RoundAbortedError, match="at least 2"):
        SecAggConfig().resolve(1, bits=32, length=1)
    with pytest.raises(ValueError, match="shamir_threshold"):
        SecAggConfig(neighbours=4, shamir_threshold=5)
    with pytest.raises(ValueError, match="min_survivors"):
        SecAggConfig(min_survivors=1)  # the sum of one client is that client's input


# ---- exact sums --------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "bits"), [(3, 32), (10, 32), (100, 32), (10, 64)])
def test_sum_is_exact_without_dropouts(n: int, bits: int) -> None:
    inputs = _inputs(n, 257, bits=bits)
    res = run_round(inputs, run=RUN, round_=1, bits=bits)
    assert res.survivors == tuple(sorted(inputs))
    np.testing.assert_array_equal(res.total, _sum(list(inputs.values())))


def test_masks_removed_on_several_threads_give_the_same_sum() -> None:
    from concurrent.futures import ThreadPoolExecutor

    inputs = _inputs(12, 1000, seed=3)
    drop = {"c000": ClientStage.MASKED_INPUT}  # its pairwise masks are removed too
    with ThreadPoolExecutor(3) as pool:
        res = run_round(inputs, run=RUN, round_=1, drop_at=drop, map_fn=pool.map, lanes=3)
    np.testing.assert_array_equal(res.total, _sum([inputs[c] for c in res.survivors]))


def _predicted(inputs: Mapping[str, np.ndarray], drop: Mapping[str, ClientStage],
               cfg: SecAggConfig) -> tuple[str, ...] | None:
    """The survivors, or None when the round must abort — worked out independently."""
    alive = [lambda c, s=s: STAGES.index(drop.get(c, ClientStage.UNMASK)) > STAGES.index(s)
             for s in STAGES[:3]]
    u1 = sorted(c for c in inputs if alive[0](c))
    try:
        p = cfg.resolve(len(u1), bits=32, length=1)
    except RoundAbortedError:
        return None
    g = neighbours(u1, p.neighbours, graph_seed(RUN, 1, u1))
    u2 = {c for c in u1 if alive[1](c)}
    u3 = {c for c in u2 if alive[2](c)}
    u4 = {c for c in u3 if c not in drop}
    if min(len(u2), len(u3)) < p.min_survivors:
        return None
    if any(len(g[c] & u2 & u3) < p.shamir_threshold for c in u2):
        return None
    if any(len(g[c] & u2 & u4) < p.shamir_threshold for c in u2):
        return None
    return tuple(sorted(u3))


def _check_round(inputs: dict[str, np.ndarray], drop: dict[str, ClientStage],
                 cfg: SecAggConfig) -> bool:
    expected = _predicted(inputs, drop, cfg)
    if expected is None:
        with pytest.raises(RoundAbortedError):
            run_round(inputs, run=RUN, round_=1, config=cfg, drop_at=drop)
        return False
    res = run_round(inputs, run=RUN, round_=1, config=cfg, drop_at=drop)
    assert res.survivors == expected
    np.testing.assert_array_equal(res.total, _sum([inputs[c] for c in expected]))
    return True


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(("n", "cfg"), [
    (3, SecAggConfig(shamir_threshold=1)),  # three clients can lose one only with t = 1
    (10, SecAggConfig()),
    (100, SecAggConfig()),
])
def test_sum_is_exact_with_dropouts_at_each_stage(n: int, cfg: SecAggConfig,
                                                  stage: ClientStage) -> None:
    inputs = _inputs(n, 64, seed=n)
    drop = {cid: stage for cid in sorted(inputs)[: max(1, n // 10)]}
    assert _check_round(inputs, drop, cfg)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_dropouts_give_the_exact_sum_or_a_clean_abort(data: st.DataObject) -> None:
    n = data.draw(st.sampled_from([3, 10]))
    cfg = SecAggConfig(shamir_threshold=1) if n == 3 else SecAggConfig()
    inputs = _inputs(n, 16, seed=n)
    who = data.draw(st.lists(st.sampled_from(sorted(inputs)), unique=True, max_size=n))
    drop = {c: data.draw(st.sampled_from(STAGES)) for c in who}
    _check_round(inputs, drop, cfg)


# ---- privacy of the server's view --------------------------------------------------------

class _Transcript:
    """Everything a curious coordinator sees in a round with some dropouts."""

    def __init__(self, n: int = 10, d: int = 4096) -> None:
        self.inputs = {c: np.zeros(d, dtype=np.uint32) for c in _inputs(n, 1)}
        self.inputs["c000"] = np.arange(d, dtype=np.uint32)  # an honest client's encoding
        cids = sorted(self.inputs)
        self.dropped = {cids[-1]}  # sends its shares, then drops
        self.server = SecAggServer(run=RUN, round_=1, participants=cids, length=d)
        self.clients = {c: SecAggClient(run=RUN, round_=1, client_id=c) for c in cids}
        self.seen: list[object] = []
        for c in cids:
            self._send(c, self.clients[c].advertise())
        inbox = self._close()
        for c in cids:
            self._send(c, self.clients[c].share_keys(inbox[c]))
        inbox = self._close()
        for c in cids:
            if c not in self.dropped:
                self._send(c, self.clients[c].masked_input(inbox[c], self.inputs[c]))
        inbox = self._close()
        for c in inbox:
            self._send(c, self.clients[c].unmask(inbox[c]))
        self._close()

    def _send(self, cid: str, msg: object) -> None:
        self.seen.append(msg)
        self.server.receive(msg, sender=cid)  # type: ignore[arg-type]

    def _close(self) -> dict[str, object]:
        out: dict[str, object] = self.server.advance()  # type: ignore[assignment]
        self.seen.extend(out.values())
        return out


def test_server_view_of_an_honest_client_is_uniform_and_not_its_input() -> None:
    t = _Transcript()
    (y,) = [m.vector for m in t.seen if isinstance(m, MaskedInput) and m.sender == "c000"]
    x = t.inputs["c000"]
    assert np.count_nonzero(y == x) < 5  # (each coordinate equal by chance: 2^-32)
    counts = np.bincount((y >> 28).astype(np.int64), minlength=16)  # top 4 bits
    expected = len(y) / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50.0  # 15 degrees of freedom: p < 1e-5 beyond this


def test_no_surviving_input_can_be_rebuilt_from_the_transcript() -> None:
    t = _Transcript()
    s = t.server
    assert s.total is not None
    order = {c: i + 1 for i, c in enumerate(sorted(t.inputs))}
    keys = {m.sender: (m.enc_key, m.mask_key) for m in t.seen if isinstance(m, AdvertiseKeys)}
    unmask = [m for m in t.seen if isinstance(m, UnmaskShares)]
    seed_shares: dict[str, list[tuple[int, bytes]]] = {}
    key_shares: dict[str, list[tuple[int, bytes]]] = {}
    for m in unmask:
        for owner, share in m.self_mask_shares:
            seed_shares.setdefault(owner, []).append((order[m.sender], share))
        for owner, share in m.mask_key_shares:
            key_shares.setdefault(owner, []).append((order[m.sender], share))
    # A client's two secrets are never both revealed: seeds of survivors, keys of the dropped.
    assert set(key_shares) == t.dropped
    assert not set(seed_shares) & t.dropped
    # Every mask the coordinator can compute: self masks of survivors (from seed shares) and
    # pairwise masks of dropped clients (from their rebuilt keys).
    p = s.params
    assert p is not None
    masks: list[tuple[str, np.ndarray]] = []
    for owner, shares in seed_shares.items():
        seed = hazmat.combine(shares, threshold=p.shamir_threshold)
        masks.append((owner, hazmat.mask(self_mask_key(RUN, 1, seed, keys[owner][1]), 4096)))
    for owner, shares in key_shares.items():
        priv = hazmat.combine(shares, threshold=p.shamir_threshold)
        for peer in s.graph[owner]:
            k = mask_key(RUN, 1, priv, (owner, keys[owner][1]), (peer, keys[peer][1]))
            masks.append((peer, hazmat.mask(k, 4096)))
    survivors = sorted(set(t.inputs) - t.dropped)
    masked = {m.sender: m.vector for m in t.seen if isinstance(m, MaskedInput)}
    for cid in survivors:
        mine = [m for owner, m in masks if owner == cid]
        # Try every subset and every sign of the masks it knows for this client.
        for r in range(len(mine) + 1):
            for subset in itertools.combinations(mine, r):
                for signs in itertools.product((1, -1), repeat=r):
                    guess = masked[cid].copy()
                    for sign, m in zip(signs, subset, strict=True):
                        guess = guess - m if sign > 0 else guess + m
                    assert not np.array_equal(guess, t.inputs[cid]), cid
    # Pairwise masks between survivors are never computable: no key shares of survivors,
    # and the sealed shares do not open under any key derivable from public values.
    some = next(m for m in t.seen if isinstance(m, ShareInbox) and m.sealed)
    sender, blob = some.sealed[0]
    aad = hazmat.binding(run=RUN, round_=1, stage="share-keys",
                         keys=(keys[sender][0], keys[some.recipient][0]))
    for guess in (keys[sender][0], keys[some.recipient][0], bytes(32)):
        with pytest.raises(SecAggError) as err:
            hazmat.open_sealed(hazmat.derive_key(guess, info=aad), blob, aad=aad)
        assert err.value.code == "bad_tag"
    # The one thing it learns: the survivors' sum.
    np.testing.assert_array_equal(s.total, _sum([t.inputs[c] for c in survivors]))


# ---- refused messages --------------------------------------------------------------------

class _Round:
    """A round driven by hand, over bytes, so that bad messages can be slipped in."""

    def __init__(self, n: int = 5) -> None:
        self.inputs = _inputs(n, 32, seed=7)
        self.ids = sorted(self.inputs)
        self.server = SecAggServer(run=RUN, round_=1, participants=self.ids, length=32)
        self.clients = {c: SecAggClient(run=RUN, round_=1, client_id=c) for c in self.ids}

    def send(self, cid: str, data: bytes, *, sender: str | None = None) -> None:
        self.server.receive(decode(data), sender=sender or cid)  # type: ignore[arg-type]

    def close(self) -> dict[str, object]:
        return {c: decode(encode(m)) for c, m in self.server.advance().items()}

    def finish(self) -> np.ndarray:
        """Run the round to its end with every client honest."""
        steps = {ClientStage.SHARE_KEYS: lambda c, m: c.share_keys(m),
                 ClientStage.MASKED_INPUT: lambda c, m: c.masked_input(m, self.inputs[c.client_id]),
                 ClientStage.UNMASK: lambda c, m: c.unmask(m)}
        inbox: dict[str, object] = {}
        for stage in STAGES:
            for cid in self.ids:
                client = self.clients[cid]
                if cid in self.server.waiting and client.stage is stage:
                    msg = client.advertise() if stage is ClientStage.ADVERTISE else \
                        steps[stage](client, inbox[cid])  # type: ignore[no-untyped-call]
                    self.send(cid, encode(msg))
            inbox = self.close()
        assert self.server.total is not None
        return self.server.total


def _code(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(SecAggError) as err:
        fn(*args, **kw)  # type: ignore[operator]
    return err.value.code


def test_refused_messages_have_distinct_codes_and_the_round_goes_on() -> None:
    r = _Round()
    a, b = r.ids[0], r.ids[1]
    adv = encode(r.clients[a].advertise())
    assert _code(r.send, a, adv[:-5]) == "truncated"
    assert _code(r.send, a, b"QQQ" + adv[3:]) == "bad_message"
    assert _code(r.send, a, adv + b"\0") == "bad_message"
    assert _code(r.send, b, adv) == "wrong_sender"  # b posts a's keys as its own
    mine = decode(adv)
    assert isinstance(mine, AdvertiseKeys)
    other_round = encode(AdvertiseKeys(RUN, 2, a, mine.enc_key, mine.mask_key))
    assert _code(r.send, a, other_round) == "wrong_round"
    assert _code(r.send, "mallory", encode(AdvertiseKeys(RUN, 1, "mallory", bytes(range(32)),
                                                         bytes(range(1, 33))))) \
        == "not_participant"
    r.send(a, adv)
    assert _code(r.send, a, adv) == "replay"
    assert r.server.waiting == frozenset(r.ids[1:])  # nothing else changed
    total = r.finish()
    np.testing.assert_array_equal(total, _sum(list(r.inputs.values())))


def test_a_stale_or_early_message_is_refused_as_wrong_stage() -> None:
    r = _Round()
    masked = MaskedInput(RUN, 1, r.ids[0], np.zeros(32, dtype=np.uint32))
    assert _code(r.send, r.ids[0], encode(masked)) == "wrong_stage"
    total = r.finish()
    np.testing.assert_array_equal(total, _sum(list(r.inputs.values())))


def test_a_forged_share_is_refused_by_its_recipient_who_then_takes_the_real_one() -> None:
    r = _Round()
    for c in r.ids:
        r.send(c, encode(r.clients[c].advertise()))
    dirs = r.close()
    for c in r.ids:
        r.send(c, encode(r.clients[c].share_keys(dirs[c])))  # type: ignore[arg-type]
    inbox = r.close()
    victim = r.ids[2]
    real = inbox[victim]
    assert isinstance(real, ShareInbox)
    sender, blob = real.sealed[0]
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    forged = ShareInbox(RUN, 1, victim, ((sender, flipped), *real.sealed[1:]))
    client = r.clients[victim]
    assert _code(client.masked_input, forged, r.inputs[victim]) == "bad_tag"
    assert client.stage is ClientStage.MASKED_INPUT  # unchanged
    stranger = ShareInbox(RUN, 1, victim, (("nobody", blob),))
    assert _code(client.masked_input, stranger, r.inputs[victim]) == "wrong_sender"
    misaddressed = ShareInbox(RUN, 1, r.ids[3], real.sealed)
    assert _code(client.masked_input, misaddressed, r.inputs[victim]) == "wrong_sender"
    total = _finish_from_masked(r, inbox)
    np.testing.assert_array_equal(total, _sum(list(r.inputs.values())))


def _finish_from_masked(r: _Round, inbox: dict[str, object]) -> np.ndarray:
    for c in r.ids:
        r.send(c, encode(r.clients[c].masked_input(inbox[c], r.inputs[c])))  # type: ignore[arg-type]
    inbox = r.close()
    for c in r.ids:
        r.send(c, encode(r.clients[c].unmask(inbox[c])))  # type: ignore[arg-type]
    r.close()
    assert r.server.total is not None
    return r.server.total


def test_a_client_answers_one_unmask_request_only() -> None:
    """Answering two survivor lists could hand out both secrets of one neighbour."""
    r = _Round()
    for c in r.ids:
        r.send(c, encode(r.clients[c].advertise()))
    dirs = r.close()
    for c in r.ids:
        r.send(c, encode(r.clients[c].share_keys(dirs[c])))  # type: ignore[arg-type]
    inbox = r.close()
    for c in r.ids:
        r.send(c, encode(r.clients[c].masked_input(inbox[c], r.inputs[c])))  # type: ignore[arg-type]
    req = r.close()
    c0 = r.clients[r.ids[0]]
    first = req[r.ids[0]]
    assert isinstance(first, UnmaskRequest)
    assert c0.unmask(first) == c0.unmask(first)  # a retry gets the same answer
    fewer = UnmaskRequest(RUN, 1, r.ids[0], first.survivors[:-1])
    assert _code(c0.unmask, fewer) == "replay"


def test_a_directory_that_is_not_the_rounds_graph_is_refused() -> None:
    r = _Round(n=10)
    for c in r.ids:
        r.send(c, encode(r.clients[c].advertise()))
    dirs = r.close()
    d = dirs[r.ids[0]]
    assert isinstance(d, KeyDirectory)
    fake = KeyDirectory(RUN, 1, r.ids[0], d.params, d.participants, d.keys[:-1])
    assert _code(r.clients[r.ids[0]].share_keys, fake) == "bad_message"
    dup = KeyDirectory(RUN, 1, r.ids[0], d.params, d.participants,
                       (*d.keys[:-1], (d.keys[-1][0], *d.keys[0][1:])))
    assert _code(r.clients[r.ids[0]].share_keys, dup) == "bad_key"
    r.clients[r.ids[0]].share_keys(d)  # the real one is still taken


def test_shares_to_the_wrong_clients_are_refused() -> None:
    r = _Round(n=10)
    for c in r.ids:
        r.send(c, encode(r.clients[c].advertise()))
    dirs = r.close()
    out = r.clients[r.ids[0]].share_keys(dirs[r.ids[0]])  # type: ignore[arg-type]
    short = ShareKeys(RUN, 1, r.ids[0], out.sealed[:-1])
    assert _code(r.send, r.ids[0], encode(short)) == "bad_message"
    r.send(r.ids[0], encode(out))


def test_too_few_survivors_abort_without_revealing_anything() -> None:
    inputs = _inputs(10, 8)
    drop = {c: ClientStage.MASKED_INPUT for c in sorted(inputs)[:6]}  # 4 left < 5
    with pytest.raises(RoundAbortedError, match="min_survivors"):
        run_round(inputs, run=RUN, round_=1, drop_at=drop)


# ---- byte encodings ----------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_decode_into_anything_but_a_refusal(data: bytes) -> None:
    with pytest.raises(SecAggError):
        decode(data)


def test_every_message_round_trips_and_every_truncation_is_refused() -> None:
    r = _Round(n=4)
    msgs: list[object] = []
    for c in r.ids:
        msgs.append(r.clients[c].advertise())
        r.send(c, encode(msgs[-1]))  # type: ignore[arg-type]
    for stage_msgs in r.close().values():
        msgs.append(stage_msgs)
    msgs.append(MaskedInput(RUN, 1, "c000", np.arange(5, dtype=np.uint64)))
    msgs.append(UnmaskShares(RUN, 1, "c000", (("c001", b"x" * 66),), (("c002", b"y" * 66),)))
    for m in msgs:
        data = encode(m)  # type: ignore[arg-type]
        back = decode(data)
        if isinstance(m, MaskedInput):
            assert isinstance(back, MaskedInput)
            np.testing.assert_array_equal(back.vector, m.vector)
        else:
            assert back == m
        for cut in range(len(data) - 1, max(0, len(data) - 40), -1):
            assert _code(decode, data[:cut]) in ("truncated", "bad_message")

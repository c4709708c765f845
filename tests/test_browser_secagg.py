"""The browser's SecAgg+ protocol (``privml/web/secagg/protocol.js``) checked in headless Debian
chromium against the Python twins it mirrors: every message type in both directions and the
refusal of malformed bytes with Python's codes (hand-made cases and seeded mutations), the
neighbour graph, ``FixedPoint.encode``, a browser client byte-identical stage by stage to a
Python client fed the same entropy, and whole rounds run by a Python ``SecAggServer`` with
Python and browser clients side by side, dropouts included."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from privml._exceptions import ConfigError, ParamsError, SecAggError
from privml.secagg import (
    AdvertiseKeys,
    FixedPoint,
    KeyDirectory,
    MaskedInput,
    RoundParams,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ServerStage,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
)
from privml.secagg._graph import graph_seed, neighbours
from privml.secagg._wire import Writer
from tests._browser import CHROMIUM, FLAGS, ROOT, static_server

RUN = "run-é"
KINDS = {c.__name__: c for c in (AdvertiseKeys, KeyDirectory, ShareKeys, ShareInbox,
                                 MaskedInput, UnmaskRequest, UnmaskShares)}

# Helpers every evaluated snippet starts with: `p` is the module; messages cross as JSON with
# bytes as {$b: hex} and vectors as {$u32: [...]} / {$u64: [...]} (decimal strings).
_PRELUDE = """
const p = await import("/protocol.js");
const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const dump = (x) => x instanceof Uint8Array ? {$b: hex(x)}
  : x instanceof Uint32Array ? {$u32: Array.from(x, String)}
  : x instanceof BigUint64Array ? {$u64: Array.from(x, String)}
  : Array.isArray(x) ? x.map(dump)
  : x !== null && typeof x === "object"
    ? Object.fromEntries(Object.entries(x).map(([k, v]) => [k, dump(v)])) : x;
const revive = (x) => Array.isArray(x) ? x.map(revive)
  : x === null || typeof x !== "object" ? x
  : "$b" in x ? unhex(x.$b) : "$u32" in x ? Uint32Array.from(x.$u32, Number)
  : "$u64" in x ? BigUint64Array.from(x.$u64, BigInt)
  : Object.fromEntries(Object.entries(x).map(([k, v]) => [k, revive(v)]));
const attempt = async (f) => {
  try { return "ok:" + hex(await f()); }
  catch (e) { return e instanceof p.SecAggError ? "code:" + e.code : e.name; }
};
const vector = (bits, values) => bits === 32 ? Uint32Array.from(values, Number)
  : BigUint64Array.from(values, BigInt);
"""


def _script(body: str) -> str:
    return "async (arg) => {" + _PRELUDE + body + "}"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("secagg-protocol")
    for name in ("crypto.js", "messages.js", "protocol.js"):
        shutil.copy(ROOT / "src" / "privml" / "web" / "secagg" / name, folder / name)
    (folder / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><title>secagg protocol check</title>')
    with sync_playwright() as pw, static_server(folder) as url:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            tab = browser.new_page()
            tab.goto(f"{url}/index.html")
            assert tab.evaluate("window.isSecureContext")
            yield tab
        finally:
            browser.close()


# ---- helpers -----------------------------------------------------------------------------

def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _jsv(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b": value.hex()}
    if isinstance(value, np.ndarray):
        return {f"$u{value.dtype.itemsize * 8}": [str(x) for x in value.tolist()]}
    if isinstance(value, RoundParams):
        return {_camel(f.name): getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_jsv(x) for x in value]
    return value


def _js(msg: Any) -> dict[str, Any]:
    """A message as the browser module spells it: its class name as `type`, camelCase fields."""
    out = {"type": type(msg).__name__}
    out.update({_camel(f.name): _jsv(getattr(msg, f.name)) for f in dataclasses.fields(msg)})
    return out


def _py_decode(data: bytes, expect: str | None = None) -> str:
    """What Python makes of ``data``: "ok:" + its (re-encoded) hex, or "code:" + the code."""
    try:
        return "ok:" + encode(decode(data, expect=KINDS[expect] if expect else None)).hex()
    except SecAggError as exc:
        return "code:" + exc.code


def _js_decode(page: Any, cases: list[tuple[bytes, str | None]]) -> list[str]:
    return list(page.evaluate(_script("""
      const out = [];
      for (const [data, expect] of arg) {
        out.push(await attempt(() => p.encodeMessage(p.decodeMessage(unhex(data),
                                                                     expect ?? undefined))));
      }
      return out;
    """), [[data.hex(), expect] for data, expect in cases]))


class _Stream:
    """Deterministic entropy: the next ``n`` bytes of a fixed string, counting what is used."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def __call__(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        assert len(out) == n, "the entropy stream ran out"
        self.pos += n
        return out


def _key(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _samples() -> list[Any]:
    """One or more messages of every type, with ids that trip naive UTF-8/UTF-16 handling."""
    # a leading BOM, a pair that UTF-16 orders the other way round, a 256-byte id
    participants = tuple(sorted(["\ufeffbom", "x\uffff", "x\U0001f600", "é" * 128, "a"]))
    params = RoundParams(neighbours=4, shamir_threshold=3, min_survivors=3, bits=64, length=9)
    rng = np.random.default_rng(1)
    out: list[Any] = [
        AdvertiseKeys(RUN, 7, "x\U0001f600", _key("e"), _key("m")),
        KeyDirectory(RUN, 2**32 - 1, "a", params, participants,
                     tuple((c, _key(c + "e"), _key(c + "m")) for c in participants[1:])),
        ShareKeys("r", 0, "\ufeffbom", (("a", b""), ("b", b"\x01"), ("c", bytes(4096)))),
        ShareInbox("r", 1, "a", (("x\uffff", _key("s")),)),
        ShareInbox("r", 1, "a", ()),
        UnmaskRequest(RUN, 3, "a", participants),
        UnmaskShares(RUN, 3, "a", (("b", bytes(66)), ("c", _key("c"))), (("d", b"\xff" * 66),)),
    ]
    for i, bits in enumerate([32, 64] * 4):  # runs of 8 lengths: every padding
        dtype = np.uint32 if bits == 32 else np.uint64
        vec = rng.integers(0, 2**bits, size=i * 3, dtype=dtype, endpoint=False)
        if vec.size:
            vec[0] = 2**bits - 1
        out.append(MaskedInput("r" * (i + 1), i, "c", vec))
    return out


# ---- 1. messages -------------------------------------------------------------------------

def test_every_message_round_trips_between_python_and_the_browser(page: Any) -> None:
    msgs = _samples()
    got = page.evaluate(_script("""
      return arg.map(([data, spec]) => {
        const msg = p.decodeMessage(unhex(data));
        return {decoded: dump(msg), again: hex(p.encodeMessage(msg)),
                fromSpec: hex(p.encodeMessage(revive(spec)))};
      });
    """), [[encode(m).hex(), _js(m)] for m in msgs])
    for msg, out in zip(msgs, got, strict=True):
        assert out["decoded"] == _js(msg)  # the same fields, values and types
        assert out["again"] == encode(msg).hex()
        built = decode(bytes.fromhex(out["fromSpec"]))  # built in the page from plain values
        assert type(built) is type(msg) and _js(built) == _js(msg)


def _head(kind: int, party: str = "c", *, run: str = "r", round_: int = 1) -> Writer:
    return Writer().raw(b"PSA").u8(1).u8(kind).text(run).u32(round_).text(party)


def _directory(ids: list[str], keys: list[tuple[str, bytes, bytes]], *, k: int = 2, t: int = 2,
               m: int = 2, bits: int = 32, length: int = 4) -> bytes:
    w = _head(2).u16(k).u16(t).u32(m).u8(bits).u32(length).u32(len(ids))
    for cid in ids:
        w.text(cid)
    w.u32(len(keys))
    for cid, enc, mask in keys:
        w.text(cid).blob(enc).blob(mask)
    return w.getvalue()


def _masked(bits: int, pad: int, fill: bytes, raw: bytes) -> bytes:
    return _head(5).u8(bits).u8(pad).raw(fill).big(raw).getvalue()


def _pairs(kind: int, *lists: list[tuple[str, bytes]]) -> bytes:
    w = _head(kind)
    for pairs in lists:
        w.u32(len(pairs))
        for cid, blob in pairs:
            w.text(cid).blob(blob)
    return w.getvalue()


def _malformed() -> list[tuple[str, bytes, str | None, str]]:
    k1, k2 = _key("1"), _key("2")
    adv = encode(AdvertiseKeys("r", 1, "c", k1, k2))
    pad = -(len(_head(5).getvalue()) + 6) % 8
    assert pad > 0  # so that "padding too short" below has one byte less
    return [
        ("empty", b"", None, "truncated"),
        ("shorter than the magic", b"PS", None, "truncated"),
        ("one byte short", adv[:-1], None, "truncated"),
        ("a trailing byte", adv + b"\0", None, "bad_message"),
        ("bad magic", b"PSB" + adv[3:], None, "bad_message"),
        ("bad version", adv[:3] + b"\x02" + adv[4:], None, "bad_message"),
        ("type 0", adv[:4] + b"\x00" + adv[5:], None, "bad_message"),
        ("type 8", adv[:4] + b"\x08" + adv[5:], None, "bad_message"),
        ("not the expected type", adv, "KeyDirectory", "wrong_stage"),
        ("the expected type", adv, "AdvertiseKeys", "ok"),
        ("short key", _head(1).blob(k1[:31]).blob(k2).getvalue(), None, "bad_key"),
        ("equal keys", _head(1).blob(k1).blob(k1).getvalue(), None, "bad_key"),
        ("empty run", _head(1, run="").blob(k1).blob(k2).getvalue(), None, "bad_message"),
        ("empty sender", _head(1, "").blob(k1).blob(k2).getvalue(), None, "bad_message"),
        ("257-byte id", _head(1, "é" * 128 + "e").blob(k1).blob(k2).getvalue(), None,
         "bad_message"),
        ("id not UTF-8", Writer().raw(adv[:12]).u16(2).raw(b"\xc3\x28").raw(adv[15:])
         .getvalue(), None, "bad_message"),
        ("id an encoded surrogate", Writer().raw(adv[:12]).u16(3).raw(b"\xed\xa0\x80")
         .raw(adv[15:]).getvalue(), None, "bad_message"),
        ("id with a BOM", _head(1, "\ufeffc").blob(k1).blob(k2).getvalue(), None, "ok"),
        ("unsorted participants", _directory(["b", "a"], []), None, "bad_message"),
        ("participants in UTF-16 order", _directory(["x\U0001f600", "x\uffff"], []), None,
         "bad_message"),
        ("participants in code-point order", _directory(["x\uffff", "x\U0001f600"], []), None,
         "ok"),
        ("a participant twice", _directory(["a", "a"], []), None, "bad_message"),
        ("a short key in the directory", _directory(["a", "c"], [("a", k1[:31], k2)]), None,
         "bad_key"),
        ("a neighbour twice", _directory(["a", "c"], [("a", k1, k2), ("a", k1, k2)]), None,
         "bad_message"),
        ("threshold above neighbours", _directory(["a"], [], k=2, t=3), None, "bad_message"),
        ("no neighbours", _directory(["a"], [], k=0, t=0), None, "bad_message"),
        ("min_survivors 1", _directory(["a"], [], m=1), None, "bad_message"),
        ("bits 16", _directory(["a"], [], bits=16), None, "bad_message"),
        ("length 0", _directory(["a"], [], length=0), None, "bad_message"),
        ("too many entries", _head(6).u32(65537).getvalue(), None, "bad_message"),
        ("entries missing", _head(6).u32(3).text("a").getvalue(), None, "truncated"),
        ("a survivor twice", _head(6).u32(2).text("a").text("a").getvalue(), None,
         "bad_message"),
        ("a blob of 4097 bytes", _pairs(3, [("a", bytes(4097))]), None, "bad_message"),
        ("a sender twice", _pairs(4, [("a", b"1"), ("a", b"2")]), None, "bad_message"),
        ("both secrets of one client", _pairs(7, [("a", b"1")], [("a", b"2")]), None,
         "bad_message"),
        ("masked bits 16", _masked(16, pad, bytes(pad), bytes(4)), None, "bad_message"),
        ("masked padding too short", _masked(32, pad - 1, bytes(pad - 1), bytes(4)), None,
         "bad_message"),
        ("masked padding not zero", _masked(32, pad, b"\x01" * pad, bytes(4)), None,
         "bad_message"),
        ("masked values not whole", _masked(64, pad, bytes(pad), bytes(12)), None,
         "bad_message"),
        ("masked values cut short", _masked(32, pad, bytes(pad), bytes(8))[:-1], None,
         "truncated"),
        ("masked fine", _masked(64, pad, bytes(pad), bytes(16)), None, "ok"),
    ]


def test_malformed_bytes_are_refused_with_pythons_codes(page: Any) -> None:
    cases = _malformed()
    js = _js_decode(page, [(data, expect) for _, data, expect, _ in cases])
    for (label, data, expect, code), got in zip(cases, js, strict=True):
        py = _py_decode(data, expect)
        assert got == py, label
        assert (py.startswith("ok:") if code == "ok" else py == "code:" + code), label


def test_mutated_messages_get_the_same_verdict_in_both(page: Any) -> None:
    """Seeded truncations, flips, insertions and deletions of valid messages: the browser
    accepts exactly what Python accepts, with the same bytes, and refuses with the same code."""
    rng = np.random.default_rng(2024)
    cases: list[tuple[bytes, str | None]] = []
    for msg in _samples():
        data = encode(msg)
        for _ in range(30):
            # half the edits land in the first 48 bytes, where the header and counts are
            at = int(rng.integers(0, min(len(data), 48) if rng.random() < 0.5 else len(data)))
            op = rng.integers(0, 4)
            byte = bytes([int(rng.integers(0, 256))])
            if op == 0:
                bad = data[:at]
            elif op == 1:
                bad = data[:at] + bytes([data[at] ^ int(rng.integers(1, 256))]) + data[at + 1:]
            elif op == 2:
                bad = data[:at] + byte + data[at:]
            else:
                bad = data[:at] + data[at + 1:]
            cases.append((bad, None))
    js = _js_decode(page, cases)
    verdicts = [_py_decode(data) for data, _ in cases]
    assert js == verdicts
    assert {v.split(":")[0] for v in verdicts} == {"ok", "code"}
    assert {"code:truncated", "code:bad_message"} <= set(verdicts)


# ---- 2. the graph ------------------------------------------------------------------------

GRAPHS = [(2, 1), (3, 2), (4, 3), (5, 2), (5, 4), (5, 9), (10, 3), (10, 4), (11, 3), (11, 4),
          (12, 5), (40, 7), (100, 14), (257, 8)]


def test_graph_seed_and_neighbours_match_python(page: Any) -> None:
    cases = [([f"c{i}" for i in range(n)], k, n) for n, k in GRAPHS]
    cases.append((["x\U0001f600", "x\uffff", "\ufeffb", "a", "zoë", "é"], 2, 9))
    want = []
    for ids, k, round_ in cases:
        seed = graph_seed(RUN, round_, ids)
        try:
            graph: Any = {c: sorted(v) for c, v in neighbours(ids, k, seed).items()}
        except ValueError:
            graph = "RangeError"
        want.append({"seed": seed.hex(), "graph": graph})
    rng = np.random.default_rng(5)
    got = page.evaluate(_script("""
      const out = [];
      for (const [ids, k, round] of arg) {
        const seed = await p.graphSeed("RUN", round, ids);
        let graph;
        try {
          graph = Object.fromEntries([...(await p.neighbours(ids, k, seed))].map(
            ([id, near]) => [id, [...near].sort(p.compareIds)]));
        } catch (e) { graph = e.name; }
        out.push({seed: hex(seed), graph});
      }
      return out;
    """.replace("RUN", RUN)), [[list(rng.permutation(ids)), k, r] for ids, k, r in cases])
    assert got == want
    assert sum(w["graph"] == "RangeError" for w in want) == 1  # (11, 3): none exists


# ---- 3. fixed point ----------------------------------------------------------------------

def _encode_js(page: Any, settings: dict[str, Any], x: np.ndarray, weight: Any) -> str:
    return str(page.evaluate(_script("""
      const raw = unhex(arg.x);
      const flat = arg.f32 ? new Float32Array(raw.buffer) : new Float64Array(raw.buffer);
      try {
        const out = new p.FixedPoint(arg.settings).encode(flat, arg.weight);
        return hex(new Uint8Array(out.buffer));
      } catch (e) { return e.name + ": " + e.message; }
    """), {"settings": settings, "x": x.astype(x.dtype.newbyteorder("<")).tobytes().hex(),
           "f32": x.dtype == np.float32, "weight": weight}))


@pytest.mark.parametrize("bits", [32, 64])
def test_fixed_point_encode_matches_python(page: Any, bits: int) -> None:
    rng = np.random.default_rng(bits)
    fp = FixedPoint(clip=2.0, clients=10, max_weight=100, bits=bits)
    x = np.concatenate([rng.normal(scale=1.5, size=400), [0.0, -0.0, 2.0, -2.0, 2.5, -3e38,
                                                          3e38, 5e-324, -1e-9, 1 / 3]])
    ties = FixedPoint(clip=4.0, clients=2, max_weight=4, bits=bits, frac_bits=1)
    halves = np.array([0.25, 0.75, 1.25, 1.75, -0.25, -0.75, -1.25, -1.75, 3.75, -3.75, 5.0])
    cases = [(fp, x, 37), (fp, x.astype(np.float32), 1), (fp, x, 10**6),
             (ties, halves, 1), (ties, halves, 3), (ties, halves.astype(np.float32), 1000)]
    for codec, values, weight in cases:
        want = codec.encode(values, weight)
        got = _encode_js(page, codec.describe(), values, weight)
        assert got == want.astype(want.dtype.newbyteorder("<")).tobytes().hex()
    # the ties really are ties, and go to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0 ...
    assert ties.encode(halves, 1).view(f"int{bits}").tolist() == \
        [0, 2, 2, 4, 0, -2, -2, -4, 8, -8, 8, 1]
    assert fp.encode(x, 10**6)[-1] == 100  # the weight is clipped to max_weight


def test_fixed_point_refuses_what_python_refuses(page: Any) -> None:
    fp = FixedPoint(clip=1.0, clients=4, bits=32)
    good = np.array([0.5, -0.5])
    for bad in (np.array([0.5, np.nan]), np.array([np.inf, 0.0]), np.array([-np.inf])):
        with pytest.raises(ParamsError, match="finite"):
            fp.encode(bad, 1)
        assert _encode_js(page, fp.describe(), bad, 1).startswith(
            "RangeError: an update must be finite")
    for weight in (0, -1, 1.5, True, "3"):
        with pytest.raises(ConfigError):
            fp.encode(good, weight)  # type: ignore[arg-type]
        assert _encode_js(page, fp.describe(), good, weight).startswith("RangeError: weight")
    assert _encode_js(page, fp.describe(), np.array([], dtype=np.float64), 1).startswith(
        "RangeError: an update must not be empty")
    wide = FixedPoint(clip=1.0, clients=4, bits=64).describe()
    for settings in ({**fp.describe(), "bits": 16}, {**fp.describe(), "frac_bits": 53},
                     {**fp.describe(), "clip": 0}, {**fp.describe(), "max_weight": 0},
                     {**wide, "bits": 32}, {}):
        assert _encode_js(page, settings, good, 1).startswith("RangeError"), settings


# ---- 4 and 6. a browser client twinned with a Python client ------------------------------

def _codes_py(fn: Callable[..., Any], data: bytes, kind: type, *args: Any) -> str:
    try:
        return "ok:" + encode(fn(decode(data, expect=kind), *args)).hex()
    except SecAggError as exc:
        return "code:" + exc.code


_TWIN_CALL = """
  const c = window.twin;
  const x = vector(arg.bits, arg.x);
  const call = {share: (d) => c.shareKeys(d), masked: (d) => c.maskedInput(d, x),
                unmask: (d) => c.unmask(d), short: (d) => c.maskedInput(d, x.subarray(1))};
  const out = [];
  for (const [how, data] of arg.calls) out.push(await attempt(() => call[how](unhex(data))));
  return {out, used: window.used(), stage: c.stage};
"""


@pytest.mark.parametrize("bits", [32, 64])
def test_browser_client_is_byte_identical_to_a_python_client(page: Any, bits: int) -> None:
    """Same entropy, same requests: the same bytes at every stage, the same refusals (state
    untouched: the next good request still gives Python's bytes), the same retries."""
    ids, twin, lost = ["a", "b", "c", "d", "e"], "c", "d"
    # Two all-ones blocks make _uniform reject its first draw in each of the two share_keys
    # attempts below (one refused for a low-order key, then the real one).
    rand = hashlib.shake_256(b"twin").digest(2048)
    stream = rand[:96] + b"\xff" * 66 + rand[96:360] + b"\xff" * 66 + rand[360:]
    py_twin = _Stream(stream)
    dtype = np.uint32 if bits == 32 else np.uint64
    rng = np.random.default_rng(bits)
    inputs = {c: rng.integers(0, 2**bits, size=9, dtype=dtype, endpoint=False) for c in ids}
    clients = {c: SecAggClient(run=RUN, round_=3, client_id=c) for c in ids if c != twin}
    clients[twin] = SecAggClient(run=RUN, round_=3, client_id=twin, entropy=py_twin)
    server = SecAggServer(run=RUN, round_=3, participants=ids, length=9, bits=bits)
    me = clients[twin]
    x = [str(v) for v in inputs[twin].tolist()]

    def js(calls: list[tuple[str, bytes]]) -> dict[str, Any]:
        return dict(page.evaluate(_script(_TWIN_CALL), {
            "bits": bits, "x": x, "calls": [[h, d.hex()] for h, d in calls]}))

    first = page.evaluate(_script("""
      const stream = unhex(arg.stream);
      let pos = 0;
      window.used = () => pos;
      window.twin = new p.SecAggClient({run: "RUN", round: 3, clientId: "c", entropy: (n) => {
        pos += n;
        return stream.slice(pos - n, pos);
      }});
      const early = p.encodeMessage({type: "ShareInbox", run: "RUN", round: 3, recipient: "c",
                                     sealed: []});
      return {adv: hex(await window.twin.advertise()), again: hex(await window.twin.advertise()),
              early: await attempt(() => window.twin.unmask(early))};
    """.replace("RUN", RUN)), {"stream": stream.hex()})
    early = encode(ShareInbox(RUN, 3, twin, ()))
    assert _codes_py(me.masked_input, early, ShareInbox, inputs[twin]) == "code:wrong_stage"
    assert js([("masked", early)])["out"] == ["code:wrong_stage"]  # (by stage, not by type)
    assert first["early"] == "code:wrong_stage"  # (by type: a ShareInbox is no UnmaskRequest)
    adv = {c: encode(clients[c].advertise()) for c in ids}
    assert first["adv"] == first["again"] == adv[twin].hex()
    for c in ids:
        server.receive(decode(adv[c]), sender=c)  # type: ignore[arg-type]
    dirs = server.advance()

    # -- share_keys: refusals, then the real directory, then retries
    d = dirs[twin]
    assert isinstance(d, KeyDirectory)
    own_enc = decode(adv[twin]).enc_key  # type: ignore[union-attr]
    bad = [
        encode(dataclasses.replace(d, round=4)),
        encode(dataclasses.replace(d, recipient="a")),
        encode(ShareInbox(RUN, 3, twin, ())),
        encode(dataclasses.replace(d, participants=tuple(c for c in ids if c != twin))),
        encode(dataclasses.replace(d, keys=d.keys[:-1])),
        encode(dataclasses.replace(d, keys=((d.keys[0][0], own_enc, d.keys[0][2]),
                                            *d.keys[1:]))),
        encode(d)[:-3],
        encode(dataclasses.replace(d, keys=((d.keys[0][0], bytes(32), d.keys[0][2]),
                                            *d.keys[1:]))),  # low order: refused after split
    ]
    py = [_codes_py(me.share_keys, b, KeyDirectory) for b in bad]
    assert py == ["code:wrong_round", "code:wrong_sender", "code:wrong_stage",
                  "code:not_participant", "code:bad_message", "code:bad_key", "code:truncated",
                  "code:bad_key"]
    out = js([("share", b) for b in bad] + [("share", encode(d)), ("share", encode(d)),
                                            ("share", bad[4])])
    shares = encode(me.share_keys(d))
    assert out["out"] == py + ["ok:" + shares.hex()] * 2 + ["code:replay"]
    assert _codes_py(me.share_keys, bad[4], KeyDirectory) == "code:replay"
    p = d.params
    assert py_twin.pos == out["used"] == 96 + 2 * 66 * (2 * (p.shamir_threshold - 1) + 1) + \
        12 * p.neighbours
    server.receive(decode(shares), sender=twin)  # type: ignore[arg-type]
    for c in ids:
        if c != twin:
            server.receive(clients[c].share_keys(dirs[c]), sender=c)  # type: ignore[arg-type]
    inbox = server.advance()

    # -- masked_input: forged and misdirected shares, a short vector; then the real one
    box = inbox[twin]
    assert isinstance(box, ShareInbox)
    sender, blob = box.sealed[0]
    bad = [
        encode(dataclasses.replace(box, sealed=((sender, blob[:-1] + bytes([blob[-1] ^ 1])),
                                                *box.sealed[1:]))),
        encode(dataclasses.replace(box, sealed=(("nobody", blob),))),
        encode(dataclasses.replace(box, recipient="b")),
        encode(d),
    ]
    py = [_codes_py(me.masked_input, b, ShareInbox, inputs[twin]) for b in bad]
    assert py == ["code:bad_tag", "code:wrong_sender", "code:wrong_sender", "code:wrong_stage"]
    with pytest.raises(ConfigError):
        me.masked_input(box, inputs[twin][1:])
    out = js([("masked", b) for b in bad] + [("short", encode(box)), ("masked", encode(box)),
                                             ("masked", encode(box))])
    masked = encode(me.masked_input(box, inputs[twin]))
    assert out["out"] == py + ["TypeError"] + ["ok:" + masked.hex()] * 2
    server.receive(decode(masked), sender=twin)  # type: ignore[arg-type]
    for c in ids:
        if c not in (twin, lost):  # `lost` shared its keys, then fell silent
            server.receive(clients[c].masked_input(inbox[c], inputs[c]),  # type: ignore[arg-type]
                           sender=c)
    requests = server.advance()

    # -- unmask: refusals; the real request (seed and key shares); a retry; another list
    req = requests[twin]
    assert isinstance(req, UnmaskRequest)
    bad = [
        encode(dataclasses.replace(req, survivors=tuple(c for c in req.survivors if c != twin))),
        encode(dataclasses.replace(req, survivors=(*req.survivors, "zed"))),
        encode(dataclasses.replace(req, survivors=(twin, "a"))),
    ]
    py = [_codes_py(me.unmask, b, UnmaskRequest) for b in bad]
    assert py == ["code:not_participant", "code:bad_message", "code:bad_message"]
    fewer = encode(dataclasses.replace(req, survivors=req.survivors[1:]))
    out = js([("unmask", b) for b in bad] + [("unmask", encode(req)), ("unmask", encode(req)),
                                             ("unmask", fewer)])
    answer = me.unmask(req)
    assert answer.mask_key_shares and answer.self_mask_shares
    assert out["out"] == py + ["ok:" + encode(answer).hex()] * 2 + ["code:replay"]
    assert _codes_py(me.unmask, fewer, UnmaskRequest) == "code:replay"
    assert out["stage"] == me.stage.value == "done"
    for c in requests:
        server.receive(clients[c].unmask(requests[c]), sender=c)  # type: ignore[arg-type]
    server.advance()
    assert server.total is not None
    want = np.zeros(9, dtype=dtype)
    for c in ids:
        if c != lost:
            np.add(want, inputs[c], out=want)
    np.testing.assert_array_equal(server.total, want)


# ---- 5. rounds with Python and browser clients ---------------------------------------------

# Ids chosen so that UTF-16 order (x😀 < x\uffff) and a stripped BOM would both go wrong.
PY_IDS = ["alice", "x\uffff", "zoë"]
JS_IDS = ["x\U0001f600", "\ufeffbob"]


@pytest.mark.parametrize(("bits", "config", "drop"), [
    (32, None, None),
    (64, SecAggConfig(neighbours=2), None),  # a sparse ring: every client checks the graph
    (32, None, "\ufeffbob"),  # a browser client drops after sharing its keys
    (64, None, "x\U0001f600"),
])
def test_round_with_python_and_browser_clients(page: Any, bits: int,
                                               config: SecAggConfig | None,
                                               drop: str | None) -> None:
    ids = sorted(PY_IDS + JS_IDS)
    d = 33
    fp = FixedPoint(clip=1.0, clients=len(ids), max_weight=1000, bits=bits)
    rng = np.random.default_rng(bits + (drop is not None))
    updates = {c: rng.normal(size=d).astype(np.float32) for c in ids}
    weights = {c: int(rng.integers(1, 2000)) for c in ids}
    encoded = {c: fp.encode(updates[c], weights[c]) for c in ids}
    server = SecAggServer(run=RUN, round_=5, participants=ids, length=d + 1, bits=bits,
                          config=config)
    py = {c: SecAggClient(run=RUN, round_=5, client_id=c) for c in PY_IDS}
    adv = page.evaluate(_script("""
      window.round = {};
      window.inputs = {};
      const fp = new p.FixedPoint(arg.settings);
      const out = {};
      for (const [id, x, w] of arg.clients) {
        window.round[id] = new p.SecAggClient({run: "RUN", round: 5, clientId: id});
        window.inputs[id] = fp.encode(Float32Array.from(x), w);
        out[id] = {adv: hex(await window.round[id].advertise()),
                   encoded: dump(window.inputs[id])};
      }
      return out;
    """.replace("RUN", RUN)), {"settings": fp.describe(), "clients": [
        [c, updates[c].tolist(), weights[c]] for c in JS_IDS]})
    for c in JS_IDS:  # the page's own FixedPoint gives Python's encoding
        assert adv[c]["encoded"] == _jsv(encoded[c])
        server.receive(decode(bytes.fromhex(adv[c]["adv"])), sender=c)  # type: ignore[arg-type]
    for c in PY_IDS:
        server.receive(py[c].advertise(), sender=c)
    inbox = {c: encode(m) for c, m in server.advance().items()}
    assert {len(near) for near in server.graph.values()} == {2 if config else 4}
    for stage in ("share", "masked", "unmask"):
        active = [c for c in JS_IDS if c in inbox and not (stage != "share" and c == drop)]
        answers = page.evaluate(_script("""
          const run = async ([id, data]) => {
            const c = window.round[id], msg = unhex(data);
            const out = await (arg.stage === "share" ? c.shareKeys(msg)
              : arg.stage === "masked" ? c.maskedInput(msg, window.inputs[id]) : c.unmask(msg));
            return [id, hex(out)];
          };
          return Object.fromEntries(await Promise.all(arg.inbox.map(run)));
        """), {"stage": stage, "inbox": [[c, inbox[c].hex()] for c in active]})
        for c in active:
            server.receive(decode(bytes.fromhex(answers[c])), sender=c)  # type: ignore[arg-type]
        for c in PY_IDS:
            msg = decode(inbox[c])
            out = (py[c].share_keys(msg) if stage == "share"  # type: ignore[arg-type]
                   else py[c].masked_input(msg, encoded[c]) if stage == "masked"  # type: ignore[arg-type]
                   else py[c].unmask(msg))  # type: ignore[arg-type]
            server.receive(out, sender=c)
        inbox = {c: encode(m) for c, m in server.advance().items()}
    assert server.total is not None
    survivors = [c for c in ids if c != drop]
    assert sorted(server.survivors[ServerStage.MASKED_INPUT]) == survivors
    want = np.zeros(d + 1, dtype=fp.dtype)
    for c in survivors:
        np.add(want, encoded[c], out=want)
    np.testing.assert_array_equal(server.total, want)
    mean, weight = fp.decode(server.total)
    assert mean.shape == (d,)
    assert weight == sum(min(weights[c], 1000) for c in survivors)

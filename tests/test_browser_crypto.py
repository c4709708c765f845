"""The browser's SecAgg+ primitives (``privml/web/secagg/crypto.js``, WebCrypto + BigInt) checked in
headless Debian chromium: every shared vector in ``tests/vectors/`` (RFC 7748, RFC 5869,
SP 800-38A and privml's own mask / binding / Shamir vectors), then a live cross-check with
the Python ``hazmat`` layer: X25519 agreement and AES-256-GCM blobs in both directions."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from privml._exceptions import SecAggError
from privml.secagg.hazmat import _aead, _keys, _shamir
from tests._browser import CHROMIUM, FLAGS, ROOT, static_server

VECTORS = ROOT / "tests" / "vectors"
NAMES = ["rfc7748_x25519", "rfc5869_hkdf_sha256", "sp800_38a_ctr_aes256", "secagg_mask",
         "secagg_shamir", "secagg_binding"]

# Helpers every evaluated snippet starts with: `c` is the module, `v` the vector files.
_PRELUDE = """
const c = await import("/crypto.js");
const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const v = {};
for (const name of NAMES) v[name] = await (await fetch(`/vectors/${name}.json`)).json();
""".replace("NAMES", json.dumps(NAMES))


def _script(body: str) -> str:
    return "async (arg) => {" + _PRELUDE + body + "}"


def _vector(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("secagg-page")
    shutil.copy(ROOT / "src" / "privml" / "web" / "secagg" / "crypto.js", folder / "crypto.js")
    (folder / "vectors").mkdir()
    for name in NAMES:
        shutil.copy(VECTORS / f"{name}.json", folder / "vectors" / f"{name}.json")
    (folder / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><title>secagg crypto check</title>')
    with sync_playwright() as pw, static_server(folder) as url:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            tab = browser.new_page()
            tab.goto(f"{url}/index.html")
            assert tab.evaluate("window.isSecureContext")
            yield tab
        finally:
            browser.close()


def test_x25519_rfc7748(page: Any) -> None:
    got = page.evaluate(_script("""
      const x = v.rfc7748_x25519, dh = x.diffie_hellman;
      const mult = [];
      for (const t of x.scalar_mult) {
        mult.push(hex(await c.x25519Shared(unhex(t.scalar), unhex(t.u))));
      }
      return {mult,
        alice_public: hex(await c.x25519PublicKey(unhex(dh.alice_private))),
        bob_public: hex(await c.x25519PublicKey(unhex(dh.bob_private))),
        alice_shared: hex(await c.x25519Shared(unhex(dh.alice_private), unhex(dh.bob_public))),
        bob_shared: hex(await c.x25519Shared(unhex(dh.bob_private), unhex(dh.alice_public)))};
    """))
    want = _vector("rfc7748_x25519")
    dh = want["diffie_hellman"]
    assert got["mult"] == [t["out"] for t in want["scalar_mult"]]
    assert got["alice_public"] == dh["alice_public"]
    assert got["bob_public"] == dh["bob_public"]
    assert got["alice_shared"] == got["bob_shared"] == dh["shared"]


def test_hkdf_rfc5869(page: Any) -> None:
    got = page.evaluate(_script("""
      const out = [];
      for (const t of v.rfc5869_hkdf_sha256.cases) {
        const opts = {info: unhex(t.info), length: t.length, salt: unhex(t.salt)};
        out.push(hex(await c.hkdfSha256(unhex(t.ikm), opts)));
      }
      return out;
    """))
    assert got == [t["okm"] for t in _vector("rfc5869_hkdf_sha256")["cases"]]


def test_aes_ctr_sp800_38a(page: Any) -> None:
    got = page.evaluate(_script("""
      const t = v.sp800_38a_ctr_aes256;
      return hex(await c.aesCtr(unhex(t.key), unhex(t.plaintext.join("")),
                                {counter: unhex(t.init_counter)}));
    """))
    assert got == "".join(_vector("sp800_38a_ctr_aes256")["ciphertext"])


@pytest.mark.parametrize("bits", [32, 64])
def test_mask_vectors(page: Any, bits: int) -> None:
    got = page.evaluate(_script("""
      const m = await c.mask(unhex(v.secagg_mask.key), 1000, arg);
      const le = new Uint8Array(m.byteLength);  // explicit little-endian bytes
      const view = new DataView(le.buffer);
      for (let i = 0; i < m.length; i++) {
        if (arg === 32) view.setUint32(4 * i, m[i], true);
        else view.setBigUint64(8 * i, m[i], true);
      }
      return {kind: m.constructor.name, length: m.length,
              first16: Array.from(m.slice(0, 16), (x) => x.toString()),
              sha256: hex(new Uint8Array(await crypto.subtle.digest("SHA-256", le)))};
    """), bits)
    want = _vector("secagg_mask")
    assert got["kind"] == ("Uint32Array" if bits == 32 else "BigUint64Array")
    assert got["length"] == 1000
    assert [int(x) for x in got["first16"]] == want[f"first16_u{bits}"]
    assert got["sha256"] == want[f"sha256_1000_u{bits}_le"]


def test_binding_and_derive_key(page: Any) -> None:
    got = page.evaluate(_script("""
      const t = v.secagg_binding;
      const info = c.binding({run: t.run, round: t.round, stage: t.stage, keys: t.keys.map(unhex)});
      const errors = [];
      for (const bad of [{run: "", round: 1, stage: "s", keys: []},
                         {run: "r", round: 2 ** 32, stage: "s", keys: []},
                         {run: "r", round: 1, stage: "é", keys: []},
                         {run: "r", round: 1, stage: "s", keys: [new Uint8Array(1025)]}]) {
        try { c.binding(bad); errors.push(null); } catch (e) { errors.push(e.name); }
      }
      return {binding: hex(info), errors,
              key: hex(await c.deriveKey(unhex(t.shared_secret), {info}))};
    """))
    want = _vector("secagg_binding")
    assert got["binding"] == want["binding"]
    assert got["key"] == want["derive_key"]
    assert got["errors"] == ["RangeError"] * 4
    # a non-ASCII run is UTF-8 in both
    info = page.evaluate(_script(
        'return hex(c.binding({run: "rün-é", round: 4294967295, stage: "x", keys: []}));'))
    assert info == _keys.binding(run="rün-é", round_=2**32 - 1, stage="x", keys=[]).hex()


def test_shamir_vectors(page: Any) -> None:
    got = page.evaluate(_script("""
      const t = v.secagg_shamir;
      const coeffs = t.coefficients.map(BigInt);
      const shares = t.xs.map((x) => c.shamirEval(coeffs, BigInt(x)));
      const pts = t.xs.map((x, i) => [BigInt(x), shares[i]]);
      const pick = (...ix) => ix.map((i) => pts[i]);
      const combined = [pick(0, 1, 2), pick(2, 3, 4), pick(4, 0, 2), pts]
        .map((p) => "0x" + c.shamirCombine(p, t.threshold).toString(16));
      const bytes = shares.map((s) => hex(c.bigIntToBytes(s)));
      const fresh = c.shamirSplit(BigInt(t.secret), {threshold: 3, xs: [1n, 2n, 3n, 4n]});
      return {shares: shares.map((s) => "0x" + s.toString(16)), combined, bytes,
              prime: "0x" + c.PRIME.toString(16), fresh: fresh.map((s) => s.toString())};
    """))
    want = _vector("secagg_shamir")
    assert int(got["prime"], 16) == _shamir.PRIME == 2**521 - 1
    assert got["shares"] == want["shares"]
    assert got["combined"] == [want["secret"]] * 4
    assert got["bytes"] == [int(s, 16).to_bytes(want["share_bytes"], "big").hex()
                            for s in want["shares"]]
    # the page's own random split rebuilds the secret in Python
    fresh = [(x, int(y)) for x, y in zip([1, 2, 3, 4], got["fresh"], strict=True)]
    assert _shamir.combine_int(fresh[1:], threshold=3) == int(want["secret"], 16)


def test_x25519_agrees_with_python(page: Any) -> None:
    private, public = _keys.keypair()
    got = page.evaluate(_script("""
      const mine = await c.x25519KeyPair();
      return {public: hex(mine.publicKey), private: hex(mine.privateKey),
              shared: hex(await c.x25519Shared(mine.privateKey, unhex(arg.public))),
              pythonPublic: hex(await c.x25519PublicKey(unhex(arg.private)))};
    """), {"public": public.hex(), "private": private.hex()})
    assert got["pythonPublic"] == public.hex()
    assert _keys.public_key(bytes.fromhex(got["private"])).hex() == got["public"]
    assert _keys.shared_secret(private, bytes.fromhex(got["public"])).hex() == got["shared"]


def test_x25519_refuses_low_order_key(page: Any) -> None:
    private, _ = _keys.keypair()
    with pytest.raises(SecAggError):
        _keys.shared_secret(private, bytes(32))
    codes = page.evaluate(_script("""
      const out = [];
      for (const peer of [new Uint8Array(32), new Uint8Array(31)]) {
        try { await c.x25519Shared(unhex(arg), peer); out.push(null); }
        catch (e) { out.push(e.name + ":" + e.code); }
      }
      return out;
    """), private.hex())
    assert codes == ["SecAggError:bad_key"] * 2


def test_aes_gcm_agrees_with_python(page: Any) -> None:
    key = hashlib.sha256(b"gcm key").digest()
    aad = _keys.binding(run="run-1", round_=3, stage="share-keys", keys=[b"a" * 32])
    plaintext = bytes(range(256)) * 3
    from_python = _aead.seal(key, plaintext, aad=aad)
    fixed = _aead.seal(key, b"fixed", aad=aad, nonce=bytes(range(12)))
    got = page.evaluate(_script("""
      const key = unhex(arg.key), aad = unhex(arg.aad), blob = unhex(arg.blob);
      const attempt = async (b, a) => {
        try { return "ok:" + hex(await c.aesGcmOpen(key, b, {aad: a})); }
        catch (e) { return e.name + ":" + e.code; }
      };
      const flipped = blob.slice(); flipped[30] ^= 1;
      const badMagic = blob.slice(); badMagic[3] = 2;
      const otherAad = aad.slice(); otherAad[0] ^= 0x80;
      return {
        opened: await attempt(blob, aad),
        flipped: await attempt(flipped, aad),
        lastBit: await attempt(blob.map((b, i) => (i === blob.length - 1 ? b ^ 1 : b)), aad),
        wrongAad: await attempt(blob, otherAad),
        badMagic: await attempt(badMagic, aad),
        truncated: await attempt(blob.slice(0, 31), aad),
        sealed: hex(await c.aesGcmSeal(key, unhex(arg.plaintext), {aad})),
        fixed: hex(await c.aesGcmSeal(key, new TextEncoder().encode("fixed"),
                                      {aad, nonce: Uint8Array.from({length: 12}, (_, i) => i)})),
      };
    """), {"key": key.hex(), "aad": aad.hex(), "blob": from_python.hex(),
           "plaintext": plaintext.hex()})
    assert got["opened"] == "ok:" + plaintext.hex()
    assert got["flipped"] == got["lastBit"] == got["wrongAad"] == "SecAggError:bad_tag"
    assert got["badMagic"] == "SecAggError:bad_message"
    assert got["truncated"] == "SecAggError:truncated"
    assert got["fixed"] == fixed.hex()
    sealed = bytes.fromhex(got["sealed"])
    assert sealed[:4] == b"PSE\x01"
    assert sealed[4:16] != from_python[4:16]  # a fresh random nonce
    assert _aead.open_sealed(key, sealed, aad=aad) == plaintext

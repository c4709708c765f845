"""SecAgg+ primitives against published vectors (RFC 7748, RFC 5869, NIST SP 800-38A), our
own vectors for the browser side, and the properties the protocol relies on."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml import ConfigError, SecAggError
from privml.secagg import hazmat
from privml.secagg.hazmat._prg import _keystream
from privml.secagg.hazmat._shamir import _eval_poly

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def _code(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(SecAggError) as err:
        fn(*args, **kw)
    return err.value.code


# ---- published vectors -------------------------------------------------------------------

@pytest.mark.parametrize("case", _load("rfc7748_x25519.json")["scalar_mult"])
def test_x25519_rfc7748_scalar_mult(case: dict[str, str]) -> None:
    out = hazmat.shared_secret(bytes.fromhex(case["scalar"]), bytes.fromhex(case["u"]))
    assert out.hex() == case["out"]


def test_x25519_rfc7748_diffie_hellman() -> None:
    v = _load("rfc7748_x25519.json")["diffie_hellman"]
    a, b = bytes.fromhex(v["alice_private"]), bytes.fromhex(v["bob_private"])
    assert hazmat.public_key(a).hex() == v["alice_public"]
    assert hazmat.public_key(b).hex() == v["bob_public"]
    assert hazmat.shared_secret(a, bytes.fromhex(v["bob_public"])).hex() == v["shared"]
    assert hazmat.shared_secret(b, bytes.fromhex(v["alice_public"])).hex() == v["shared"]


@pytest.mark.parametrize("case", _load("rfc5869_hkdf_sha256.json")["cases"])
def test_hkdf_rfc5869(case: dict[str, Any]) -> None:
    salt = bytes.fromhex(case["salt"]) or None  # (an empty salt is the RFC's default)
    okm = hazmat.hkdf_sha256(bytes.fromhex(case["ikm"]), info=bytes.fromhex(case["info"]),
                             length=case["length"], salt=salt)
    assert okm.hex() == case["okm"]


def test_aes256_ctr_keystream_sp800_38a() -> None:
    v = _load("sp800_38a_ctr_aes256.json")
    pt = bytes.fromhex("".join(v["plaintext"]))
    ct = bytes.fromhex("".join(v["ciphertext"]))
    expected = bytes(p ^ c for p, c in zip(pt, ct, strict=True))
    got = _keystream(bytes.fromhex(v["key"]), len(pt), bytes.fromhex(v["init_counter"]))
    assert got == expected


# ---- our own vectors (for the browser client) --------------------------------------------

def test_mask_vectors() -> None:
    v = _load("secagg_mask.json")
    key = bytes.fromhex(v["key"])
    for bits in (32, 64):
        values = hazmat.mask(key, 1000, bits=bits)
        assert [int(x) for x in values[:16]] == v[f"first16_u{bits}"]
        import hashlib

        assert hashlib.sha256(values.astype(f"<u{bits // 8}").tobytes()).hexdigest() == \
            v[f"sha256_1000_u{bits}_le"]
    # The mask is the CTR keystream from a zero counter block, read little-endian.
    raw = _keystream(key, 64)
    assert hazmat.mask(key, 16).tolist() == np.frombuffer(raw, dtype="<u4").tolist()


def test_shamir_vectors() -> None:
    v = _load("secagg_shamir.json")
    coeffs = [int(c, 16) for c in v["coefficients"]]
    shares = [int(s, 16) for s in v["shares"]]
    assert [_eval_poly(coeffs, x, hazmat.PRIME) for x in v["xs"]] == shares
    for pick in itertools.combinations(zip(v["xs"], shares, strict=True), v["threshold"]):
        assert hazmat.combine_int(list(pick), threshold=v["threshold"]) == int(v["secret"], 16)


def test_binding_and_key_vectors() -> None:
    v = _load("secagg_binding.json")
    keys = tuple(bytes.fromhex(k) for k in v["keys"])
    info = hazmat.binding(run=v["run"], round_=v["round"], stage=v["stage"], keys=keys)
    assert info.hex() == v["binding"]
    assert info[:5] == b"PSAG\x01"
    assert hazmat.derive_key(bytes.fromhex(v["shared_secret"]), info=info).hex() == \
        v["derive_key"]


def test_vector_script_reproduces_the_stored_files(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mk", VECTORS / "make_secagg_vectors.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "HERE", tmp_path)
    mod.main()
    for name in ("secagg_mask.json", "secagg_shamir.json", "secagg_binding.json"):
        assert (tmp_path / name).read_text() == (VECTORS / name).read_text()


# ---- keys, binding, AEAD -----------------------------------------------------------------

def test_key_agreement_is_symmetric_and_bad_keys_are_refused() -> None:
    a, pa = hazmat.keypair()
    b, pb = hazmat.keypair()
    assert hazmat.shared_secret(a, pb) == hazmat.shared_secret(b, pa)
    assert _code(hazmat.shared_secret, a, pb[:31]) == "bad_key"
    assert _code(hazmat.shared_secret, a, bytes(32)) == "bad_key"  # a low-order point
    assert _code(hazmat.shared_secret, a, (1).to_bytes(32, "little")) == "bad_key"


def test_binding_separates_every_field() -> None:
    base = {"run": "r", "round_": 1, "stage": "s", "keys": (b"k1", b"k2")}
    variants = [base, {**base, "run": "r2"}, {**base, "round_": 2}, {**base, "stage": "t"},
                {**base, "keys": (b"k2", b"k1")}, {**base, "keys": (b"k1k", b"2")}]
    outs = {hazmat.binding(**v) for v in variants}  # type: ignore[arg-type]
    assert len(outs) == len(variants)
    with pytest.raises(ConfigError):
        hazmat.binding(run="", round_=1, stage="s", keys=())
    with pytest.raises(ConfigError):
        hazmat.binding(run="r", round_=2**32, stage="s", keys=())


def test_seal_and_open_refuse_every_tampering() -> None:
    key, aad = bytes(range(32)), b"context"
    blob = hazmat.seal(key, b"two shares", aad=aad)
    assert blob[:4] == b"PSE\x01"
    assert hazmat.open_sealed(key, blob, aad=aad) == b"two shares"
    for i in range(4, len(blob)):
        flipped = blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1:]
        assert _code(hazmat.open_sealed, key, flipped, aad=aad) == "bad_tag"
    assert _code(hazmat.open_sealed, key, blob, aad=b"other") == "bad_tag"
    assert _code(hazmat.open_sealed, bytes(32), blob, aad=aad) == "bad_tag"
    assert _code(hazmat.open_sealed, key, blob[:20], aad=aad) == "truncated"
    assert _code(hazmat.open_sealed, key, b"QQQ" + blob[3:], aad=aad) == "bad_message"


# ---- Shamir ------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 8), st.data())
def test_any_threshold_shares_rebuild_the_secret(secret: bytes, t: int,
                                                 data: st.DataObject) -> None:
    n = data.draw(st.integers(t, 12))
    xs = list(range(1, n + 1))
    shares = list(zip(xs, hazmat.split(secret, threshold=t, xs=xs), strict=True))
    pick = data.draw(st.lists(st.sampled_from(shares), min_size=t, max_size=n, unique=True))
    assert hazmat.combine(pick, threshold=t) == secret


def test_shamir_refuses_misuse() -> None:
    with pytest.raises(ConfigError):
        hazmat.split(bytes(32), threshold=4, xs=[1, 2, 3])
    with pytest.raises(ConfigError):
        hazmat.split(bytes(32), threshold=2, xs=[1, 1])
    shares = list(enumerate(hazmat.split(bytes(32), threshold=2, xs=[1, 2]), start=1))
    with pytest.raises(ConfigError):
        hazmat.combine(shares[:1], threshold=2)
    assert _code(hazmat.combine, [(1, b"short"), (2, shares[1][1])], threshold=2) == \
        "bad_message"


@pytest.mark.parametrize("prime", [13, 17])
def test_fewer_than_threshold_shares_are_consistent_with_every_secret(prime: int) -> None:
    """Shamir never fails loudly, so this is the property: over a small field, enumerate
    every polynomial of degree t-1 and count, for each set of t-1 share points and each
    observed share values, the polynomials behind them for every candidate secret. The
    count is the same for every secret — t-1 shares say nothing about it — while t shares
    pin it down."""
    t, xs = 3, [1, 2, 3, 4, 5]
    polys = list(itertools.product(range(prime), repeat=t))  # (secret, c1, c2)
    for subset in itertools.combinations(xs, t - 1):
        seen: dict[tuple[int, ...], Counter[int]] = {}
        for coeffs in polys:
            view = tuple(_eval_poly(coeffs, x, prime) for x in subset)
            seen.setdefault(view, Counter())[coeffs[0]] += 1
        for counts in seen.values():
            assert set(counts) == set(range(prime))  # every secret is possible ...
            assert len(set(counts.values())) == 1  # ... and equally likely
    for subset in itertools.combinations(xs, t):
        full: dict[tuple[int, ...], set[int]] = {}
        for coeffs in polys:
            view = tuple(_eval_poly(coeffs, x, prime) for x in subset)
            full.setdefault(view, set()).add(coeffs[0])
        assert all(len(s) == 1 for s in full.values())


# ---- the mask generator ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_add_mask_is_modular_addition_of_the_mask(dtype: type) -> None:
    key = bytes(range(1, 33))
    n = 300_001  # spans several chunks, and a partial one
    acc = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, size=n, dtype=dtype)
    before = acc.copy()
    bits = np.dtype(dtype).itemsize * 8
    hazmat.add_mask(acc, key)
    np.testing.assert_array_equal(acc, before + hazmat.mask(key, n, bits=bits))
    hazmat.add_mask(acc, key, subtract=True)
    np.testing.assert_array_equal(acc, before)


def test_masks_differ_per_key_and_look_uniform() -> None:
    a, b = hazmat.mask(bytes(32), 100_000), hazmat.mask(b"\x01" + bytes(31), 100_000)
    assert np.array_equal(a, hazmat.mask(bytes(32), 100_000))
    assert np.count_nonzero(a == b) < 5
    counts = np.bincount((a >> 28).astype(np.int64), minlength=16)
    chi2 = float(((counts - len(a) / 16) ** 2 / (len(a) / 16)).sum())
    assert chi2 < 50.0  # 15 degrees of freedom; p < 1e-5 beyond this


def test_mask_refuses_misuse() -> None:
    with pytest.raises(ConfigError):
        hazmat.mask(bytes(31), 4)
    with pytest.raises(ConfigError):
        hazmat.mask(bytes(32), 4, bits=16)
    with pytest.raises(ConfigError):
        hazmat.add_mask(np.zeros(4, dtype=np.int32), bytes(32))
    with pytest.raises(ConfigError):
        hazmat.add_mask(np.zeros((2, 2), dtype=np.uint32), bytes(32))


# ---- argument checks and remaining refusals ----------------------------------------------

def test_keypair_is_reproducible_from_its_entropy() -> None:
    def entropy(n: int) -> bytes:
        return bytes([7]) * n

    private, public = hazmat.keypair(entropy)
    assert private == bytes([7]) * 32 and hazmat.keypair(entropy) == (private, public)
    assert hazmat.public_key(private) == public
    with pytest.raises(ConfigError):
        hazmat.keypair(lambda n: bytes(n - 1))
    with pytest.raises(ConfigError):
        hazmat.hkdf_sha256(b"ikm", info=b"", length=255 * 32 + 1)
    assert len(hazmat.hkdf_sha256(b"ikm", info=b"", length=255 * 32)) == 255 * 32


def test_binding_limits() -> None:
    ok = hazmat.binding(run="é" * 100, round_=2**32 - 1, stage="s" * 64,
                        keys=[bytes(1024)] * 255)
    assert ok[5:7] == (200).to_bytes(2, "big")
    bad: list[dict[str, Any]] = [
        {"run": "r" * 201}, {"run": "é" * 101}, {"round_": -1}, {"round_": True},
        {"stage": ""}, {"stage": "s" * 65}, {"stage": "é"}, {"keys": [b""] * 256},
        {"keys": [bytes(1025)]}]
    for change in bad:
        with pytest.raises(ConfigError):
            hazmat.binding(**{"run": "r", "round_": 0, "stage": "s", "keys": (), **change})


def test_sealed_format_checks() -> None:
    key = bytes(32)
    blob = hazmat.seal(key, b"", aad=b"", nonce=bytes(12))
    assert blob == b"PSE\x01" + bytes(12) + blob[16:] and len(blob) == 4 + 12 + 16
    assert hazmat.open_sealed(key, blob, aad=b"") == b""
    assert _code(hazmat.open_sealed, key, b"PSE\x02" + blob[4:], aad=b"") == "bad_message"
    assert _code(hazmat.open_sealed, key, blob[:-1], aad=b"") == "truncated"
    with pytest.raises(ConfigError):
        hazmat.seal(bytes(16), b"x", aad=b"")
    with pytest.raises(ConfigError):
        hazmat.seal(key, b"x", aad=b"", nonce=bytes(8))


def test_shamir_field_and_size_checks() -> None:
    with pytest.raises(ConfigError):
        hazmat.combine_int([(1, 5), (1, 6)], threshold=2)
    with pytest.raises(ConfigError):
        hazmat.combine_int([(1, hazmat.PRIME), (2, 6)], threshold=2)
    with pytest.raises(ConfigError):
        hazmat.split_int(hazmat.PRIME, threshold=1, xs=[1])
    with pytest.raises(ConfigError):
        hazmat.split_int(1, threshold=1, xs=[0])
    with pytest.raises(ConfigError):
        hazmat.split(bytes(65), threshold=1, xs=[1])
    too_big = (hazmat.PRIME).to_bytes(hazmat.SHARE_BYTES, "big")
    assert _code(hazmat.combine, [(1, too_big)], threshold=1) == "bad_message"
    shares = hazmat.split(b"\x01" + bytes(32), threshold=2, xs=[1, 2])
    pts = list(zip([1, 2], shares, strict=True))
    assert hazmat.combine(pts, threshold=2, length=33) == b"\x01" + bytes(32)
    assert _code(hazmat.combine, pts, threshold=2) == "bad_message"  # does not fit 32 bytes
    # Small field: rejection sampling keeps every coefficient below the prime.
    values = hazmat.split_int(3, threshold=3, xs=[1, 2, 3, 4], prime=13)
    assert all(0 <= v < 13 for v in values)
    assert hazmat.combine_int(list(zip([1, 2, 3, 4], values, strict=True)), threshold=3,
                              prime=13) == 3


def test_mask_shapes_and_accumulator_checks() -> None:
    assert hazmat.mask(bytes(32), 3).dtype == np.dtype("<u4")
    assert hazmat.mask(bytes(32), 3, bits=64).dtype == np.dtype("<u8")
    assert hazmat.mask(bytes(32), 0).size == 0
    with pytest.raises(ConfigError):
        hazmat.mask(bytes(32), -1)
    with pytest.raises(ConfigError):
        hazmat.add_mask(np.zeros(8, dtype=np.uint32)[::2], bytes(32))
    with pytest.raises(ConfigError):
        hazmat.add_mask([0, 0], bytes(32))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        hazmat.add_mask(np.zeros(4, dtype=np.uint32), bytes(31))
    empty = np.zeros(0, dtype=np.uint64)
    hazmat.add_mask(empty, bytes(32))
    assert empty.size == 0

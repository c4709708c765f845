// privml SecAgg+ primitives for the browser: WebCrypto + BigInt, no dependencies.
//
// Theory of operation: every function here reproduces, byte for byte, its twin in
// src/privml/secagg/hazmat/ (the Python side of the protocol), so a browser and a Python
// client can share masks, keys and sealed Shamir shares. The tests in
// tests/test_browser_crypto.py run the shared vectors in tests/vectors/ through this module
// in headless chromium and cross-check against Python at test time.
//
//   X25519        _keys.keypair / public_key / shared_secret   (raw 32-byte keys)
//   binding       _keys.binding                                 (HKDF info and GCM AAD)
//   HKDF-SHA256   _keys.hkdf_sha256 / derive_key
//   AES-256-GCM   _aead.seal / open_sealed: "PSE" 0x01 || nonce(12) || ciphertext || tag(16)
//   mask          _prg.mask: AES-256-CTR keystream from a zero counter block, little-endian
//   Shamir        _shamir over GF(2^521 - 1)
//
// Errors: bad local arguments throw TypeError/RangeError (Python's ConfigError); bad bytes
// from a peer throw SecAggError with a `code` ("bad_key", "truncated", "bad_message",
// "bad_tag"), as the Python side does. Only `crypto.subtle` and `crypto.getRandomValues`
// are used; a secure context (https or http://127.0.0.1) is required.

const subtle = globalThis.crypto.subtle;

export class SecAggError extends Error {
  constructor(message, code) {
    super(message);
    this.name = "SecAggError";
    this.code = code;
  }
}

function bytes(value, name, length) {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  if (length !== undefined && value.length !== length) {
    throw new RangeError(`${name} must be ${length} bytes, got ${value.length}`);
  }
  return value;
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

// ---- X25519 ---------------------------------------------------------------------------------

const PKCS8_X25519 = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b,
                                   0x65, 0x6e, 0x04, 0x22, 0x04, 0x20);
const X25519 = {name: "X25519"};
const BASE_POINT = Uint8Array.from({length: 32}, (_, i) => (i === 0 ? 9 : 0));

function importPrivate(privateRaw32) {
  bytes(privateRaw32, "an X25519 private key", 32);
  // extractable so that x25519PublicKey can read the public half from the JWK
  return subtle.importKey("pkcs8", concat([PKCS8_X25519, privateRaw32]), X25519, true,
                          ["deriveBits"]);
}

function fromBase64Url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64 + "=".repeat((4 - b64.length % 4) % 4)), (c) => c.charCodeAt(0));
}

/** The 32-byte public key of a raw 32-byte private scalar (clamped by X25519 as usual). */
export async function x25519PublicKey(privateRaw32) {
  const key = await importPrivate(privateRaw32);
  const jwk = await subtle.exportKey("jwk", key);
  if (typeof jwk.x === "string") return fromBase64Url(jwk.x);
  // a browser that leaves `x` out of a private JWK: X25519(private, base point u = 9)
  const base = await subtle.importKey("raw", BASE_POINT, X25519, true, []);
  return new Uint8Array(await subtle.deriveBits({name: "X25519", public: base}, key, 256));
}

/** Raw X25519(private, peer); a low-order peer key (all-zero result) is SecAggError bad_key. */
export async function x25519Shared(privateRaw32, peerPublic32) {
  if (!(peerPublic32 instanceof Uint8Array) || peerPublic32.length !== 32) {
    throw new SecAggError("an X25519 public key is 32 bytes", "bad_key");
  }
  const key = await importPrivate(privateRaw32);
  let out;
  try {
    const peer = await subtle.importKey("raw", peerPublic32, X25519, true, []);
    out = new Uint8Array(await subtle.deriveBits({name: "X25519", public: peer}, key, 256));
  } catch (err) {  // chromium refuses an all-zero result (a low-order point) with an error
    throw new SecAggError(`the peer's public key is refused: ${err.message}`, "bad_key");
  }
  if (out.every((b) => b === 0)) {
    throw new SecAggError("the peer's public key is of low order", "bad_key");
  }
  return out;
}

/** A fresh key pair {privateKey, publicKey}, 32 raw bytes each, from getRandomValues. */
export async function x25519KeyPair() {
  const privateKey = crypto.getRandomValues(new Uint8Array(32));
  return {privateKey, publicKey: await x25519PublicKey(privateKey)};
}

// ---- binding, HKDF ----------------------------------------------------------------------------

/** b"PSAG" || 0x01 || u16 len(run) || run || u32 round || u8 len(stage) || stage || u8 count
 *  || (u16 len(key) || key)*, integers big-endian; the same checks as _keys.binding. */
export function binding({run, round, stage, keys}) {
  const rawRun = typeof run === "string" ? new TextEncoder().encode(run) : new Uint8Array(0);
  if (rawRun.length === 0 || rawRun.length > 200) {
    throw new RangeError("run must be a non-empty string of at most 200 UTF-8 bytes");
  }
  if (!Number.isInteger(round) || round < 0 || round >= 2 ** 32) {
    throw new RangeError(`round must be in [0, 2**32), got ${round}`);
  }
  if (typeof stage !== "string" || !/^[\x00-\x7f]{1,64}$/.test(stage)) {
    throw new RangeError("stage must be 1-64 ASCII characters");
  }
  if (!Array.isArray(keys) || keys.length > 255 ||
      keys.some((k) => !(k instanceof Uint8Array) || k.length > 1024)) {
    throw new RangeError("at most 255 keys (Uint8Array) of at most 1024 bytes each");
  }
  const head = new Uint8Array(4 + 1 + 2);
  head.set([0x50, 0x53, 0x41, 0x47, 0x01]);  // "PSAG", version 1
  new DataView(head.buffer).setUint16(5, rawRun.length);
  const mid = new Uint8Array(4 + 1);
  new DataView(mid.buffer).setUint32(0, round);
  mid[4] = stage.length;
  const parts = [head, rawRun, mid, Uint8Array.from(stage, (c) => c.charCodeAt(0)),
                 Uint8Array.of(keys.length)];
  for (const k of keys) parts.push(Uint8Array.of(k.length >> 8, k.length & 0xff), k);
  return concat(parts);
}

/** HKDF-SHA256 (RFC 5869); no salt is the RFC's default (HashLen zero bytes). */
export async function hkdfSha256(ikm, {info, length = 32, salt} = {}) {
  bytes(ikm, "ikm");
  bytes(info, "info");
  if (!Number.isInteger(length) || length < 1 || length > 255 * 32) {
    throw new RangeError(`HKDF-SHA256 length must be in [1, 8160], got ${length}`);
  }
  const s = salt === undefined || salt === null ? new Uint8Array(32) : bytes(salt, "salt");
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await subtle.deriveBits(
    {name: "HKDF", hash: "SHA-256", salt: s, info}, key, length * 8));
}

/** A 32-byte key from a shared secret, bound to `info` (see binding). */
export function deriveKey(shared, {info}) {
  return hkdfSha256(shared, {info, length: 32});
}

// ---- AES-256-GCM sealed blobs -----------------------------------------------------------------

const SEAL_MAGIC = Uint8Array.of(0x50, 0x53, 0x45, 0x01);  // "PSE", version 1
const NONCE = 12;
const TAG = 16;

function gcmKey(key, usage) {
  bytes(key, "an AES-256-GCM key", 32);
  return subtle.importKey("raw", key, "AES-GCM", false, [usage]);
}

/** "PSE" 0x01 || nonce || ciphertext || tag; the nonce is random unless given (tests). */
export async function aesGcmSeal(key, plaintext, {aad, nonce} = {}) {
  bytes(plaintext, "plaintext");
  bytes(aad, "aad");
  const iv = nonce === undefined ? crypto.getRandomValues(new Uint8Array(NONCE))
    : bytes(nonce, "a GCM nonce", NONCE);
  const sealed = await subtle.encrypt({name: "AES-GCM", iv, additionalData: aad, tagLength: 128},
                                      await gcmKey(key, "encrypt"), plaintext);
  return concat([SEAL_MAGIC, iv, new Uint8Array(sealed)]);
}

/** The plaintext, or SecAggError truncated / bad_message / bad_tag, as _aead.open_sealed. */
export async function aesGcmOpen(key, blob, {aad} = {}) {
  bytes(blob, "blob");
  bytes(aad, "aad");
  const k = await gcmKey(key, "decrypt");
  if (blob.length < SEAL_MAGIC.length + NONCE + TAG) {
    throw new SecAggError("sealed shares truncated", "truncated");
  }
  if (SEAL_MAGIC.some((b, i) => blob[i] !== b)) {
    throw new SecAggError("not sealed shares of this version", "bad_message");
  }
  const iv = blob.slice(SEAL_MAGIC.length, SEAL_MAGIC.length + NONCE);
  try {
    return new Uint8Array(await subtle.decrypt(
      {name: "AES-GCM", iv, additionalData: aad, tagLength: 128}, k,
      blob.slice(SEAL_MAGIC.length + NONCE)));
  } catch {
    throw new SecAggError("sealed shares failed authentication", "bad_tag");
  }
}

// ---- masks ------------------------------------------------------------------------------------

/** AES-256-CTR of `data` with the whole 128-bit block as a big-endian counter. */
export async function aesCtr(key, data, {counter = new Uint8Array(16)} = {}) {
  bytes(key, "an AES-256 key", 32);
  bytes(data, "data");
  bytes(counter, "a counter block", 16);
  const k = await subtle.importKey("raw", key, "AES-CTR", false, ["encrypt"]);
  return new Uint8Array(await subtle.encrypt({name: "AES-CTR", counter, length: 128}, k, data));
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** `length` values of the keystream of `key`: Uint32Array (bits 32) or BigUint64Array (64). */
export async function mask(key, length, bits = 32) {
  if (bits !== 32 && bits !== 64) throw new RangeError(`bits must be 32 or 64, got ${bits}`);
  if (!Number.isInteger(length) || length < 0) throw new RangeError("length must be >= 0");
  const size = bits / 8;
  const stream = await aesCtr(key, new Uint8Array(length * size));
  const Out = bits === 32 ? Uint32Array : BigUint64Array;
  if (LITTLE_ENDIAN) return new Out(stream.buffer, stream.byteOffset, length);
  const view = new DataView(stream.buffer, stream.byteOffset);
  const out = new Out(length);
  for (let i = 0; i < length; i++) {
    out[i] = bits === 32 ? view.getUint32(i * 4, true) : view.getBigUint64(i * 8, true);
  }
  return out;
}

// ---- Shamir over GF(2^521 - 1) ----------------------------------------------------------------

export const PRIME = (1n << 521n) - 1n;
export const SHARE_BYTES = 66;

const mod = (a) => ((a % PRIME) + PRIME) % PRIME;

function inverse(a) {  // extended Euclid; a is non-zero mod PRIME
  let [r0, r1, s0, s1] = [PRIME, mod(a), 0n, 1n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) throw new RangeError("not invertible");
  return mod(s0);
}

/** The polynomial with coefficients `coeffs` (constant first) at x, by Horner's rule. */
export function shamirEval(coeffs, x) {
  let acc = 0n;
  for (let i = coeffs.length - 1; i >= 0; i--) acc = mod(acc * x + coeffs[i]);
  return acc;
}

function uniform() {  // rejection sampling, as _shamir._uniform (66 big-endian bytes, 521 bits)
  for (;;) {
    const raw = crypto.getRandomValues(new Uint8Array(SHARE_BYTES));
    raw[0] &= 0x01;
    const value = bytesToBigInt(raw);
    if (value < PRIME) return value;
  }
}

/** Shares (same order as `xs`) of `secret` with a random polynomial of degree threshold - 1. */
export function shamirSplit(secret, {threshold, xs}) {
  if (typeof secret !== "bigint" || secret < 0n || secret >= PRIME) {
    throw new RangeError("the secret must be a field element");
  }
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > xs.length) {
    throw new RangeError(`threshold must be in [1, ${xs.length}], got ${threshold}`);
  }
  if (new Set(xs).size !== xs.length || xs.some((x) => typeof x !== "bigint" || x < 1n ||
                                                  x >= PRIME)) {
    throw new RangeError("share points must be distinct BigInts in [1, prime)");
  }
  const coeffs = [secret];
  for (let i = 1; i < threshold; i++) coeffs.push(uniform());
  return xs.map((x) => shamirEval(coeffs, x));
}

/** Lagrange interpolation at 0 over the first `threshold` points (by x), as combine_int. */
export function shamirCombine(points, threshold) {
  if (!Number.isInteger(threshold) || threshold < 1 || points.length < threshold) {
    throw new RangeError(`${points.length} shares, ${threshold} needed`);
  }
  if (new Set(points.map(([x]) => x)).size !== points.length ||
      points.some(([x, y]) => typeof x !== "bigint" || typeof y !== "bigint" || x < 1n ||
                  x >= PRIME || y < 0n || y >= PRIME)) {
    throw new RangeError("shares must have distinct points and field values");
  }
  const pts = [...points].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).slice(0, threshold);
  let secret = 0n;
  for (const [xi, yi] of pts) {
    let num = 1n;
    let den = 1n;
    for (const [xj] of pts) {
      if (xj !== xi) { num = mod(num * xj); den = mod(den * (xj - xi)); }
    }
    secret = mod(secret + yi * num * inverse(den));
  }
  return secret;
}

/** A big-endian byte string as a BigInt, and back (SHARE_BYTES long by default). */
export function bytesToBigInt(raw) {
  let v = 0n;
  for (const b of bytes(raw, "raw")) v = (v << 8n) | BigInt(b);
  return v;
}

export function bigIntToBytes(value, length = SHARE_BYTES) {
  if (value < 0n || value >= 1n << BigInt(8 * length)) {
    throw new RangeError(`the value does not fit ${length} bytes`);
  }
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) { out[i] = Number(value & 0xffn); value >>= 8n; }
  return out;
}

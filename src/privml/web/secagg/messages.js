// privml SecAgg+ messages for the browser: the wire format (_wire.py) and the seven messages
// (_messages.py, _params.py), byte for byte. Plain ES module; ./protocol.js builds on it.
//
// Theory of operation: every message is "PSA" || 1 || type || run || round || party || body,
// with big-endian u8/u16/u32 fields, text = u16 length + UTF-8, blob = u16 length, big = u32
// length; the reader insists on consuming every byte, so a message has exactly one encoding.
// Messages are plain objects: `type` is the Python class name, the other fields are Python's
// in camelCase (Uint8Array for bytes, arrays for tuples, Uint32Array/BigUint64Array for a
// masked vector). Ids are ordered as Python orders str, by code point (compareIds: UTF-16
// order differs above U+FFFF). Bytes from a peer are refused with SecAggError and Python's
// code; local misuse throws TypeError/RangeError (Python's ConfigError / ParamsError).

import {SecAggError} from "./crypto.js";

export {SecAggError};

const MAX_ID_BYTES = 256;
const KEY_BYTES = 32;
const MAX_CLIENTS = 1 << 16;
const MAX_BLOB = 4096;
const MAGIC = Uint8Array.of(0x50, 0x53, 0x41);  // "PSA"
const VERSION = 1;
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
const utf8 = new TextEncoder();
// fatal: refuse what Python's strict decoder refuses; ignoreBOM: keep a leading U+FEFF, as
// Python does (TextDecoder strips it otherwise)
const strictUtf8 = new TextDecoder("utf-8", {fatal: true, ignoreBOM: true});

export const refuse = (message, code = "bad_message") => new SecAggError(message, code);
export function need(ok, message, code = "bad_message") { if (!ok) throw refuse(message, code); }
export function local(ok, message) { if (!ok) throw new RangeError(message); }
export const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
export const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
const pad8 = (n) => (8 - (n % 8)) % 8;  // Python's -n % 8

// UTF-16 code units in code-point order: surrogates (U+10000 and up) after U+E000..U+FFFF
const unit = (u) => (u < 0xd800 ? u : u < 0xe000 ? u + 0x2000 : u - 0x800);

/** Python's order of str: by code point. */
export function compareIds(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const d = unit(a.charCodeAt(i)) - unit(b.charCodeAt(i));
    if (d) return d;
  }
  return a.length - b.length;
}
export const sortIds = (ids) => [...ids].sort(compareIds);

// ---- wire (_wire.py) --------------------------------------------------------------------------

/** A non-empty string of at most 256 UTF-8 bytes (a lone surrogate has no UTF-8 form). */
export function checkId(value, what = "id") {
  if (typeof value !== "string" || value === "" || /\p{Cs}/u.test(value) ||
      utf8.encode(value).length > MAX_ID_BYTES) {
    throw refuse(`${what} must be a non-empty string of at most ${MAX_ID_BYTES} bytes: ` +
                 JSON.stringify(value));
  }
}

export class Writer {
  #parts = [];
  #size = 0;
  tell() { return this.#size; }
  #int(value, size) {
    local(Number.isInteger(value) && value >= 0 && value < 2 ** (8 * size),
          `${value} does not fit an unsigned ${8 * size}-bit field`);
    const out = new Uint8Array(size);
    for (let i = size - 1; i >= 0; i--, value = Math.floor(value / 256)) out[i] = value % 256;
    return this.raw(out);
  }
  u8(value) { return this.#int(value, 1); }
  u16(value) { return this.#int(value, 2); }
  u32(value) { return this.#int(value, 4); }
  text(value) { const raw = utf8.encode(value); return this.u16(raw.length).raw(raw); }
  blob(value) { return this.u16(value.length).raw(value); }
  big(value) { return this.u32(value.length).raw(value); }
  raw(value) {
    if (!(value instanceof Uint8Array)) throw new TypeError("bytes must be a Uint8Array");
    this.#parts.push(value);
    this.#size += value.length;
    return this;
  }
  bytes() {
    const out = new Uint8Array(this.#size);
    this.#parts.reduce((at, p) => { out.set(p, at); return at + p.length; }, 0);
    return out;
  }
}

export class Reader {
  #data;
  #pos = 0;
  constructor(data) {
    need(data instanceof Uint8Array, "a message must be bytes (a Uint8Array)");
    this.#data = data;
  }
  take(n) {
    if (this.#pos + n > this.#data.length) {
      throw refuse(`message truncated: needs ${this.#pos + n} bytes, has ${this.#data.length}`,
                   "truncated");
    }
    this.#pos += n;
    return this.#data.subarray(this.#pos - n, this.#pos);
  }
  #int(size) { return this.take(size).reduce((v, b) => v * 256 + b, 0); }
  u8() { return this.#int(1); }
  u16() { return this.#int(2); }
  u32() { return this.#int(4); }
  text(what = "id") {
    const raw = this.take(this.u16());
    let value;
    try { value = strictUtf8.decode(raw); } catch { throw refuse(`${what} is not UTF-8`); }
    checkId(value, what);
    return value;
  }
  blob() { return this.take(this.u16()).slice(); }
  big() { return this.take(this.u32()); }
  tell() { return this.#pos; }
  end() { need(this.#pos === this.#data.length, "unexpected trailing bytes"); }
}

// ---- messages (_messages.py, _params.py) ------------------------------------------------------

function checkParams(p) {  // RoundParams.__post_init__ (RangeError, as Python's ConfigError)
  for (const [label, key, low] of [["neighbours", "neighbours", 1], ["length", "length", 1],
    ["shamir_threshold", "shamirThreshold", 1], ["min_survivors", "minSurvivors", 2]]) {
    local(Number.isInteger(p?.[key]) && p[key] >= low,
          `${label} must be an integer >= ${low}, got ${p?.[key]}`);
  }
  local(p.bits === 32 || p.bits === 64, `bits must be 32 or 64, got ${p.bits}`);
  local(p.shamirThreshold <= p.neighbours, "shamir_threshold exceeds neighbours");
}

function checkKey(key, what) {
  need(key instanceof Uint8Array && key.length === KEY_BYTES, `${what} must be 32 bytes`,
       "bad_key");
}

function unique(ids, what) {
  need(Array.isArray(ids), `${what} must be an array`);
  for (const id of ids) checkId(id);
  need(new Set(ids).size === ids.length, `${what} names a client twice`);
}

const firsts = (list) => (Array.isArray(list) ? list.map((entry) => entry[0]) : list);

function checkPairs(pairs, what) {
  unique(firsts(pairs), what);
  need(pairs.every(([, b]) => b instanceof Uint8Array && b.length <= MAX_BLOB),
       `an entry of ${what} is not bytes or too long`);
}

export function list(r, item) {
  const n = r.u32();
  need(n <= MAX_CLIENTS, `${n} entries is more than ${MAX_CLIENTS}`);
  return Array.from({length: n}, item);
}
export const writeIds = (w, ids) => ids.reduce((out, id) => out.text(id), w.u32(ids.length));
const writePairs = (w, pairs) => pairs.reduce((out, [id, b]) => out.text(id).blob(b),
                                              w.u32(pairs.length));
const readPairs = (r) => list(r, () => [r.text(), r.blob()]);

function vectorBytes(v) {  // little-endian, as Python writes it
  if (LITTLE_ENDIAN) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  const view = new DataView(new ArrayBuffer(v.byteLength));
  v.forEach((x, i) => (v.BYTES_PER_ELEMENT === 4 ? view.setUint32(4 * i, x, true)
    : view.setBigUint64(8 * i, x, true)));
  return new Uint8Array(view.buffer);
}

function readVector(raw, bits) {
  const Out = bits === 32 ? Uint32Array : BigUint64Array;
  if (LITTLE_ENDIAN) return new Out(raw.slice().buffer);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Out.from({length: raw.length / (bits / 8)}, (_, i) => (
    bits === 32 ? view.getUint32(4 * i, true) : view.getBigUint64(8 * i, true)));
}

// type name -> {code, party, check (the dataclass's __post_init__), write, read}
const KINDS = {
  AdvertiseKeys: {code: 1, party: "sender",
    check(m) {
      checkKey(m.encKey, "enc_key");
      checkKey(m.maskKey, "mask_key");
      need(!same(m.encKey, m.maskKey), "the two public keys must differ", "bad_key");
    },
    write: (w, m) => w.blob(m.encKey).blob(m.maskKey),
    read: (r) => ({encKey: r.blob(), maskKey: r.blob()})},
  KeyDirectory: {code: 2, party: "recipient",
    check(m) {
      checkParams(m.params);
      unique(m.participants, "the participant list");
      need(m.participants.every((id, i) => !i || compareIds(m.participants[i - 1], id) < 0),
           "the participant list must be sorted");
      unique(firsts(m.keys), "the key directory");
      for (const [id, enc, mk] of m.keys) [enc, mk].forEach((k) => checkKey(k, `${id}'s key`));
    },
    write(w, {params: p, participants, keys}) {
      w.u16(p.neighbours).u16(p.shamirThreshold).u32(p.minSurvivors).u8(p.bits).u32(p.length);
      writeIds(w, participants).u32(keys.length);
      for (const [id, enc, mk] of keys) w.text(id).blob(enc).blob(mk);
    },
    read(r) {
      const params = {neighbours: r.u16(), shamirThreshold: r.u16(), minSurvivors: r.u32(),
                      bits: r.u8(), length: r.u32()};
      try { checkParams(params); } catch (e) { throw refuse(`round parameters: ${e.message}`); }
      const participants = list(r, () => r.text());
      return {params, participants, keys: list(r, () => [r.text(), r.blob(), r.blob()])};
    }},
  ShareKeys: {code: 3, party: "sender",
    check: (m) => checkPairs(m.sealed, "ShareKeys"),
    write: (w, m) => writePairs(w, m.sealed),
    read: (r) => ({sealed: readPairs(r)})},
  ShareInbox: {code: 4, party: "recipient",
    check: (m) => checkPairs(m.sealed, "ShareInbox"),
    write: (w, m) => writePairs(w, m.sealed),
    read: (r) => ({sealed: readPairs(r)})},
  MaskedInput: {code: 5, party: "sender",
    check: (m) => need(m.vector instanceof Uint32Array || m.vector instanceof BigUint64Array,
                       "the masked vector must be a Uint32Array or a BigUint64Array"),
    write(w, {vector}) {  // zero padding puts the values at a multiple of 8 bytes, as Python
      const pad = pad8(w.tell() + 6);
      w.u8(vector.BYTES_PER_ELEMENT * 8).u8(pad).raw(new Uint8Array(pad)).big(vectorBytes(vector));
    },
    read(r) {
      const [bits, pad] = [r.u8(), r.u8()];
      need(bits === 32 || bits === 64, `bits must be 32 or 64, got ${bits}`);
      need(pad === pad8(r.tell() + 4) && r.take(pad).every((b) => b === 0),
           "the vector's padding is wrong");
      const raw = r.big();
      need(raw.length % (bits / 8) === 0, "the vector's length is not whole values");
      return {vector: readVector(raw, bits)};
    }},
  UnmaskRequest: {code: 6, party: "recipient",
    check: (m) => unique(m.survivors, "the survivor list"),
    write: (w, m) => writeIds(w, m.survivors),
    read: (r) => ({survivors: list(r, () => r.text())})},
  UnmaskShares: {code: 7, party: "sender",
    check(m) {
      checkPairs(m.selfMaskShares, "self_mask_shares");
      checkPairs(m.maskKeyShares, "mask_key_shares");
      const seeds = new Set(firsts(m.selfMaskShares));
      const both = sortIds(firsts(m.maskKeyShares).filter((id) => seeds.has(id)));
      need(!both.length, `both secrets of ${JSON.stringify(both)} asked for`);
    },
    write: (w, m) => writePairs(writePairs(w, m.selfMaskShares), m.maskKeyShares),
    read: (r) => ({selfMaskShares: readPairs(r), maskKeyShares: readPairs(r)})},
};
const NAMES = Object.fromEntries(Object.entries(KINDS).map(([name, k]) => [k.code, name]));

function kindOf(type) {
  if (!Object.hasOwn(KINDS, type)) throw new TypeError(`not a SecAgg message type: ${type}`);
  return KINDS[type];
}

/** The message's bytes, after the checks Python makes when it constructs one. */
export function encodeMessage(msg) {
  const kind = kindOf(msg?.type);
  checkId(msg.run, "run");
  need(Number.isInteger(msg.round) && msg.round >= 0 && msg.round < 2 ** 32,
       `round must be an integer in [0, 2**32): ${msg.round}`);
  checkId(msg[kind.party], "client id");
  kind.check(msg);
  const w = new Writer().raw(MAGIC).u8(VERSION).u8(kind.code).text(msg.run).u32(msg.round);
  kind.write(w.text(msg[kind.party]), msg);
  return w.bytes();
}

/** The message in `data`; with `expectType` (a type name) any other type is wrong_stage. */
export function decodeMessage(data, expectType) {
  if (expectType !== undefined) kindOf(expectType);
  const r = new Reader(data);
  need(same(r.take(3), MAGIC), "not a privml SecAgg message (bad magic)");
  const version = r.u8();
  need(version === VERSION, `SecAgg message version ${version}, not ${VERSION}`);
  const type = NAMES[r.u8()];
  need(type !== undefined, "unknown SecAgg message type");
  need(expectType === undefined || type === expectType, `expected ${expectType}, got ${type}`,
       "wrong_stage");
  const kind = KINDS[type];
  const head = {type, run: r.text("run"), round: r.u32(), [kind.party]: r.text()};
  const msg = {...head, ...kind.read(r)};
  kind.check(msg);
  r.end();
  return msg;
}


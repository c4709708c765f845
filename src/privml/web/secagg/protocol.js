// privml SecAgg+ for the browser: messages, neighbour graph, client state machine and
// fixed-point encoding, on top of ./crypto.js. Plain ES module, no dependencies.
//
// Theory of operation: a browser takes part in a round next to Python clients, so every byte
// it sends must be the byte Python would send. Each export is the twin of one Python module:
//
//   Writer, Reader, checkId   _wire.py      big-endian u8/u16/u32; text = u16 length + UTF-8,
//                                           blob = u16 length, big = u32 length; the reader
//                                           insists on consuming every byte
//   encodeMessage,            _messages.py  "PSA" || 1 || type || run || round || party ||
//   decodeMessage                           body, 7 types, the same checks (and _params.py's)
//   graphSeed, neighbours     _graph.py     SHA-256 seed; Harary graph on a ring shuffled by
//                                           Fisher-Yates over the AES-CTR keystream
//   SecAggClient              _client.py    advertise / shareKeys / maskedInput / unmask,
//                                           message bytes in and out
//   FixedPoint                _encoding.py  FixedPoint.encode, from FixedPoint.describe()
//
// Messages are plain objects: `type` is the Python class name, the other fields are Python's
// in camelCase (Uint8Array for bytes, arrays for tuples, Uint32Array/BigUint64Array for a
// masked vector). Ids are ordered as Python orders str, by code point (compareIds: UTF-16
// order differs above U+FFFF). Bytes from a peer are refused with SecAggError and Python's
// code; local misuse throws TypeError/RangeError (Python's ConfigError / ParamsError).
//
// The client draws its randomness from `entropy(n)` in Python's order and use (two private
// keys and the self-mask seed when built; per directory, the Shamir coefficients of the mask
// key, then of the seed, then a GCM nonce per neighbour), so that a test can make it
// byte-identical to a Python SecAggClient. Its calls run one at a time, and each checks
// everything before it changes any state.

import {SecAggError, aesGcmOpen, aesGcmSeal, binding, bigIntToBytes, bytesToBigInt, deriveKey,
        mask, PRIME, SHARE_BYTES, shamirEval, x25519PublicKey, x25519Shared} from "./crypto.js";

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

const refuse = (message, code = "bad_message") => new SecAggError(message, code);
function need(ok, message, code = "bad_message") { if (!ok) throw refuse(message, code); }
function local(ok, message) { if (!ok) throw new RangeError(message); }
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
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
const sortIds = (ids) => [...ids].sort(compareIds);

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

function list(r, item) {
  const n = r.u32();
  need(n <= MAX_CLIENTS, `${n} entries is more than ${MAX_CLIENTS}`);
  return Array.from({length: n}, item);
}
const writeIds = (w, ids) => ids.reduce((out, id) => out.text(id), w.u32(ids.length));
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

// ---- the neighbour graph (_graph.py) ----------------------------------------------------------

/** SHA-256 over the round's binding and the sorted ids (u32 count, then u16 length + UTF-8). */
export async function graphSeed(run, round, ids) {
  const w = writeIds(new Writer().raw(binding({run, round, stage: "graph", keys: []})),
                     sortIds(ids));
  return new Uint8Array(await crypto.subtle.digest("SHA-256", w.bytes()));
}

async function permutation(n, seed) {  // Fisher-Yates, rejection sampling: no modulo bias
  let draws = await mask(seed, 4 * n + 64, 32);
  let pos = 0;
  const order = Array.from({length: n}, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const limit = 2 ** 32 - (2 ** 32 % (i + 1));
    let value;
    do {  // the keystream's prefix is the same, so running out just means a longer one
      if (pos === draws.length) draws = await mask(seed, 2 * draws.length, 32);
      value = draws[pos++];
    } while (value >= limit);
    const j = value % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** Map id -> Set of its neighbours in the k-regular graph drawn from `seed`; RangeError
 *  (Python's ValueError) when there is none. */
export async function neighbours(ids, k, seed) {
  const ring = sortIds(ids);
  const n = ring.length;
  local(new Set(ring).size === n, "client ids must be distinct");
  local(Number.isInteger(k) && k >= 1 && !(k % 2 && n % 2 && k < n - 1),
        `no ${k}-regular graph on ${n} nodes`);
  if (k >= n - 1) return new Map(ring.map((id) => [id, new Set(ring.filter((x) => x !== id))]));
  const order = (await permutation(n, seed)).map((i) => ring[i]);
  return new Map(order.map((id, pos) => {
    const near = new Set();
    for (let d = 1; d <= k / 2; d++) near.add(order[(pos + d) % n]).add(order[(pos - d + n) % n]);
    if (k % 2) near.add(order[(pos + Math.floor(n / 2)) % n]);
    return [id, near];
  }));
}

// ---- the client (_client.py) ------------------------------------------------------------------

function draw(entropy, n) {
  const raw = entropy(n);
  local(raw instanceof Uint8Array && raw.length === n, `entropy(${n}) must return ${n} bytes`);
  return raw.slice();
}

function split(secret, threshold, xs, entropy) {  // hazmat.split, drawing as Python does
  const coeffs = [bytesToBigInt(secret)];
  while (coeffs.length < threshold) {  // _shamir._uniform: 66 bytes cut to 521 bits, < PRIME
    const raw = draw(entropy, SHARE_BYTES);
    raw[0] &= 0x01;
    const value = bytesToBigInt(raw);
    if (value < PRIME) coeffs.push(value);
  }
  return xs.map((x) => bigIntToBytes(shamirEval(coeffs, BigInt(x))));
}

function addMask(acc, m, subtract) {  // typed-array stores wrap modulo 2^bits
  for (let i = 0; i < acc.length; i++) acc[i] = subtract ? acc[i] - m[i] : acc[i] + m[i];
}

/** One client's side of one round. Each stage takes the server's message bytes and resolves
 *  to the answer's bytes; the same request again gets the same answer, another is "replay". */
export class SecAggClient {
  #entropy; #encSk; #maskSk; #seed; #pub;
  #stage = "advertise";
  #sent = new Map();  // stage -> {request, answer} (bytes)
  #directory = null;
  #keys = null;  // neighbour -> [enc key, mask key]
  #shares = null;  // neighbour -> [its mask-key share, its seed share]
  #queue = Promise.resolve();

  constructor({run, round, clientId, entropy = (n) => crypto.getRandomValues(new Uint8Array(n))}) {
    Object.assign(this, {run, round, clientId});
    this.#entropy = entropy;
    [this.#encSk, this.#maskSk, this.#seed] = [32, 32, 32].map((n) => draw(entropy, n));
  }

  get stage() { return this.#stage; }

  #serial(step) {  // one call at a time, so that no two see the same state
    const result = this.#queue.then(async () => {
      this.#pub ??= await Promise.all([this.#encSk, this.#maskSk].map(x25519PublicKey));
      return step(...this.#pub);
    });
    this.#queue = result.catch(() => {});
    return result;
  }

  #binding(stage, keys) { return binding({run: this.run, round: this.round, stage, keys}); }

  #message(type, fields) {
    const head = {type, run: this.run, round: this.round, sender: this.clientId};
    return encodeMessage({...head, ...fields});
  }

  #check(data, type, stage) {  // header checks; the earlier answer when data repeats a request
    const msg = decodeMessage(data, type);
    need(msg.run === this.run && msg.round === this.round, `message for run ${msg.run} round ` +
         `${msg.round}; this is run ${this.run} round ${this.round}`, "wrong_round");
    need(msg.recipient === this.clientId, `message for ${msg.recipient}`, "wrong_sender");
    const done = this.#sent.get(stage);
    if (done !== undefined) {  // one encoding per message: equal bytes are equal messages
      need(same(done.request, data), `${stage} was answered for another request`, "replay");
      return {msg, answer: done.answer.slice()};
    }
    need(this.#stage === stage, `expected ${this.#stage}, got ${stage}`, "wrong_stage");
    return {msg};
  }

  #answer(stage, request, answer, next) {
    this.#sent.set(stage, {request: request.slice(), answer});
    this.#stage = next;
    return answer.slice();
  }

  async #sealingKey(peerEnc, aad) {
    return deriveKey(await x25519Shared(this.#encSk, peerEnc), {info: aad});
  }

  /** AdvertiseKeys bytes: the two public keys (the same every call). */
  advertise() {
    return this.#serial((encKey, maskKey) => {
      const out = this.#message("AdvertiseKeys", {encKey, maskKey});
      if (this.#stage === "advertise") this.#stage = "share_keys";
      return out;
    });
  }

  /** KeyDirectory bytes -> ShareKeys bytes: Shamir shares of the mask key and the seed,
   *  sealed to each neighbour. */
  shareKeys(directoryBytes) {
    return this.#serial(async (encPk, maskPk) => {
      const {msg: d, answer} = this.#check(directoryBytes, "KeyDirectory", "share_keys");
      if (answer) return answer;
      const keys = await this.#checkDirectory(d, encPk, maskPk);
      const order = new Map(d.participants.map((id, i) => [id, i + 1]));
      const holders = sortIds(keys.keys());
      const xs = holders.map((id) => order.get(id));
      const t = d.params.shamirThreshold;
      const [keyShares, seedShares] = [this.#maskSk, this.#seed].map(
        (secret) => split(secret, t, xs, this.#entropy));
      const sealed = [];
      for (const [i, id] of holders.entries()) {
        const aad = this.#binding("share-keys", [encPk, keys.get(id)[0]]);
        const key = await this.#sealingKey(keys.get(id)[0], aad);
        const body = new Writer().text(this.clientId).text(id).blob(keyShares[i])
          .blob(seedShares[i]).bytes();
        sealed.push([id, await aesGcmSeal(key, body, {aad, nonce: draw(this.#entropy, 12)})]);
      }
      const out = this.#message("ShareKeys", {sealed});
      [this.#directory, this.#keys] = [d, keys];
      return this.#answer("share_keys", directoryBytes, out, "masked_input");
    });
  }

  async #checkDirectory(d, encPk, maskPk) {
    const p = d.params;
    need(d.participants.includes(this.clientId), "the key directory does not list this client",
         "not_participant");
    need(d.participants.length >= p.minSurvivors, "fewer participants than min_survivors");
    let graph;
    try {
      graph = await neighbours(d.participants, p.neighbours,
                               await graphSeed(this.run, this.round, d.participants));
    } catch (e) {
      throw refuse(`the round's graph is impossible: ${e.message}`);
    }
    const keys = new Map(d.keys.map(([id, enc, mk]) => [id, [enc, mk]]));
    const mine = graph.get(this.clientId);
    need(keys.size === mine.size && [...keys.keys()].every((id) => mine.has(id)),
         "the directory's neighbours are not this client's in the round's graph");
    need(keys.size >= p.shamirThreshold, "fewer neighbours than shamir_threshold");
    const seen = new Set([hex(encPk), hex(maskPk)]);
    for (const [e, m] of [...keys.values()].map((pair) => pair.map(hex))) {
      need(!seen.has(e) && !seen.has(m) && e !== m, "a public key appears twice", "bad_key");
      seen.add(e).add(m);
    }
    return keys;
  }

  /** ShareInbox bytes and this client's encoded update (see FixedPoint: a Uint32Array or
   *  BigUint64Array of the round's length) -> MaskedInput bytes. */
  maskedInput(inboxBytes, encoded) {
    return this.#serial(async (encPk, maskPk) => {
      const {msg: inbox, answer} = this.#check(inboxBytes, "ShareInbox", "masked_input");
      if (answer) return answer;
      const {bits, length} = this.#directory.params;
      const Type = bits === 32 ? Uint32Array : BigUint64Array;
      if (!(encoded instanceof Type) || encoded.length !== length) {
        throw new TypeError(`the encoded update must be a ${Type.name} of ${length} values`);
      }
      const shares = await this.#openInbox(inbox, encPk);
      const y = encoded.slice();
      const self = await deriveKey(this.#seed, {info: this.#binding("self-mask", [maskPk])});
      addMask(y, await mask(self, length, bits), false);
      for (const id of shares.keys()) {  // + if this id sorts first, else -; keys in id order
        const [first, peer] = [compareIds(this.clientId, id) < 0, this.#keys.get(id)[1]];
        const info = this.#binding("pairwise-mask", first ? [maskPk, peer] : [peer, maskPk]);
        const key = await deriveKey(await x25519Shared(this.#maskSk, peer), {info});
        addMask(y, await mask(key, length, bits), !first);
      }
      const out = this.#message("MaskedInput", {vector: y});
      this.#shares = shares;
      return this.#answer("masked_input", inboxBytes, out, "unmask");
    });
  }

  async #openInbox(inbox, encPk) {
    const shares = new Map();
    for (const [sender, blob] of inbox.sealed) {
      need(this.#keys.has(sender), `shares from ${sender}, not a neighbour`, "wrong_sender");
      const aad = this.#binding("share-keys", [this.#keys.get(sender)[0], encPk]);
      const key = await this.#sealingKey(this.#keys.get(sender)[0], aad);
      const r = new Reader(await aesGcmOpen(key, blob, {aad}));
      need(r.text() === sender && r.text() === this.clientId,
           `the shares from ${sender} name other parties`, "wrong_sender");
      shares.set(sender, [r.blob(), r.blob()]);
      r.end();
    }
    return shares;
  }

  /** UnmaskRequest bytes -> UnmaskShares bytes: seed shares of the surviving neighbours,
   *  mask-key shares of the dropped ones. One survivor list only: answering two could reveal
   *  both secrets of a neighbour. */
  unmask(requestBytes) {
    return this.#serial(() => {
      const {msg: req, answer} = this.#check(requestBytes, "UnmaskRequest", "unmask");
      if (answer) return answer;
      const survivors = new Set(req.survivors);
      const everyone = new Set(this.#directory.participants);
      need(survivors.has(this.clientId), "this client is not a survivor", "not_participant");
      need(req.survivors.every((id) => everyone.has(id)),
           "the survivor list names clients that never advertised keys");
      need(survivors.size >= this.#directory.params.minSurvivors,
           "fewer survivors than min_survivors");
      const owners = sortIds(this.#shares.keys());
      const pick = (alive, i) => owners.filter((id) => survivors.has(id) === alive)
        .map((id) => [id, this.#shares.get(id)[i]]);
      const out = this.#message("UnmaskShares", {selfMaskShares: pick(true, 1),
                                                 maskKeyShares: pick(false, 0)});
      return this.#answer("unmask", requestBytes, out, "done");
    });
  }
}

// ---- fixed-point encoding (_encoding.py) ------------------------------------------------------

function rint(v) {  // round half to even, as numpy.rint (Math.round sends ties up)
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** FixedPoint.encode, set up from the settings the coordinator sends (FixedPoint.describe()). */
export class FixedPoint {
  constructor(settings) {
    const {bits, frac_bits: fracBits, clip, max_weight: maxWeight} = settings ?? {};
    local(bits === 32 || bits === 64, `bits must be 32 or 64, got ${bits}`);
    local(Number.isInteger(fracBits) && fracBits >= 0 && fracBits <= 52,
          `frac_bits must be an integer in [0, 52], got ${fracBits}`);
    local(typeof clip === "number" && Number.isFinite(clip) && clip > 0,
          `clip must be a finite number > 0, got ${clip}`);
    local(Number.isSafeInteger(maxWeight) && maxWeight >= 1 && maxWeight < 2 ** (bits - 1),
          `max_weight must be an integer in [1, 2^${bits - 1}), got ${maxWeight}`);
    // The coordinator checked that no sum wraps; one value must at least fit the signed range.
    local(rint(clip * (maxWeight * 2 ** fracBits)) < 2 ** (bits - 1),
          `clip x max_weight x 2^frac_bits does not fit ${bits} bits`);
    Object.freeze(Object.assign(this, {bits, fracBits, clip, maxWeight, scale: 2 ** fracBits}));
  }

  /** A finite Float32Array/Float64Array update and an integer weight >= 1 -> d + 1 values
   *  (Uint32Array or BigUint64Array): rint(clip(x) * w * 2^frac_bits) mod 2^bits, then
   *  w = min(weight, max_weight). */
  encode(flat, weight) {
    local(Number.isInteger(weight) && weight >= 1,
          `weight must be an integer >= 1 (a number of examples), got ${weight}`);
    if (!(flat instanceof Float32Array || flat instanceof Float64Array)) {
      throw new TypeError("an update must be a Float32Array or a Float64Array");
    }
    local(flat.length > 0, "an update must not be empty");
    const bad = flat.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) {
      const count = flat.filter((x) => !Number.isFinite(x)).length;
      throw new RangeError(`an update must be finite: ${count} NaN/inf values (first at ` +
                           `index ${bad})`);
    }
    const w = Math.min(weight, this.maxWeight);
    const factor = w * this.scale;  // float64, the same steps as numpy
    const wide = this.bits === 64;
    const out = new (wide ? BigUint64Array : Uint32Array)(flat.length + 1);
    for (let i = 0; i < flat.length; i++) {
      const q = rint(Math.min(Math.max(flat[i], -this.clip), this.clip) * factor);
      out[i] = wide ? BigInt(q) : q;  // the store is the two's complement residue
    }
    out[flat.length] = wide ? BigInt(w) : w;
    return out;
  }
}

// privml SecAgg+ for the browser: messages, neighbour graph, client state machine and
// fixed-point encoding, on top of ./crypto.js. Plain ES module, no dependencies.
//
// Theory of operation: a browser takes part in a round next to Python clients, so every byte
// it sends must be the byte Python would send. Each export is the twin of one Python module:
//
//   (re-exported from ./messages.js:)
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
import {Reader, Writer, compareIds, decodeMessage, encodeMessage, hex, list, local, need,
        refuse, same, sortIds, writeIds} from "./messages.js";

export {SecAggError};
export {Reader, Writer, checkId, compareIds, decodeMessage, encodeMessage} from "./messages.js";

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

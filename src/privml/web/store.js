// privml sealed store for the browser: IndexedDB records sealed with AES-256-GCM (WebCrypto),
// no dependencies.
//
// Theory of operation. One IndexedDB database per store (default "privml") with two object
// stores: "meta" holds a single keyring record, "records" holds one sealed blob per record
// name. Every value is sealed whole (no chunking: a model or dataset of tens of MB costs about
// three copies of it in memory while it is sealed or opened):
//
//   blob = "PMWS" | version 0x01 | kind (1) | nonce (12, fresh per put) | ciphertext | tag (16)
//   aad  = "PMWS" | version | kind | u32be len | store name (UTF-8) | u32be len | record name
//   kind: 1 Uint8Array, 2 ArrayBuffer, 3 JSON (UTF-8 text); 0 is the keyring's key check
//
// so a blob copied under another record name or into another store, a flipped byte, or a
// changed kind or version byte fails authentication: StoreError "integrity", never garbage.
// The keyring is {format: 1, kind: "device", key: CryptoKey, check} or {format: 1, kind:
// "passphrase", kdf: {name: "PBKDF2-SHA256", iterations, salt (16 random bytes)}, check};
// `check` is an empty plaintext sealed as kind 0 under the record name "" (never a record's
// name), so a wrong passphrase or a swapped keyring is StoreError "wrong_key" at open.
//
// Two ways to hold the key:
// - device key (no passphrase): a random AES-256-GCM CryptoKey, generated non-extractable and
//   stored *as a CryptoKey* in the keyring. No script, ours included, can ever read its bytes:
//   exportKey refuses, so an XSS can use the key only while it runs in this origin and cannot
//   carry it off for later. But the browser must be able to rebuild the key, so it writes the
//   raw key bytes, unencrypted, into the same IndexedDB files as the records (Chromium
//   serialises a secret CryptoKey in "raw" format whatever its `extractable`; any browser
//   must keep the bytes somewhere). Whoever copies the profile's IndexedDB folder therefore
//   copies the key with the ciphertext: loaded into a browser, the page opens it; parsed, the
//   key falls out. This mode keeps plaintext out of the files (no grep, no forensic carving of
//   a model or dataset), keeps any record that leaves without the keyring sealed (a backup or
//   sync of the records, a dump of values), and stops script from exporting the key; it does
//   not stop a thief with the whole profile. Only OS disk encryption or the login does that.
// - passphrase: the key is PBKDF2-SHA256 (600,000 iterations, fixed here, no knob) of the
//   NFC-normalised passphrase and a random 16-byte salt kept in the keyring; the key itself is
//   never stored. The profile's files alone then need the passphrase: an offline guess costs
//   600,000 HMAC-SHA256, cheap enough on GPUs that only a strong passphrase holds.
//
// Not protected, in either mode:
// - script running in this origin (XSS, a compromised dependency, an extension with access
//   to the page, devtools): it can call get() on an open store, open a device-key store
//   itself, and capture a passphrase as it is typed. Encryption at rest cannot help here.
// - other origins already cannot read this origin's IndexedDB (same-origin policy and storage
//   partitioning); sealing only adds depth against a browser bug that leaks storage.
// - eviction: storage is best-effort unless navigator.storage.persist() is granted, and the
//   browser may drop the whole database under storage pressure (or the user clears site data)
//   — key and records go together and nothing can bring them back. `persisted` records the
//   answer asked for at open; keep anything irreplaceable on the server too.
// - rollback and deletion: a record can be replaced by an older sealed copy of itself (same
//   name, same store) or deleted, and that is not detected. Record names, their number and
//   sizes are visible: name records by role or by a hash ("model", "data:<sha256>"), never by
//   content.
// - nonces are random 96-bit, one key per store: safe far beyond any plausible number of puts
//   (NIST's bound is 2^32 per key).
//
// Errors: bad arguments throw TypeError/RangeError; everything else is StoreError with a
// `code`: "wrong_key" (wrong passphrase, passphrase given to a device-key store or missing for
// a passphrase store, keyring does not match this store), "integrity" (a record or the keyring
// fails authentication or is malformed), "storage" (IndexedDB refused: quota, blocked, a newer
// schema), "closed" (close() was called, or another page deleted the store), "unavailable"
// (no WebCrypto or IndexedDB here: it needs a secure context, https or http://127.0.0.1).

const MAGIC = Uint8Array.of(0x50, 0x4d, 0x57, 0x53);  // "PMWS": privml web store
const VERSION = 1;
const KIND = {check: 0, bytes: 1, buffer: 2, json: 3};
const HEAD = MAGIC.length + 2;  // magic | version | kind
const NONCE = 12;
const TAG = 16;
const DB_VERSION = 1;
const META = "meta";
const RECORDS = "records";
const KEYRING = "keyring";
const KEYRING_FORMAT = 1;
const KDF_NAME = "PBKDF2-SHA256";
export const PBKDF2_ITERATIONS = 600_000;
const MAX_ITERATIONS = 20_000_000;  // a tampered count must not freeze the page
const SALT = 16;
const MAX_NAME_BYTES = 1024;
const PERSIST_WAIT_MS = 1000;  // Firefox asks the user; never hold open() hostage to that
const CONSTRUCT = Symbol("SealedStore");
const utf8 = new TextEncoder();

export class StoreError extends Error {
  constructor(message, code, options) {
    super(message, options);
    this.name = "StoreError";
    this.code = code;
  }
}

const subtle = () => {
  const s = globalThis.crypto?.subtle;
  if (!s || !globalThis.indexedDB) {
    throw new StoreError("the sealed store needs WebCrypto and IndexedDB: a secure context "
                         + "(https or http://127.0.0.1) in a browser that allows storage",
                         "unavailable");
  }
  return s;
};

function checkName(value, what) {
  if (typeof value !== "string" || value.length === 0) {
    throw new TypeError(`${what} must be a non-empty string`);
  }
  // TextEncoder would turn a lone surrogate into U+FFFD, giving two names one binding
  if (/\p{Cs}/u.test(value)) throw new TypeError(`${what} has a lone surrogate`);
  const encoded = utf8.encode(value);
  if (encoded.length > MAX_NAME_BYTES) {
    throw new RangeError(`${what} is over ${MAX_NAME_BYTES} bytes of UTF-8`);
  }
  return encoded;
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function u32be(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

// ---- sealing --------------------------------------------------------------------------------

function aad(head, {store, name}) {
  return concat([head.subarray(0, HEAD), u32be(store.length), store, u32be(name.length), name]);
}

async function seal(key, kind, binding, plaintext) {
  const head = concat([MAGIC, Uint8Array.of(VERSION, kind)]);
  const nonce = crypto.getRandomValues(new Uint8Array(NONCE));
  const sealed = await subtle().encrypt(
    {name: "AES-GCM", iv: nonce, additionalData: aad(head, binding), tagLength: 128},
    key, plaintext);
  return concat([head, nonce, new Uint8Array(sealed)]);
}

/** The kind and plaintext of a sealed blob; StoreError "integrity" for anything else. */
async function unseal(key, blob, binding, kinds, what) {
  const bad = (why) => new StoreError(`${what} ${why}`, "integrity");
  if (!(blob instanceof Uint8Array) || blob.length < HEAD + NONCE + TAG) {
    throw bad("is not a sealed blob");
  }
  if (MAGIC.some((b, i) => blob[i] !== b)) throw bad("has a bad magic");
  if (blob[MAGIC.length] !== VERSION) throw bad(`has unknown format version ${blob[MAGIC.length]}`);
  const kind = blob[MAGIC.length + 1];
  if (!kinds.includes(kind)) throw bad(`has unknown kind ${kind}`);
  try {
    const plain = await subtle().decrypt(
      {name: "AES-GCM", iv: blob.subarray(HEAD, HEAD + NONCE), additionalData: aad(blob, binding),
       tagLength: 128},
      key, blob.subarray(HEAD + NONCE));
    return {kind, plain};
  } catch (cause) {
    throw new StoreError(`${what} failed authentication: altered, or sealed under another `
                         + "name, store or key", "integrity", {cause});
  }
}

function isJsonRoot(value) {
  if (value === null || ["string", "number", "boolean"].includes(typeof value)) return true;
  if (typeof value !== "object") return false;
  const proto = Object.getPrototypeOf(value);
  return Array.isArray(value) || proto === Object.prototype || proto === null;
}

function encode(value) {
  if (value instanceof Uint8Array) return {kind: KIND.bytes, plain: value};
  if (value instanceof ArrayBuffer) return {kind: KIND.buffer, plain: value};
  if (ArrayBuffer.isView(value)) {
    throw new TypeError("put takes a Uint8Array, an ArrayBuffer or a JSON value: pass a typed "
                        + "array as new Uint8Array(a.buffer, a.byteOffset, a.byteLength)");
  }
  if (!isJsonRoot(value)) {
    throw new TypeError("put takes a Uint8Array, an ArrayBuffer, or a plain object, array, "
                        + "string, number, boolean or null (stored as JSON)");
  }
  return {kind: KIND.json, plain: utf8.encode(JSON.stringify(value))};
}

function decode(kind, plain) {
  if (kind === KIND.bytes) return new Uint8Array(plain);
  if (kind === KIND.buffer) return plain;
  return JSON.parse(new TextDecoder("utf-8", {fatal: true}).decode(plain));
}

// ---- IndexedDB --------------------------------------------------------------------------------

function storageError(message, cause) {
  const why = cause ? `: ${cause.name}${cause.message ? ` (${cause.message})` : ""}` : "";
  return new StoreError(message + why, "storage", {cause});
}

function openDatabase(name) {
  return new Promise((resolve, reject) => {
    let req;
    try {
      req = indexedDB.open(name, DB_VERSION);
    } catch (cause) {  // e.g. SecurityError where storage is denied
      reject(storageError(`cannot open IndexedDB "${name}"`, cause));
      return;
    }
    req.onupgradeneeded = () => {
      for (const store of [META, RECORDS]) {
        if (!req.result.objectStoreNames.contains(store)) req.result.createObjectStore(store);
      }
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(storageError(`cannot open IndexedDB "${name}"`, req.error));
  });
}

/**
 * Runs `fill(objectStore, setResult)` in one transaction and resolves with the result once
 * the transaction has committed (writes are durable then), or rejects if it aborts.
 */
function transact(db, store, mode, fill) {
  return new Promise((resolve, reject) => {
    let tx;
    let result;
    try {
      tx = db.transaction(store, mode, {durability: mode === "readwrite" ? "strict" : "default"});
    } catch (cause) {
      reject(storageError(`IndexedDB refused a ${mode} transaction`, cause));
      return;
    }
    tx.oncomplete = () => resolve(result);
    tx.onabort = () => reject(storageError(`IndexedDB ${mode} transaction aborted`, tx.error));
    try {
      fill(tx.objectStore(store), (value) => { result = value; });
    } catch (cause) {
      reject(storageError(`IndexedDB ${mode} failed`, cause));
      try { tx.abort(); } catch { /* already finished */ }
    }
  });
}

function readOne(db, store, key) {
  return transact(db, store, "readonly", (s, set) => {
    const req = s.get(key);
    req.onsuccess = () => set(req.result);
  });
}

// ---- the keyring ------------------------------------------------------------------------------

function deriveKey(passphrase, {salt, iterations}) {
  return subtle().importKey("raw", utf8.encode(passphrase.normalize("NFC")), "PBKDF2", false,
                            ["deriveKey"])
    .then((base) => subtle().deriveKey({name: "PBKDF2", hash: "SHA-256", salt, iterations}, base,
                                       {name: "AES-GCM", length: 256}, false,
                                       ["encrypt", "decrypt"]));
}

async function newKeyring(binding, passphrase) {
  let key;
  let extra;
  if (passphrase === undefined) {
    key = await subtle().generateKey({name: "AES-GCM", length: 256}, false, ["encrypt", "decrypt"]);
    extra = {kind: "device", key};
  } else {
    const kdf = {name: KDF_NAME, iterations: PBKDF2_ITERATIONS,
                 salt: crypto.getRandomValues(new Uint8Array(SALT))};
    key = await deriveKey(passphrase, kdf);
    extra = {kind: "passphrase", kdf};
  }
  const check = await seal(key, KIND.check, binding, new Uint8Array(0));
  return {key, keyring: {format: KEYRING_FORMAT, ...extra, check}};
}

/** The stored keyring, or `made()`'s when none is stored yet: the first page to write wins. */
async function ensureKeyring(db, made) {
  const stored = await readOne(db, META, KEYRING);
  if (stored !== undefined) return stored;
  // built outside the transaction: awaiting WebCrypto inside one would let it auto-commit
  const candidate = (await made()).keyring;
  return transact(db, META, "readwrite", (s, set) => {
    const req = s.get(KEYRING);
    req.onsuccess = () => {
      set(req.result ?? candidate);
      if (req.result === undefined) s.add(candidate, KEYRING);
    };
  });
}

function checkKeyring(k) {
  const aesKey = (key) => key instanceof CryptoKey && key.type === "secret"
    && key.algorithm.name === "AES-GCM" && key.algorithm.length === 256
    && key.usages.includes("encrypt") && key.usages.includes("decrypt");
  const kdf = (d) => d !== null && typeof d === "object" && d.name === KDF_NAME
    && Number.isInteger(d.iterations) && d.iterations >= PBKDF2_ITERATIONS
    && d.iterations <= MAX_ITERATIONS && d.salt instanceof Uint8Array && d.salt.length === SALT;
  const ok = k !== null && typeof k === "object" && k.format === KEYRING_FORMAT
    && k.check instanceof Uint8Array
    && ((k.kind === "device" && aesKey(k.key)) || (k.kind === "passphrase" && kdf(k.kdf)));
  if (!ok) throw new StoreError("the store's keyring record is malformed", "integrity");
}

async function unlock(db, store, passphrase) {
  const binding = {store, name: new Uint8Array(0)};
  let made;
  const keyring = await ensureKeyring(db, async () => {
    made = await newKeyring(binding, passphrase);
    return made;
  });
  checkKeyring(keyring);
  if (keyring.kind === "device" && passphrase !== undefined) {
    throw new StoreError("this store is sealed with this browser's device key, not a "
                         + "passphrase: open it without one", "wrong_key");
  }
  if (keyring.kind === "passphrase" && passphrase === undefined) {
    throw new StoreError("this store is sealed with a passphrase: pass {passphrase}",
                         "wrong_key");
  }
  let key = keyring.key;
  if (keyring.kind === "passphrase") {
    key = made?.keyring === keyring ? made.key : await deriveKey(passphrase, keyring.kdf);
  }
  try {
    await unseal(key, keyring.check, binding, [KIND.check], "the key check");
  } catch (cause) {
    const what = keyring.kind === "passphrase" ? "wrong passphrase" : "wrong device key";
    throw new StoreError(`${what} (or a keyring taken from another store)`, "wrong_key",
                         {cause});
  }
  return key;
}

// ---- persistence ------------------------------------------------------------------------------

function askPersist() {
  const storage = globalThis.navigator?.storage;
  if (typeof storage?.persist !== "function") return Promise.resolve(false);
  return storage.persisted()
    .then((already) => already || storage.persist())
    .then((granted) => granted === true, () => false);
}

// ---- the store --------------------------------------------------------------------------------

/**
 * Opens (creating on first use) the sealed store `name`. Without a passphrase the key is this
 * browser's non-extractable device key; with one it is derived from it (see the header).
 */
export async function openSealedStore({name = "privml", passphrase} = {}) {
  const store = checkName(name, "a store name");
  if (passphrase !== undefined) checkName(passphrase, "a passphrase");
  subtle();
  const persisting = askPersist();
  const db = await openDatabase(name);
  let key;
  try {
    key = await unlock(db, store, passphrase);
  } catch (error) {
    db.close();
    throw error;
  }
  const opened = new SealedStore(CONSTRUCT, {db, name, store, key, persisting});
  // usually settled by now; if the browser is still asking the user, `persisted` stays false
  // until the answer comes
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(resolve, PERSIST_WAIT_MS); });
  await Promise.race([persisting, late]);
  clearTimeout(timer);
  return opened;
}

export class SealedStore {
  #db;
  #key;
  #name;
  #store;
  #persisted = false;
  #closed = null;

  constructor(token, {db, name, store, key, persisting}) {
    if (token !== CONSTRUCT) throw new TypeError("open a SealedStore with openSealedStore()");
    this.#db = db;
    this.#name = name;
    this.#store = store;
    this.#key = key;
    persisting.then((granted) => { this.#persisted = granted; });
    db.onversionchange = () => this.#shut("another page is deleting or upgrading it");
    db.onclose = () => this.#shut("the browser closed it (site data cleared?)");
  }

  /** The database name. */
  get name() { return this.#name; }

  /** Whether the browser granted persistent storage when asked at open (false: evictable). */
  get persisted() { return this.#persisted; }

  /** Seals `value` (Uint8Array, ArrayBuffer or JSON value) under `name`, replacing any. */
  async put(name, value) {
    const binding = {store: this.#store, name: checkName(name, "a record name")};
    const {kind, plain} = encode(value);
    const blob = await seal(this.#liveKey(), kind, binding, plain);
    await transact(this.#conn(), RECORDS, "readwrite", (s) => { s.put(blob, name); });
  }

  /** The value put under `name`, of the kind it was put as, or undefined if there is none. */
  async get(name) {
    const binding = {store: this.#store, name: checkName(name, "a record name")};
    const blob = await readOne(this.#conn(), RECORDS, name);
    if (blob === undefined) return undefined;
    const {kind, plain} = await unseal(this.#liveKey(), blob, binding,
                                       [KIND.bytes, KIND.buffer, KIND.json], `record "${name}"`);
    return decode(kind, plain);
  }

  async delete(name) {
    checkName(name, "a record name");
    await transact(this.#conn(), RECORDS, "readwrite", (s) => { s.delete(name); });
  }

  /** Every record name, in IndexedDB key order (UTF-16 code units). */
  async list() {
    return transact(this.#conn(), RECORDS, "readonly", (s, set) => {
      const req = s.getAllKeys();
      req.onsuccess = () => set(req.result);
    });
  }

  close() { this.#shut("close() was called"); }

  /** Deletes the database `name`, key and records; waits for other pages to let go of it. */
  static async destroy(name = "privml") {
    checkName(name, "a store name");
    subtle();
    return new Promise((resolve, reject) => {
      const req = indexedDB.deleteDatabase(name);
      req.onsuccess = () => resolve();
      req.onerror = () => reject(storageError(`cannot delete IndexedDB "${name}"`, req.error));
    });
  }

  #shut(reason) {
    if (this.#closed !== null) return;
    this.#closed = reason;
    this.#key = null;
    this.#db.close();
  }

  #conn() {
    if (this.#closed !== null) {
      throw new StoreError(`store "${this.#name}" is closed: ${this.#closed}`, "closed");
    }
    return this.#db;
  }

  #liveKey() {
    this.#conn();
    return this.#key;
  }
}

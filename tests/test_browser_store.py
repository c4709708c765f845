"""The browser's sealed store (``privml/web/store.js``: IndexedDB + WebCrypto AES-256-GCM) in
headless Debian chromium: round trips of every value kind (a few MB included), what the
IndexedDB actually holds when read with the plain IndexedDB API (ciphertext and a
non-extractable CryptoKey, never the plaintext), a reload, tampered and transplanted records,
passphrase mode, and misuse. Each test gets a fresh browser context, so a fresh IndexedDB."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests._browser import CHROMIUM, FLAGS, ROOT, static_server

# Helpers every evaluated snippet starts with: `S` is the module; the raw* helpers reach
# IndexedDB directly, never through store.js.
_PRELUDE = """
const S = await import("/store.js");
const attempt = async (f) => {
  try { await f(); return "ok"; }
  catch (e) { return e instanceof S.StoreError ? `StoreError:${e.code}` : e.name; }
};
const req = (r) => new Promise((ok, no) => { r.onsuccess = () => ok(r.result);
                                             r.onerror = () => no(r.error); });
const rawWrite = (db, store, fill) => new Promise((ok, no) => {
  const tx = db.transaction(store, "readwrite");
  fill(tx.objectStore(store));
  tx.oncomplete = () => { db.close(); ok(); };
  tx.onabort = () => { db.close(); no(tx.error); };
});
const rawPut = async (name, store, key, value) =>
  rawWrite(await req(indexedDB.open(name)), store, (s) => s.put(value, key));
const rawGet = async (name, store, key) => {
  const db = await req(indexedDB.open(name));
  try { return await req(db.transaction(store).objectStore(store).get(key)); }
  finally { db.close(); }
};
async function rawAll(name) {  // [[object store, key, value], ...] of the whole database
  const db = await req(indexedDB.open(name));
  const out = [];
  for (const store of db.objectStoreNames) {
    const s = db.transaction(store).objectStore(store);
    const both = [s.getAllKeys(), s.getAll()];  // both queued before the transaction can end
    const [keys, values] = await Promise.all(both.map(req));
    keys.forEach((k, i) => out.push([store, k, values[i]]));
  }
  db.close();
  return out;
}
const b64 = (u8) => {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) {
    s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  }
  return btoa(s);
};
const sha = async (x) => b64(new Uint8Array(await crypto.subtle.digest("SHA-256", x)));
const FLOATS = Float32Array.from({length: 2048}, (_, i) => Math.fround(Math.PI * 1e3 + i * 0.37));
const SECRET = {qwertzuiop_field: "Zebulon Quixotic-Marchbanks",
                notes: ["xylophonic-rhinitis-8817", {deep: "Vexillology Yttrium Quokka"}]};
"""

STRINGS = ["qwertzuiop_field", "Zebulon Quixotic-Marchbanks", "xylophonic-rhinitis-8817",
           "Vexillology Yttrium Quokka"]


def _script(body: str) -> str:
    return "async (arg) => {" + _PRELUDE + body + "}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("store-page")
    shutil.copy(ROOT / "src" / "privml" / "web" / "store.js", folder / "store.js")
    (folder / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><title>sealed store check</title>')
    with sync_playwright() as pw, static_server(folder) as url:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium, url
        finally:
            chromium.close()


@pytest.fixture
def page(browser: tuple[Any, str]) -> Iterator[Any]:
    """A page in a fresh context (fresh IndexedDB); a reload keeps its storage."""
    chromium, url = browser
    context = chromium.new_context()
    try:
        tab = context.new_page()
        tab.goto(f"{url}/index.html")
        assert tab.evaluate("window.isSecureContext")
        yield tab
    finally:
        context.close()


def test_round_trip_list_delete(page: Any) -> None:
    got = page.evaluate(_script("""
      const st = await S.openSealedStore();
      const backing = Uint8Array.from({length: 64}, (_, i) => i * 3);
      const bytes = backing.subarray(8, 40);  // a view: only its 32 bytes are the value
      await st.put("data:abc", bytes);
      await st.put("model", FLOATS.buffer);
      await st.put("state", SECRET);
      await st.put("n", 42);
      await st.put("state", {...SECRET, round: 7});  // replaces
      const b = await st.get("data:abc"), m = await st.get("model"), s = await st.get("state");
      const listed = await st.list();
      await st.delete("n");
      await st.delete("never-there");
      const after = await st.list();
      // a model and a dataset of a few MB each
      const big = Float32Array.from({length: 1 << 20}, (_, i) => Math.sin(i) * 1e3);
      const data = crypto.getRandomValues(new Uint8Array(1 << 22).subarray(0, 65536));
      const dataset = new Uint8Array(4 << 20);
      for (let i = 0; i < dataset.length; i += data.length) dataset.set(data, i);
      await st.put("model:big", big.buffer);
      await st.put("data:big", dataset);
      const bigBack = await st.get("model:big"), dataBack = await st.get("data:big");
      return {
        bytes: [b.constructor.name, Array.from(b)], expect: Array.from(bytes),
        model: [m instanceof ArrayBuffer, Array.from(new Float32Array(m)).every((x, i) =>
          x === FLOATS[i]), m.byteLength],
        state: s, listed, after, gone: await st.get("n") === undefined,
        missing: await st.get("no-such") === undefined,
        big: [bigBack instanceof ArrayBuffer, await sha(bigBack), await sha(big)],
        dataset: [dataBack.constructor.name, await sha(dataBack), await sha(dataset)],
      };
    """))
    assert got["bytes"] == ["Uint8Array", got["expect"]]
    assert len(got["expect"]) == 32
    assert got["model"] == [True, True, 2048 * 4]
    assert got["state"] == {"qwertzuiop_field": STRINGS[1],
                            "notes": [STRINGS[2], {"deep": STRINGS[3]}], "round": 7}
    assert got["listed"] == ["data:abc", "model", "n", "state"]
    assert got["after"] == ["data:abc", "model", "state"]
    assert got["gone"] and got["missing"]
    assert got["big"][0] and got["big"][1] == got["big"][2]
    assert got["dataset"][0] == "Uint8Array" and got["dataset"][1] == got["dataset"][2]


_DUMP = """
  const flat = {bytes: [], strings: [], keys: []};
  const walk = async (v) => {
    if (v instanceof CryptoKey) { flat.keys.push(v); return; }
    if (v instanceof Blob) { flat.bytes.push(b64(new Uint8Array(await v.arrayBuffer()))); return; }
    if (v instanceof ArrayBuffer) { flat.bytes.push(b64(new Uint8Array(v))); return; }
    if (ArrayBuffer.isView(v)) {
      flat.bytes.push(b64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)));
      return;
    }
    if (typeof v === "string") { flat.strings.push(v); return; }
    if (v !== null && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) { flat.strings.push(k); await walk(x); }
    }
  };
  const records = await rawAll(arg);
  for (const [store, key, value] of records) { flat.strings.push(store, key); await walk(value); }
  const keys = [];
  for (const k of flat.keys) {
    keys.push({extractable: k.extractable, type: k.type, algorithm: k.algorithm.name,
               raw: await attempt(() => crypto.subtle.exportKey("raw", k)),
               jwk: await attempt(() => crypto.subtle.exportKey("jwk", k))});
  }
  return {count: records.length, bytes: flat.bytes, strings: flat.strings, keys,
          floats: b64(new Uint8Array(FLOATS.buffer))};
"""


def _leaks(dump: dict[str, Any]) -> list[str]:
    """Which plaintexts the raw database dump shows: a 16-byte window of the floats, or a
    distinctive string (as a string, or as UTF-8 / UTF-16 bytes inside any byte value)."""
    floats = base64.b64decode(dump["floats"])
    windows = {floats[i:i + 16] for i in range(len(floats) - 15)}
    blobs = [base64.b64decode(b) for b in dump["bytes"]]
    found = [f"floats in value {n}" for n, blob in enumerate(blobs)
             if any(blob[i:i + 16] in windows for i in range(len(blob) - 15))]
    for text in STRINGS:
        if any(text in s for s in dump["strings"]):
            found.append(f"string {text!r}")
        for form in (text.encode(), text.encode("utf-16-le")):
            if any(form in blob for blob in blobs):
                found.append(f"bytes of {text!r}")
    return found


def test_indexeddb_holds_only_ciphertext(page: Any) -> None:
    page.evaluate(_script("""
      const st = await S.openSealedStore({name: "leak-check"});
      await st.put("model", FLOATS.buffer);
      await st.put("weights", new Uint8Array(FLOATS.buffer));
      await st.put("state", SECRET);
      st.close();
    """))
    dump = page.evaluate(_script(_DUMP), "leak-check")
    assert dump["count"] == 4  # three records and the keyring
    assert _leaks(dump) == []
    # the values were read: three sealed blobs, each a little longer than its plaintext
    sizes = sorted(len(base64.b64decode(b)) for b in dump["bytes"])
    assert sum(s >= 2048 * 4 + 6 + 12 + 16 for s in sizes) == 2
    assert dump["keys"] == [{"extractable": False, "type": "secret", "algorithm": "AES-GCM",
                             "raw": "InvalidAccessError", "jwk": "InvalidAccessError"}]
    # control: the same dump of a database holding the plaintext does find every leak
    page.evaluate(_script("""
      const db = await new Promise((ok, no) => {
        const r = indexedDB.open("control", 1);
        r.onupgradeneeded = () => r.result.createObjectStore("plain");
        r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error);
      });
      await rawWrite(db, "plain", (s) => {
        s.put(FLOATS.buffer.slice(100, 140), "window");
        s.put(new TextEncoder().encode(JSON.stringify(SECRET)), "json");
      });
    """))
    control = page.evaluate(_script(_DUMP), "control")
    assert len(_leaks(control)) == 1 + len(STRINGS)


def test_reload_reads_back(page: Any) -> None:
    page.evaluate(_script("""
      const st = await S.openSealedStore({name: "kept"});
      await st.put("model", FLOATS.buffer);
      await st.put("state", SECRET);
    """))
    page.reload()
    got = page.evaluate(_script("""
      const key = (await rawGet("kept", "meta", "keyring")).key;
      const st = await S.openSealedStore({name: "kept"});
      const m = new Float32Array(await st.get("model"));
      const out = {isKey: key instanceof CryptoKey, extractable: key.extractable,
                   same: m.length === FLOATS.length && m.every((x, i) => x === FLOATS[i]),
                   state: await st.get("state"), names: await st.list()};
      st.close();
      await S.SealedStore.destroy("kept");
      const fresh = await S.openSealedStore({name: "kept"});
      out.afterDestroy = [await fresh.list(), await fresh.get("model") === undefined];
      // two pages opening a new store at once: the first keyring written wins for both
      const [x, y] = await Promise.all([S.openSealedStore({name: "race"}),
                                        S.openSealedStore({name: "race"})]);
      await x.put("state", {by: "x"});
      out.race = await y.get("state");
      return out;
    """))
    assert got["isKey"] and got["extractable"] is False
    assert got["same"]
    assert got["state"] == {"qwertzuiop_field": STRINGS[1],
                            "notes": [STRINGS[2], {"deep": STRINGS[3]}]}
    assert got["names"] == ["model", "state"]
    assert got["afterDestroy"] == [[], True]
    assert got["race"] == {"by": "x"}


def test_tampered_or_moved_records_fail_integrity(page: Any) -> None:
    got = page.evaluate(_script("""
      const st = await S.openSealedStore({name: "t"});
      await st.put("model", new Uint8Array(FLOATS.buffer));
      await st.put("state", SECRET);
      const raw = await rawGet("t", "records", "model");
      const out = {raw: raw.constructor.name};
      const flips = {magic: [0, 1], version: [4, 1], kind: [5, 2], nonce: [10, 1],
                     body: [40, 0x80], tag: [raw.length - 1, 1]};
      for (const [label, [at, bit]] of Object.entries(flips)) {
        const bad = raw.slice();
        bad[at] ^= bit;
        await rawPut("t", "records", "model", bad);
        out[label] = await attempt(() => st.get("model"));
      }
      await rawPut("t", "records", "model", raw.slice(0, 40));
      out.truncated = await attempt(() => st.get("model"));
      await rawPut("t", "records", "model", "not a blob");
      out.string = await attempt(() => st.get("model"));
      await rawPut("t", "records", "model", raw);  // the untouched bytes open again
      out.restored = await attempt(() => st.get("model"));
      // a record copied under another name, or swapped with another record
      await rawPut("t", "records", "model-copy", raw);
      out.copied = await attempt(() => st.get("model-copy"));
      await rawPut("t", "records", "state", raw);
      out.swapped = await attempt(() => st.get("state"));
      // a record carried into another store, and a keyring carried into another store
      const other = await S.openSealedStore({name: "t-other"});
      await rawPut("t-other", "records", "model", raw);
      out.otherStore = await attempt(() => other.get("model"));
      other.close();
      await rawPut("t-other", "meta", "keyring", await rawGet("t", "meta", "keyring"));
      out.otherKeyring = await attempt(() => S.openSealedStore({name: "t-other"}));
      out.names = await st.list();
      return out;
    """))
    assert got["raw"] == "Uint8Array"
    for label in ("magic", "version", "kind", "nonce", "body", "tag", "truncated", "string",
                  "copied", "swapped", "otherStore"):
        assert got[label] == "StoreError:integrity", label
    assert got["restored"] == "ok"
    assert got["otherKeyring"] == "StoreError:wrong_key"
    assert got["names"] == ["model", "model-copy", "state"]


def test_passphrase_mode(page: Any) -> None:
    page.evaluate(_script("""
      const st = await S.openSealedStore({name: "vault", passphrase: "correct horse battery"});
      await st.put("model", FLOATS.buffer);
      await st.put("state", SECRET);
      st.close();
      (await S.openSealedStore({name: "device"})).close();
    """))
    page.reload()
    got = page.evaluate(_script("""
      const st = await S.openSealedStore({name: "vault", passphrase: "correct horse battery"});
      const m = new Float32Array(await st.get("model"));
      const out = {same: m.every((x, i) => x === FLOATS[i]) && m.length === FLOATS.length,
                   state: await st.get("state")};
      st.close();
      const open = (opts) => attempt(async () => (await S.openSealedStore(opts)).close());
      out.wrong = await open({name: "vault", passphrase: "correct horse batterY"});
      out.none = await open({name: "vault"});
      out.deviceWithPassphrase = await open({name: "device", passphrase: "anything"});
      (await S.openSealedStore({name: "vault2", passphrase: "correct horse battery"})).close();
      const [a, b] = [await rawGet("vault", "meta", "keyring"),
                      await rawGet("vault2", "meta", "keyring")];
      out.kdf = [a.kdf.name, a.kdf.iterations, a.kdf.salt.length, b.kdf.salt.length];
      out.saltsDiffer = b64(a.kdf.salt) !== b64(b.kdf.salt);
      out.keyStored = "key" in a || Object.values(a).some((v) => v instanceof CryptoKey);
      await rawPut("vault2", "meta", "keyring", {...b, kdf: {...b.kdf, iterations: 1000}});
      out.weakened = await open({name: "vault2", passphrase: "correct horse battery"});
      return out;
    """))
    assert got["same"]
    assert got["state"]["notes"][1] == {"deep": STRINGS[3]}
    assert got["wrong"] == got["none"] == got["deviceWithPassphrase"] == "StoreError:wrong_key"
    name, iterations, salt_a, salt_b = got["kdf"]
    assert name == "PBKDF2-SHA256" and iterations >= 600_000 and salt_a == salt_b == 16
    assert got["saltsDiffer"]
    assert got["keyStored"] is False
    assert got["weakened"] == "StoreError:integrity"
    dump = page.evaluate(_script(_DUMP), "vault")
    assert dump["keys"] == [] and _leaks(dump) == []
    assert not any("correct horse" in s for s in dump["strings"])


def test_persisted_is_a_boolean(page: Any) -> None:
    got = page.evaluate(_script("""
      const st = await S.openSealedStore({name: "p"});
      return [typeof st.persisted, st.persisted];
    """))
    assert got[0] == "boolean"
    assert isinstance(got[1], bool)


def test_misuse_is_refused_and_writes_nothing(page: Any) -> None:
    got = page.evaluate(_script("""
      const st = await S.openSealedStore({name: "m"});
      await st.put("kept", {a: 1});
      const out = {
        float32: await attempt(() => st.put("x", FLOATS)),
        date: await attempt(() => st.put("x", new Date())),
        undef: await attempt(() => st.put("x", undefined)),
        emptyName: await attempt(() => st.put("", {a: 1})),
        surrogate: await attempt(() => st.get("a\\uD800")),
        numberName: await attempt(() => st.get(7)),
        emptyPassphrase: await attempt(() => S.openSealedStore({name: "m2", passphrase: ""})),
        construct: await attempt(() => new S.SealedStore()),
      };
      out.names = await st.list();
      await S.SealedStore.destroy("m");  // another page deleting it closes this one
      out.afterDestroy = await attempt(() => st.get("kept"));
      const again = await S.openSealedStore({name: "m"});
      again.close();
      out.afterClose = await attempt(() => again.put("x", {a: 1}));
      return out;
    """))
    for label in ("float32", "date", "undef", "emptyName", "surrogate", "numberName",
                  "emptyPassphrase", "construct"):
        assert got[label] == "TypeError", label
    assert got["names"] == ["kept"]
    assert got["afterDestroy"] == got["afterClose"] == "StoreError:closed"

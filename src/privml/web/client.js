// The browser client page (/client): join with a token, pick local data, train locally with
// TensorFlow.js, and contribute only the protected update.
//
// Theory of operation: the page runs the Python client's loop (transport/client.py) against
// the web port: enrol, then long-poll /v1/task and train, evaluate or wait as told, until
// the run is done. Before anything leaves, the page applies the run's privacy settings:
//   - example-level DP (task.train.dp): DP-SGD with per-example clipping (dp.js);
//   - client-level DP: the whole update clipped to task.train.client_clip; under secure
//     aggregation with distributed DP (task.secagg.kind "ddg") clipped, rounded and noised
//     by this page (dp.js ddgEncode);
//   - secure aggregation (task.secagg): the update only ever leaves masked, through the
//     four SecAgg+ stages (secagg/protocol.js, byte-compatible with the Python clients).
// The token, the data, the model and the state are kept in IndexedDB sealed with AES-GCM
// under a non-extractable key (store.js), so a reload resumes where the page was. An
// update waiting to be sent is sealed too, with its update id, so neither a reload nor an
// unreachable coordinator loses it or makes it count twice.

import {Api, Refused, Stopped, TokenError, randomId} from "./api.js";
import {clipUpdate, ddgEncode, dpsgdTrainAsync, trainPlainAsync} from "./dp.js";
import * as m from "./model.js";
import {FixedPoint, SecAggClient} from "./secagg/protocol.js";
import {openSealedStore} from "./store.js";

const tf = globalThis.tf;
const $ = (id) => document.getElementById(id);
const page = {store: null, api: null, data: null, running: false, state: {}, model: null};
globalThis.privmlClient = page;  // for people (and tests) looking from the console

function say(id, text, kind = "") {
  $(id).textContent = text;
  $(id).className = `msg ${kind}`;
}

function log(text) {
  const line = `${new Date().toISOString().slice(11, 19)} ${text}\n`;
  $("log").textContent = (line + $("log").textContent).slice(0, 20000);
}

async function saveState() {
  await page.store.put("state", page.state);
}

function show() {
  $("client-id").textContent = page.state.clientId || "–";
  $("run").textContent = page.state.run || "–";
  $("rounds").textContent = String((page.state.rounds || []).length);
  $("start").disabled = !(page.api && page.data) || page.running;
  $("stop").disabled = !page.running;
}

// ---- joining and data ----------------------------------------------------------------------

function makeApi(token) {
  return new Api({token, shouldGo: () => page.running || page.joining,
                  onWait: (why, ms) => say("train-msg", `${why}; retrying in ` +
                                           `${(ms / 1000).toFixed(1)} s`, "error")});
}

async function join(token) {
  page.joining = true;
  try {
    const api = makeApi(token);
    const info = await api.json("POST", "/v1/enrol");
    page.api = api;
    page.state = {...page.state, clientId: info.client_id, run: info.run};
    await page.store.put("token", token);
    await saveState();
    say("join-msg", `Joined as ${info.client_id}` + (info.run ? ` (run ${info.run})` : ""), "ok");
    log(`enrolled as ${info.client_id}`);
  } catch (err) {
    say("join-msg", err.message, "error");
  } finally {
    page.joining = false;
    show();
  }
}

async function modelInfo() {
  // The model's shape decides how local data is read: ask for the current version.
  const status = await page.api.json("GET", "/v1/status");
  if (!status.model_etag) throw new m.DataError("the coordinator has no run yet; try again later");
  return (await m.fetchModel(page.api, page.store, status.model_etag)).json;
}

async function setData(read, source) {
  try {
    if (!page.api) throw new m.DataError("join first: the model's shape decides how data is read");
    page.joining = true;
    const json = await modelInfo();
    const shape = m.inputShape(json);
    const features = shape.reduce((a, b) => a * b, 1);
    const data = await read({shape, features, classes: m.numClasses(json)});
    await page.store.put("data.x", new Uint8Array(data.x.buffer));
    await page.store.put("data.y", new Uint8Array(data.y.buffer));
    await page.store.put("data.meta", {n: data.n, source, features});
    page.data = {...data, features};
    say("data-msg", `${data.n} examples from ${source}, kept on this device (sealed)`, "ok");
  } catch (err) {
    say("data-msg", err.message, "error");
  } finally {
    page.joining = false;
    show();
  }
}

async function restore() {
  page.store = await openSealedStore({name: "privml-client"});
  $("storage").textContent = `sealed IndexedDB (AES-GCM); persistent: ${page.store.persisted}`;
  page.state = (await page.store.get("state")) || {};
  const token = await page.store.get("token");
  if (token) page.api = makeApi(token);
  const meta = await page.store.get("data.meta");
  if (meta) {
    const x = await page.store.get("data.x");
    const y = await page.store.get("data.y");
    page.data = {x: new Float32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength)),
                 y: new Int32Array(y.buffer.slice(y.byteOffset, y.byteOffset + y.byteLength)),
                 n: meta.n, features: meta.features};
    say("data-msg", `${meta.n} examples from ${meta.source} (restored from sealed storage)`, "ok");
  }
  if (token) say("join-msg", `Joined as ${page.state.clientId} (restored)`, "ok");
  show();
  if (page.state.contributing && page.api && page.data) start();
}

// ---- the loop ---------------------------------------------------------------------------

async function start() {
  if (page.running) return;
  page.running = true;
  page.state.contributing = true;
  await saveState();
  show();
  say("train-msg", "contributing: waiting for a task");
  try {
    await loop();
  } catch (err) {
    if (!(err instanceof Stopped)) {
      say("train-msg", err.message, "error");
      log(`stopped: ${err.message}`);
      if (err instanceof TokenError) page.state.contributing = false;
    }
  } finally {
    page.running = false;
    await saveState();
    show();
  }
}

async function loop() {
  await sendPending();
  for (;;) {
    const task = await page.api.json("GET", "/v1/task", {params: {wait: 10}});
    if (task.action === "done") {
      page.state.contributing = false;
      say("train-msg", `run ${task.run} is finished: thank you`, "ok");
      log(`run ${task.run} done`);
      return;
    }
    try {
      if (task.action === "enrol") {
        await page.api.json("POST", "/v1/enrol");
      } else if (task.action === "train" && !(page.state.skipped || []).includes(task.round)) {
        await train(task);
      } else if (task.action === "evaluate") {
        await evaluateTask(task);
      } else {
        say("train-msg", "waiting for the next round");
        await new Promise((r) => setTimeout(r, 1000 * (task.retry_after || 0.5)));
      }
    } catch (err) {  // e.g. a newer model replaced this one meanwhile: ask again
      if (!(err instanceof Refused)) throw err;
      log(`${task.action} round ${task.round}: ${err.code}`);
    }
  }
}

async function train(task) {
  say("train-msg", `round ${task.round}: training locally`);
  $("progress").value = 0;
  const art = await m.fetchModel(page.api, page.store, task.model_etag);
  $("backend").textContent = await m.useBackend(m.backendFor(art.json));
  const model = await m.loadModel(art);
  const shape = m.inputShape(art.json);
  const classes = m.numClasses(art.json);
  const global = m.weightsFlat(model, art.json);
  const {train: part, test} = m.split(page.data, page.data.features);
  if (!part.n) throw new m.DataError("no local examples to train on");
  const xs = tf.tensor(part.x, [part.n, ...shape], "float32");
  const ys = part.y;  // integer labels
  const opts = task.train || {};
  let result;
  try {
    const onProgress = ({done, total}) => { $("progress").value = done / total; };
    result = opts.dp
      ? await dpsgdTrainAsync(model, xs, ys, {...opts.dp, lr: opts.lr,
                                               momentum: opts.momentum, onProgress})
      : await trainPlainAsync(model, xs, ys, {epochs: opts.epochs,
                                              batch_size: opts.batch_size, lr: opts.lr,
                                              momentum: opts.momentum, onProgress});
  } finally {
    xs.dispose();
  }
  $("progress").value = 1;
  describe(task);
  if (opts.dp) {
    log(`round ${task.round}: DP-SGD, ${result.steps} steps (sample rate ` +
        `${opts.dp.sample_rate}, noise multiplier ${opts.dp.noise_multiplier}, per-example ` +
        `clip ${opts.dp.max_grad_norm})`);
  }
  if (opts.dp && result.steps !== opts.dp.steps) {  // never release more than is accounted
    page.state.skipped = [...(page.state.skipped || []), task.round];
    log(`round ${task.round}: ${result.steps} DP-SGD steps, the run accounts ` +
        `${opts.dp.steps}: update withheld`);
    return;
  }
  const acc = m.evaluate(model, test, shape, classes);
  $("accuracy").textContent = acc.n ? `${(100 * acc.accuracy).toFixed(1)}% on ${acc.n} ` +
    "held-out local examples" : "– (too few examples to hold some out)";
  const local = m.weightsFlat(model, art.json);
  model.dispose();
  let delta = new Float32Array(local.length);
  for (let i = 0; i < delta.length; i++) delta[i] = local[i] - global[i];
  if (opts.client_clip) {
    delta = clipUpdate(delta, opts.client_clip);
    log(`round ${task.round}: update clipped to L2 norm ${opts.client_clip}`);
  }
  if (task.secagg) {
    await secure(task, m.toParamOrder(delta, art.json), result.numExamples);
  } else {
    page.state.pending = {run: task.run, round: task.round, updateId: randomId(),
                          examples: result.numExamples};
    await page.store.put("pending", new Uint8Array(delta.buffer));
    await saveState();
    await sendPending();
  }
}

/** What leaves, in this run's own terms (from the task the coordinator sent). */
function describe(task) {
  const opts = task.train || {};
  const items = [];
  if (task.secagg) {
    items.push("The change to the model, masked by secure aggregation: the coordinator " +
               "can only add it to the others' and sees the sum, never yours");
  } else {
    items.push("The change to the model after local training (never your data)");
  }
  if (opts.dp) {
    items.push(`Example-level differential privacy: each of your examples is clipped ` +
               `and Gaussian noise is added in this page (DP-SGD)`);
  } else if (task.secagg && task.secagg.kind === "ddg") {
    items.push("Client-level differential privacy: the change is clipped and noised in " +
               "this page before it is masked");
  } else if (opts.client_clip) {
    items.push(`Client-level differential privacy: the change is clipped to norm ` +
               `${opts.client_clip} here; the coordinator adds the noise`);
  }
  items.push(task.secagg && task.secagg.kind === "ddg" ? "Nothing else"
    : "How many examples it was trained on");
  $("leaves").replaceChildren(...items.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
}

/** Send the sealed pending update (after training, or after a reload) until it is
 *  answered; a retry keeps its update id, so the coordinator counts it once. */
async function sendPending() {
  const p = page.state.pending;
  if (!p) return;
  const body = await page.store.get("pending");
  say("train-msg", `round ${p.round}: sending the update`);
  let accepted = false;
  try {
    await page.api.request("POST", "/v1/update", {body, headers: {
      "Content-Type": "application/octet-stream", "X-Privml-Run": p.run,
      "X-Privml-Round": String(p.round), "X-Privml-Update-Id": p.updateId,
      "X-Privml-Examples": String(p.examples), "X-Privml-Metrics": "{}"}});
    accepted = true;
  } catch (err) {
    if (!(err instanceof Refused)) throw err;
    log(`round ${p.round}: update refused: ${err.code}`);  // e.g. the round closed meanwhile
  }
  page.state.pending = null;  // one write: the update is either pending or counted
  if (accepted) page.state.rounds = [...(page.state.rounds || []), p.round];
  await saveState();
  await page.store.delete("pending");
  if (accepted) contributed(p.round);
}

function contributed(round) {
  say("train-msg", `round ${round}: update contributed`, "ok");
  log(`round ${round}: update contributed`);
  show();
}

async function secure(task, flat, examples) {
  const s = task.secagg;
  const encoded = s.kind === "ddg" ? ddgEncode(s, flat)
    : new FixedPoint(s).encode(flat, Math.max(1, examples));
  if (s.kind === "ddg") {
    log(`round ${task.round}: update clipped to ${s.clip}, rounded and noised with the ` +
        `distributed discrete Gaussian (sigma ${Number(s.sigma).toFixed(2)} grid steps)`);
  }
  page.encoded = {round: task.round, values: encoded};  // the last input (page memory only)
  const client = new SecAggClient({run: task.run, round: task.round,
                                   clientId: page.state.clientId});
  const post = (step, bytes) => page.api.request("POST", `/v1/secagg/${step}`, {
    body: bytes, headers: {"Content-Type": "application/octet-stream"}});
  const get = async (step) => {
    for (;;) {
      const resp = await page.api.request("GET", `/v1/secagg/${step}`,
                                          {params: {round: task.round, wait: 10}});
      if (resp.status === 200) return new Uint8Array(await resp.arrayBuffer());
    }
  };
  say("train-msg", `round ${task.round}: secure aggregation (the update leaves masked)`);
  try {
    await post("advertise-keys", await client.advertise());
    await post("share-keys", await client.shareKeys(await get("key-directory")));
    await post("masked-input", await client.maskedInput(await get("share-inbox"), encoded));
    await post("unmask-shares", await client.unmask(await get("unmask-request")));
    page.state.rounds = [...(page.state.rounds || []), task.round];
    await saveState();
    contributed(task.round);
  } catch (err) {
    if (!(err instanceof Refused) && !(err.name === "SecAggError")) throw err;
    log(`round ${task.round}: secure aggregation ended for this page: ${err.code}`);
  }
  await saveState();
}

async function evaluateTask(task) {
  const report = {run: task.run, round: task.round, num_examples: 0, loss: 0, accuracy: 0};
  const art = await m.fetchModel(page.api, page.store, task.model_etag);
  await m.useBackend(m.backendFor(art.json));
  const model = await m.loadModel(art);
  const {test} = m.split(page.data, page.data.features);
  const ev = m.evaluate(model, test, m.inputShape(art.json), m.numClasses(art.json));
  model.dispose();
  Object.assign(report, {num_examples: ev.n, loss: ev.loss, accuracy: ev.accuracy});
  try {
    await page.api.request("POST", "/v1/evaluation", {body: JSON.stringify(report),
                                                       headers: {"Content-Type": "application/json"}});
  } catch (err) {
    if (!(err instanceof Refused)) throw err;
  }
}

// ---- wiring -----------------------------------------------------------------------------

$("join").addEventListener("click", () => join($("token").value.trim()));
$("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("join").click(); });
$("csv").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) setData(async (info) => m.parseCsv(await file.text(), info), file.name);
});
$("images").addEventListener("change", (e) => {
  const files = e.target.files;
  if (files.length) setData((info) => m.readImages(files, info), `${files.length} files`);
});
$("demo").addEventListener("click", () => setData(async (info) => {
  const text = new TextDecoder().decode(await page.api.bytes("GET", "/v1/demo-data"));
  return m.parseCsv(text, info);
}, "the coordinator's demo partition"));
$("start").addEventListener("click", () => start());
$("stop").addEventListener("click", async () => {
  page.running = false;
  page.state.contributing = false;
  await saveState();
  say("train-msg", "paused");
  show();
});
$("forget").addEventListener("click", async () => {
  page.running = false;
  page.store.close();
  await page.store.constructor.destroy("privml-client");
  location.reload();
});

page.ready = restore().then(() => true, (err) => {
  say("join-msg", `this browser cannot keep sealed storage: ${err.message}`, "error");
  return false;
});

// The inference page (/predict): the current model is fetched with the token and run here;
// the input the user picks is read by this page only, and no request ever carries it (the
// only requests are the status and the model's two files, all before any input exists).

import {Api} from "./api.js";
import * as m from "./model.js";

const tf = globalThis.tf;
const $ = (id) => document.getElementById(id);
const page = {model: null, json: null};
globalThis.privmlPredict = page;

function say(id, text, kind = "") {
  $(id).textContent = text;
  $(id).className = `msg ${kind}`;
}

async function load() {
  try {
    const api = new Api({token: $("token").value.trim(), maxDelay: 2000,
                         onWait: (why) => say("model-msg", `${why}; retrying`, "error")});
    const status = await api.json("GET", "/v1/status");
    if (!status.model_etag) throw new Error("the coordinator has no model yet");
    const art = await m.fetchModel(api, null, status.model_etag);
    const backend = await m.useBackend(m.backendFor(art.json));
    if (page.model) page.model.dispose();
    page.model = await m.loadModel(art);
    page.json = art.json;
    const shape = m.inputShape(art.json);
    say("model-msg", `model ${status.model_etag.slice(0, 12)}… loaded (input ${shape.join("×")}, ` +
        `${m.numClasses(art.json)} classes, ${backend} backend)`, "ok");
    for (const id of ["image", "row", "predict"]) $(id).disabled = false;
    $("image").disabled = shape.length !== 3;
  } catch (err) {
    say("model-msg", err.message, "error");
  }
}

async function inputValues() {
  const shape = m.inputShape(page.json);
  const features = shape.reduce((a, b) => a * b, 1);
  const file = $("image").files[0];
  if (file && shape.length === 3) {
    const named = new File([file], `0/${file.name}`, {type: file.type});
    Object.defineProperty(named, "webkitRelativePath", {value: `pick/0/${file.name}`});
    return (await m.readImages([named], {shape, classes: m.numClasses(page.json)})).x;
  }
  const cells = $("row").value.split(",").map((c) => c.trim()).filter((c) => c !== "");
  const values = cells.map(Number);
  if (values.length !== features || values.some((v) => !Number.isFinite(v))) {
    throw new Error(`give ${features} numbers (got ${values.length})`);
  }
  return Float32Array.from(values);
}

async function predict() {
  try {
    const x = await inputValues();
    const shape = m.inputShape(page.json);
    const probs = tf.tidy(() => tf.softmax(page.model.predict(tf.tensor(x, [1, ...shape])))
      .dataSync());
    const best = probs.indexOf(Math.max(...probs));
    say("predict-msg", `prediction: class ${best} (${(100 * probs[best]).toFixed(1)}%)`, "ok");
    $("probs").replaceChildren(...Array.from(probs, (p, k) => {
      const li = document.createElement("li");
      const meter = document.createElement("meter");
      meter.value = p;
      meter.setAttribute("aria-label", `class ${k}`);
      li.append(`${k}`, meter, `${(100 * p).toFixed(1)}%`);
      return li;
    }));
    page.last = {best, probs: Array.from(probs)};
  } catch (err) {
    say("predict-msg", err.message, "error");
  }
}

$("load").addEventListener("click", load);
$("predict").addEventListener("click", predict);

// The federation's model in the browser, and the user's local data as tensors.
//
// Theory of operation: the coordinator serves each model version as a TF.js LayersModel at
// /v1/tfjs/<version>/model.json and weights.bin (privml.models.to_tfjs); both are fetched
// with the token, kept sealed in the page's store, and loaded from memory, so a reload
// needs no network. `userDefinedMetadata.privml` carries the input shape and the layout of
// privml's parameter vector: for each parameter, the TF.js weight and the axes permutation
// from TF.js's layout to torch's, in the order secure aggregation sums them.
//
// Local data is read in the page only: a CSV (a "label" column, or the last column, and
// numeric features) or a folder of images whose sub-folder names are the labels (decoded
// with createImageBitmap, resized to the model's input, scaled to [0, 1]). Nothing here
// sends anything anywhere.

const tf = globalThis.tf;

export class DataError extends Error {
  constructor(message) {
    super(message);
    this.name = "DataError";
  }
}

/** The model's artifacts for `version`: from the sealed store, else from the coordinator. */
export async function fetchModel(api, store, version) {
  let json = store ? await store.get(`model.json:${version}`) : undefined;
  let weights = store ? await store.get(`weights:${version}`) : undefined;
  if (json === undefined || weights === undefined) {
    json = await api.json("GET", `/v1/tfjs/${version}/model.json`);
    weights = await api.bytes("GET", `/v1/tfjs/${version}/weights.bin`);
    if (store) {
      for (const name of await store.list()) {  // keep one model version
        if (name.startsWith("model.json:") || name.startsWith("weights:")) await store.delete(name);
      }
      await store.put(`model.json:${version}`, json);
      await store.put(`weights:${version}`, weights);
    }
  }
  return {json, weights: new Uint8Array(weights)};
}

/** The backend a model runs on: wasm for dense models, cpu for convolutions (the wasm
 *  backend has no Conv2DBackpropFilter; WebGL in headless Chrome is a software renderer). */
export function backendFor(json) {
  const layers = json.modelTopology.config.layers;
  return layers.some((l) => l.class_name === "Conv2D") ? "cpu" : "wasm";
}

export async function useBackend(name) {
  if (name === "wasm") tf.wasm.setWasmPaths("/vendor/");
  if (tf.getBackend() !== name) {
    if (!(await tf.setBackend(name))) throw new Error(`the ${name} backend did not start`);
  }
  await tf.ready();
  return tf.getBackend();
}

export async function loadModel({json, weights}) {
  const weightSpecs = json.weightsManifest.flatMap((group) => group.weights);
  const buffer = weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength);
  return tf.loadLayersModel(tf.io.fromMemory({modelTopology: json.modelTopology, weightSpecs,
                                              weightData: buffer}));
}

export function inputShape(json) {
  return json.userDefinedMetadata.privml.input_shape;
}

export function numClasses(json) {
  const layers = json.modelTopology.config.layers;
  const dense = layers.filter((l) => l.class_name === "Dense");
  return dense[dense.length - 1].config.units;
}

/** The model's weights in manifest order as one Float32Array (TF.js layout). */
export function weightsFlat(model, json) {
  const specs = json.weightsManifest.flatMap((group) => group.weights);
  const values = model.getWeights();
  if (values.length !== specs.length) throw new Error("the model's weights do not match its manifest");
  const total = specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  const out = new Float32Array(total);
  let at = 0;
  values.forEach((t, i) => {
    if (t.shape.join() !== specs[i].shape.join()) throw new Error(`weight ${specs[i].name}: shape`);
    out.set(t.dataSync(), at);
    at += t.size;
  });
  return out;
}

/** `flat` (TF.js layout, manifest order) as privml's parameter vector (torch layout, the
 *  spec's parameter order), per the layout in the model's metadata. */
export function toParamOrder(flat, json) {
  const specs = json.weightsManifest.flatMap((group) => group.weights);
  const offsets = {};
  let at = 0;
  for (const s of specs) {
    const size = s.shape.reduce((a, b) => a * b, 1);
    offsets[s.name] = [at, size];
    at += size;
  }
  const out = new Float32Array(flat.length);
  let pos = 0;
  for (const entry of json.userDefinedMetadata.privml.layout) {
    const [start, size] = offsets[entry.weight];
    const moved = tf.tidy(() => tf.transpose(
      tf.tensor(flat.subarray(start, start + size), entry.shape, "float32"), entry.perm)
      .dataSync());
    out.set(moved, pos);
    pos += size;
  }
  return out;
}

// ---- local data ------------------------------------------------------------------------------

/** {x: Float32Array, y: Int32Array, n, classes} from CSV text. */
export function parseCsv(text, {features, classes}) {
  const lines = text.split(/\r?\n/).filter((line) => line.trim() !== "");
  if (lines.length < 2) throw new DataError("the CSV needs a header row and at least one example");
  const header = lines[0].split(",").map((h) => h.trim().replace(/^"|"$/g, ""));
  let labelAt = header.findIndex((h) => h.toLowerCase() === "label");
  if (labelAt < 0) labelAt = header.length - 1;
  if (header.length - 1 !== features) {
    throw new DataError(`the CSV has ${header.length - 1} feature columns; this model ` +
                        `takes ${features}`);
  }
  const n = lines.length - 1;
  const x = new Float32Array(n * features);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const cells = lines[i + 1].split(",");
    if (cells.length !== header.length) {
      throw new DataError(`row ${i + 2} has ${cells.length} cells, the header ${header.length}`);
    }
    let k = 0;
    for (let j = 0; j < cells.length; j++) {
      const value = Number(cells[j]);
      if (cells[j].trim() === "" || !Number.isFinite(value)) {
        throw new DataError(`row ${i + 2}, column "${header[j]}": not a number`);
      }
      if (j === labelAt) {
        if (!Number.isInteger(value) || value < 0 || value >= classes) {
          throw new DataError(`row ${i + 2}: label ${cells[j]} is not a class 0..${classes - 1}`);
        }
        y[i] = value;
      } else {
        x[i * features + k++] = value;
      }
    }
  }
  return {x, y, n};
}

/** Images from a folder pick (File objects with webkitRelativePath root/<label>/<name>). */
export async function readImages(files, {shape, classes}) {
  const [h, w, c] = shape.length === 3 ? shape : [0, 0, 0];
  if (!h) throw new DataError("this model does not take images");
  const picked = [...files].filter((f) => /\.(png|jpe?g|gif|bmp|webp)$/i.test(f.name));
  if (!picked.length) throw new DataError("no images (png, jpeg, gif, bmp, webp) in that folder");
  const x = new Float32Array(picked.length * h * w * c);
  const y = new Int32Array(picked.length);
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", {willReadFrequently: true});
  for (let i = 0; i < picked.length; i++) {
    const parts = (picked[i].webkitRelativePath || picked[i].name).split("/");
    const label = Number(parts.length >= 2 ? parts[parts.length - 2] : NaN);
    if (!Number.isInteger(label) || label < 0 || label >= classes) {
      throw new DataError(`${picked[i].name}: its folder must be a label 0..${classes - 1}`);
    }
    const bitmap = await createImageBitmap(picked[i]);
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(bitmap, 0, 0, w, h);
    bitmap.close();
    const rgba = ctx.getImageData(0, 0, w, h).data;
    for (let p = 0; p < h * w; p++) {
      const [r, g, b] = [rgba[4 * p], rgba[4 * p + 1], rgba[4 * p + 2]];
      const at = (i * h * w + p) * c;
      if (c === 1) x[at] = (0.299 * r + 0.587 * g + 0.114 * b) / 255;
      else for (let k = 0; k < c; k++) x[at + k] = [r, g, b][k] / 255;
    }
    y[i] = label;
  }
  return {x, y, n: picked.length};
}

/** A fixed split of the local data: the last fifth (after a seeded shuffle) is held out
 *  to measure local accuracy. */
export function split(data, features) {
  const order = Array.from({length: data.n}, (_, i) => i);
  let s = 0x9e3779b9 ^ data.n;
  for (let i = order.length - 1; i > 0; i--) {  // xorshift: a public, fixed order
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    const j = (s >>> 0) % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const held = data.n >= 5 ? Math.floor(data.n / 5) : 0;
  const pick = (idx) => {
    const x = new Float32Array(idx.length * features);
    const y = new Int32Array(idx.length);
    idx.forEach((src, i) => {
      x.set(data.x.subarray(src * features, (src + 1) * features), i * features);
      y[i] = data.y[src];
    });
    return {x, y, n: idx.length};
  };
  return {train: pick(order.slice(0, data.n - held)), test: pick(order.slice(data.n - held))};
}

export function tensors(part, shape, classes) {
  return {xs: tf.tensor(part.x, [part.n, ...shape], "float32"),
          ys: tf.oneHot(tf.tensor1d(part.y, "int32"), classes).toFloat()};
}

/** {accuracy, loss, n} of `model` on `part`. */
export function evaluate(model, part, shape, classes) {
  if (!part.n) return {accuracy: 0, loss: 0, n: 0};
  return tf.tidy(() => {
    const {xs, ys} = tensors(part, shape, classes);
    const logits = model.predict(xs);
    const loss = tf.losses.softmaxCrossEntropy(ys, logits).dataSync()[0];
    const hits = logits.argMax(-1).equal(ys.argMax(-1)).sum().dataSync()[0];
    return {accuracy: hits / part.n, loss, n: part.n};
  });
}

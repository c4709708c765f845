// privml differential privacy for the browser: clipping, secure noise, the distributed
// discrete Gaussian encoding and DP-SGD in TensorFlow.js. No imports: `tf` is the page's
// UMD TensorFlow.js (`globalThis.tf`, 4.22) unless an `opts.tf` is passed.
//
// Theory of operation: each function is the twin of a Python one, so that a browser client
// releases what a Python client would (tests/test_browser_dp.py checks them in chromium):
//
//   clipUpdate        privml.dp.clip_l2 (float64 norm, scale min(1, c/||x||), then shrink by
//                     one ulp at a time until the norm really is <= c)
//   discreteGaussian  privml.dp.discrete_gaussian (Canonne, Kamath & Steinke 2020, Alg. 3)
//   ddgRound          DistributedDiscreteGaussian.round_conditional
//   ddgEncode         DistributedDiscreteGaussian.encode (settings: its describe() JSON)
//   dpsgdTrain        privml.train.train_dp (Poisson batches, per-example clipping, noise on
//                     the sum, divide by q·n, torch SGD) for exactly `steps` steps
//   trainPlain        privml.train.train_local (shuffled minibatches, mean cross-entropy)
//
// dpsgdTrainAsync and trainPlainAsync run the same steps (the same generator) but give the
// page's event loop a turn every ~40 ms and report {done, total} to `opts.onProgress`, so
// the page stays responsive and shows progress during a long local training.
//
// Randomness: the default source is `crypto.getRandomValues` (a 64 KiB pool, refilled as it
// empties); Math.random is never used. Every random helper takes an optional `rng`, any object
// with `uniform01()` in [0, 1), so that tests can make draws reproducible; a page must not
// pass one. Gaussians are float Box–Muller and the discrete sampler uses float64
// probabilities, like the numpy/torch samplers they mirror: the privacy statements are about
// the ideal distributions, and the float deviations are far below any sampling error.
//
// What is private: an update from dpsgdTrain is example-level DP (q, z, steps as accounted by
// the coordinator); ddgEncode output is private only once summed by secure aggregation with
// the other clients' noise (alone it carries one client's noise, sigma). Not private: the
// loss trainPlain returns, trainPlain's update itself, and timing — the per-example loop of
// dpsgdTrain takes time proportional to the secret Poisson batch size (torch: less so).
// Errors: bad arguments throw TypeError/RangeError (Python's ConfigError/ParamsError); a
// diverging loss throws Error, the model's weights put back as they were on entry.

const MAX_TRIES = 10000; // as _discrete._MAX_TRIES: rejection this long has probability ~0
const TWO_53 = 9007199254740992;

// ---- secure randomness --------------------------------------------------------------------

const pool = new Uint32Array(16384); // getRandomValues fills at most 65536 bytes per call
let poolAt = pool.length;

function nextWord() {
  if (poolAt === pool.length) {
    globalThis.crypto.getRandomValues(pool);
    poolAt = 0;
  }
  return pool[poolAt++];
}

/** The default source: 53-bit uniforms in [0, 1) from crypto.getRandomValues. */
export const secureRng = Object.freeze({
  uniform01: () => ((nextWord() >>> 5) * 67108864 + (nextWord() >>> 6)) / TWO_53,
});

function source(rng) {
  if (rng == null) return secureRng;
  if (typeof rng.uniform01 !== "function") throw new TypeError("rng must have uniform01()");
  return rng;
}

/** A uniform double in [0, 1) with 53 random bits. */
export const uniform01 = (rng) => source(rng).uniform01();

function integer(name, value, low) {
  if (Number.isSafeInteger(value) && value >= low) return value;
  throw new RangeError(`${name} must be an integer >= ${low}, got ${value}`);
}

function finite(name, value, {min = 0, allowMin = false} = {}) {
  if (Number.isFinite(value) && (value > min || (allowMin && value === min))) return value;
  throw new RangeError(`${name} must be a finite number ${allowMin ? ">=" : ">"} ${min}, ` +
                       `got ${value}`);
}

/** n draws of N(0, sigma^2) (Box–Muller; sigma 0 gives zeros and draws nothing). */
export function gaussian(n, sigma, rng) {
  const out = new Float64Array(integer("n", n, 0));
  if (finite("sigma", sigma, {allowMin: true}) === 0) return out;
  const src = source(rng);
  for (let i = 0; i < n; i += 2) {
    const radius = sigma * Math.sqrt(-2 * Math.log(1 - src.uniform01())); // 1 - u in (0, 1]
    const angle = 2 * Math.PI * src.uniform01();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < n) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}

/** n integers from N_Z(0, sigma^2), P(y) ~ exp(-y^2 / (2 sigma^2)), CKS 2020 Algorithm 3: a
 *  discrete Laplace proposal Y of scale t = floor(sigma) + 1 (two geometrics on {0, 1, ...}
 *  by inversion), accepted with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)). */
export function discreteGaussian(n, sigma, rng) {
  const [s, src, out] = [finite("sigma", sigma), source(rng), new Float64Array(integer("n", n, 0))];
  const t = Math.floor(s) + 1;
  const geometric = () => Math.floor(-t * Math.log(1 - src.uniform01())); // P(>= k) = e^(-k/t)
  for (let i = 0; i < n; i++) {
    for (let tries = 0; ; tries++) {
      if (tries === MAX_TRIES) throw new Error("discrete Gaussian sampler did not terminate");
      const y = geometric() - geometric();
      const d = Math.abs(y) - (s * s) / t;
      if (src.uniform01() < Math.exp(-(d * d) / (2 * s * s))) {
        out[i] = y + 0; // + 0 turns a -0 into 0
        break;
      }
    }
  }
  return out;
}

// ---- clipping -----------------------------------------------------------------------------

function floatArray(flat, name) {
  if (!(flat instanceof Float32Array || flat instanceof Float64Array)) {
    throw new TypeError(`${name} must be a Float32Array or Float64Array`);
  }
  for (let i = 0; i < flat.length; i++) {
    if (!Number.isFinite(flat[i])) throw new RangeError(`${name} must be finite (index ${i})`);
  }
  return flat;
}

/** The L2 norm, accumulated in float64. */
export function l2Norm(flat) {
  let sq = 0;
  for (let i = 0; i < flat.length; i++) sq += flat[i] * flat[i];
  return Math.sqrt(sq);
}

/** A copy of `flat` (same array type) scaled to L2 norm <= clip, as clip_l2: scale by
 *  min(1, clip / ||x||) in the array's precision, then shrink by one ulp until the float64
 *  norm is <= clip. Non-finite entries throw: a NaN passes every norm check. */
export function clipUpdate(flat, clip) {
  floatArray(flat, "an update");
  const c = finite("clip", clip);
  const out = flat.slice();
  const norm = l2Norm(flat);
  if (norm > c) {
    const f32 = out instanceof Float32Array;
    // numpy multiplies a float32 array by a scalar in float32 (NEP 50): round the factor too
    const scale = f32 ? Math.fround(c / norm) : c / norm;
    for (let i = 0; i < out.length; i++) out[i] *= scale;
    const down = f32 ? 1 - 2 ** -24 : 1 - 2 ** -53; // nextafter(1, 0)
    while (l2Norm(out) > c) for (let i = 0; i < out.length; i++) out[i] *= down;
  }
  return out;
}

// ---- the distributed discrete Gaussian ----------------------------------------------------

/** The checked settings of DistributedDiscreteGaussian (its __post_init__ and l2_bound),
 *  from the JSON the coordinator sends (describe() with kind "ddg"). */
export function ddgSettings(settings) {
  if (settings === null || typeof settings !== "object" || settings.kind !== "ddg") {
    throw new TypeError("not a distributed discrete Gaussian description");
  }
  const clip = finite("clip", settings.clip);
  const gamma = finite("gamma", settings.gamma);
  const sigma = finite("sigma", settings.sigma, {min: 0.5, allowMin: true});
  const overflowProb = finite("overflow_prob", settings.overflow_prob);
  const dim = integer("dim", settings.dim, 1);
  const clients = integer("clients", settings.clients, 1);
  const beta = finite("beta", settings.beta, {allowMin: true});
  if (beta >= 1) throw new RangeError(`beta must be in [0, 1), got ${beta}`);
  const bits = settings.bits;
  if (bits !== 32 && bits !== 64) throw new RangeError(`bits must be 32 or 64, got ${bits}`);
  const [a, root] = [clip / gamma, clip / gamma + Math.sqrt(dim)];
  const always = root * root; // x * x, as Python's x ** 2 (a correctly rounded pow)
  const likely = a * a + dim / 4 + Math.sqrt(2 * Math.log(1 / beta)) * (a + Math.sqrt(dim) / 2);
  const l2Bound = Math.sqrt(beta === 0 ? always : Math.min(likely, always));
  if (l2Bound * l2Bound >= 2 ** 62) throw new RangeError("clip / gamma is too large");
  const variance = clients * (sigma * sigma); // the float operations of noise_bound, in order
  const noiseBound = Math.ceil(Math.sqrt(2 * variance * Math.log(2 * dim / overflowProb)));
  const worst = BigInt(clients) * BigInt(Math.floor(l2Bound)) + BigInt(noiseBound); // >= 1
  if (worst.toString(2).length + 1 > bits) {
    throw new RangeError(`the sum can wrap mod 2^${bits}: raise bits or gamma`);
  }
  return {clip, gamma, sigma, dim, clients, beta, bits, overflowProb, l2Bound};
}

function sqNormAbove(r, limit) {
  if (limit <= 2 ** 52) {
    // exact: every partial sum <= 2^53 is an integer double, and rounding is monotone
    let sq = 0;
    for (let i = 0; i < r.length; i++) sq += r[i] * r[i];
    return sq > limit;
  }
  let sq = 0n;
  for (let i = 0; i < r.length; i++) sq += BigInt(r[i]) ** 2n;
  return sq > BigInt(limit);
}

function roundConditional(p, flat, rng) {
  floatArray(flat, "an update");
  if (flat.length !== p.dim) throw new RangeError(`an update must have ${p.dim} entries`);
  const y = clipUpdate(Float64Array.from(flat), p.clip).map((v) => v / p.gamma);
  const low = y.map(Math.floor);
  const limit = Math.floor(p.l2Bound * p.l2Bound); // ||r||^2 is an integer: compare exactly
  const src = source(rng);
  const r = new Float64Array(p.dim);
  for (let tries = 0; tries < MAX_TRIES; tries++) {
    for (let j = 0; j < p.dim; j++) r[j] = low[j] + (src.uniform01() < y[j] - low[j] ? 1 : 0);
    if (!sqNormAbove(r, limit)) return r;
  }
  throw new RangeError(`conditional rounding kept failing: beta=${p.beta} too close to 1`);
}

/** Steps 1-3 of the DDG encoding: clip to c, scale by 1/gamma, round each coordinate up with
 *  probability its fraction, retried until ||r||_2 <= Delta_2. Integers, as a Float64Array. */
export function ddgRound(settings, flat, {rng} = {}) {
  return roundConditional(ddgSettings(settings), flat, rng);
}

/** The vector to submit to secure aggregation: ddgRound plus N_Z(0, sigma^2) noise per
 *  coordinate, reduced mod 2^bits (two's complement): a Uint32Array or a BigUint64Array. */
export function ddgEncode(settings, flat, {rng} = {}) {
  const p = ddgSettings(settings);
  const r = roundConditional(p, flat, rng);
  const noise = discreteGaussian(p.dim, p.sigma, rng);
  // A typed-array store reduces mod 2^bits: ToUint32 of a Number, ToBigUint64 of a BigInt.
  if (p.bits === 32) return Uint32Array.from(r, (v, j) => v + noise[j]);
  return BigUint64Array.from(r, (v, j) => BigInt(v + noise[j]));
}

// ---- training in TensorFlow.js ------------------------------------------------------------

function tfOf(opts) {
  const tf = opts.tf ?? globalThis.tf;
  if (!tf) throw new TypeError("TensorFlow.js is not loaded (no globalThis.tf, no opts.tf)");
  return tf;
}

/** The logits of a Sequential model: all of it but a trailing softmax Activation, in
 *  training mode (dropout on), as SpecModule.logits. */
function logitsFn(model) {
  const last = model.layers.at(-1);
  if (last.getClassName() !== "Activation" || last.getConfig().activation !== "softmax") {
    return (x) => model.apply(x, {training: true});
  }
  const body = model.layers.slice(0, -1);
  return (x) => body.reduce((h, layer) => layer.apply(h, {training: true}), x);
}

/** Per-example cross-entropy of logits (B, k) against int32 labels (B,). */
function crossEntropy(tf, logits, labels) {
  return tf.neg(tf.sum(tf.mul(tf.oneHot(labels, logits.shape.at(-1)), tf.logSoftmax(logits)), -1));
}

/** Everything both loops need, checked: variables, labels, the optimizer, and a snapshot
 *  of the weights on entry (put back if training throws). */
function setup(tf, model, xs, ys, opts) {
  const lr = finite("lr", opts.lr);
  const momentum = finite("momentum", opts.momentum ?? 0, {allowMin: true});
  if (momentum >= 1) throw new RangeError(`momentum must be in [0, 1), got ${momentum}`);
  if (!(xs instanceof tf.Tensor) || xs.dtype !== "float32" || xs.rank < 2) {
    throw new TypeError("xs must be a float32 tf.Tensor of shape (n, ...input)");
  }
  const n = xs.shape[0];
  if (n === 0) throw new RangeError("cannot train on a client with no examples");
  const labels = ys instanceof tf.Tensor ? ys.dataSync() : ys;
  if (labels.length !== n) throw new RangeError(`xs has ${n} examples, ys ${labels.length}`);
  const classes = model.outputs[0].shape.at(-1);
  const bad = Array.from(labels).findIndex((y) => !(Number.isInteger(y) && y >= 0 && y < classes));
  if (bad >= 0) throw new RangeError(`label ${labels[bad]} out of range for ${classes} outputs`);
  const vars = model.trainableWeights.map((w) => w.read());
  if (vars.length === 0) throw new RangeError("the model has no trainable parameters");
  return {n, vars, forward: logitsFn(model), ys: tf.tensor1d(Int32Array.from(labels), "int32"),
          entry: vars.map((v) => tf.clone(v)), opt: sgd(tf, vars, lr, momentum)};
}

/** torch.optim.SGD(lr, momentum) without weight decay: buf <- momentum*buf + g (buf = g at
 *  the first step: 0*0 + g is exactly g, also when momentum is 0), w <- w - lr*buf. */
function sgd(tf, vars, lr, momentum) {
  let bufs = vars.map((v) => tf.zerosLike(v));
  return {
    step(grads) {
      const next = tf.tidy(() => grads.map((g, k) => tf.add(tf.mul(bufs[k], momentum), g)));
      tf.dispose(bufs);
      bufs = next;
      tf.tidy(() => vars.forEach((v, k) => v.assign(tf.sub(v, tf.mul(bufs[k], lr)))));
    },
    dispose: () => tf.dispose(bufs),
  };
}

/** Checks data and options, then runs the generator `loop(state)` (it yields after each
 *  step); if it throws, the weights are put back as they were on entry. Frees what it made
 *  either way. */
function* withState(tf, model, xs, ys, opts, loop) {
  const state = setup(tf, model, xs, ys, opts);
  try {
    return yield* loop(state);
  } catch (err) {
    state.vars.forEach((v, k) => v.assign(state.entry[k]));
    throw err;
  } finally {
    state.opt.dispose();
    tf.dispose([state.ys, ...state.entry]);
  }
}

/** Runs a training generator to its end, synchronously. */
function drive(gen) {
  for (;;) {
    const r = gen.next();
    if (r.done) return r.value;
  }
}

/** Runs a training generator, handing each step's {done, total} to `onProgress` and giving
 *  the page's event loop a turn every ~40 ms, so a long local training neither freezes the
 *  page nor hides its progress. */
async function driveAsync(gen, onProgress) {
  let last = performance.now();
  try {
    for (;;) {
      const r = gen.next();
      if (r.done) return r.value;
      if (onProgress) onProgress(r.value);
      if (performance.now() - last > 40) {
        await new Promise((ok) => setTimeout(ok, 0));
        last = performance.now();
      }
    }
  } finally {
    gen.return();  // a generator left mid-way (onProgress threw) still frees its tensors
  }
}

function checkLoss(value) {
  if (Number.isFinite(value)) return value;
  throw new Error(`training diverged: loss is ${value} (lower the learning rate)`);
}

/** The gradients of the scalar `f` for every variable (zeros where there is none). */
function gradsOf(tf, f, vars) {
  const {value, grads} = tf.variableGrads(f, vars);
  return {value, grads: vars.map((v) => grads[v.name] ?? tf.zerosLike(v))};
}

/** sum_i min(1, C/||g_i||) g_i over the examples at `positions`, and the sum of their losses;
 *  one gradient per example, the norm taken over all trainable weights jointly. */
function clippedSum(tf, state, xs, positions, clipNorm) {
  let acc = [tf.scalar(0), ...state.vars.map((v) => tf.zerosLike(v))];
  for (const i of positions) {
    const next = tf.tidy(() => {
      const {value, grads} = gradsOf(tf, () => tf.sum(crossEntropy(
        tf, state.forward(xs.slice(i, 1)), state.ys.slice(i, 1))), state.vars);
      const norm = tf.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g)))));
      const factor = tf.div(clipNorm, tf.maximum(norm, clipNorm)); // exactly 1 below C
      return [tf.add(acc[0], value), ...grads.map((g, k) => tf.add(acc[k + 1], tf.mul(g, factor)))];
    });
    tf.dispose(acc);
    acc = next;
  }
  return acc;
}

/** Example-level DP-SGD (train_dp), `steps` steps: a Poisson batch (each example w.p.
 *  sample_rate), per-example gradients clipped to C = max_grad_norm, N(0, (z C)^2) added to
 *  the sum, divided by the expected batch q·n, torch SGD. An empty batch takes a pure-noise
 *  step. Trains `model` in place; returns {steps, numExamples} (no loss: it is not private). */
export function dpsgdTrain(model, xs, ys, opts) {
  return drive(dpsgdSteps(model, xs, ys, opts));
}

/** dpsgdTrain that yields to the page between steps; `opts.onProgress({done, total})`. */
export async function dpsgdTrainAsync(model, xs, ys, opts) {
  return driveAsync(dpsgdSteps(model, xs, ys, opts), opts.onProgress);
}

function* dpsgdSteps(model, xs, ys, opts) {
  const tf = tfOf(opts);
  const z = finite("noise_multiplier", opts.noise_multiplier, {allowMin: true});
  const clipNorm = finite("max_grad_norm", opts.max_grad_norm);
  const q = finite("sample_rate", opts.sample_rate);
  if (q > 1) throw new RangeError(`sample_rate must be in (0, 1], got ${q}`);
  const steps = integer("steps", opts.steps, 1);
  const src = source(opts.rng);
  return yield* withState(tf, model, xs, ys, opts, function* (state) {
    const expected = q * state.n;
    for (let step = 0; step < steps; step++) {
      const positions = [];
      for (let i = 0; i < state.n; i++) if (src.uniform01() < q) positions.push(i);
      const [loss, ...summed] = clippedSum(tf, state, xs, positions, clipNorm);
      try {
        checkLoss(loss.dataSync()[0]);
        const noisy = tf.tidy(() => summed.map((g) => tf.div(z === 0 ? g : tf.add(g,
          tf.tensor(Float32Array.from(gaussian(g.size, z * clipNorm, src)), g.shape)), expected)));
        state.opt.step(noisy);
        tf.dispose(noisy);
      } finally {
        tf.dispose([loss, ...summed]);
      }
      yield {done: step + 1, total: steps};
    }
    return {steps, numExamples: state.n};
  });
}

/** A uniformly random permutation of 0..n-1 (Fisher–Yates), as an Int32Array. */
export function permutation(n, rng) {
  const src = source(rng);
  const order = Int32Array.from({length: integer("n", n, 0)}, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(src.uniform01() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** Local training as train_local (no FedProx): a fresh permutation per epoch (from opts.rng),
 *  minibatches of batch_size (the last one smaller), mean cross-entropy, torch SGD. Returns
 *  {loss (the mean step loss, not private), numExamples, steps}. */
export function trainPlain(model, xs, ys, opts) {
  return drive(plainSteps(model, xs, ys, opts));
}

/** trainPlain that yields to the page between steps; `opts.onProgress({done, total})`. */
export async function trainPlainAsync(model, xs, ys, opts) {
  return driveAsync(plainSteps(model, xs, ys, opts), opts.onProgress);
}

function* plainSteps(model, xs, ys, opts) {
  const tf = tfOf(opts);
  const epochs = integer("epochs", opts.epochs, 1);
  const batchSize = integer("batch_size", opts.batch_size, 1);
  const src = source(opts.rng);
  return yield* withState(tf, model, xs, ys, opts, function* (state) {
    let [total, steps] = [0, 0];
    const all = epochs * Math.ceil(state.n / batchSize);
    for (let epoch = 0; epoch < epochs; epoch++) {
      const order = permutation(state.n, src);
      for (let start = 0; start < state.n; start += batchSize) {
        const {value, grads} = tf.tidy(() => {
          const idx = tf.tensor1d(order.subarray(start, start + batchSize), "int32");
          return gradsOf(tf, () => tf.mean(crossEntropy(
            tf, state.forward(tf.gather(xs, idx)), tf.gather(state.ys, idx))), state.vars);
        });
        try {
          total += checkLoss(value.dataSync()[0]); // checked before the step, as torch
          state.opt.step(grads);
        } finally {
          tf.dispose([value, ...grads]);
        }
        steps += 1;
        yield {done: steps, total: all};
      }
    }
    return {loss: total / steps, numExamples: state.n, steps};
  });
}

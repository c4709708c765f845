// Loaded before TensorFlow.js, as a classic script. TF.js bundles regenerator-runtime,
// which assigns the global `regeneratorRuntime` and, when that assignment throws (strict
// mode, no such global), falls back to Function("r", "regeneratorRuntime = r") — an eval
// that the page's CSP refuses, aborting the whole bundle. Declaring the global first keeps
// the CSP strict (no 'unsafe-eval') and TF.js whole.
// eslint-disable-next-line no-var
var regeneratorRuntime;

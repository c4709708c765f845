"""The Python federated client: get task → train locally → submit, over mutual TLS.

Raw data never leaves the process: only the update (local - global parameters, safetensors
bytes) is sent. Connection errors and 5xx answers are retried with exponential backoff and
full jitter; a retried submission keeps its update id, so the server counts it once. A 4xx
answer is final for that request (it names what was wrong) and is reported, not retried.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from privml import params as pm
from privml._exceptions import ConfigError, PeerError, PrivmlError, UnreachableError
from privml.params import Params
from privml.train import TrainConfig, TrainFn, get_params, set_params, train_local

__all__ = ["ClientReport", "FederatedClient", "ServerRefusedError"]

log = logging.getLogger("privml.client")
PROTOCOL_HEADERS = {"X-Privml-Protocol": "1"}


class ServerRefusedError(PeerError):
    """The server answered 4xx: ``code`` is its error code."""


@dataclass(slots=True)
class ClientReport:
    client_id: str = ""
    run: str = ""
    rounds_trained: list[int] = field(default_factory=list)
    rounds_evaluated: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    retries: int = 0


class FederatedClient:
    """One federated client; ``data`` is its local dataset (a ``ClientData``)."""

    def __init__(self, server: str, *, ca: Path, cert: Path, key: Path, data: Any,
                 eval_data: Any = None,
                 train_fn: TrainFn = train_local, max_retries: int = 8,
                 backoff: float = 0.2, timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, long_poll: float = 10.0,
                 retry_for: float = 120.0, max_backoff: float = 10.0) -> None:
        from privml.transport.tls import client_ssl_context

        self.data = data
        self.eval_data = eval_data  # held-out local data, for evaluation rounds
        self.train_fn = train_fn
        # A request is retried at least max_retries times and for at least retry_for seconds
        # of backoff (a coordinator restarting takes seconds: the fault soak saw 4-8 s
        # outages outlast 8 tries of full jitter), each wait at most max_backoff.
        self.max_retries = max_retries
        self.retry_for = retry_for
        self.max_backoff = max_backoff
        self.backoff = backoff
        self.sleep = sleep
        self.long_poll = long_poll
        self._rng = secrets.SystemRandom()  # jitter: the OS CSPRNG, as everywhere else
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=PROTOCOL_HEADERS,
                                 verify=client_ssl_context(ca, cert=cert, key=key),
                                 timeout=timeout)
        self._etag = ""
        self._params: Params = {}
        self._model: Any = None
        self.report = ClientReport()
        self.insecure_dp_seed: int | None = None  # fixes DP-SGD noise: tests only
        self.model_store: Any = None  # a LocalStore: each global model received is sealed
        self._given_up: set[tuple[str, int]] = set()  # (run, round) this client won't train

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FederatedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- HTTP with retries --------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        waited, attempt = 0.0, 0
        while True:
            last = attempt >= self.max_retries and waited >= self.retry_for
            try:
                resp = self.http.request(method, path, **kw)
            except httpx.TransportError as exc:
                if last:
                    raise UnreachableError(
                        f"the coordinator at {self.http.base_url} could not be reached "
                        f"({type(exc).__name__}: {exc or 'no detail'}) after {attempt + 1} "
                        f"tries over {waited:.0f} s; is it running, and is the address "
                        "right?") from exc
                log.info("%s %s: %s; retrying", method, path, type(exc).__name__)
            else:
                if resp.status_code < 500:
                    if resp.status_code >= 400:
                        raise _refusal(resp)
                    return resp
                if last:
                    raise _refusal(resp)
            self.report.retries += 1
            # Full jitter (AWS architecture blog): spreads a thundering herd of retries.
            pause = self._rng.uniform(0, min(self.max_backoff, self.backoff * 2**min(attempt,
                                                                                     30)))
            self.sleep(pause)
            waited += pause
            attempt += 1

    # ---- the loop -----------------------------------------------------------------------
    def _fetch_model(self) -> None:
        headers = {"If-None-Match": f'"{self._etag}"'} if self._etag else {}
        resp = self._request("GET", "/v1/model", headers=headers)
        if resp.status_code == 304:
            return
        from privml.models import ModelSpec, build_torch

        meta = pm.metadata(resp.content)
        spec = ModelSpec.from_json(meta["model_spec"])
        if self._model is None or getattr(self._model, "spec", None) != spec:
            self._model = build_torch(spec)
        self._params = pm.decode(resp.content)
        self._etag = resp.headers.get("etag", "").strip('"')
        if self.model_store is not None:  # the client's copy of the model, sealed at rest
            self.model_store.put("model", resp.content)
            self.model_store.prune("model", keep=2)

    def _train(self, task: dict[str, Any]) -> None:
        self._fetch_model()
        set_params(self._model, self._params)
        opts = task.get("train", {})
        cfg = TrainConfig(epochs=int(opts.get("epochs", 1)),
                          batch_size=int(opts.get("batch_size", 32)),
                          lr=float(opts.get("lr", 0.05)), momentum=float(opts.get("momentum", 0)),
                          prox_mu=float(opts.get("prox_mu", 0.0)))
        seed = int(np.random.SeedSequence(
            [int(task["round"]), *self.report.client_id.encode()]).generate_state(1)[0])
        train_fn, metrics = self.train_fn, {}
        dp = opts.get("dp")
        if dp is not None:  # example-level DP: DP-SGD as the coordinator asks (and accounts)
            try:
                train_fn = self._dp_train_fn(dp)
            except (ConfigError, KeyError, TypeError) as exc:
                self.report.refused.append("bad_dp_task")
                self._given_up.add((task["run"], task["round"]))
                log.warning("round %s: unusable DP settings, not training: %s",
                            task["round"], exc)
                return
        result = train_fn(self._model, self.data, cfg, seed, self._params)
        if dp is None:  # the training loss is not differentially private
            if math.isfinite(result.loss):  # the coordinator refuses non-finite metrics
                metrics["train_loss"] = result.loss
        elif getattr(result, "steps", None) != int(dp.get("steps", -1)):
            # The coordinator accounts the steps it announced: never release more.
            self.report.refused.append("dp_steps_mismatch")
            self._given_up.add((task["run"], task["round"]))
            log.warning("round %s: trained %s DP-SGD steps, the run accounts %s; update "
                        "withheld", task["round"], getattr(result, "steps", None),
                        dp.get("steps"))
            return
        delta = pm.subtract(get_params(self._model), self._params)
        if "secagg" in task:
            self._secure_submit(task, delta, result.num_examples)
            return
        body = pm.encode(delta)
        headers = {"X-Privml-Run": task["run"], "X-Privml-Round": str(task["round"]),
                   "X-Privml-Update-Id": secrets.token_urlsafe(16),
                   "X-Privml-Examples": str(result.num_examples),
                   "X-Privml-Metrics": json.dumps(metrics),
                   "Content-Type": "application/octet-stream"}
        try:
            self._request("POST", "/v1/update", content=body, headers=headers)
            self.report.rounds_trained.append(int(task["round"]))
        except ServerRefusedError as exc:  # e.g. the round closed while we trained: carry on
            self.report.refused.append(exc.code)
            log.warning("update for round %s refused: %s", task["round"], exc)

    def _dp_train_fn(self, dp: dict[str, Any]) -> TrainFn:
        """DP-SGD with the run's settings; a ConfigError (bad settings) ends the round's
        attempt like any bad task. ``self.insecure_dp_seed`` is for tests only."""
        from privml.train import DPSGDConfig, dp_train_fn

        return dp_train_fn(DPSGDConfig(
            noise_multiplier=float(dp["noise_multiplier"]),
            max_grad_norm=float(dp["max_grad_norm"]), sample_rate=float(dp["sample_rate"]),
            insecure_seed=self.insecure_dp_seed))

    def _secure_submit(self, task: dict[str, Any], delta: Params, num_examples: int) -> None:
        """The update goes out only masked: the four SecAgg+ stages, one POST each, with the
        server's answer between them long-polled. A refusal (dropped, round aborted or
        over) ends this round's attempt; the task loop carries on."""
        from privml.secagg import FixedPoint, SecAggClient, decode, encode

        s, rnd = task["secagg"], int(task["round"])
        try:
            # In the coordinator's parameter order (that of the model it sent).
            flat = pm.flatten({k: delta[k] for k in self._params})
            if s.get("kind") == "ddg":  # client-level distributed DP: this client's noise
                from privml.dp import DistributedDiscreteGaussian, insecure_rng, secure_rng

                ddg = DistributedDiscreteGaussian.from_json(s)
                rng = (secure_rng() if self.insecure_dp_seed is None
                       else insecure_rng(self.insecure_dp_seed))
                encoded = ddg.encode(flat.astype(np.float64), rng=rng)
            else:
                fp = FixedPoint(clip=float(s["clip"]), clients=int(s["clients"]),
                                max_weight=int(s["max_weight"]), bits=int(s["bits"]),
                                noise_bound=int(s["noise_bound"]),
                                frac_bits=int(s["frac_bits"]))
                encoded = fp.encode(flat, num_examples)
            sa = SecAggClient(run=task["run"], round_=rnd, client_id=self.report.client_id)
            self._post_secagg("advertise-keys", encode(sa.advertise()))
            got = decode(self._get_secagg("key-directory", rnd))
            self._post_secagg("share-keys", encode(sa.share_keys(got)))  # type: ignore[arg-type]
            got = decode(self._get_secagg("share-inbox", rnd))
            self._post_secagg("masked-input",
                              encode(sa.masked_input(got, encoded)))  # type: ignore[arg-type]
            got = decode(self._get_secagg("unmask-request", rnd))
            self._post_secagg("unmask-shares", encode(sa.unmask(got)))  # type: ignore[arg-type]
            self.report.rounds_trained.append(rnd)
        except (PeerError, KeyError, ValueError) as exc:
            code = getattr(exc, "code", "bad_task")
            self.report.refused.append(code)
            log.warning("secure aggregation of round %s ended for this client: %s", rnd, exc)

    def _post_secagg(self, step: str, body: bytes) -> None:
        self._request("POST", f"/v1/secagg/{step}", content=body,
                      headers={"Content-Type": "application/octet-stream"})

    def _get_secagg(self, step: str, round_: int) -> bytes:
        while True:  # 202 until the stage closes; the server's deadlines bound this
            resp = self._request("GET", f"/v1/secagg/{step}",
                                 params={"round": round_, "wait": self.long_poll})
            if resp.status_code == 200:
                return resp.content
            self.sleep(0.05)

    def _evaluate(self, task: dict[str, Any]) -> None:
        """Measure the global model on the held-out local data and report only the figures
        (a client without held-out data reports zero examples, so the round need not wait)."""
        report: dict[str, Any] = {"run": task["run"], "round": int(task["round"]),
                                  "num_examples": 0, "loss": 0.0, "accuracy": 0.0}
        if self.eval_data is not None and len(self.eval_data) > 0:
            from privml.train import evaluate

            self._fetch_model()
            set_params(self._model, self._params)
            x, y = self.eval_data.take(slice(None))
            ev = evaluate(self._model, x, y)
            report.update(num_examples=ev.num_examples, loss=ev.loss, accuracy=ev.accuracy)
        try:
            self._request("POST", "/v1/evaluation", json=report)
            self.report.rounds_evaluated.append(int(task["round"]))
        except ServerRefusedError as exc:  # e.g. the evaluation closed meanwhile
            self.report.refused.append(exc.code)
            log.warning("evaluation of round %s refused: %s", task["round"], exc)

    def run(self, *, max_seconds: float = 3600.0) -> ClientReport:
        """Enrol, then train or evaluate whenever asked, until the run is done."""
        info = self._request("POST", "/v1/enrol").json()
        self.report.client_id, self.report.run = info["client_id"], info["run"]
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            task = self._request("GET", "/v1/task", params={"wait": self.long_poll}).json()
            if task["action"] == "done":
                return self.report
            if task["action"] == "train" and (task["run"], task["round"]) in self._given_up:
                self.sleep(0.5)  # this client will not train that round; the deadline ends it
            elif task["action"] == "train":
                self._train(task)
            elif task["action"] == "evaluate":
                self._evaluate(task)
            elif task["action"] == "enrol":  # e.g. the coordinator restarted
                self._request("POST", "/v1/enrol")
            else:
                self.sleep(float(task.get("retry_after", 0.5)))
        raise PrivmlError(f"the run did not finish within {max_seconds} s")


def _refusal(resp: httpx.Response) -> ServerRefusedError:
    try:
        body = resp.json()
        code, detail = str(body.get("error", "http_error")), str(body.get("detail", ""))
    except (ValueError, AttributeError):
        code, detail = "http_error", resp.text[:200]
    return ServerRefusedError(f"server answered {resp.status_code} {code}: {detail}", code=code,
                         status=resp.status_code)

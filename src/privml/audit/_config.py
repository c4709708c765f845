"""``privml audit config FILE``: a federation's configuration read, not run.

The file is JSON or YAML: the run's settings under the names of ``RunConfig`` (those
``privml server`` flags set; ``Coordinator.config.to_dict()`` and ``GET /v1/admin/status``'s
``config`` have this shape), plus, optionally, the server's ``tls`` (``{"min_version":
"1.3", "mtls": true}``) and ``insecure_dev``. Unknown keys are findings (a typo must not
silently mean "default").

    id            severity  finding
    PMA-CFG-001   high      secure aggregation is off
    PMA-CFG-002   high      differential privacy is off
    PMA-CFG-003   medium    the noise multiplier is small (< 0.5): little privacy per round
    PMA-CFG-004   medium    no privacy budget (target_epsilon) is set, or it is large (> 10)
    PMA-CFG-005   high      delta is not below 1 / clients
    PMA-CFG-006   high      min_survivors too low for the clients per round (< half, < 2)
    PMA-CFG-007   high      shamir_threshold not a majority of the neighbours (or above them)
    PMA-CFG-008   low       the DP unit is not stated (example or client)
    PMA-CFG-009   critical  plaintext or TLS below 1.3, or mutual TLS off on the device port
    PMA-CFG-010   medium    unknown keys
    PMA-CFG-011   high      the settings do not make a valid run (RunConfig refuses them)
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from privml._exceptions import ConfigError
from privml.audit._findings import AuditReport, Finding, Severity

__all__ = ["audit_config"]

_SERVER_KEYS = {"tls", "insecure_dev", "clients", "federation", "model", "dataset"}


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON/YAML: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = {**data["config"], **{k: v for k, v in data.items() if k != "config"}}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of settings")
    return data


def _yaml(text: str) -> Any:
    import yaml  # type: ignore[import-untyped,unused-ignore]

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def audit_config(path: str | Path) -> AuditReport:
    from privml.transport._runconfig import RunConfig

    path = Path(path)
    data = _load(path)
    report = AuditReport("config", str(path))

    def add(id_: str, severity: Severity, title: str, evidence: str, fix: str) -> None:
        report.add(Finding(id_, severity, title, evidence, fix, target=str(path)))

    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known - _SERVER_KEYS)
    if unknown:
        add("PMA-CFG-010", Severity.MEDIUM, "unknown settings", ", ".join(unknown),
            "remove or correct them (a typo silently means the default)")
    settings = {k: v for k, v in data.items() if k in known}
    try:
        cfg = RunConfig(**settings)
    except (ConfigError, TypeError, ValueError) as exc:
        add("PMA-CFG-011", Severity.HIGH, "the settings do not make a valid run", str(exc),
            "fix the settings RunConfig refuses")
        return report
    _transport(data, add, report)
    if not cfg.secagg:
        add("PMA-CFG-001", Severity.HIGH, "secure aggregation is off", "secagg: false",
            "turn it on (--secagg): the coordinator then sees only the sum")
    else:
        report.ok("secure aggregation on")
        _secagg(cfg, add, report)
    _privacy(cfg, data, add, report)
    return report


def _secagg(cfg: Any, add: Any, report: AuditReport) -> None:
    from privml._exceptions import RoundAbortedError

    n = cfg.clients_per_round
    try:  # the parameters a full round of n clients would run with
        p = cfg.secagg_config().resolve(n, bits=cfg.secagg_bits, length=1)
    except (RoundAbortedError, ConfigError) as exc:
        add("PMA-CFG-007", Severity.HIGH, "secure aggregation cannot run with these "
            "thresholds", str(exc), "lower shamir_threshold / min_survivors or raise "
            "clients_per_round")
        return
    floor = max(2, math.ceil(n / 2))
    if p.min_survivors < floor:
        add("PMA-CFG-006", Severity.HIGH, "min_survivors is too low",
            f"min_survivors {p.min_survivors} for {n} clients per round: a sum of so few "
            "reveals more about each", f"at least max(2, ceil(n / 2)) = {floor}")
    else:
        report.ok(f"min_survivors {p.min_survivors} of {n}")
    k, t = p.neighbours, p.shamir_threshold
    if t <= k // 2:
        add("PMA-CFG-007", Severity.HIGH, "shamir_threshold is not a majority of the "
            "neighbours", f"threshold {t} with {k} neighbours: colluding neighbours could "
            "recover both secrets of a client", f"a value in ({k // 2}, {k}]")
    else:
        report.ok(f"shamir_threshold {t} of {k} neighbours")


def _transport(data: dict[str, Any], add: Any, report: AuditReport) -> None:
    tls = data.get("tls", {}) if isinstance(data.get("tls", {}), dict) else {}
    problems = []
    if data.get("insecure_dev"):
        problems.append("insecure_dev: true (a throwaway self-signed federation)")
    if str(tls.get("min_version", "1.3")) not in ("1.3", "TLSv1.3", "TLSv1_3"):
        problems.append(f"tls.min_version {tls.get('min_version')}")
    if tls.get("mtls") is False or tls.get("enabled") is False:
        problems.append("mutual TLS or TLS off")
    if problems:
        add("PMA-CFG-009", Severity.CRITICAL, "transport security is weakened",
            "; ".join(problems), "TLS 1.3 only, client certificates required on the device "
            "port, never --insecure-dev outside a laptop")
    else:
        report.ok("TLS 1.3 and mutual TLS")


def _privacy(cfg: Any, data: dict[str, Any], add: Any, report: AuditReport) -> None:
    if not cfg.dp:
        add("PMA-CFG-002", Severity.HIGH, "differential privacy is off",
            "neither target_epsilon nor noise_multiplier is set",
            "set --target-epsilon (and --dp-unit): model users could otherwise learn "
            "about individual clients' data")
        return
    report.ok("differential privacy on")
    if "dp_unit" not in data:
        add("PMA-CFG-008", Severity.LOW, "the DP unit is not stated",
            f"dp_unit defaults to {cfg.dp_unit!r}", "state dp_unit: example or client")
    if cfg.noise_multiplier is not None and cfg.noise_multiplier < 0.5:
        add("PMA-CFG-003", Severity.MEDIUM, "the noise multiplier is small",
            f"noise_multiplier {cfg.noise_multiplier}", "use z >= 0.5, or set a budget "
            "(target_epsilon) and let the accountant pick z")
    if cfg.target_epsilon is None:
        add("PMA-CFG-004", Severity.MEDIUM, "no privacy budget", "target_epsilon not set: "
            "the run stops at no epsilon", "set --target-epsilon")
    elif cfg.target_epsilon > 10:
        add("PMA-CFG-004", Severity.MEDIUM, "a large privacy budget",
            f"target_epsilon {cfg.target_epsilon}", "epsilon <= 10 (<= 8 is common)")
    else:
        report.ok(f"budget epsilon {cfg.target_epsilon}")
    population = data.get("clients")
    if isinstance(population, int) and population > 0 and cfg.delta >= 1 / population:
        add("PMA-CFG-005", Severity.HIGH, "delta is not below 1 / clients",
            f"delta {cfg.delta} with {population} clients", f"delta << {1 / population:.2g}")

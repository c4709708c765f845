"""``privml audit privacy --run RUN``: the privacy a run claims, and what can be measured.

Theory of operation: first the claim — the run's privacy ledger (every DP event it composed,
in the run database) gives ε spent, δ, the accountant and the DP unit, checked against the
run's target. Then the evidence, from the run's final model (``--save-model`` of the run,
or ``--model``):

- a loss-threshold membership-inference attack (Yeom et al. 2018): training examples
  against held-out test examples, reported as AUC (Hanley-McNeil interval) and TPR at 1 %
  and 0.1 % FPR with Clopper-Pearson intervals (:mod:`privml.audit._mia`) — and the same
  attack on the canaries, in against out: worst-case examples, where a model that
  memorises shows it even when natural data (digits) hardly separates;
- the one-run audit (Steinke, Nasr & Jagielski 2023) when the run was trained with
  ``--audit-canaries N``: each canary's loss scores its secret inclusion bit, giving an
  empirical lower bound on ε at confidence 1 - β, set beside the accountant's ε.

    id            severity  finding
    PMA-PRIV-001  high      the run used no differential privacy (no ledger)
    PMA-PRIV-002  high      ε spent exceeds the run's target
    PMA-PRIV-003  medium    an attack's AUC is clearly above 0.5 (lower CI > 0.55): the loss
                            attack on training vs test examples or on the canaries in vs
                            out, or LiRA (--lira K: K shadow federations of the same run)
    PMA-PRIV-004  critical  the empirical lower bound exceeds the accountant's ε (a bug)
    PMA-PRIV-005  medium    the empirical audit could not run (no model file)
    PMA-PRIV-006  low       no canaries: the one-run audit did not run

An empirical bound is one-sided: 0 means "nothing detected", never "private"; only the
accountant's ε is a guarantee, and the audit's job is to catch a guarantee that is false.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from privml._exceptions import ConfigError
from privml.audit._findings import AuditReport, Finding, Severity

__all__ = ["audit_privacy"]


def _losses(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), 512):
            logits = model(torch.from_numpy(np.ascontiguousarray(x[start:start + 512])))
            out.append(torch.nn.functional.cross_entropy(
                logits, torch.from_numpy(y[start:start + 512]), reduction="none").numpy())
    return np.concatenate(out).astype(np.float64)


def audit_privacy(run_id: int, *, db: Path | None = None, model: Path | None = None,
                  members: int = 2000, beta: float = 0.05, lira: int = 0,
                  progress: Any = None) -> AuditReport:
    """Audit run ``run_id`` of the run database ``db`` (default: $PRIVML_HOME/runs.db);
    ``lira`` > 0 adds LiRA with that many shadow federations (``progress(done, total)``)."""
    from privml.sim import RunStore

    if members < 10:
        raise ConfigError(f"--members must be at least 10, got {members}")
    with RunStore(db) as store:
        row, config = store.run(run_id)
        ledger = store.ledger(run_id)
    report = AuditReport("privacy", f"run {run_id} ({row.dataset}/{row.model})")
    target = str(report.target)

    def add(id_: str, severity: Severity, title: str, evidence: str, fix: str) -> None:
        report.add(Finding(id_, severity, title, evidence, fix, target=target))

    eps = _claim(config, ledger, report, add)
    path = model or (Path(config["model_file"]) if config.get("model_file") else None)
    if path is None or not Path(path).is_file():
        add("PMA-PRIV-005", Severity.MEDIUM, "the empirical audit could not run",
            f"no model file ({path or 'the run saved none'})",
            "run with --save-model, or pass the model with --model")
        return report
    from privml.data import load_dataset
    from privml.models import build_torch, load_model
    from privml.train import set_params

    spec, params = load_model(path)
    net = build_torch(spec)
    set_params(net, params)
    ds = load_dataset(row.dataset, seed=int(config.get("seed", 0)),
                      path=config.get("data_path"), label=config.get("label", "label"))
    rng = np.random.default_rng(0)
    tr = rng.permutation(len(ds.x_train))[:members]
    te = rng.permutation(len(ds.x_test))[:members]
    attacks = [("training vs test examples", _attack(
        report, add, _losses(net, ds.x_train[tr], ds.y_train[tr]),
        _losses(net, ds.x_test[te], ds.y_test[te])))]
    if lira:
        from privml.audit._lira import lira_scores

        x = np.concatenate([ds.x_train[tr], ds.x_test[te]])
        y = np.concatenate([ds.y_train[tr], ds.y_test[te]])
        scores = lira_scores(config, ds, net, (x, y), shadows=lira, progress=progress)
        attacks.append((f"LiRA, {lira} shadows", _attack(
            report, add, -scores[:len(tr)], -scores[len(tr):], prefix="lira_",
            name=f"LiRA ({lira} shadow federations)")))
    if "audit_canaries" in config:
        attacks.append(("canaries in vs out", _one_run(
            report, add, net, shape=(tuple(spec.input_shape), ds.num_classes),
            config=config, eps=eps, beta=beta)))
    else:
        add("PMA-PRIV-006", Severity.LOW, "no canaries: the one-run audit did not run",
            "the run was trained without --audit-canaries", "train with --audit-canaries "
            "1000 to get an empirical lower bound on epsilon")
    report.figures["roc"] = _roc_plot(attacks)
    report.figures["epsilon"] = _epsilon_plot(ledger, report.metrics)
    return report


def _claim(config: dict[str, Any], ledger: list[dict[str, Any]], report: AuditReport,
           add: Any) -> float | None:
    if not ledger:
        add("PMA-PRIV-001", Severity.HIGH, "the run used no differential privacy",
            "its privacy ledger is empty", "train with a budget (--target-epsilon)")
        return None
    last = ledger[-1]
    eps, target = float(last["epsilon"]), config.get("target_epsilon")
    report.metrics.update(epsilon_accountant=eps, delta=float(last["delta"]),
                          accountant=last["accountant"], dp_unit=last["unit"],
                          dp_placement=last["placement"], ledger_events=len(ledger))
    if target is not None:
        report.metrics["target_epsilon"] = float(target)
        if eps > float(target) * (1 + 1e-9):
            add("PMA-PRIV-002", Severity.HIGH, "epsilon spent exceeds the target",
                f"epsilon {eps:.4f} > target {target}", "stop the run at its budget")
        else:
            report.ok(f"epsilon {eps:.4f} within the target {target}")
    return eps


def _attack(report: AuditReport, add: Any, member: np.ndarray, nonmember: np.ndarray, *,
            prefix: str = "", what: str = "training vs test examples",
            name: str = "loss-threshold attack") -> Any:
    """An attack's ROC from member and non-member losses (or minus any score): its figures
    under ``prefix``, and a finding if it wins."""
    from privml.audit._mia import loss_threshold_attack

    attack = loss_threshold_attack(member, nonmember)
    n1, n2 = attack.n_members, attack.n_nonmembers
    # The AUC's interval: Hanley & McNeil (1982)'s normal approximation.
    a = attack.auc
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = float(np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a))
                       / (n1 * n2)))
    ci = (max(0.0, a - 1.96 * se), min(1.0, a + 1.96 * se))
    report.metrics.update({
        f"{prefix}attack_auc": a, f"{prefix}attack_auc_ci": ci,
        f"{prefix}tpr_at_1pct_fpr": attack.at_1pct.tpr,
        f"{prefix}tpr_at_1pct_fpr_ci": attack.at_1pct.tpr_ci,
        f"{prefix}tpr_at_0_1pct_fpr": attack.at_01pct.tpr,
        f"{prefix}tpr_at_0_1pct_fpr_ci": attack.at_01pct.tpr_ci,
        f"{prefix}attack_members": n1, f"{prefix}attack_nonmembers": n2})
    if ci[0] > 0.55:
        add("PMA-PRIV-003", Severity.MEDIUM, "the model leaks membership",
            f"{name} on {what}: AUC {a:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}), "
            f"TPR {attack.at_1pct.tpr:.3f} at 1% FPR",
            "train with DP (a smaller epsilon), fewer epochs or more data per client")
    else:
        report.ok(f"{name} on {what}: AUC {a:.3f}")
    return attack


def _one_run(report: AuditReport, add: Any, net: Any, *, shape: tuple[tuple[int, ...], int],
             config: dict[str, Any], eps: float | None, beta: float) -> Any:
    from privml.audit._canaries import CanarySet
    from privml.audit._mia import best_one_run_epsilon, max_one_run_epsilon

    canaries = CanarySet.from_dict(config["audit_canaries"])
    x, y = canaries.make(*shape)
    losses = _losses(net, x, y)
    scores = -losses
    delta = float(report.metrics.get("delta", config.get("delta", 1e-5)))
    res = best_one_run_epsilon(scores, canaries.included, delta=delta, beta=beta)
    best = max_one_run_epsilon(canaries.m, delta=delta, beta=beta)
    report.metrics.update(canaries=canaries.m, canary_guesses=res.guesses,
                          canary_correct=res.correct, epsilon_lower_bound=res.eps_lower,
                          epsilon_lower_bound_max=best, audit_beta=beta)
    if eps is not None and res.eps_lower > eps:
        add("PMA-PRIV-004", Severity.CRITICAL, "the measured leakage exceeds the guarantee",
            f"empirical epsilon >= {res.eps_lower:.3f} (confidence {1 - beta:.0%}) > "
            f"accountant epsilon {eps:.3f}", "the DP implementation or its accounting is "
            "broken: do not release this model; report it")
    else:
        report.ok(f"empirical epsilon lower bound {res.eps_lower:.3f}"
                  + (f" <= accountant epsilon {eps:.3f}" if eps is not None else ""))
    # The same loss attack on the canaries: worst-case examples, in or out by a fair coin.
    return _attack(report, add, losses[canaries.included], losses[~canaries.included],
                   prefix="canary_", what="canaries in vs out")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _roc_plot(attacks: list[tuple[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, log in zip(axes, (False, True), strict=True):
        for label, attack in attacks:
            ax.plot(attack.curve.fpr, attack.curve.tpr,
                    label=f"{label} (AUC {attack.auc:.3f})")
        ax.plot([1e-4, 1], [1e-4, 1], "k:", label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle("membership inference (loss threshold): ROC, linear and log scales")
    return _png(fig)


def _epsilon_plot(ledger: list[dict[str, Any]], metrics: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if ledger:
        ax.plot([e["round"] for e in ledger], [e["epsilon"] for e in ledger], "o-",
                label=f"accountant epsilon ({ledger[-1]['accountant']})")
    if "target_epsilon" in metrics:
        ax.axhline(metrics["target_epsilon"], color="grey", ls="--", label="target")
    if "epsilon_lower_bound" in metrics:
        ax.axhline(metrics["epsilon_lower_bound"], color="red",
                   label=f"empirical lower bound ({metrics['canaries']} canaries)")
        ax.axhline(metrics["epsilon_lower_bound_max"], color="red", ls=":",
                   label="the most those canaries can show")
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    ax.set_title("privacy: the guarantee and the measurement")
    return _png(fig)

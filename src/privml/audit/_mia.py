"""Membership-inference statistics for ``privml audit privacy``: ROC, TPR at low FPR, and the
one-run lower bound on epsilon. Pure numpy/scipy: no torch, no I/O, no randomness.

Theory of operation
-------------------
*ROC.* A higher score means "member". At threshold ``t`` a canary is called a member when its
score is ``>= t``; the curve has one point per distinct score, so tied scores cross together
(a member tied with a non-member is a diagonal step) and the trapezoid AUC is the Mann-Whitney
statistic ``P[s_in > s_out] + P[s_in = s_out] / 2``. The loss-threshold attack of Yeom et al.
("Privacy Risk in Machine Learning", CSF 2018) is simply the score ``-loss``.

*TPR at low FPR* (Carlini et al., "Membership Inference Attacks From First Principles", S&P
2022) is read at the most permissive threshold whose empirical FPR is ``<=`` the target, never
interpolated (an interpolated point needs a randomized attack). That threshold is fixed by the
non-member scores alone, so given them the number of members above it is binomial: the TPR gets
an exact two-sided Clopper-Pearson interval. The achieved FPR gets one too, but its threshold
was chosen by looking at the same non-members, so read that interval as descriptive.

*One run* (Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS
2023, arXiv:2305.08846). Each of ``m`` canaries enters training by an independent fair coin.
The auditor ranks them by score, guesses "in" for the ``k+`` highest and "out" for the ``k-``
lowest, abstains on the rest, and counts ``v`` correct of ``r = k+ + k-`` guesses. If training
is eps-DP with respect to each canary, ``v`` is stochastically dominated by ``W ~ Binomial(r,
e^eps / (1 + e^eps))`` (their Theorem 3.1), so ``p(eps) = P[W >= v]`` is a valid p-value for
the null "eps-DP", and the bound at confidence ``1 - beta`` solves ``p(eps) = beta`` in closed
form: the logit of the one-sided Clopper-Pearson lower limit of ``v / r``. For (eps, delta)-DP
the same theorem adds ``2 m delta max_{1<=i<=v} P[v - i <= W < v] / i`` to the p-value (the
numerical procedure of the paper's appendix code, reproduced term by term). That p-value need
not be monotone in eps, so the bound reported is the *first* eps where it exceeds beta (a grid
scan below the delta = 0 bound, then bisection): if the truth is (eps0, delta)-DP, reporting
more than eps0 needs ``p(eps0) <= beta``, which happens with probability at most beta.
Trying several ``(k+, k-)`` on the same scores is multiple testing: each is tested at
``beta / len(ks)`` (Bonferroni), so the best of them is still valid at ``1 - beta``.

Assumptions the numbers rest on:

* inclusion is an independent fair coin per canary, drawn before training; a train/test split
  of unequal sizes is not that (grossly unbalanced ``included`` is refused);
* scores are computed without the inclusion bits, and canary order says nothing about
  membership (ties at the ``k+``/``k-`` cut are broken by position);
* the guarantee audited is with respect to adding or removing one canary.

A bound is one-sided: ``eps_lower == 0`` means "nothing detected", never "private".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special, stats  # type: ignore[import-untyped]

from privml._exceptions import ConfigError

__all__ = [
    "AttackResult",
    "OneRunResult",
    "OperatingPoint",
    "RocCurve",
    "auc",
    "best_one_run_epsilon",
    "clopper_pearson",
    "loss_threshold_attack",
    "max_one_run_epsilon",
    "one_run_epsilon",
    "roc",
    "tpr_at_fpr",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_FAIR_COIN_P = 1e-6  # an inclusion count this unlikely under Binomial(m, 1/2) is refused
_SCAN = 64  # grid points in the first-crossing search for delta > 0


# ---- input checks ----------------------------------------------------------------------------

def _scores(x: npt.ArrayLike, name: str) -> FloatArray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numbers: {exc}") from None
    if a.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ConfigError(f"{name} is empty")
    if (bad := int(np.isnan(a).sum())) > 0:
        raise ConfigError(f"{name} has {bad} NaN value(s)")
    return a


def _unit(x: float, name: str, *, closed: bool) -> float:
    ok = 0.0 <= x <= 1.0 if closed else 0.0 < x < 1.0
    if not ok:
        raise ConfigError(f"{name} must be in {'[0, 1]' if closed else '(0, 1)'}, got {x!r}")
    return float(x)


def _count(x: int, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or x < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {x!r}")
    return int(x)


def _delta(delta: float) -> float:
    if not 0.0 <= delta < 1.0:
        raise ConfigError(f"delta must be in [0, 1), got {delta!r}")
    return float(delta)


# ---- ROC and TPR at low FPR --------------------------------------------------------------------

def clopper_pearson(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion, ``k`` successes in ``n`` trials."""
    n = _count(n, "n")
    k = _count(k, "k")
    if n == 0 or k > n:
        raise ConfigError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    a = 1.0 - _unit(confidence, "confidence", closed=False)
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True, slots=True, eq=False)
class RocCurve:
    """Counts at each threshold, from the strictest down. ``thresholds[0]`` is +inf and means
    "nobody is called a member"; after it, a canary is called a member when score >= t."""

    thresholds: FloatArray
    tp: IntArray
    fp: IntArray
    n_members: int
    n_nonmembers: int

    def __post_init__(self) -> None:
        if not len(self.thresholds) == len(self.tp) == len(self.fp) >= 2:
            raise ConfigError("a ROC curve needs equal-length arrays of at least two points")
        if (self.tp[0], self.fp[0], self.tp[-1], self.fp[-1]) != (
                0, 0, self.n_members, self.n_nonmembers):
            raise ConfigError("a ROC curve must run from (0, 0) to (n_members, n_nonmembers)")
        if np.any(np.diff(self.tp) < 0) or np.any(np.diff(self.fp) < 0):
            raise ConfigError("ROC counts must not decrease as the threshold falls")

    @property
    def tpr(self) -> FloatArray:
        return self.tp / self.n_members

    @property
    def fpr(self) -> FloatArray:
        return self.fp / self.n_nonmembers


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """One threshold of an attack: the TPR and FPR it achieves, each with its interval."""

    fpr_target: float
    threshold: float
    tpr: float
    tpr_ci: tuple[float, float]
    fpr: float
    fpr_ci: tuple[float, float]
    tp: int
    fp: int
    confidence: float


@dataclass(frozen=True, slots=True, eq=False)
class AttackResult:
    """A membership-inference attack summarized: AUC, TPR at 1% and 0.1% FPR, the curve."""

    auc: float
    at_1pct: OperatingPoint
    at_01pct: OperatingPoint
    n_members: int
    n_nonmembers: int
    curve: RocCurve


def roc(scores_members: npt.ArrayLike, scores_nonmembers: npt.ArrayLike) -> RocCurve:
    """The ROC curve of the attack "member iff score >= t", over every distinct score."""
    sm = _scores(scores_members, "scores_members")
    sn = _scores(scores_nonmembers, "scores_nonmembers")
    s = np.concatenate([sm, sn])
    member = np.concatenate([np.ones(sm.size, np.int64), np.zeros(sn.size, np.int64)])
    order = np.argsort(-s, kind="stable")
    s, member = s[order], member[order]
    # The last position of each run of equal scores: ties cross the threshold together.
    # (Compared with !=, not diff, so that two infinite scores count as tied.)
    last = np.concatenate([np.flatnonzero(s[1:] != s[:-1]), [s.size - 1]])
    tp = np.cumsum(member)[last]
    fp = np.cumsum(1 - member)[last]
    zero = np.zeros(1, np.int64)
    return RocCurve(thresholds=np.concatenate([[np.inf], s[last]]),
                    tp=np.concatenate([zero, tp]), fp=np.concatenate([zero, fp]),
                    n_members=sm.size, n_nonmembers=sn.size)


def auc(curve: RocCurve) -> float:
    """Area under the curve (trapezoids), i.e. P[member scores higher], ties counted half."""
    fpr, tpr = curve.fpr, curve.tpr
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(curve: RocCurve | tuple[npt.ArrayLike, npt.ArrayLike], fpr_target: float, *,
               confidence: float = 0.95) -> OperatingPoint:
    """TPR at the most permissive threshold whose FPR is <= ``fpr_target`` (the highest TPR
    such a threshold gets), with Clopper-Pearson intervals on the TPR and the achieved FPR.
    ``curve`` is a :class:`RocCurve` or a ``(member_scores, nonmember_scores)`` pair."""
    if not isinstance(curve, RocCurve):
        curve = roc(*curve)
    target = _unit(fpr_target, "fpr_target", closed=True)
    _unit(confidence, "confidence", closed=False)
    # fp never decreases as the threshold falls, so the allowed points are a prefix; among
    # points with the same fp the last has the most tp.
    j = int(np.flatnonzero(curve.fp <= target * curve.n_nonmembers)[-1])
    tp, fp = int(curve.tp[j]), int(curve.fp[j])
    return OperatingPoint(
        fpr_target=target, threshold=float(curve.thresholds[j]),
        tpr=tp / curve.n_members,
        tpr_ci=clopper_pearson(tp, curve.n_members, confidence=confidence),
        fpr=fp / curve.n_nonmembers,
        fpr_ci=clopper_pearson(fp, curve.n_nonmembers, confidence=confidence),
        tp=tp, fp=fp, confidence=confidence)


def loss_threshold_attack(member_losses: npt.ArrayLike, nonmember_losses: npt.ArrayLike, *,
                          confidence: float = 0.95) -> AttackResult:
    """Yeom et al.'s attack: a lower loss means "member" (score = -loss)."""
    curve = roc(-_scores(member_losses, "member_losses"),
                -_scores(nonmember_losses, "nonmember_losses"))
    return AttackResult(
        auc=auc(curve),
        at_1pct=tpr_at_fpr(curve, 0.01, confidence=confidence),
        at_01pct=tpr_at_fpr(curve, 0.001, confidence=confidence),
        n_members=curve.n_members, n_nonmembers=curve.n_nonmembers, curve=curve)


# ---- the one-run audit -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OneRunResult:
    """``eps_lower`` holds at confidence ``1 - beta``; with ``n_tests`` > 1 it is the best of
    that many ``(k+, k-)`` choices, each tested at ``beta / n_tests``."""

    eps_lower: float
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    m: int
    delta: float
    beta: float
    n_tests: int = 1


def _one_run_inputs(scores: npt.ArrayLike, included: npt.ArrayLike
                    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    s = _scores(scores, "scores")
    raw = np.asarray(included)
    if raw.shape != s.shape:
        raise ConfigError(f"included has shape {raw.shape}, scores {s.shape}")
    if raw.dtype != np.bool_ and not np.isin(raw, (0, 1)).all():
        raise ConfigError("included must hold only booleans or 0/1")
    inc = raw.astype(np.bool_)
    n_in = int(inc.sum())
    if stats.binomtest(n_in, s.size, 0.5).pvalue < _FAIR_COIN_P:
        raise ConfigError(f"{n_in} of {s.size} canaries included: that is not independent fair "
                          "coin flips, which the one-run bound requires")
    return s, inc


def _check_ks(k_plus: int, k_minus: int, m: int) -> tuple[int, int]:
    kp, km = _count(k_plus, "k_plus"), _count(k_minus, "k_minus")
    if not 1 <= kp + km <= m:
        raise ConfigError(f"need 1 <= k_plus + k_minus <= m = {m}, got {kp} + {km}")
    return kp, km


def _p_value(eps: float, *, m: int, r: int, v: int, delta: float) -> float:
    """Theorem 3.1's bound on P[v or more correct of r] under (eps, delta)-DP."""
    q = float(special.expit(eps))
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0.0 or v == 0:
        return tail
    pmf = stats.binom.pmf(np.arange(v), r, q)  # P[W = j] for j < v
    below = np.cumsum(pmf[::-1])  # element i-1: P[v - i <= W < v], i = 1..v
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + 2 * m * delta * alpha)


def _eps_lower(*, m: int, r: int, v: int, delta: float, beta: float) -> float:
    if v == 0:
        return 0.0
    # delta = 0: P[Binomial(r, q) >= v] = beta exactly at the Clopper-Pearson lower limit.
    eps0 = max(0.0, float(special.logit(stats.beta.ppf(beta, v, r - v + 1))))
    if delta == 0.0 or eps0 == 0.0:
        return eps0

    def p(e: float) -> float:
        return _p_value(e, m=m, r=r, v=v, delta=delta)

    # The delta term only adds to the p-value, so the first crossing lies below eps0.
    grid = np.linspace(0.0, eps0, _SCAN + 1)
    over = [i for i, e in enumerate(grid) if p(float(e)) > beta]
    if not over:
        return eps0
    if over[0] == 0:
        return 0.0
    lo, hi = float(grid[over[0] - 1]), float(grid[over[0]])
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p(mid) <= beta else (lo, mid)
    return lo


def _guess(s: FloatArray, inc: npt.NDArray[np.bool_], kp: int, km: int) -> int:
    order = np.argsort(-s, kind="stable")  # ties broken by position, never by membership
    return int(inc[order[:kp]].sum() + (~inc[order[s.size - km:]]).sum())


def one_run_epsilon(scores: npt.ArrayLike, included: npt.ArrayLike, *, k_plus: int,
                    k_minus: int, delta: float = 0.0, beta: float = 0.05) -> OneRunResult:
    """The one-run lower bound on epsilon for one abstention level ``(k_plus, k_minus)``."""
    s, inc = _one_run_inputs(scores, included)
    kp, km = _check_ks(k_plus, k_minus, s.size)
    d, b = _delta(delta), _unit(beta, "beta", closed=False)
    v = _guess(s, inc, kp, km)
    return OneRunResult(eps_lower=_eps_lower(m=s.size, r=kp + km, v=v, delta=d, beta=b),
                        guesses=kp + km, correct=v, k_plus=kp, k_minus=km, m=s.size,
                        delta=d, beta=b)


def _default_ks(m: int) -> list[tuple[int, int]]:
    """Symmetric abstention levels, r = m, m/2, m/4, ... down to 10 guesses (or m)."""
    ks, r = [], m
    while True:
        ks.append((r - r // 2, r // 2))
        r //= 2
        if r < 10:
            return ks


def _ks(ks: Sequence[tuple[int, int]] | None, m: int) -> list[tuple[int, int]]:
    chosen = _default_ks(m) if ks is None else list(dict.fromkeys(
        _check_ks(*pair, m) for pair in ks))
    if not chosen:
        raise ConfigError("ks must name at least one (k_plus, k_minus) pair")
    return chosen


def best_one_run_epsilon(scores: npt.ArrayLike, included: npt.ArrayLike, *, delta: float,
                         beta: float, ks: Sequence[tuple[int, int]] | None = None
                         ) -> OneRunResult:
    """The best one-run bound over several ``(k_plus, k_minus)`` pairs, each tested at
    ``beta / len(ks)`` so that the best is valid at ``1 - beta`` (Bonferroni)."""
    s, inc = _one_run_inputs(scores, included)
    d, b = _delta(delta), _unit(beta, "beta", closed=False)
    pairs = _ks(ks, s.size)
    best: OneRunResult | None = None
    for kp, km in pairs:
        v = _guess(s, inc, kp, km)
        eps = _eps_lower(m=s.size, r=kp + km, v=v, delta=d, beta=b / len(pairs))
        if best is None or eps > best.eps_lower:
            best = OneRunResult(eps_lower=eps, guesses=kp + km, correct=v, k_plus=kp,
                                k_minus=km, m=s.size, delta=d, beta=b, n_tests=len(pairs))
    assert best is not None  # nosec B101  # narrowing: pairs is never empty
    return best


def max_one_run_epsilon(m: int, *, delta: float, beta: float,
                        ks: Sequence[tuple[int, int]] | None = None) -> float:
    """The most :func:`best_one_run_epsilon` could ever report with ``m`` canaries and the
    same ``ks``: every guess right, at the best abstention level."""
    m = _count(m, "m")
    if m < 1:
        raise ConfigError("m must be at least 1")
    d, b = _delta(delta), _unit(beta, "beta", closed=False)
    pairs = _ks(ks, m)
    return max(_eps_lower(m=m, r=r, v=r, delta=d, beta=b / len(pairs))
               for r in {kp + km for kp, km in pairs})

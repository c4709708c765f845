"""privml.audit._mia: ROC/AUC, TPR at low FPR, and the one-run epsilon lower bound.

The calibration tests run randomized response, the mechanism for which the one-run bound is
tight: each canary's score is its inclusion bit flipped with probability 1 / (1 + e^eps), so
the scores are exactly eps-DP in each canary. A bound of 0 everywhere passes the "never above
eps" check, so the bound is also held to measured floors; an over-optimistic bound passes the
floors, so the exceedance count is held to a binomial quantile, and the naive point estimate
is shown to fail that same check. Seeds are fixed, so every check is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import special, stats
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score

from privml._exceptions import ConfigError
from privml.audit import _mia
from privml.audit._mia import (
    auc,
    best_one_run_epsilon,
    clopper_pearson,
    loss_threshold_attack,
    max_one_run_epsilon,
    one_run_epsilon,
    roc,
    tpr_at_fpr,
)

M, SEEDS, BETA = 1000, 20, 0.05


def randomized_response(eps: float, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    flipped = rng.random(m) < 1 / (1 + math.exp(eps))
    # The jitter only breaks ties; it is independent of membership, so it adds no signal.
    return (included ^ flipped) + rng.uniform(0, 1e-3, m), included


def paper_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The p-value of Steinke-Nasr-Jagielski's appendix code, transcribed loop for loop."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return min(beta + alpha * delta * 2 * m, 1.0)


# ---- ROC and AUC ------------------------------------------------------------------------------

def test_roc_hand_example_with_ties() -> None:
    # Members 3, 2, 2, 1; non-members 2, 1, 0. A threshold at 2 lets both tied members and
    # the tied non-member through at once: the curve steps diagonally, never splits a tie.
    curve = roc([3, 2, 2, 1], [2, 1, 0])
    assert curve.thresholds.tolist() == [np.inf, 3, 2, 1, 0]
    assert curve.tp.tolist() == [0, 1, 3, 4, 4]
    assert curve.fp.tolist() == [0, 0, 1, 2, 3]
    assert curve.tpr.tolist() == [0, 0.25, 0.75, 1, 1]
    assert curve.fpr == pytest.approx([0, 0, 1 / 3, 2 / 3, 1])
    # Mann-Whitney by hand: 3 beats all (3); each 2 beats 1, 0 and ties 2 (2.5 x 2);
    # 1 beats 0 and ties 1 (1.5): 9.5 of 12 pairs.
    assert auc(curve) == pytest.approx(9.5 / 12)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=30),
       st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_auc_is_mann_whitney_with_half_ties(members: list[int], others: list[int]) -> None:
    a, b = np.array(members)[:, None], np.array(others)[None, :]
    assert auc(roc(members, others)) == pytest.approx(np.mean((a > b) + 0.5 * (a == b)))


def test_auc_matches_sklearn_on_tied_scores() -> None:
    rng = np.random.default_rng(0)
    sm, sn = rng.integers(0, 20, 300) + 2, rng.integers(0, 20, 500)
    labels = np.r_[np.ones(300), np.zeros(500)]
    assert auc(roc(sm, sn)) == pytest.approx(roc_auc_score(labels, np.r_[sm, sn]))


def test_auc_identical_is_one_half_separated_is_one() -> None:
    rng = np.random.default_rng(1)
    # sd of the AUC under the null is sqrt((n1 + n2 + 1) / (12 n1 n2)) ~ 0.006: 0.03 is 5 sd.
    assert auc(roc(rng.normal(size=5000), rng.normal(size=5000))) == pytest.approx(0.5, abs=0.03)
    assert auc(roc(rng.normal(10, 1, 100), rng.normal(-10, 1, 100))) == 1.0
    assert auc(roc([0.0, 1.0], [5.0, 6.0])) == 0.0
    assert auc(roc([1.0, 1.0], [1.0])) == 0.5  # all tied: a coin flip


def test_infinite_scores_are_ordinary() -> None:
    curve = roc([np.inf, 1.0], [-np.inf, np.inf])
    assert curve.tp.tolist() == [0, 1, 2, 2] and curve.fp.tolist() == [0, 1, 1, 2]


# ---- Clopper-Pearson and TPR at FPR -------------------------------------------------------

@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (1, 1), (17, 1000),
                                      (500, 1000), (999, 1000)])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.999])
def test_clopper_pearson_matches_scipy(k: int, n: int, confidence: float) -> None:
    want = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    got = clopper_pearson(k, n, confidence=confidence)
    assert got == pytest.approx((want.low, want.high), abs=1e-12)


def test_tpr_at_fpr_hand_example() -> None:
    members = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    others = [8.5, 4.5, 0.5, -1]
    # FPR <= 25% allows one non-member (8.5): the lowest such threshold is 5, which lets
    # members 10..5 through before the next non-member (4.5) would: TPR 6/10.
    pt = tpr_at_fpr((members, others), 0.25)
    assert (pt.threshold, pt.tp, pt.fp, pt.tpr, pt.fpr) == (5.0, 6, 1, 0.6, 0.25)
    assert pt.tpr_ci == clopper_pearson(6, 10)
    assert pt.fpr_ci == clopper_pearson(1, 4)
    assert pt.tpr_ci[0] < 0.6 < pt.tpr_ci[1]
    # Any target below 1/4 allows no non-member at all: threshold 9, TPR 2/10.
    for target in (0.0, 0.2, 0.2499):
        pt = tpr_at_fpr(roc(members, others), target)
        assert (pt.threshold, pt.tp, pt.fp, pt.fpr_target) == (9.0, 2, 0, target)
    assert tpr_at_fpr(roc(members, others), 1.0).tpr == 1.0


def test_tpr_at_fpr_never_splits_a_tie() -> None:
    # A member tied with the first non-member cannot be called "in" without it: at FPR 0
    # only the member strictly above goes through.
    pt = tpr_at_fpr(roc([3.0, 2.0, 1.0], [2.0, 0.0]), 0.0)
    assert (pt.threshold, pt.tp, pt.fp) == (3.0, 1, 0)
    pt = tpr_at_fpr(roc([2.0, 2.0], [2.0, 2.0]), 0.5)
    assert (pt.tp, pt.fp, pt.threshold) == (0, 0, np.inf)


def test_loss_threshold_attack() -> None:
    rng = np.random.default_rng(2)
    member_losses, other_losses = rng.exponential(0.5, 4000), rng.exponential(1.0, 6000)
    res = loss_threshold_attack(member_losses, other_losses)
    assert (res.n_members, res.n_nonmembers) == (4000, 6000)
    assert res.auc == pytest.approx(auc(roc(-member_losses, -other_losses)))
    # P[Exp(rate 2) < Exp(rate 1)] = 2/3.
    assert res.auc == pytest.approx(2 / 3, abs=0.02)
    for pt, target in ((res.at_1pct, 0.01), (res.at_01pct, 0.001)):
        assert pt.fpr <= target and pt.tpr_ci[0] <= pt.tpr <= pt.tpr_ci[1]
        assert pt == tpr_at_fpr(res.curve, target)
    # A loss below the threshold's -t means "member": TPR at FPR t is that of -loss >= thr.
    assert res.at_1pct.tp == int(np.sum(-member_losses >= res.at_1pct.threshold))


# ---- the one-run bound: exact pieces ------------------------------------------------------

def test_one_run_counts_guesses_by_rank() -> None:
    # Top 2 (scores 5, 4) guessed in: both are; bottom 2 (1, 0) guessed out: one is.
    res = one_run_epsilon([5, 4, 3, 2, 1, 0], [1, 1, 0, 0, 1, 0], k_plus=2, k_minus=2)
    assert (res.guesses, res.correct, res.k_plus, res.k_minus, res.m) == (4, 3, 2, 2, 6)
    assert res.eps_lower == 0.0  # four guesses can never beat 95% confidence
    # Ties at the cut go by position, so the same scores give the same count in any case.
    res = one_run_epsilon([1, 1, 1, 1], [True, False, True, False], k_plus=1, k_minus=1)
    assert res.correct == 2


@pytest.mark.parametrize(("r", "v"), [(100, 90), (1000, 731), (1000, 982), (37, 37)])
def test_pure_dp_bound_inverts_the_binomial_tail(r: int, v: int) -> None:
    # The closed form (Clopper-Pearson lower limit) against a root-finder on P[W >= v] = beta.
    want = brentq(lambda e: stats.binom.sf(v - 1, r, special.expit(e)) - BETA, 0, 50, xtol=1e-12)
    assert _mia._eps_lower(m=M, r=r, v=v, delta=0.0, beta=BETA) == pytest.approx(want)


@pytest.mark.parametrize(("r", "v", "eps"), [(100, 90, 1.5), (1000, 731, 0.8), (200, 200, 4.0),
                                             (1000, 982, 3.5), (10, 0, 1.0)])
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_approx_dp_p_value_is_the_papers(r: int, v: int, eps: float, delta: float) -> None:
    got = _mia._p_value(eps, m=M, r=r, v=v, delta=delta)
    assert got == pytest.approx(paper_p_value(M, r, v, eps, delta), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(("r", "v"), [(1000, 731), (1000, 982), (200, 200), (100, 90)])
def test_approx_dp_bound_is_the_first_crossing(r: int, v: int) -> None:
    eps0 = _mia._eps_lower(m=M, r=r, v=v, delta=0.0, beta=BETA)
    for delta in (1e-6, 1e-5, 1e-4):
        eps = _mia._eps_lower(m=M, r=r, v=v, delta=delta, beta=BETA)
        assert 0 < eps <= eps0  # a delta can only weaken the evidence
        for e in np.linspace(0, eps, 20):  # valid: the null is rejected all the way up
            assert _mia._p_value(float(e), m=M, r=r, v=v, delta=delta) <= BETA
        just_above = paper_p_value(M, r, v, eps + 1e-6, delta)
        assert paper_p_value(M, r, v, eps, delta) <= BETA < just_above  # and tight
    assert _mia._eps_lower(m=M, r=r, v=v, delta=1e-12, beta=BETA) == pytest.approx(eps0, 1e-6)


def test_max_bound_for_1000_canaries() -> None:
    # All r guesses right: q^r = beta' gives eps = logit(beta' ^ (1 / r)), largest at r = m.
    assert max_one_run_epsilon(M, delta=0, beta=BETA, ks=[(500, 500)]) == pytest.approx(
        special.logit(BETA ** (1 / M)))  # 5.809
    n_tests = len(_mia._default_ks(M))
    assert n_tests == 7  # r = 1000, 500, ..., 15
    top = max_one_run_epsilon(M, delta=0, beta=BETA)
    assert top == pytest.approx(special.logit((BETA / n_tests) ** (1 / M)))  # 5.308
    assert 5.22 < max_one_run_epsilon(M, delta=1e-5, beta=BETA) < top
    # A perfect attack reaches exactly that ceiling (with 500 in, so r = m is all right).
    rng = np.random.default_rng(3)
    included = rng.permutation(np.arange(M) < M // 2)
    res = best_one_run_epsilon(included + rng.uniform(0, 0.1, M), included, delta=0, beta=BETA)
    assert res.eps_lower == pytest.approx(top) and res.correct == res.guesses == M


def test_best_is_bonferroni_over_its_ks() -> None:
    scores, included = randomized_response(2.0, M, seed=4)
    ks = [(500, 500), (100, 100), (50, 0)]
    best = best_one_run_epsilon(scores, included, delta=1e-5, beta=BETA, ks=ks)
    singles = [one_run_epsilon(scores, included, k_plus=a, k_minus=b, delta=1e-5, beta=BETA / 3)
               for a, b in ks]
    assert best.n_tests == 3 and best.beta == BETA
    assert best.eps_lower == max(s.eps_lower for s in singles) > 0
    # Each test pays for the others: the unadjusted single bound is higher.
    alone = one_run_epsilon(scores, included, k_plus=best.k_plus, k_minus=best.k_minus,
                            delta=1e-5, beta=BETA)
    assert alone.eps_lower > best.eps_lower
    one = best_one_run_epsilon(scores, included, delta=1e-5, beta=BETA, ks=[(500, 500)] * 2)
    assert one.n_tests == 1 and one.eps_lower == pytest.approx(
        one_run_epsilon(scores, included, k_plus=500, k_minus=500, delta=1e-5).eps_lower)


# ---- the one-run bound: calibration on randomized response --------------------------------

# Measured over seeds 0..19 (m = 1000, beta = 0.05, default ks = 7 tests, delta = 0):
#   eps = 1: min 0.655, mean 0.832, max 0.977, no exceedance
#   eps = 4: min 2.720, mean 3.286, max 3.850, no exceedance (ceiling for m = 1000: 5.308)
# delta = 1e-5 lowers each bound by at most 0.011 (eps = 1) and 0.033 (eps = 4). The floors
# sit 0.05-0.2 under the measured figures: a bound 0.05 looser at eps = 1 (Hoeffding instead
# of the exact binomial tail, say, or Bonferroni over hundreds of ks) fails the mean floor.
FLOORS = {1.0: (0.6, 0.78), 4.0: (2.5, 3.1)}  # (every seed, mean over seeds)


@pytest.mark.parametrize("eps", [1.0, 4.0])
@pytest.mark.parametrize("delta", [0.0, 1e-5])
def test_randomized_response_calibration(eps: float, delta: float) -> None:
    bounds = np.array([
        best_one_run_epsilon(*randomized_response(eps, M, seed), delta=delta, beta=BETA).eps_lower
        for seed in range(SEEDS)])
    # Valid: each seed exceeds the true eps with probability <= beta, so more exceedances
    # than the 99% quantile of Binomial(20, 0.05) (= 4) would mean a broken bound.
    assert np.sum(bounds > eps) <= stats.binom.ppf(0.99, SEEDS, BETA)
    # Useful: positive, and close to the truth.
    floor, mean_floor = FLOORS[eps]
    assert bounds.min() >= floor and bounds.mean() >= mean_floor
    assert bounds.max() < max_one_run_epsilon(M, delta=delta, beta=BETA)


def test_the_exceedance_check_has_teeth() -> None:
    # The naive point estimate logit(v / r), with no confidence, exceeds the truth in 7 of
    # these 20 seeds: the exceedance check above would catch an implementation that did this.
    naive = []
    for seed in range(SEEDS):
        scores, included = randomized_response(1.0, M, seed)
        res = one_run_epsilon(scores, included, k_plus=500, k_minus=500)
        naive.append(special.logit(res.correct / res.guesses))
    assert np.sum(np.array(naive) > 1.0) > stats.binom.ppf(0.99, SEEDS, BETA)


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize(("members", "others"), [
    ([], [1.0]), ([1.0], []), ([np.nan, 1.0], [0.0]), ([1.0], [0.0, np.nan]),
    ([[1.0, 2.0]], [0.0]), (["a"], [0.0]),
])
def test_roc_refuses_bad_scores(members: list[object], others: list[object]) -> None:
    with pytest.raises(ConfigError):
        roc(members, others)
    with pytest.raises(ConfigError):
        loss_threshold_attack(members, others)


def test_operating_point_refuses_bad_arguments() -> None:
    curve = roc([1.0, 2.0], [0.0])
    for target in (-0.1, 1.1, math.nan):
        with pytest.raises(ConfigError, match="fpr_target"):
            tpr_at_fpr(curve, target)
    with pytest.raises(ConfigError, match="confidence"):
        tpr_at_fpr(curve, 0.1, confidence=1.0)
    for k, n in ((3, 2), (0, 0), (-1, 5)):
        with pytest.raises(ConfigError):
            clopper_pearson(k, n)


def test_roc_curve_validates_on_construction() -> None:
    z = np.zeros(2, np.int64)
    with pytest.raises(ConfigError):
        _mia.RocCurve(np.array([np.inf, 0.0]), z, z, n_members=1, n_nonmembers=1)


GOOD = (np.arange(10.0), np.arange(10) % 2 == 0)


@pytest.mark.parametrize(("scores", "included", "kw", "match"), [
    ([1.0, np.nan], [1, 0], {}, "NaN"),
    ([], [], {}, "empty"),
    ([1.0, 2.0, 3.0], [1, 0], {}, "shape"),
    ([1.0, 2.0], [1, 2], {}, "0/1"),
    (*GOOD, {"k_plus": 6, "k_minus": 5}, "k_plus \\+ k_minus"),
    (*GOOD, {"k_plus": 0, "k_minus": 0}, "k_plus \\+ k_minus"),
    (*GOOD, {"k_plus": -1, "k_minus": 2}, "k_plus"),
    (*GOOD, {"k_plus": 2.5, "k_minus": 2}, "k_plus"),
    (*GOOD, {"delta": 1.0}, "delta"),
    (*GOOD, {"delta": -1e-9}, "delta"),
    (*GOOD, {"beta": 0.0}, "beta"),
    (np.arange(100.0), np.arange(100) < 5, {}, "fair coin"),
])
def test_one_run_refuses_bad_input(scores: object, included: object, kw: dict[str, object],
                                   match: str) -> None:
    args = {"k_plus": 2, "k_minus": 2, **kw}
    with pytest.raises(ConfigError, match=match):
        one_run_epsilon(scores, included, **args)  # type: ignore[arg-type]


def test_best_and_max_refuse_bad_input() -> None:
    with pytest.raises(ConfigError, match="k_plus \\+ k_minus"):
        best_one_run_epsilon(*GOOD, delta=0, beta=BETA, ks=[(5, 5), (6, 5)])
    with pytest.raises(ConfigError, match="at least one"):
        best_one_run_epsilon(*GOOD, delta=0, beta=BETA, ks=[])
    with pytest.raises(ConfigError):
        max_one_run_epsilon(0, delta=0, beta=BETA)
    with pytest.raises(ConfigError, match="beta"):
        max_one_run_epsilon(M, delta=0, beta=1.0)

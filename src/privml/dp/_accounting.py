"""Privacy accounting over Google's ``dp-accounting`` (privml writes no accountant of its own).

Theory of operation
-------------------
A DP *event* describes what one mechanism did: a Gaussian sum with noise multiplier z
(:func:`gaussian`), optionally over a Poisson sample of rate q (:func:`poisson`) or a
fixed-size sample without replacement (:func:`fixed_size`), repeated ``count`` times. Events
are dp-accounting's own ``DpEvent`` objects; this module only builds them with validated
arguments and writes them to / reads them from plain JSON, so that a ledger can store every
event and rebuild the accountant later (:meth:`PrivacyAccountant.from_record`).

:class:`PrivacyAccountant` wraps dp-accounting's RDP or PLD accountant. The neighbouring
relation is fixed per accountant because dp-accounting supports each sampling scheme under
one relation only: Poisson sampling under add-or-remove-one (RDP and PLD), fixed-size
sampling under replace-one (RDP only). Composing an event the chosen accountant cannot
account for raises :class:`ConfigError` and changes nothing.

To refuse a round *before* it runs, ask :meth:`PrivacyAccountant.epsilon_after` or call
:meth:`PrivacyAccountant.check_budget` / :meth:`PrivacyAccountant.compose_within`, which
raise :class:`BudgetExceededError` with the accountant unchanged.

:func:`noise_for` inverts accounting by bisection on z: it returns the smallest z found
whose epsilon is at most the target and within ``tol`` (default 1e-3) of it.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Literal

import dp_accounting as dpa  # type: ignore[import-untyped]
from dp_accounting import pld, rdp

from privml._exceptions import BudgetExceededError, ConfigError


class _QuietFractionalOrders(logging.Filter):
    """dp-accounting logs one warning per fractional RDP order whose series fails to
    converge (small sigma, large q) and then leaves that order out: epsilon is still an upper
    bound, taken over the remaining orders. Composing many rounds repeats it by the hundred;
    drop just that message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietFractionalOrders())

__all__ = [
    "PrivacyAccountant",
    "event_from_json",
    "event_to_json",
    "fixed_size",
    "gaussian",
    "noise_for",
    "poisson",
    "repeated",
]

Kind = Literal["rdp", "pld"]
Relation = Literal["add_or_remove", "replace_one"]
_RELATIONS = {"add_or_remove": dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
              "replace_one": dpa.NeighboringRelation.REPLACE_ONE}
_RECORD_VERSION = 1
_Z_MAX = 1e4  # a noise multiplier past this is a configuration mistake, not a calibration


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _count(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _delta(delta: object) -> float:
    d = _positive("delta", delta)
    if d >= 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    return d


def gaussian(*, noise_multiplier: float) -> Any:
    """One Gaussian sum with noise std = noise_multiplier x L2 sensitivity (no sampling)."""
    return dpa.GaussianDpEvent(_positive("noise_multiplier", noise_multiplier))


def poisson(*, q: float, noise_multiplier: float) -> Any:
    """A Gaussian sum over a Poisson sample: each record/client joins with probability q."""
    rate = _positive("q", q)
    if rate > 1:
        raise ConfigError(f"q must be in (0, 1], got {q!r}")
    return dpa.PoissonSampledDpEvent(rate, gaussian(noise_multiplier=noise_multiplier))


def fixed_size(*, sample_size: int, population: int, noise_multiplier: float) -> Any:
    """A Gaussian sum over ``sample_size`` of ``population`` drawn without replacement
    (dp-accounting's SampledWithoutReplacementDpEvent; RDP accountant, replace-one only)."""
    n = _count("population", population)
    k = _count("sample_size", sample_size)
    if k > n:
        raise ConfigError(f"sample_size {k} exceeds population {n}")
    return dpa.SampledWithoutReplacementDpEvent(n, k, gaussian(
        noise_multiplier=noise_multiplier))


def repeated(event: Any, *, count: int) -> Any:
    """``event`` applied ``count`` times (steps or rounds) in sequence."""
    return dpa.SelfComposedDpEvent(event, _count("count", count))


# ---- JSON (de)serialisation: a closed set of event kinds, validated on the way in ------

def event_to_json(event: Any) -> dict[str, Any]:
    """A dp-accounting event -> a JSON-serialisable dict (refuses kinds privml cannot read
    back, with ConfigError)."""
    if isinstance(event, dpa.GaussianDpEvent):
        return {"type": "gaussian", "noise_multiplier": float(event.noise_multiplier)}
    if isinstance(event, dpa.PoissonSampledDpEvent):
        return {"type": "poisson", "q": float(event.sampling_probability),
                "event": event_to_json(event.event)}
    if isinstance(event, dpa.SampledWithoutReplacementDpEvent):
        return {"type": "fixed_size", "population": int(event.source_dataset_size),
                "sample_size": int(event.sample_size), "event": event_to_json(event.event)}
    if isinstance(event, dpa.SelfComposedDpEvent):
        return {"type": "repeated", "count": int(event.count),
                "event": event_to_json(event.event)}
    if isinstance(event, dpa.ComposedDpEvent):
        return {"type": "composed", "events": [event_to_json(e) for e in event.events]}
    if isinstance(event, dpa.ZCDpEvent):
        return {"type": "zcdp", "rho": float(event.rho), "xi": float(event.xi)}
    raise ConfigError(f"cannot record a DP event of type {type(event).__name__}")


def event_from_json(obj: object) -> Any:
    """Inverse of :func:`event_to_json`; malformed records raise ConfigError."""
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ConfigError(f"a DP event record must be an object with a 'type', got {obj!r}")
    try:
        return _from_json(obj)
    except KeyError as exc:
        raise ConfigError(f"DP event record {obj!r} lacks field {exc}") from None


def _from_json(obj: dict[str, Any]) -> Any:
    kind = obj["type"]
    if kind == "gaussian":
        return gaussian(noise_multiplier=obj["noise_multiplier"])
    if kind == "poisson":
        q = _positive("q", obj["q"])
        if q > 1:
            raise ConfigError(f"q must be in (0, 1], got {q!r}")
        return dpa.PoissonSampledDpEvent(q, event_from_json(obj["event"]))
    if kind == "fixed_size":
        n, k = _count("population", obj["population"]), _count("sample_size", obj["sample_size"])
        if k > n:
            raise ConfigError(f"sample_size {k} exceeds population {n}")
        return dpa.SampledWithoutReplacementDpEvent(n, k, event_from_json(obj["event"]))
    if kind == "repeated":
        return repeated(event_from_json(obj["event"]), count=obj["count"])
    if kind == "composed":
        events = obj["events"]
        if not isinstance(events, list):
            raise ConfigError("a composed DP event record needs a list of events")
        return dpa.ComposedDpEvent([event_from_json(e) for e in events])
    if kind == "zcdp":
        xi = obj["xi"]
        if xi != 0:
            _positive("xi", xi)
        return dpa.ZCDpEvent(_positive("rho", obj["rho"]), float(xi))
    raise ConfigError(f"unknown DP event type {kind!r}")


# ---- the accountant -----------------------------------------------------------------------

class PrivacyAccountant:
    """An RDP or PLD accountant (dp-accounting) that keeps a JSON record of every event.

    ``kind``: "rdp" or "pld". ``relation``: "add_or_remove" (Poisson sampling, full
    participation, DDG zCDP events) or "replace_one" (fixed-size sampling; RDP only).
    """

    def __init__(self, *, kind: Kind = "rdp", relation: Relation = "add_or_remove") -> None:
        if kind not in ("rdp", "pld"):
            raise ConfigError(f"kind must be 'rdp' or 'pld', got {kind!r}")
        if relation not in _RELATIONS:
            raise ConfigError(f"relation must be one of {sorted(_RELATIONS)}, got {relation!r}")
        self.kind: Kind = kind
        self.relation: Relation = relation
        rel = _RELATIONS[relation]
        self._inner: Any = (rdp.RdpAccountant(neighboring_relation=rel) if kind == "rdp"
                            else pld.PLDAccountant(neighboring_relation=rel))
        self._events: list[dict[str, Any]] = []

    @classmethod
    def from_record(cls, record: object) -> PrivacyAccountant:
        """Rebuild an accountant from :meth:`record` output (e.g. read from a ledger)."""
        if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:
            raise ConfigError(f"not a version-{_RECORD_VERSION} accountant record")
        events = record.get("events")
        if not isinstance(events, list):
            raise ConfigError("an accountant record needs a list of events")
        return cls.from_events(events, kind=record.get("kind"),  # type: ignore[arg-type]
                               relation=record.get("relation"))  # type: ignore[arg-type]

    @classmethod
    def from_events(cls, events: list[dict[str, Any]], *, kind: Kind,
                    relation: Relation) -> PrivacyAccountant:
        """Rebuild from a list of ``{"event": <event_to_json>, "count": n}`` entries."""
        acct = cls(kind=kind, relation=relation)
        for entry in events:
            if not isinstance(entry, dict) or "event" not in entry:
                raise ConfigError(f"a ledger entry needs an 'event', got {entry!r}")
            acct.compose(event_from_json(entry["event"]), count=entry.get("count", 1))
        return acct

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every composed event, in order, as ``{"event": ..., "count": n}`` (a copy)."""
        return copy.deepcopy(self._events)

    def record(self) -> dict[str, Any]:
        """A JSON-serialisable record from which :meth:`from_record` rebuilds this."""
        return {"version": _RECORD_VERSION, "kind": self.kind, "relation": self.relation,
                "events": self.events}

    def _checked(self, event: Any, count: int) -> tuple[Any, dict[str, Any]]:
        n = _count("count", count)
        entry = {"event": event_to_json(event), "count": n}
        full = event if n == 1 else dpa.SelfComposedDpEvent(event, n)
        if not self._inner.supports(full):
            raise ConfigError(
                f"the {self.kind} accountant ({self.relation}) cannot account for {event!r}: "
                "fixed-size sampling needs kind='rdp', relation='replace_one'; Poisson "
                "sampling needs relation='add_or_remove'; zCDP events need kind='rdp'")
        return full, entry

    def compose(self, event: Any, *, count: int = 1) -> None:
        """Add ``event`` applied ``count`` times. ConfigError if this accountant cannot
        account for it (nothing is changed then)."""
        full, entry = self._checked(event, count)
        self._inner.compose(full)
        self._events.append(entry)

    def epsilon(self, *, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0.0 before any event)."""
        return float(self._inner.get_epsilon(_delta(delta)))

    def epsilon_after(self, event: Any, *, delta: float, count: int = 1) -> float:
        """Epsilon this accountant *would* report after composing ``event`` ``count``
        times; this accountant is not changed."""
        full, _ = self._checked(event, count)
        trial = copy.deepcopy(self._inner)
        trial.compose(full)
        return float(trial.get_epsilon(_delta(delta)))

    def check_budget(self, event: Any, *, target_epsilon: float, delta: float,
                     count: int = 1) -> float:
        """Raise BudgetExceededError if composing ``event`` would take epsilon past
        ``target_epsilon``; else return the epsilon it would reach. Changes nothing."""
        target = _positive("target_epsilon", target_epsilon)
        eps = self.epsilon_after(event, delta=delta, count=count)
        if eps > target:
            raise BudgetExceededError(
                f"epsilon would reach {eps:.6g} > target {target:.6g} at delta={delta:g}",
                epsilon=eps, target=target, delta=delta)
        return eps

    def compose_within(self, event: Any, *, target_epsilon: float, delta: float,
                       count: int = 1) -> float:
        """:meth:`check_budget`, then :meth:`compose`; returns the new epsilon."""
        eps = self.check_budget(event, target_epsilon=target_epsilon, delta=delta, count=count)
        self.compose(event, count=count)
        return eps


# ---- calibration ---------------------------------------------------------------------------

def noise_for(*, target_epsilon: float, delta: float, q: float, steps: int,
              accountant: Kind = "rdp", sampling: Literal["poisson", "fixed_size"] = "poisson",
              population: int | None = None, tol: float = 1e-3) -> float:
    """The noise multiplier z whose ``steps``-fold sampled Gaussian spends at most
    ``target_epsilon`` at ``delta``, within ``tol`` below it (bisection on the accountant).

    ``sampling="fixed_size"`` needs ``population`` with q * population an integer (the
    sample size); it is accounted with RDP under replace-one. ConfigError if no z up to
    1e4 reaches the target."""
    target = _positive("target_epsilon", target_epsilon)
    d = _delta(delta)
    n_steps = _count("steps", steps)
    tolerance = _positive("tol", tol)
    make = _event_maker(q, sampling, population)
    relation: Relation = "replace_one" if sampling == "fixed_size" else "add_or_remove"

    def eps(z: float) -> float:
        acct = PrivacyAccountant(kind=accountant, relation=relation)
        acct.compose(make(z), count=n_steps)
        return acct.epsilon(delta=d)

    start = 1.0
    if accountant == "pld":
        # RDP is looser than PLD, so its z (cheap to find) meets the target under PLD too
        # and brackets the answer from above; PLD calls at small z are the slow ones.
        start = noise_for(target_epsilon=target, delta=d, q=q, steps=n_steps,
                          sampling=sampling, population=population, tol=0.05)
    return _invert(eps, target, tolerance, d, start)


def _invert(eps: Any, target: float, tol: float, delta: float, start: float) -> float:
    """Smallest-found z with target - tol <= eps(z) <= target; eps falls as z grows.

    Illinois regula falsi on log z inside a bracket [lo, hi] with eps(lo) > target >=
    eps(hi): it needs far fewer accountant calls than plain bisection (a PLD or
    fixed-size RDP evaluation costs up to a second), and it falls back to bisection
    whenever interpolation stalls, so it always converges."""
    lo, hi = start / 1.25, start
    e_lo, e_hi = eps(lo), eps(hi)
    while e_hi > target:  # grow the bracket upward
        lo, e_lo, hi = hi, e_hi, hi * 2
        if hi > _Z_MAX:
            raise ConfigError(f"no noise multiplier up to {_Z_MAX:g} reaches epsilon "
                              f"{target:g} at delta {delta:g}")
        e_hi = eps(hi)
    while e_lo <= target:  # grow it downward
        hi, e_hi, lo = lo, e_lo, lo / 1.25
        e_lo = eps(lo)
    aim = target - tol / 2  # aim mid-window so interpolation lands inside it
    side = 0
    for _ in range(200):
        if target - e_hi <= tol or hi - lo < 1e-12 * hi:
            break
        g_lo, g_hi = e_lo - aim, e_hi - aim
        w_lo = g_lo / 2 if side == -1 else g_lo  # Illinois: halve a stale end's weight
        w_hi = g_hi / 2 if side == 1 else g_hi
        a, b = math.log(lo), math.log(hi)
        mid = math.exp(b - w_hi * (b - a) / (w_hi - w_lo)) if w_hi != w_lo else (lo + hi) / 2
        if not lo < mid < hi:
            mid = (lo + hi) / 2
        e_mid = eps(mid)
        if e_mid > target:
            lo, e_lo, side = mid, e_mid, 1
        else:
            hi, e_hi, side = mid, e_mid, -1
    return hi


def _event_maker(q: float, sampling: str, population: int | None) -> Any:
    if sampling == "poisson":
        rate = _positive("q", q)
        if rate > 1:
            raise ConfigError(f"q must be in (0, 1], got {q!r}")
        return lambda z: poisson(q=rate, noise_multiplier=z)
    if sampling == "fixed_size":
        n = _count("population", population)
        k = round(_positive("q", q) * n)
        if abs(k - q * n) > 1e-9 * n or k < 1:
            raise ConfigError(f"q * population must be a whole sample size, got {q * n!r}")
        return lambda z: fixed_size(sample_size=k, population=n, noise_multiplier=z)
    raise ConfigError(f"sampling must be 'poisson' or 'fixed_size', got {sampling!r}")

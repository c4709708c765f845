"""The distributed discrete Gaussian (DDG) mechanism for secure aggregation.

Kairouz, Liu & Steinke 2021, "The distributed discrete Gaussian mechanism for federated
learning with secure aggregation" (ICML; arXiv:2102.06387), without the random rotation.

Theory of operation
-------------------
Client side (:meth:`DistributedDiscreteGaussian.encode`), for an update x in R^d:

1. clip: x <- x * min(1, c / ||x||_2)                               (``clip`` = c)
2. scale to the integer grid: y = x / gamma                          (``gamma``)
3. conditional randomized rounding: each y_j goes to floor(y_j) + Bernoulli(frac(y_j)),
   retried until the integer vector r satisfies ||r||_2 <= Delta_2 where (their Section 4,
   the bound of their Algorithm 1)

       Delta_2^2 = min{ (c/gamma)^2 + d/4 + sqrt(2 ln(1/beta)) (c/gamma + sqrt(d)/2),
                        (c/gamma + sqrt(d))^2 }

   (the second term always holds, so beta = 0 never retries; otherwise each try passes with
   probability >= 1 - beta). Conditioning makes r very slightly biased; E[r] ~ y.
4. add per-coordinate noise N_Z(0, sigma^2) (``sigma``, integer units), from
   :func:`discrete_gaussian`;
5. reduce mod 2^m (``bits`` = m) for secure aggregation, which sums in Z_{2^m}.

The server's secure sum, centred-lifted and multiplied by gamma, is the sum of the clipped
updates plus noise (:meth:`DistributedDiscreteGaussian.decode`).

No rotation. The paper flattens the vector with a random Walsh-Hadamard rotation so that
every coordinate is about ||r|| / sqrt(d). We skip it, so a coordinate can be as large as
||r||_inf <= Delta_2, and the modulus must be sized for that worst case: construction
refuses (ConfigError) any m with

    clients * floor(Delta_2) + noise_bound >= 2^(m-1),

where ``noise_bound`` = ceil(sqrt(2 n sigma^2 ln(2 d / overflow_prob))) bounds |sum of the
noise| on every coordinate at once except with probability ``overflow_prob`` (each
N_Z(0, sigma^2) is sigma^2-subgaussian, Canonne, Kamath & Steinke 2020, so the sum of n is
n sigma^2-subgaussian; union bound over d). This is the meaning of ``noise_bound`` in
:class:`privml.secagg.FixedPoint`. Wrapping is post-processing, so it can never hurt
privacy, only accuracy, and only with probability <= overflow_prob.

Privacy (:meth:`DistributedDiscreteGaussian.event`). With n the number of *survivors whose
noise is in the sum* and s = sqrt(n) sigma, Proposition 14 of the paper (the RDP form of
its Theorem 1) bounds the Renyi divergence of order alpha between the noisy sums for two
inputs whose rounded vectors differ by Delta (||Delta||_2 <= Delta_2, ||Delta||_1 <=
Delta_1 = min(sqrt(d) Delta_2, Delta_2^2)) by the least of

    alpha/2 * Delta_2^2/s^2 + tau d
    alpha/2 * (Delta_2^2/s^2 + 2 Delta_1 tau / s + tau^2 d)
    alpha/2 * (Delta_2/s + sqrt(d) tau)^2,
    where tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1)).

We use the last two, which are rho-zCDP with rho = the smaller coefficient of alpha, and
hand rho to dp-accounting as a ZCDpEvent (it does the conversion and the composition over
rounds). Dropping the first term (which carries an additive tau d) is valid, only looser,
and identical once tau ~ 0, which it is for sigma >= 1 and any practical n. Assumptions:
every surviving client added its own noise honestly (a client that skips its noise lowers
n); the neighbouring relation is one client's contribution replaced by zero with the same
n noise shares in the sum; client sampling is not amplified here (rounds compose plainly).
Rounded *continuous* Gaussian noise reduced mod 2^m is not a Gaussian mechanism; privml
offers no such path.

Sampler. :func:`discrete_gaussian` is Algorithm 3 of Canonne, Kamath & Steinke 2020 ("The
discrete Gaussian for differential privacy"): propose Y from the discrete Laplace with
scale t = floor(sigma) + 1 (a difference of two geometric variables), accept with
probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)). It is the careful *float* version,
vectorised in numpy for d ~ 10^5: probabilities are float64 (relative error ~1e-16), not
the exact rational arithmetic of the paper, and its running time depends on the draws. The
privacy statement is about the ideal distribution; the float deviation is far below any
sampling error a test can see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError, ParamsError
from privml.dp._accounting import PrivacyAccountant, event_from_json
from privml.dp._clip import clip_l2
from privml.dp._noise import pick_rng

__all__ = ["DistributedDiscreteGaussian", "ddg_tau", "discrete_gaussian"]

_MAX_TRIES = 10_000  # with beta <= 0.99 the chance of this many rejections is < 1e-40


def _pos(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, "
                          f"got {value!r}")
    return float(value)


def _int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def discrete_gaussian(shape: int | tuple[int, ...], *, sigma: float,
                      rng: np.random.Generator | None = None,
                      insecure_seed: int | None = None) -> npt.NDArray[np.int64]:
    """Integers from N_Z(0, sigma^2), P(y) ~ exp(-y^2 / (2 sigma^2)) (module docstring).
    ``rng`` None: a secure generator; ``insecure_seed`` only for reproducible tests."""
    s = _pos("sigma", sigma)
    gen = pick_rng(rng, insecure_seed)
    t = math.floor(s) + 1
    p = -math.expm1(-1.0 / t)  # success probability of each geometric: 1 - e^(-1/t)
    out = np.empty(shape, dtype=np.int64)
    flat = out.reshape(-1)
    pending = np.arange(flat.size)
    for _ in range(_MAX_TRIES):
        if pending.size == 0:
            return out
        k = pending.size
        y = gen.geometric(p, size=k) - gen.geometric(p, size=k)
        accept_p = np.exp(-((np.abs(y) - s * s / t) ** 2) / (2 * s * s))
        ok = gen.random(k) < accept_p
        flat[pending[ok]] = y[ok]
        pending = pending[~ok]
    raise AssertionError("discrete Gaussian sampler did not terminate")  # prob. ~ 0


def ddg_tau(*, sigma: float, survivors: int) -> float:
    """tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1)) (Theorem 1 / Proposition 14
    of Kairouz, Liu & Steinke 2021): how far a sum of n discrete Gaussians is from one."""
    s = _pos("sigma", sigma)
    n = _int("survivors", survivors, 1)
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.exp(-2.0 * math.pi**2 * s * s * k / (k + 1)).sum())


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributedDiscreteGaussian:
    """Settings of the DDG mechanism (module docstring), validated on construction.

    ``clip``: L2 bound c on a float update. ``gamma``: grid step (an update is carried as
    integers x / gamma). ``sigma``: std of each client's discrete noise, in integer units
    (>= 1/2; the central noise std in update units is gamma sqrt(n) sigma). ``dim``: d.
    ``clients``: most summands. ``beta``: conditional-rounding slack in [0, 1).
    ``bits``: modulus 2^bits, 32 or 64. ``overflow_prob``: allowed chance that the noise
    sum wraps some coordinate (utility only; privacy does not depend on it)."""

    clip: float
    gamma: float
    sigma: float
    dim: int
    clients: int
    beta: float = math.exp(-0.5)
    bits: int = 64
    overflow_prob: float = 1e-9

    def __post_init__(self) -> None:
        for name in ("clip", "gamma", "sigma", "overflow_prob"):
            object.__setattr__(self, name, _pos(name, getattr(self, name)))
        if self.sigma < 0.5:
            raise ConfigError(f"sigma must be >= 1/2 (Theorem 1 needs it), got {self.sigma}")
        _int("dim", self.dim, 1)
        _int("clients", self.clients, 1)
        b = _pos("beta", self.beta, allow_zero=True)
        if b >= 1:
            raise ConfigError(f"beta must be in [0, 1), got {self.beta!r}")
        object.__setattr__(self, "beta", b)
        if self.bits not in (32, 64) or isinstance(self.bits, bool):
            raise ConfigError(f"bits must be 32 or 64, got {self.bits!r}")
        if self.l2_bound**2 >= 2.0**62:
            raise ConfigError("clip / gamma is too large for int64 arithmetic")
        if self.min_bits > self.bits:
            raise ConfigError(
                f"the sum can wrap mod 2^{self.bits}: clients x floor(Delta_2) + noise_bound "
                f"= {self.worst_abs_sum} needs bits >= {self.min_bits}; raise bits or gamma")

    @property
    def l2_bound(self) -> float:
        """Delta_2: the L2 norm every rounded vector is conditioned to (integer units)."""
        a, d = self.clip / self.gamma, self.dim
        always = (a + math.sqrt(d)) ** 2
        if self.beta == 0:
            return math.sqrt(always)
        likely = a * a + d / 4 + math.sqrt(2 * math.log(1 / self.beta)) * (a + math.sqrt(d) / 2)
        return math.sqrt(min(likely, always))

    @property
    def l1_bound(self) -> float:
        """Delta_1 = min(sqrt(d) Delta_2, Delta_2^2) (an integer vector has |r_j| <= r_j^2)."""
        return min(math.sqrt(self.dim) * self.l2_bound, self.l2_bound**2)

    @property
    def noise_bound(self) -> int:
        """Bound on |sum of n clients' noise| per coordinate, except w.p. overflow_prob."""
        var = self.clients * self.sigma**2
        return math.ceil(math.sqrt(2 * var * math.log(2 * self.dim / self.overflow_prob)))

    @property
    def worst_abs_sum(self) -> int:
        """Largest |coordinate of the integer sum| the modulus must hold (no rotation)."""
        return self.clients * math.floor(self.l2_bound) + self.noise_bound

    @property
    def min_bits(self) -> int:
        """Smallest m with worst_abs_sum < 2^(m-1)."""
        return self.worst_abs_sum.bit_length() + 1

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        """The unsigned dtype whose wraparound is the modulus 2^bits."""
        return np.dtype(np.uint32 if self.bits == 32 else np.uint64)

    def round_conditional(self, update: npt.ArrayLike, *,
                          rng: np.random.Generator | None = None,
                          insecure_seed: int | None = None) -> npt.NDArray[np.int64]:
        """Steps 1-3: clip to c, scale by 1/gamma, round randomly until ||r||_2 <= Delta_2."""
        x = np.asarray(update)
        if x.dtype not in (np.float32, np.float64) or x.shape != (self.dim,):
            raise ParamsError(f"an update must be float32/float64 of shape ({self.dim},), "
                              f"got {x.dtype} {x.shape}")
        if not np.isfinite(x).all():
            raise ParamsError("an update must be finite")
        clipped, _ = clip_l2(x.astype(np.float64), bound=self.clip)
        y = clipped / self.gamma
        low = np.floor(y)
        frac = y - low
        base = low.astype(np.int64)
        limit = math.floor(self.l2_bound**2)  # ||r||^2 is an integer: compare exactly
        gen = pick_rng(rng, insecure_seed)
        for _ in range(_MAX_TRIES):
            r: npt.NDArray[np.int64] = base + (gen.random(self.dim) < frac)
            if int(np.dot(r, r)) <= limit:
                return r
        raise ConfigError(f"conditional rounding kept failing: beta={self.beta} too close to 1")

    def encode(self, update: npt.ArrayLike, *, rng: np.random.Generator | None = None,
               insecure_seed: int | None = None) -> npt.NDArray[np.unsignedinteger]:
        """Client side, steps 1-5: the vector to submit to secure aggregation (mod 2^bits)."""
        gen = pick_rng(rng, insecure_seed)
        r = self.round_conditional(update, rng=gen)
        noisy = r + discrete_gaussian(self.dim, sigma=self.sigma, rng=gen)
        mask = np.uint64((1 << self.bits) - 1)
        # int64 -> uint64 is two's complement, i.e. already the residue mod 2^64
        return (noisy.astype(np.uint64) & mask).astype(self.dtype)

    def decode(self, total: npt.NDArray[np.unsignedinteger]) -> npt.NDArray[np.float64]:
        """Server side: the secure sum (mod 2^bits) -> the noisy sum of clipped updates, in
        update units (centred lift times gamma). Divide by the client count for a mean."""
        if not isinstance(total, np.ndarray) or total.dtype != self.dtype \
                or total.shape != (self.dim,):
            raise ParamsError(f"a sum must be a {self.dtype} array of shape ({self.dim},)")
        signed = total.view(np.int32 if self.bits == 32 else np.int64)
        return signed.astype(np.float64) * self.gamma

    def describe(self) -> dict[str, Any]:
        """The settings as JSON (a task tells clients how to encode: :meth:`from_json`)."""
        return {"kind": "ddg", "clip": self.clip, "gamma": self.gamma, "sigma": self.sigma,
                "dim": self.dim, "clients": self.clients, "beta": self.beta,
                "bits": self.bits, "overflow_prob": self.overflow_prob}

    @classmethod
    def from_json(cls, obj: object) -> DistributedDiscreteGaussian:
        """Inverse of :meth:`describe`; ConfigError for anything malformed."""
        if not isinstance(obj, dict) or obj.get("kind") != "ddg":
            raise ConfigError("not a distributed discrete Gaussian description")
        try:
            return cls(clip=float(obj["clip"]), gamma=float(obj["gamma"]),
                       sigma=float(obj["sigma"]), dim=int(obj["dim"]),
                       clients=int(obj["clients"]), beta=float(obj["beta"]),
                       bits=int(obj["bits"]), overflow_prob=float(obj["overflow_prob"]))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad distributed discrete Gaussian description: {exc}") from None

    def rho(self, *, survivors: int) -> float:
        """zCDP rho of one round whose sum holds the noise of ``survivors`` clients
        (Proposition 14, the two pure-zCDP terms; module docstring)."""
        n = _int("survivors", survivors, 1)
        if n > self.clients:
            raise ConfigError(f"survivors {n} exceeds clients {self.clients}")
        tau = ddg_tau(sigma=self.sigma, survivors=n)
        s = math.sqrt(n) * self.sigma
        d2, d1, d = self.l2_bound, self.l1_bound, self.dim
        second = (d2 * d2 / (s * s) + 2 * d1 * tau / s + tau * tau * d) / 2
        third = (d2 / s + math.sqrt(d) * tau) ** 2 / 2
        return min(second, third)

    def event(self, *, survivors: int) -> Any:
        """The round as a dp-accounting ZCDpEvent, for :class:`PrivacyAccountant`
        (kind="rdp"); store ``event_to_json`` of it in a ledger."""
        return event_from_json({"type": "zcdp", "rho": self.rho(survivors=survivors),
                                "xi": 0.0})

    def epsilon(self, *, delta: float, survivors: int, rounds: int = 1) -> float:
        """(epsilon, delta) of ``rounds`` rounds each with ``survivors`` honest noisers,
        via dp-accounting's RDP accountant (no sampling amplification)."""
        acct = PrivacyAccountant(kind="rdp")
        acct.compose(self.event(survivors=survivors), count=rounds)
        return acct.epsilon(delta=delta)

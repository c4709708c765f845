"""Differential privacy for privml: accounting (over Google's dp-accounting), client-level
clipping and Gaussian noise, and the distributed discrete Gaussian for secure aggregation.

* accounting: :func:`gaussian`, :func:`poisson`, :func:`fixed_size`, :func:`repeated`
  build dp-accounting events; :class:`PrivacyAccountant` composes them, keeps a JSON record
  for a ledger and refuses an event that would pass a target epsilon *before* it is
  composed; :func:`noise_for` calibrates the noise multiplier.
* central DP: :func:`clip_l2`, :class:`AdaptiveClip`, :func:`gaussian_noise`.
* example-level DP in a federation (DP-SGD on each client): :class:`ExampleLevelDP`.
* distributed DP: :class:`DistributedDiscreteGaussian`, :func:`discrete_gaussian`.

Every sampler draws from a securely seeded generator unless handed one; the reproducible
path is named ``insecure_*`` and is for tests.
"""

from privml.dp._accounting import (
    PrivacyAccountant,
    event_from_json,
    event_to_json,
    fixed_size,
    gaussian,
    noise_for,
    poisson,
    repeated,
)
from privml.dp._clip import AdaptiveClip, adaptive_noise_multiplier, clip_l2
from privml.dp._discrete import DistributedDiscreteGaussian, ddg_tau, discrete_gaussian
from privml.dp._example import ExampleLevelDP, dpsgd_steps
from privml.dp._fedavg import ClientLevelDP, DPSettings, check_dp_settings
from privml.dp._noise import gaussian_noise, insecure_rng, secure_rng

__all__ = [
    "AdaptiveClip",
    "ClientLevelDP",
    "DPSettings",
    "DistributedDiscreteGaussian",
    "ExampleLevelDP",
    "PrivacyAccountant",
    "adaptive_noise_multiplier",
    "check_dp_settings",
    "clip_l2",
    "ddg_tau",
    "discrete_gaussian",
    "dpsgd_steps",
    "event_from_json",
    "event_to_json",
    "fixed_size",
    "gaussian",
    "gaussian_noise",
    "insecure_rng",
    "noise_for",
    "poisson",
    "repeated",
    "secure_rng",
]

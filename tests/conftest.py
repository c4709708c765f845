"""Shared test configuration: hypothesis profiles and the one expensive fixture per session."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# `make test` selects "ci": fewer, derandomized examples so the suite is quick and repeatable.
settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

"""LiRA, the likelihood-ratio membership-inference attack (Carlini et al., "Membership Inference
Attacks From First Principles", S&P 2022), for ``privml audit privacy --lira K``.

Theory of operation: K shadow federations re-run the audited run's own configuration (the
simulator, the same clients, rounds, local training and DP settings), each on a random half
of the data pool (the training and test splits together; every example in with a fair
coin). For each candidate example, the shadows that trained on it and those that did not
give two distributions of its logit-scaled confidence φ = log(p_y / (1 - p_y)); the attack
scores the target model's φ by the log-likelihood ratio of the two Gaussians. With few
shadows (K < 64, the paper's advice) the variances are global, pooled over examples; an
example no shadow happened to include (or exclude) borrows the pooled mean gap.

Shadows are seeded from the OS CSPRNG; their training costs K times the audited run's.
"""

from __future__ import annotations

import secrets
from dataclasses import fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError

__all__ = ["lira_scores"]

FloatArray = npt.NDArray[np.float64]
_EPS = 1e-12


def _phi(model: Any, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> FloatArray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), 512):
            logits = model(torch.from_numpy(np.ascontiguousarray(x[start:start + 512])))
            logp = torch.log_softmax(logits.double(), dim=1)
            lp = logp[torch.arange(len(logits)), torch.from_numpy(y[start:start + 512])]
            # log(p / (1 - p)) from log p, stable near p = 1
            out.append((lp - torch.log(-torch.expm1(lp).clamp_max(-_EPS))).numpy())
    return np.concatenate(out)


def lira_scores(config: dict[str, Any], dataset: Any, target: Any,
                candidates: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]], *,
                shadows: int, progress: Any = None) -> FloatArray:
    """LiRA scores (higher: "member") of ``candidates`` (x, y) against the ``target`` model,
    from ``shadows`` re-runs of the simulation ``config`` on random halves of ``dataset``."""
    from privml.models import build_torch, zoo
    from privml.sim import SimConfig, run_simulation
    from privml.train import set_params

    if isinstance(shadows, bool) or not isinstance(shadows, int) or not 2 <= shadows <= 256:
        raise ConfigError(f"--lira takes 2..256 shadow models, got {shadows!r}")
    names = {f.name for f in fields(SimConfig)}
    cfg = SimConfig(**{k: v for k, v in config.items() if k in names})
    pool_x = np.concatenate([dataset.x_train, dataset.x_test])
    pool_y = np.concatenate([dataset.y_train, dataset.y_test])
    x, y = candidates
    # Which pool rows the candidates are (by value: the pool holds every candidate).
    index = {row.tobytes(): i for i, row in enumerate(pool_x)}
    try:
        where = np.array([index[row.tobytes()] for row in x])
    except KeyError:
        raise ConfigError("LiRA candidates must come from the run's dataset") from None
    phis = np.empty((shadows, len(x)))
    inside = np.empty((shadows, len(x)), dtype=bool)
    for k in range(shadows):
        keep = np.frombuffer(secrets.token_bytes(len(pool_x)), np.uint8) & 1 == 1
        shadow_ds = replace(dataset, x_train=pool_x[keep], y_train=pool_y[keep])
        result = run_simulation(replace(cfg, seed=secrets.randbits(31)), dataset=shadow_ds)
        net = build_torch(zoo(cfg.model, input_shape=dataset.input_shape,
                              num_classes=dataset.num_classes))
        set_params(net, result.params)
        phis[k] = _phi(net, x, y)
        inside[k] = keep[where]
        if progress is not None:
            progress(k + 1, shadows)
    return _ratio(phis, inside, _phi(target, x, y))


def _ratio(phis: FloatArray, inside: npt.NDArray[np.bool_], target: FloatArray) -> FloatArray:
    """The online LiRA statistic with pooled variances."""
    n_in, n_out = inside.sum(0), (~inside).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_in = np.where(n_in > 0, (phis * inside).sum(0) / np.maximum(n_in, 1), np.nan)
        mu_out = np.where(n_out > 0, (phis * ~inside).sum(0) / np.maximum(n_out, 1), np.nan)
    both = ~np.isnan(mu_in) & ~np.isnan(mu_out)
    gap = float(np.mean(mu_in[both] - mu_out[both])) if both.any() else 0.0
    mu_in = np.where(np.isnan(mu_in), mu_out + gap, mu_in)
    mu_out = np.where(np.isnan(mu_out), mu_in - gap, mu_out)
    var_in = max(float(np.mean(((phis - mu_in) ** 2)[inside])) if inside.any() else 1.0, _EPS)
    var_out = max(float(np.mean(((phis - mu_out) ** 2)[~inside])) if (~inside).any()
                  else 1.0, _EPS)
    score: FloatArray = ((target - mu_out) ** 2 / (2 * var_out)
                         - (target - mu_in) ** 2 / (2 * var_in) + 0.5 * np.log(var_out / var_in))
    return score

"""Opacus's DP-SGD step on the models of ``bench/dpsgd.py``, in Opacus's own venv.

    bench/.venvs/opacus/bin/python bench/opacus_side.py --model mlp --steps 20

This file also defines the benchmark's models and timing helper, as plain torch (no privml,
no opacus at import time), so that ``bench/dpsgd.py`` builds the very same architectures in
privml's venv. Prints one JSON object: per Opacus mode, the median seconds per step or the
error that mode raised.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

MODELS = ("mlp", "cnn", "gn_cnn")
MODES = ("hooks", "ghost", "functorch", "ew")
LR = 0.05
NOISE, CLIP = 1.0, 1.0


def build(name: str) -> nn.Module:
    """The benchmark's models, NCHW; seeded so both sides start from the same weights."""
    torch.manual_seed(0)
    if name == "mlp":  # 784-256-10
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "cnn":  # privml's zoo("cnn", input_shape=(28, 28, 1)) in NCHW
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    if name == "gn_cnn":  # 32x32x3, GroupNorm after every convolution
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 10))
    raise ValueError(f"unknown model {name!r}")


def batch(name: str, size: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = {"mlp": (784,), "cnn": (1, 28, 28), "gn_cnn": (3, 32, 32)}[name]
    return torch.randn(size, *shape, generator=g), torch.randint(0, 10, (size,), generator=g)


def median_step(step: Callable[[], None], *, steps: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def _opacus_step(name: str, mode: str, x: Tensor, y: Tensor) -> Callable[[], None]:
    from opacus import PrivacyEngine

    model = build(name)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=len(y))
    criterion = nn.CrossEntropyLoss()
    engine = PrivacyEngine(accountant="rdp")
    kwargs: dict[str, Any] = dict(module=model, optimizer=opt, data_loader=loader,
                                  noise_multiplier=NOISE, max_grad_norm=CLIP,
                                  poisson_sampling=False, grad_sample_mode=mode)
    if mode == "ghost":
        model, opt, criterion, _ = engine.make_private(criterion=criterion, **kwargs)
    else:
        model, opt, _ = engine.make_private(**kwargs)

    def step() -> None:
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", choices=MODELS, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import opacus

    x, y = batch(args.model, args.batch)
    out: dict[str, Any] = {"opacus": opacus.__version__, "torch": torch.__version__,
                           "modes": {}}
    for mode in MODES:
        try:
            step = _opacus_step(args.model, mode, x, y)
            out["modes"][mode] = median_step(step, steps=args.steps, warmup=args.warmup)
        except Exception as exc:
            out["modes"][mode] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

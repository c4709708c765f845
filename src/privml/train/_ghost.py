"""Per-sample gradient norms and the clipped gradient sum, without per-sample gradients.

Theory of operation. DP-SGD needs, for a batch of B examples, the per-sample gradient norms
``n_i`` and the sum ``sum_i c_i * grad_i`` with ``c_i = min(1, C / n_i)``. Materialising
``grad_i`` for every parameter (Opacus's "hooks" mode, or ``vmap(grad)``) costs B copies of
the model. For a linear map ``z = a @ W.T`` the per-sample weight gradient is
``g_i.T @ a_i`` (``a_i`` the layer's input, ``g_i = dL_i/dz_i``, both (T, .) with T positions:
1 for a Dense layer, the output pixels for a convolution after im2col), so:

- its squared norm is ``||a_i||^2 ||g_i||^2`` when T = 1 (Li et al. 2022, "ghost norm"), or
  ``<a_i a_i^T, g_i g_i^T>`` (the Gram trick, cost T^2 (p + d)), or, when that is dearer,
  the layer's own per-sample gradient (cost T p d, memory B p d) — one layer at a time; for
  a convolution that is one grouped convolution backward with the batch as the groups;
- the clipped sum is ``sum_i c_i g_i.T a_i = (c * g).T @ a``: one more matmul over stored
  activations and output gradients ("book-keeping", Bu et al. 2023), with no second
  backward pass.

One forward pass stores each supported layer's input and output; one ``autograd.grad`` call
asks for the gradients of the summed loss with respect to those outputs only, so autograd
skips every weight-gradient matmul and does the work of a plain backward pass at most. A
GroupNorm's per-sample gradients are per-channel sums of (output gradient x normalised input),
cheap enough to keep. A layer with parameters that is none of these (LayerNorm, Embedding,
grouped convolutions, ...) takes the fallback: the per-sample gradients
of *its own* parameters come from ``torch.func.vmap`` over a per-example ``vjp`` of that
layer alone, fed with the same stored input and output gradient. BatchNorm mixes the
examples of a batch, so no per-sample gradient exists; it is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from privml._exceptions import ConfigError
from privml.train._loop import _cross_entropy, _logits

__all__ = ["clipped_grad_sum"]


@dataclass(slots=True)
class _Record:
    """What one module left during the forward pass: its input, output and gradient."""

    module: nn.Module
    name: str
    inp: Tensor
    out: Tensor
    version: int
    grad: Tensor | None = None
    # Per-parameter results, filled by the norm pass and used by the sum pass.
    per_sample: dict[str, Tensor] = field(default_factory=dict)


def _fast_conv(m: nn.Module) -> bool:
    # F.unfold needs numeric padding and ordinary (ungrouped, zero-padded) convolutions.
    return (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _own_params(m: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in m.named_parameters(recurse=False) if p.requires_grad}


def _check_model(model: nn.Module) -> dict[str, nn.Module]:
    """The modules with trainable parameters of their own, by name; refuse what DP cannot."""
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            # A tied weight gets gradient through two modules; the per-layer norms below
            # would miss the cross term between them.
            raise ConfigError(f"parameter {name!r} is shared with {seen[id(p)]!r}; "
                              "per-sample clipping does not support tied weights")
        seen[id(p)] = name
    owners: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(f"layer {name!r} is a BatchNorm, which mixes the examples of a "
                              "batch: per-sample gradients do not exist (use GroupNorm)")
        if _own_params(m):
            owners[name] = m
    if not owners:
        raise ConfigError("the model has no trainable parameters")
    return owners


def _forward(model: nn.Module, owners: dict[str, nn.Module], x: Tensor, y: Tensor
             ) -> tuple[Tensor, list[_Record]]:
    """Per-sample losses (B,) and one record per call of each parameter-owning module."""
    records: list[_Record] = []
    handles = []

    def hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if len(args) != 1 or not isinstance(args[0], Tensor) or not isinstance(out, Tensor):
                raise ConfigError(f"layer {name!r}: per-sample clipping needs a module that "
                                  "maps one tensor to one tensor")
            records.append(_Record(module, name, args[0].detach(), out, out._version))
        return hook

    for name, m in owners.items():
        handles.append(m.register_forward_hook(hook_for(name)))
    try:
        losses = _cross_entropy(_logits(model, x), y, reduction="none")
    finally:
        for h in handles:
            h.remove()
    names = [r.name for r in records]
    for r in records:
        if names.count(r.name) > 1:
            raise ConfigError(f"layer {r.name!r} runs more than once per forward pass; "
                              "per-sample clipping needs each layer used once")
        if r.out._version != r.version:
            # autograd.grad on the output would then give the gradient of the modified
            # tensor, not of the layer's output.
            raise ConfigError(f"the output of layer {r.name!r} is modified in place "
                              "(e.g. ReLU(inplace=True)); use the out-of-place op")
    missing = set(owners) - set(names)
    for name in sorted(missing):
        for pname in _own_params(owners[name]):
            raise ConfigError(f"parameter {name + '.' + pname!r} is not used through its "
                              "module's forward(); its per-sample gradient is unknown")
    return losses, records


# ----------------------------------------------------------------------- per-layer math


def _as_rows(r: _Record) -> tuple[Tensor, Tensor]:
    """(a, g) as (B, T, d) and (B, T, p): the layer is z_t = W a_t (+ b) at T positions."""
    assert r.grad is not None  # nosec B101  # narrowing: the backward hook stored it
    m = r.module
    b = r.inp.shape[0]
    if isinstance(m, nn.Linear):
        return r.inp.reshape(b, -1, r.inp.shape[-1]), r.grad.reshape(b, -1, r.grad.shape[-1])
    assert isinstance(m, nn.Conv2d)  # nosec B101  # narrowing: only the fast path's Linear or Conv2d gets here
    a = F.unfold(r.inp, m.kernel_size, dilation=m.dilation, padding=m.padding,  # type: ignore[arg-type]
                 stride=m.stride)  # (B, d, L)
    return a.transpose(1, 2), r.grad.reshape(b, r.grad.shape[1], -1).transpose(1, 2)


def use_gram(t: int, p: int, d: int) -> bool:
    """Whether the Gram trick (cost ~ T^2 (p + d)) beats the per-sample layer gradient
    (cost ~ T p d) for a layer with T positions, p outputs and d inputs per position."""
    return t > 1 and t * (p + d) < p * d


def _weight_sq_norm(r: _Record, a: Tensor, g: Tensor) -> Tensor:
    """Squared per-sample norms (B,) of the weight gradient; may store it in ``r``."""
    t, d, p = a.shape[1], a.shape[2], g.shape[2]
    if t == 1:
        return a.square().sum((1, 2)) * g.square().sum((1, 2))
    if use_gram(t, p, d):
        aa = torch.bmm(a, a.transpose(1, 2))
        gg = torch.bmm(g, g.transpose(1, 2))
        return (aa * gg).sum((1, 2))
    per = torch.bmm(g.transpose(1, 2), a)  # (B, p, d): this layer's per-sample gradients
    r.per_sample["weight"] = per
    return per.square().sum((1, 2))


def _unfold_is_faster(t: int, d: int) -> bool:
    """Whether im2col + bmm beats the grouped-convolution backward for a convolution's
    per-sample gradients: on small maps with many input channels (measured on CPU, torch
    2.13: 8x8 maps with d >= 288 run 1.2-2.8x faster through bmm; larger maps, or few
    channels, the other way round)."""
    return t <= 64 and d >= 256


def _conv_per_sample(r: _Record) -> Tensor:
    """A convolution's per-sample weight gradients (B, p, d), as one grouped convolution
    backward with the batch folded into the channels (faster than im2col + bmm on CPU)."""
    assert r.grad is not None and isinstance(r.module, nn.Conv2d)  # nosec B101  # narrowing: dispatched on module type after backward
    m, a, g = r.module, r.inp, r.grad
    b, p = a.shape[0], g.shape[1]
    weight = a.new_empty(1).expand(b * p, *m.weight.shape[1:])
    per: Tensor = torch.ops.aten.convolution_backward(
        g.reshape(1, b * p, *g.shape[2:]), a.reshape(1, -1, *a.shape[2:]), weight, None,
        list(m.stride), list(m.padding), list(m.dilation), False, [0, 0], b,
        [False, True, False])[1]
    return per.reshape(b, p, -1)


def _fast_sq_norms(r: _Record) -> Tensor:
    assert r.grad is not None  # nosec B101  # narrowing: the backward hook stored it
    params = _own_params(r.module)
    b = r.inp.shape[0]
    total = torch.zeros(b, dtype=r.inp.dtype, device=r.inp.device)
    if "bias" in params:
        gb = r.grad.reshape(b, -1, r.grad.shape[-1]).sum(1) if isinstance(
            r.module, nn.Linear) else r.grad.sum((2, 3))
        r.per_sample["bias"] = gb
        total = total + gb.square().sum(1)
    if "weight" not in params:
        return total
    if isinstance(r.module, nn.Conv2d):
        w = r.module.weight
        t, p, d = r.grad.shape[2] * r.grad.shape[3], w.shape[0], w[0].numel()
        if not use_gram(t, p, d) and not _unfold_is_faster(t, d):
            per = r.per_sample["weight"] = _conv_per_sample(r)
            return total + per.square().sum((1, 2))
    a, g = _as_rows(r)
    return total + _weight_sq_norm(r, a, g)


def _groupnorm_sq_norms(r: _Record) -> Tensor:
    """GroupNorm's per-sample gradients: dL/dgamma_c = sum_hw g * xhat, dL/dbeta_c = sum_hw g.

    One fused kernel: GroupNorm's own backward run on the batch folded into the channels
    (N = 1, C' = B*C, B*G groups), whose "weight gradient" of length B*C is then exactly the
    per-sample, per-channel one; the group statistics come from the stored input."""
    assert r.grad is not None and isinstance(r.module, nn.GroupNorm)  # nosec B101  # narrowing: dispatched on module type after backward
    m, g, x = r.module, r.grad, r.inp
    params = _own_params(m)
    b, c, groups = x.shape[0], x.shape[1], m.num_groups
    hw = x[0, 0].numel()
    _, mean, rstd = torch.ops.aten.native_group_norm(x, None, None, b, c, hw, groups, m.eps)
    _, dw, db = torch.ops.aten.native_group_norm_backward(
        g.reshape(1, b * c, hw), x.reshape(1, b * c, hw), mean.reshape(1, b * groups),
        rstd.reshape(1, b * groups), x.new_ones(b * c), 1, b * c, hw, b * groups,
        [False, "weight" in params, "bias" in params])
    if "weight" in params:
        r.per_sample["weight"] = dw.view(b, c)
    if "bias" in params:
        r.per_sample["bias"] = db.view(b, c)
    return sum((v.square().sum(1) for v in r.per_sample.values()),
               torch.zeros(b, dtype=g.dtype, device=g.device))


def _fallback_sq_norms(r: _Record) -> Tensor:
    """Per-sample gradients of this module's own parameters by vmap over a per-example vjp."""
    assert r.grad is not None  # nosec B101  # narrowing: the backward hook stored it
    m = r.module
    params = {n: p.detach() for n, p in _own_params(m).items()}

    def one(a_i: Tensor, g_i: Tensor) -> dict[str, Tensor]:
        def f(ps: dict[str, Tensor]) -> Tensor:
            out: Tensor = functional_call(m, ps, (a_i.unsqueeze(0),))
            return out
        pull = vjp(f, params)[1]
        grads: dict[str, Tensor] = pull(g_i.unsqueeze(0))[0]
        return grads

    r.per_sample = vmap(one)(r.inp, r.grad)
    b = r.inp.shape[0]
    return sum((v.reshape(b, -1).square().sum(1) for v in r.per_sample.values()),
               torch.zeros(b, dtype=r.inp.dtype, device=r.inp.device))


def _sq_norms(r: _Record) -> Tensor:
    """Squared per-sample gradient norms (B,) of this module's own parameters."""
    if isinstance(r.module, nn.Linear) or _fast_conv(r.module):
        return _fast_sq_norms(r)
    if isinstance(r.module, nn.GroupNorm):
        return _groupnorm_sq_norms(r)
    return _fallback_sq_norms(r)


def _clipped_sum(r: _Record, c: Tensor) -> dict[str, Tensor]:
    """sum_i c_i * grad_i for this module's own parameters, by their short names."""
    m = r.module
    out: dict[str, Tensor] = {}
    shapes = {n: p.shape for n, p in _own_params(m).items()}
    for pname, per in r.per_sample.items():
        out[pname] = torch.tensordot(c, per, dims=1).reshape(shapes[pname])
    if "weight" in shapes and "weight" not in out and isinstance(m, nn.Conv2d):
        # Book-keeping for a convolution: its own weight-gradient kernel on the scaled
        # output gradient (several times faster than im2col + matmul on CPU).
        assert r.grad is not None  # nosec B101  # narrowing: the backward hook stored it
        out["weight"] = torch.ops.aten.convolution_backward(
            r.grad * c.view(-1, *([1] * (r.grad.dim() - 1))), r.inp, m.weight.detach(), None,
            list(m.stride), list(m.padding), list(m.dilation), False, [0, 0], 1,
            [False, True, False])[1]
    elif "weight" in shapes and "weight" not in out:
        a, g = _as_rows(r)
        # Book-keeping: sum_i c_i g_i^T a_i as one matmul over every (sample, position).
        gc = (g * c.view(-1, 1, 1)).reshape(-1, g.shape[2])
        out["weight"] = (gc.T @ a.reshape(-1, a.shape[2])).reshape(shapes["weight"])
    return out


# ----------------------------------------------------------------------- the public entry


def clip_factors(norms: Tensor, max_grad_norm: float) -> Tensor:
    """min(1, C / n_i), written as C / max(n_i, C): exactly 1 below C, no 0/0 at n_i = 0."""
    return max_grad_norm / torch.clamp(norms, min=max_grad_norm)


def clipped_step(model: nn.Module, x: Tensor, y: Tensor, max_grad_norm: float
                 ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """(clipped gradient sum by parameter name, per-sample norms, per-sample losses)."""
    owners = _check_model(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if x.shape[0] == 0:
        zeros = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
        return zeros, x.new_zeros(0), x.new_zeros(0)
    losses, records = _forward(model, owners, x, y)
    outs = [r.out for r in records]
    grads = torch.autograd.grad(losses.sum(), outs, allow_unused=True)
    sq = torch.zeros(x.shape[0], dtype=losses.dtype, device=losses.device)
    for r, g in zip(records, grads, strict=True):
        r.grad = torch.zeros_like(r.out) if g is None else g
        sq = sq + _sq_norms(r)
    norms = sq.sqrt()
    c = clip_factors(norms, max_grad_norm)
    summed: dict[str, Tensor] = {}
    for r in records:
        prefix = f"{r.name}." if r.name else ""
        for pname, t in _clipped_sum(r, c).items():
            summed[prefix + pname] = t
    return {n: summed[n] for n in names}, norms.detach(), losses.detach()


def clipped_grad_sum(model: nn.Module, x: Tensor, y: Tensor, *, max_grad_norm: float
                     ) -> tuple[dict[str, Tensor], Tensor]:
    """The sum over the batch of per-sample gradients of the cross-entropy, each clipped to
    L2 norm ``max_grad_norm`` (by trainable parameter name), and the per-sample total
    gradient norms before clipping, shape (B,).

    Linear and Conv2d layers never materialise a full per-sample gradient set (see the module
    docstring); the model's parameter ``.grad`` fields are left untouched. Raises
    :class:`~privml.ConfigError` for models per-sample clipping cannot handle (BatchNorm,
    tied weights, in-place ops on a layer's output, a layer called twice).
    """
    if not (isinstance(max_grad_norm, int | float) and not isinstance(max_grad_norm, bool)
            and max_grad_norm > 0 and max_grad_norm < float("inf")):
        raise ConfigError(f"max_grad_norm must be a finite number > 0, got {max_grad_norm!r}")
    summed, norms, _ = clipped_step(model, x, y, float(max_grad_norm))
    return summed, norms

"""Layer operations with one set of weights per episode, for the episode-batched fast path.

In a batched outer step every episode has its own fast weights (``theta - alpha * grad_e``). A
tuned weight is therefore a stacked tensor with a leading episode axis ``[E, ...]``, while a frozen
weight stays shared (no episode axis). Activations are laid out ``[E, rows, features]``. Each
function here accepts both kinds of weight, so the batched network is written once for both.

Batch normalisation in train mode uses per-episode batch statistics (the reference path runs one
episode per forward call). The statistics are handed to a :class:`PassState`, which replays the
running-average updates in the order the reference path would have made them, so the BatchNorm
buffers after a batched step equal those after the reference step.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ W^T + b`` for ``x`` ``[E, rows, in]`` and a shared ``[out, in]`` or per-episode ``[E, out, in]`` W.

    Examples
    --------
    >>> x, w = torch.randn(3, 4, 5), torch.randn(3, 2, 5)
    >>> bool(torch.allclose(linear(x, w)[1], x[1] @ w[1].T, atol=1e-6))
    True
    """
    if weight.dim() == 2:
        return nn.functional.linear(x, weight, bias)
    if weight.size(0) == 1:
        return nn.functional.linear(x, weight[0], None if bias is None else bias[0])
    out = torch.bmm(x, weight.transpose(1, 2))
    return out if bias is None else out + bias.unsqueeze(1)


def per_episode(vector: torch.Tensor) -> torch.Tensor:
    """Broadcast a shared ``[C]`` or per-episode ``[E, C]`` vector against ``[E, rows, C]``."""
    return vector if vector.dim() == 1 else vector.unsqueeze(1)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis with a shared or per-episode affine map."""
    if weight.dim() == 1 or weight.size(0) == 1:  # one affine map for all rows: the fused kernel
        return nn.functional.layer_norm(x, x.shape[-1:], weight.reshape(-1), bias.reshape(-1), eps)
    normed = nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return normed * per_episode(weight) + per_episode(bias)


class PassState:
    """What one batched forward pass needs besides tensors: a dropout generator and a BatchNorm log.

    * ``generator``: the random generator of every dropout mask of the pass. Seeded per pass, it makes
      a step's result independent of the order in which worker threads run the passes.
    * BatchNorm statistics: the reference path calls the network once per episode and forward pass,
      in the order ``for episode: for forward pass (inner steps, then outer)``, and each call moves a
      BatchNorm's running mean to ``(1 - m) r + m s``. Train-mode statistics are recorded here as
      ``[E, C]`` tensors and :meth:`apply` replays that sequence.
    """

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        self.generator = generator
        self._stats: Dict[nn.Module, List[tuple]] = {}

    def record(self, module: nn.Module, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self._stats.setdefault(module, []).append((mean.detach(), unbiased_var.detach()))

    def copy(self) -> "PassState":
        """A state with the same generator and records (a CUDA graph's replay refreshes the recorded
        tensors in place, so each replay's caller applies a copy)."""
        state = PassState(self.generator)
        state._stats = {module: list(records) for module, records in self._stats.items()}
        return state

    @torch.no_grad()
    def apply(self) -> None:
        """Update every recorded module's running statistics, then forget the records."""
        for module, passes in self._stats.items():
            if not module.track_running_stats or module.running_mean is None:
                continue
            means = torch.stack([m for m, _ in passes], dim=1).flatten(0, 1)     # [E * passes, C]
            variances = torch.stack([v for _, v in passes], dim=1).flatten(0, 1)
            steps = means.size(0)
            m = module.momentum
            decay = (1 - m) ** torch.arange(steps - 1, -1, -1, dtype=means.dtype, device=means.device)
            module.running_mean.mul_((1 - m) ** steps).add_(m * (decay[:, None] * means).sum(0))
            module.running_var.mul_((1 - m) ** steps).add_(m * (decay[:, None] * variances).sum(0))
            module.num_batches_tracked.add_(steps)
        self._stats.clear()


def batch_norm(x: torch.Tensor, module: nn.modules.batchnorm._BatchNorm, weight: torch.Tensor,
               bias: torch.Tensor, training: bool, state: Optional[PassState] = None,
               row_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """BatchNorm of ``x`` ``[E, rows, C]`` with statistics per episode over its rows.

    Parameters
    ----------
    module: BatchNorm module
        Supplies ``eps`` and the running statistics (eval mode); ``state`` records the batch statistics.
    weight, bias: Tensor
        Affine parameters, shared ``[C]`` or per episode ``[E, C]``.
    training: bool
        Batch statistics (True) or running statistics (False).
    row_weight: Tensor ``[E or 1, rows]``, optional
        How many rows of the reference batch each row stands for (0 for padding rows; 2 for one
        of a symmetric pair of rows). Default: every row counts once.
    """
    if x.size(0) == 1 and row_weight is None and weight.dim() == 1:
        # one episode with shared weights: the fused kernel (its statistics go to the pass state, so that
        # episodes computed in parallel threads still update the running statistics in reference order)
        if not training:
            return nn.functional.batch_norm(x[0], module.running_mean, module.running_var, weight, bias,
                                            False, 0.0, module.eps).unsqueeze(0)
        out, mean, invstd = torch.native_batch_norm(x[0], weight, bias, None, None, True, 0.0, module.eps)
        if state is not None:
            n = x.size(1)
            state.record(module, mean.unsqueeze(0), ((invstd.pow(-2) - module.eps) * n / max(n - 1, 1)).unsqueeze(0))
        return out.unsqueeze(0)
    if not training:
        scale = weight * torch.rsqrt(module.running_var + module.eps)
        shift = bias - module.running_mean * scale
        return x * per_episode(scale) + per_episode(shift)
    if row_weight is None:
        count = x.size(1)
        mean = x.mean(1)
        var = (x - mean.unsqueeze(1)).pow(2).mean(1)
        correction = max(count - 1, 1)                                           # a Python number: no copy
    else:
        w = row_weight.unsqueeze(-1)
        count = row_weight.sum(1, keepdim=True)                                  # [E, 1]
        mean = (w * x).sum(1) / count
        var = (w * (x - mean.unsqueeze(1)).pow(2)).sum(1) / count
        correction = (count - 1).clamp(min=1)
    if state is not None:
        state.record(module, mean, var * count / correction)
    normed = (x - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + module.eps)
    return normed * per_episode(weight) + per_episode(bias)


def dropout(x: torch.Tensor, p: float, training: bool, state: Optional[PassState] = None) -> torch.Tensor:
    """``nn.functional.dropout`` drawing its mask from ``state.generator``."""
    if not training or p == 0:
        return x
    keep = torch.empty_like(x).bernoulli_(1 - p, generator=state.generator if state else None)
    return x * keep.div_(1 - p)


def dropout_rows(x: torch.Tensor, p: float, training: bool, state: Optional[PassState] = None) -> torch.Tensor:
    """Dropout2d of the reference's ``[1, C, n, n]`` pair maps: whole channels per episode."""
    if not training or p == 0:
        return x
    keep = torch.empty(x.size(0), 1, x.size(2), device=x.device, dtype=x.dtype)
    keep.bernoulli_(1 - p, generator=state.generator if state else None)
    return x * keep.div_(1 - p)

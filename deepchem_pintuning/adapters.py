"""MP-Adapters: bottleneck adapters after each message-passing layer, fed with in-context vectors.

Paper (Pin-Tuning, Eq. 7), for the conv output ``h`` of layer ``l``::

    h~ = LayerNorm_l( h + Up_l( ReLU( Down_l( h || c_m || c_p ) ) ) )

with bottleneck width ``d2`` (50), molecule context ``c_m`` (the molecule's node in the episode's
context graph) and property context ``c_p`` (the target-property node), both broadcast to every
atom of the molecule. ``h~`` then goes through the encoder's frozen batch norm.

Two wirings are offered:

* ``context_layers="all"``, ``context_projection="dense"`` (paper): every layer receives the
  context, one dense down-projection of the concatenation ``[h, c_m, c_p]`` (``3d -> d2``);
* ``context_layers="first"``, ``context_projection="separate"`` (official code): only layer 0
  receives context, through three separate ``d -> d2`` projections whose outputs are concatenated
  (a block-diagonal ``3d -> 3 d2`` map), other layers are plain ``d -> d2 -> d`` adapters.

All adapter weights and biases start uniform in ``[-init_range, init_range]`` (0.01), so
``Up(ReLU(Down(.)))`` is close to zero. The adapted encoder nevertheless starts near the pre-trained
one only without the LayerNorms: with them (``layer_norm=True``, the paper's and the official code's
setting) each layer's atom vectors are renormalised ahead of the frozen BatchNorm, whose statistics
were collected without that step, and the encoder's output moves by about its own norm before any
training (``test_adapters_start_near_identity_but_their_layer_norms_do_not``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class MPAdapter(nn.Module):
    """One bottleneck adapter: ``h + Up(ReLU(Down(inputs)))``.

    Parameters
    ----------
    dim: int
        Width of the encoder (d).
    bottleneck: int
        Bottleneck width (d2).
    with_context: bool
        Whether ``c_m`` and ``c_p`` (each of width ``dim``) are inputs too.
    context_projection: str
        ``"dense"`` (one ``3d -> d2`` map) or ``"separate"`` (three ``d -> d2`` maps, concatenated).
    init_range: float
        Half-width of the uniform initialisation.

    Examples
    --------
    >>> adapter = MPAdapter(dim=8, bottleneck=2, with_context=True)
    >>> h, c = torch.randn(5, 8), torch.randn(5, 8)
    >>> adapter(h, c, c).shape
    torch.Size([5, 8])
    """

    def __init__(self, dim: int, bottleneck: int, with_context: bool = False,
                 context_projection: str = "dense", init_range: float = 0.01):
        super().__init__()
        if context_projection not in ("dense", "separate"):
            raise ValueError(f"context_projection must be 'dense' or 'separate', got {context_projection!r}")
        self.with_context = with_context
        self.separate = with_context and context_projection == "separate"
        if self.separate:
            self.down = nn.ModuleList([nn.Linear(dim, bottleneck) for _ in range(3)])
            hidden = 3 * bottleneck
        else:
            self.down = nn.Linear(3 * dim if with_context else dim, bottleneck)
            hidden = bottleneck
        self.up = nn.Linear(hidden, dim)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -init_range, init_range)

    def forward(self, h: torch.Tensor, mol_context: Optional[torch.Tensor] = None,
                prop_context: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.with_context:
            if mol_context is None or prop_context is None:
                raise ValueError("this adapter needs the molecule and property context")
            parts = (h, mol_context, prop_context)
            if self.separate:
                z = torch.cat([down(x) for down, x in zip(self.down, parts)], dim=-1)
            else:
                z = self.down(torch.cat(parts, dim=-1))
        else:
            z = self.down(h)
        return h + self.up(torch.relu(z))


class MPAdapterStack(nn.Module):
    """The MP-Adapters and LayerNorms of every layer of an encoder.

    Call :meth:`hook` to get the per-layer function that :meth:`PretrainedGNN.embed` applies to
    each conv output.

    Parameters
    ----------
    num_layer, dim, bottleneck: int
        Encoder depth and width, adapter bottleneck (d2).
    context_layers: str
        ``"all"`` (paper), ``"first"`` (official code) or ``"none"`` (ablation "w/o context").
    context_projection: str
        ``"dense"`` or ``"separate"``, see :class:`MPAdapter`.
    layer_norm: bool
        Apply a LayerNorm after each adapter (ablation "w/o LayerNorm" when False).

    Examples
    --------
    >>> stack = MPAdapterStack(num_layer=5, dim=300, bottleneck=50, context_layers="first",
    ...                        context_projection="separate")
    >>> sum(p.numel() for p in stack.parameters())  # official code: 214,850
    214850
    """

    def __init__(self, num_layer: int, dim: int, bottleneck: int = 50, context_layers: str = "all",
                 context_projection: str = "dense", layer_norm: bool = True, init_range: float = 0.01):
        super().__init__()
        if context_layers not in ("all", "first", "none"):
            raise ValueError(f"context_layers must be 'all', 'first' or 'none', got {context_layers!r}")
        self.uses_context = [context_layers == "all" or (context_layers == "first" and layer == 0)
                             for layer in range(num_layer)]
        self.adapters = nn.ModuleList([
            MPAdapter(dim, bottleneck, with_context, context_projection, init_range)
            for with_context in self.uses_context])
        self.layer_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_layer)]) if layer_norm else None

    def hook(self, atom_mol_context: Optional[torch.Tensor], atom_prop_context: Optional[torch.Tensor]):
        """Per-layer function for :meth:`PretrainedGNN.embed`, with contexts given per atom."""

        def apply(layer: int, h: torch.Tensor) -> torch.Tensor:
            if self.uses_context[layer]:
                h = self.adapters[layer](h, atom_mol_context, atom_prop_context)
            else:
                h = self.adapters[layer](h)
            return self.layer_norms[layer](h) if self.layer_norms is not None else h

        return apply

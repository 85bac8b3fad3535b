"""Sparse matrices of the fast path that store their transpose, so no backward rebuilds or sorts one.

The fast path moves rows around with constant matrices: message passing (the graph's adjacency),
mean pooling of atoms into molecules, broadcasting a molecule's vector to its atoms, and embedding
lookups (one-hot rows). Written as ``torch.sparse.mm(A, X)``, the backward forms ``A^T`` anew and,
on a GPU, coalesces it at every call (a sort and a host synchronisation); written as advanced
indexing (``table[index]``), the backward is PyTorch's sort-based index accumulation, slowest where
many indices repeat (most atoms are carbons). A :class:`SparseOperator` builds the matrix and its
transpose once per batch, both already coalesced (ordered by a device sort: nothing is read back to
the host), and its product differentiates into a product with the stored transpose, itself
differentiable again (second-order MAML differentiates the inner-loop gradient).

A one-hot product equals the indexing it replaces exactly: each output row is ``1.0 * x`` plus
exact zeros.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def _coalesced(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """COO matrix of unique entries ``(rows, cols)``, marked coalesced after sorting them (row-major)."""
    order = torch.argsort(rows * shape[1] + cols)
    return torch.sparse_coo_tensor(torch.stack([rows[order], cols[order]]), values[order], shape,
                                   is_coalesced=True, check_invariants=False)


class _Product(torch.autograd.Function):
    """``matrix @ x`` whose gradient is ``transpose @ grad``, recorded again when a graph is built."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, matrix: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
        ctx.matrices = (matrix, transpose)
        return torch.sparse.mm(matrix, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        matrix, transpose = ctx.matrices
        return _Product.apply(grad, transpose, matrix), None, None


class SparseOperator:
    """A constant sparse matrix ``[n_rows, n_cols]`` with unique entries, applied as ``operator @ x``.

    Parameters
    ----------
    rows, cols: Tensor [nnz]
        Entry positions; no position may occur twice.
    values: Tensor [nnz], optional
        Entry values (default all ones).
    shape: (int, int)
    symmetric: bool
        The matrix equals its transpose entry for entry (then only one copy is stored).

    Examples
    --------
    >>> table = torch.randn(4, 3, requires_grad=True)
    >>> index = torch.tensor([2, 0, 2])
    >>> picked = SparseOperator.one_hot(index, 4) @ table
    >>> bool(torch.equal(picked, table[index]))
    True
    >>> picked.sum().backward()
    >>> table.grad[:, 0].tolist()
    [1.0, 0.0, 2.0, 0.0]
    >>> stacked = torch.arange(8.0).view(4, 2)              # two tables of two rows
    >>> (SparseOperator.one_hot(torch.tensor([[1], [0]]), 2, groups=2) @ stacked).tolist()
    [[2.0, 3.0], [4.0, 5.0]]
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: Optional[torch.Tensor],
                 shape: Tuple[int, int], symmetric: bool = False):
        if values is None:
            values = torch.ones(rows.numel(), device=rows.device)
        self.shape = shape
        self.matrix = _coalesced(rows, cols, values, shape)
        self.transpose_matrix = self.matrix if symmetric else _coalesced(cols, rows, values, (shape[1], shape[0]))

    @classmethod
    def one_hot(cls, index: torch.Tensor, n_cols: int, groups: int = 1) -> "SparseOperator":
        """Row ``i`` picks row ``index[i]``: ``one_hot(index, n) @ x == x[index]``.

        With ``groups > 1``, ``index`` ``[groups, n]`` picks from a stack of ``groups`` tables of
        ``n_cols`` rows each, row ``g`` of ``index`` from table ``g`` (column ``g * n_cols + index``).
        """
        if groups > 1:
            index = index + torch.arange(groups, device=index.device).unsqueeze(1) * n_cols
        index = index.reshape(-1)
        return cls(torch.arange(index.numel(), device=index.device), index, None, (index.numel(), n_cols * groups))

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _Product.apply(x, self.matrix, self.transpose_matrix)

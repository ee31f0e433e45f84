"""Sums over triplets without [T, C] intermediates, differentiable to any order.

DimeNet++'s triplet message is x_kj ⊙ (W s_t), with s_t the basis embedding of
triplet t (width B = ``basis_emb_size``, 8) and W [C, B]. Summed over the
triplets of each edge ji it is a sparse product with a rank-B weight:

    spmm(s, x, W)[r, c]   = Σ_{t: row t = r}  Σ_b s[t, b] W[c, b] x[col t, c]     [R, C]

Autograd over the plain form keeps [T, C] tensors and, with forces trained
(a second derivative), runs about nine [T, C] products per block; those
dominate a DimeNet++ step. Here the sum is B `embedding_bag` calls (fused
gather-scale-sums over x, which stays in cache), and its derivatives are three more operations of the same
kind, which differentiate into each other, so no derivative order needs a
[T, C] tensor:

    spmm_t(s, a, W)[e, c] = Σ_{t: col t = e}  Σ_b s[t, b] W[c, b] a[row t, c]     [E, C]
    sddmm(a, x, W)[t, b]  = Σ_c a[row t, c] x[col t, c] W[c, b]                   [T, B]
    outer(s, a, x)[c, b]  = Σ_t s[t, b] a[row t, c] x[col t, c]                   [C, B]

    d spmm   = (sddmm(g, x, W), spmm_t(s, g, W), outer(s, g, x))      for (s, x, W)
    d spmm_t = (sddmm(a, g, W), spmm(s, g, W),   outer(s, a, g))      for (s, a, W)
    d sddmm  = (spmm(g, x, W),  spmm_t(g, a, W), outer(g, a, x))      for (a, x, W)
    d outer  = (sddmm(a, x, g), spmm(s, x, g),   spmm_t(s, a, g))     for (s, a, x)

DimeNet's bilinear aggregate Σ_t s[t, b] x[col t, :] is B such products of
rank 1 (column b of s, W a column of ones), one per bilinear index b.

An empty graph (no triplets) gives zeros. sddmm and outer run over chunks of triplets, so their [chunk, C] products
stay in cache.

TorchScript cannot compile autograd Functions. Compiled (`geognn.export`), the
four operations run the same forward computations without them (spmm and
spmm_t the same bags, sddmm and outer unchunked), out of place, and autograd
differentiates those: one derivative, which is what an exported model needs
(forces), through [T, C] tensors.
"""

# No `from __future__ import annotations`: TorchScript reads TripletPattern's field
# types, which must then be types, not strings.
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK = 8192  # triplets per chunk in sddmm / outer


class TripletPattern(NamedTuple):
    """Triplets t = (row t, col t): row = the receiving edge ji (sorted), col = the sending edge kj.

    Build it once per graph with `triplet_pattern`; every block reuses it.
    """

    row: Tensor  # [T] sorted
    col: Tensor  # [T]
    num_rows: int  # R
    num_cols: int  # E
    row_offsets: Tensor  # [R] start of each row's triplets
    col_order: Tensor  # [T] triplets sorted by col (stable)
    col_rows: Tensor  # [T] row[col_order]
    col_offsets: Tensor  # [E] start of each col's triplets in col_order


def triplet_pattern(row: Tensor, col: Tensor, num_rows: int, num_cols: int) -> TripletPattern:
    """Pattern of triplets ``row`` [T] (sorted: `geognn.graph.triplets` returns idx_ji sorted) and ``col`` [T]."""
    if row.numel() > 1 and bool((row[1:] < row[:-1]).any()):
        raise ValueError("triplet rows must be sorted (idx_ji as geognn.graph.triplets returns it)")
    if row.numel() > 0 and (int(row[-1]) >= num_rows or int(col.max()) >= num_cols
                            or int(col.min()) < 0 or int(row[0]) < 0):
        raise ValueError(f"triplet indices out of range: rows must lie in [0, {num_rows}), cols in [0, {num_cols})")
    row_count = torch.bincount(row, minlength=num_rows)
    col_count = torch.bincount(col, minlength=num_cols)
    col_order = torch.argsort(col, stable=True)
    return TripletPattern(
        row, col, num_rows, num_cols,
        row_offsets=torch.cumsum(row_count, 0) - row_count,
        col_order=col_order,
        col_rows=row[col_order],
        col_offsets=torch.cumsum(col_count, 0) - col_count,
    )


def _bags(index: Tensor, table: Tensor, offsets: Tensor, weights: Tensor, W: Tensor) -> Tensor:
    # One weighted bag per rank b (each reads the [*, C] table from cache), scaled by W[:, b].
    out = None
    for b in range(W.shape[1]):
        bag = F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights[b])
        out = bag.mul_(W[:, b]) if out is None else out.addcmul_(bag, W[:, b])
    return out


def _spmm(s, x, W, p):
    return _bags(p.col, x, p.row_offsets, s.T.contiguous(), W)


def _spmm_t(s, a, W, p):
    return _bags(p.col_rows, a, p.col_offsets, s.index_select(0, p.col_order).T.contiguous(), W)


def _products(a, x, p):
    """(start, a[row] ⊙ x[col]) for consecutive chunks of triplets, [chunk, C]."""
    for start in range(0, p.row.numel(), _CHUNK):
        rows, cols = p.row[start : start + _CHUNK], p.col[start : start + _CHUNK]
        yield start, a.index_select(0, rows).mul_(x.index_select(0, cols))  # index_select: ~3x a[rows] on CPU


def _sddmm(a, x, W, p):
    out = a.new_empty(p.row.numel(), W.shape[1])
    W = W.to(a.dtype)  # mixed precision: weights may be wider than activations
    for start, product in _products(a, x, p):
        torch.mm(product, W, out=out[start : start + product.shape[0]])
    return out


def _outer(s, a, x, p):
    out = a.new_zeros(a.shape[1], s.shape[1])
    s = s.to(a.dtype)
    for start, product in _products(a, x, p):
        out.addmm_(product.T, s[start : start + product.shape[0]])
    return out


def _operation(name: str, compute, derivatives):
    """An autograd Function ``(u, v, w, pattern) -> compute(u, v, w, pattern)``.

    ``derivatives[k](g, u, v, w, p)`` is the gradient for input k, written with
    the public operations, so every derivative is differentiable again.
    """

    def forward(ctx, u, v, w, pattern):
        ctx.save_for_backward(u, v, w)
        ctx.pattern = pattern
        return compute(u, v, w, pattern)

    def backward(ctx, g):
        u, v, w = ctx.saved_tensors
        grads = [d(g, u, v, w, ctx.pattern) if need else None for d, need in zip(derivatives, ctx.needs_input_grad)]
        return (*grads, None)

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


# The table of the module docstring: each derivative is one of the four operations.
_SpMM = _operation("_SpMM", _spmm, (
    lambda g, s, x, W, p: sddmm(g, x, W, p),
    lambda g, s, x, W, p: spmm_t(s, g, W, p),
    lambda g, s, x, W, p: outer(s, g, x, p),
))
_SpMMT = _operation("_SpMMT", _spmm_t, (
    lambda g, s, a, W, p: sddmm(a, g, W, p),
    lambda g, s, a, W, p: spmm(s, g, W, p),
    lambda g, s, a, W, p: outer(s, a, g, p),
))
_SDDMM = _operation("_SDDMM", _sddmm, (
    lambda g, a, x, W, p: spmm(g, x, W, p),
    lambda g, a, x, W, p: spmm_t(g, a, W, p),
    lambda g, a, x, W, p: outer(g, a, x, p),
))
_Outer = _operation("_Outer", _outer, (
    lambda g, s, a, x, p: sddmm(a, x, g, p),
    lambda g, s, a, x, p: spmm(s, x, g, p),
    lambda g, s, a, x, p: spmm_t(s, a, g, p),
))


def spmm(s: Tensor, x: Tensor, W: Tensor, pattern: TripletPattern) -> Tensor:
    """Σ_{t: row t = r} Σ_b s[t, b] W[c, b] x[col t, c]: s [T, B], x [E, C], W [C, B] -> [R, C]."""
    if torch.jit.is_scripting():
        return _plain_spmm(s, x, W, pattern)
    else:
        return _SpMM.apply(s, x, W, pattern)


def spmm_t(s: Tensor, a: Tensor, W: Tensor, pattern: TripletPattern) -> Tensor:
    """Σ_{t: col t = e} Σ_b s[t, b] W[c, b] a[row t, c]: s [T, B], a [R, C], W [C, B] -> [E, C]."""
    if torch.jit.is_scripting():
        return _plain_spmm_t(s, a, W, pattern)
    else:
        return _SpMMT.apply(s, a, W, pattern)


def sddmm(a: Tensor, x: Tensor, W: Tensor, pattern: TripletPattern) -> Tensor:
    """Σ_c a[row t, c] x[col t, c] W[c, b]: a [R, C], x [E, C], W [C, B] -> [T, B]."""
    if torch.jit.is_scripting():
        return _plain_sddmm(a, x, W, pattern)
    else:
        return _SDDMM.apply(a, x, W, pattern)


def outer(s: Tensor, a: Tensor, x: Tensor, pattern: TripletPattern) -> Tensor:
    """Σ_t s[t, b] a[row t, c] x[col t, c]: s [T, B], a [R, C], x [E, C] -> [C, B]."""
    if torch.jit.is_scripting():
        return _plain_outer(s, a, x, pattern)
    else:
        return _Outer.apply(s, a, x, pattern)


# The compiled forms (TorchScript takes the branches above): the same computations as the
# fused forwards, out of place and unchunked, so that autograd differentiates them.


def _plain_bags(index: Tensor, table: Tensor, offsets: Tensor, weights: Tensor, W: Tensor) -> Tensor:
    W = W.to(table.dtype)
    out = F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights[0]) * W[:, 0]
    for b in range(1, W.shape[1]):
        bag = F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights[b])
        out = torch.addcmul(out, bag, W[:, b])
    return out


def _plain_spmm(s: Tensor, x: Tensor, W: Tensor, p: TripletPattern) -> Tensor:
    return _plain_bags(p.col, x, p.row_offsets, s.t().to(x.dtype).contiguous(), W)


def _plain_spmm_t(s: Tensor, a: Tensor, W: Tensor, p: TripletPattern) -> Tensor:
    weights = s.index_select(0, p.col_order).t().to(a.dtype).contiguous()
    return _plain_bags(p.col_rows, a, p.col_offsets, weights, W)


def _plain_sddmm(a: Tensor, x: Tensor, W: Tensor, p: TripletPattern) -> Tensor:
    return torch.mm(a.index_select(0, p.row) * x.index_select(0, p.col), W.to(a.dtype))


def _plain_outer(s: Tensor, a: Tensor, x: Tensor, p: TripletPattern) -> Tensor:
    return torch.mm((a.index_select(0, p.row) * x.index_select(0, p.col)).t(), s.to(a.dtype))


__all__ = ["TripletPattern", "triplet_pattern", "spmm", "spmm_t", "sddmm", "outer"]

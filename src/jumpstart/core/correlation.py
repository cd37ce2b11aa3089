"""Correlation between hidden units, and the decorrelation penalties of
Dynamic Neural Diversification (Kovalenko, Kordik, Friedjungova, 2021).

Only the abstract and a short follow-up of that paper are public, and no
code: everything here is the reconstruction of
``../shared/papers/neural-diversification.md``, named as it is named there.
Notation: a layer's weights ``W`` ``(H, D)`` (row ``i`` = unit ``i``; a conv
kernel flattened to its row), batch activations ``A`` ``(B, H)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: input dimension below which rows are compared by plain cosine with the bias
#: (centred rows of 2 or 3 numbers carry almost no information: in 2-D every
#: centred row is a multiple of (1, -1))
SMALL_FAN_IN = 4
#: a row or unit whose norm or standard deviation is at most this is constant
CONSTANT = 1e-12


def weight_rows(weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The rows whose correlation :func:`row_correlation` measures, ``(H, D')``:
    for ``D >= SMALL_FAN_IN`` each row of ``weight`` (flattened) centred by its
    own mean; for smaller ``D`` the raw row with the bias appended (cosine)."""
    w = weight.reshape(weight.shape[0], -1)
    if w.shape[1] >= SMALL_FAN_IN:
        return w - w.mean(dim=1, keepdim=True)
    return torch.cat([w, bias[:, None]], dim=1) if bias is not None else w


def row_correlation(weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``(H, H)`` correlation of a layer's weight rows: Pearson (centred rows)
    when the fan-in is at least :data:`SMALL_FAN_IN`, else the cosine of the
    rows with their bias (reconstruction, see the module docstring). A
    constant row (norm <= :data:`CONSTANT`) has correlation 0 with every
    other row (use :func:`constant_rows` to tell them apart)."""
    rows = weight_rows(weight, bias)
    norm = rows.norm(dim=1)
    unit = rows / norm.clamp_min(CONSTANT)[:, None]
    return unit @ unit.T


def constant_rows(weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``(H,)`` bool: rows whose :func:`weight_rows` norm is at most :data:`CONSTANT`."""
    return weight_rows(weight, bias).norm(dim=1) <= CONSTANT


def _off_diagonal(matrix: Tensor) -> Tensor:
    h = matrix.shape[0]
    return matrix[~torch.eye(h, dtype=torch.bool, device=matrix.device)]


def weight_corr(weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``weight_corr`` penalty: mean over ``i != j`` of ``rho_ij^2``, the
    squared :func:`row_correlation` of the weight rows. 0-dim; 0 for one unit."""
    if weight.shape[0] < 2:
        return weight.sum() * 0
    return _off_diagonal(row_correlation(weight, bias)).pow(2).mean()


def decov(activations: Tensor) -> Tensor:
    """DeCov penalty (Cogswell et al., ICLR 2016, eq. (2)):
    ``0.5 * (||C||_F^2 - ||diag C||^2)`` with ``C`` the batch covariance
    ``(1/B) (A - mean A)^T (A - mean A)`` of activations ``A`` ``(B, H)``. 0-dim."""
    centred = activations - activations.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / activations.shape[0]
    return 0.5 * (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum())


def ncl(activations: Tensor) -> Tensor:
    """``ncl`` penalty (negative-correlation learning carried to hidden units;
    reconstruction): minus the mean over samples of the squared spread of
    the activations across units, ``-mean_b mean_i (a_bi - mean_j a_bj)^2``,
    for ``A`` ``(B, H)``. 0-dim; minimizing it spreads units apart."""
    return -(activations - activations.mean(dim=1, keepdim=True)).pow(2).mean()


def logdet(weight: Tensor, bias: Tensor | None = None, *, eps: float = 1e-4) -> Tensor:
    """``logdet`` penalty: ``-log det(R_W + eps I)``, ``R_W`` the
    :func:`row_correlation` of the weight rows (motivated by the follow-up's
    determinant of the correlation matrix). Meaningful when ``H <= D - 1``
    (else ``R_W`` is singular and the value is about ``-H log eps``). 0-dim."""
    r = row_correlation(weight, bias)
    return -torch.logdet(r + eps * torch.eye(r.shape[0], dtype=r.dtype, device=r.device))


def correlation_stats(corr: Tensor, keep: Tensor) -> tuple[float, float]:
    """Mean and max ``|rho_ij|`` over ``i != j`` among the units ``keep``
    (``(H,)`` bool); NaN when fewer than two are kept (undefined)."""
    sub = corr[keep][:, keep]
    if sub.shape[0] < 2:
        return float("nan"), float("nan")
    off = _off_diagonal(sub).abs()
    return float(off.mean()), float(off.max())


__all__ = ["CONSTANT", "SMALL_FAN_IN", "constant_rows", "correlation_stats", "decov", "logdet",
           "ncl", "row_correlation", "weight_corr", "weight_rows"]

"""The penalty that keeps continuous covariates out of a VAE's latent space.

Conditioning the encoder and decoder on a covariate lets the network explain it, but nothing
stops ``z`` from holding it too: on a planted effect half of it stayed. This minibatch
statistic is about 0 when ``z`` and the covariates are independent (in any way, not only
linearly) and is added to the loss. BENCHMARKS.md ("Covariates besides the batch") compares
it with a correlation penalty and a plain HSIC.
"""
from __future__ import annotations

import math

import torch

from .._validate import InputError
from ._distances import sq_distances

#: widths of the latent kernel, as multiples of the median squared distance: small ones, so
#: the kernel sees the covariate within each cell type, not only across the types (at the
#: median alone, a 15-NN regression still read R^2 ~0.25 of a planted score from z)
Z_SCALES = (0.02, 0.1)


def check_covariate_independence_weight(weight) -> None:
    """Refuse a ``covariate_independence_weight`` that is not a finite number >= 0 (InputError)."""
    if (isinstance(weight, bool) or not isinstance(weight, (int, float))
            or not math.isfinite(weight) or weight < 0):
        raise InputError(f"covariate_independence_weight={weight!r}; choose a finite number >= 0 (0: no penalty, "
                         "the continuous covariates only condition the network).")


def _median_rbf(t: torch.Tensor, scales=(1.0,)) -> torch.Tensor:
    """Mean of RBF kernels of the rows of ``t``, their squared widths ``scales`` times the
    median squared distance between the rows (held fixed in the gradient)."""
    d2 = sq_distances(t)
    off = d2.detach()[~torch.eye(len(t), dtype=torch.bool, device=t.device)]
    median = off.median().clamp_min(1e-6)
    return sum(torch.exp(-d2 / (s * median)) for s in scales) / len(scales)


def _unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimate of two ``(n, n)`` kernel matrices (Song et al. 2012). Its
    expectation is 0 under independence; the usual biased estimate is not, and minimising it
    rewarded odd shapes of the latent kernel instead of independence."""
    n = len(k)
    off = 1.0 - torch.eye(n, device=k.device, dtype=k.dtype)
    k, l = k * off, l * off
    rows_k, rows_l = k.sum(1), l.sum(1)
    return ((k * l).sum() + rows_k.sum() * rows_l.sum() / ((n - 1) * (n - 2))
            - 2.0 * (rows_k @ rows_l) / (n - 2)) / (n * (n - 3))


def covariate_dependence(z: torch.Tensor, covariates: torch.Tensor) -> torch.Tensor:
    """Normalised unbiased HSIC between the rows of ``z`` ``(n, d)`` and of ``covariates``
    ``(n, c)`` (RBF kernels: :data:`Z_SCALES` for ``z``, the median width for the
    covariates): about 0 when independent, up to 1 when one determines the other. 0 for a
    minibatch of fewer than 5 cells (the estimate needs 4)."""
    if len(z) < 5:
        return z.sum() * 0.0
    kz, kc = _median_rbf(z, Z_SCALES), _median_rbf(covariates.to(z.dtype))
    scale = (_unbiased_hsic(kz, kz) * _unbiased_hsic(kc, kc)).clamp_min(1e-12).sqrt()
    return _unbiased_hsic(kz, kc) / scale

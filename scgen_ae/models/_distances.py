"""Squared distances between the rows of a minibatch's matrix, shared by the batch-alignment
and covariate-independence penalties."""
from __future__ import annotations

import torch


def sq_distances(z: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` squared distances between the rows of ``z``, from a matmul (torch.cdist's
    backward is slow on the CPU)."""
    sq = (z * z).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(0.0)

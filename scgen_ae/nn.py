"""Torch building blocks: MLPs with covariate injection, Gaussian encoder, count decoder.

Covariates (batch, other categorical keys) are injected into every layer as a learned
per-category offset, ``W h + E[c]``, which is the same function as concatenating a
one-hot vector to the layer input but costs an embedding lookup instead of a matmul.
Continuous covariates enter as ``W h + V s`` (``s``: their scaled values).

The batch tables (``offsets``) are kept apart from the other covariates' tables
(``covariate_offsets``): a model without covariates has exactly the parameters it had
before covariates existed, and surgery can add a batch table to a one-batch reference
without moving the covariates' tables.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


#: what a module conditions on besides the batch: (categorical codes (n, k), continuous (n, c)),
#: either None where the model has none
Covs = tuple  # tuple[torch.Tensor | None, torch.Tensor | None]


class CovariateLinear(nn.Module):
    """``Linear(h) + sum_k Embedding_k(c_k) + V s``: a linear layer with injected covariates.

    ``n_cats``: categories of each batch-like key (``cats`` in :meth:`forward`);
    ``n_cov_cats`` / ``n_cont``: the other categorical covariates and the number of
    continuous ones (``covs``). Every injected term starts at zero.
    """

    def __init__(self, n_in: int, n_out: int, n_cats: Sequence[int] = (), n_cov_cats: Sequence[int] = (),
                 n_cont: int = 0):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.offsets = nn.ModuleList(nn.Embedding(n, n_out) for n in n_cats)
        self.covariate_offsets = nn.ModuleList(nn.Embedding(n, n_out) for n in n_cov_cats)
        for emb in (*self.offsets, *self.covariate_offsets):
            nn.init.zeros_(emb.weight)
        self.continuous = None
        if n_cont:
            self.continuous = nn.Linear(n_cont, n_out, bias=False)
            nn.init.zeros_(self.continuous.weight)

    def injected(self, cats: Sequence[torch.Tensor] = (), covs: Covs | None = None, cols: int | None = None):
        """The covariates' term (0 when none), restricted to the first ``cols`` outputs."""
        out = 0.0
        for emb, c in zip(self.offsets, cats):
            out = out + (emb(c) if cols is None else nn.functional.embedding(c, emb.weight[:, :cols]))
        if covs is not None:
            cat, cont = covs
            for j, emb in enumerate(self.covariate_offsets):
                table = emb.weight if cols is None else emb.weight[:, :cols]
                out = out + nn.functional.embedding(cat[:, j], table)
            if self.continuous is not None:
                weight = self.continuous.weight if cols is None else self.continuous.weight[:cols]
                out = out + nn.functional.linear(cont.to(weight.dtype), weight)
        return out

    def forward(self, h: torch.Tensor, cats: Sequence[torch.Tensor] = (), covs: Covs | None = None) -> torch.Tensor:
        out = self.linear(h)
        for emb, c in zip(self.offsets, cats):
            out = out + emb(c)
        if covs is not None and (self.covariate_offsets or self.continuous is not None):
            out = out + self.injected((), covs)
        return out


class MLP(nn.Module):
    """``n_layers`` x (CovariateLinear -> LayerNorm? -> ReLU -> Dropout)."""

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_layers: int,
        n_cats: Sequence[int] = (),
        dropout_rate: float = 0.0,
        norm: str | None = "batch",
        n_cov_cats: Sequence[int] = (),
        n_cont: int = 0,
    ):
        super().__init__()
        dims = [n_in] + [n_hidden] * n_layers
        self.layers = nn.ModuleList(CovariateLinear(a, b, n_cats, n_cov_cats, n_cont)
                                    for a, b in zip(dims[:-1], dims[1:]))
        norm_cls = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm, None: None}[norm]
        self.norms = nn.ModuleList(norm_cls(n_hidden) if norm_cls else nn.Identity() for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()

    def forward(self, h: torch.Tensor, cats: Sequence[torch.Tensor] = (), covs: Covs | None = None) -> torch.Tensor:
        for layer, norm in zip(self.layers, self.norms):
            h = self.dropout(torch.relu(norm(layer(h, cats, covs))))
        return h


class GaussianEncoder(nn.Module):
    """x -> (mean, log variance) of q(z | x, c)."""

    def __init__(self, n_in, n_latent, n_hidden, n_layers, n_cats=(), dropout_rate=0.1, norm="batch",
                 n_cov_cats=(), n_cont=0):
        super().__init__()
        self.body = MLP(n_in, n_hidden, n_layers, n_cats, dropout_rate, norm, n_cov_cats, n_cont)
        self.head = nn.Linear(n_hidden, 2 * n_latent)

    def forward(self, x, cats=(), covs=None):
        mean, log_var = self.head(self.body(x, cats, covs)).chunk(2, dim=-1)
        return mean, log_var.clamp(-12.0, 8.0)


class CountDecoder(nn.Module):
    """z -> per-gene log expression scale (log-softmax over genes) and optional extra heads.

    ``gene_offsets`` adds a per-category, per-gene offset to the output logits: the
    decoder can then explain a batch's gene-wise shift directly instead of through
    the latent space, which is what keeps batch out of ``z``.
    """

    def __init__(self, n_latent, n_out, n_hidden, n_layers, n_cats=(), dropout_rate=0.0,
                 norm="batch", n_extra_heads=0, gene_offsets=True, n_cov_cats=(), n_cont=0):
        super().__init__()
        self.body = MLP(n_latent, n_hidden, n_layers, n_cats, dropout_rate, norm, n_cov_cats, n_cont)
        self.n_heads = 1 + n_extra_heads
        # all heads in one matmul: one (n_hidden x heads*n_out) GEMM beats several small ones;
        # gene offsets per covariate too: a continuous covariate's per-gene slope is what
        # regresses out e.g. a depth or cell-cycle effect
        self.heads = CovariateLinear(n_hidden, self.n_heads * n_out, n_cats if gene_offsets else (),
                                     n_cov_cats if gene_offsets else (), n_cont if gene_offsets else 0)

    def forward(self, z, cats=(), covs=None):
        return self.heads(self.body(z, cats, covs), cats, covs).chunk(self.n_heads, dim=-1)

    def first_head(self, z, cats=(), covs=None):
        """``forward(z, cats, covs)[0]`` alone (the expression logits), for callers that need no
        other head: 1 / n_heads of the output layer's work."""
        linear, n = self.heads.linear, self.heads.linear.out_features // self.n_heads
        out = nn.functional.linear(self.body(z, cats, covs), linear.weight[:n], linear.bias[:n])
        # embedding of a column slice: 3x faster than weight[c, :n]
        return out + self.heads.injected(cats, covs, cols=n)


def check_covariate_sizes(cfg) -> None:
    """A config's covariate sizes as stored (a model file's JSON lists them): a tuple of
    category counts, each >= 2, and a count of continuous covariates >= 0."""
    sizes = cfg.n_covariate_categories
    if not isinstance(sizes, (tuple, list)) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2
                                                      for n in sizes):
        raise ValueError(f"n_covariate_categories={sizes!r}: a tuple of category counts, each >= 2.")
    object.__setattr__(cfg, "n_covariate_categories", tuple(sizes))  # frozen: normalised once, here
    n_cont = cfg.n_continuous_covariates
    if not isinstance(n_cont, int) or isinstance(n_cont, bool) or n_cont < 0:
        raise ValueError(f"n_continuous_covariates={n_cont!r}: an integer >= 0.")


def checked_covs(cfg, covs: Covs | None) -> Covs | None:
    """``covs`` for a module with config ``cfg``: refused when the module has covariates and
    none are given (it would decode garbage), None when it has none."""
    if not cfg.n_covariate_categories and not cfg.n_continuous_covariates:
        return None
    cat, cont = covs if covs is not None else (None, None)
    if (cfg.n_covariate_categories and cat is None) or (cfg.n_continuous_covariates and cont is None):
        raise ValueError("This module was trained with covariates besides the batch and needs their values "
                         "(Minibatch.covs); apply it through the model object, which reads them from adata.obs.")
    return cat, cont

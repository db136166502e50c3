"""Amortised neural topic model (ProdLDA-style) with a per-batch background.

Encoder: log1p(counts) (+ batch) -> Gaussian q(z|x) in the logistic-normal space; the
topic proportions are theta = softmax(z). Decoder (product of experts, as ProdLDA):
    log p(gene | cell) = log_softmax_g( theta @ beta + background_g + batch_background[b, g] )
Counts follow a multinomial over genes with that p, written as a Poisson with mean
p * library (same gradients, a per-cell constant apart) through the ``poisson`` likelihood object.
The batch background (scETM's idea) absorbs each batch's gene-wise capture bias, so the
topics and their proportions do not have to encode it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .. import _validate as v
from ..data import CellData, iter_row_blocks
from ..likelihoods import Minibatch, get_likelihood
from ..losses import LossRecord
from ..nn import GaussianEncoder
from ._base import BaseModel
from .vae import batch_alignment


# name -> (accepts the value, the rule, how to fix); by type, not int(), which takes 1.5 as 1
# the fields every topic model has (classic LDA's rules extend them too)
SHAPE_RULES = {
    "n_genes": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1", "pass the number of genes"),
    "n_batches": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1", "pass n_batches=1"),
    "n_topics": (lambda x: v._is_int(x) and x >= 2, "an integer >= 2 (one topic explains nothing)",
                 "pass e.g. n_topics=20 (the default)"),
}
TOPIC_RULES = {
    **SHAPE_RULES,
    "n_hidden": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1 (units of the encoder's hidden layer)",
                 "pass e.g. n_hidden=128 (the default)"),
    "n_layers": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1", "pass e.g. n_layers=1 (the default)"),
    "dropout_rate": (lambda x: v._is_number(x) and 0 <= x < 1, "a number in [0, 1)",
                     "pass e.g. dropout_rate=0.1 (the default)"),
    "topic_prior": (lambda x: v._is_number(x) and x > 0,
                    "a finite number > 0 (the Dirichlet concentration of the topic proportions)",
                    "pass e.g. topic_prior=1.0 (the default; below 1 favours fewer topics per cell)"),
    "encode_batch": (v._is_bool, "True or False (a truthy 'no' would inject the batch)",
                     "pass encode_batch=True (the default) or False"),
    "batch_background": (v._is_bool, "True or False (a truthy 'no' would add the background)",
                         "pass batch_background=True (the default) or False"),
    "mmd_weight": (lambda x: v._is_number(x) and x >= 0, "a finite number >= 0 (0 turns the alignment off)",
                   "pass e.g. mmd_weight=1.0 (the default), or 0 for no alignment"),
    "mmd_mnn_k": (lambda x: v._is_int(x) and x >= 0,
                  "an integer >= 0 (mutual nearest neighbours per batch; 0 aligns whole batches)",
                  "pass e.g. mmd_mnn_k=3 (the default)"),
}


def check_topic_options(options: dict, where: str) -> None:
    """Refuse ProdLDA options (names of :data:`TOPIC_RULES`) with :class:`~scgen_ae.InputError`;
    ``where`` says which call took them."""
    v.check_by_rules(TOPIC_RULES, options, where)


@dataclass(frozen=True)
class TopicConfig:
    """Architecture of an :class:`LDA` (method "prodlda").

    Attributes
    ----------
    topic_prior
        Concentration alpha of the symmetric Dirichlet prior on the topic proportions,
        approximated by a logistic normal (Laplace approximation, as ProdLDA).
    encode_batch
        Inject the batch into the encoder.
    batch_background
        A per-batch, per-gene log-offset in the decoder (scETM's batch bias).
    mmd_weight
        Weight of an MMD penalty between the batches' distributions of z (0 = off).
    mmd_mnn_k
        > 0: the alignment pulls together only mutual nearest neighbours of different batches
        (see :func:`~scgen_ae.models.vae.mnn_attraction`); 0: the global MMD.
    """

    n_genes: int
    n_batches: int = 1
    n_topics: int = 20
    n_hidden: int = 128
    n_layers: int = 1
    dropout_rate: float = 0.1
    topic_prior: float = 1.0
    encode_batch: bool = True
    batch_background: bool = True
    mmd_weight: float = 1.0
    mmd_mnn_k: int = 3

    #: what a model file without a field was trained with (files predate the field)
    LEGACY_DEFAULTS: ClassVar[dict] = {"mmd_mnn_k": 0}
    #: fields files once held and this config no longer has, with the one value written
    #: (the input checks read a model's input kind now, not a likelihood it does not have)
    LEGACY_DROPPED: ClassVar[dict] = {"likelihood": "poisson"}

    def __post_init__(self):
        # for direct users of the config (and files); tl.lda applies the same rules to its keywords first
        check_topic_options({name: getattr(self, name) for name in TOPIC_RULES}, "a field of TopicConfig")


def logistic_normal_prior(alpha: float, k: int) -> tuple[float, float]:
    """Mean and variance of the logistic normal closest to a symmetric Dirichlet(alpha)
    (Laplace approximation in the softmax basis; Srivastava & Sutton 2017, eq. 3)."""
    return 0.0, (1.0 / alpha) * (1.0 - 2.0 / k) + 1.0 / (k * alpha)


class TopicModule(nn.Module):
    def __init__(self, cfg: TopicConfig):
        super().__init__()
        self.cfg = cfg
        cats = (cfg.n_batches,) if cfg.n_batches > 1 and cfg.encode_batch else ()
        self.encoder = GaussianEncoder(cfg.n_genes, cfg.n_topics, cfg.n_hidden, cfg.n_layers, cats,
                                       cfg.dropout_rate, "batch")
        # topic-gene logits (the experts); small init so that early topics are near-uniform
        self.topic_gene = nn.Parameter(torch.randn(cfg.n_topics, cfg.n_genes) * 0.02)
        self.background = nn.Parameter(torch.zeros(cfg.n_genes))
        n_bg = cfg.n_batches if cfg.batch_background and cfg.n_batches > 1 else 0
        self.batch_background = nn.Parameter(torch.zeros(n_bg, cfg.n_genes))
        _, var = logistic_normal_prior(cfg.topic_prior, cfg.n_topics)
        self.register_buffer("prior_log_var", torch.tensor(math.log(var)), persistent=False)

    @torch.no_grad()
    def init_background(self, data: CellData) -> None:
        """Start the background at the log of the pooled gene frequencies: the topics then
        only learn deviations from it from the first step on."""
        sums = np.zeros(self.cfg.n_genes)
        for _, _, X in iter_row_blocks(data):  # float64: exact for counts, so any blocking gives the same sums
            sums += np.asarray(X.sum(0, dtype=np.float64)).ravel()
        freq = sums.astype(np.float32) + 1.0  # float32 as the in-memory X.sum(0) this replaced
        self.background.copy_(torch.from_numpy(np.log(freq / freq.sum())).float())

    def _cats(self, batch):
        return (batch,) if self.cfg.n_batches > 1 and self.cfg.encode_batch else ()

    def inference(self, x: torch.Tensor, batch: torch.Tensor):
        return self.encoder(x, self._cats(batch))

    def generative(self, theta: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """(n, k) topic proportions -> (n, g) log gene probabilities."""
        logits = theta.float() @ self.topic_gene + self.background
        if self.batch_background.shape[0]:
            logits = logits + self.batch_background[batch]
        return F.log_softmax(logits, dim=-1)

    has_kl = True  # the KL warm-up applies (train.fit)

    def loss(self, mb: Minibatch, kl_weight: float = 1.0) -> LossRecord:
        """Mean negative ELBO (reconstruction + ``kl_weight`` x KL to the logistic-normal prior)
        plus, in training, the weighted ``alignment`` penalty."""
        mean, log_var = (t.float() for t in self.inference(mb.x, mb.batch))
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp() if self.training else mean
        log_p = self.generative(F.softmax(z, dim=-1), mb.batch)
        reconstruction = -get_likelihood("poisson").cell_log_prob(mb, {"log_mu": log_p + mb.log_library})
        plv = self.prior_log_var
        kl = 0.5 * ((log_var - plv).exp() + mean**2 / plv.exp() - 1.0 - log_var + plv).sum(-1)
        loss = (reconstruction + kl_weight * kl).mean()
        penalties = {}
        if self.training and self.cfg.mmd_weight > 0 and self.cfg.n_batches > 1:
            penalties["alignment"] = (self.cfg.mmd_weight * kl_weight * batch_alignment(z, mb.batch, mb.x,
                                      self.cfg.mmd_mnn_k) * mb.x.shape[1])
            loss = loss + penalties["alignment"]
        return LossRecord(total=loss, reconstruction=reconstruction.mean(), kl=kl.mean(), penalties=penalties)


def cell_count_log_likelihood(X: sp.csr_matrix, log_p: np.ndarray) -> np.ndarray:
    """Per cell, sum over genes of x_cg log p_cg ``(n,)``: the multinomial log-likelihood
    without its combinatorial constant, which is the same for every model of the same counts."""
    X = X.tocsr()
    return _nonzero_log_likelihood(np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), X.indices, X.data, log_p)


def _nonzero_log_likelihood(rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """:func:`cell_count_log_likelihood` of the non-zero counts ``counts`` at ``(rows, cols)``
    of ``log_p``'s cells, summed in their order."""
    terms = counts.astype(np.float64) * np.asarray(log_p, dtype=np.float64)[rows, cols]
    return np.bincount(rows, weights=terms, minlength=len(log_p))


def perplexity_from_probs(X: sp.csr_matrix, probs: np.ndarray) -> float:
    """exp(- sum x log p / sum x): per-count perplexity of counts ``X`` (n, g) under each
    cell's predicted gene distribution ``probs`` (n, g; rows sum to 1). Lower is better.
    The benchmark applies this same function to every tool's predictions."""
    log_p = np.log(np.maximum(np.asarray(probs, dtype=np.float64), 1e-300))
    return float(math.exp(-cell_count_log_likelihood(X, log_p).sum() / max(float(X.sum()), 1.0)))


class LDA(BaseModel):
    """A trained topic model (see :func:`scgen_ae.tl.lda`). ``method="classic"`` fits give
    a :class:`~scgen_ae.models.lda_vb.ClassicLDA`, a subclass with the same methods."""

    counts_needs = "this topic model (LDA)"
    counts_otherwise = None  # no likelihood for log-normalised data here

    module_class = TopicModule
    config_class = TopicConfig

    @property
    def n_topics(self) -> int:
        return int(self.config.n_topics)

    def topic_gene_matrix(self) -> np.ndarray:
        """(n_genes, n_topics): each topic's expert, softmax over genes of its logits.
        Columns are non-negative and sum to 1; genes rank by enrichment over the background."""
        return F.softmax(self.module.topic_gene.detach().float(), dim=-1).T.cpu().numpy()

    def _proportions(self, data: CellData, batch_size: int = 1024) -> np.ndarray:
        """(n_cells, n_topics) softmax of the posterior mean of z."""
        fn = lambda mb: F.softmax(self.module.inference(mb.x, mb.batch)[0].float(), -1).cpu()  # noqa: E731
        return torch.cat(self._apply(data, fn, batch_size)).numpy()

    @torch.no_grad()
    def _log_probs(self, theta: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """(n, n_topics) proportions and (n,) batch codes -> (n, n_genes) log p(gene | cell)."""
        return self.module.generative(theta.to(self.device), batch.to(self.device)).cpu()

    def _per_block(self, data: CellData, proportions: np.ndarray, fn, chunk: int = 1024) -> list:
        """``fn(mb, log_p)`` per minibatch of ``chunk`` cells (:meth:`_apply`), ``log_p`` their
        ``(n, n_genes)`` log p(gene | cell) from ``proportions``: never formed for all cells at once."""
        def block(mb, part):
            theta = torch.from_numpy(np.ascontiguousarray(proportions[part], dtype=np.float32))
            return fn(mb, self._log_probs(theta, mb.batch).numpy())

        return self._apply(data, block, chunk, with_part=True)

    def _cell_log_lik(self, data: CellData, proportions: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Per cell, sum_g x log p(gene | cell) ``(n,)``, from each minibatch's non-zero counts."""
        def fn(mb, log_p):
            rows, cols, counts = (t.cpu().numpy() for t in (mb.nz_row, mb.nz_col, mb.nz_val))
            return _nonzero_log_likelihood(rows, cols, counts, log_p)

        parts = self._per_block(data, proportions, fn, chunk)
        return np.concatenate(parts) if parts else np.zeros(0)

    def transform(self, adata: AnnData, *, layer="model", batch_key="model", pad_missing: bool = False) -> np.ndarray:
        """Topic proportions ``(n_cells, n_topics)`` of the cells in ``adata`` (rows sum to 1).

        ``layer`` / ``batch_key`` default to those used in training.
        """
        return self._proportions(self._cell_data(adata, layer, batch_key, pad_missing))

    def predictive(self, adata: AnnData, *, layer="model", batch_key="model", pad_missing: bool = False) -> np.ndarray:
        """Each cell's predicted gene distribution ``(n_cells, n_genes)``, rows summing to 1,
        from its inferred topic proportions (and, with batches, its batch's background)."""
        data = self._cell_data(adata, layer, batch_key, pad_missing)
        return np.exp(np.concatenate(self._per_block(data, self._proportions(data), lambda mb, log_p: log_p)))

    def perplexity(self, adata: AnnData, *, layer="model", batch_key="model", pad_missing: bool = False) -> float:
        """Per-count perplexity of ``adata``'s counts: exp(- sum x log p / sum x) with p from
        :meth:`predictive` (topic proportions inferred from each cell's own counts)."""
        data = self._cell_data(adata, layer, batch_key, pad_missing)
        ll = self._cell_log_lik(data, self._proportions(data))
        # float64 total of the library sizes: exact for counts (as X.sum() was below 2^24 counts)
        return float(math.exp(-ll.sum() / max(float(data.library.sum(dtype=np.float64)), 1.0)))

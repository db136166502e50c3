"""The (conditional) VAE: module (inference -> generative -> loss) and user object."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .. import _validate as v
from ..likelihoods import Minibatch, get_likelihood
from ..losses import LossRecord
from ..nn import CountDecoder, Covs, GaussianEncoder, check_covariate_sizes, checked_covs
from . import covariate_independence
from ._distances import sq_distances
from ._base import BaseModel
from ._scvi_names import ScviToolsNames


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a :class:`VAE`.

    Attributes
    ----------
    dispersion
        "gene" (one theta per gene) or "gene-batch" (per gene and batch).
    encode_batch
        Inject the batch into the encoder as well as the decoder.
    batch_gene_offsets
        Let the decoder add a per-batch, per-gene shift to its output.
    mmd_weight
        Weight of the batch-alignment penalty on ``z`` (0 = off: a plain conditional VAE);
        it removes what the decoder's batch terms did not absorb.
    mmd_mnn_k
        > 0 (default 3): the penalty pulls together mutual nearest neighbours of different
        batches (:func:`mnn_attraction`), which leaves batch-unique cell types apart. 0: the
        global MMD between each batch's and the pooled latent distribution
        (:func:`batch_mmd`), which assumes every batch holds the same cell types in similar
        proportions; model files written before this field load with 0.
    mnn_bandwidth
        With ``mmd_mnn_k > 0``: > 0 (default 0.5) smooths the pairs' correction vectors over
        each batch's cells (:func:`mnn_correction`; the squared kernel width is this times a
        cell's squared distance to its ``mmd_mnn_k``-th neighbour in its batch); 0 pulls the
        pairs only (:func:`mnn_attraction`). Model files written before this field load with 0.
    n_covariate_categories
        Categories of each categorical covariate besides the batch (one table each, injected
        where the batch is); () for none.
    n_continuous_covariates
        Number of continuous covariates (a linear term wherever the batch enters, and a
        per-gene slope in the decoder output).
    covariate_independence_weight
        With continuous covariates: weight (default 1) of the penalty on the dependence of
        the posterior mean of ``z`` on them in each minibatch
        (:func:`~scgen_ae.models.covariate_independence.covariate_dependence`, times the
        number of genes as the alignment penalty), which keeps ``z`` from holding what the
        covariates explain; 0 = none. Model files written before this field load with 0.
    n_labels
        Number of label classes of the classifier on ``z`` (0 = no classifier; semi-supervised
        training, scANVI-style, with 2 or more).
    classification_weight
        Weight of the classifier's mean cross-entropy over the labelled cells of a minibatch,
        added to the mean per-cell negative ELBO (scANVI's ``classification_ratio``, also 50).
    """

    n_genes: int
    n_batches: int = 1
    likelihood: str = "zinb"
    n_latent: int = 10
    n_hidden: int = 128
    n_layers: int = 1
    dropout_rate: float = 0.1
    dispersion: str = "gene"
    beta: float = 1.0
    encode_batch: bool = True
    batch_gene_offsets: bool = True
    norm: str | None = "batch"
    mmd_weight: float = 1.0
    mmd_mnn_k: int = 3
    mnn_bandwidth: float = 0.5
    n_labels: int = 0
    classification_weight: float = 50.0
    n_covariate_categories: tuple[int, ...] = ()
    n_continuous_covariates: int = 0
    covariate_independence_weight: float = 1.0

    #: what a model file without a field was trained with (files predate the field)
    LEGACY_DEFAULTS: ClassVar[dict] = {"mmd_mnn_k": 0, "mnn_bandwidth": 0.0, "covariate_independence_weight": 0.0}

    def __post_init__(self):
        check_covariate_sizes(self)
        get_likelihood(self.likelihood)  # an unknown name is refused here, listing the registered ones
        if self.dispersion not in ("gene", "gene-batch"):
            raise ValueError(f"dispersion={self.dispersion!r}; choose 'gene' or 'gene-batch'.")
        for name in ("n_genes", "n_latent", "n_hidden", "n_layers", "n_batches"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if int(self.n_labels) == 1 or int(self.n_labels) < 0:
            raise ValueError(f"n_labels must be 0 (no classifier) or at least 2, got {self.n_labels!r}.")
        check_mnn_bandwidth(self.mnn_bandwidth)
        covariate_independence.check_covariate_independence_weight(self.covariate_independence_weight)
        if not self.classification_weight >= 0:
            raise ValueError(f"classification_weight must be >= 0, got {self.classification_weight!r}.")
        if not 0 <= self.dropout_rate < 1:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}.")


def check_mnn_bandwidth(bandwidth) -> None:
    """Refuse an ``mnn_bandwidth`` that is not a finite number >= 0 (ValueError)."""
    if (isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float))
            or not math.isfinite(bandwidth) or bandwidth < 0):
        raise ValueError(f"mnn_bandwidth={bandwidth!r}; choose a finite number >= 0 (0: pull the mutual "
                         "nearest neighbours only).")


def mutual_pairs(d2: torch.Tensor, batch: torch.Tensor, k: int, bound: float = 0.0) -> torch.Tensor:
    """(n, n) bool: mutual nearest neighbours across batches (``k`` per batch).

    ``bound > 0`` also drops a pair whose squared distance exceeds ``bound`` times the larger
    of its two cells' squared distances to their ``k``-th neighbour within their own batch.
    """
    n = len(batch)
    rows = torch.arange(n, device=d2.device)[:, None]
    near = torch.zeros(n, n, dtype=torch.bool, device=d2.device)
    own_kth = torch.zeros(n, device=d2.device, dtype=d2.dtype)
    for b in torch.unique(batch):
        cols = (batch == b).nonzero().squeeze(1)
        found = d2[:, cols].topk(min(k + 1, len(cols)), dim=1, largest=False)
        near[rows, cols[found.indices[:, :k]]] = True
        own_kth[cols] = found.values[cols, -1]
    pairs = near & near.T & (batch[:, None] != batch[None, :])
    if bound > 0:
        pairs &= d2 <= bound * torch.maximum(own_kth[:, None], own_kth[None, :])
    return pairs


#: in the input, a pair of cells of different batches counts only if it is no farther apart
#: than each cell is from its k-th neighbour in its own batch: when two batches share no cell
#: type their mutual neighbours are far apart (BENCHMARKS.md, "Integration that never erases biology")
INPUT_PAIR_BOUND = 1.0


def _mnn_pairs(z: torch.Tensor, batch: torch.Tensor, x: torch.Tensor, k: int, unmatched=None):
    """Squared distances in ``z`` ``(n, n)`` and the pairs of cells of different batches that are
    mutual nearest neighbours (``k`` per batch) both in ``z`` and in the input ``x`` (cosine;
    within :data:`INPUT_PAIR_BOUND`). Each view alone lets wrong pairs through (``z`` is shaped
    by the alignment, ``x`` carries the batch effect). ``unmatched`` ``(n, n_batches)`` bool
    drops the pairs of a cell with the batches it is True for (either way round)."""
    d2 = sq_distances(z)
    unit = F.normalize(x.float(), dim=1)
    in_input = mutual_pairs(2.0 - 2.0 * unit @ unit.T, batch, k, INPUT_PAIR_BOUND)
    pairs = mutual_pairs(d2.detach(), batch, k) & in_input
    if unmatched is not None:
        barred = unmatched[:, batch]  # (n, n): cell i may not pair with cell j's batch
        pairs &= ~(barred | barred.T)
    return d2, pairs


def _rbf_kernel(d2: torch.Tensor, n_latent: int, scales) -> torch.Tensor:
    """Multi-scale RBF kernel of squared distances ``d2``, bandwidths ``scales`` x ``n_latent``."""
    return sum(torch.exp(d2 * (-0.5 / (s * n_latent))) for s in scales)


def _kernel_distance(d2: torch.Tensor, n_latent: int, scales) -> torch.Tensor:
    """Multi-scale RBF distance in [0, len(scales)): 0 for equal points, saturating when far."""
    return len(scales) - _rbf_kernel(d2, n_latent, scales)


def mnn_attraction(z: torch.Tensor, batch: torch.Tensor, x: torch.Tensor, k: int,
                   scales=(0.1, 1.0, 10.0), unmatched=None) -> torch.Tensor:
    """Batch alignment that leaves batch-unique cell types alone: the mean kernel distance in
    ``z`` between the mutual-nearest-neighbour pairs of :func:`_mnn_pairs`.

    A type that some batches lack has no mutual neighbours there (its nearest cells are of
    other types, which have nearer partners of their own type), so nothing pulls it; and unlike
    a distribution penalty (MMD) it does not move mass between types when the batches hold
    the shared types in other proportions. BENCHMARKS.md, "Integration that never erases
    biology", has the measurements.
    """
    d2, pairs = _mnn_pairs(z, batch, x, k, unmatched)
    return (_kernel_distance(d2, z.shape[1], scales) * pairs).sum() / pairs.sum().clamp_min(1)


#: a cell whose kernel weights on the paired cells of its batch sum to less than this is far
#: from every pair (a type the other batches lack) and is not moved by :func:`mnn_correction`
MIN_CORRECTION_WEIGHT = 1e-3


def mnn_correction(z: torch.Tensor, batch: torch.Tensor, x: torch.Tensor, k: int, bandwidth: float,
                   scales=(0.1, 1.0, 10.0), unmatched=None) -> torch.Tensor:
    """Batch alignment by smoothed MNN correction vectors (fastMNN's correction as a penalty).

    Each cell with mutual-nearest-neighbour partners (:func:`_mnn_pairs`) gets a correction
    vector: the mean displacement in ``z`` to its partners. Every cell is then drawn (kernel
    distance, the target fixed) toward itself plus half of the Gaussian-weighted mean of the
    correction vectors of the paired cells of its own batch; the squared bandwidth is
    ``bandwidth`` times the cell's squared distance to its ``k``-th neighbour in its batch.
    With ``unmatched`` (see :func:`_mnn_pairs`) a cell takes no correction from cells paired
    with a batch it is barred from.

    The pairs only say where the batches meet; the smoothing moves the cells around them as
    one, so the batch shift is removed from whole neighbourhoods, not from the paired cells
    alone (the pair attraction tore those few out of their type and left the rest behind,
    which scIB's kBET, batch ASW and PCR read as unmixed). A batch-unique type far from every
    paired cell gets almost no weight and is left where it is.
    """
    d2, pairs = _mnn_pairs(z, batch, x, k, unmatched)
    zd, d2d, p = z.detach(), d2.detach(), pairs.to(z.dtype)
    n_partners = p.sum(1)
    to_partners = (p @ zd - n_partners[:, None] * zd) / n_partners.clamp_min(1)[:, None]
    same = batch[:, None] == batch[None, :]
    own = torch.where(same, d2d, torch.full_like(d2d, float("inf")))
    kth = own.topk(min(k + 1, len(z)), dim=1, largest=False).values[:, -1]  # self is the 0th
    width2 = bandwidth * kth.clamp_min(1e-6)
    weight = torch.exp(-d2d / (2.0 * width2[:, None])) * (same & (n_partners > 0)[None, :])
    if unmatched is not None:
        # a cell is not carried by its neighbours' pull toward a batch it has no counterpart in
        partner_batches = (p @ F.one_hot(batch, unmatched.shape[1]).to(p.dtype)) > 0  # (n, n_batches)
        weight = weight * ((unmatched.to(p.dtype) @ partner_batches.to(p.dtype).T) == 0)
    total = weight.sum(1)
    moved = total >= MIN_CORRECTION_WEIGHT
    target = zd + 0.5 * (weight @ to_partners) / total.clamp_min(1e-12)[:, None]
    distance = _kernel_distance(((z - target) ** 2).sum(1), z.shape[1], scales)
    return (distance * moved).sum() / moved.sum().clamp_min(1)


def batch_mmd(z: torch.Tensor, batch: torch.Tensor, scales=(0.1, 1.0, 10.0)) -> torch.Tensor:
    """Sum over batches of the multi-scale RBF MMD^2 between that batch's and all cells' z.

    One (n x n) kernel serves every batch: its block means give each MMD term. It assumes
    every batch holds the same cell types in similar proportions.
    """
    kernel = _rbf_kernel(sq_distances(z), z.shape[1], scales)
    onehot = torch.nn.functional.one_hot(batch).to(z.dtype)  # (n, B)
    counts = onehot.sum(0)
    present = counts >= 2
    per_batch_rows = onehot.T @ kernel  # (B, n): sums of kernel rows per batch
    within = (per_batch_rows @ onehot).diagonal() / counts.clamp_min(1) ** 2
    across = per_batch_rows.sum(1) / (counts.clamp_min(1) * len(z))
    mmd = within + kernel.mean() - 2.0 * across
    return (mmd * present).sum()


def batch_alignment(z: torch.Tensor, batch: torch.Tensor, x: torch.Tensor, mnn_k: int,
                    bandwidth: float = 0.0, unmatched=None) -> torch.Tensor:
    """The alignment penalty: with ``mnn_k > 0`` the smoothed MNN correction (``bandwidth > 0``)
    or the pair attraction (0), without the pairs ``unmatched`` bars (see :func:`_mnn_pairs`);
    with ``mnn_k == 0`` the global MMD."""
    if mnn_k == 0:
        return batch_mmd(z, batch)
    if bandwidth > 0:
        return mnn_correction(z, batch, x, mnn_k, bandwidth, unmatched=unmatched)
    return mnn_attraction(z, batch, x, mnn_k, unmatched=unmatched)


class VAEModule(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        cats = (cfg.n_batches,) if cfg.n_batches > 1 else ()
        cov_cats, n_cont = cfg.n_covariate_categories, cfg.n_continuous_covariates
        enc = cfg.encode_batch  # the covariates enter the encoder where the batch does
        self.encoder = GaussianEncoder(cfg.n_genes, cfg.n_latent, cfg.n_hidden, cfg.n_layers,
                                       cats if enc else (), cfg.dropout_rate, cfg.norm,
                                       cov_cats if enc else (), n_cont if enc else 0)
        self.likelihood = get_likelihood(cfg.likelihood)
        n_extra = len(self.likelihood.extra_heads)
        self.decoder = CountDecoder(cfg.n_latent, cfg.n_genes, cfg.n_hidden, cfg.n_layers, cats, 0.0,
                                    cfg.norm, n_extra, cfg.batch_gene_offsets, cov_cats, n_cont)
        n_disp = cfg.n_batches if cfg.dispersion == "gene-batch" else 1
        # the likelihood's dispersion (log theta for nb/zinb, log variance for gaussian); always
        # allocated, so every model file holds the same weights whatever the likelihood
        self.log_dispersion = nn.Parameter(torch.zeros(n_disp, cfg.n_genes))
        # the label classifier reads the posterior mean of z: the latent space the user sees
        self.classifier = None
        if cfg.n_labels >= 2:
            self.classifier = nn.Sequential(nn.Linear(cfg.n_latent, cfg.n_hidden), nn.ReLU(),
                                            nn.Dropout(cfg.dropout_rate), nn.Linear(cfg.n_hidden, cfg.n_labels))

    def classify(self, mean: torch.Tensor) -> torch.Tensor:
        """Label logits ``(n, n_labels)`` from the posterior means ``(n, n_latent)``."""
        return self.classifier(mean).float()

    def _cats(self, batch: torch.Tensor):
        return (batch,) if self.cfg.n_batches > 1 else ()

    def inference(self, x: torch.Tensor, batch: torch.Tensor, covs: Covs | None = None):
        """``x`` is the encoder input: log1p(counts), or log-normalised values for gaussian;
        ``covs``: the covariates besides the batch (``Minibatch.covs``)."""
        covs = checked_covs(self.cfg, covs)
        if not self.cfg.encode_batch:
            return self.encoder(x)
        return self.encoder(x, self._cats(batch), covs)

    def generative(self, z: torch.Tensor, batch: torch.Tensor, log_library: torch.Tensor,
                   covs: Covs | None = None) -> dict:
        """The likelihood's parameters (:meth:`~scgen_ae.likelihoods.Likelihood.params`) of ``z``."""
        covs = checked_covs(self.cfg, covs)
        heads = [h.float() for h in self.decoder(z, self._cats(batch), covs)]  # fp32 even under bf16 autocast
        lik = self.likelihood
        # counts: the expression head gives shares of the library; other data: the values
        expression = F.log_softmax(heads[0], dim=-1) if lik.counts else heads[0]
        row = batch if self.cfg.dispersion == "gene-batch" else None
        return lik.params(expression, log_library, dict(zip(lik.extra_heads, heads[1:])), self.log_dispersion, row)

    has_kl = True  # the KL warm-up applies (train.fit)

    def loss(self, mb: Minibatch, kl_weight: float = 1.0) -> LossRecord:
        """The minibatch's mean negative ELBO (reconstruction + beta x ``kl_weight`` x KL) plus,
        in training, the weighted ``alignment``, ``covariate_independence`` and
        ``classification`` penalties."""
        mean, log_var = (t.float() for t in self.inference(mb.x, mb.batch, mb.covs))
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp() if self.training else mean
        out = self.generative(z, mb.batch, mb.log_library, mb.covs)
        reconstruction = -self.likelihood.cell_log_prob(mb, out)
        kl = 0.5 * (log_var.exp() + mean**2 - 1.0 - log_var).sum(-1)
        loss = (reconstruction + self.cfg.beta * kl_weight * kl).mean()
        penalties = {}
        # the penalty shapes training only: evaluation (validation loss) reports the plain negative ELBO
        if self.training and self.cfg.mmd_weight > 0 and self.cfg.n_batches > 1:
            mmd = batch_alignment(z, mb.batch, mb.x, self.cfg.mmd_mnn_k, self.cfg.mnn_bandwidth,
                                  mb.unmatched)
            penalties["alignment"] = self.cfg.mmd_weight * kl_weight * mmd * mb.x.shape[1]
            loss = loss + penalties["alignment"]
        # training only too; read on the posterior mean, the latent space the user sees
        weight = self.cfg.covariate_independence_weight
        if self.training and weight > 0 and self.cfg.n_continuous_covariates > 0:
            dependence = covariate_independence.covariate_dependence(mean, mb.cont_covs)
            penalties["covariate_independence"] = weight * dependence * mb.x.shape[1]
            loss = loss + penalties["covariate_independence"]
        # like the alignment penalty, a training term only: validation reports the negative ELBO
        if self.training and self.classifier is not None and mb.label is not None:
            known = (mb.label >= 0).sum().clamp_min(1)  # cells labelled -1 contribute nothing
            ce = F.cross_entropy(self.classify(mean), mb.label, ignore_index=-1, reduction="sum") / known
            penalties["classification"] = self.cfg.classification_weight * ce
            loss = loss + penalties["classification"]
        return LossRecord(total=loss, reconstruction=reconstruction.mean(), kl=kl.mean(), penalties=penalties)


class VAE(ScviToolsNames, BaseModel):
    """A trained VAE (see :func:`scgen_ae.tl.vae` to train one). scvi-tools' method names
    (``get_normalized_expression``, ``get_latent_representation``, ...) come from
    :class:`~scgen_ae.models._scvi_names.ScviToolsNames`."""

    module_class = VAEModule
    config_class = VAEConfig

    @classmethod
    def input_kind_of(cls, config: VAEConfig) -> str:
        """Counts for the count likelihoods, real values (log-normalised) for ``gaussian``."""
        return "counts" if get_likelihood(config.likelihood).counts else "real"

    def get_latent(self, adata: AnnData, *, layer="model", batch_key="model", give_mean: bool = True,
                   batch_size: int = 1024, pad_missing: bool = False, seed: int = 0) -> np.ndarray:
        """Latent representation ``(n_cells, n_latent)``: the posterior mean, or one sample.

        ``layer`` / ``batch_key`` default to those used in training.
        """
        gen = torch.Generator().manual_seed(seed)

        def fn(mb):
            mean, log_var = self.module.inference(mb.x, mb.batch, mb.covs)
            if give_mean:
                return mean.cpu()
            noise = torch.randn(mean.shape, generator=gen).to(mean.device)
            return (mean + noise * (0.5 * log_var).exp()).cpu()

        return torch.cat(self._apply_adata(adata, fn, batch_size, layer=layer, batch_key=batch_key,
                                           pad_missing=pad_missing)).numpy()

    def predict(self, adata: AnnData, *, soft: bool = False, layer="model", batch_key="model",
                batch_size: int = 1024, pad_missing: bool = False):
        """Labels of the cells of ``adata`` from the classifier on the latent space.

        Needs a model trained with labels (``sa.tl.vae(..., label_key=..., unlabeled_category=...)``)
        or mapped from one (:meth:`map_query` keeps the classifier). ``layer`` / ``batch_key``
        default to those used in training; a backed AnnData is read in chunks.

        Returns
        -------
        pandas.Series or pandas.DataFrame
            ``soft=False``: the most probable label of each cell, a categorical Series
            ``(n_cells,)`` indexed by ``adata.obs_names`` with the model's classes as
            categories. ``soft=True``: the probabilities, a DataFrame ``(n_cells, n_classes)``
            with the classes (:attr:`label_categories`) as columns; rows sum to 1.
        """
        import pandas as pd

        if self.module.classifier is None:
            raise v.InputError("This model has no label classifier: train it with sa.tl.vae(adata, label_key=..., "
                               "unlabeled_category=...) to predict labels, or transfer labels from its latent "
                               "space with sa.tl.transfer_labels.")

        def fn(mb):
            mean, _ = self.module.inference(mb.x, mb.batch, mb.covs)
            return torch.softmax(self.module.classify(mean.float()), dim=-1).cpu()

        proba = torch.cat(self._apply_adata(adata, fn, batch_size, layer=layer, batch_key=batch_key,
                                           pad_missing=pad_missing)).numpy()
        index = pd.Index(adata.obs_names)
        if soft:
            return pd.DataFrame(proba, index=index, columns=pd.Index(self.label_categories))
        best = pd.Categorical.from_codes(proba.argmax(1), categories=self.label_categories)
        return pd.Series(best, index=index, name="predicted_labels")

    def _decode_latent(self, cells, z: np.ndarray, rows: np.ndarray | None = None,
                       batch_size: int = 1024) -> np.ndarray:
        """The likelihood's mean E[x] (:meth:`~scgen_ae.likelihoods.Likelihood.mean`) of latents
        ``z`` ``(len(rows), n_latent)``, each decoded in the batch, library size and covariates
        of its cell ``rows[i]`` of the validated ``cells`` (default: all, in order); float32
        ``(len(rows), n_genes)``. For count likelihoods expected counts at the cell's observed
        library size (for zinb including the zero inflation, (1 - pi) mu); for gaussian the mean.
        """
        z = np.asarray(z, dtype=np.float32)

        def fn(mb, part):
            out = self.module.generative(torch.from_numpy(z[part]).to(self.device), mb.batch, mb.log_library, mb.covs)
            return self.module.likelihood.mean(out).cpu().numpy()

        out = self._apply(cells, fn, batch_size, rows=rows, with_part=True)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(self.var_names)), np.float32)

    def _decoder_output(self, mb) -> dict:
        mean, _ = self.module.inference(mb.x, mb.batch, mb.covs)
        return self.module.generative(mean.float(), mb.batch, mb.log_library, mb.covs)

    def _log_scale(self, mb, pick, batch, generator):
        """One z ~ q(z | x) per row of ``pick`` (cells of ``mb``), decoded in ``batch`` (and each
        cell's own covariates)."""
        mean, log_var = (t.float()[pick] for t in self.module.eval().inference(mb.x, mb.batch, mb.covs))
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        z = mean + noise * (0.5 * log_var).exp()
        covs = checked_covs(self.module.cfg, mb.covs_of(pick))
        head = self.module.decoder.first_head(z, self.module._cats(batch), covs)
        return F.log_softmax(head.float(), dim=-1)

    def map_query(self, adata: AnnData, *, batch_key: str, layer="model", pad_missing: bool = False,
                  key_added: str = "X_vae", uns_key: str = "map_query", copy: bool = False, **train_kwargs):
        """scArches-style surgery: a new VAE with rows for the query's new batches, only those trained.

        The reference model is not modified and its latent space of the reference cells
        does not move (bit for bit). A reference trained on a single batch (one category of
        ``batch_key``) can be extended too, and a classifier trained with labels is kept, so
        :meth:`predict` labels the query's cells. A query opened with
        ``anndata.read_h5ad(path, backed="r")`` is streamed from disk in row chunks, as in
        :func:`~scgen_ae.tl.vae` (its ``obs`` is read). Genes are matched by name; missing ones need
        ``pad_missing=True`` (zeros, with a warning). ``**train_kwargs`` go to
        :class:`~scgen_ae.train.TrainConfig` (``weight_decay`` is fixed at 0).
        Sets ``adata.obsm[key_added]`` (n_cells, n_latent) and ``adata.uns[uns_key]`` (``params``,
        ``new_batches``, ``batch_categories``, ``new_covariate_categories``, ``genes``: missing /
        extra dropped / reordered, ``history``). New categories of the model's categorical
        covariates (read from the query's ``obs``, which needs every covariate column of the
        model) get rows of their own, trained the same way. Returns the extended model (with
        ``copy=True`` the annotated copy; the model: ``sa.tl.get_model(copy, uns_key)``).
        Implemented in :mod:`scgen_ae.models._surgery`.
        """
        from ._surgery import map_query

        return map_query(self, adata, batch_key=batch_key, layer=layer, pad_missing=pad_missing,
                         key_added=key_added, uns_key=uns_key, copy=copy, **train_kwargs)

"""The (denoising) count autoencoder, DCA-style: module and user object.

Encoder: log1p(size-factor-normalised counts) + batch -> deterministic bottleneck.
Decoder: bottleneck + batch -> softmax expression scale x library size -> mean of a
ZINB / NB / Poisson likelihood (the same ``cell_log_prob`` the VAE uses). With
``corruption`` set, the encoder input is corrupted during training and the loss is
computed against the clean counts, so the network has to predict each count from the
other genes of the cell rather than copy it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from ..likelihoods import Minibatch, get_likelihood, likelihood_names
from ..losses import LossRecord
from ..nn import MLP, CountDecoder, Covs, check_covariate_sizes, checked_covs
from ._base import BaseModel

CORRUPTIONS = ("mask", "thinning", "gaussian", "none")
DISPERSIONS = ("gene", "gene-batch", "gene-cell")
VALIDATION_HIDDEN = 0.1  # share of entries hidden from the encoder when computing the validation loss


@dataclass(frozen=True)
class DAEConfig:
    """Architecture of a :class:`DAE`.

    dispersion : "gene" (one theta per gene), "gene-batch" or "gene-cell" (a decoder
        head, DCA's choice)
    corruption : how the encoder input is corrupted in training: "mask" (zero a random
        ``corruption_rate`` of the non-zero counts), "thinning" (keep each count with
        probability 1 - rate, binomially), "gaussian" (add N(0, rate) on the log scale),
        or "none" (a plain autoencoder)
    input_scale : counts per cell the encoder input is normalised to (median library
        of the training data)
    hidden_loss_weight : with ``corruption="mask"``, the share of the loss computed only
        on a random ``corruption_rate`` of all entries hidden from the encoder (noise2self);
        0 (default): the whole cell, DCA's reconstruction loss
    mean_link : "softmax" (expression shares x library: the means sum to the library) or
        "exp" (DCA: exp(output) x library / n_genes, unconstrained)
    n_covariate_categories, n_continuous_covariates : covariates besides the batch, injected
        where the batch is (as :class:`~scgen_ae.models.vae.VAEConfig`)
    """

    n_genes: int
    n_batches: int = 1
    # the objective
    likelihood: str = "zinb"
    dispersion: str = "gene"
    corruption: str = "mask"
    corruption_rate: float = 0.1
    hidden_loss_weight: float = 0.0
    # the network
    n_latent: int = 10  # lower held-out error than 32 on all four shared data sets (BENCHMARKS.md, denoising section)
    n_hidden: int = 128
    n_layers: int = 1
    dropout_rate: float = 0.0
    norm: str | None = "batch"
    encode_batch: bool = True
    batch_gene_offsets: bool = True
    mean_link: str = "softmax"
    input_scale: float = 1e4
    n_covariate_categories: tuple[int, ...] = ()
    n_continuous_covariates: int = 0

    def __post_init__(self):
        check_covariate_sizes(self)
        if not get_likelihood(self.likelihood).counts:  # unknown names are refused there, listing the known
            raise ValueError(f"likelihood={self.likelihood!r}; the denoiser models counts: choose one of "
                             f"{likelihood_names(counts=True)}.")
        choices = {"dispersion": DISPERSIONS, "corruption": CORRUPTIONS, "mean_link": ("softmax", "exp")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {allowed}.")
        ranges = {"n_genes": (1, None), "n_batches": (1, None), "n_latent": (1, None), "n_hidden": (1, None),
                  "n_layers": (1, None), "dropout_rate": (0, 0.999), "corruption_rate": (0, 0.999),
                  "hidden_loss_weight": (0, 1), "input_scale": (1e-9, None)}
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if not (value >= lo and (hi is None or value <= hi)):
                raise ValueError(f"{name}={value!r} is out of range: it must be >= {lo}"
                                 + (f" and <= {hi}." if hi is not None else "."))


class DAEModule(nn.Module):
    def __init__(self, cfg: DAEConfig):
        super().__init__()
        self.cfg = cfg
        self.likelihood = lik = get_likelihood(cfg.likelihood)
        n_cats = [cfg.n_batches] if cfg.n_batches > 1 else []
        # gene-batch: one row of log theta per batch; gene-cell: a decoder head instead (row unused)
        self.log_dispersion = nn.Parameter(torch.zeros(cfg.n_batches if cfg.dispersion == "gene-batch" else 1,
                                                       cfg.n_genes))
        cov_cats, n_cont = cfg.n_covariate_categories, cfg.n_continuous_covariates
        enc = cfg.encode_batch  # the covariates enter the encoder where the batch does
        self.encoder = MLP(cfg.n_genes, cfg.n_hidden, cfg.n_layers, n_cats if enc else [],
                           cfg.dropout_rate, cfg.norm, cov_cats if enc else (), n_cont if enc else 0)
        self.bottleneck = nn.Linear(cfg.n_hidden, cfg.n_latent)
        # the heads besides the mean: the likelihood's own, then a per-cell dispersion (gene-cell)
        self.extra_heads = lik.extra_heads + ("dispersion",) * (cfg.dispersion == "gene-cell" and lik.uses_dispersion)
        self.decoder = CountDecoder(cfg.n_latent, cfg.n_genes, cfg.n_hidden, cfg.n_layers, n_cats,
                                    norm=cfg.norm, n_extra_heads=len(self.extra_heads),
                                    gene_offsets=cfg.batch_gene_offsets, n_cov_cats=cov_cats, n_cont=n_cont)

    def _cats(self, batch: torch.Tensor):
        return [batch] if self.cfg.n_batches > 1 else []

    def encoder_input(self, mb: Minibatch, keep: torch.Tensor | None = None,
                      values: torch.Tensor | None = None) -> torch.Tensor:
        """log1p(counts / library * input_scale), dense ``(n, g)``, built from the non-zeros.

        ``keep`` drops non-zeros and ``values`` replaces their counts (corruption); the
        size factor is taken from the corrupted counts, as the network would see them.
        """
        r, c = mb.nz_row, mb.nz_col
        v = mb.nz_val if values is None else values
        if keep is not None:
            r, c, v = r[keep], c[keep], v[keep]
        n, g = mb.x.shape
        library = torch.zeros(n, dtype=v.dtype, device=v.device).index_add_(0, r, v).clamp_min(1.0)
        x = torch.zeros(n * g, dtype=v.dtype, device=v.device)
        x.index_copy_(0, r * g + c, torch.log1p(v * (self.cfg.input_scale / library[r])))
        return x.view(n, g)

    def corrupted_input(self, mb: Minibatch, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg, v = self.cfg, mb.nz_val
        rate = cfg.corruption_rate
        if cfg.corruption == "none" or rate == 0:
            return self.encoder_input(mb)
        u = torch.rand(v.shape, generator=generator, device=v.device)
        if cfg.corruption == "mask":
            return self.encoder_input(mb, keep=u >= rate)
        if cfg.corruption == "thinning":
            thinned = torch.binomial(v, torch.full_like(v, 1.0 - rate), generator=generator)
            return self.encoder_input(mb, keep=thinned > 0, values=thinned)
        x = self.encoder_input(mb)  # gaussian: every entry, zeros included, on the log scale
        return (x + rate * torch.randn(x.shape, generator=generator, device=x.device)).clamp_min(0.0)

    def encode(self, x: torch.Tensor, batch: torch.Tensor, covs: Covs | None = None) -> torch.Tensor:
        covs = checked_covs(self.cfg, covs)
        if not self.cfg.encode_batch:
            return self.bottleneck(self.encoder(x))
        return self.bottleneck(self.encoder(x, self._cats(batch), covs))

    def decode(self, z: torch.Tensor, batch: torch.Tensor, log_library: torch.Tensor, covs: Covs | None = None) -> dict:
        """The likelihood's parameters (:meth:`~scgen_ae.likelihoods.Likelihood.params`: log
        scale, log mean, ...)."""
        cfg = self.cfg
        covs = checked_covs(cfg, covs)
        head, *rest = [h.float() for h in self.decoder(z, self._cats(batch), covs)]  # fp32 under bf16 autocast
        heads = dict(zip(self.extra_heads, rest))
        if cfg.mean_link == "softmax":
            log_scale = F.log_softmax(head, dim=-1)
        else:  # DCA: exp(head) x size factor, free to sum above the library where zeros are dropouts
            log_scale = head - float(np.log(cfg.n_genes))
        if "dispersion" in heads:
            # a per-cell table: row i of it belongs to cell i
            table, row = heads.pop("dispersion").clamp(-10.0, 12.0), torch.arange(len(batch), device=batch.device)
        else:
            table, row = self.log_dispersion, batch if cfg.dispersion == "gene-batch" else None
        return self.likelihood.params(log_scale, log_library, heads, table, row)

    def hidden_log_prob(self, mb: Minibatch, out: dict, hide: torch.Tensor, rate: float) -> torch.Tensor:
        """Per-cell log-likelihood of the entries flagged in ``hide`` (flat bool, zeros
        included), divided by the rate: an estimate of the whole cell's."""
        n, g = mb.x.shape
        lin = torch.nonzero(hide)[:, 0]
        x = torch.zeros(n * g, device=lin.device).index_copy_(0, mb.nz_row * g + mb.nz_col, mb.nz_val).take(lin)
        lp = self.likelihood.entry_log_prob(x, out, lin // g, lin % g)
        return torch.zeros(n, device=lp.device).index_add_(0, lin // g, lp) / rate

    has_kl = False  # no KL term: no warm-up, early stopping compares from the first epoch

    def loss(self, mb: Minibatch, kl_weight: float = 1.0) -> LossRecord:
        """Training: mean negative log-likelihood of the clean counts given the corrupted
        input (with ``hidden_loss_weight``, partly or only on the hidden entries).

        Evaluation (the validation loss): the negative log-likelihood of a fixed random
        ``VALIDATION_HIDDEN`` of the entries, zeros included, hidden from the encoder --
        a held-out prediction error, what early stopping should watch (the full
        reconstruction keeps improving while predictions of unseen counts get worse).
        ``kl_weight`` is unused.
        """
        n, g = mb.x.shape
        w = self.cfg.hidden_loss_weight
        if not self.training:
            gen = torch.Generator(device=mb.x.device).manual_seed(len(mb.nz_val))
            hide = torch.rand(n * g, generator=gen, device=mb.x.device) < VALIDATION_HIDDEN
            x = self.encoder_input(mb, keep=~hide[mb.nz_row * g + mb.nz_col])
            out = self.decode(self.encode(x, mb.batch, mb.covs), mb.batch, mb.log_library, mb.covs)
            held_out = -self.hidden_log_prob(mb, out, hide, VALIDATION_HIDDEN).mean()
            return LossRecord(total=held_out, reconstruction=held_out)
        hidden = w > 0 and self.cfg.corruption == "mask"
        if hidden:
            hide = torch.rand(n * g, device=mb.x.device) < self.cfg.corruption_rate
            x = self.encoder_input(mb, keep=~hide[mb.nz_row * g + mb.nz_col])
        else:
            x = self.corrupted_input(mb)
        out = self.decode(self.encode(x, mb.batch, mb.covs), mb.batch, mb.log_library, mb.covs)
        log_prob = self.likelihood.cell_log_prob(mb, out)
        if hidden:
            log_prob = (1 - w) * log_prob + w * self.hidden_log_prob(mb, out, hide, self.cfg.corruption_rate)
        loss = -log_prob.mean()
        return LossRecord(total=loss, reconstruction=loss)


def _expected(module: DAEModule, z: torch.Tensor, batch: torch.Tensor, log_library: torch.Tensor,
              library_size, covs: Covs | None = None) -> torch.Tensor:
    """The decoder's mean (``decode``'s exp(log_mu), or shares x ``library_size``) from the
    expression head alone, in place: no dropout or dispersion heads, no log-scale copies,
    so 2-3 (n, g) arrays are alive at once instead of ~10."""
    cfg = module.cfg
    head = module.decoder.first_head(z, module._cats(batch), checked_covs(cfg, covs)).float()
    observed = library_size == "observed"
    if cfg.mean_link == "softmax":
        return torch.softmax(head, dim=-1).mul_(log_library.exp() if observed else float(library_size))
    log_lib = log_library if observed else float(np.log(library_size))
    return head.add_(log_lib - float(np.log(cfg.n_genes))).exp_()


class DAE(BaseModel):
    """A trained (denoising) count autoencoder (see :func:`scgen_ae.tl.denoise`)."""

    counts_otherwise = None  # count likelihoods only: no gaussian to offer

    module_class = DAEModule
    config_class = DAEConfig

    def predict(self, adata: AnnData, *, transform_batch: str | None = None, library_size: float | str = "observed",
                genes=None, layer="model", batch_key="model", batch_size: int = 1024, pad_missing: bool = False,
                outputs=("mean", "latent"), dtype=np.float32,
                transform_covariates: dict | None = None) -> dict[str, np.ndarray]:
        """Denoised values for every cell, computed ``batch_size`` cells at a time.

        Parameters
        ----------
        transform_batch
            Decode every cell as if from this batch; None: its own batch.
        transform_covariates
            Decode every cell as if its covariates besides the batch had these values
            (``{"donor": "d1"}``, raw values as in ``obs``); the others keep each cell's own.
        library_size
            "observed" (expected counts at each cell's library size) or a number of
            counts per cell.
        genes
            Subset of gene names for the per-gene outputs (saves memory).
        outputs
            Any of "mean" (n, g), "latent" (n, n_latent), "dropout" (n, g, zinb only),
            "dispersion" (n, g, not poisson).
        dtype
            Of the per-gene outputs (the latent is float32): each chunk is computed in
            float32 and cast as it is stored, so float16 halves the outputs' memory.

        Memory: the outputs plus a working set of a few (batch_size x n_genes) float32
        arrays (2-3 for the mean alone; about 10 with dropout or dispersion, which need the
        whole decoder output).
        """
        b = self._batch_index(transform_batch)
        decode_covs = self._transformed_covs(transform_covariates)
        # rows are only densified: no sorted copy of the counts, no per-cell likelihood constants
        data = self._cell_data(adata, layer, batch_key, pad_missing, sorted_indices=False)
        cols = None if genes is None else np.asarray([self.var_names.index(g) for g in genes])
        n_out = self.config.n_genes if cols is None else len(cols)
        shapes = {"mean": n_out, "latent": self.config.n_latent, "dropout": n_out, "dispersion": n_out}
        res = {k: np.empty((data.n_cells, shapes[k]), dtype=np.float32 if k == "latent" else dtype) for k in outputs}
        module = self.module

        def fn(mb, part):
            z = module.encode(module.encoder_input(mb), mb.batch, mb.covs)
            batch = mb.batch if b is None else torch.full_like(mb.batch, b)
            covs = decode_covs(mb.covs)
            values = {"latent": z}
            if set(outputs) <= {"mean", "latent"}:
                out = {}
                if "mean" in outputs:
                    values["mean"] = _expected(module, z, batch, mb.log_library, library_size, covs)
            else:
                out = module.decode(z, batch, mb.log_library, covs)
            if "mean" in outputs and "mean" not in values:
                values["mean"] = out["log_mu"].exp() if library_size == "observed" else (
                    out["log_scale"].exp() * float(library_size))
            if "dropout" in outputs:
                values["dropout"] = torch.sigmoid(out["zi_logits"])
            if "dispersion" in outputs:
                values["dispersion"] = out["log_theta"][out["theta_row"]].exp()
            for k in outputs:
                val = values[k]
                if k != "latent" and cols is not None:
                    val = val[:, torch.as_tensor(cols, device=val.device)]
                res[k][part] = val.float().cpu().numpy()

        self._apply(data, fn, batch_size, with_part=True)
        return res

    def _decoder_output(self, mb) -> dict:
        module = self.module.eval()
        return module.decode(module.encode(module.encoder_input(mb), mb.batch, mb.covs), mb.batch, mb.log_library,
                             mb.covs)

    def _log_scale(self, mb, pick, batch, generator=None):
        """The bottleneck is deterministic: no posterior to sample (``generator`` is unused), so
        differential expression sees only the variation between cells."""
        module = self.module.eval()
        z = module.encode(module.encoder_input(mb), mb.batch, mb.covs)[pick]
        covs = mb.covs_of(pick)
        return module.decode(z, batch, torch.zeros(len(z), 1, device=z.device), covs)["log_scale"]

"""scvi-tools' method names on :class:`~scgen_ae.models.VAE`, with scvi-tools' meaning, so code
written for ``scvi.model.SCVI`` runs on a VAE trained here (and the two can be compared)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .. import _validate as v


def _check_n_samples(n_samples) -> int:
    if not v._is_int(n_samples) or n_samples < 1:
        raise v.InputError(f"n_samples={n_samples!r}: it must be an integer >= 1 (1: the posterior mean of z).")
    return int(n_samples)


class ScviToolsNames:
    """Methods under scvi-tools' names (``SCVI.get_latent_representation`` and co.).

    Unlike scvi-tools, ``adata`` is required (a model here does not hold its training data);
    ``layer`` / ``batch_key`` default to those of training, as in :meth:`get_latent`.
    """

    def get_latent_representation(self, adata: AnnData, *, give_mean: bool = True, batch_size: int = 1024,
                                  layer="model", batch_key="model", pad_missing: bool = False,
                                  seed: int = 0) -> np.ndarray:
        """scvi-tools' name of :meth:`get_latent`: ``(n_cells, n_latent)`` posterior means
        (``give_mean=False``: one sample of q(z | x))."""
        return self.get_latent(adata, give_mean=give_mean, batch_size=batch_size, layer=layer, batch_key=batch_key,
                               pad_missing=pad_missing, seed=seed)

    def get_normalized_expression(self, adata: AnnData, *, transform_batch: str | Sequence[str] | None = None,
                                  library_size: float | str = 1e4, genes=None, gene_list=None, n_samples: int = 1,
                                  return_numpy: bool = False, seed: int = 0, layer="model", batch_key="model",
                                  batch_size: int = 1024, pad_missing: bool = False, dtype=np.float32,
                                  transform_covariates: dict | None = None):
        """Decoded expression, as scvi-tools' ``get_normalized_expression``.

        Parameters
        ----------
        transform_batch
            Decode every cell as if it came from this batch (batch correction); a list of
            batches: the average over them (scvi-tools' meaning); None: each cell in its own.
        transform_covariates
            Decode every cell as if its covariates besides the batch had these values, e.g.
            ``{"donor": "d1", "pct_mito": 0.0}`` (raw values, as in ``obs``); covariates not
            named keep each cell's own. The encoder always reads the cells' own values.
        library_size
            A number (counts per cell, default 1e4), or "observed" for the expected counts at
            each cell's own library size. For ``zinb`` these are the NB means, before the
            dropout (scvi-tools' meaning; :meth:`~scgen_ae.likelihoods.Likelihood.expression`).
            Ignored for gaussian.
        genes, gene_list
            Optional subset of gene names (``gene_list`` is scvi-tools' name).
        n_samples
            1 (default): decode the posterior mean of z. More: the mean over this many draws
            of z ~ q(z | x) (seeded by ``seed``).
        return_numpy
            False (default): a data frame, cells (``adata.obs_names``) x genes (the model's
            names, in the model's order); True: the array.
        dtype
            Of the values: decoded in float32 ``batch_size`` cells at a time and cast as
            each chunk is stored into the preallocated ``(n_cells, n_genes)`` output, so
            the memory is the output plus one chunk.
        """
        genes = gene_list if genes is None else genes
        n_samples = _check_n_samples(n_samples)
        batches = list(transform_batch) if isinstance(transform_batch, (list, tuple)) else [transform_batch]
        if not batches:
            raise v.InputError("transform_batch=[] names no batch; pass None, a batch, or a list of batches.")
        codes = [self._batch_index(b) for b in batches]  # unknown batches refused before any work
        decode_covs = self._transformed_covs(transform_covariates)
        missing = [g for g in (genes or []) if g not in set(self.var_names)]
        if missing:
            raise v.InputError(f"genes= / gene_list= names genes the model was not trained on: {missing[:5]}.")
        cols = None if genes is None else torch.as_tensor([self.var_names.index(g) for g in genes], dtype=torch.long)
        gen = torch.Generator().manual_seed(seed)

        def fn(mb, part):
            mean, log_var = (t.float() for t in self.module.inference(mb.x, mb.batch, mb.covs))
            covs = decode_covs(mb.covs)
            total = 0.0
            for b in codes:
                batch = mb.batch if b is None else torch.full_like(mb.batch, b)
                for _ in range(n_samples):
                    z = mean
                    if n_samples > 1:
                        z = mean + torch.randn(mean.shape, generator=gen).to(mean.device) * (0.5 * log_var).exp()
                    out = self.module.generative(z, batch, mb.log_library, covs)
                    total = total + self.module.likelihood.expression(out, library_size)
            res = total / (len(codes) * n_samples)
            res = (res if cols is None else res[:, cols.to(res.device)]).float().cpu().numpy()
            values[part] = res

        values = np.empty((adata.n_obs, self.config.n_genes if cols is None else len(cols)), dtype=dtype)
        self._apply_adata(adata, fn, batch_size, layer=layer, batch_key=batch_key, pad_missing=pad_missing,
                          with_part=True)
        if return_numpy:
            return values
        return pd.DataFrame(values, index=pd.Index(adata.obs_names), columns=list(genes or self.var_names))

    def posterior_predictive_sample(self, adata: AnnData, *, n_samples: int = 1, gene_list=None,
                                    batch_size: int = 1024, seed: int = 0, layer="model", batch_key="model",
                                    pad_missing: bool = False) -> np.ndarray:
        """Draws of new data from the model: z ~ q(z | x), then counts from the likelihood
        (ZINB / NB as Gamma-Poisson, Poisson; gaussian values) at each cell's library size.
        ``(n_cells, n_genes)`` for ``n_samples=1``, else ``(n_cells, n_genes, n_samples)``."""
        n_samples = _check_n_samples(n_samples)
        missing = [g for g in (gene_list or []) if g not in set(self.var_names)]
        if missing:
            raise v.InputError(f"gene_list= names genes the model was not trained on: {missing[:5]}.")
        cols = None if gene_list is None else [self.var_names.index(g) for g in gene_list]
        gen = torch.Generator().manual_seed(seed)

        def fn(mb):
            mean, log_var = (t.float() for t in self.module.inference(mb.x, mb.batch, mb.covs))
            draws = []
            for _ in range(n_samples):
                z = mean + torch.randn(mean.shape, generator=gen).to(mean.device) * (0.5 * log_var).exp()
                out = self.module.generative(z, mb.batch, mb.log_library, mb.covs)
                x = self.module.likelihood.sample(out, gen).cpu()
                draws.append(x if cols is None else x[:, cols])
            return torch.stack(draws, -1)

        values = torch.cat(self._apply_adata(adata, fn, batch_size, layer=layer, batch_key=batch_key,
                                             pad_missing=pad_missing)).numpy()
        return values[..., 0] if n_samples == 1 else values

    def _per_cell(self, adata, fn, *, batch_size, layer, batch_key, pad_missing) -> np.ndarray:
        """Per-cell likelihood scores: the minibatches carry the likelihood's constants."""
        return torch.cat(self._apply_adata(adata, fn, batch_size, layer=layer, batch_key=batch_key,
                                           pad_missing=pad_missing, constants=True)).numpy()

    def get_reconstruction_error(self, adata: AnnData, *, batch_size: int = 1024, layer="model", batch_key="model",
                                 pad_missing: bool = False) -> dict[str, float]:
        """``{"reconstruction_loss": mean over cells of -log p(x | z)}`` at the posterior mean of z
        (scvi-tools' name and return type)."""
        def fn(mb):
            mean, _ = self.module.inference(mb.x, mb.batch, mb.covs)
            out = self.module.generative(mean.float(), mb.batch, mb.log_library, mb.covs)
            return -self.module.likelihood.cell_log_prob(mb, out).cpu()

        per_cell = self._per_cell(adata, fn, batch_size=batch_size, layer=layer, batch_key=batch_key,
                                  pad_missing=pad_missing)
        return {"reconstruction_loss": float(per_cell.mean())}

    def get_elbo(self, adata: AnnData, *, batch_size: int = 1024, layer="model", batch_key="model",
                 pad_missing: bool = False) -> float:
        """Mean over cells of the negative ELBO (reconstruction at the posterior mean + beta x KL):
        the quantity of ``history["validation_loss"]``, positive like scvi-tools' ``get_elbo``."""
        def fn(mb):
            mean, log_var = (t.float() for t in self.module.inference(mb.x, mb.batch, mb.covs))
            out = self.module.generative(mean, mb.batch, mb.log_library, mb.covs)
            kl = 0.5 * (log_var.exp() + mean**2 - 1.0 - log_var).sum(-1)
            return (-self.module.likelihood.cell_log_prob(mb, out) + self.config.beta * kl).cpu()

        return float(self._per_cell(adata, fn, batch_size=batch_size, layer=layer, batch_key=batch_key,
                                    pad_missing=pad_missing).mean())

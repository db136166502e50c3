"""scArches-style architecture surgery: map cells from new batches onto a trained VAE.

The reference model's batch enters through per-category tables only: the rows of the
``nn.Embedding`` offsets inside every ``CovariateLinear`` (encoder and decoder layers,
the decoder's per-gene offsets) and, with ``dispersion="gene-batch"``, the rows of
``log_dispersion``. Surgery copies the module, appends one row per new batch to each of
these tables (initialised to the mean of the reference rows: "an average batch"), and
trains only those new rows on the query cells through the common ``train.fit``.

A reference trained on a single batch has no such tables (one batch needs no offsets):
the copy gets them with the reference's row at zero, which adds exactly nothing, so the
reference cells are still encoded and decoded as before. The label classifier, when the
reference has one, is copied frozen: query cells get labels from it (``VAE.predict``).

Everything the reference cells see stays bit-identical, which needs care:

- gradients of every other parameter are switched off, and a hook zeroes the gradient
  of the reference rows inside the extended tables;
- Adam's weight decay would still move rows with a zero gradient, so it is 0 here
  (with zero gradient and zero weight decay Adam's update is exactly 0);
- BatchNorm updates its running statistics in train mode: the wrapper keeps every
  normalisation layer in eval mode while training;
- as a last guarantee the reference rows are copied back after training.
"""
from __future__ import annotations

import copy as _copy
import dataclasses
import warnings

import numpy as np
import torch
from anndata import AnnData
from torch import nn

from .. import _validate as v
from .._results import params_record, write_and_return
from ..train import History, TrainConfig, fit, seeded_threads, train_config, warn_interrupted


class _NewRowsOnly(nn.Module):
    """Training wrapper: the VAE loss, with normalisation layers frozen in eval mode."""

    def __init__(self, vae_module: nn.Module):
        super().__init__()
        self.vae = vae_module

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.vae.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                m.eval()  # running statistics belong to the reference
        return self

    @property
    def has_kl(self) -> bool:
        return self.vae.has_kl

    def loss(self, mb, kl_weight: float = 1.0):
        """The wrapped VAE's :class:`~scgen_ae.losses.LossRecord`."""
        return self.vae.loss(mb, kl_weight)


def _category_tables(module: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter indexed by a category, by name: the batch's and the categorical
    covariates' embedding tables, and gene-batch dispersion."""
    tables = {name: p for name, p in module.named_parameters()
              if ".offsets." in f".{name}" or ".covariate_offsets." in f".{name}"}
    if module.cfg.dispersion == "gene-batch":
        tables["log_dispersion"] = module.log_dispersion
    return tables


def _extend_module(ref_module: nn.Module, n_new: int, n_new_covariates: tuple[int, ...] = ()):
    """A copy of ``ref_module`` with ``n_new`` more batch rows and ``n_new_covariates[j]`` more
    rows for categorical covariate j, only those rows trainable.

    Returns (module, [(table, its reference rows)], gradient-hook handles).
    """
    ref_cfg = ref_module.cfg
    cov_sizes = tuple(n + k for n, k in zip(ref_cfg.n_covariate_categories, n_new_covariates or
                                            (0,) * len(ref_cfg.n_covariate_categories)))
    cfg = dataclasses.replace(ref_cfg, n_batches=ref_cfg.n_batches + n_new, n_covariate_categories=cov_sizes)
    new = type(ref_module)(cfg)
    ref_state = ref_module.state_dict()
    new_state = new.state_dict()
    for key, value in ref_state.items():
        target = new_state[key]
        if target.shape == value.shape:
            target.copy_(value)
        else:  # a category table: reference rows first, new rows start at their mean
            n_ref = value.shape[0]
            target[:n_ref] = value
            target[n_ref:] = value.mean(0, keepdim=True)
    for key in new_state.keys() - ref_state.keys():  # the batch tables a one-batch reference lacks
        new_state[key].zero_()  # its row adds nothing; new rows start there too
    new.load_state_dict(new_state)
    frozen, hooks = [], []
    for p in new.parameters():
        p.requires_grad_(False)
    for name, table in _category_tables(new).items():
        # rows the reference had (a table it lacked: its one batch's row, zero)
        n_ref = ref_state[name].shape[0] if name in ref_state else ref_cfg.n_batches
        table.requires_grad_(True)
        mask = torch.ones_like(table)
        mask[:n_ref] = 0.0
        hooks.append(table.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device)))
        frozen.append((table, table.detach()[:n_ref].clone()))
    return new, frozen, hooks


def _query_categories(adata: AnnData, batch_key: str, known: list[str]) -> tuple[list[str], list[str]]:
    """(known + new categories in order, new categories); new ones need >= 3 cells."""
    if batch_key not in adata.obs:
        cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise v.InputError(f"batch_key={batch_key!r} is not a column of the query's obs (columns: {cols}).")
    col = adata.obs[batch_key]
    if col.isna().any():
        raise v.InputError(f"query.obs[{batch_key!r}] has {int(col.isna().sum())} missing values; assign those "
                           "cells a batch or drop them.")
    new = [c for c in v.present_categories(col) if c not in known]
    counts = col.astype(str).value_counts()
    small = {c: int(counts[c]) for c in new if counts[c] < 3}
    if small:
        raise v.InputError(f"query.obs[{batch_key!r}] has new batches with fewer than 3 cells: {small}. Merge them "
                           "into a larger batch or drop those cells.")
    return list(known) + new, new


def gene_report(adata: AnnData, var_names: list[str]) -> dict:
    """How the query's genes relate to the model's: missing, extra (dropped), reordered."""
    query = [str(g) for g in adata.var_names]
    in_query = set(query)
    missing = [g for g in var_names if g not in in_query]
    model_set = set(var_names)
    shared_in_query_order = [g for g in query if g in model_set]
    shared_in_model_order = [g for g in var_names if g in in_query]
    return {
        "n_model_genes": len(var_names),
        "missing": missing,
        "n_missing": len(missing),
        "n_extra_dropped": sum(g not in model_set for g in query),
        "reordered": shared_in_query_order != shared_in_model_order,
    }


def map_query(model, adata: AnnData, *, batch_key: str, layer="model", pad_missing: bool = False,
              key_added: str = "X_vae", uns_key: str = "map_query", copy: bool = False, **train_kwargs):
    """Extend ``model`` with the query's new batches and train only their parameters.

    See :meth:`scgen_ae.models.VAE.map_query` for the parameters and what is written.
    """
    v.check_target(adata, copy, "model.map_query")
    if model.batch_key is None:
        raise v.InputError(
            "map_query needs a model trained with a batch key (sa.tl.vae(..., batch_key=...)): this one was trained "
            "with batch_key=None, so its cells have no batch to tell the query's apart from. Apply it directly "
            "with model.get_latent(query), or retrain with a batch key (a single category is allowed).")
    weight_decay = train_kwargs.pop("weight_decay", 0.0)
    if weight_decay:
        raise ValueError("map_query trains with weight_decay=0: any weight decay would move the frozen "
                         "reference parameters. Leave weight_decay out.")
    unknown = sorted(set(train_kwargs) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise TypeError(f"map_query() got unexpected keyword arguments {unknown}.")
    train_cfg = train_config(weight_decay=0.0, **train_kwargs)
    layer = model.layer if layer == "model" else layer
    likelihood = model.config.likelihood

    genes = gene_report(adata, model.var_names)
    v.align_genes(adata, model.var_names, pad_missing)  # every model gene there, or padding asked for
    categories, new = _query_categories(adata, batch_key, model.batch_categories)
    covariates, new_covariates = model.covariates.extended(adata.obs)
    small = {k: c for k, added in new_covariates.items() for c in added
             if int((adata.obs[k].astype(str) == c).sum()) < 3}
    if small:
        raise v.InputError(f"The query has new covariate categories with fewer than 3 cells: {small}. Merge them "
                           "into a larger category or drop those cells.")
    n_new_covariates = tuple(len(new_covariates.get(k, ())) for k in covariates.categorical_keys)

    ref_module = _copy.deepcopy(model.module).cpu()  # the reference object is never touched
    with seeded_threads(train_cfg.seed, train_cfg.n_threads):
        module, frozen, hooks = _extend_module(ref_module, len(new), n_new_covariates)
        mapped = type(model)(module.cfg, model.var_names, batch_key, categories, layer, None, module,
                             label_categories=model.label_categories, label_key=model.label_key,
                             covariates=covariates)
        # the extended model's own boundary: the query's counts checked and coded by the extended
        # categories, streamed from disk when the query is backed
        data = mapped._cell_data(adata, layer, batch_key, pad_missing)
        empty = int((data.library == 0).sum())
        if empty:
            raise v.InputError(f"{empty} query cells have no counts in the model's {len(model.var_names)} genes. "
                               "Drop them first (sa.pp.drop_empty on the query restricted to the model's genes).")
        if new or any(n_new_covariates):
            history = fit(_NewRowsOnly(module), data, train_cfg, likelihood).as_dict()
        else:
            warnings.warn(f"Every query batch is one of the model's batches {model.batch_categories} (and every "
                          "covariate category is known): nothing to train; the query is embedded with the reference "
                          "parameters.", UserWarning, stacklevel=3)
            history = History().as_dict()
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for table, ref_rows in frozen:
                table[: len(ref_rows)] = ref_rows.to(table.device)
        for p in module.parameters():
            p.requires_grad_(True)
        module.eval()
        mapped.history = history
        if history["interrupted"]:
            warn_interrupted("the query rows trained so far; use model.get_latent(query, batch_key=...) or "
                             "model.save(path), or map again.", stacklevel=4)
            return mapped
        latent = mapped.get_latent(adata, layer=layer, batch_key=batch_key, pad_missing=pad_missing)

    if genes["n_missing"]:
        warnings.warn(f"{genes['n_missing']} of the model's genes are missing from the query and were filled with "
                      f"zeros (e.g. {genes['missing'][:5]}); see uns[{uns_key!r}]['genes'].", UserWarning, stacklevel=3)
    record = {
        "params": params_record(batch_key=batch_key, layer=layer, pad_missing=pad_missing,
                                **dataclasses.asdict(train_cfg)),
        "new_batches": list(new), "batch_categories": list(categories),
        "new_covariate_categories": {k: list(c) for k, c in new_covariates.items()},
        "genes": {**genes, "missing": np.asarray(genes["missing"], dtype=str)},
        "history": history, "key_added": key_added,
    }
    # called by VAE.map_query: the warning points one frame further up, at the caller of the method
    return write_and_return(adata, mapped, copy=copy, uns_key=uns_key, stacklevel=4, obsm={key_added: latent},
                            uns={uns_key: record})

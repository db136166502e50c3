"""``tl.vae(backend="scvi-tools")``: scvi-tools' SCVI / LinearSCVI behind tl.vae's API and keys."""
from __future__ import annotations

import dataclasses

from anndata import AnnData

from .. import _validate as v
from ._common import params_record, split_kwargs, training_data, write_and_return
from ._composition import check_label_key, composition_record


def vae_scvi_tools(adata: AnnData, *, batch_key: str | None, layer: str | None, label_key: str | None, likelihood: str,
                   n_latent: int, n_hidden: int, n_layers: int, dropout_rate: float, dispersion: str,
                   beta: float, encode_batch: bool, batch_gene_offsets: bool, mmd_weight: float,
                   covariate_independence_weight: float, linear_decoder: bool, key_added: str, uns_key: str, copy: bool, train_kwargs: dict,
                   covariates=None):
    """Validate like the native backend, map the arguments, train, write the same keys.

    See :func:`scgen_ae.tl.vae` for the argument mapping. Returns the trained scvi-tools
    model (``scvi.model.SCVI`` or ``LinearSCVI``), or the annotated copy with ``copy=True``.
    """
    from ..bridge import scvi_tools as bridge

    train_cfg, rest = split_kwargs(dict(train_kwargs))
    if rest:
        raise TypeError(f"vae() got unexpected keyword arguments {sorted(rest)}.")
    ran = bridge.native_only_values(
        {"batch_gene_offsets": batch_gene_offsets, "mmd_weight": mmd_weight, "encode_batch": encode_batch,
         "covariate_independence_weight": covariate_independence_weight},
        linear_decoder)
    model_kwargs, fit_kwargs = bridge.vae_arguments(
        likelihood=likelihood, dispersion=dispersion, n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers,
        dropout_rate=dropout_rate, beta=beta, encode_batch=encode_batch, linear_decoder=linear_decoder,
        train=train_cfg, n_cells=adata.n_obs)
    # the same input checks (and errors) as the native backend, before scvi-tools is imported
    _, cats = training_data(adata, layer, batch_key, likelihood)
    if covariates and linear_decoder:
        raise ValueError("LinearSCVI takes no covariates besides the batch; pass linear_decoder=False (SCVI) or "
                         "leave categorical_covariate_keys / continuous_covariate_keys out.")
    check_label_key(adata, label_key)
    v.check_n_latent(n_latent, adata.n_vars)
    result = bridge.fit_scvi(adata, batch_key=batch_key, layer=layer, model_kwargs=model_kwargs,
                             train_kwargs=fit_kwargs, linear_decoder=linear_decoder, seed=train_cfg.seed,
                             n_threads=train_cfg.n_threads, covariates=covariates)

    scvi = bridge.import_scvi()
    record = dict(
        batch_key=batch_key, layer=layer, n_genes=adata.n_vars, n_batches=len(cats), likelihood=likelihood,
        n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate,
        dispersion=dispersion, beta=beta, encode_batch=encode_batch, batch_gene_offsets=batch_gene_offsets,
        mmd_weight=mmd_weight, mmd_mnn_k=0, mnn_bandwidth=0.0, label_key=label_key, **dataclasses.asdict(train_cfg),
        unlabeled_category=None, n_labels=0, classification_weight=0.0,  # no classifier on this backend
        norm="batch",  # scvi-tools' default batch norm in the hidden layers, as the native VAEConfig.norm
        mask_var=None,  # scvi-tools trains on every gene of adata
        categorical_covariate_keys=list(covariates.categorical_keys) if covariates else [],
        continuous_covariate_keys=list(covariates.continuous_keys) if covariates else [],
        n_covariate_categories=list(covariates.n_categories) if covariates else [],
        n_continuous_covariates=covariates.n_continuous if covariates else 0,
    )
    record.update(ran)  # what actually ran, not what the native defaults say
    record.update(max_epochs=fit_kwargs["max_epochs"], kl_warmup_epochs=fit_kwargs["plan_kwargs"]["n_epochs_kl_warmup"],
                  backend="scvi-tools", scvi_model="LinearSCVI" if linear_decoder else "SCVI",
                  scvi_tools_version=str(scvi.__version__), linear_decoder=linear_decoder)
    varm = {f"{uns_key}_loadings": result.loadings} if linear_decoder else None
    uns = {"params": params_record(**record), "history": result.history, "key_added": key_added}
    composition = composition_record(adata, batch_key=batch_key, label_key=label_key, embedding=result.latent,
                                     use_rep=key_added, seed=train_cfg.seed, front="tl.vae (scvi-tools)",
                                     control="scvi-tools' SCVI adds no alignment penalty; check that such groups "
                                             "stay apart, and see uns[uns_key]['composition'].",
                                     stacklevel=5)
    if composition is not None:
        uns["composition"] = composition
    # called by tl.vae: the warnings point one frame further up, at the caller of tl.vae
    return write_and_return(adata, result.model, copy=copy, uns_key=uns_key, stacklevel=4,
                            obsm={key_added: result.latent}, varm=varm, uns={uns_key: uns})

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate as v
from .._settings import logger
from ..covariates import CovariateSpec
from ..models.dae import DAE, DAEConfig, DAEModule
from ..likelihoods import get_likelihood, likelihood_names
from ..models.vae import VAE
from ..train import fit, seeded_threads, warn_interrupted
from ._common import params_record, split_kwargs, training_data, write_and_return
from ._composition import batch_names, check_label_key, composition as composition_report, warn_if_unbalanced

DAE_FIELDS = {f.name for f in dataclasses.fields(DAEConfig)} - {"n_genes", "n_batches", "likelihood", "input_scale",
                                                               "n_covariate_categories", "n_continuous_covariates"}
METHODS = ("dae", "vae")
OUT_DTYPES = ("float32", "float16")  # float64 would add no precision: the decoders compute in float32
FLOAT16_MAX = float(np.finfo(np.float16).max)


def _check_model_genes(adata: AnnData, model_genes: list[str], genes) -> None:
    """A trained model decodes its own genes only: refuse outputs it cannot fill, before any work.

    ``layers`` hold one column per gene of ``adata``, so a denoised layer needs ``adata`` to
    have exactly the model's genes (in any order: the columns are reordered). With more
    genes, the model's values could only fill part of the layer; rather than pad it with
    made-up values (NaN or 0), this is refused with the two ways that work.
    """
    v.align_genes(adata, model_genes)  # every model gene present (else a clear error), names unique
    if genes is not None:
        unknown = [g for g in genes if str(g) not in set(model_genes)]
        if unknown:
            raise v.InputError(f"genes= names {len(unknown)} genes the model was not trained on (e.g. {unknown[:5]}); "
                               "the model decodes only its own genes (model.var_names).")
    elif set(map(str, adata.var_names)) != set(model_genes):
        raise v.InputError(
            f"adata has {adata.n_vars} genes but the model was trained on {len(model_genes)} of them, so its "
            f"denoised values cannot fill a layer of adata (one column per gene). Either pass "
            f"genes=model.var_names (the model's genes, stored as a data frame in obsm), or denoise the model's "
            f"genes only: sa.tl.denoise(adata[:, model.var_names].copy(), model=model)."
        )


def _out_dtype(dtype) -> np.dtype:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in OUT_DTYPES:
        raise v.InputError(f"dtype={dtype!r} is not an output type of sa.tl.denoise; choose 'float32' (default) or "
                           "'float16' (half the memory, about 3 significant digits, values up to 65,504).")
    return np.dtype(name)


def _check_request(adata: AnnData, *, method, layer, batch_key, transform_batch, library_size, genes,
                   layer_added, overwrite, return_info, likelihood, known_batches, chunk_size) -> None:
    """Everything about the call that can be refused before any training."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise v.InputError(f"chunk_size={chunk_size!r}; pass a whole number of cells >= 1 (default 1024).")
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose 'dae' (the denoising autoencoder) or 'vae' (tl.vae's decoder).")
    if not (library_size == "observed" or (isinstance(library_size, (int, float)) and library_size > 0)):
        raise ValueError(f"library_size={library_size!r}; pass 'observed' or a positive number of counts per cell.")
    if return_info and method == "vae":
        raise ValueError("return_info=True is available for method='dae' only (the VAE front does not expose "
                         "dropout probabilities); use method='dae' or return_info=False.")
    if return_info and not get_likelihood(likelihood).uses_dispersion:
        with_dispersion = [n for n in likelihood_names(counts=True) if get_likelihood(n).uses_dispersion]
        raise ValueError(f"return_info=True needs a likelihood with a dispersion ({', '.join(with_dispersion)}): "
                         f"a {type(get_likelihood(likelihood)).__name__} has no dispersion or dropout.")
    if layer_added is None and genes is not None:
        raise ValueError("layer_added=None (write to adata.X) needs all genes; pass genes=None or a layer_added name.")
    holds_counts = layer_added == layer  # None == None: both name adata.X
    if holds_counts and not overwrite:
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        raise v.InputError(
            f"layer_added={layer_added!r} would overwrite {where}, which holds the counts being denoised. Pass "
            "another layer_added (default 'denoised'), or overwrite=True to replace the counts on purpose."
        )
    if genes is not None:
        if isinstance(genes, str):
            raise v.InputError(f"genes= / gene_list={genes!r} is one string; pass a list of gene names, "
                               f"e.g. [{genes!r}].")
        names = set(map(str, adata.var_names))
        missing = [str(g) for g in genes if str(g) not in names]
        if missing:
            raise v.InputError(f"genes= / gene_list= names {len(missing)} genes that are not in adata.var_names: "
                               f"{missing[:10]}{' ...' if len(missing) > 10 else ''}; pass names from var_names.")
        if not len(genes):
            raise v.InputError("genes= / gene_list= is empty; pass gene names from adata.var_names, or None for "
                               "all genes.")
        index = pd.Index([str(g) for g in genes])
        repeated = list(index[index.duplicated()].unique())
        if repeated:
            raise v.InputError(f"genes= / gene_list= names {repeated[:5]} more than once; list each gene once.")
    if transform_batch is not None:
        if batch_key is None:
            raise v.InputError(f"transform_batch={transform_batch!r} needs batch_key= naming the obs column "
                               "of the batches (or a model trained with batches).")
        cats = known_batches
        if cats is None and batch_key in adata.obs:  # training here: the batches of the data
            cats = sorted(set(adata.obs[batch_key].dropna().astype(str)))
        if cats is not None and str(transform_batch) not in cats:
            raise v.InputError(f"transform_batch={transform_batch!r} is not a batch of adata.obs[{batch_key!r}] "
                               f"(batches: {cats}).")


def _train_dae(adata, layer, batch_key, likelihood, kwargs, covariates: CovariateSpec) -> DAE:
    train_cfg, rest = split_kwargs(dict(kwargs))
    arch = {k: rest.pop(k) for k in list(rest) if k in DAE_FIELDS}
    if rest:
        raise TypeError(f"denoise() got unexpected keyword arguments {sorted(rest)}.")
    if "patience" not in kwargs:  # the validation loss is a held-out error: it turns within ~10 epochs
        train_cfg = dataclasses.replace(train_cfg, patience=10)
    if "max_epochs" not in kwargs:
        train_cfg = dataclasses.replace(train_cfg, max_epochs=default_epochs(adata.n_obs))
    # the DAE has no gaussian
    data, cats = training_data(adata, layer, batch_key, likelihood, otherwise=None, covariates=covariates)
    v.check_n_latent(arch.get("n_latent", DAEConfig.n_latent), adata.n_vars)
    config = DAEConfig(n_genes=adata.n_vars, n_batches=len(cats), likelihood=likelihood,
                       input_scale=float(np.median(data.library)), n_covariate_categories=covariates.n_categories,
                       n_continuous_covariates=covariates.n_continuous, **arch)
    with seeded_threads(train_cfg.seed, train_cfg.n_threads):
        module = DAEModule(config)
        history = fit(module, data, train_cfg, likelihood)
    model = DAE(config, adata.var_names, batch_key, cats, layer, history.as_dict(), module, covariates=covariates)
    model.train_params = dataclasses.asdict(train_cfg)
    model.interrupted = history.interrupted
    return model


def default_epochs(n_cells: int) -> int:
    """Epochs when ``max_epochs`` is not given: about 20,000 minibatch steps' worth of cells,
    between 20 and 100 (early stopping usually ends training sooner)."""
    return int(np.clip(round(100 * 10000 / max(n_cells, 1)), 20, 100))


def _train_vae(adata, layer, batch_key, likelihood, kwargs, covariates: CovariateSpec) -> VAE:
    from ._vae import fit_only

    # a light AnnData that shares the counts: the VAE sees only these obs columns, and every gene (no
    # var["highly_variable"] for tl.vae's default mask_var)
    columns = ([batch_key] if batch_key is not None else []) + list(covariates.categorical_keys
                                                                   + covariates.continuous_keys)
    if kwargs.get("label_key") is not None:  # tl.vae's labels (classifier, "auto"'s check) travel too
        check_label_key(adata, kwargs["label_key"])  # here: the light AnnData's error would list its columns only
        columns.append(kwargs["label_key"])
    light = AnnData(X=adata.X if layer is None else None, obs=adata.obs[columns],
                    var=pd.DataFrame(index=adata.var_names),
                    layers={layer: adata.layers[layer]} if layer is not None and layer in adata.layers else None)
    # stacklevel 4: tl.vae's warnings point at the line that called sa.tl.denoise; an interruption
    # is not warned about there, denoise warns once itself with its own advice
    model = fit_only(light, stacklevel=4, batch_key=batch_key, layer=layer, likelihood=likelihood,
                     categorical_covariate_keys=list(covariates.categorical_keys),
                     continuous_covariate_keys=list(covariates.continuous_keys), **kwargs)
    model.train_params = dict(kwargs)
    model.interrupted = bool(model.history.get("interrupted", False))
    return model


def denoise(
    adata: AnnData,
    *,
    method: str | None = None,
    batch_key: str | None = None,
    layer: str | None = None,
    likelihood: str = "zinb",
    model: DAE | VAE | None = None,
    categorical_covariate_keys: Sequence[str] | None = None,
    continuous_covariate_keys: Sequence[str] | None = None,
    transform_batch: str | None = None,
    transform_covariates: dict | None = None,
    library_size: float | str = "observed",
    genes: Sequence[str] | None = None,
    gene_list: Sequence[str] | None = None,
    dtype: str = "float32",
    return_info: bool = False,
    layer_added: str | None = "denoised",
    key_added: str | None = None,
    uns_key: str = "denoise",
    overwrite: bool = False,
    chunk_size: int = 1024,
    copy: bool = False,
    **kwargs,
) -> DAE | VAE | AnnData:
    """Denoise counts with a ZINB/NB/Poisson (denoising) autoencoder or a trained VAE.

    ``method="dae"`` (default) trains a DCA-style autoencoder: log1p(size-factor
    normalised counts) + batch -> bottleneck -> batch-conditional decoder -> mean,
    dispersion and dropout of a ZINB / NB / Poisson. During training a random 10 % of
    the non-zero counts are masked in the encoder input and the loss is computed
    against the clean counts (``corruption="mask"``; see BENCHMARKS.md for why masking).
    ``method="vae"`` uses :func:`scgen_ae.tl.vae`'s decoder instead: trained here with
    ``**kwargs`` forwarded, or the trained ``model=`` you pass.

    Parameters
    ----------
    adata
        Cells x genes; raw counts in ``X`` or ``layers[layer]`` (sparse or dense).
    method
        "dae" or "vae"; default: the kind of ``model``, else "dae".
    batch_key
        ``obs`` column of the batches (encoder and decoder covariate); default: the
        model's when ``model`` is given.
    layer
        Layer with the counts; None uses ``X`` (or, with ``model``, the model's layer).
    likelihood
        "zinb" (default), "nb" or "poisson" (training only).
    model
        A trained :class:`~scgen_ae.models.DAE` or :class:`~scgen_ae.VAE`: applied to
        ``adata`` without training. Genes are matched by name, so ``adata`` must hold every
        gene of the model. A denoised layer needs ``adata`` to have exactly the model's
        genes (any order); for an ``adata`` with more genes (e.g. a model trained on HVGs)
        pass ``genes=model.var_names`` (the model's genes, as ``obsm`` data frames) or
        ``adata[:, model.var_names].copy()``: otherwise the call is refused before anything
        is written (the model has no values to fill the other genes' columns with).
    categorical_covariate_keys, continuous_covariate_keys
        ``obs`` columns of nuisance factors besides the batch, injected where the batch is
        (training only; a trained ``model`` reads its own from ``obs``). See
        :func:`~scgen_ae.tl.vae` for what they do and what is refused.
    transform_batch
        Decode every cell as if it came from this batch (denoised *and* batch-corrected);
        None decodes each cell in its own batch. With a VAE trained here, a
        :class:`~scgen_ae.tl.CompositionWarning` names the cells of groups this batch lacks
        (labels with ``label_key=``, else clusters of the latent): their values are decoded
        in a batch the decoder never saw them in.
    transform_covariates
        Decode every cell as if its covariates had these values, e.g. ``{"donor": "d1",
        "percent_mito": 0.0}`` (raw values, as in ``obs``); covariates not named keep each
        cell's own. Checked against the model before anything is written.
    library_size
        "observed" (default): expected counts at each cell's observed library size (what
        :func:`denoise_benchmark` scores); a number: normalised to that many counts.
    genes, gene_list
        Only these genes in the outputs (``gene_list`` is scvi-tools' name; pass one of
        the two). They go to ``obsm[layer_added]`` as a (n_cells, len(genes)) data frame
        with the genes as columns, not to ``layers``: a layer has a column for every gene,
        and filling the others with zeros (dense or as a sparse matrix) would read as
        "predicted zero expression" to any tool that uses the layer, while NaN would break
        most of them. A data frame holds only what was computed and names its genes.
    dtype
        "float32" (default) or "float16" of the per-gene outputs (the bottleneck stays
        float32). Each chunk is decoded in float32 and rounded as it is stored, so float16
        output equals the float32 output cast to float16 (relative error <= 2^-11 above
        6e-5) at half the memory; a value above float16's largest (65,504 expected
        counts) is refused with the advice to use float32 or ``library_size=1e4``. No
        sparse option: the denoised means are positive for every gene of every cell, so a
        sparse matrix of them would only be larger.
    return_info
        Also store the ZINB/NB dropout probabilities and dispersions (``method="dae"``).
    layer_added
        Layer of the denoised values; None writes them to ``X``. Writing over the
        matrix that holds the counts needs ``overwrite=True``.
    key_added
        ``obsm`` key of the bottleneck (default "X_dae"; "X_vae" for ``method="vae"``).
    uns_key
        ``uns`` key of the parameters and loss history.
    chunk_size
        Cells decoded at a time (default 1024), each chunk written into the preallocated
        output; the working memory is a few ``chunk_size x n_genes`` float32 arrays.
    copy
        Work on a copy and return it (as scanpy); the model is then ``sa.tl.get_model(copy, uns_key)``.
    **kwargs
        ``method="dae"``: architecture (``n_latent`` 10, ``n_hidden`` 128, ``n_layers`` 1,
        ``dropout_rate`` 0, ``dispersion`` "gene"/"gene-batch"/"gene-cell",
        ``corruption`` "mask"/"thinning"/"gaussian"/"none", ``corruption_rate`` 0.1,
        ``hidden_loss_weight`` 0, ``mean_link`` "softmax"/"exp", ``encode_batch``,
        ``batch_gene_offsets``; see :class:`~scgen_ae.models.dae.DAEConfig`) and training options of
        :class:`scgen_ae.train.TrainConfig` (``max_epochs``: default
        :func:`default_epochs`, early stopping on the masked validation loss with
        ``patience`` 10 by default, ``seed``,
        ``n_threads``, ...). ``method="vae"``: any :func:`scgen_ae.tl.vae` option.
        ``mean_link="exp"`` (DCA's: means free of the library-sum constraint) lowered the
        held-out mean absolute error (at n_latent 32) by 7-14 % on the PBMC data sets and
        0-2 % on the CellBench ones (BENCHMARKS.md, issue 5), but its rows sum above the
        library (1.4x on Kang) and single predictions can exceed it; the default "softmax"
        keeps each cell's expected counts summing to its library (or to ``library_size``).

    Notes
    -----
    Memory: the outputs are dense, ``n_cells x n_genes x 4`` bytes in float32 for the denoised
    layer (100k cells x 20k genes: 8 GB; x 2,000 HVGs: 0.8 GB), half that with
    ``dtype="float16"``, as much again for each of the dropout and dispersion layers
    with ``return_info``. ``genes=`` keeps only the genes you need. Beyond the outputs,
    the working memory does not grow with the cells: about 4 ``chunk_size x n_genes``
    float32 arrays for the mean alone (the whole decoder output, ~10, with
    ``return_info``) plus ~0.1 GB; 0.22-0.27 GB measured at 11,220 genes and
    ``chunk_size=1024`` (BENCHMARKS.md, "Writing the output at scale"). What was written
    (key, shape, dtype, MB) is logged at info level (``sa.settings.verbosity = 2``).

    Returns
    -------
    The model; with ``copy=True`` the annotated copy of ``adata`` (the model:
    :func:`~scgen_ae.tl.get_model`). On Ctrl-C during training the
    model with the best weights so far is returned and ``adata`` is left unchanged; so
    do errors. Sets

    - ``adata.layers[layer_added]``: (n_cells, n_genes) denoised values (or
      ``obsm[layer_added]``, a (n_cells, len(genes)) data frame, with ``genes=``).
    - with ``return_info``: ``layers[layer_added + "_dropout"]`` (zinb) and
      ``layers[layer_added + "_dispersion"]`` (theta), same shapes (``obsm`` with ``genes=``).
    - ``adata.obsm[key_added]``: (n_cells, n_latent) bottleneck / latent means.
    - ``adata.uns[uns_key]``: ``params`` (the arguments), ``history`` (per-epoch
      ``train_loss``: the training objective per cell; ``validation_loss``: negative
      log-likelihood per cell of 10 % of the entries of the validation cells, hidden from
      the encoder, i.e. a held-out prediction error, which early stopping watches;
      ``best_epoch``, ``seconds``), ``method``, ``layer_added``, ``key_added``;
      ``params`` includes ``genes``, ``dtype`` and ``chunk_size``.
    """
    v.check_target(adata, copy, "sa.tl.denoise")
    if genes is not None and gene_list is not None:
        raise v.InputError("genes= and gene_list= are the same option (gene_list is scvi-tools' name); pass one.")
    genes = gene_list if genes is None else genes
    out_dtype = _out_dtype(dtype)
    if model is not None and not isinstance(model, (DAE, VAE)):
        raise TypeError(f"model= must be a trained sa.models.DAE or sa.VAE, got {type(model).__name__}.")
    kind = "vae" if isinstance(model, VAE) else "dae"
    method = method or kind
    if model is not None and method != kind:
        raise ValueError(f"method={method!r} but model= is a {type(model).__name__}; leave method=None.")
    if model is not None:
        batch_key = model.batch_key if batch_key is None else batch_key
        layer = model.layer if layer is None else layer
        if kwargs or categorical_covariate_keys or continuous_covariate_keys:
            given = sorted(kwargs) + ["categorical_covariate_keys"] * bool(categorical_covariate_keys) + \
                ["continuous_covariate_keys"] * bool(continuous_covariate_keys)
            raise TypeError(f"denoise() with a trained model= takes no training options; got {given} (a trained "
                            "model reads its own covariates from adata.obs).")
        covariates = model.covariates
    else:
        v.check_anndata(adata)
        covariates = CovariateSpec.learn(adata.obs, categorical_covariate_keys, continuous_covariate_keys, batch_key)
    covariates.check_values(transform_covariates)
    _check_request(adata, method=method, layer=layer, batch_key=batch_key, transform_batch=transform_batch,
                   library_size=library_size, genes=genes, layer_added=layer_added, overwrite=overwrite,
                   return_info=return_info, likelihood=model.config.likelihood if model else likelihood,
                   known_batches=model.batch_categories if model else None, chunk_size=chunk_size)
    if model is not None:
        _check_model_genes(adata, model.var_names, genes)
    trained_here = model is None
    if model is None:
        model = (_train_vae if method == "vae" else _train_dae)(adata, layer, batch_key, likelihood, kwargs,
                                                                covariates)
        if model.interrupted:
            warn_interrupted("the best weights so far; pass it back as denoise(adata, model=model).")
            return model
    key_added = key_added or ("X_vae" if method == "vae" else "X_dae")
    genes = None if genes is None else [str(g) for g in genes]
    # the model's genes in adata's order: columns picked chunk by chunk, no reordered copy of the output
    pick = genes if genes is not None else (None if list(adata.var_names) == model.var_names
                                            else list(map(str, adata.var_names)))
    apply = dict(layer=layer, batch_key=batch_key, batch_size=chunk_size)
    transform = dict(transform_batch=transform_batch, transform_covariates=transform_covariates)
    with np.errstate(over="ignore"):  # a float16 overflow is refused below, with what to do instead
        if method == "vae":
            values = {"mean": model.get_normalized_expression(adata, **transform, genes=pick,
                                                              library_size=library_size, return_numpy=True,
                                                              dtype=out_dtype, **apply),
                      "latent": model.get_latent(adata, **apply)}
        else:
            outputs = ("mean", "latent") + (("dropout",) if return_info and "dropout" in model.module.likelihood
                                            .extra_heads else ()) + (("dispersion",) if return_info else ())
            values = model.predict(adata, **transform, library_size=library_size, genes=pick,
                                   outputs=outputs, dtype=out_dtype, **apply)
    if out_dtype == np.float16:
        _check_float16(values)
    if method == "vae" and trained_here and transform_batch is not None:
        _warn_missing_in_target(adata, batch_key, transform_batch, values["latent"], key_added, kwargs)
    base = layer_added or "denoised"
    per_gene = {(layer_added if k == "mean" else f"{base}_{k}"): a for k, a in values.items() if k != "latent"}
    layers, obsm = {}, {key_added: values["latent"]}
    if genes is not None:
        obsm.update({k: pd.DataFrame(a, index=adata.obs_names, columns=genes) for k, a in per_gene.items()})
    else:
        layers.update(per_gene)
    params = params_record(**{**dataclasses.asdict(model.config),
                              **getattr(model, "train_params", {"trained_here": False}),
                              "method": method, "batch_key": batch_key, "layer": layer,
                              "transform_batch": transform_batch, "library_size": library_size, "genes": genes,
                              "categorical_covariate_keys": list(covariates.categorical_keys),
                              "continuous_covariate_keys": list(covariates.continuous_keys),
                              "transform_covariates": _uns_values(transform_covariates),
                              "return_info": return_info, "dtype": out_dtype.name, "chunk_size": int(chunk_size)})
    uns = {uns_key: {"params": params, "history": model.history, "method": method,
                     "layer_added": str(layer_added), "key_added": key_added}}
    new_X = {"X": layers.pop(None)} if layer_added is None and genes is None else {}  # layer_added=None: into X
    out = write_and_return(adata, model, copy=copy, uns_key=uns_key, layers=layers, obsm=obsm, uns=uns, **new_X)
    for where, value in [*(("X", a) for a in new_X.values()), *((f"layers[{k!r}]", a) for k, a in layers.items()),
                         *((f"obsm[{k!r}]", a) for k, a in obsm.items())]:
        nbytes = value.memory_usage(index=False).sum() if isinstance(value, pd.DataFrame) else value.nbytes
        dt = value.dtypes.iloc[0] if isinstance(value, pd.DataFrame) else value.dtype
        logger.info("sa.tl.denoise wrote %s: %d x %d %s, %.1f MB", where, *value.shape, dt, nbytes / 1e6)
    return out


def _warn_missing_in_target(adata, batch_key, transform_batch, latent, key_added, kwargs) -> None:
    """Warn where ``transform_batch`` lacks some cells' group: the decoder never saw that group in
    that batch, so their values decoded "as" it are an extrapolation. Other batches' gaps do not
    touch these outputs (each cell is decoded in the target batch only)."""
    if adata.obs[batch_key].nunique() < 2:
        return
    # unlabelled cells would be one "type" of their own: clusters of the latent then, as tl.vae
    labels = kwargs.get("label_key") if kwargs.get("unlabeled_category") is None else None
    report = composition_report(adata, batch_names(adata, batch_key), label_key=labels,
                                embedding=latent, use_rep=key_added, seed=split_kwargs(dict(kwargs))[0].seed)
    report = dataclasses.replace(report, missing=report.missing[report.missing["batch"] == str(transform_batch)])
    warn_if_unbalanced(report, front="tl.denoise", stacklevel=4, control=(
        f"transform_batch={transform_batch!r} decodes these cells as a batch that holds none of their kind, which "
        "the decoder never learned: check their denoised values before use, or leave transform_batch out (each "
        "cell decoded in its own batch)."))


def _uns_values(values: dict | None) -> dict | str:
    """``transform_covariates`` as ``.uns`` stores it (h5ad keeps no None)."""
    return {str(k): (v if isinstance(v, (int, float)) else str(v)) for k, v in values.items()} if values else "None"


def _check_float16(values: dict) -> None:
    """Refuse float16 outputs that overflowed (inf), checked in row blocks to hold no full-size mask."""
    for key, a in values.items():
        if a.dtype != np.float16:
            continue
        for start in range(0, len(a), 4096):
            if not np.isfinite(a[start:start + 4096]).all():
                raise v.InputError(
                    f"dtype='float16': some {key} values exceed float16's largest value ({FLOAT16_MAX:,.0f}); "
                    "nothing was written. Use dtype='float32', or library_size=1e4 (values per 10,000 counts).")


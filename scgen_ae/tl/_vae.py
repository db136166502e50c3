from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import NamedTuple

import numpy as np
from anndata import AnnData

from .. import _validate as v
from .._validate import check_n_latent, check_target
from ..covariates import CovariateSpec
from ..models.covariate_independence import check_covariate_independence_weight
from ..models.vae import VAE, VAEConfig, VAEModule, check_mnn_bandwidth
from ..train import fit, kl_warmup, seeded_threads, warn_interrupted
from ._common import (HVG_IF_PRESENT, mask_name, params_record, split_kwargs, training_data, var_mask,
                      write_and_return)
from ._composition import batch_names, check_label_key, composition as composition_report, composition_record

_COMPOSITION_CONTROL = (
    "The default alignment (mmd_mnn_k > 0) only moves cells near mutual nearest neighbours of different "
    "batches, which leaves such groups apart; check that they stay apart (e.g. sc.pl.umap coloured by batch), and see "
    "uns[uns_key]['composition']. mmd_weight=0 turns the alignment off; mmd_mnn_k=0 aligns whole batches "
    "(only for batches that hold the same cell types).")

#: the pairs per batch of the MNN alignment that ``mmd_mnn_k="auto"`` uses where the batches differ
AUTO_MNN_K = 3


def _check_alignment(mmd_mnn_k, mnn_bandwidth) -> None:
    """Refuse a bad ``mmd_mnn_k`` / ``mnn_bandwidth`` before any pass over the data."""
    if mmd_mnn_k != "auto" and (isinstance(mmd_mnn_k, bool) or not isinstance(mmd_mnn_k, int) or mmd_mnn_k < 0):
        raise ValueError(f"mmd_mnn_k={mmd_mnn_k!r}; choose an integer >= 0 or 'auto'.")
    check_mnn_bandwidth(mnn_bandwidth)


def vae(
    adata: AnnData,
    *,
    batch_key: str | None = None,
    layer: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    continuous_covariate_keys: list[str] | None = None,
    covariate_independence_weight: float = 1.0,
    label_key: str | None = None,
    unlabeled_category: str | None = None,
    classification_weight: float = 50.0,
    likelihood: str = "zinb",
    n_latent: int = 10,
    n_hidden: int = 128,
    n_layers: int = 1,
    dropout_rate: float = 0.1,
    dispersion: str = "gene",
    beta: float = 1.0,
    encode_batch: bool = True,
    batch_gene_offsets: bool = True,
    mmd_weight: float = 1.0,
    mmd_mnn_k: int | str = 3,
    mnn_bandwidth: float = 0.5,
    key_added: str = "X_vae",
    uns_key: str = "vae",
    copy: bool = False,
    backend: str = "native",
    linear_decoder: bool = False,
    mask_var=HVG_IF_PRESENT,
    **train_kwargs,
) -> VAE | AnnData:
    """Train a (conditional) VAE on counts and store its latent space.

    Encoder: log1p(counts) (+ batch) -> Gaussian q(z|x). Decoder: z + batch ->
    softmax expression scale x observed library size -> mean of a ZINB / NB /
    Poisson likelihood, or a Gaussian on log-normalised data (scGen-style).

    Parameters
    ----------
    adata
        Cells x genes; raw counts in ``X`` or ``layers[layer]`` (sparse or dense). A backed
        AnnData (``anndata.read_h5ad(path, backed="r")`` or :func:`~scgen_ae.read_backed`)
        trains out of core: its ``X``, CSR or dense on disk, is checked and trained on in
        bounded row chunks and never read whole (a CSC ``X`` cannot be read by rows and is),
        and the results are written to its in-memory ``obsm`` / ``uns`` (the file is not
        changed; ``copy=True`` is refused).
    batch_key
        ``obs`` column with the batch of each cell; None trains an unconditional VAE. A
        column with a single category is accepted with a warning: such a reference learns no
        batch correction, but :meth:`~scgen_ae.models.VAE.map_query` can extend it with the
        batches of new samples (a model trained with ``batch_key=None`` cannot be extended).
    layer
        Layer with the counts; None uses ``X``. anndata's backed mode keeps layers in
        memory, so a layer of a backed AnnData trains from memory.
    categorical_covariate_keys, continuous_covariate_keys
        ``obs`` columns of nuisance factors besides the batch (scvi-tools' names), e.g.
        ``["donor", "sex"]`` and ``["percent_mito", "S_score"]``. Each enters the network
        where the batch does (a learned offset per category; a learned slope per continuous
        covariate, scaled to mean 0 and standard deviation 1 over the training cells), so the
        latent space is freed of them. They are not aligned like the batch (no alignment
        penalty); the continuous ones are kept out of the latent space by
        ``covariate_independence_weight``. Every method applied to new cells reads them from
        ``obs`` (unseen categories are refused; :meth:`~scgen_ae.models.VAE.map_query` learns
        them);
        :meth:`~scgen_ae.models.VAE.get_normalized_expression` and :func:`~scgen_ae.tl.denoise`
        decode at chosen values with ``transform_covariates``. Refused: a missing column,
        missing values, NaN / Inf in a continuous covariate, a covariate constant over all
        cells, the ``batch_key`` listed again.
    covariate_independence_weight
        With ``continuous_covariate_keys``: weight of a penalty, in training, on the dependence
        between the latent posterior means and the continuous covariates in each minibatch
        (a normalised kernel independence measure, HSIC, which sees nonlinear dependence
        too). Conditioning alone left about half of a planted continuous effect in the
        latent space; with the default 1 a regression reads almost none of it there, and the
        cell types stay as apart (BENCHMARKS.md, "Covariates besides the batch"). 0 turns it
        off. Without continuous covariates it has no effect.
    label_key
        Optional ``obs`` column with cell-type labels, used by the composition check (see
        Notes): without it, the check clusters the latent space instead. With
        ``unlabeled_category``, also the labels a classifier is trained on.
    unlabeled_category
        Given (e.g. "Unknown"): semi-supervised training, scANVI-style. A classifier on the
        latent posterior mean (one hidden layer of ``n_hidden`` units) is trained with the
        VAE, its cross-entropy over the labelled cells of each minibatch added to the
        objective; cells whose ``label_key`` value equals ``unlabeled_category`` contribute
        nothing to it. ``label_key`` must then exist, have no missing values and hold at
        least two classes besides ``unlabeled_category``; the value must occur in the column
        or be one of its declared categories (declare it to train on fully labelled cells).
        Predict with :meth:`~scgen_ae.models.VAE.predict` or :func:`~scgen_ae.tl.predict_labels`.
        None (default): no classifier.
    classification_weight
        Weight of the classifier's mean cross-entropy (per labelled cell) next to the mean
        per-cell negative ELBO; 50 as scANVI's ``classification_ratio``.
    likelihood
        "zinb" (default), "nb", "poisson" or "gaussian".
    n_latent, n_hidden, n_layers, dropout_rate
        Architecture (dropout applies to the encoder).
    dispersion
        "gene" or "gene-batch".
    beta
        Weight of the KL term (beta-VAE); the KL is warmed up linearly from 0.
    encode_batch, batch_gene_offsets
        Where batch enters the network: the encoder, and a per-batch, per-gene shift
        of the decoder output (both on by default; see BENCHMARKS.md for why).
    mmd_weight
        Weight of the batch-alignment penalty on the latent space (0 turns it off: a plain
        conditional VAE). Without ``batch_key`` it has no effect.
    mmd_mnn_k
        How batches are aligned. > 0 (default 3): cells of different batches that are
        mutual nearest neighbours (``mmd_mnn_k`` per batch, within a minibatch) both in the
        latent space and in the input (cosine) say where the batches meet; each pair's
        displacement is smoothed over the cells around it (``mnn_bandwidth``, the idea of
        fastMNN), and every cell is drawn by the correction of its neighbourhood. A cell
        type that some batches lack has no such pairs near it and stays where it is, and
        batches that hold the shared types in other proportions are not distorted. 0: an
        MMD penalty between each batch's and the pooled latent distribution (it assumes
        all batches hold the same cell types in similar proportions and merged
        batch-unique types on the CellBench designs of BENCHMARKS.md). "auto": the
        composition check decides. With ``label_key`` (every cell labelled) it counts the
        labels before training; otherwise the model is trained with the MNN alignment
        (k = 3) until the KL warm-up ends, and the check then looks in its latent space for
        a cluster of one batch that another batch has no cells near. Batches with no such
        cluster are aligned with the global MMD for the rest of the fit; otherwise the MNN
        alignment goes on, and the cells of each such cluster are no longer paired with the
        batches it lacks, nor carried by their neighbours' pull toward them. One fit either way (a run that stops
        before the warm-up ends keeps the MNN alignment; a run resumed from a checkpoint
        after it checks again). ``uns[uns_key]["alignment"]`` records the choice.
    mnn_bandwidth
        With ``mmd_mnn_k > 0``: how far a pair's correction reaches. The squared width of
        the Gaussian that smooths the correction vectors over a batch's cells is this times
        a cell's squared distance to its ``mmd_mnn_k``-th neighbour in its batch (default
        0.5; larger moves wider neighbourhoods as one). 0: only the paired cells are pulled
        together (the default before; it mixes three or more protocols less, see
        BENCHMARKS.md).
    key_added
        ``obsm`` key of the latent space.
    uns_key
        ``uns`` key of the parameters and history.
    copy
        Work on a copy and return it (as scanpy); the model is then ``sa.tl.get_model(copy, uns_key)``.
    backend
        "native" (default) or "scvi-tools": scvi-tools' ``SCVI`` (``LinearSCVI`` with
        ``linear_decoder=True``) trained behind this API, writing the same keys, so the two
        can be swapped and compared with one argument (optional extra:
        ``pip install "scgen-ae[scvi]"``). Mapped with this function's values (not
        scvi-tools' defaults), so that only the implementation changes: ``n_latent``,
        ``n_hidden``, ``n_layers``, ``dropout_rate``, ``likelihood`` ("zinb", "nb",
        "poisson" -> ``gene_likelihood``), ``dispersion``, ``encode_batch`` ->
        ``encode_covariates`` (scVI's own default is False), ``beta`` -> ``max_kl_weight``,
        ``max_epochs`` (same heuristic), ``batch_size``, ``lr``, ``weight_decay``,
        ``validation_fraction`` -> ``train_size``, ``early_stopping``, ``patience``,
        ``min_delta``, ``kl_warmup_epochs`` -> ``n_epochs_kl_warmup`` (None: a third of the
        epochs, as here; scVI's own default is 400), ``grad_clip`` -> ``gradient_clip_val``,
        ``seed``, ``n_threads``, ``device``, ``precision`` ("bf16" -> lightning's
        "bf16-mixed", else fp32), ``progress``. Not mapped (no counterpart):
        ``likelihood="gaussian"`` is refused; ``batch_gene_offsets``, ``mmd_weight`` and
        ``covariate_independence_weight`` (and ``encode_batch`` for LinearSCVI, whose encoder
        takes no covariates) are accepted at their default or off, are *not applied*, and ``params`` records the value that ran
        (False / 0); any other value is refused. Differences that remain: scvi-tools keeps
        the last epoch's weights (``history["best_epoch"]`` only says where validation was
        lowest), draws its own validation cells, and Ctrl-C is lightning's. Returns the
        scvi-tools model instead of a :class:`~scgen_ae.models.VAE`.
    linear_decoder
        With ``backend="scvi-tools"``: scvi-tools' ``LinearSCVI`` (linear decoder, gene
        loadings in ``varm``). The native backend has no linear decoder and refuses it.
    mask_var
        The genes to train on, without subsetting ``adata``: a ``var`` column of booleans, a
        boolean array, or None (every gene). Default: ``var["highly_variable"]`` when present
        (as scanpy's PCA), else every gene. The latent space of every cell is written to
        ``adata`` as usual; the model holds the selected genes (``model.var_names``). The
        scvi-tools backend trains on every gene and refuses a mask given explicitly.
    **train_kwargs
        Options of :class:`scgen_ae.train.TrainConfig`: ``max_epochs`` (default: scvi-tools'
        heuristic, 400 epochs up to 20k cells, fewer beyond), ``batch_size`` (128), ``lr``
        (1e-3), ``validation_fraction`` (0.1), ``early_stopping`` (True), ``patience`` (30),
        ``kl_warmup_epochs``, ``seed`` (0), ``device`` ("auto"), ``precision`` ("auto": bf16 matmuls
        where the hardware has them, else fp32), ``n_threads`` (torch's CPU threads; None:
        ``sa.settings.n_threads``, else every usable core), ``progress``.

    Returns
    -------
    VAE
        The trained :class:`~scgen_ae.models.VAE`; with ``copy=True`` the annotated copy of
        ``adata`` (the model: :func:`~scgen_ae.tl.get_model`). A view of an AnnData is refused
        unless ``copy=True`` (the results would not reach it).
        On Ctrl-C the model with the best weights so far is returned and ``adata`` is not
        modified. Errors (bad input, diverging loss) leave ``adata`` unchanged too.

    Notes
    -----
    Batches rarely hold the same cell types (disease vs healthy, sorted populations,
    atlases of several tissues). After training, the composition check
    (:func:`~scgen_ae.tl.batch_composition`) counts cells per batch in each label of
    ``label_key``, or, without labels, looks for clusters of one batch's cells in the latent
    space that another batch has no cells near, and warns
    (:class:`~scgen_ae.tl.CompositionWarning`) naming the groups that some batch lacks; the
    table is in ``uns[uns_key]["composition"]``. BENCHMARKS.md ("Integration that never
    erases biology") measures the alignment on designs with batch-unique cell types.

    The defaults aim at the best integration (highest scIB Total measured in
    BENCHMARKS.md). For a quick first look, ``lr=3e-3, mmd_weight=0.1,
    kl_warmup_epochs=10, max_epochs=30`` beat scvi-tools' validation loss and scIB
    Total after its 100 epochs on the four shared data sets, 6-9x sooner (BENCHMARKS.md,
    "Time to scVI's loss and quality").

    Sets
    ----

    - ``adata.obsm[key_added]``: (n_cells, n_latent) posterior means.
    - ``adata.uns[uns_key]["params"]``: the arguments used.
    - ``adata.uns[uns_key]["history"]``: per-epoch ``train_loss``, ``validation_loss``
      (mean negative ELBO per cell), ``kl_weight``, ``best_epoch``, ``seconds``.
    - ``adata.uns[uns_key]["composition"]``: with two or more batches, the composition
      check's result (fields as in :func:`~scgen_ae.tl.batch_composition`). With a classifier
      and unlabelled cells, the check uses the latent space (the unlabelled cells would
      form a group of their own).
    - ``adata.uns[uns_key]["alignment"]``: with ``mmd_mnn_k="auto"``, ``requested``,
      ``decided_by`` (labels before training, or the check at the end of the KL warm-up),
      ``balanced``, ``share_affected`` (cells in groups some batch lacks), ``used`` (the
      alignment trained with) and, where the check fired, ``share_unpaired`` (cells barred
      from pairing with some batch).
    - ``adata.uns[uns_key]["label_categories"]``: with a classifier, its classes in order.
    - ``adata.varm[f"{uns_key}_loadings"]``: (n_genes, n_latent) gene loadings, only with
      ``backend="scvi-tools", linear_decoder=True``; ``params`` then also holds
      ``backend``, ``scvi_model`` and ``scvi_tools_version``.
    """
    if backend not in ("native", "scvi-tools"):
        raise ValueError(f"backend={backend!r}; choose 'native' or 'scvi-tools'.")
    check_target(adata, copy, "sa.tl.vae")
    covariates = _check_options(adata, batch_key, categorical_covariate_keys, continuous_covariate_keys,
                                mmd_mnn_k, mnn_bandwidth, covariate_independence_weight)
    if backend == "scvi-tools" and mask_var is not HVG_IF_PRESENT and var_mask(adata, mask_var) is not None:
        raise ValueError("mask_var needs backend='native'; for scvi-tools subset first: adata[:, mask].copy().")
    if backend == "scvi-tools":
        if unlabeled_category is not None:
            raise ValueError("unlabeled_category (the label classifier) needs backend='native'; for scvi-tools' "
                             "own, train scvi.model.SCANVI.")
        from ._vae_scvi import vae_scvi_tools

        return vae_scvi_tools(
            adata, batch_key=batch_key, layer=layer, label_key=label_key, likelihood=likelihood, n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers, dropout_rate=dropout_rate, dispersion=dispersion, beta=beta,
            encode_batch=encode_batch, batch_gene_offsets=batch_gene_offsets, mmd_weight=mmd_weight,
            covariate_independence_weight=covariate_independence_weight, linear_decoder=linear_decoder, key_added=key_added, uns_key=uns_key, copy=copy,
            train_kwargs=train_kwargs, covariates=covariates)
    fitted = _fit(adata, covariates, batch_key=batch_key, layer=layer, label_key=label_key,
                  unlabeled_category=unlabeled_category, classification_weight=classification_weight,
                  likelihood=likelihood, n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers,
                  dropout_rate=dropout_rate, dispersion=dispersion, beta=beta, encode_batch=encode_batch,
                  batch_gene_offsets=batch_gene_offsets, mmd_weight=mmd_weight, mmd_mnn_k=mmd_mnn_k,
                  mnn_bandwidth=mnn_bandwidth, covariate_independence_weight=covariate_independence_weight,
                  key_added=key_added, linear_decoder=linear_decoder, mask_var=mask_var, train_kwargs=train_kwargs,
                  stacklevel=3)
    if fitted.model.history.get("interrupted"):
        return _interrupted(fitted.model)
    return write_and_return(adata, fitted.model, copy=copy, uns_key=uns_key, obsm={key_added: fitted.latent},
                            uns={uns_key: fitted.record})


class _Fitted(NamedTuple):
    """What :func:`vae` writes, before it is written: the model, the (n_cells, n_latent) latent
    means and the ``uns`` record; latent and record are None when the fit was interrupted."""

    model: VAE
    latent: np.ndarray | None
    record: dict | None


def fit_only(adata: AnnData, *, stacklevel: int, **options) -> VAE:
    """:func:`vae`'s checks and fit, for a front that trains a VAE as one step of its own.

    Nothing is written into ``adata``, and an interrupted fit is not warned about: the front
    says so itself, with its own advice (``model.history["interrupted"]`` tells). Nor is the
    latent computed or the composition checked after training: the front encodes the cells it
    needs itself, and a warning pointing at ``uns[uns_key]["composition"]`` would name a record
    the front does not write (``mmd_mnn_k="auto"``'s check during training still runs).

    Parameters
    ----------
    adata
        The training cells (an AnnData the front built, or the caller's: it is only read).
    stacklevel
        Where :func:`vae`'s other warnings (a single batch) point, as :func:`warnings.warn`'s
        counted from here.
    **options
        Keywords of :func:`vae`, which gives the others their defaults; the native backend only.
    """
    bound = inspect.signature(vae).bind(adata, **options)
    bound.apply_defaults()
    given = bound.arguments
    if given["backend"] != "native":  # the scvi-tools backend writes its results itself
        raise ValueError(f"backend={given['backend']!r}: this front trains the native VAE; leave backend out.")
    covariates = _check_options(adata, **_arguments_of(_check_options, given))
    return _fit(adata, covariates, **_arguments_of(_fit, given), stacklevel=stacklevel + 1, apply=False).model


def _arguments_of(function, given: dict) -> dict:
    """The values in ``given`` (:func:`vae`'s arguments by name) of ``function``'s other parameters."""
    return {k: given[k] for k in inspect.signature(function).parameters if k in given and k != "adata"}


def _check_options(adata, batch_key, categorical_covariate_keys, continuous_covariate_keys, mmd_mnn_k, mnn_bandwidth,
                   covariate_independence_weight) -> CovariateSpec:
    """The checks of both backends before any pass over the data; the covariates they name."""
    v.check_anndata(adata)
    covariates = CovariateSpec.learn(adata.obs, categorical_covariate_keys, continuous_covariate_keys, batch_key)
    _check_alignment(mmd_mnn_k, mnn_bandwidth)
    check_covariate_independence_weight(covariate_independence_weight)
    return covariates


def _fit(adata, covariates, *, batch_key, layer, label_key, unlabeled_category, classification_weight, likelihood,
         n_latent, n_hidden, n_layers, dropout_rate, dispersion, beta, encode_batch, batch_gene_offsets, mmd_weight,
         mmd_mnn_k, mnn_bandwidth, covariate_independence_weight, key_added, linear_decoder, mask_var, train_kwargs,
         stacklevel, apply: bool = True) -> _Fitted:
    """The native :func:`vae` after the checks of :func:`_check_options`, all but writing and the
    warning of an interrupted fit; ``stacklevel``: its warnings', counted from here;
    ``apply=False``: the fit alone (latent and record None), as :func:`fit_only`."""
    if linear_decoder:
        raise ValueError("linear_decoder=True needs backend='scvi-tools' (scvi-tools' LinearSCVI); "
                         "the native VAE has no linear decoder.")
    train_cfg, rest = split_kwargs(dict(train_kwargs))
    if rest:
        raise TypeError(f"vae() got unexpected keyword arguments {sorted(rest)}.")
    classes: list[str] = []
    if unlabeled_category is not None:  # before the pass over X: obs is cheap to check
        label_codes, classes = v.label_codes(adata, label_key, unlabeled_category)
    v.check_anndata(adata)  # before reading adata.var for the mask
    genes = var_mask(adata, mask_var)
    if genes is not None and adata.isbacked:
        raise ValueError("mask_var selecting some genes needs an in-memory AnnData (a backed one streams every "
                         "gene); pass mask_var=None, or adata.to_memory() first.")
    train_on = adata if genes is None else adata[:, genes]
    data, cats = training_data(train_on, layer, batch_key, likelihood, allow_single_batch=True, covariates=covariates)
    check_label_key(adata, label_key)
    check_n_latent(n_latent, train_on.n_vars)
    if classes:
        data.labels = label_codes
    if batch_key is not None and len(cats) == 1:
        warnings.warn(
            f"adata.obs[{batch_key!r}] has a single category ({cats[0]!r}): this reference learns no batch "
            "correction, but it can be extended with the batches of new samples by model.map_query(query, "
            "batch_key=...).", UserWarning, stacklevel=stacklevel)
    # unlabelled cells would be one "type" of their own: the check clusters the latent then
    groups_key = None if classes and (label_codes < 0).any() else label_key
    auto = mmd_mnn_k == "auto"
    aligns = batch_key is not None and len(cats) > 1 and mmd_weight > 0
    alignment = None
    if auto:
        alignment = {"requested": "auto", "decided_by": "no alignment (one batch or mmd_weight=0)"}
        mmd_mnn_k = AUTO_MNN_K
        if aligns and groups_key is not None:
            mmd_mnn_k = _auto_choice(composition_report(adata, batch_names(adata, batch_key), label_key=groups_key),
                                     alignment, f"labels '{groups_key}' before training")
    config = VAEConfig(
        n_genes=train_on.n_vars, n_batches=len(cats), likelihood=likelihood, n_latent=n_latent,
        n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate, dispersion=dispersion,
        beta=beta, encode_batch=encode_batch, batch_gene_offsets=batch_gene_offsets,
        mmd_weight=mmd_weight, mmd_mnn_k=mmd_mnn_k, mnn_bandwidth=mnn_bandwidth, n_labels=len(classes),
        classification_weight=classification_weight, n_covariate_categories=covariates.n_categories,
        n_continuous_covariates=covariates.n_continuous, covariate_independence_weight=covariate_independence_weight,
    )
    check = None
    if auto and aligns and groups_key is None:
        check = _MidRunCheck(adata, batch_names(adata, batch_key), key_added, train_cfg, data, cats)
    with seeded_threads(train_cfg.seed, train_cfg.n_threads):
        model = _train(config, data, train_cfg, train_on, batch_key, cats, layer, classes, label_key, covariates,
                       check)
        if model.history.get("interrupted") or not apply:
            return _Fitted(model, None, None)
        latent = model.get_latent(adata)
    config = model.config  # the check may have switched the alignment
    if check is not None:
        check.record(alignment)
    result = {"params": params_record(batch_key=batch_key, layer=layer, label_key=label_key,
                                      categorical_covariate_keys=list(covariates.categorical_keys),
                                      continuous_covariate_keys=list(covariates.continuous_keys),
                                      unlabeled_category=unlabeled_category,
                                      mask_var=mask_name(adata, mask_var),
                                      **dataclasses.asdict(config), **dataclasses.asdict(train_cfg)),
              "history": model.history, "key_added": key_added}
    if classes:
        result["label_categories"] = list(classes)
    if alignment is not None:
        alignment["used"] = _alignment_name(config)
        result["alignment"] = alignment
    composition = composition_record(adata, batch_key=batch_key, label_key=groups_key, embedding=latent,
                                     use_rep=key_added, seed=train_cfg.seed, front="tl.vae",
                                     control=_COMPOSITION_CONTROL, stacklevel=stacklevel + 2)
    if composition is not None:
        result["composition"] = composition
    return _Fitted(model, latent, result)


def _alignment_name(config: VAEConfig) -> str:
    if config.mmd_mnn_k == 0:
        return "global MMD"
    if config.mnn_bandwidth > 0:
        return f"MNN correction (k={config.mmd_mnn_k}, bandwidth={config.mnn_bandwidth:g})"
    return f"MNN attraction (k={config.mmd_mnn_k})"


def _auto_choice(report, alignment: dict, decided_by: str) -> int:
    """``mmd_mnn_k`` that ``"auto"`` trains with after ``report``; fills ``alignment``."""
    alignment.update(decided_by=decided_by, balanced=bool(report.balanced),
                     share_affected=float(report.share_affected))
    return 0 if report.balanced else AUTO_MNN_K


class _MidRunCheck:
    """``mmd_mnn_k="auto"`` without labels, called by :func:`~scgen_ae.train.fit` after each
    epoch: once the KL warm-up ends, the composition check looks at the MNN-aligned latent.
    Batches with no cluster far from another batch switch to the global MMD for the rest of
    the fit; otherwise the cells of each unmatched cluster are paired no more with the
    batches it lacks (one fit in all)."""

    def __init__(self, adata, batch_names, key_added, train_cfg, data, cats):
        self.adata, self.batch_names, self.key_added, self.seed = adata, batch_names, key_added, train_cfg.seed
        self.train_cfg, self.n_epochs, self.data, self.cats = train_cfg, train_cfg.epochs_for(data.n_cells), data, cats
        self.model = None  # the model being trained, set by _train
        self.report, self.epoch = None, None

    def __call__(self, epoch: int) -> bool:
        module = self.model.module
        last_warmup_epoch = max(kl_warmup(self.train_cfg, self.n_epochs, module), self.n_epochs // 3, 1) - 1
        if self.report is not None or epoch < last_warmup_epoch:
            return False
        latent = self.model.get_latent(self.adata)
        self.report = composition_report(self.adata, self.batch_names, label_key=None, embedding=latent,
                                         use_rep=self.key_added, seed=self.seed)
        self.epoch = epoch
        if self.report.balanced:
            module.cfg = self.model.config = dataclasses.replace(module.cfg, mmd_mnn_k=0)
        else:
            self.data.unmatched = self.report.unmatched(self.cats)
        return True

    def record(self, alignment: dict) -> None:
        if self.report is None:  # training stopped before the warm-up ended: MNN kept, the safe side
            alignment["decided_by"] = "not checked: training ended before the KL warm-up did; MNN alignment kept"
            return
        _auto_choice(self.report, alignment, f"clusters of each batch in the MNN-aligned latent after epoch "
                                             f"{self.epoch + 1} (the end of the KL warm-up)")
        if not self.report.balanced:
            alignment["share_unpaired"] = float(self.data.unmatched.any(axis=1).mean())


def _train(config, data, train_cfg, train_on, batch_key, cats, layer, classes, label_key, covariates,
           check: _MidRunCheck | None = None) -> VAE:
    module = VAEModule(config)
    model = VAE(config, train_on.var_names, batch_key, cats, layer, {}, module,
                label_categories=classes, label_key=label_key if classes else None, covariates=covariates)
    if check is not None:
        check.model = model
    model.history = fit(module, data, train_cfg, config.likelihood, on_epoch_end=check).as_dict()
    return model


def _interrupted(model: VAE) -> VAE:
    warn_interrupted("the best weights so far; use model.get_latent(adata) or model.save(path), or train again.",
                     stacklevel=4)
    return model

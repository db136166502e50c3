from __future__ import annotations

import dataclasses

import numpy as np
from anndata import AnnData

from .. import _validate as v
from ..data import train_validation_split
from ..models.lda_vb import ClassicLDA, VBLDAConfig, VBLDAModule, check_vb_options, fit_vb
from ..models.topic import LDA, TopicConfig, TopicModule, check_topic_options
from ..train import TrainConfig, fit, seeded_threads, warn_interrupted
from ._common import params_record, split_kwargs, training_data, write_and_return
from ._composition import check_label_key, composition_record

METHODS = ("prodlda", "classic")
# ProdLDA trains well with larger steps and minibatches than the VAE (fewer, cheaper epochs)
PRODLDA_TRAIN_DEFAULTS = dict(max_epochs=100, batch_size=256, lr=1e-2, patience=15)
# topic models are of counts only: the error for other data offers no likelihood to switch to
COUNTS_ADVICE = dict(needs="tl.lda (a topic model of counts)", otherwise=None)


def _classic_options(rest: dict, batch_key: str | None) -> dict:
    if batch_key is not None:
        raise v.InputError(
            f"method='classic' is the textbook LDA without batch covariates, but batch_key={batch_key!r} was "
            "given. Use method='prodlda' (the default) for batch-corrected topics, or pass batch_key=None."
        )
    known = {f.name for f in dataclasses.fields(VBLDAConfig)} - {"n_genes", "n_batches", "n_topics"}
    unknown = sorted(set(rest) - known)
    if unknown:
        raise TypeError(f"lda(method='classic') got unexpected keyword arguments {unknown}.")
    return rest


def _check_label_use(label_key, batch_key, method: str, backend: str) -> None:
    """label_key serves only the composition check of a batch-aware fit: without batches it would be unused."""
    if label_key is None or batch_key is not None:
        return
    if backend == "scvi-tools" or method == "classic":
        why = ("backend='scvi-tools' (AmortizedLDA) takes no batches" if backend == "scvi-tools"
               else "method='classic' takes no batches")
        fix = "or method='prodlda' with batch_key= to check the batches' compositions by these labels"
    else:
        why, fix = "batch_key is None", "or batch_key= naming the obs column with the batch of each cell"
    raise v.InputError(
        f"label_key={label_key!r} names the cell-type labels of the composition check that follows a batch-aware "
        f"fit (method='prodlda' with batch_key=), but {why}: there is no check, and the labels would not be used. "
        f"Pass label_key=None, {fix}.")


_LDA_HOLDS = "the best weights so far; use model.transform(adata) or model.save(path), or train again."


def _fit_classic(config, data, cats, adata, layer, train_cfg, train_idx, val_idx):
    """Batch VB on the training cells (in memory or streamed from disk); proportions of every
    cell: the held-out ones from a full E-step, the training ones continued to convergence
    from their last fitted gamma. Ctrl-C: (the model with the topics of the last finished
    iteration, None)."""
    module = VBLDAModule(config)
    history, gamma = fit_vb(module, data, train_idx, train_cfg.seed, train_cfg.progress)
    model = ClassicLDA(config, adata.var_names, None, cats, layer, history.as_dict(), module)
    if history.interrupted:
        return model, None
    proportions = np.zeros((data.n_cells, config.n_topics), dtype=np.float32)
    proportions[train_idx] = model._proportions(data, init=gamma, rows=train_idx)
    if len(val_idx):
        proportions[val_idx] = model._proportions(data, rows=val_idx)
    return model, proportions


def lda(
    adata: AnnData,
    *,
    n_topics: int = 20,
    method: str = "prodlda",
    batch_key: str | None = None,
    layer: str | None = None,
    n_hidden: int = 128,
    topic_prior: float = 1.0,
    encode_batch: bool = True,
    batch_background: bool = True,
    mmd_weight: float = 1.0,
    mmd_mnn_k: int = 3,
    label_key: str | None = None,
    key_added: str = "X_lda",
    varm_key: str = "lda_topics",
    uns_key: str = "lda",
    backend: str = "native",
    copy: bool = False,
    **kwargs,
) -> LDA | tuple[AnnData, LDA]:
    """Fit a topic model on counts and store topic proportions and topic-gene distributions.

    ``method="prodlda"`` (default): an amortised neural topic model (ProdLDA: logistic-normal
    prior, product-of-experts decoder, multinomial counts) trained through the shared
    training loop. With ``batch_key`` the decoder adds a per-batch gene background (as
    scETM), the encoder sees the batch, and an MMD penalty pulls the batches' latent
    distributions together, so the topic proportions are batch corrected.
    ``method="classic"``: textbook LDA fitted by batch variational Bayes (sklearn's
    ``LatentDirichletAllocation(learning_method="batch")``), without batch covariates.

    Parameters
    ----------
    adata
        Cells x genes; raw counts in ``X`` or ``layers[layer]`` (sparse or dense). A backed ``X``
        (``anndata.read_h5ad(path, backed="r")``, :func:`~scgen_ae.read_backed`) is streamed
        from disk, never read whole: prodlda in shuffled chunks of cells; classic in blocks of
        cells, one pass per EM iteration, with the results of the same cells in memory.
    n_topics
        Number of topics k.
    method
        "prodlda" or "classic".
    batch_key
        ``obs`` column with the batch of each cell (prodlda only); None: no batch correction.
        Other covariates (scvi-tools' ``categorical_covariate_keys``) are not taken here: a
        topic's gene distribution is shared by all cells; fit per group, or correct with
        :func:`~scgen_ae.tl.vae` (which takes them) first.
    layer
        Layer with the counts; None uses ``X``.
    n_hidden, topic_prior, encode_batch, batch_background, mmd_weight, mmd_mnn_k
        prodlda only: encoder width; Dirichlet concentration approximated by the
        logistic-normal prior; where batch enters and which cells the MMD aligns (only those
        with mutual nearest neighbours in other batches, as in :func:`~scgen_ae.tl.vae`;
        see :class:`~scgen_ae.models.topic.TopicConfig`). Checked by the config's rules
        before a cell is read.
    label_key
        Optional ``obs`` column with cell-type labels for the composition check run after a
        batch-aware fit (``method="prodlda"`` with ``batch_key``; see
        :func:`~scgen_ae.tl.batch_composition`); without it the check clusters the topic
        proportions. Refused without ``batch_key`` (so with ``method="classic"`` and
        ``backend="scvi-tools"``, which take no batches): there is no check to run.
    key_added, varm_key, uns_key
        Keys of the proportions in ``obsm``, the topic-gene matrix in ``varm`` and the
        record in ``uns``.
    backend
        "native" (default) or "scvi-tools": scvi-tools' ``AmortizedLDA`` (needs
        ``pip install "scgen-ae[scvi]"``) behind the same keys, for comparison. It has no
        batch covariate (``batch_key`` is refused) and no validation split (``perplexity``
        is on the training cells); ``n_topics``, ``n_hidden``, ``max_epochs``,
        ``batch_size``, ``lr``, ``seed``, ``n_threads``, ``device``, ``progress`` map, other
        options are refused. Returns the scvi-tools model.
    copy
        Work on a copy and return it (as scanpy); the model is then ``sa.tl.get_model(copy, uns_key)``.
    **kwargs
        prodlda: options of :class:`scgen_ae.train.TrainConfig`; here the defaults are
        ``max_epochs=100``, ``batch_size=256``, ``lr=1e-2``, ``patience=15`` (others as for
        ``tl.vae``: ``seed``, ``n_threads`` (None: ``sa.settings.n_threads``, else every usable
        core), ``device``, ``validation_fraction`` ...).
        classic: ``max_iter`` (20 EM iterations, each E-step ``fit_doc_update_iter`` (10)
        sweeps from a random start: a lower held-out perplexity than sklearn's 10 iterations
        of up to 100 sweeps), ``max_doc_update_iter`` (100, for transforms),
        ``mean_change_tol`` (1e-3), ``doc_topic_prior`` / ``topic_word_prior`` (None: 1 / k),
        plus ``seed``, ``n_threads`` (as for prodlda), ``validation_fraction`` (0.1), ``progress`` (False:
        True draws the progress bar of ``tl.vae``, one step per iteration, as ``sa.settings`` allow).
        Refused before any work by the rules of :class:`~scgen_ae.models.VBLDAConfig`.

    Returns
    -------
    The trained :class:`~scgen_ae.models.LDA` (a ``ClassicLDA`` for ``method="classic"``),
    or, with ``copy=True``, the annotated copy of ``adata`` (the model:
    :func:`~scgen_ae.tl.get_model`). Errors leave ``adata`` unchanged; so does Ctrl-C (with a
    warning; the model so far is returned, ``model.history["interrupted"]`` True), both methods.
    Sets

    - ``adata.obsm[key_added]``: (n_cells, n_topics) topic proportions, rows sum to 1
      (classic: the training cells' are the fit's last variational parameters, run to
      convergence; ``model.transform`` runs a cold E-step, capped at ``max_doc_update_iter``
      sweeps as sklearn's, and agrees with them to about 1e-2).
    - ``adata.varm[varm_key]``: (n_genes, n_topics) topic-gene distributions, non-negative,
      each column sums to 1 (prodlda: softmax of the topic's decoder logits, i.e. its
      enrichment over the background; classic: E[beta]).
    - ``adata.uns[uns_key]``: ``params``; ``history`` (per-epoch / per-iteration
      ``train_loss``: prodlda, the negative ELBO per cell; classic, minus the data term of
      the variational bound per cell, - sum_g x log sum_k exp(E[log theta] + E[log beta])); ``perplexity`` and
      ``train_perplexity``: per-count perplexity exp(- sum x log p / sum x) on the held-out
      validation cells and on the training cells; ``key_added``; ``varm_key``.
    """
    v.check_target(adata, copy, "sa.tl.lda")
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {METHODS}.")
    if backend not in ("native", "scvi-tools"):
        raise ValueError(f"backend={backend!r}; choose 'native' or 'scvi-tools'.")
    _check_label_use(label_key, batch_key, method, backend)
    if backend == "scvi-tools":
        return _lda_scvi_tools(adata, n_topics=n_topics, method=method, batch_key=batch_key, layer=layer,
                               n_hidden=n_hidden, key_added=key_added, varm_key=varm_key, uns_key=uns_key,
                               copy=copy, train_kwargs=kwargs)
    if method == "classic":
        train = {k: kwargs.pop(k) for k in ("seed", "n_threads", "validation_fraction", "progress") if k in kwargs}
        train_cfg, _ = split_kwargs({"progress": False, **train})
        rest = _classic_options(kwargs, batch_key)
        # the config's own rules, applied here before a cell is read (the config is built after)
        check_vb_options({"n_topics": n_topics, **rest}, "a keyword of sa.tl.lda(method='classic')")
    else:
        train_cfg, rest = split_kwargs({**PRODLDA_TRAIN_DEFAULTS, **kwargs})
        if rest:
            raise TypeError(f"lda() got unexpected keyword arguments {sorted(rest)}.")
        # the config's own rules, applied here before a cell is read (the config is built after)
        check_topic_options(dict(n_topics=n_topics, n_hidden=n_hidden, topic_prior=topic_prior,
                                 encode_batch=encode_batch, batch_background=batch_background,
                                 mmd_weight=mmd_weight, mmd_mnn_k=mmd_mnn_k),
                            "a keyword of sa.tl.lda(method='prodlda')")
    v.check_anndata(adata)
    v.check_n_latent(n_topics, adata.n_vars, "n_topics")  # the genes are counted without reading X
    check_label_key(adata, label_key)  # obs first: before a pass over X (from disk, when backed)
    data, cats = training_data(adata, layer, batch_key, None, **COUNTS_ADVICE)
    with seeded_threads(train_cfg.seed, train_cfg.n_threads):
        # the same split train.fit draws: the held-out perplexity is on cells never trained on
        train_idx, val_idx = train_validation_split(data.n_cells, train_cfg.validation_fraction,
                                                    np.random.default_rng(train_cfg.seed))
        if method == "classic":
            config = VBLDAConfig(n_genes=adata.n_vars, n_topics=n_topics, **rest)
            model, proportions = _fit_classic(config, data, cats, adata, layer, train_cfg, train_idx, val_idx)
            if model.history["interrupted"]:
                warn_interrupted("the topics of the last finished iteration; use model.transform(adata) or "
                                 "model.save(path), or train again.", stacklevel=3)
                return model
        else:
            config = TopicConfig(n_genes=adata.n_vars, n_batches=len(cats), n_topics=n_topics, n_hidden=n_hidden,
                                 topic_prior=topic_prior, encode_batch=encode_batch,
                                 batch_background=batch_background, mmd_weight=mmd_weight,
                                 mmd_mnn_k=mmd_mnn_k)
            module = TopicModule(config)
            module.init_background(data)
            history = fit(module, data, train_cfg, "poisson")
            model = LDA(config, adata.var_names, batch_key, cats, layer, history.as_dict(), module)
            if history.interrupted:
                warn_interrupted(_LDA_HOLDS, stacklevel=3)
                return model
            proportions = model._proportions(data)
        log_lik = model._cell_log_lik(data, proportions)
    counts = data.library  # the row sums of X (float32, as X.sum(1) gave before), also on disk

    def perplexity(idx):
        return float(np.exp(-log_lik[idx].sum() / max(counts[idx].sum(), 1.0))) if len(idx) else float("nan")

    params = params_record(method=method, batch_key=batch_key, layer=layer, **dataclasses.asdict(config),
                           **dataclasses.asdict(train_cfg))
    uns = {"params": params, "history": model.history, "perplexity": perplexity(val_idx),
           "train_perplexity": perplexity(train_idx),
           "key_added": key_added, "varm_key": varm_key}
    composition = composition_record(
        adata, batch_key=batch_key, label_key=label_key, embedding=proportions, use_rep=key_added,
        seed=train_cfg.seed, front="tl.lda",
        control="The batch-aware fit only aligns cells with mutual nearest neighbours in other batches "
                "(mmd_mnn_k); check that such groups stay apart, and see uns[uns_key]['composition'].")
    if composition is not None:
        uns["composition"] = composition
    return write_and_return(adata, model, copy=copy, uns_key=uns_key, obsm={key_added: proportions},
                            varm={varm_key: model.topic_gene_matrix()}, uns={uns_key: uns})


SCVI_LDA_OPTIONS = ("max_epochs", "batch_size", "lr", "seed", "n_threads", "device", "progress")


def _lda_scvi_tools(adata: AnnData, *, n_topics, method, batch_key, layer, n_hidden, key_added, varm_key,
                    uns_key, copy, train_kwargs):
    """``tl.lda(backend="scvi-tools")``: scvi-tools' AmortizedLDA writing tl.lda's keys."""
    from ..bridge import scvi_tools as bridge

    if method != "prodlda":
        raise ValueError("backend='scvi-tools' runs AmortizedLDA (amortised, like method='prodlda'); "
                         "method='classic' is native only.")
    if batch_key is not None:
        raise v.InputError(f"backend='scvi-tools' (AmortizedLDA) has no batch covariate, but batch_key={batch_key!r} "
                           "was given. Use the native backend for batch-corrected topics, or pass batch_key=None.")
    unknown = sorted(set(train_kwargs) - set(SCVI_LDA_OPTIONS))
    if unknown:
        raise TypeError(f"lda(backend='scvi-tools') does not map {unknown}; it maps {list(SCVI_LDA_OPTIONS)}.")
    # handed to scvi-tools as they are, so checked here by the rules a TrainConfig applies
    # before the cells are read (max_epochs and device were checked only after them, the rest not at all)
    TrainConfig(**train_kwargs)
    # scvi-tools would take n_topics=1 or n_hidden=64.5 and fail (or not) deep inside torch
    check_topic_options(dict(n_topics=n_topics, n_hidden=n_hidden), "a keyword of sa.tl.lda(backend='scvi-tools')")
    training_data(adata, layer, None, None, **COUNTS_ADVICE)  # the native checks and errors, before scvi-tools
    v.check_n_latent(n_topics, adata.n_vars, "n_topics")
    result = bridge.fit_amortized_lda(adata, n_topics=n_topics, layer=layer, n_hidden=n_hidden, **train_kwargs)
    scvi = bridge.import_scvi()
    X = v.get_matrix(adata, layer)
    props, topics = result.latent.astype(np.float64), result.loadings.astype(np.float64)
    coo = X.tocoo()
    # multinomial probability of each observed (cell, gene) entry, without the dense matrix
    p_nz = np.einsum("ij,ij->i", props[coo.row], topics[:, coo.col].T)
    log_lik = np.log(np.maximum(p_nz, 1e-30)) @ coo.data
    params = params_record(method="prodlda", batch_key=None, layer=layer, n_topics=n_topics, n_hidden=n_hidden,
                           backend="scvi-tools", scvi_model="AmortizedLDA",
                           scvi_tools_version=str(scvi.__version__), **train_kwargs)
    uns = {"params": params, "history": result.history, "perplexity": float("nan"),
           "train_perplexity": float(np.exp(-log_lik / max(coo.data.sum(), 1.0))),
           "key_added": key_added, "varm_key": varm_key}
    # called by tl.lda: the warning points one frame further up, at the caller of tl.lda
    return write_and_return(adata, result.model, copy=copy, uns_key=uns_key, stacklevel=4,
                            obsm={key_added: result.latent}, varm={varm_key: result.loadings.T}, uns={uns_key: uns})

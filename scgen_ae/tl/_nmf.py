from __future__ import annotations

import numpy as np
from anndata import AnnData

from .. import _validate as v
from .. import ondisk
from ..models import _nmf_solver
from ..models._nmf_data import StreamedChunks
from ..models.nmf import (LOSSES, NMF, TRANSFORMS, NMFConfig, apply_alignment, check_nonnegative, fit_alignment,
                          input_kind, preprocess, split_by_batch)
from ..spec import DataSpec
from ..train import resolve_device, seeded_threads, warn_interrupted
from ._common import params_record, write_and_return

SOLVERS = ("hals", "mu")
INITS = ("nndsvda", "nndsvd", "random")


# name -> (accepts the value, the rule, how to fix); by type, not int() / float(), which take 1.5 as 1
_RULES = {
    "max_iter": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1 (passes over the cells)",
                 "pass e.g. max_iter=200 (the default)"),
    "tol": (lambda x: v._is_number(x) and x >= 0, "a finite number >= 0 (a relative improvement)",
            "pass e.g. tol=1e-4 (the default)"),
    "target_sum": (lambda x: v._is_number(x) and x > 0, "a finite number > 0 (counts per cell after normalising)",
                   "pass e.g. target_sum=1e4 (the default)"),
    "lam": (lambda x: v._is_number(x) and x >= 0, "a finite number >= 0 (iNMF's penalty)",
            "pass e.g. lam=20 (the default)"),
    "n_quantiles": (lambda x: v._is_int(x) and x >= 2,
                    "an integer >= 2 (one quantile, probability 0, would map every cell to the minimum)",
                    "pass e.g. n_quantiles=50 (the default)"),
    "min_cells": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1", "pass e.g. min_cells=20 (the default)"),
    "min_match": (lambda x: v._is_number(x) and -1 <= x <= 1, "a number from -1 to 1 (a correlation)",
                  "pass e.g. min_match=0.5 (the default)"),
    "batch_size": (lambda x: x is None or (v._is_int(x) and x >= 1), "None or an integer >= 1 (cells per chunk)",
                   "pass e.g. batch_size=4096, or batch_size=None for full-batch updates"),
    "copy": (v._is_bool, "True or False (a truthy 'no' would copy)",
             "pass copy=True for an annotated copy, or copy=False"),
}


def _check_options(adata, *, loss, solver, init, transform, batch_key, n_components, keys, **options) -> None:
    """Every option of tl.nmf by type and range, before any work (before X is read)."""
    v.check_by_rules(_RULES, options, "a keyword of sa.tl.nmf")
    for name, value, choices in (("loss", loss, LOSSES), ("solver", solver, SOLVERS), ("init", init, INITS),
                                 ("transform", transform, TRANSFORMS)):
        if not isinstance(value, str) or value not in choices:
            raise v.InputError(f"{name}={value!r}; choose one of {choices}.")
    for name, (value, default) in keys.items():
        # anndata takes any key, and one that is not a str fails only when the AnnData is written to a file
        if not isinstance(value, str) or not value:
            raise v.InputError(f"{name}={value!r} (a keyword of sa.tl.nmf) is invalid: it must be a non-empty str "
                               f"(where the results go). To fix it, pass e.g. {name}={default!r} (the default).")
    if loss == "kl" and solver != "mu":
        raise v.InputError("loss='kl' is fitted by multiplicative updates: pass solver='mu'.")
    if batch_key is not None and (loss != "frobenius" or solver != "hals"):
        raise v.InputError("With batch_key, integrative NMF is fitted with loss='frobenius' and solver='hals'; "
                           f"got loss={loss!r}, solver={solver!r}. Pass those, or batch_key=None.")
    v.check_n_latent(n_components, adata.n_vars, "n_components")
    if n_components > adata.n_obs:  # the cells are counted without reading X
        raise v.InputError(f"n_components={n_components} is more than min(n_cells, n_genes) = {min(adata.shape)}; "
                           "choose fewer components.")


def _check_values(X, layer, transform) -> None:
    """NMF needs non-negative data; transform='log1p' normalises, so it needs counts."""
    check_nonnegative(X, layer)
    if transform == "log1p":
        frac = np.abs(X.data - np.round(X.data)) > 1e-3
        if frac.any():
            where = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
            raise v.InputError(
                f"{where} has {int(frac.sum())} non-integer values (e.g. {float(X.data[frac][0]):.4g}), but "
                "transform='log1p' normalises raw counts. Pass the counts via layer= (keep them with "
                "adata.layers['counts'] = adata.X.copy() before normalising), or transform='none' to "
                "factorise the values as they are (e.g. already log-normalised)."
            )


def nmf(
    adata: AnnData,
    *,
    n_components: int = 10,
    batch_key: str | None = None,
    layer: str | None = None,
    loss: str = "frobenius",
    solver: str = "hals",
    transform: str = "log1p",
    target_sum: float = 1e4,
    init: str = "nndsvda",
    max_iter: int = 200,
    tol: float = 1e-4,
    lam: float = 20.0,
    n_quantiles: int = 50,
    min_cells: int = 20,
    min_match: float = 0.5,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
    n_threads: int | None = None,
    progress: bool = True,
    key_added: str = "X_nmf",
    varm_key: str = "nmf_loadings",
    uns_key: str = "nmf",
    copy: bool = False,
) -> NMF | tuple[AnnData, NMF]:
    """Non-negative matrix factorisation of cells x genes, batch-aware with ``batch_key``.

    Without ``batch_key``: ``X ~ W H`` (sklearn's ``NMF``). With it: integrative NMF
    (LIGER's iNMF), ``X_b ~ W_b (H + V_b)`` with loadings ``H`` shared by all batches,
    batch-specific ``V_b`` penalised by ``lam/2 ||W_b V_b||^2`` (started from the plain
    NMF solution), followed by LIGER's
    quantile alignment of the cell factors, so ``obsm[key_added]`` is batch corrected.
    Fitted in torch on sparse CSR input (never densified), on the CPU or CUDA.

    Parameters
    ----------
    adata
        Cells x genes; raw counts in ``X`` or ``layers[layer]`` (sparse or dense).
    n_components
        Number of factors k.
    batch_key
        ``obs`` column with the batch of each cell; None fits plain NMF. Other covariates
        (``categorical_covariate_keys`` of :func:`~scgen_ae.tl.vae`) are not taken: the
        alignment is per batch only; combine factors into one ``batch_key`` column if needed.
    layer
        Layer with the data; None uses ``X``.
    loss
        "frobenius" (1/2 ||X - W H||^2) or "kl" (generalised Kullback-Leibler, i.e.
        Poisson NMF; plain NMF with ``solver="mu"``).
    solver
        "hals" (hierarchical alternating least squares with extrapolation; Frobenius) or
        "mu" (multiplicative updates; Frobenius or KL).
    transform
        What is factorised: "log1p" (default: each cell normalised to ``target_sum``
        counts, then log1p, as ``sc.pp.normalize_total`` + ``sc.pp.log1p``; needs counts)
        or "none" (the non-negative values as given, e.g. counts for ``loss="kl"``).
    init
        "nndsvda" (NNDSVD, zeros filled with the mean; default), "nndsvd", or "random"
        (seeded by ``seed``). NNDSVD starts from a randomized SVD with 7 power iterations
        (sklearn's) when each batch's cells are one chunk in memory (``batch_size`` None or
        at least the largest batch), else with 2 (each iteration is two passes over the
        data), so a chunked or on-disk fit starts elsewhere.
    max_iter, tol
        At most ``max_iter`` passes over the cells; stop earlier when a pass lowers the
        objective by less than ``tol`` (relative). Plain Frobenius HALS fits (no
        ``batch_key``) from an NNDSVD start, in memory with ``batch_size`` None (or at least
        the number of cells), make 3 passes over the cells, then fit the rank-(k + 10)
        sketch of the data that the start's SVD leaves behind (up to ``max_iter`` passes
        over it, to a relative improvement of ``max(tol / 10, 1e-5)``), then go on over the
        cells: a pass over the sketch costs a fraction of one over the cells, and few of
        the latter are then needed.
    lam
        iNMF's penalty on the batch-specific loadings (with ``batch_key`` only). iNMF
        starts from the plain NMF solution (shared loadings, V = 0), and from there the
        result hardly depends on ``lam``: 5 (LIGER's default) and 20 scored within 0.005
        scIB Total of each other on the four shared data sets.
    batch_size
        None: full-batch updates. An integer: online updates, the loadings are updated
        after every chunk of ``batch_size`` cells, and the dense working memory is
        O(batch_size x k + k x n_genes), independent of the number of cells, plus each
        chunk's k x n_genes statistics (4 bytes each, kept up to 256 MB in all: they save
        one sparse product per chunk and pass; beyond that they are recomputed). On the
        CPU chunks (the whole matrix without ``batch_size``) with >= 30 % non-zeros are also
        held as dense float32 arrays, up to 256 MB in all: their products are faster so.
        In memory, the chunks are views of X's rows (a float32 CSR is used as given, with
        its column indices in any order; ``transform="log1p"`` makes one transformed copy,
        and ``batch_key`` one row block per batch), and sparse chunks add their transpose
        X^T once (the size of X again).
        When ``adata.X`` is on disk (``sa.read_backed``, a backed ``.h5ad``) ``batch_size``
        is required: each pass reads the chunks from disk again (checks streamed too), so
        memory holds one chunk of counts plus the k cell factors per cell (the result);
        the same seed gives the in-memory result. Full-batch updates would hold all of X,
        so they are refused there (``adata.to_memory()`` first, if that is wanted).
    seed, device, n_threads
        Random seed (initialisation), "auto"/"cpu"/"cuda", and torch's CPU threads (None:
        ``sa.settings.n_threads``, else every usable core); refused before any work by the
        rules of ``tl.vae``'s training options.
    progress
        Draw the progress bar of ``tl.vae``, one step per pass, as ``sa.settings`` allow
        (``progress_bar``, ``verbosity``). The fit is the same with it or without.
    key_added, varm_key, uns_key
        Where the cell factors, the loadings and the parameters go.
    copy
        Work on a copy and return it (as scanpy); the model is then ``sa.tl.get_model(copy, uns_key)``.

    Returns
    -------
    The fitted :class:`~scgen_ae.models.NMF` (with ``copy=True`` the annotated copy of ``adata``; the model:
    :func:`~scgen_ae.tl.get_model`).
    Errors leave ``adata`` unchanged; so does Ctrl-C (with a warning; the model so far is returned).
    Sets

    - ``adata.obsm[key_added]``: (n_cells, k) non-negative cell factors. Without
      ``batch_key``: ``W``, with ``X ~ W @ varm[varm_key].T``. With ``batch_key``: each
      batch's factors quantile-aligned, cluster by cluster, to those of the largest batch
      (the reference, ``uns[uns_key]["reference_batch"]``), in its units (its cells keep
      their own ``W``); batch corrected. A cluster too small, or whose counterpart in the
      reference is another population, is only rescaled to those units.
    - ``adata.varm[varm_key]``: (n_genes, k) non-negative shared gene loadings, each
      factor (column) with unit L2 norm.
    - ``adata.uns[uns_key]["params"]``: the arguments used.
    - ``adata.uns[uns_key]["history"]``: the :class:`~scgen_ae.train.History` record of
      every model (one entry per pass; ``stopped_early``: converged before ``max_iter``
      passes; ``seconds``: the whole fit's time) with ``train_loss`` (objective per cell after each
      pass: 1/2 squared Frobenius error (+ iNMF penalty), or generalised KL), and NMF's own
      ``pass_seconds`` (cumulative time after each pass; models fitted before this field
      have these times under ``seconds``), ``n_iter``, ``converged``, ``shared_passes`` (iNMF: the
      first ``shared_passes`` entries are its plain-NMF start), ``sketch_loss`` (per pass
      over the sketch, which came after the first ``sketch_at`` passes: its objective +
      1/2 the squared error of the sketch, per cell; an estimate of the objective; its
      time is in ``pass_seconds``), ``loss_label`` (what the losses are); ``validation_loss``
      is empty and ``best_epoch`` the last pass. ``sa.pl.history(adata, key=uns_key)``
      draws it (the passes over the sketch dashed, where they ran).
    - ``adata.uns[uns_key]["key_added"]``, ``["varm_key"]``: the keys above (read by
      the generic top-genes / loadings plots); with ``batch_key`` also ``["reference_batch"]``.
    """
    v.check_anndata(adata)  # n_components is checked against its shape
    _check_options(adata, loss=loss, solver=solver, init=init, transform=transform, batch_key=batch_key,
                   n_components=n_components, max_iter=max_iter, tol=tol, target_sum=target_sum, lam=lam,
                   n_quantiles=n_quantiles, min_cells=min_cells, min_match=min_match, batch_size=batch_size,
                   copy=copy, keys=dict(key_added=(key_added, "X_nmf"), varm_key=(varm_key, "nmf_loadings"),
                             uns_key=(uns_key, "nmf")))
    v.check_target(adata, copy, "sa.tl.nmf")
    # tl.nmf takes these as its own arguments, not through a TrainConfig that would check them:
    # n_threads=0 meant every core and seed=1.5 seed 1, and a bad device failed after reading the cells
    for name, value in (("seed", seed), ("n_threads", n_threads), ("progress", progress)):
        v.check_train_option(name, value, "a keyword of sa.tl.nmf")
    v.check_device(device)
    if isinstance(adata, AnnData):
        v.check_unique_genes(adata)  # before the advice on backed data
    on_disk = ondisk.is_on_disk(adata, layer)
    if on_disk and batch_size is None:
        raise v.InputError("adata.X is on disk (a backed .h5ad / zarr store): pass batch_size= (e.g. 4096) to "
                           "stream it with online updates, or call adata.to_memory() for full-batch updates.")
    # NMF's own value checks and messages; in memory, indices left unsorted: the products take any order
    spec, data = DataSpec.learn(adata, layer=layer, batch_key=batch_key, input_kind=input_kind(transform),
                                check=lambda block: _check_values(block, layer, transform), sorted_indices=False)
    codes, cats = data.batch, list(spec.batch_categories)
    if not on_disk:
        X = data.X
    k = int(n_components)  # checked: an integer; a plain int for the config and the file
    config = NMFConfig(n_genes=adata.n_vars, n_components=k, n_batches=len(cats), loss=loss, transform=transform,
                       target_sum=target_sum, lam=lam if batch_key is not None else 0.0,
                       aligned=batch_key is not None, n_quantiles=int(n_quantiles), min_cells=int(min_cells),
                       min_match=float(min_match),
                       reference_batch=int(np.bincount(codes).argmax()) if batch_key is not None else None)
    dev = resolve_device(device)
    dev = dev if dev.type in ("cpu", "cuda") else resolve_device("cpu")  # sparse CSR kernels: CPU / CUDA only
    options = dict(loss=loss, solver=solver, init=init, max_iter=max_iter, tol=tol, lam=config.lam,
                   integrative=config.aligned, seed=seed, device=dev, progress=progress)
    if on_disk:
        idx = [np.flatnonzero(codes == b) for b in range(len(cats))]  # cells of each batch, as split_by_batch
    else:
        blocks, idx = split_by_batch(preprocess(X, transform, target_sum), codes, len(cats))
    with seeded_threads(seed, n_threads):
        if on_disk:
            chunks = StreamedChunks(
                lambda cells: preprocess(data.read_rows(cells, sorted_indices=False), transform, target_sum),
                idx, batch_size, dev)
            result = _nmf_solver.fit_chunks(chunks, [len(i) for i in idx], adata.n_vars, chunks.value_sum(), k,
                                            **options)
        else:
            result = _nmf_solver.fit(blocks, k, chunk_size=batch_size, **options)
        norms = result.H.norm(dim=1).clamp_min(1e-12)[:, None]  # unit-norm loadings; W H unchanged
        model = NMF(config, adata.var_names, batch_key, cats, layer, result.history(_loss_label(config)).as_dict())
        model.module.to(dev)
        model.set_factors(result.H / norms, result.V / norms[None])
        Z = np.zeros((adata.n_obs, k), dtype=np.float32)
        for rows, W in zip(idx, result.W):
            Z[rows] = (W * norms.T).cpu().numpy()
        if result.interrupted:
            warn_interrupted("the loadings so far; use model.transform(adata) or model.save(path).", "Fitting",
                             stacklevel=3)
            return model
        if config.aligned:
            tables = fit_alignment(Z, codes, model.loadings.T, config)
            model.set_alignment(tables)
            Z = apply_alignment(Z, codes, tables, config.reference_batch)
    params = params_record(n_components=k, batch_key=batch_key, layer=layer, loss=loss, solver=solver,
                           transform=transform, target_sum=target_sum, init=init, max_iter=max_iter, tol=tol,
                           lam=config.lam, n_quantiles=n_quantiles, min_cells=min_cells, min_match=min_match,
                           batch_size=batch_size, seed=seed, device=str(dev), n_threads=n_threads,
                           progress=progress)
    return write_and_return(
        adata, model, copy=copy, uns_key=uns_key, obsm={key_added: Z}, varm={varm_key: model.loadings.copy()},
        uns={uns_key: {"params": params, "history": model.history, "key_added": key_added, "varm_key": varm_key,
                       **({"reference_batch": cats[config.reference_batch]} if config.aligned else {})}})


def _loss_label(config: NMFConfig) -> str:
    if config.loss == "kl":
        return "generalised KL divergence per cell"
    return "1/2 squared error per cell" + (" + iNMF penalty" if config.aligned else "")


"""Input validation shared by every model front.

Each check raises :class:`InputError` (a ``ValueError``) whose message says what is
wrong, where (which matrix / column) and how to fix it. Checks never modify the
AnnData they inspect: fronts validate first and write results last.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData



class InputError(ValueError):
    """Bad input to a scgen_ae function; the message says what, where and how to fix it."""


class MissingKeyError(InputError, KeyError):
    """A key (``obsm`` basis, ``obs`` column, ``uns`` record) that is not there.

    Also a ``KeyError``, so code that caught the plain ``KeyError`` these errors used to
    be keeps working.
    """

    __str__ = ValueError.__str__  # KeyError would print the message in quotes


def to_csr32(X, *, sorted_indices: bool = True) -> sp.csr_matrix:
    """Any in-memory matrix -> CSR float32 with no stored zeros, and sorted column indices
    unless ``sorted_indices=False`` (NMF's products do not need them: sorting a column-subset
    matrix of 10^5 cells copies ~150 MB).

    Returns the input itself when it already is one (never modifies it): the sparse
    likelihoods treat every stored entry as a non-zero count.
    """
    if sp.issparse(X):
        X = X.tocsr()
        if X.dtype != np.float32:
            X = X.astype(np.float32)
        if X.nnz and not np.all(X.data):
            X = X.copy()  # tocsr() may hand back the caller's matrix
            X.eliminate_zeros()
        if sorted_indices and not X.has_sorted_indices:
            X = X.sorted_indices()
        return X
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def _where(layer: str | None) -> str:
    return f"adata.layers[{layer!r}]" if layer is not None else "adata.X"


def _available_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def check_anndata(adata) -> None:
    if not isinstance(adata, AnnData):
        raise InputError(f"Expected an AnnData object, got {type(adata).__name__}.")


def get_matrix(adata: AnnData, layer: str | None, *, sorted_indices: bool = True) -> sp.csr_matrix:
    """Return ``X`` or ``layers[layer]`` as CSR float32, checked for NaN/Inf and size
    (``sorted_indices=False``: column indices left in their order, see :func:`to_csr32`)."""
    check_anndata(adata)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes).")
    if layer is not None and layer not in adata.layers:
        raise InputError(
            f"layer={layer!r} is not in adata.layers (available: {list(adata.layers.keys()) or 'none'}). "
            "Pass layer=None to use adata.X, or store the raw counts first: adata.layers['counts'] = adata.X.copy()."
        )
    X = adata.layers[layer] if layer is not None else adata.X
    if X is None:
        raise InputError("adata.X is None; pass layer= naming the layer that holds the counts.")
    if adata.isbacked and layer is None:
        X = X[:]  # backed but not streamed (CSC on disk, or a front with no out-of-core path): read whole
    if not sp.issparse(X):
        X = np.asarray(X)
        if not np.issubdtype(X.dtype, np.number):
            raise InputError(f"{_where(layer)} has dtype {X.dtype}; a numeric matrix is required.")
        nnz = int(np.count_nonzero(X))
        need = nnz * 12 + X.shape[0] * 8
        if need > 0.8 * _available_bytes():
            raise InputError(
                f"{_where(layer)} is a dense {X.shape[0]} x {X.shape[1]} matrix; converting it to sparse needs "
                f"about {need / 2**30:.1f} GiB, more than the memory available. Store it as a "
                "scipy.sparse CSR matrix (it is read that way from .h5ad files written sparse)."
            )
    data = X.data if sp.issparse(X) else X
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(
            f"{_where(layer)} contains {n_bad} NaN/Inf values. Find them with "
            "np.argwhere(~np.isfinite(...)), then fix or drop those cells/genes (a bad merge or a "
            "division by a zero size factor are the usual causes)."
        )
    return to_csr32(X, sorted_indices=sorted_indices)


GAUSSIAN_ADVICE = "use likelihood='gaussian' for log-normalised data"
COUNT_CHECK_VALUES = 1 << 22  # values checked at a time: 16 MB of float32


def check_counts(X: sp.csr_matrix, layer: str | None, likelihood: str, *, needs: str | None = None,
                 otherwise: str | None = GAUSSIAN_ADVICE) -> None:
    """Count likelihoods need non-negative integers; say so precisely when they are not.

    Parameters
    ----------
    X, layer
        The matrix and where it came from (for the message).
    likelihood
        The count likelihood; the message names it as ``likelihood=...`` unless ``needs`` is given.
    needs
        What needs counts, in words, when the caller has no ``likelihood`` option
        (e.g. "tl.lda (a topic model of counts)").
    otherwise
        The alternative for data that are not counts, or None when the caller has none:
        the advice must be one the caller can follow.
    """
    who = needs or f"likelihood={likelihood!r}"
    alternative = f", or {otherwise}" if otherwise else ""
    data = X.data
    if data.size and data.min() < 0:
        raise InputError(
            f"{_where(layer)} has {int((data < 0).sum())} negative values, but {who} "
            f"models raw counts. Was the data scaled (sc.pp.scale)? Pass the raw counts via layer={alternative}."
        )
    n_frac, example = 0, None
    for start in range(0, data.size, COUNT_CHECK_VALUES):  # temporaries of one slice, not of all the values
        part = data[start:start + COUNT_CHECK_VALUES]
        bad = np.abs(part - np.round(part)) > 1e-3
        n_frac += int(bad.sum())
        if example is None and bad.any():
            example = float(part[bad][0])
    if n_frac:
        looks_log = data.size and float(data.max()) < 30
        raise InputError(
            f"{_where(layer)} has {n_frac} non-integer values (e.g. {example:.4g}), but "
            f"{who} models raw counts."
            + (" The values look log-normalised (all below 30)." if looks_log else "")
            + " Pass the raw counts, e.g. layer='counts' (keep them with adata.layers['counts'] = "
            f"adata.X.copy() before sc.pp.normalize_total/log1p){alternative}."
        )


def check_not_empty(X: sp.csr_matrix, layer: str | None) -> None:
    """Refuse cells or genes without a single count: they carry no signal to train on."""
    cell_zero = int((np.diff(X.indptr) == 0).sum()) if X.nnz else X.shape[0]
    gene_zero = X.shape[1] - int(np.count_nonzero(np.bincount(X.indices, minlength=X.shape[1])))
    if cell_zero or gene_zero:
        refuse_empty(cell_zero, gene_zero, layer)


def refuse_empty(cell_zero: int, gene_zero: int, layer: str | None) -> None:
    """The error of :func:`check_not_empty`, for callers that counted empty cells/genes themselves."""
    raise InputError(
        f"{_where(layer)} has {cell_zero} cells and {gene_zero} genes with no counts at all. Drop them "
        "first with sa.pp.drop_empty(adata) (or sc.pp.filter_cells(adata, min_counts=1) and "
        "sc.pp.filter_genes(adata, min_counts=1))."
    )


def present_categories(col: pd.Series) -> list[str]:
    """The values of an ``obs`` column that occur, as strings, in its categorical order (sorted
    for other dtypes): how batches and categorical covariates learn their categories."""
    values = set(col.astype(str))
    order = list(col.cat.categories.astype(str)) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(values)
    return [c for c in order if c in values]


def batch_codes(
    adata: AnnData,
    batch_key: str | None,
    categories: Sequence[str] | None = None,
    min_cells: int = 3,
    allow_single: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Integer codes of ``obs[batch_key]`` and the category list.

    With ``categories`` (a trained model's), codes follow that order and unseen
    categories are refused. Without, the categories are learnt here and must be at
    least two (one with ``allow_single=True``: a reference to extend later), each with
    ``min_cells`` cells.
    """
    if batch_key is None:
        if categories is not None and len(categories) > 1:
            raise InputError(
                f"The model was trained with {len(categories)} batches; pass batch_key= naming the obs column "
                "with the batch of each cell."
            )
        return np.zeros(adata.n_obs, dtype=np.int64), list(categories or ["all"])
    if batch_key not in adata.obs:
        cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise InputError(f"batch_key={batch_key!r} is not a column of adata.obs (columns: {cols}).")
    col = adata.obs[batch_key]
    if col.isna().any():
        raise InputError(
            f"adata.obs[{batch_key!r}] has {int(col.isna().sum())} missing values; assign those cells a "
            "batch or drop them."
        )
    values = col.astype(str).to_numpy()
    if categories is None:
        cats = present_categories(col)
        if len(cats) < 2 and not allow_single:
            raise InputError(
                f"adata.obs[{batch_key!r}] has a single category ({cats[0]!r}); there is no batch effect to "
                "correct. Pass batch_key=None to train without batch correction."
            )
        counts = pd.Series(values).value_counts()
        small = counts[counts < min_cells]
        if len(small):
            raise InputError(
                f"adata.obs[{batch_key!r}] has categories with fewer than {min_cells} cells: "
                f"{dict(small)}. Merge them into a larger batch or drop those cells."
            )
    else:
        cats = list(categories)
        unseen = sorted(set(values) - set(cats))
        if unseen:
            raise InputError(
                f"adata.obs[{batch_key!r}] has categories the model was not trained on: {unseen[:10]} "
                f"(known: {cats}). Map them onto a known batch (e.g. adata.obs[{batch_key!r}] = ...), or "
                "retrain including those cells."
            )
    lookup = {c: i for i, c in enumerate(cats)}
    return np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values)), cats


def label_codes(adata: AnnData, label_key: str, unlabeled_category) -> tuple[np.ndarray, list[str]]:
    """Codes of ``obs[label_key]`` for a classifier: ``(codes (n_obs,) int64, classes)``, code
    -1 where the label equals ``unlabeled_category``. Refuses a missing column, missing values
    (NaN), an ``unlabeled_category`` that is neither a value nor a declared category of the
    column, no labelled cell, or fewer than two classes.
    """
    if label_key is None or label_key not in adata.obs:
        cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise InputError(f"label_key={label_key!r} is not a column of adata.obs (columns: {cols}); the classifier "
                         "needs the obs column holding the known labels.")
    col = adata.obs[label_key]
    if col.isna().any():
        raise InputError(
            f"adata.obs[{label_key!r}] has {int(col.isna().sum())} missing values (NaN). Mark cells without a "
            f"label with unlabeled_category={unlabeled_category!r} instead, e.g. "
            f"adata.obs[{label_key!r}] = adata.obs[{label_key!r}].astype(str).where(adata.obs[{label_key!r}].notna(), "
            f"{str(unlabeled_category)!r}).")
    values = col.astype(str).to_numpy()
    unlabeled = str(unlabeled_category)
    declared = isinstance(col.dtype, pd.CategoricalDtype) and unlabeled in set(col.cat.categories.astype(str))
    if unlabeled not in set(values) and not declared:
        raise InputError(
            f"unlabeled_category={unlabeled_category!r} is not a value of adata.obs[{label_key!r}] (values: "
            f"{sorted(set(values))[:10]}). Pass the value that marks unlabelled cells; if every cell is labelled, "
            f"declare it as an unused category: adata.obs[{label_key!r}] = "
            f"adata.obs[{label_key!r}].astype('category').cat.add_categories([{unlabeled!r}]).")
    known = values != unlabeled
    if not known.any():
        raise InputError(f"Every cell of adata.obs[{label_key!r}] is {unlabeled!r} (unlabelled): the classifier "
                         "needs some labelled cells. Label some cells, or leave unlabeled_category out to train "
                         "without a classifier.")
    order = list(col.cat.categories.astype(str)) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(set(values))
    classes = [c for c in order if c != unlabeled and c in set(values[known])]
    if len(classes) < 2:
        raise InputError(f"The labelled cells of adata.obs[{label_key!r}] hold a single class ({classes[0]!r}); "
                         "a classifier needs at least two.")
    lookup = {c: i for i, c in enumerate(classes)}
    codes = np.fromiter((lookup.get(x, -1) for x in values), dtype=np.int64, count=len(values))
    return codes, classes


def align_genes(adata: AnnData, var_names: Sequence[str], pad_missing: bool = False) -> tuple[np.ndarray, list[str]]:
    """Column index of each trained gene in ``adata`` (-1 where missing, when padding).

    Returns (index, missing_genes). Extra genes in ``adata`` are ignored.
    """
    check_unique_genes(adata)
    pos = pd.Index(adata.var_names).get_indexer(pd.Index(var_names))
    missing = [g for g, p in zip(var_names, pos) if p < 0]
    if missing and not pad_missing:
        raise InputError(
            f"{len(missing)} of the model's {len(var_names)} genes are not in adata.var_names "
            f"(e.g. {missing[:5]}). Subset/reorder is automatic for present genes; for missing ones pass "
            "pad_missing=True to fill them with zero counts (results degrade with many missing genes)."
        )
    if missing:
        warnings.warn(f"{len(missing)} of the model's {len(var_names)} genes are not in adata.var_names (e.g. "
                      f"{missing[:5]}); pad_missing=True fills them with zero counts.", UserWarning, stacklevel=6)
    return pos, missing


def aligned_matrix(X: sp.csr_matrix, pos: np.ndarray) -> sp.csr_matrix:
    """Columns ``pos`` of ``X``, with all-zero columns where ``pos`` is -1."""
    if (pos >= 0).all():
        return X[:, pos].tocsr() if not np.array_equal(pos, np.arange(X.shape[1])) else X
    present = np.flatnonzero(pos >= 0)
    sel = sp.csr_matrix((np.ones(len(present), np.float32), (pos[present], present)), shape=(X.shape[1], len(pos)))
    return (X @ sel).tocsr().astype(np.float32)


def check_unique_genes(adata: AnnData) -> None:
    """Refuse duplicate ``var_names``: genes are matched by name when a model is applied later."""
    names = pd.Index(adata.var_names)
    if not names.is_unique:
        dup = names[names.duplicated()].unique()
        raise InputError(
            f"adata.var_names has {len(dup)} duplicate gene names (e.g. {list(map(str, dup[:5]))}); a model "
            "finds its genes by name, so each name must be unique. Call adata.var_names_make_unique() first."
        )


def check_copy(adata: AnnData, copy: bool) -> None:
    """Refuse ``copy=True`` on a backed AnnData before any work: anndata copies one only to a
    new file (``adata.copy()`` raises), and reading it into memory defeats streaming it."""
    if copy and isinstance(adata, AnnData) and adata.isbacked:
        raise InputError("copy=True needs an in-memory AnnData, but adata is backed (X stays on disk, and anndata "
                         "copies it only to a new file). Pass copy=False: the results go to adata.obsm / adata.uns "
                         "in memory and the file is left unchanged; or call adata.to_memory() first.")


def check_target(adata: AnnData, copy: bool, front: str) -> None:
    """Before any work: where a front's results would go must be a real AnnData.

    A view (``adata[:, mask]``) is refused unless ``copy=True``: anndata turns a written view
    into a new object, so the results would reach a throw-away copy and not the user's
    AnnData. ``copy=True`` on a backed AnnData is refused too (:func:`check_copy`).
    """
    check_copy(adata, copy)
    if not copy and isinstance(adata, AnnData) and adata.is_view:
        raise InputError(
            f"{front} writes its results into adata, but adata is a view (e.g. adata[:, mask]): the results "
            "would reach a throw-away copy and not your AnnData. Make the subset a real AnnData first, e.g. "
            f"adata_hvg = adata[:, adata.var['highly_variable']].copy(); {front}(adata_hvg, ...), or pass "
            "copy=True to get an annotated copy back."
        )


# ---------------------------------------------------------------- training options

def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_number(x) -> bool:
    return (_is_int(x) or isinstance(x, (float, np.floating))) and bool(np.isfinite(x))


def _is_bool(x) -> bool:
    # not truthiness: a string such as "no" is truthy and would turn on what it seems to turn off
    return isinstance(x, (bool, np.bool_))


def _is_file_name(x) -> bool:
    """A str or os.PathLike naming a file (``io.model_path`` appends ``.npz`` to its last part,
    so a path ending in no name, as "" or ".", fails only when the first checkpoint is written)."""
    if not isinstance(x, (str, os.PathLike)):
        return False
    x = os.fspath(x)
    return isinstance(x, str) and os.path.basename(os.path.normpath(x)) not in ("", ".", "..")


# name -> (accepts the value, the rule, how to fix); None is accepted only where the rule says so
_TRAIN_RULES = {
    "max_epochs": (lambda x: x is None or (_is_int(x) and x >= 1),
                   "an integer >= 1 (with 0 epochs nothing is trained and the results come from random weights)",
                   "pass max_epochs=1 or more, or max_epochs=None for the default number of epochs"),
    "batch_size": (lambda x: _is_int(x) and x >= 2,
                   "an integer >= 2 (batch normalisation needs two cells or more per minibatch)",
                   "pass e.g. batch_size=128 (the default)"),
    "lr": (lambda x: _is_number(x) and x > 0, "a learning rate > 0", "pass e.g. lr=1e-3 (the default)"),
    "validation_fraction": (lambda x: _is_number(x) and 0 <= x < 1,
                            "the share of cells held out for validation: 0 <= validation_fraction < 1",
                            "pass e.g. validation_fraction=0.1 (the default), or 0 to train on every cell "
                            "without validation"),
    "weight_decay": (lambda x: _is_number(x) and x >= 0, "a number >= 0", "pass e.g. weight_decay=1e-6"),
    "patience": (lambda x: _is_int(x) and x >= 1, "an integer >= 1 (epochs without improvement)",
                 "pass e.g. patience=30, or early_stopping=False"),
    "min_delta": (lambda x: _is_number(x) and x >= 0, "a number >= 0", "pass e.g. min_delta=0"),
    "kl_warmup_epochs": (lambda x: x is None or (_is_int(x) and x >= 0), "None or an integer >= 0",
                         "pass e.g. kl_warmup_epochs=None (a third of max_epochs)"),
    "grad_clip": (lambda x: _is_number(x) and x > 0, "a number > 0", "pass e.g. grad_clip=50"),
    "seed": (lambda x: _is_int(x) and x >= 0, "an integer >= 0", "pass e.g. seed=0"),
    "n_threads": (lambda x: x is None or (_is_int(x) and x >= 1), "None or an integer >= 1",
                  "pass n_threads=None (sa.settings.n_threads, else every usable core)"),
    "checkpoint_every": (lambda x: _is_int(x) and x >= 1, "an integer >= 1", "pass e.g. checkpoint_every=1"),
    "devices": (lambda x: _is_int(x) and x >= 1, "an integer >= 1", "pass devices=1"),
    "num_nodes": (lambda x: _is_int(x) and x >= 1, "an integer >= 1", "pass num_nodes=1"),
    "precision": (lambda x: x in ("auto", "fp32", "bf16"), "'auto', 'fp32' or 'bf16'", "pass precision='auto'"),
    "progress": (_is_bool, "True or False (whether to draw a progress bar)",
                 "pass progress=False to hide the bar (or progress=True to draw it); sa.settings.progress_bar "
                 "and sa.settings.verbosity hide it everywhere"),
    "early_stopping": (_is_bool, "True or False (whether to stop when the validation loss stops improving)",
                       "pass early_stopping=False to train every epoch (or True, the default, to stop early)"),
    "checkpoint_path": (lambda x: x is None or _is_file_name(x),
                        "None or the path of a file (a str or pathlib.Path; .npz is appended when missing)",
                        "pass e.g. checkpoint_path='run.npz', or checkpoint_path=None for no checkpoints"),
    "resume": (_is_bool, "True or False (whether to continue from checkpoint_path)",
               "pass resume=True with a checkpoint_path to continue that run, or resume=False to start afresh"),
}

# the command line's flag for the training options it has ("--quiet" turns progress off)
_TRAIN_FLAGS = {"max_epochs": "--max-epochs", "seed": "--seed", "n_threads": "--threads", "progress": "--quiet"}


def check_by_rules(rules: dict, options: dict, where: str, *, kind: str = "", flags: dict | None = None) -> None:
    """Refuse the first of ``options`` that breaks its rule in ``rules`` (name -> (accepts the
    value, the rule, how to fix)) with :class:`InputError`; ``where`` says which call took it,
    ``kind`` prefixes the message ("Training option "), ``flags`` names command-line flags."""
    for name, value in options.items():
        ok, rule, fix = rules[name]
        if not ok(value):
            flag = f"; {flags[name]} on the command line" if flags and name in flags else ""
            raise InputError(f"{kind}{name}={value!r} ({where}{flag}) is invalid: it must be {rule}. "
                             f"To fix it, {fix}.")


def check_train_option(name: str, value, where: str = "a keyword of the sa.tl training fronts and "
                                                       "VAE.map_query") -> None:
    """Refuse one training option by its rule in :data:`_TRAIN_RULES`; ``where`` says which
    calls take it (for fronts that take the option as their own argument, e.g. tl.nmf's)."""
    check_by_rules(_TRAIN_RULES, {name: value}, where, kind="Training option ", flags=_TRAIN_FLAGS)


def check_train_options(config) -> None:
    """Refuse training options (a :class:`~scgen_ae.train.TrainConfig`) that would train
    nothing or fail later inside torch, before any work is done."""
    for name in _TRAIN_RULES:
        check_train_option(name, getattr(config, name))
    if config.resume and config.checkpoint_path is None:
        # training would start afresh without a word, which is what resume=True asks not to do
        raise InputError("Training option resume=True needs checkpoint_path= (the checkpoint to continue from), "
                         "but checkpoint_path is None. To fix it, pass checkpoint_path='run.npz' (the path the "
                         "interrupted run was given), or resume=False to start afresh.")
    check_device(config.device)


def check_device(device) -> None:
    """Refuse a device torch cannot use here, with the fix, instead of torch's error mid-training."""
    import torch

    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device={device!r} is not a device name; pass 'auto', 'cpu', 'cuda', 'cuda:0' or "
                         "'mps'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device!r}, but torch finds no CUDA GPU here (torch.cuda.is_available() is "
                         "False: no GPU, or a CPU-only torch build). Pass device='cpu', or 'auto' to use a GPU "
                         "only when there is one.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device={device!r}, but torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}). Pass one of those, or device='cuda'.")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"device={device!r}, but Apple's Metal (MPS) backend is not available here "
                             "(torch.backends.mps.is_available() is False: not a Mac with Apple silicon and "
                             "macOS 12.3+, or a torch build without MPS). Pass device='cpu', or 'auto'.")


def check_split(n_cells: int, validation_fraction: float) -> int:
    """Number of validation cells for ``validation_fraction`` of ``n_cells``; refuses a split
    that leaves fewer than 2 training cells, or no validation cell although some were asked for."""
    n_val = int(round(n_cells * validation_fraction)) if validation_fraction > 0 else 0
    if n_cells - n_val < 2:
        raise InputError(
            f"validation_fraction={validation_fraction!r} of {n_cells} cells holds out {n_val} and leaves "
            f"{n_cells - n_val} to train on; training needs at least 2. Pass a smaller validation_fraction "
            "(or 0: no validation), or train on more cells."
        )
    if validation_fraction > 0 and n_val == 0:
        raise InputError(
            f"validation_fraction={validation_fraction!r} of {n_cells} cells holds out no cell (it rounds to 0), "
            f"so there is nothing to validate on. Pass validation_fraction=0 to train without validation, or at "
            f"least {1 / n_cells:.3g} to hold out one cell."
        )
    return n_val


def check_n_latent(value, n_genes: int, name: str = "n_latent") -> None:
    """A latent size (``n_latent``, ``n_topics``, ``n_components``) between 1 and the number of genes."""
    if not _is_int(value) or not 1 <= value <= n_genes:
        raise InputError(
            f"{name}={value!r} is invalid for data with {n_genes} genes: it must be an integer from 1 to "
            f"{n_genes} (a latent space larger than the data it compresses learns nothing more). "
            f"Pass e.g. {name}={min(10, n_genes)}."
        )


# ---------------------------------------------------------------- files

def check_h5ad_file(path: str | os.PathLike, what: str = "the input") -> None:
    """``path`` is an existing ``.h5ad`` (HDF5) file; otherwise a clear error, not h5py's."""
    import h5py

    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No file at {path!r} ({what}).")
    if os.path.isdir(path) or not path.endswith(".h5ad"):
        raise InputError(
            f"{path!r} ({what}) is not an .h5ad file. Convert it to AnnData first, e.g. "
            "sc.read_10x_mtx / sc.read_csv / anndata.read_loom, then adata.write_h5ad('data.h5ad')."
        )
    if not h5py.is_hdf5(path):
        raise InputError(
            f"{path!r} ({what}) is named .h5ad but is not an HDF5 file (empty, truncated, or another format). "
            "Write it again with adata.write_h5ad()."
        )

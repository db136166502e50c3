"""Held-out evaluation of a denoiser: hide a random fraction of the non-zero counts,
train on the rest, score the predictions on the hidden entries.

Pure functions on arrays (:func:`holdout_nonzeros`, :func:`gene_share_baseline`,
:func:`heldout_errors`, :func:`heldout_nll`) so any tool can be scored the same way
(``benchmarks/`` scores scvi-tools with them), plus :func:`denoise_benchmark`, the AnnData
front. Absolute errors score a point prediction (the median rewards flat ones); the
negative log-likelihood scores the whole predicted distribution, a proper score.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scipy.stats import pearsonr, spearmanr

from .. import _validate as v
from ..data import to_csr32
from ..likelihoods import nb_log_prob, poisson_log_prob, zinb_log_prob


def holdout_nonzeros(X, fraction: float = 0.1, seed: int = 0):
    """Zero out a random ``fraction`` of the non-zero entries of the count matrix ``X``.

    Returns ``(X_corrupted, rows, cols, truth)``: a new CSR matrix without the hidden
    entries (``X`` is not modified), and the coordinates and true counts of the hidden
    ones, each ``(n_hidden,)``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r}; pass a fraction of the non-zero counts in (0, 1), e.g. 0.1.")
    X = to_csr32(X)
    hide = np.random.default_rng(seed).random(X.nnz) < fraction
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[hide]
    cols = X.indices[hide].astype(np.int64)
    truth = X.data[hide].copy()
    data = X.data.copy()
    data[hide] = 0
    corrupted = sp.csr_matrix((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)
    corrupted.eliminate_zeros()
    return corrupted, rows, cols, truth


def gene_share_baseline(X_corrupted, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The trivial prediction: the gene's share of all counts x the cell's library size."""
    X = to_csr32(X_corrupted)
    library = np.asarray(X.sum(1)).ravel()
    gene_total = np.asarray(X.sum(0)).ravel()
    return (gene_total / max(gene_total.sum(), 1.0))[cols] * library[rows]


def heldout_errors(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Median and mean absolute error, Pearson and Spearman correlation of two ``(n,)`` arrays."""
    truth = np.asarray(truth, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    err = np.abs(truth - prediction)
    constant = np.ptp(prediction) == 0 or np.ptp(truth) == 0
    return {
        "median_ae": float(np.median(err)),
        "mean_ae": float(err.mean()),
        "pearson": float("nan") if constant else float(pearsonr(truth, prediction)[0]),
        "spearman": float("nan") if constant else float(spearmanr(truth, prediction)[0]),
        "n_heldout": int(truth.size),
    }


def heldout_nll(truth: np.ndarray, mean: np.ndarray, *, dispersion: np.ndarray | None = None,
                dropout_logits: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood (nats per entry) of the counts ``truth`` ``(n,)`` under a
    Poisson (``mean`` alone), negative binomial (+ ``dispersion``, the inverse dispersion theta)
    or zero-inflated NB (+ ``dropout_logits``, logits of the dropout probability), all ``(n,)``,
    with the package's likelihoods (:mod:`scgen_ae.likelihoods`). For another tool's predicted
    distribution (benchmarks) and the gene-share baseline (a Poisson)."""
    as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    x, log_mu = as_t(truth), as_t(mean).clamp_min(1e-300).log()
    if dispersion is None:
        lp = poisson_log_prob(x, log_mu)
    elif dropout_logits is None:
        lp = nb_log_prob(x, log_mu, as_t(dispersion).log())
    else:
        lp = zinb_log_prob(x, log_mu, as_t(dispersion).log(), as_t(dropout_logits))
    return float(-lp.mean())


def denoise_benchmark(adata: AnnData, *, fraction: float = 0.1, seed: int = 0, layer: str | None = None,
                      batch_key: str | None = None, **denoise_kwargs) -> pd.DataFrame:
    """Score :func:`scgen_ae.tl.denoise` on counts it never saw; ``adata`` is not modified.

    A random ``fraction`` of the non-zero counts of ``X`` / ``layers[layer]`` is set to
    zero, the denoiser is trained on that corrupted matrix (``**denoise_kwargs`` are
    passed on; ``library_size`` is "observed"), and its predictions on the hidden entries
    (expected counts at the corrupted cell's library size) are compared with the true
    counts. Cells and genes left without counts by the corruption are left out of
    training and predicted as 0. The same is done for :func:`gene_share_baseline`.

    The negative log-likelihood ``nll`` (nats per hidden entry, lower is better) scores the
    predicted distribution, not only its mean: for the denoiser its own ZINB / NB / Poisson
    at each hidden entry (:meth:`~scgen_ae.models.BaseModel.entry_log_prob`), for the baseline a
    Poisson with the gene-share mean. It is computed on the hidden entries of the cells and
    genes kept for training (``n_nll`` of them; all of them unless the corruption emptied
    some).

    Returns a data frame with rows "denoise" and "baseline" and columns ``median_ae``,
    ``mean_ae``, ``pearson``, ``spearman``, ``n_heldout``, ``nll``, ``n_nll``;
    ``attrs["seconds"]`` holds the training time.
    """
    from ._denoise import denoise

    if "library_size" in denoise_kwargs or "genes" in denoise_kwargs:
        raise ValueError("denoise_benchmark scores expected counts of every gene at the observed library size; "
                         "do not pass library_size= or genes=.")
    X = v.get_matrix(adata, layer)
    v.check_counts(X, layer, "counts", needs="the held-out benchmark (which hides counts)", otherwise=None)
    corrupted, rows, cols, truth = holdout_nonzeros(X, fraction, seed)
    keep_cells = np.diff(corrupted.indptr) > 0
    keep_genes = np.bincount(corrupted.indices, minlength=corrupted.shape[1]) > 0
    obs = adata.obs[[batch_key]].copy() if batch_key is not None and batch_key in adata.obs else None
    hidden = AnnData(corrupted, obs=obs if obs is not None else pd.DataFrame(index=adata.obs_names),
                     var=pd.DataFrame(index=adata.var_names))[keep_cells, keep_genes].copy()
    model = denoise(hidden, batch_key=batch_key, **denoise_kwargs)
    prediction = np.zeros(truth.size)
    row_pos = np.cumsum(keep_cells) - 1
    col_pos = np.cumsum(keep_genes) - 1
    ok = keep_cells[rows] & keep_genes[cols]
    prediction[ok] = hidden.layers[denoise_kwargs.get("layer_added", "denoised")][row_pos[rows[ok]], col_pos[cols[ok]]]
    baseline = gene_share_baseline(corrupted, rows, cols)
    model_lp = model.entry_log_prob(hidden, row_pos[rows[ok]], col_pos[cols[ok]], truth[ok])
    scores = {"denoise": {**heldout_errors(truth, prediction), "nll": float(-model_lp.mean())},
              "baseline": {**heldout_errors(truth, baseline), "nll": heldout_nll(truth[ok], baseline[ok])}}
    for row in scores.values():
        row["n_nll"] = int(ok.sum())
    table = pd.DataFrame(scores).T
    table.attrs["seconds"] = float(model.history.get("seconds", float("nan")))
    return table

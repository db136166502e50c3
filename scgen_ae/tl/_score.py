"""scIB integration scores of ``obsm`` embeddings, through scib-metrics' :class:`Benchmarker`."""
from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate as v
from ._common import write_results

_INSTALL_HINT = (
    'score_integration needs scib-metrics: pip install "scgen-ae[metrics]" (or pip install scib-metrics).'
)
_BIO, _BATCH, _TOTAL = "Bio conservation", "Batch correction", "Total"
_AGGREGATES = (_BIO, _BATCH, _TOTAL)
_MAX_K = 90  # the Benchmarker's largest neighbourhood (15, 50, 90)
#: each column of the table -> (metric collection, scib-metrics' field that computes it)
METRIC_COLUMNS = {
    "Isolated labels": ("bio", "isolated_labels"), "KMeans NMI": ("bio", "nmi_ari_cluster_labels_kmeans"),
    "KMeans ARI": ("bio", "nmi_ari_cluster_labels_kmeans"), "Silhouette label": ("bio", "silhouette_label"),
    "cLISI": ("bio", "clisi_knn"), "BRAS": ("batch", "bras"), "iLISI": ("batch", "ilisi_knn"),
    "KBET": ("batch", "kbet_per_label"), "Graph connectivity": ("batch", "graph_connectivity"),
    "PCR comparison": ("batch", "pcr_comparison"),
}
_NO_LABEL_NOTE = (
    "no label_key: batch-correction metrics only, computed with one dummy label for all cells "
    "(BRAS and kBET are then taken over all cells instead of within each cell type; graph "
    "connectivity is left out because with one label it only measures whether the whole kNN graph "
    "is connected). 'Bio conservation' is NaN and 'Total' equals 'Batch correction', so these scores "
    "are not comparable with scores computed with labels."
)


def _import_scib():
    try:
        from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from err
    return Benchmarker, BioConservation, BatchCorrection


@contextmanager
def _without_gc_collect():
    """Make the Benchmarker's ``gc.collect()`` before every metric a no-op for the call.

    It runs ~11 times per embedding and costs ~0.5 s each in a process that has scanpy,
    torch and jax loaded, which dominated scoring time on small data sets.
    """
    try:
        from scib_metrics.benchmark import _core
    except ImportError:  # pragma: no cover
        yield
        return
    real = getattr(_core, "gc", None)
    if real is None or not hasattr(real, "collect"):
        yield
        return
    _core.gc = SimpleNamespace(collect=lambda *args, **kwargs: 0)
    try:
        yield
    finally:
        _core.gc = real


def _exact_knn(n_jobs: int):
    """Exact euclidean kNN (self included, as pynndescent returns it) for the Benchmarker."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    def compute(X: np.ndarray, k: int):
        nn = NearestNeighbors(n_neighbors=min(k, X.shape[0]), n_jobs=n_jobs).fit(X)
        distances, indices = nn.kneighbors(X)
        return NeighborsResults(indices=indices, distances=distances.astype(np.float32))

    return compute


def _check_metrics(metrics, label_key) -> list[str] | None:
    """The requested columns (None: all), refused before any work if unknown or needing labels."""
    if metrics is None:
        return None
    chosen = [metrics] if isinstance(metrics, str) else list(dict.fromkeys(metrics))
    unknown = [m for m in chosen if m not in METRIC_COLUMNS]
    if unknown or not chosen:
        raise v.InputError(f"metrics={metrics!r}: " + (f"unknown {unknown}; " if unknown else "empty; ")
                           + f"choose from {list(METRIC_COLUMNS)}, or None for all.")
    need_labels = [m for m in chosen if METRIC_COLUMNS[m][0] == "bio"]
    if need_labels and label_key is None:
        raise v.InputError(f"metrics {need_labels} compare cell-type labels; pass label_key=, or leave them out.")
    return chosen


def _dense_embedding(adata: AnnData, key: str) -> np.ndarray:
    X = adata.obsm[key]
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    if hasattr(X, "toarray"):
        X = X.toarray()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != adata.n_obs or X.shape[1] < 1:
        raise v.InputError(f"obsm[{key!r}] must be a 2-d (n_cells, n_dims) array; got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise v.InputError(f"obsm[{key!r}] contains NaN or infinite values; cannot score it.")
    return X


def _unintegrated_pca(adata: AnnData, layer: str | None, n_comps: int = 50) -> tuple[np.ndarray, str]:
    """PCA of log-normalised expression, on a temporary object (``adata`` is left alone)."""
    import scanpy as sc

    X = v.get_matrix(adata, layer)
    values = X.data  # get_matrix returns CSR
    is_counts = bool(np.all(values >= 0) and np.all(values == np.round(values)))
    tmp = AnnData(X.copy().astype(np.float32))
    if is_counts:
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
        how = "normalize_total(1e4) + log1p of counts, then PCA"
    else:
        how = "PCA of the values as given (not integer counts: assumed already log-normalised)"
    n_comps = int(min(n_comps, tmp.n_obs - 1, tmp.n_vars - 1))
    if n_comps < 2:
        raise v.InputError("Too few cells or genes to compute an unintegrated PCA for PCR comparison.")
    sc.pp.pca(tmp, n_comps=n_comps, svd_solver="arpack", random_state=0)
    return np.asarray(tmp.obsm["X_pca"], dtype=np.float32), f"{how} ({n_comps} components)"


def score_integration(
    adata: AnnData,
    *,
    bases: str | Sequence[str],
    batch_key: str,
    label_key: str | None = None,
    scaled: bool = False,
    n_jobs: int = 1,
    key_added: str = "integration_scores",
    pre_integrated_key: str = "X_pca",
    layer: str | None = None,
    neighbors: str = "pynndescent",
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Score embeddings with the scIB metrics of scib-metrics' ``Benchmarker``.

    Runs the default ``BioConservation`` set (isolated labels, KMeans NMI/ARI, label
    silhouette, cLISI) and the default ``BatchCorrection`` set (BRAS, iLISI, kBET per
    label, graph connectivity, PCR comparison) on every embedding in ``bases``.
    Aggregates follow scIB: ``Total = 0.6 * Bio conservation + 0.4 * Batch correction``.
    Needs the optional dependency scib-metrics (``pip install "scgen-ae[metrics]"``).

    Parameters
    ----------
    adata
        Cells x genes, with the embeddings to score in ``obsm``.
    bases
        ``obsm`` key(s) of the embeddings, e.g. ``["X_vae", "X_pca"]``.
    batch_key
        ``obs`` column with the batch of each cell (at least two batches).
    label_key
        ``obs`` column with the cell-type labels. Without labels (None) only the
        batch-correction metrics are computed, with a single dummy label: BRAS and
        kBET are then taken over all cells, graph connectivity is left out (with one
        label it is ~1 for any embedding), ``Bio conservation`` is NaN and ``Total``
        equals ``Batch correction``. ``DataFrame.attrs["note"]`` says so.
    scaled
        Min-max scale every metric across ``bases`` before aggregating (scib-metrics'
        ``get_results(min_max_scale=True)``); only meaningful with several bases. The
        default (False) reports raw metric values, comparable across calls.
    n_jobs
        Threads for the nearest-neighbour search.
    key_added
        ``uns`` key of the stored results.
    pre_integrated_key
        ``obsm`` key of an unintegrated embedding, the reference of the PCR comparison
        metric. If it is not in ``obsm``, a PCA (50 components, arpack) of ``layer`` /
        ``X`` is computed on a temporary copy: after ``normalize_total(1e4)`` +
        ``log1p`` when the values are integer counts, as given otherwise. It is not
        written to ``adata``; it may also be listed in ``bases`` (the uncorrected
        baseline; its PCR comparison is 0 by definition).
    layer
        Layer used for that PCA; None uses ``X``.
    neighbors
        The 90-nearest-neighbour search behind the neighbourhood metrics:
        "pynndescent" (default; approximate, scib-metrics' own choice, so scores match
        other Benchmarker results) or "exact" (scikit-learn, euclidean). kBET runs
        pynndescent internally either way.
    metrics
        Only these columns, e.g. ``["iLISI", "KMeans ARI"]`` (names as in the table below;
        the label metrics need ``label_key``); each is computed exactly as in the full call.
        The aggregate columns are then left out (an average of some of the metrics is not
        scIB's score), and so is the PCA for PCR comparison unless it is asked for.
        None (default): the full default sets.

    Returns
    -------
    pandas.DataFrame
        One row per basis (index name ``"Embedding"``); the individual metric columns
        (``"Isolated labels"``, ``"KMeans NMI"``, ``"KMeans ARI"``, ``"Silhouette label"``,
        ``"cLISI"``, ``"BRAS"``, ``"iLISI"``, ``"KBET"``, ``"Graph connectivity"``,
        ``"PCR comparison"``, as computed) and ``"Bio conservation"``,
        ``"Batch correction"``, ``"Total"``, all floats. ``attrs`` holds ``"metric_type"``
        (column -> group), ``"note"`` and ``"seconds"``.

    Sets
    ----

    - ``adata.uns[key_added]["values"]``: (n_bases, n_columns) float array of the table.
    - ``adata.uns[key_added]["index"]`` / ``["columns"]``: the bases / column names;
      rebuild the table with ``pd.DataFrame(u["values"], index=u["index"], columns=u["columns"])``.
    - ``adata.uns[key_added]["metric_type"]``: dict, column -> "Bio conservation" /
      "Batch correction" / "Aggregate score".
    - ``adata.uns[key_added]["params"]``: the arguments used and how the PCR reference was made.
    - ``adata.uns[key_added]["note"]``: caveats (empty string if none).
    - ``adata.uns[key_added]["seconds"]``: wall time of the scoring.

    Nothing else in ``adata`` is modified.
    """
    v.check_target(adata, False, "sa.tl.score_integration")
    Benchmarker, BioConservation, BatchCorrection = _import_scib()
    start = time.perf_counter()

    bases = [bases] if isinstance(bases, str) else list(bases)
    if not bases:
        raise v.InputError("bases is empty; pass at least one obsm key, e.g. bases=['X_pca', 'X_vae'].")
    if len(set(bases)) != len(bases):
        raise v.InputError(f"bases contains duplicates: {bases}; list each obsm key once.")
    missing = [b for b in bases if b not in adata.obsm and b != pre_integrated_key]
    if missing:
        raise v.InputError(f"bases {missing} are not in adata.obsm (available: {list(adata.obsm.keys()) or 'none'}); "
                           "compute them first, e.g. sc.pp.pca(adata) or sa.tl.vae(adata, batch_key=...).")
    for key, what in ((batch_key, "batch_key"), (label_key, "label_key")):
        if key is not None and key not in adata.obs:
            raise v.InputError(f"{what}={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}).")
    batches = adata.obs[batch_key]
    if batches.isna().any():
        raise v.InputError(f"obs[{batch_key!r}] has {int(batches.isna().sum())} missing values; fill or drop those cells first.")
    if batches.nunique() < 2:
        raise v.InputError(f"obs[{batch_key!r}] has a single batch; batch-correction metrics need at least two batches.")
    if label_key is not None:
        if adata.obs[label_key].isna().any():
            raise v.InputError(f"obs[{label_key!r}] has {int(adata.obs[label_key].isna().sum())} missing values; "
                               "fill or drop those cells first, or pass label_key=None for batch metrics only.")
        labels = adata.obs[label_key].astype(str).to_numpy()
    else:
        labels = np.full(adata.n_obs, "all_cells", dtype=object)
    if neighbors not in ("exact", "pynndescent"):
        raise v.InputError(f"neighbors={neighbors!r}; choose 'pynndescent' or 'exact'.")
    use_exact = neighbors == "exact"
    if adata.n_obs <= _MAX_K:
        raise v.InputError(f"scIB's neighbourhood metrics use {_MAX_K} neighbours; need more than {_MAX_K} cells, "
                         f"got {adata.n_obs}.")
    chosen = _check_metrics(metrics, label_key)
    if scaled and len(bases) < 2:
        warnings.warn("scaled=True with a single basis: min-max scaling sets every metric to 0.", stacklevel=2)

    embeddings = {b: _dense_embedding(adata, b) for b in bases if b in adata.obsm}
    if chosen is not None and "PCR comparison" not in chosen and pre_integrated_key not in bases:
        x_pre, pre_how = next(iter(embeddings.values())), "not used (no PCR comparison)"
    elif pre_integrated_key in adata.obsm:
        x_pre = embeddings.get(pre_integrated_key)
        if x_pre is None:
            x_pre = _dense_embedding(adata, pre_integrated_key)
        pre_how = f"obsm[{pre_integrated_key!r}] as given"
    else:
        x_pre, pre_how = _unintegrated_pca(adata, layer)
    if pre_integrated_key in bases and pre_integrated_key not in embeddings:
        embeddings[pre_integrated_key] = x_pre

    # Scores run on a private AnnData (obs + obsm only): the Benchmarker writes into
    # obs/obsm of what it is given, and the caller's object must stay untouched.
    obs = pd.DataFrame({"_batch": batches.astype(str).to_numpy(), "_label": labels},
                       index=adata.obs_names.astype(str))
    work = AnnData(obs=obs)
    for b in bases:
        work.obsm[b] = embeddings[b]
    pre_key = "_scib_pre_integrated"
    work.obsm[pre_key] = x_pre

    if chosen is not None:
        fields = {METRIC_COLUMNS[c] for c in chosen}
        pick = {kind: {f.name: (kind, f.name) in fields for f in dataclasses.fields(cls)}
                for kind, cls in (("bio", BioConservation), ("batch", BatchCorrection))}
        bio = BioConservation(**pick["bio"]) if any(pick["bio"].values()) else None
        batch_metrics = BatchCorrection(**pick["batch"]) if any(pick["batch"].values()) else None
    elif label_key is not None:
        bio, batch_metrics = BioConservation(), BatchCorrection()
    else:
        bio, batch_metrics = None, BatchCorrection(graph_connectivity=False)
    bm = Benchmarker(
        work, batch_key="_batch", label_key="_label", embedding_obsm_keys=bases,
        bio_conservation_metrics=bio, batch_correction_metrics=batch_metrics,
        pre_integrated_embedding_obsm_key=pre_key, n_jobs=n_jobs, progress_bar=False,
    )
    with _without_gc_collect():
        bm.prepare(neighbor_computer=_exact_knn(n_jobs) if use_exact else None)
        bm.benchmark()
    with warnings.catch_warnings():  # pandas FutureWarning from inside get_results (mixed-dtype assignment)
        warnings.simplefilter("ignore", FutureWarning)
        raw = bm.get_results(min_max_scale=scaled)

    metric_type = raw.loc["Metric Type"].to_dict()
    df = raw.drop(index="Metric Type").astype(np.float64)
    df = df.loc[bases]
    if chosen is not None:
        df = df[chosen]
    elif label_key is None:
        df[_BIO] = np.nan
        df[_TOTAL] = df[_BATCH]
        metric_type.update({_BIO: "Aggregate score", _TOTAL: "Aggregate score"})
    metrics_cols = [c for c in df.columns if c not in _AGGREGATES]
    df = df[metrics_cols + ([] if chosen is not None else list(_AGGREGATES))]
    df.index.name = "Embedding"
    df.columns.name = None
    seconds = time.perf_counter() - start
    note = _NO_LABEL_NOTE if label_key is None else ""
    df.attrs = {"metric_type": {c: metric_type[c] for c in df.columns}, "note": note, "seconds": seconds}

    params = {
        "bases": [str(b) for b in bases], "batch_key": batch_key, "label_key": str(label_key),
        "scaled": bool(scaled), "n_jobs": int(n_jobs), "pre_integrated_key": pre_integrated_key,
        "pre_integrated": pre_how, "layer": str(layer),
        "neighbors": "exact (scikit-learn)" if use_exact else "pynndescent",
        "metrics": "default sets" if chosen is None else list(chosen),
    }
    write_results(adata, uns={key_added: {
        "values": df.to_numpy(dtype=np.float64),
        "index": np.asarray(df.index, dtype=str),
        "columns": np.asarray(df.columns, dtype=str),
        "metric_type": {c: str(t) for c, t in df.attrs["metric_type"].items()},
        "params": params,
        "note": note,
        "seconds": float(seconds),
    }})
    return df

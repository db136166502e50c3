#!/usr/bin/env python
"""By-hand benchmark: ``sa.tl.nmf`` against scikit-learn's ``NMF`` on the shared real data.

Not a test: the timings only mean something on an otherwise idle machine.

Per data set (2,000 seurat_v3 HVGs with ``batch_key="batch"``; a data set with at most
2,000 genes keeps all), the counts are log-normalised once (``normalize_total(1e4)`` +
``log1p``) and that *same* float32 CSR matrix is factorised by every tool, k = 10,
Frobenius loss, one thread, each fit in its own fresh subprocess:

- ``sklearn``: ``NMF(init="nndsvda", solver="cd", max_iter=200)`` (tol 1e-4, its default);
- ``sa``: ``sa.tl.nmf(transform="none", tol=1e-4)`` (defaults: HALS, nndsvda);
- ``sa_tight``: the same with ``tol=0``, ``max_iter=200`` (runs on), used for
  the time to reach sklearn's final loss: the call's overhead (validation, init, writing
  results) plus the in-fit seconds at the first pass whose loss is <= sklearn's;
- ``sa_inmf``: ``sa.tl.nmf(batch_key="batch", transform="none")`` (iNMF, lam 20, started
  from the plain NMF solution, + quantile alignment).

Every timed fit is repeated ``--repeats`` times, interleaved across tools, and the best
wall time is kept; the speed-up to equal loss is also given round by round (median, range),
which the machine's load swings move less than the ratio of two bests. The loss of every
fit is recomputed here the same way for all tools: ``1/2 ||X - W H||_F^2 / n_cells`` from
the factors each returns. Integration quality:
``sa.tl.score_integration`` (scib-metrics, unscaled) of sklearn's, ``sa``'s and
``sa_inmf``'s cell factors, with ``label_key="cell_type"``: ground truth on CellBench,
coarse marker-derived labels on Kang (per condition) and PBMC (``sa.pp.annotate_markers``,
as ``bench_vae.py``).
Also the ARI of KMeans (3 clusters) vs the cell lines (``sa.metrics.clustering_ari``).

Usage::

    python benchmarks/bench_nmf.py                                  # all data sets, best of 3
    python benchmarks/bench_nmf.py --datasets cellbench_3cl --repeats 1   # smoke test

Writes ``<out>.csv`` and ``<out>.md`` (default ``bench_out/bench_nmf``) and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = ["cellbench_3cl", "cellbench_3cl_3protocols_800genes", "kang_ifnb_pbmc_subset", "pbmc_10x_chemistries"]
DATA_DIR = Path(os.environ.get("SCGEN_AE_DATA", "/work/shared/data"))
K = 10
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}
TOOLS = ("sklearn", "sa", "sa_tight", "sa_inmf")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vae import MARKER_LABELS  # noqa: E402


def frobenius_loss(X, W, H) -> float:
    """1/2 ||X - W H||_F^2 / n_cells for sparse X, without forming W H (float64)."""
    import numpy as np

    W, H = W.astype(np.float64), H.astype(np.float64)
    cross = float(np.sum((X.T @ W).T * H)) if X.nnz else 0.0  # tr(W^T X H^T)
    sq = float(np.square(X.data, dtype=np.float64).sum())
    return 0.5 * (sq - 2.0 * cross + float(np.sum((W.T @ W) * (H @ H.T)))) / X.shape[0]


# --------------------------------------------------------------------------- one fit per process

def worker(spec: dict) -> dict:
    import anndata as ad
    import numpy as np

    adata = ad.read_h5ad(spec["h5ad"])
    X = adata.X.tocsr()
    tool = spec["tool"]
    out: dict = {"tool": tool}
    if tool == "sklearn":
        import sklearn
        from sklearn.decomposition import NMF

        model = NMF(n_components=K, init="nndsvda", solver="cd", max_iter=200, random_state=0)
        t = time.perf_counter()
        W = model.fit_transform(X)
        out["seconds"] = time.perf_counter() - t
        H = model.components_
        out.update(n_iter=int(model.n_iter_), version=sklearn.__version__)
    else:
        import torch

        import scgen_ae as sa

        torch.set_num_threads(1)
        kwargs = dict(n_components=K, transform="none", n_threads=1, seed=0)
        if tool == "sa_tight":
            kwargs.update(tol=0.0, max_iter=200)  # run on: the time to sklearn's loss is read from the history
        if tool == "sa_inmf":
            kwargs["batch_key"] = "batch"
        t = time.perf_counter()
        model = sa.tl.nmf(adata, **kwargs)
        out["seconds"] = time.perf_counter() - t
        W, H = adata.obsm["X_nmf"], adata.varm["nmf_loadings"].T
        hist = model.history
        out.update(n_iter=int(hist["n_iter"]), version=f"torch {torch.__version__}")
        overhead = out["seconds"] - float(hist["seconds"])
        target = spec.get("target_loss")
        if target is not None:
            hit = np.flatnonzero(np.asarray(hist["train_loss"]) <= target)
            out["seconds_to_target"] = overhead + float(hist["pass_seconds"][hit[0]]) if len(hit) else float("nan")
    if tool != "sa_inmf":  # iNMF's aligned factors are not a reconstruction of X
        out["loss"] = frobenius_loss(X, np.asarray(W), np.asarray(H))
    np.save(spec["embedding"], np.asarray(W, dtype=np.float32))
    return out


def run_worker(spec: dict, script: str = __file__) -> dict:
    """``script --worker spec.json`` in a fresh one-thread process; its last stdout line as JSON."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    env = {**os.environ, **ONE_THREAD, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, script, "--worker", f.name], capture_output=True, text=True, env=env)
    os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['tool']} on {spec['dataset']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver

def prepare(name: str, path: Path):
    """HVGs + log-normalisation, once per data set; written for the workers."""
    import anndata as ad
    import scanpy as sc

    adata = ad.read_h5ad(DATA_DIR / f"{name}.h5ad")
    if "cell_type" not in adata.obs and name in MARKER_LABELS:
        # Kang / PBMC: coarse marker-derived labels, as bench_vae.py gives them (all genes)
        import scgen_ae as sa

        sa.pp.annotate_markers(adata, groupby=MARKER_LABELS[name], key_added="cell_type")
    if adata.n_vars > 2000:
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", batch_key="batch", n_top_genes=2000, subset=True)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    keep = ad.AnnData(adata.X.astype("float32").tocsr(), obs=adata.obs[[c for c in ("batch", "cell_type")
                                                                          if c in adata.obs]].copy(),
                      var=adata.var[[]].copy())
    keep.write_h5ad(path)
    return keep


def bench_dataset(name: str, repeats: int, tmp: Path) -> dict:
    import numpy as np

    import scgen_ae as sa

    h5ad = tmp / f"{name}.h5ad"
    adata = prepare(name, h5ad)
    runs: dict[str, list[dict]] = {t: [] for t in TOOLS}
    emb = {t: str(tmp / f"{name}_{t}.npy") for t in TOOLS}
    target = None
    for r in range(repeats):  # interleaved, so that load from others hits every tool alike
        for tool in TOOLS:
            spec = {"dataset": name, "tool": tool, "h5ad": str(h5ad), "embedding": emb[tool], "target_loss": target}
            res = run_worker(spec)
            runs[tool].append(res)
            print(f"  {name} {tool} run {r + 1}: {res}", flush=True)
            if tool == "sklearn":
                target = res["loss"] * (1 + 1e-9)
    row = {"dataset": name, "n_cells": adata.n_obs, "n_genes": adata.n_vars}
    for tool, rs in runs.items():
        row[f"{tool}_s"] = min(r["seconds"] for r in rs)
        row[f"{tool}_iter"] = rs[-1]["n_iter"]
        row[f"{tool}_version"] = rs[-1]["version"]
        if "loss" in rs[-1]:
            row[f"{tool}_loss"] = rs[-1]["loss"]
    row["sa_tight_to_target_s"] = min(r.get("seconds_to_target", float("nan")) for r in runs["sa_tight"])
    row["speedup_default"] = row["sklearn_s"] / row["sa_s"]
    row["speedup_to_loss"] = row["sklearn_s"] / row["sa_tight_to_target_s"]
    # round by round (sklearn and ours back to back): the VM's load swings move best-of-n
    # ratios by +-30 %, the median of the per-round ratios much less
    per_round = sorted(a["seconds"] / b.get("seconds_to_target", float("nan"))
                       for a, b in zip(runs["sklearn"], runs["sa_tight"]))
    row["speedup_to_loss_rounds"] = (float(np.median(per_round)), per_round[0], per_round[-1])
    labels = "cell_type" if "cell_type" in adata.obs else None
    for tool in ("sklearn", "sa", "sa_inmf"):
        adata.obsm[f"X_{tool}"] = np.load(emb[tool])
    scores = sa.tl.score_integration(adata, bases=["X_sklearn", "X_sa", "X_sa_inmf"], batch_key="batch",
                                     label_key=labels, n_jobs=1)
    for tool in ("sklearn", "sa", "sa_inmf"):
        for col in ("Bio conservation", "Batch correction", "Total"):
            row[f"{tool}_{col}"] = float(scores.loc[f"X_{tool}", col])
        if name.startswith("cellbench"):  # three cell lines
            row[f"{tool}_kmeans_ari"] = sa.metrics.clustering_ari(adata.obsm[f"X_{tool}"], adata.obs[labels])
    return row


def markdown(rows: list[dict]) -> str:
    import math

    def f(x, d=3):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"

    def ratio(x):
        return f"{x:.1f}x" if math.isfinite(x) else "n/a"

    lines = ["| data set | cells x genes | sklearn s (iter) | sklearn loss | sa s (iter) | sa loss | speed-up | "
             "sa tight (200 passes): loss | s to sklearn's loss | speed-up to equal loss | "
             "speed-up to equal loss per round: median (min-max) |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['n_cells']} x {r['n_genes']} | {f(r['sklearn_s'], 2)} ({r['sklearn_iter']}) "
                     f"| {f(r['sklearn_loss'], 4)} | {f(r['sa_s'], 2)} ({r['sa_iter']}) | {f(r['sa_loss'], 2)} | "
                     f"{ratio(r['speedup_default'])} | {f(r['sa_tight_loss'], 4)} | {f(r['sa_tight_to_target_s'], 2)} | "
                     f"{ratio(r['speedup_to_loss'])} | {ratio(r['speedup_to_loss_rounds'][0])} "
                     f"({r['speedup_to_loss_rounds'][1]:.1f}-{r['speedup_to_loss_rounds'][2]:.1f}) |")
    lines += ["", "| data set | tool | Bio conservation | Batch correction | Total | KMeans ARI (3 clusters) |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        for tool, label in (("sklearn", "sklearn NMF"), ("sa", "tl.nmf"), ("sa_inmf", "tl.nmf batch_key (iNMF)")):
            lines.append(f"| {r['dataset']} | {label} | {f(r.get(f'{tool}_Bio conservation'))} | "
                         f"{f(r[f'{tool}_Batch correction'])} | {f(r[f'{tool}_Total'])} | "
                         f"{f(r.get(f'{tool}_kmeans_ari'))} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench_out/bench_nmf"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(Path(args.worker).read_text()))))
        return
    import pandas as pd

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            rows.append(bench_dataset(name, args.repeats, Path(tmp)))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)
            args.out.with_suffix(".md").write_text(markdown(rows) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

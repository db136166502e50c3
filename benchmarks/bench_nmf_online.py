#!/usr/bin/env python
"""By-hand benchmark: online ``sa.tl.nmf(batch_size=...)`` against scikit-learn's
``MiniBatchNMF`` on many cells (issue 6: online updates whose memory does not grow with
the number of cells).

Data: ``pbmc_10x_chemistries`` (2,000 seurat_v3 HVGs) resampled to ``--cells`` cells as
``make_scale_data.py`` does (a real cell of the same batch, counts binomially thinned),
log-normalised (``normalize_total(1e4)`` + ``log1p``), one float32 CSR matrix for every
tool; k = 10, Frobenius loss, chunks / minibatches of ``--batch-size`` cells, one thread,
each fit in its own fresh subprocess, tools interleaved, best of ``--repeats``:

- ``sklearn``: ``MiniBatchNMF(init="nndsvda", batch_size=B)``, its defaults otherwise
  (max_iter 200 epochs, tol 1e-4, max_no_improvement 10);
- ``sa``: ``sa.tl.nmf(batch_size=B, transform="none", tol=0, max_iter=--passes)``; the time
  to sklearn's final loss is read from its history (as ``bench_nmf.py`` does);
- ``sa_recompute``: the same with ``KEPT_BYTES = 0``, i.e. without the kept per-chunk
  ``W_c^T X_c`` (two sparse ``X^T`` products per chunk and pass, as before session 17).

Loss = 1/2 ||X - W H||^2 per cell, recomputed here from each tool's factors. Memory: the
fit's peak resident set size above the process's level before the call (the data, read
before, is not counted; sampled every 5 ms).

    PYTHONPATH=$PWD python benchmarks/bench_nmf_online.py --cells 100000 --out bench_out/nmf_online
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nmf import K, frobenius_loss, run_worker  # noqa: E402

TOOLS = ("sklearn", "sa", "sa_recompute")


class PeakRSS:
    """Highest resident set size (MB) above the level at entry, sampled every 5 ms in a thread
    (``ru_maxrss`` would report loading the data, not the fit)."""

    def __enter__(self):
        import threading

        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.mb = self.peak - self.base


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(spec: dict) -> dict:
    import anndata as ad
    import numpy as np

    X = ad.read_h5ad(spec["h5ad"]).X.tocsr()
    tool, out = spec["tool"], {"tool": spec["tool"]}
    if tool == "sklearn":
        from sklearn.decomposition import MiniBatchNMF

        model = MiniBatchNMF(n_components=K, init="nndsvda", batch_size=spec["batch_size"], random_state=0)
        t = time.perf_counter()
        with PeakRSS() as rss:
            W = model.fit_transform(X)
        out.update(seconds=time.perf_counter() - t, n_iter=int(model.n_iter_), n_steps=int(model.n_steps_))
        H = model.components_
    else:
        import anndata as ad
        import torch

        import scgen_ae as sa
        from scgen_ae.models import _nmf_solver

        if tool == "sa_recompute":
            _nmf_solver.KEPT_BYTES = 0
        torch.set_num_threads(1)
        adata = ad.AnnData(X)
        t = time.perf_counter()
        with PeakRSS() as rss:
            model = sa.tl.nmf(adata, n_components=K, transform="none", batch_size=spec["batch_size"], tol=0.0,
                              max_iter=spec["passes"], n_threads=1, seed=0)
        out["seconds"] = time.perf_counter() - t
        hist = model.history
        seconds, losses = np.asarray(hist["seconds"]), np.asarray(hist["train_loss"])
        overhead = out["seconds"] - float(seconds[-1])
        out.update(n_iter=len(losses), s_per_pass=float(seconds[-1]) / len(losses))
        if spec.get("target_loss") is not None:
            hit = np.flatnonzero(losses <= spec["target_loss"])
            out["seconds_to_target"] = overhead + float(seconds[hit[0]]) if len(hit) else float("nan")
            out["passes_to_target"] = int(hit[0]) + 1 if len(hit) else -1
        W, H = adata.obsm["X_nmf"], adata.varm["nmf_loadings"].T
    out["loss"] = frobenius_loss(X, np.asarray(W), np.asarray(H))
    out["peak_rss_mb"] = rss.mb
    return out


def prepare(n_cells: int, path: Path) -> tuple[int, float]:
    import anndata as ad
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    from make_scale_data import resampled_block, source_cells

    src = source_cells()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, src.n_obs, n_cells)
    adata = ad.AnnData(sp.csr_matrix(resampled_block(src.X.tocsr().astype(np.float32), rows, rng)))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.X = adata.X.astype(np.float32)
    adata.write_h5ad(path)
    return adata.n_obs, adata.X.nnz / np.prod(adata.shape)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker")
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--passes", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench_out/nmf_online"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(Path(args.worker).read_text()))))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        h5ad = Path(tmp) / "cells.h5ad"
        n, density = prepare(args.cells, h5ad)
        runs: dict[str, list[dict]] = {t: [] for t in TOOLS}
        target = None
        for r in range(args.repeats):
            for tool in TOOLS:
                spec = {"tool": tool, "h5ad": str(h5ad), "batch_size": args.batch_size, "passes": args.passes,
                        "target_loss": target}
                res = run_worker(spec, __file__)
                runs[tool].append(res)
                print(f"  run {r + 1} {tool}: {res}", flush=True)
                if tool == "sklearn":
                    target = res["loss"] * (1 + 1e-9)
    best = {t: min(rs, key=lambda x: x.get("seconds_to_target", x["seconds"])) for t, rs in runs.items()}
    sk = best["sklearn"]
    lines = [f"{n} cells x 2000 genes (density {density:.3f}), k = {K}, batch_size {args.batch_size}, "
             f"best of {args.repeats}, one thread", "",
             "| tool | s (passes) | loss | s per pass | s to sklearn's loss (passes) | speed-up to equal loss | "
             "fit's peak RSS MB |", "|---|---|---|---|---|---|---|",
             f"| sklearn MiniBatchNMF | {sk['seconds']:.1f} ({sk['n_iter']}) | {sk['loss']:.4f} | "
             f"{sk['seconds'] / sk['n_iter']:.2f} | | | {sk['peak_rss_mb']:.0f} |"]
    for tool in ("sa", "sa_recompute"):
        b = best[tool]
        lines.append(f"| tl.nmf online{' (recompute)' if tool == 'sa_recompute' else ''} | {b['seconds']:.1f} "
                     f"({b['n_iter']}) | {b['loss']:.4f} | {b['s_per_pass']:.2f} | {b['seconds_to_target']:.1f} "
                     f"({b['passes_to_target']}) | {sk['seconds'] / b['seconds_to_target']:.1f}x | "
                     f"{b['peak_rss_mb']:.0f} |")
    table = "\n".join(lines)
    print(table)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""By-hand benchmark: peak resident memory of ``sa.tl.denoise`` writing its output at scale.

A DAE is trained once (2 epochs: the weights do not change the memory) on every gene of
``pbmc_10x_chemistries`` (2,860 real cells x 11,221 genes); the cells are then resampled
with replacement (seed 0) to ``--n-cells`` and the trained model is applied to them
(``model=``, no training) in three ways: the dense float32 layer of all genes (the
default), ``dtype="float16"``, and ``gene_list=`` 50 genes (the first 50 highly expressed,
an ``obsm`` data frame). Each case runs in a fresh process: the resampled counts and the
model are loaded, the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``), and
the peak during the ``tl.denoise`` call is read back from ``VmHWM``. Reported: resident
memory before the call, the peak during it, the peak above the before-call memory, and
the size of the output itself; peak minus output is the working memory.

Usage::

    python benchmarks/bench_denoise_memory.py --n-cells 20000 --out bench_out/denoise_memory
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CASES = {"float32, all genes": {}, "float16, all genes": {"dtype": "float16"}, "float32, 50 genes": {"n_genes": 50}}


def _status(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"{field} not in /proc/self/status")


def _case(workdir: Path, name: str, n_cells: int, chunk_size: int) -> dict:
    import anndata as ad
    import numpy as np

    import scgen_ae as sa

    full = ad.read_h5ad(workdir / "train.h5ad")
    model = sa.models.DAE.load(workdir / "dae.npz", adata=full)
    rows = np.random.default_rng(0).integers(0, full.n_obs, n_cells)
    adata = full[rows].copy()
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    del full
    opts = dict(CASES[name])
    if "n_genes" in opts:
        means = np.asarray(adata.X.mean(0)).ravel()
        opts = {"gene_list": list(adata.var_names[np.argsort(-means)[: opts.pop("n_genes")]])}
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    sa.tl.denoise(adata, model=model, chunk_size=chunk_size, **opts)
    peak = _status("VmHWM")
    out = adata.obsm["denoised"] if "gene_list" in opts else adata.layers["denoised"]
    out_mb = (out.memory_usage(index=False).sum() if hasattr(out, "memory_usage") else out.nbytes) / 1e6
    return {"case": name, "cells": n_cells, "genes": int(adata.n_vars), "chunk_size": chunk_size,
            "rss_before_mb": round(before), "peak_mb": round(peak), "peak_above_before_mb": round(peak - before),
            "output_mb": round(out_mb, 1), "output_dtype": str(out.dtypes.iloc[0] if hasattr(out, "dtypes")
                                                               else out.dtype)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-cells", type=int, default=20000)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--out", type=Path, default=Path("bench_out/denoise_memory"))
    p.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args._case is not None:
        print(json.dumps(_case(args.out, args._case, args.n_cells, args.chunk_size)))
        return 0
    import scgen_ae as sa

    adata = sa.datasets.load("pbmc_10x_chemistries")
    sa.pp.drop_empty(adata)
    model = sa.tl.denoise(adata, batch_key="batch", max_epochs=2, seed=0, n_threads=1, progress=False)
    model.save(args.out / "dae.npz")
    del adata.layers["denoised"]
    adata.write_h5ad(args.out / "train.h5ad")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = []
    for name in CASES:
        run = subprocess.run([sys.executable, __file__, "--_case", name, "--n-cells", str(args.n_cells),
                              "--chunk-size", str(args.chunk_size), "--out", str(args.out)],
                             env=env, capture_output=True, text=True, check=True)
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print("| case | output | output MB | RSS before MB | peak MB | peak above before MB |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} | {r['cells']} x {r['genes'] if 'all' in r['case'] else 50} {r['output_dtype']} | "
              f"{r['output_mb']} | {r['rss_before_mb']} | {r['peak_mb']} | {r['peak_above_before_mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

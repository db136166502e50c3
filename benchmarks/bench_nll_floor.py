#!/usr/bin/env python
"""By-hand benchmark: how far below scVI can any denoiser go on held-out counts?

On real counts the held-out negative log-likelihood has an unknown floor: most of a hidden
count's surprise is sampling noise that no predictor removes. This script makes the floor
computable by simulating counts whose distribution is known:

1. ``sa.tl.denoise`` (its defaults, ``batch_key="batch"``) is fitted on the real counts of a
   shared file (2,000 seurat_v3 HVGs); its ZINB at every entry (mean, inverse dispersion,
   dropout logit; each cell decoded in its own batch at its observed library) is the
   *generator*.
2. Counts are drawn from that ZINB for every entry; cells and genes without counts dropped.
3. A random 10 % of the non-zero simulated counts are hidden (``sa.tl.holdout_nonzeros``),
   as in ``bench_denoise.py``; ours (``sa.tl.denoise`` defaults) and scvi-tools' SCVI (ZINB,
   100 epochs, posterior mean of z) are trained on the corrupted matrix and scored on the
   hidden entries (NLL with their own distributions, mean absolute error of their means).
4. The **oracle** scores the hidden entries under the generator itself: the NLL no predictor
   can beat in expectation, and the mean absolute error of the true mean ``(1 - pi) mu``.

The generator is our own model family, which favours ours over scVI; so if even the oracle's
NLL is above 0.9x scVI's, a 0.9x target is out of reach on data of this noise structure for
every method, ours included.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_nll_floor.py --datasets cellbench_3cl pbmc_10x_chemistries
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_denoise import BATCH_KEY, _fit_scvi, _scvi_heldout  # noqa: E402
from bench_vae import DATA_DIR, DATASETS  # noqa: E402


def _generator_params(model, adata):
    """The model's ZINB at every entry of ``adata``: mu, theta, dropout logits, each (cells, genes)."""
    import numpy as np
    import torch

    data = model._cell_data(adata)
    parts = {"mu": [], "theta": [], "zi": []}
    with torch.no_grad():
        for start in range(0, data.n_cells, 512):
            mb = data.minibatch(np.arange(start, min(start + 512, data.n_cells)), constants=False)
            out = model._decoder_output(mb)
            log_theta = out["log_theta"]  # (genes,), or a table whose row of each cell is theta_row
            log_theta = log_theta[None, :] if log_theta.dim() == 1 else log_theta
            rows = out.get("theta_row", torch.zeros(len(out["log_mu"]), dtype=torch.long))
            log_theta = log_theta[rows]
            parts["mu"].append(out["log_mu"].exp().numpy())
            parts["theta"].append(log_theta.exp().numpy())
            parts["zi"].append(out["zi_logits"].numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}


def _draw_zinb(params, rng):
    import numpy as np

    mu, theta, zi = params["mu"], params["theta"], params["zi"]
    rate = rng.gamma(theta, mu / theta)
    counts = rng.poisson(rate).astype(np.float32)
    dropped = rng.random(mu.shape) < 1.0 / (1.0 + np.exp(-zi))
    counts[dropped] = 0
    return counts


def run(name: str, seed: int, scvi_epochs: int, tmp: str) -> dict:
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    import scgen_ae as sa

    adata = ad.read_h5ad(DATA_DIR / f"{name}.h5ad")
    if adata.n_vars > 2000:
        sa.pp.highly_variable(adata, n_top_genes=2000, batch_key=BATCH_KEY)
    real = ad.AnnData(sp.csr_matrix(adata.X, dtype=np.float32), obs=adata.obs[[BATCH_KEY]].copy(),
                      var=adata.var[[]].copy())
    generator = sa.tl.denoise(real, batch_key=BATCH_KEY, n_threads=1, progress=False, seed=seed)
    params = _generator_params(generator, real)
    counts = _draw_zinb(params, np.random.default_rng(seed + 100))
    keep_c, keep_g = counts.sum(1) > 0, counts.sum(0) > 0
    params = {k: v[keep_c][:, keep_g] for k, v in params.items()}
    sim = sp.csr_matrix(counts[keep_c][:, keep_g])
    corrupted, rows, cols, truth = sa.tl.holdout_nonzeros(sim, 0.1, seed)
    ok_c = np.diff(corrupted.indptr) > 0
    ok_g = np.bincount(corrupted.indices, minlength=corrupted.shape[1]) > 0
    ok = ok_c[rows] & ok_g[cols]
    rows, cols, truth = rows[ok], cols[ok], truth[ok].astype(np.float64)
    # every tool sees the same cells and genes; the oracle's parameters are indexed the same way
    hidden = ad.AnnData(corrupted, obs=real.obs[keep_c].copy(), var=real.var[keep_g].copy())[ok_c, ok_g].copy()
    r, c = (np.cumsum(ok_c) - 1)[rows], (np.cumsum(ok_g) - 1)[cols]
    true = {k: v[ok_c][:, ok_g][r, c] for k, v in params.items()}
    result = {"dataset": name, "cells": hidden.n_obs, "genes": hidden.n_vars, "hidden": int(truth.size)}
    result["oracle_nll"] = sa.tl.heldout_nll(truth, true["mu"], dispersion=true["theta"], dropout_logits=true["zi"])
    result["oracle_mae"] = float(np.abs(truth - true["mu"] / (1.0 + np.exp(true["zi"]))).mean())

    ours = sa.tl.denoise(hidden.copy(), batch_key=BATCH_KEY, n_threads=1, progress=False, seed=seed)
    result["ours_nll"] = float(-ours.entry_log_prob(hidden, r, c, truth).mean())
    fitted = hidden.copy()
    sa.tl.denoise(fitted, model=ours)
    result["ours_mae"] = float(np.abs(truth - fitted.layers["denoised"][r, c]).mean())

    spec = {"tmp": tmp, "seed": seed, "scvi_epochs": scvi_epochs}
    scvi_data = hidden.copy()
    _fit_scvi(scvi_data, spec)
    from bench_denoise import _MODEL

    scvi = _scvi_heldout(_MODEL[-1], scvi_data, {"rows": r, "cols": c, "truth": truth})
    result["scvi_nll"], result["scvi_mae"] = scvi["nll"], scvi["mean_ae_pm"]
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["cellbench_3cl", "pbmc_10x_chemistries"], choices=DATASETS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scvi-epochs", type=int, default=100)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    lines = ["| dataset | cells × genes | NLL oracle / ours / scVI | **oracle / scVI** | ours / scVI "
             "| mean AE oracle / ours / scVI | **oracle / scVI** | ours / scVI |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="bench_nll_floor_") as tmp:
        for name in args.datasets:
            x = run(name, args.seed, args.scvi_epochs, tmp)
            print(x, flush=True)
            lines.append(f"| {name} (simulated) | {x['cells']} × {x['genes']} | {x['oracle_nll']:.3f} / "
                         f"{x['ours_nll']:.3f} / {x['scvi_nll']:.3f} | **{x['oracle_nll'] / x['scvi_nll']:.3f}** | "
                         f"{x['ours_nll'] / x['scvi_nll']:.3f} | {x['oracle_mae']:.3f} / {x['ours_mae']:.3f} / "
                         f"{x['scvi_mae']:.3f} | **{x['oracle_mae'] / x['scvi_mae']:.3f}** | "
                         f"{x['ours_mae'] / x['scvi_mae']:.3f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

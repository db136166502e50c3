#!/usr/bin/env python
"""By-hand benchmark: how much of a simulated continuous nuisance effect stays in the latent space.

Real counts (the 3-protocol CellBench file, 1,394 cells x 799 genes) get a planted effect of a
per-cell score ``s ~ U(0, 1)``: half the genes are thinned binomially by ``exp(-2.5 s)``, the
other half by ``exp(-2.5 (1 - s))`` (so the library size barely moves and the effect is not a
depth effect the library already explains). Each method embeds the cells with ``batch_key``
= protocol; the score is then predicted from the latent space (5-fold cross-validated R^2 of
a ridge regression and of a 15-nearest-neighbour regression). 0 means the latent space holds
nothing of the score; the same fit without the covariate shows how much there is to remove.
What must not be lost is read in the same latent space: the kNN purity of the cell lines
(``obs["cell_line"]``) and the kNN batch mixing (15 neighbours each, self excluded).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_covariates.py --seeds 0 1 --epochs 60
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp


def plant_score(adata, seed: int):
    """A copy of ``adata`` (counts) with the score planted (``obs["score"]``), empty cells dropped."""
    import scgen_ae as sa

    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 1, adata.n_obs)
    side = rng.integers(0, 2, adata.n_vars)  # half the genes fall with the score, half rise
    X = sp.csr_matrix(adata.X).astype(np.float32).tocoo()
    keep = np.exp(-2.5 * np.where(side[X.col] == 1, score[X.row], 1.0 - score[X.row]))
    X.data = rng.binomial(X.data.astype(np.int64), keep).astype(np.float32)
    out = adata.copy()
    out.X = sp.csr_matrix(X)
    out.X.eliminate_zeros()
    out.obs["score"] = score
    sa.pp.drop_empty(out)
    return out


def planted(seed: int):
    import anndata as ad

    import scgen_ae as sa

    adata = ad.read_h5ad(sa.datasets.find("cellbench_3cl_3protocols_800genes"))
    sa.pp.drop_empty(adata)
    return plant_score(adata, seed)


def r2(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsRegressor

    return (float(cross_val_score(RidgeCV(), z, y, cv=5, scoring="r2").mean()),
            float(cross_val_score(KNeighborsRegressor(15), z, y, cv=5, scoring="r2").mean()))


N_NEIGHBOURS = 15


def _neighbours(z: np.ndarray, k: int = N_NEIGHBOURS) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z, return_distance=False)[:, 1:]


def label_purity(z: np.ndarray, labels: np.ndarray) -> float:
    """Mean share of each cell's neighbours in ``z`` with its own label (1 = types apart)."""
    return float((labels[_neighbours(z)] == labels[:, None]).mean())


def batch_mixing(z: np.ndarray, batch: np.ndarray) -> float:
    """Mean share of each cell's neighbours from other batches, over the share random
    neighbours would give (1 - its batch's share of the cells): 1 = as mixed as chance, 0 = none."""
    other = (batch[_neighbours(z)] != batch[:, None]).mean(1)
    _, which, counts = np.unique(batch, return_inverse=True, return_counts=True)
    return float((other / (1.0 - counts[which] / len(batch))).mean())


METHODS = {
    "ours, no covariate": dict(),
    "ours, continuous_covariate_keys=['score'], no penalty": dict(continuous_covariate_keys=["score"],
                                                                  covariate_independence_weight=0.0),
    **{f"ours, continuous_covariate_keys=['score'], covariate_independence_weight={w:g}":
       dict(continuous_covariate_keys=["score"], covariate_independence_weight=w) for w in (0.3, 1.0, 3.0)},
    "scVI, no covariate": dict(backend="scvi-tools"),
    "scVI, continuous_covariate_keys=['score']": dict(backend="scvi-tools", continuous_covariate_keys=["score"]),
}


def main() -> None:
    import scgen_ae as sa

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                        help="run only the methods whose name contains one of these")
    args = parser.parse_args()
    sa.settings.n_threads = args.threads
    methods = {k: kw for k, kw in METHODS.items() if args.only is None or any(t in k for t in args.only)}
    rows = []
    for seed in args.seeds:
        adata = planted(seed)
        for name, kwargs in methods.items():
            b = adata.copy()
            start = time.perf_counter()
            sa.tl.vae(b, batch_key="batch", n_latent=8, max_epochs=args.epochs, seed=seed, n_threads=args.threads,
                      progress=False, **kwargs)
            seconds = time.perf_counter() - start
            z = b.obsm["X_vae"]
            ridge, knn = r2(z, b.obs["score"].to_numpy())
            purity = label_purity(z, b.obs["cell_line"].astype(str).to_numpy())
            mixing = batch_mixing(z, b.obs["batch"].astype(str).to_numpy())
            rows.append((name, seed, ridge, knn, purity, mixing, seconds))
            print(f"| {name} | {seed} | {ridge:.3f} | {knn:.3f} | {purity:.3f} | {mixing:.3f} | {seconds:.0f} |",
                  flush=True)
    print("\n| method | mean ridge R^2 | mean kNN R^2 | mean label purity | mean batch mixing |\n|---|---|---|---|---|")
    for name in methods:
        means = np.mean([r[2:6] for r in rows if r[0] == name], axis=0)
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")


if __name__ == "__main__":
    main()

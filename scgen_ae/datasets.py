"""Datasets: a built-in simulation (no network needed) and loaders for the real data.

The real files are looked up, in order, in ``data_dir``, ``$SCGEN_AE_DATA``,
``./shared/data``, ``../shared/data`` and the user cache ``~/.cache/scgen_ae``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

SHARED = {
    "cellbench_3cl": "CellBench, 3 cell lines, CEL-seq2 vs Drop-seq (499 x 15,073, labels)",
    "cellbench_3cl_3protocols_800genes": "CellBench, 3 cell lines, 10x/CEL-seq2/Drop-seq (1,394 x 799, labels)",
    "kang_ifnb_pbmc_subset": "Kang 2018 PBMC, IFN-b ctrl vs stim (2,000 x 9,015, no labels)",
    "pbmc_10x_chemistries": "PBMC, 3 10x chemistries (2,860 x 11,221, no labels)",
}


def simulate(n_cells: int = 1500, n_genes: int = 1000, n_batches: int = 3, n_groups: int = 4,
             batch_strength: float = 0.6, seed: int = 0) -> AnnData:
    """Simulated counts with known cell groups and batch effects (needs no network).

    Gene means are log-normal; each group up-regulates its own 5 % of genes (4x); each
    batch multiplies every gene by exp(N(0, batch_strength)) and scales library sizes.
    Counts are negative binomial (theta 2-10) with extra dropout of low means.
    Returns raw counts (CSR) with ``obs["batch"]`` and ``obs["cell_type"]``.
    """
    rng = np.random.default_rng(seed)
    base = rng.lognormal(-1.0, 1.5, n_genes)
    group = rng.integers(0, n_groups, n_cells)
    batch = rng.integers(0, n_batches, n_cells)
    group_fc = np.ones((n_groups, n_genes))
    for g in range(n_groups):
        group_fc[g, rng.choice(n_genes, max(1, n_genes // 20), replace=False)] = 4.0
    batch_fc = np.exp(rng.normal(0, batch_strength, (n_batches, n_genes)))
    lib = rng.lognormal(np.log(3000) + rng.normal(0, 0.4, n_batches)[batch], 0.3)
    scale = base * group_fc[group] * batch_fc[batch]
    mu = scale / scale.sum(1, keepdims=True) * lib[:, None]
    theta = rng.uniform(2, 10, n_genes)
    counts = rng.poisson(rng.gamma(theta, mu / theta))
    counts[rng.random(counts.shape) < np.exp(-mu)] = 0  # dropout, strongest for low means
    obs = pd.DataFrame({
        "batch": pd.Categorical([f"batch{b}" for b in batch]),
        "cell_type": pd.Categorical([f"group{g}" for g in group]),
    }, index=[f"cell{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    adata = AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    adata.uns["source"] = f"scgen_ae.datasets.simulate(seed={seed})"
    keep = np.asarray(adata.X.sum(0)).ravel() > 0
    return adata[:, keep].copy()


def _candidates(data_dir) -> list[Path]:
    dirs = [data_dir, os.environ.get("SCGEN_AE_DATA"), "shared/data", "../shared/data",
            Path(__file__).resolve().parents[2] / "shared" / "data", Path.home() / ".cache" / "scgen_ae"]
    return [Path(d) for d in dirs if d]


def find(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of the shared dataset ``name`` (see :data:`SHARED`)."""
    if name not in SHARED:
        raise ValueError(f"Unknown dataset {name!r}; known: {sorted(SHARED)}.")
    for d in _candidates(data_dir):
        path = d / f"{name}.h5ad"
        if path.exists():
            return path
    searched = ", ".join(str(d) for d in _candidates(data_dir))
    raise FileNotFoundError(
        f"Dataset {name!r} was not found (looked in: {searched}). Put {name}.h5ad in one of these folders "
        "or set SCGEN_AE_DATA to the folder that holds it."
    )


def load(name: str, data_dir: str | os.PathLike | None = None) -> AnnData:
    """Read a shared real dataset (raw counts in ``X``, ``obs['batch']``, maybe ``obs['cell_type']``)."""
    import anndata as ad

    return ad.read_h5ad(find(name, data_dir))

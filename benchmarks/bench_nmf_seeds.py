#!/usr/bin/env python
"""By-hand benchmark: how much the scIB scores of sklearn ``NMF`` and ``tl.nmf(batch_key=...)``
(iNMF + quantile alignment) move with the seed (issue 6).

``bench_nmf.py`` scores one seed. On ``cellbench_3cl`` the scIB KMeans NMI / ARI of the
aligned factors swing by ~0.4 between seeds (three cell lines, ten factors), so this script
fits both tools with seeds 0..n-1 on the same prepared data (``bench_nmf.prepare``: 2,000
HVGs, log-normalised, k = 10, one thread) and scores all fits in one
``sa.tl.score_integration`` call per data set. No timing.

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_nmf_seeds.py --seeds 3 --out bench_out/nmf_seeds
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nmf import K, prepare  # noqa: E402
from bench_vae import DATASETS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench_out/nmf_seeds"))
    args = p.parse_args()
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.decomposition import NMF

    import scgen_ae as sa

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            adata = prepare(name, Path(tmp) / f"{name}.h5ad")
            bases = {}
            for seed in range(args.seeds):
                model = NMF(n_components=K, init="nndsvda", solver="cd", max_iter=200, random_state=seed)
                adata.obsm[f"X_sk{seed}"] = model.fit_transform(adata.X.tocsr()).astype(np.float32)
                sa.tl.nmf(adata, n_components=K, transform="none", batch_key="batch", seed=seed, n_threads=1,
                          key_added=f"X_inmf{seed}")
                bases.update({f"X_sk{seed}": ("sklearn NMF", seed), f"X_inmf{seed}": ("tl.nmf batch_key (iNMF)", seed)})
            scores = sa.tl.score_integration(adata, bases=list(bases), batch_key="batch", label_key="cell_type",
                                             n_jobs=1)
            for basis, (tool, seed) in bases.items():
                rows.append({"dataset": name, "tool": tool, "seed": seed,
                             **{c: float(scores.loc[basis, c]) for c in ("Bio conservation", "Batch correction",
                                                                         "Total")}})
            print(pd.DataFrame(rows).query("dataset == @name").to_string(index=False), flush=True)
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out.with_suffix(".csv"), index=False)
    lines = ["| data set | tool | Total per seed | Total mean | Bio mean | Batch mean |", "|---|---|---|---|---|---|"]
    for (name, tool), g in df.groupby(["dataset", "tool"], sort=False):
        lines.append(f"| {name} | {tool} | {' / '.join(f'{t:.3f}' for t in g.Total)} | {g.Total.mean():.3f} | "
                     f"{g['Bio conservation'].mean():.3f} | {g['Batch correction'].mean():.3f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

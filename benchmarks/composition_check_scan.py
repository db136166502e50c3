#!/usr/bin/env python
"""By-hand benchmark: how far the label-free composition check's ratios are from its threshold.

For each design of ``bench_unbalanced.py`` and each seed, ``tl.vae``'s default is fitted and
:func:`scgen_ae.composition.unmatched_clusters` is run on its latent with ``ratio=0``, which lists
every cluster of every batch with the lower quartile of its cells' distance ratios. The
largest ratio of a design says whether the check fires (> ``UNMATCHED_RATIO``); the
batch-unique types say whether it should.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/composition_check_scan.py --seeds 0 1 --out bench_out/scan
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import bench_unbalanced as bu


def scan(design: str, seed: int) -> dict:
    import scgen_ae as sa
    from scgen_ae.composition import UNMATCHED_RATIO, unmatched_clusters

    adata = bu.build_design(design)
    sa.tl.vae(adata, batch_key="batch", layer="counts", seed=seed, progress=False)
    batches = adata.obs["batch"].astype(str).to_numpy()
    report = unmatched_clusters(adata.obsm["X_vae"], batches, ratio=0, seed=seed)
    ratios = report.missing["distance_ratio"].to_numpy()
    return {"design": design, "seed": seed, "largest ratio": float(ratios.max()),
            "fires": bool(ratios.max() > UNMATCHED_RATIO), "batch-unique types": ", ".join(bu.batch_unique_types(adata))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--designs", nargs="+", default=bu.DESIGNS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", default="bench_out/composition_scan")
    args = parser.parse_args()
    import scgen_ae as sa

    sa.settings.n_threads = 1
    table = pd.DataFrame([scan(d, s) for d in args.designs for s in args.seeds])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(f"{args.out}.csv", index=False)
    print(table.round(2).to_string(index=False))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""By-hand check that a refactor left the numbers alone: a fixed-seed ``tl.vae`` latent,
``tl.denoise`` layer and both training histories on ``cellbench_3cl`` (1,000 most expressed
genes, 5 epochs, one thread), saved to ``OUT.npz``. Run it in a worktree of the old commit and
in the new one, then compare the two files with ``--compare OLD.npz NEW.npz``.

    git worktree add --detach /tmp/old <old-commit>
    (cd /tmp/old && PYTHONPATH=$PWD python $OLDPWD/benchmarks/bit_identity.py /tmp/old.npz)
    PYTHONPATH=$PWD python benchmarks/bit_identity.py /tmp/new.npz --compare /tmp/old.npz /tmp/new.npz
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np


def record(path: str) -> None:
    import anndata as ad

    import scgen_ae as sa

    warnings.simplefilter("ignore")
    sa.settings.n_threads = 1
    adata = ad.read_h5ad(sa.datasets.find("cellbench_3cl"))
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel().argsort()[-1000:]].copy()
    vae = sa.tl.vae(adata, batch_key="batch", max_epochs=5, progress=False)
    dae = sa.tl.denoise(adata, batch_key="batch", max_epochs=5, progress=False)
    np.savez(path, vae=adata.obsm["X_vae"], dae=adata.layers["denoised"], vae_history=vae.history["train_loss"],
             dae_history=dae.history["train_loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    args = parser.parse_args()
    record(args.out)
    if args.compare:
        old, new = (np.load(p) for p in args.compare)
        for key in old:
            print(f"{key}: {'identical' if np.array_equal(old[key], new[key]) else 'DIFFERENT'}")


if __name__ == "__main__":
    main()

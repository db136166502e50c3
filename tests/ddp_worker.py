"""One rank of the 2-process DDP test (tests/test_scale.py), started by
``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py DATA OUT [KEY=VALUE ...]``.

Trains ``sa.tl.vae`` on the file DATA (streamed from disk) with devices=2 on the CPU
(gloo), then writes what the test compares across ranks to ``OUT/rank<r>.npz``: the
final weights, the history and the latent.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np


def main() -> None:
    data_path, out = sys.argv[1], sys.argv[2]
    extra = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
    import scgen_ae as sa

    adata = sa.ondisk.read_backed(data_path)
    kw = dict(batch_key="batch", n_latent=4, n_hidden=32, max_epochs=4, devices=2, device="cpu",
              n_threads=1, progress=False)
    model = sa.tl.vae(adata, **{**kw, **extra})
    rank = int(os.environ["RANK"])
    hist = model.history
    np.savez(os.path.join(out, f"rank{rank}.npz"), latent=adata.obsm["X_vae"],
             train_loss=hist["train_loss"], validation_loss=hist["validation_loss"],
             stopped_early=hist["stopped_early"], best_epoch=hist["best_epoch"],
             **{f"w/{k}": t.numpy() for k, t in model.module.state_dict().items()})


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""By-hand benchmark: how long ``sa.tl.vae`` needs to reach the validation loss that
scvi-tools' ``SCVI`` ends with (issue 2's throughput "at equal or better validation loss").

Not a test: run it on an otherwise idle machine. It reuses ``bench_vae.py``'s set-up
(same HVGs, same validation cells, each fit in a fresh subprocess with the same thread
count) in its fixed-epoch mode: same sizes (128 hidden, 10 latent, 1 layer, ZINB, gene
dispersion, batch 128), same Adam lr 1e-3, same KL warm-up (``--epochs // 3`` epochs),
early stopping off. ``--ours-layout`` says where batch enters ours: "scvi" (default:
decoder only, no MMD, scVI's work per step), "default" (tl.vae's design: encoder too,
per-batch gene offsets, MMD) or "offsets" (that design without the MMD penalty).
``--ours-kwargs`` passes more tl.vae arguments (e.g. ``mmd_weight``); ``--score`` adds the
scIB Totals of scVI's and ours' latents at the epoch count found.

scVI trains ``--epochs`` epochs. Ours trains ``E`` epochs for each ``E`` of
``--ours-epochs`` in increasing order, with the warm-up of the ``--epochs`` run, so each
of its fits is a prefix of the same training path (nothing else depends on the epoch
count), until its common validation −ELBO (``bench_vae.py``'s docstring: one sampled z,
KL weight 1, same cells, averaged draws) is at most scVI's; then bisects down to the
first epoch count that gets there (the grid is only the coarse search). Further
``--rounds`` then time scVI and ours-at-that-``E`` again, alternating, and the table reports per-round and
median ratios of the training-loop seconds (scVI's / ours).

Usage::

    python benchmarks/bench_vae_to_loss.py --threads 1 --rounds 3 --out bench_out/to_loss
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vae as bv  # noqa: E402


def _spec(name, tool, threads, path, split, epochs, warmup, tag="", layout="scvi", ours_kwargs=None) -> dict:
    extra = {"kl_warmup_epochs": warmup, **({"mmd_weight": 0.0} if layout == "offsets" else {}), **(ours_kwargs or {})}
    return {"dataset": name, "tool": tool, "threads": threads, "data": str(path), "split": str(split),
            "epochs": epochs, "default": False, "early_stopping": False, "kl_warmup": warmup,
            "scvi_split": "same", "seed": 0, "elbo_repeats": 5, "ours_like_scvi": layout == "scvi",
            "ours_kwargs": json.dumps(extra), "tag": tag}


def _run(spec, workdir, timeout) -> dict:
    res = bv._run_fit(spec, workdir, timeout)
    if res.get("status") != "ok":
        raise RuntimeError(f"{spec['dataset']} {spec['tool']} {spec['epochs']} epochs: {res.get('status')}")
    print(f"[to_loss] {spec['dataset']} {spec['tool']} t{spec['threads']} {spec['epochs']} ep: "
          f"{res['fit_seconds']:.1f} s, val -ELBO {res['val_elbo']:.2f}", flush=True)
    return res


def _score(small, scvi: dict, ours: dict) -> str:
    """scIB Totals (unscaled, 0.6 Bio + 0.4 Batch) of ours and scVI on the data set's cells."""
    import numpy as np

    import scgen_ae as sa

    small.obsm["ours"], small.obsm["scvi"] = np.load(ours["embedding"]), np.load(scvi["embedding"])
    label = bv.LABEL_KEY if bv.LABEL_KEY in small.obs else None
    scores = sa.tl.score_integration(small, bases=["ours", "scvi"], batch_key=bv.BATCH_KEY, label_key=label)
    return f"{scores.loc['ours', 'Total']:.3f} / {scores.loc['scvi', 'Total']:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=bv.DATASETS, choices=bv.DATASETS)
    p.add_argument("--epochs", type=int, default=100, help="scVI's epochs (default 100)")
    p.add_argument("--ours-epochs", nargs="+", type=int, default=list(range(20, 101, 10)))
    p.add_argument("--threads", nargs="+", type=int, default=[1])
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (the first also finds E)")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default="bench_out/bench_vae_to_loss")
    p.add_argument("--workdir", default=None, help="reuse the fits finished there (bench_vae.py's --workdir)")
    p.add_argument("--ours-layout", choices=["scvi", "default", "offsets"], default="scvi",
                   help="'scvi': batch only in the decoder, no MMD (scVI's work per step); 'default': tl.vae's "
                        "design (batch in the encoder, per-batch gene offsets, MMD) at the same sizes; "
                        "'offsets': the default design without the MMD penalty")
    p.add_argument("--ours-kwargs", default=None, help='JSON of extra sa.tl.vae arguments, e.g. \'{"mmd_weight": 0.3}\'')
    p.add_argument("--score", action="store_true",
                   help="scIB-score scVI's first fit and ours at the epoch count found (sa.tl.score_integration)")
    args = p.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_to_loss_"))
    workdir.mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    warmup = min(400, max(1, args.epochs // 3))
    ours_kwargs = json.loads(args.ours_kwargs) if args.ours_kwargs else {}
    # keeps the fits of different layouts and arguments apart in one work directory
    tag = ("" if args.ours_layout == "scvi" else f"_{args.ours_layout}") + "".join(
        f"_{k}{v}" for k, v in sorted(ours_kwargs.items()))
    lines = [f"| dataset | threads | scVI epochs | scVI val −ELBO | ours epochs to it | ours val −ELBO "
             f"| scVI s (median) | ours s (median) | ratio per round | **ratio of medians** | scIB Total ours / scVI |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.datasets:
        small, path, split, _, _ = bv._prepare(name, workdir, 0)
        for threads in args.threads:
            def fit(tool, epochs, suffix):
                spec = _spec(name, tool, threads, path, split, epochs, warmup, suffix, args.ours_layout, ours_kwargs)
                return _run(spec, workdir, args.timeout)

            scvi = fit("scvi", args.epochs, "_r0")
            reached, below = None, None  # the first epoch count that reaches scVI's loss, the last that missed
            for e in sorted(args.ours_epochs):
                ours = fit("scgen_ae", e, f"{tag}_e{e}")
                if ours["val_elbo"] <= scvi["val_elbo"]:
                    reached = (e, ours)
                    break
                below = e
            while reached is not None and below is not None and reached[0] - below > 1:  # bisect
                mid = (below + reached[0]) // 2
                ours = fit("scgen_ae", mid, f"{tag}_e{mid}")
                reached, below = ((mid, ours), below) if ours["val_elbo"] <= scvi["val_elbo"] else (reached, mid)
            if reached is None:
                lines.append(f"| {name} | {threads} | {args.epochs} | {scvi['val_elbo']:.2f} | not within "
                             f"{max(args.ours_epochs)} | {ours['val_elbo']:.2f} | – | – | – | – | – |")
                continue
            e, ours = reached
            scvi_s, ours_s = [scvi["fit_seconds"]], [ours["fit_seconds"]]
            for r in range(1, args.rounds):
                scvi_s.append(fit("scvi", args.epochs, f"_r{r}")["fit_seconds"])
                ours_s.append(fit("scgen_ae", e, f"{tag}_e{e}_r{r}")["fit_seconds"])
            per_round = " / ".join(f"{a / b:.2f}" for a, b in zip(scvi_s, ours_s))
            ms, mo = statistics.median(scvi_s), statistics.median(ours_s)
            totals = _score(small, scvi, ours) if args.score else "–"
            lines.append(f"| {name} | {threads} | {args.epochs} | {scvi['val_elbo']:.2f} | {e} | "
                         f"{ours['val_elbo']:.2f} | {ms:.1f} | {mo:.1f} | {per_round} | **{ms / mo:.2f}** | {totals} |")
            Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

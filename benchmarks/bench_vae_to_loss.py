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
``--ours-kwargs`` passes more tl.vae arguments (e.g. ``mmd_weight``, ``lr``,
``kl_warmup_epochs``, which override the shared ones); ``--score`` adds the scIB Totals of
scVI's and ours' latents at the epoch count found.

scVI trains ``--epochs`` epochs: its validation −ELBO (``bench_vae.py``'s common estimator:
one sampled z, KL weight 1, same cells, averaged draws) and, with ``--require-total``, its
scIB Total are the target. Ours trains ``E`` epochs for each ``E`` of ``--ours-epochs`` in
increasing order (each fit a prefix of the same training path: nothing else depends on
the epoch count) until a fit meets the target, then bisects down to the first epoch count
that does (``first_reaching``). tl.vae keeps the weights of its best epoch by its own
validation loss (as it does for users); scVI keeps its last. Further ``--rounds`` time
scVI and ours-at-that-``E`` again, alternating; the table reports per-round and median
ratios of the training-loop seconds (scVI's / ours) and both peak RSS.

``--scvi-kwargs`` (scVI ``plan_kwargs``, e.g. the ``lr`` and ``n_epochs_kl_warmup`` given to
ours) adds a fairness check: scVI with those settings is searched the same way for the
first epoch count that meets the same target, and ours is compared with that too.

Usage::

    python benchmarks/bench_vae_to_loss.py --threads 1 --rounds 3 --out bench_out/to_loss
    python benchmarks/bench_vae_to_loss.py --ours-layout default --require-total \
        --ours-kwargs '{"mmd_weight": 0.1, "lr": 0.003, "kl_warmup_epochs": 10}' \
        --scvi-kwargs '{"lr": 0.003, "n_epochs_kl_warmup": 10}' --ours-epochs 10 15 20 30 40 60 80 100
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


def _spec(name, tool, threads, path, split, epochs, warmup, tag="", layout="scvi", ours_kwargs=None,
          scvi_plan_kwargs=None) -> dict:
    extra = {"kl_warmup_epochs": warmup, **({"mmd_weight": 0.0} if layout == "offsets" else {}), **(ours_kwargs or {})}
    return {"dataset": name, "tool": tool, "threads": threads, "data": str(path), "split": str(split),
            "epochs": epochs, "default": False, "early_stopping": False, "kl_warmup": warmup,
            "scvi_split": "same", "seed": 0, "elbo_repeats": 5, "ours_like_scvi": layout == "scvi",
            "ours_kwargs": json.dumps(extra), "scvi_plan_kwargs": json.dumps(scvi_plan_kwargs or {}), "tag": tag}


def _run(spec, workdir, timeout) -> dict:
    res = bv._run_fit(spec, workdir, timeout)
    if res.get("status") != "ok":
        raise RuntimeError(f"{spec['dataset']} {spec['tool']} {spec['epochs']} epochs: {res.get('status')}")
    print(f"[to_loss] {spec['dataset']} {spec['tool']}{spec['tag']} t{spec['threads']}: "
          f"{res['fit_seconds']:.1f} s, val -ELBO {res['val_elbo']:.2f}", flush=True)
    return res


def _total(small, res: dict) -> float:
    """Unscaled scIB Total (0.6 Bio + 0.4 Batch) of one fit's latent, cached in its result."""
    if "scib_total" not in res:
        import numpy as np

        import scgen_ae as sa

        small.obsm["fit"] = np.load(res["embedding"])
        label = bv.LABEL_KEY if bv.LABEL_KEY in small.obs else None
        res["scib_total"] = float(sa.tl.score_integration(
            small, bases=["fit"], batch_key=bv.BATCH_KEY, label_key=label).loc["fit", "Total"])
        Path(res["embedding"]).with_suffix(".json").write_text(json.dumps(res))  # reused by --workdir
    return res["scib_total"]


def _ratios(scvi_s, ours_s) -> str:
    """Per-round time ratios, scVI's seconds over ours."""
    return " / ".join(f"{a / b:.2f}" for a, b in zip(scvi_s, ours_s))


def first_reaching(fit, grid, good):
    """Smallest epoch count E with ``good(fit(E))``: the ``grid`` in increasing order, then a
    bisection between the last miss and the first hit. Returns ``(E, result)``, or
    ``(None, last result)`` when no epoch count of the grid gets there."""
    reached, below, res = None, None, None
    for e in sorted(grid):
        res = fit(e)
        if good(res):
            reached = (e, res)
            break
        below = e
    while reached is not None and below is not None and reached[0] - below > 1:
        mid = (below + reached[0]) // 2
        res = fit(mid)
        reached, below = ((mid, res), below) if good(res) else (reached, mid)
    return reached if reached is not None else (None, res)


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
    p.add_argument("--ours-kwargs", default=None,
                   help='JSON of extra sa.tl.vae arguments, e.g. \'{"mmd_weight": 0.1, "lr": 0.003}\'')
    p.add_argument("--scvi-kwargs", default=None,
                   help="JSON of scVI plan_kwargs (e.g. the lr and n_epochs_kl_warmup given to ours): then scVI "
                        "with them is searched like ours, for the first epoch count that reaches the same target")
    p.add_argument("--score", action="store_true",
                   help="scIB-score scVI's first fit and ours at the epoch count found (sa.tl.score_integration)")
    p.add_argument("--require-total", action="store_true",
                   help="the target is scVI's val loss AND its scIB Total (implies --score)")
    args = p.parse_args(argv)
    args.score = args.score or args.require_total
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_to_loss_"))
    workdir.mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    warmup = min(400, max(1, args.epochs // 3))
    ours_kwargs = json.loads(args.ours_kwargs) if args.ours_kwargs else {}
    scvi_kwargs = json.loads(args.scvi_kwargs) if args.scvi_kwargs else None
    # keeps the fits of different layouts and arguments apart in one work directory
    tag = ("" if args.ours_layout == "scvi" else f"_{args.ours_layout}") + "".join(
        f"_{k}{v}" for k, v in sorted(ours_kwargs.items()))
    scvi_tag = "".join(f"_{k}{v}" for k, v in sorted((scvi_kwargs or {}).items()))
    lines = [f"| dataset | threads | scVI val −ELBO / Total | ours epochs | ours val −ELBO / Total | scVI s "
             f"(median) | ours s (median) | ratio per round | **ratio of medians** | peak RSS MB ours / scVI |"
             + (" scVI epochs, same lr & warm-up | its s / ours s (medians, re-timed) | ratio per round "
                "| **ratio to it** |" if scvi_kwargs else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if scvi_kwargs else "")]

    def write():
        Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")

    for name in args.datasets:
        small, path, split, _, _ = bv._prepare(name, workdir, 0)
        for threads in args.threads:
            def fit(tool, epochs, suffix, plan=None):
                spec = _spec(name, tool, threads, path, split, epochs, warmup, suffix, args.ours_layout,
                             ours_kwargs, plan)
                return _run(spec, workdir, args.timeout)

            def ours(e, timing=""):
                return fit("scgen_ae", e, f"{tag}_e{e}{timing}")

            def scvi_fast(e, timing=""):
                return fit("scvi", e, f"{scvi_tag}_e{e}{timing}", scvi_kwargs)

            scvi = fit("scvi", args.epochs, "_r0")
            target_total = _total(small, scvi) if args.score else None

            def good(res):
                if res["val_elbo"] > scvi["val_elbo"]:
                    return False
                return not args.require_total or _total(small, res) >= target_total

            e, res = first_reaching(ours, args.ours_epochs, good)
            scvi_cell = f"{scvi['val_elbo']:.2f}" + (f" / {target_total:.3f}" if args.score else "")
            ours_total = f" / {_total(small, res):.3f}" if args.score else ""
            if e is None:
                lines.append(f"| {name} | {threads} | {scvi_cell} | not within {max(args.ours_epochs)} | "
                             f"{res['val_elbo']:.2f}{ours_total} | – | – | – | – | – |"
                             + (" – | – | – | – |" if scvi_kwargs else ""))
                write()
                continue
            scvi_s, ours_s = [scvi["fit_seconds"]], [res["fit_seconds"]]
            for r in range(1, args.rounds):  # alternating, the first round is the search's
                scvi_s.append(fit("scvi", args.epochs, f"_r{r}")["fit_seconds"])
                ours_s.append(ours(e, f"_r{r}")["fit_seconds"])
            ms, mo = statistics.median(scvi_s), statistics.median(ours_s)
            row = (f"| {name} | {threads} | {scvi_cell} | {e} | {res['val_elbo']:.2f}{ours_total} | {ms:.1f} | "
                   f"{mo:.1f} | {_ratios(scvi_s, ours_s)} | **{ms / mo:.2f}** | "
                   f"{res['peak_rss_mb']:.0f} / {scvi['peak_rss_mb']:.0f} |")
            if scvi_kwargs:  # scVI given ours' optimiser settings, searched for the same target
                e2, res2 = first_reaching(scvi_fast, args.ours_epochs, good)
                if e2 is None:
                    row += f" not within {max(args.ours_epochs)} ({res2['val_elbo']:.2f}) | – | – | – |"
                else:
                    fast_s, ours_f = [], []
                    for r in range(args.rounds):  # fresh fits of both, alternating, so drift hits both alike
                        fast_s.append(scvi_fast(e2, f"_t{r}")["fit_seconds"])
                        ours_f.append(ours(e, f"_t{r}")["fit_seconds"])
                    mf, mo2 = statistics.median(fast_s), statistics.median(ours_f)
                    total2 = f" / {_total(small, res2):.3f}" if args.score else ""
                    row += (f" {e2} ({res2['val_elbo']:.2f}{total2}) | {mf:.1f} / {mo2:.1f} | "
                            f"{_ratios(fast_s, ours_f)} | **{mf / mo2:.2f}** |")
            lines.append(row)
            write()
    write()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

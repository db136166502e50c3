"""Command line: ``scgen-ae <subcommand>``. One entry point; each subcommand is a
thin wrapper around the same ``sa.tl`` / ``sa.pl`` calls a notebook would make."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _integrate(adata, args, out_h5ad: Path | None, plots: Path | None) -> None:
    import scanpy as sc

    import scgen_ae as sa

    from ._validate import batch_codes

    batch_codes(adata, args.batch_key)  # a clear error before any work
    sa.pp.drop_empty(adata, layer=args.layer)
    dropped = adata.uns.pop("drop_empty")
    if dropped["cells_dropped"] or dropped["genes_dropped"]:
        print(f"dropped {dropped['cells_dropped']} cells and {dropped['genes_dropped']} genes without counts")
    if args.n_top_genes and adata.n_vars > args.n_top_genes:
        sa.pp.highly_variable(adata, n_top_genes=args.n_top_genes, batch_key=args.batch_key, layer=args.layer)
        print(f"selected {adata.n_vars} highly variable genes")
    print(f"training tl.vae on {adata.n_obs} cells x {adata.n_vars} genes, batches from obs[{args.batch_key!r}]")
    model = sa.tl.vae(adata, batch_key=args.batch_key, layer=args.layer, likelihood=args.likelihood,
                      n_latent=args.n_latent, max_epochs=args.max_epochs, seed=args.seed,
                      n_threads=args.threads, progress=not args.quiet)
    hist = model.history
    print(f"trained {len(hist['train_loss'])} epochs in {hist['seconds']:.1f} s (best epoch {hist['best_epoch'] + 1})")
    # uncorrected baseline for the summary: PCA of log-normalised counts
    base = sc.AnnData(adata.layers[args.layer] if args.layer else adata.X.copy())
    sc.pp.normalize_total(base, target_sum=1e4)
    sc.pp.log1p(base)
    sc.pp.pca(base, n_comps=min(30, min(base.shape) - 1))
    adata.obsm["X_pca_uncorrected"] = base.obsm["X_pca"]
    table = sa.metrics.summary(adata, ["X_pca_uncorrected", "X_vae"], batch_key=args.batch_key,
                               label_key=args.label_key)
    print("\nintegration summary (batch_entropy / ilisi: 1 = batches mixed; ari: clusters vs labels)")
    print(table.round(3).to_string())
    adata.uns["integration_summary"] = {c: table[c].to_numpy() for c in table.columns}
    adata.uns["integration_summary"]["basis"] = table.index.to_numpy().astype(str)
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        color = [args.batch_key] + ([args.label_key] if args.label_key else [])
        sa.pl.latent(adata, basis="X_vae", color=color, method="umap", save=plots / "vae_umap.png")
        sa.pl.latent(adata, basis="X_pca_uncorrected", color=color, method="umap", save=plots / "uncorrected_umap.png")
        sa.pl.history(adata, key="vae", save=plots / "vae_history.png")
        print(f"plots written to {plots}/")
    if out_h5ad is not None:
        adata.write_h5ad(out_h5ad)
        print(f"annotated AnnData written to {out_h5ad}")
    if getattr(args, "save_model", None):
        print(f"model saved to {model.save(args.save_model)}")


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    p.add_argument("--likelihood", default="zinb", choices=["zinb", "nb", "poisson", "gaussian"])
    p.add_argument("--n-latent", type=int, default=10)
    p.add_argument("--n-top-genes", type=int, default=2000, help="HVGs to keep (0: all genes)")
    p.add_argument("--max-epochs", type=int, default=None, help="default: scvi-tools' heuristic, early stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")



# evalbridge: `scgen-ae score`
def _score(args) -> None:
    import anndata as ad

    import scgen_ae as sa

    adata = ad.read_h5ad(args.input)
    table = sa.tl.score_integration(adata, bases=args.bases, batch_key=args.batch_key, label_key=args.label_key,
                                    n_jobs=args.threads or 1, key_added=args.key_added)
    print("integration scores (scIB, unscaled; Total = 0.6 Bio conservation + 0.4 Batch correction)")
    print(table.round(3).to_string())
    if table.attrs.get("note"):
        print(f"note: {table.attrs['note']}")
    if args.csv is not None:
        table.to_csv(args.csv)
        print(f"table written to {args.csv}")
    if args.plot is not None:
        sa.pl.scores(adata, key=args.key_added, save=args.plot)
        print(f"figure written to {args.plot}")
    if args.output is not None:
        adata.write_h5ad(args.output)
        print(f"AnnData with uns[{args.key_added!r}] written to {args.output}")


def _add_score_parser(sub) -> None:
    p = sub.add_parser("score", help="scIB integration scores of obsm embeddings (needs scgen-ae[metrics])")
    p.add_argument("input", type=Path, help=".h5ad with the embeddings in obsm")
    p.add_argument("--bases", nargs="+", required=True, help="obsm keys to score, e.g. X_pca X_vae")
    p.add_argument("--batch-key", required=True)
    p.add_argument("--label-key", default=None, help="obs column of cell types (none: batch metrics only)")
    p.add_argument("--key-added", default="integration_scores", help="uns key of the stored results")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the AnnData with the scores")
    p.add_argument("--csv", type=Path, default=None, help="write the table as CSV")
    p.add_argument("--plot", type=Path, default=None, help="write the table as a figure (sa.pl.scores)")
    p.add_argument("--threads", type=int, default=None, help="threads for the neighbour search (default 1)")

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scgen-ae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("integrate", help="batch-correct an .h5ad of raw counts with tl.vae")
    p.add_argument("input", type=Path)
    p.add_argument("--batch-key", required=True)
    p.add_argument("--label-key", default=None, help="obs column of known cell types (for the summary)")
    p.add_argument("-o", "--output", type=Path, default=None)
    p.add_argument("--plots", type=Path, default=None, help="folder for UMAP and loss-curve PNGs")
    p.add_argument("--save-model", type=Path, default=None)
    _add_training_args(p)

    p = sub.add_parser("demo", help="the main job on a built-in simulated dataset (no network needed)")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--n-cells", type=int, default=1500)
    _add_training_args(p)

    _add_score_parser(sub)  # evalbridge

    args = parser.parse_args(argv)
    import anndata as ad

    import scgen_ae as sa

    try:
        if args.command == "integrate":
            adata = ad.read_h5ad(args.input)
            _integrate(adata, args, args.output, args.plots)
        elif args.command == "demo":
            args.batch_key, args.label_key = "batch", "cell_type"
            adata = sa.datasets.simulate(n_cells=args.n_cells)
            print(f"simulated {adata.n_obs} cells x {adata.n_vars} genes, 3 batches, 4 cell groups")
            args.out.mkdir(parents=True, exist_ok=True)
            _integrate(adata, args, args.out / "demo.h5ad", args.out / "plots")
        elif args.command == "score":  # evalbridge
            _score(args)
    except (sa.InputError, sa.ModelFileError, sa.TrainingDivergedError, FileNotFoundError, ImportError) as err:
        print(f"scgen-ae: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

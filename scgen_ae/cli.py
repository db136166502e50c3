"""Command line: ``scgen-ae <subcommand>``. One entry point; each subcommand is a
thin wrapper around the same ``sa.tl`` / ``sa.pl`` calls a notebook would make."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


# ------------------------------------------------------------ arguments and paths, checked before any work

def _at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (argparse reports it as "argument --flag: ...")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def _check_output_file(path: Path, flag: str, source: Path | None, force: bool) -> None:
    """``path`` can be written: its folder exists and is writable, it is no folder, and it is
    not the input (unless ``--force``)."""
    from ._validate import InputError

    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; pass a file name, e.g. {path / 'result.h5ad'}.")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{flag} {path}: the folder {folder} does not exist; create it first (mkdir -p {folder}).")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{flag} {path} cannot be written (permission denied); choose a writable location.")
    if source is not None and path.exists() and os.path.samefile(path, source) and not force:
        raise InputError(f"{flag} {path} is the input file: writing it would replace your data with the results. "
                         "Pass another output path, or --force to replace the input on purpose.")


def _check_output_folder(path: Path, flag: str) -> None:
    """``path`` is a folder or can be created as one (its nearest existing parent is writable)."""
    from ._validate import InputError

    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file, not a folder; pass a folder name.")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise InputError(f"{flag} {path} cannot be created or written in {existing} (permission denied); "
                         "choose a writable location.")


def _check_paths(args) -> None:
    """Every file the command reads and writes, before any work: a bad path fails in a second, not
    after training."""
    from ._validate import check_h5ad_file
    from .io import model_path

    source = getattr(args, "input", None)
    if source is not None:
        check_h5ad_file(source, "the input")
    force = getattr(args, "force", False)
    for flag, attr in (("-o/--output", "output"), ("--csv", "csv"), ("--plot", "plot")):
        if getattr(args, attr, None) is not None:
            _check_output_file(getattr(args, attr), flag, source, force)
    if getattr(args, "save_model", None) is not None:
        _check_output_file(model_path(args.save_model), "--save-model", source, force)
    for flag, attr in (("--plots", "plots"), ("-o/--output", "out")):
        if getattr(args, attr, None) is not None:
            _check_output_folder(getattr(args, attr), flag)


def _write_h5ad(adata, path: Path) -> None:
    """Write to a temporary file next to ``path``, then rename it into place: an interrupted
    write never leaves a half-written file, and the input may be replaced (with --force)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.h5ad", dir=path.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: the ``var`` column of the output file that marks the genes the model was trained on
MODEL_GENE_COLUMN = "scgen_ae_model_gene"


def _model_genes(full, args):
    """Drop cells without counts from ``full`` (in place) and return the mask of the genes to
    train on: genes with counts, narrowed to ``--n-top-genes`` highly variable ones."""
    import numpy as np

    import scgen_ae as sa

    from ._validate import get_matrix

    X = get_matrix(full, args.layer)
    has_counts = np.diff(X.indptr) > 0
    if not has_counts.all():
        full._init_as_actual(full[has_counts].copy())
        print(f"dropped {int((~has_counts).sum())} cells without counts")
        X = get_matrix(full, args.layer)
    genes = np.bincount(X.indices, minlength=X.shape[1]) > 0
    if not genes.all():
        print(f"{int((~genes).sum())} genes without counts are kept in the output but not modelled")
    if args.n_top_genes and genes.sum() > args.n_top_genes:
        chosen = sa.pp.highly_variable(full[:, genes].copy(), n_top_genes=args.n_top_genes, batch_key=args.batch_key,
                                       layer=args.layer, subset=False, copy=True)
        genes[genes] = chosen.var["highly_variable"].to_numpy()
        print(f"selected {int(genes.sum())} highly variable genes to train on; the output keeps all "
              f"{full.n_vars} genes (the model's are marked in var[{MODEL_GENE_COLUMN!r}])")
    return genes


def _keep_in_full(full, work, genes) -> None:
    """Copy what the model wrote into ``work`` (its genes) onto ``full`` (every gene):
    ``obsm`` and ``uns`` as they are, ``varm`` rows of the other genes as zeros."""
    import numpy as np

    for key, value in work.obsm.items():
        full.obsm[key] = value
    for key, value in work.uns.items():
        full.uns[key] = value
    for key, value in work.varm.items():
        rows = np.zeros((full.n_vars, *np.shape(value)[1:]), dtype=np.asarray(value).dtype)
        rows[genes] = np.asarray(value)
        full.varm[key] = rows
    full.var[MODEL_GENE_COLUMN] = genes


def _integrate(full, args, out_h5ad: Path | None, plots: Path | None) -> None:
    """Train on the genes of :func:`_model_genes` and write ``full``, every gene kept."""
    import scanpy as sc

    import scgen_ae as sa

    from ._validate import batch_codes
    from .tl._common import write_results

    batch_codes(full, args.batch_key)  # a clear error before any work
    genes = _model_genes(full, args)
    adata = full[:, genes].copy()
    kind = getattr(args, "model", "vae")
    if kind not in TRAINERS:
        raise sa.InputError(f"--model {kind} is not available in this build; choose one of {sorted(TRAINERS)}.")
    print(f"training tl.{kind} on {adata.n_obs} cells x {adata.n_vars} genes, batches from --batch-key {args.batch_key}")
    model, basis = TRAINERS[kind](adata, args)
    # uncorrected baseline for the summary: PCA of log-normalised counts
    base = sc.AnnData(adata.layers[args.layer] if args.layer else adata.X.copy())
    sc.pp.normalize_total(base, target_sum=1e4)
    sc.pp.log1p(base)
    sc.pp.pca(base, n_comps=min(30, min(base.shape) - 1))
    write_results(adata, obsm={"X_pca_uncorrected": base.obsm["X_pca"]})
    table = sa.metrics.summary(adata, ["X_pca_uncorrected", basis], batch_key=args.batch_key,
                               label_key=args.label_key)
    table, source = _scib_twins(adata, table, args)
    print(f"\nintegration summary (1 = batches mixed / labels kept apart; {source})")
    print(table.round(3).to_string())
    summary = {c: table[c].to_numpy() for c in table.columns}
    summary["basis"] = table.index.to_numpy().astype(str)
    summary["source"] = source
    write_results(adata, uns={"integration_summary": summary})
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        color = [args.batch_key] + ([args.label_key] if args.label_key else [])
        sa.pl.latent(adata, basis=basis, color=color, method="umap", save=plots / f"{kind}_umap.png")
        sa.pl.latent(adata, basis="X_pca_uncorrected", color=color, method="umap", save=plots / "uncorrected_umap.png")
        sa.pl.history(adata, key=kind, save=plots / f"{kind}_history.png")
        if "varm_key" in adata.uns[kind]:  # gene loadings (topics, factors): pl.topics draws their top genes
            sa.pl.topics(adata, key=kind, n_genes=10, save=plots / f"{kind}_topics.png")
        print(f"plots written to {plots}/")
    _keep_in_full(full, adata, genes)
    if out_h5ad is not None:
        _write_h5ad(full, out_h5ad)
        print(f"annotated AnnData written to {out_h5ad}")
    if getattr(args, "save_model", None):
        print(f"model saved to {model.save(args.save_model)}")


#: the summary's quick metrics (sa.metrics) that scIB also reports, and scIB's column for each
SCIB_TWINS = {"batch_simpson": "iLISI", "ari": "KMeans ARI", "label_silhouette": "Silhouette label"}
_QUICK = "sa.metrics' quick kNN metrics, not scIB's"


def _scib_twins(adata, table, args):
    """(table, where its values come from): the quick metrics that scIB also has are replaced
    by scIB's own, from ``sa.tl.score_integration`` (what ``scgen-ae score`` runs), so one
    embedding never gets two iLISI values; without scib-metrics they stay, under their own names."""
    import anndata as ad

    import scgen_ae as sa

    if getattr(args, "no_scib", False):
        return table, f"{_QUICK} (--no-scib)"
    try:
        import scib_metrics  # noqa: F401  (optional: scgen-ae[metrics])
    except ImportError:
        return table, f"{_QUICK}; pip install 'scgen-ae[metrics]' for scIB's iLISI"
    if adata.n_obs <= 90:  # scIB's neighbourhoods are 90 cells
        return table, f"{_QUICK}: scIB needs more than 90 cells"
    keys = [args.batch_key] + ([args.label_key] if args.label_key else [])
    light = ad.AnnData(obs=adata.obs[keys].copy(), obsm={b: adata.obsm[b] for b in table.index})
    wanted = [SCIB_TWINS[c] for c in table.columns if c in SCIB_TWINS]
    scib = sa.tl.score_integration(light, bases=list(table.index), batch_key=args.batch_key,
                                   label_key=args.label_key, metrics=wanted, n_jobs=args.threads or 1)
    table = table.drop(columns=list(SCIB_TWINS), errors="ignore").join(scib)
    return table, f"batch_entropy: {_QUICK}; {', '.join(wanted)}: scib-metrics via sa.tl.score_integration"


def _train_vae(adata, args):
    """--n-latent dimensions, --likelihood"""
    import scgen_ae as sa

    model = sa.tl.vae(adata, batch_key=args.batch_key, layer=args.layer, likelihood=args.likelihood,
                      n_latent=args.n_latent, max_epochs=args.max_epochs, seed=args.seed,
                      n_threads=args.threads, progress=not args.quiet)
    hist = model.history
    print(f"trained {len(hist['train_loss'])} epochs in {hist['seconds']:.1f} s (best epoch {hist['best_epoch'] + 1})")
    return model, "X_vae"


def _demo(args) -> None:
    """The main job on the real cells shipped with the package: batch correction, plots, scores."""
    import numpy as np

    import scgen_ae as sa

    args.batch_key, args.label_key = "batch", "cell_type"
    adata = sa.datasets.cellbench_3protocols()
    if args.n_cells is not None and args.n_cells < adata.n_obs:
        keep = np.sort(np.random.default_rng(args.seed).choice(adata.n_obs, args.n_cells, replace=False))
        adata = adata[keep].copy()
    print(f"CellBench (Tian et al. 2019): {adata.n_obs} real cells x {adata.n_vars} genes, "
          "3 protocols (10x, CEL-seq2, Drop-seq) in obs['batch'], 3 cell lines in obs['cell_type']")
    args.out.mkdir(parents=True, exist_ok=True)
    plots = args.out / "plots"
    _integrate(adata, args, None, plots)  # the file is written below, with the scores in it
    if args.no_scib:
        print("scIB scores skipped (--no-scib)")
    else:
        try:
            import scib_metrics  # noqa: F401  (optional: scgen-ae[metrics])
        except ImportError:
            print("scIB scores skipped: scib-metrics is not installed (pip install 'scgen-ae[metrics]'); "
                  "the summary above uses the package's own metrics")
        else:
            _demo_scores(adata, args.out, plots)
    _write_h5ad(adata, args.out / "demo.h5ad")
    print(f"annotated AnnData written to {args.out / 'demo.h5ad'}")


def _demo_scores(adata, out: Path, plots: Path) -> None:
    import scgen_ae as sa

    table = sa.tl.score_integration(adata, bases=["X_pca_uncorrected", "X_vae"], batch_key="batch",
                                    label_key="cell_type", pre_integrated_key="X_pca_uncorrected")
    print("\nscIB scores (unscaled; Total = 0.6 Bio conservation + 0.4 Batch correction)")
    print(table.round(3).to_string())
    table.to_csv(out / "scores.csv")
    sa.pl.scores(adata, save=plots / "scores.png")
    print(f"scores written to {out / 'scores.csv'} and {plots / 'scores.png'}")


# --- nmf ---
def _train_nmf(adata, args):
    """integrative NMF; --n-latent factors, --max-epochs passes"""
    import scgen_ae as sa

    model = sa.tl.nmf(adata, n_components=args.n_latent, batch_key=args.batch_key, layer=args.layer,
                      max_iter=args.max_epochs or 200, seed=args.seed, n_threads=args.threads,
                      progress=not args.quiet)
    hist = model.history
    print(f"fitted integrative NMF (k = {args.n_latent}) in {hist['n_iter']} passes, {hist['seconds']:.1f} s")
    return model, "X_nmf"
# --- end nmf ---


# --- topic models ---
def _train_lda(adata, args):
    """--n-latent topics"""
    import scgen_ae as sa

    train = dict(max_epochs=args.max_epochs) if args.max_epochs is not None else {}
    model = sa.tl.lda(adata, n_topics=args.n_latent, batch_key=args.batch_key, layer=args.layer, seed=args.seed,
                      n_threads=args.threads, progress=not args.quiet, **train)
    hist = model.history
    print(f"trained {len(hist['train_loss'])} epochs in {hist['seconds']:.1f} s (best epoch {hist['best_epoch'] + 1})")
    return model, "X_lda"
# --- end topic models ---


#: ``--model``'s choices, the first the default: each trains with its front's default ``uns_key`` (the
#: name here) and returns (model, obsm key); its docstring is its part of ``--model``'s help
TRAINERS = {"vae": _train_vae, "nmf": _train_nmf, "lda": _train_lda}


def _model_help() -> str:
    """``--model``'s help, from :data:`TRAINERS`: "vae (...), nmf (...) or lda (...)"."""
    parts = [f"{name} ({fn.__doc__.strip()})" if fn.__doc__ else name for name, fn in TRAINERS.items()]
    return " or ".join([", ".join(parts[:-1]), parts[-1]]) if len(parts) > 1 else parts[0]


# denoising --------------------------------------------------------------------
def _denoise(adata, args) -> None:
    import scgen_ae as sa

    from ._validate import batch_codes

    if args.batch_key is not None:
        batch_codes(adata, args.batch_key)  # a clear error before any work
    shape = adata.shape
    adata = sa.pp.drop_empty(adata, layer=args.layer, copy=True)  # tl.denoise refuses empty cells/genes
    del adata.uns["drop_empty"]
    if adata.shape != shape:
        print(f"dropped {shape[0] - adata.n_obs} cells and {shape[1] - adata.n_vars} genes without counts")
    print(f"denoising {adata.n_obs} cells x {adata.n_vars} genes with method={args.method!r}")
    train = dict(max_epochs=args.max_epochs) if args.max_epochs is not None else {}
    model = sa.tl.denoise(adata, method=args.method, batch_key=args.batch_key, layer=args.layer,
                          likelihood=args.likelihood, transform_batch=args.transform_batch,
                          layer_added=args.layer_added, seed=args.seed, n_threads=args.threads,
                          progress=not args.quiet, **train)
    hist = model.history
    print(f"trained {len(hist['train_loss'])} epochs in {hist['seconds']:.1f} s; "
          f"denoised values in layers[{args.layer_added!r}]")
    if args.output is not None:
        _write_h5ad(adata, args.output)
        print(f"annotated AnnData written to {args.output}")
    if args.save_model:
        print(f"model saved to {model.save(args.save_model)}")


def _add_denoise_parser(sub) -> None:
    from .likelihoods import likelihood_names

    p = sub.add_parser("denoise", help="denoise an .h5ad of raw counts with tl.denoise", formatter_class=_Help,
                       description="Denoise an .h5ad of raw counts with tl.denoise.")
    p.add_argument("input", type=Path, help=".h5ad file with raw counts")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="write the AnnData with the denoised layer here (none: not written)")
    p.add_argument("--batch-key", default=None, help="obs column of the batches (encoder/decoder covariate)")
    p.add_argument("--method", default="dae", choices=["dae", "vae"], help="denoising autoencoder or VAE")
    p.add_argument("--transform-batch", default=None, help="decode every cell as if from this batch")
    p.add_argument("--layer", default=None, help="layer with raw counts (none: X)")
    p.add_argument("--layer-added", default="denoised", help="layer for the denoised values")
    p.add_argument("--likelihood", default="zinb", choices=likelihood_names(counts=True), help="count likelihood")
    p.add_argument("--max-epochs", type=_at_least(1), default=None, help="epochs (none: by the number of cells)")
    p.add_argument("--seed", type=_at_least(0), default=0, help="random seed")
    p.add_argument("--threads", type=_at_least(1), default=None, help="torch threads (none: every usable core)")
    p.add_argument("--save-model", type=Path, default=None, help="save the model here (.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="allow -o to replace the input file")
# ------------------------------------------------------------ end of denoising


# --- evaluation: `scgen-ae score` ---
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
        _write_h5ad(adata, args.output)
        print(f"AnnData with uns[{args.key_added!r}] written to {args.output}")


def _add_score_parser(sub) -> None:
    p = sub.add_parser("score", help="scIB integration scores of obsm embeddings (needs scgen-ae[metrics])",
                       formatter_class=_Help, description="scIB integration scores of obsm embeddings.")
    p.add_argument("input", type=Path, help=".h5ad with the embeddings in obsm")
    p.add_argument("--bases", nargs="+", required=True, help="obsm keys to score, e.g. X_pca X_vae")
    p.add_argument("--batch-key", required=True, help="obs column of the batches")
    p.add_argument("--label-key", default=None, help="obs column of cell types (none: batch metrics only)")
    p.add_argument("--key-added", default="integration_scores", help="uns key of the stored results")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the AnnData with the scores")
    p.add_argument("--csv", type=Path, default=None, help="write the table as CSV")
    p.add_argument("--plot", type=Path, default=None, help="write the table as a figure (sa.pl.scores)")
    p.add_argument("--threads", type=_at_least(1), default=None, help="threads for the neighbour search (default 1)")
    p.add_argument("--force", action="store_true", help="allow -o to replace the input file")
# --- end evaluation ---


def _add_training_args(p: argparse.ArgumentParser) -> None:
    from .likelihoods import likelihood_names

    p.add_argument("--layer", default=None, help="layer with raw counts (none: X)")
    p.add_argument("--likelihood", default="zinb", choices=likelihood_names(),
                   help="likelihood of the VAE")
    p.add_argument("--n-latent", type=_at_least(1), default=10, help="latent dimensions (factors, topics)")
    p.add_argument("--n-top-genes", type=_at_least(0), default=2000,
                   help="highly variable genes to train on (0: all genes); the output keeps every gene")
    p.add_argument("--max-epochs", type=_at_least(1), default=None,
                   help="epochs (none: scvi-tools' heuristic, with early stopping)")
    p.add_argument("--seed", type=_at_least(0), default=0, help="random seed")
    p.add_argument("--threads", type=_at_least(1), default=None, help="torch threads (none: every usable core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option with a default value ends its help with "(default: ...)"; options whose
    default is "not given" (None, an off switch) say what that means in their own words."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or action.required:
            return action.help
        return super()._get_help_string(action)


#: Python argument names in messages -> the command-line flag that sets them
_FLAGS = {"batch_key": "--batch-key", "label_key": "--label-key", "layer": "--layer", "likelihood": "--likelihood",
          "n_latent": "--n-latent", "max_epochs": "--max-epochs", "seed": "--seed", "n_threads": "--threads",
          "transform_batch": "--transform-batch", "method": "--method", "layer_added": "--layer-added",
          "key_added": "--key-added", "n_top_genes": "--n-top-genes"}


def flag_form(message: str) -> str:
    """Say ``--layer counts`` where the library says ``layer='counts'`` (and ``no --layer`` for
    ``layer=None``): the user of the command line passed flags, not Python arguments."""
    import re

    def sub(match):
        flag, value = _FLAGS[match.group(1)], match.group(2)
        if value == "None":
            return f"no {flag}"
        return f"{flag} {value.strip(chr(39))}"

    names = "|".join(map(re.escape, _FLAGS))
    return re.sub(rf"\b({names})=('[^']*'|None|[-+0-9.e]+)", sub, message)


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="scgen-ae", description=__doc__, formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"scgen-ae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    default, *others = TRAINERS
    alternatives = f" (or --model {' / '.join(others)})" if others else ""
    p = sub.add_parser("integrate", help=f"batch-correct an .h5ad of raw counts with tl.{default}{alternatives}",
                       formatter_class=_Help, description=f"Batch-correct an .h5ad of raw counts with "
                       f"tl.{default}{alternatives}. The output keeps every gene; the model's are marked in "
                       f"var[{MODEL_GENE_COLUMN!r}].")
    p.add_argument("input", type=Path, help=".h5ad file with raw counts")
    p.add_argument("--batch-key", required=True, help="obs column of the batches")
    p.add_argument("--label-key", default=None, help="obs column of known cell types (for the summary)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="write the annotated AnnData here, every gene kept (none: not written)")
    p.add_argument("--plots", type=Path, default=None, help="folder for UMAP and loss-curve PNGs (none: no plots)")
    p.add_argument("--save-model", type=Path, default=None, help="save the model here (.npz)")
    p.add_argument("--model", default=default, choices=list(TRAINERS), help=_model_help())
    p.add_argument("--force", action="store_true", help="allow -o to replace the input file")
    p.add_argument("--no-scib", action="store_true",
                   help="summary with the quick metrics only, not scIB's (about a minute of JIT compilation)")
    _add_training_args(p)

    p = sub.add_parser("demo", help="the main job on real cells shipped with the package (CellBench: 3 protocols, "
                                     "3 cell lines; no network needed)", formatter_class=_Help)
    p.add_argument("-o", "--output", dest="out", type=Path, default=Path("demo_out"),
                   help="folder for demo.h5ad, scores.csv and plots/")
    p.add_argument("--out", dest="out", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    p.add_argument("--n-cells", type=_at_least(50), default=None, help="use a random subset (default: all 1,394)")
    _add_training_args(p)
    # a fixed budget that mixes the protocols well in about half a minute; one thread, because
    # this small network gains nothing from more and slows to a crawl when it shares the cores
    p.add_argument("--no-scib", action="store_true",
                   help="skip the scIB scores (about a minute, mostly JIT compilation) even if scib-metrics is installed")
    p.set_defaults(max_epochs=200, threads=1)
    p.description = "Defaults for the demo: --max-epochs 200, --threads 1."

    _add_denoise_parser(sub)
    _add_score_parser(sub)

    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # a bad flag (already reported by argparse, rc 2) or --help (rc 0)
        return exit_.code if isinstance(exit_.code, int) else 2
    import anndata as ad

    import scgen_ae as sa

    try:
        _check_paths(args)
        if args.command == "integrate":
            adata = ad.read_h5ad(args.input)
            _integrate(adata, args, args.output, args.plots)
        elif args.command == "denoise":
            _denoise(ad.read_h5ad(args.input), args)
        elif args.command == "score":
            _score(args)
        elif args.command == "demo":
            _demo(args)
    except (sa.InputError, sa.ModelFileError, sa.TrainingDivergedError, FileNotFoundError, ImportError) as err:
        print(f"scgen-ae: error: {flag_form(str(err))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

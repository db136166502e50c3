"""tl.score_integration (scIB through scib-metrics), pl.scores, pl.report and ``scgen-ae score``
on the real CellBench data."""
from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import scgen_ae as sa
from scgen_ae.cli import main

pytest.importorskip("scib_metrics")

AGGREGATES = ["Bio conservation", "Batch correction", "Total"]


@pytest.fixture(scope="session")
def scored(trained):
    """(copy of the trained cellbench data with scores of X_pca and X_vae, returned table). Do not modify."""
    adata = trained[0].copy()
    table = sa.tl.score_integration(adata, bases=["X_pca", "X_vae"], batch_key="batch", label_key="cell_type")
    return adata, table


def test_scores_in_unit_interval_and_vae_corrects_batches(scored):
    adata, table = scored
    assert list(table.index) == ["X_pca", "X_vae"]
    assert list(table.columns[-3:]) == AGGREGATES
    for col in ["Isolated labels", "KMeans NMI", "KMeans ARI", "Silhouette label", "cLISI", "iLISI", "KBET",
                "Graph connectivity", "PCR comparison", *AGGREGATES]:
        assert col in table.columns
        values = table[col].to_numpy()
        assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 1)), (col, values)
    # the conditional VAE removes the protocol effect that the uncorrected PCA keeps
    assert table.loc["X_vae", "Batch correction"] > table.loc["X_pca", "Batch correction"] + 0.1
    assert table.loc["X_vae", "iLISI"] > table.loc["X_pca", "iLISI"]
    # scIB's aggregation, unscaled
    np.testing.assert_allclose(table["Total"], 0.6 * table["Bio conservation"] + 0.4 * table["Batch correction"],
                               rtol=1e-6)


def test_results_stored_in_uns_and_rebuilt_by_pl(scored):
    adata, table = scored
    u = adata.uns["integration_scores"]
    assert u["params"]["bases"] == ["X_pca", "X_vae"] and u["params"]["label_key"] == "cell_type"
    assert u["note"] == "" and u["seconds"] > 0
    pd.testing.assert_frame_equal(sa.pl.scores_table(adata), table, check_names=False)
    # the PCA it computed for PCR comparison was not written to the caller's object
    assert "X_pca" not in adata.obsm


def test_without_labels_batch_metrics_only(trained):
    adata = _both_batches(trained[0], 100)  # 200 cells: small, still > 90 neighbours
    table = sa.tl.score_integration(adata, bases="X_vae", batch_key="batch")
    row = table.loc["X_vae"]
    assert np.isnan(row["Bio conservation"]) and row["Total"] == row["Batch correction"]
    assert "Graph connectivity" not in table.columns and "KMeans NMI" not in table.columns
    assert "batch-correction metrics only" in table.attrs["note"]
    assert adata.uns["integration_scores"]["note"] == table.attrs["note"]


def test_metrics_subset_equals_the_full_calls_columns(scored):
    adata, table = scored
    wanted = ["iLISI", "KMeans ARI", "Silhouette label"]
    part = sa.tl.score_integration(adata.copy(), bases=["X_pca", "X_vae"], batch_key="batch", label_key="cell_type",
                                   metrics=wanted)
    assert list(part.columns) == wanted  # no aggregates: an average of three metrics is not scIB's score
    # the same implementation on the same neighbours; float32 rounding apart (jax kernels run again,
    # a few ulp: 1e-6 relative failed once at 1.04e-6 on iLISI)
    np.testing.assert_allclose(part.to_numpy(), table[wanted].to_numpy(), rtol=1e-5)


def test_quick_metrics_are_not_named_like_scibs(scored):
    """sa.metrics' inverse Simpson index (30 neighbours, equal weights, mean) is another number
    than scIB's iLISI (90 neighbours, perplexity weights, median): it has its own name."""
    adata, table = scored
    quick = sa.metrics.summary(adata, "X_vae", batch_key="batch", label_key="cell_type")
    assert not {"ilisi", "iLISI"} & set(quick.columns) and "batch_simpson" in quick.columns
    assert not np.isclose(quick.loc["X_vae", "batch_simpson"], table.loc["X_vae", "iLISI"], rtol=0.05)
    with pytest.warns(FutureWarning, match="now sa.metrics.batch_simpson"):
        old = sa.metrics.ilisi(adata.obsm["X_vae"], adata.obs["batch"])
    assert old == quick.loc["X_vae", "batch_simpson"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(bases="X_vae", metrics=["iLISI", "LISI"]), "unknown ['LISI']; choose from"),
    (dict(bases="X_vae", metrics=[]), "metrics=[]: empty"),
    (dict(bases="X_vae", metrics=["KMeans ARI"]), "metrics ['KMeans ARI'] compare cell-type labels; pass label_key="),
    (dict(bases=["X_nope"]), "bases ['X_nope'] are not in adata.obsm"),
    (dict(bases=[]), "bases is empty"),
    (dict(bases=["X_vae", "X_vae"]), "bases contains duplicates"),
    (dict(bases="X_vae", batch_key="batch_typo"), "batch_key='batch_typo' is not a column of adata.obs"),
    (dict(bases="X_vae", label_key="label_typo"), "label_key='label_typo' is not a column of adata.obs"),
    (dict(bases="X_vae", neighbors="annoy"), "neighbors='annoy'"),
])
def test_bad_arguments_refused_adata_unchanged(trained, snapshot, kwargs, message):
    adata = trained[0].copy()
    snap = snapshot(adata)
    with pytest.raises(sa.InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sa.tl.score_integration(adata, **{"batch_key": "batch", **kwargs})
    snap.assert_unchanged(adata)


def _both_batches(adata, per_batch: int):
    """The first ``per_batch`` cells of each batch (the file is sorted by batch)."""
    keep = np.concatenate([np.flatnonzero(adata.obs["batch"].to_numpy() == b)[:per_batch]
                           for b in adata.obs["batch"].unique()])
    return adata[keep].copy()


def _broken(adata, what):
    if what == "single batch":
        adata.obs["batch"] = "one"
    elif what == "missing labels":
        adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
        adata.obs.iloc[:5, adata.obs.columns.get_loc("cell_type")] = np.nan
    elif what == "nan embedding":
        adata.obsm["X_vae"][3, 0] = np.nan
    return adata


@pytest.mark.parametrize("what, message", [
    ("single batch", "has a single batch"),
    ("missing labels", "obs\\['cell_type'\\] has 5 missing values"),
    ("nan embedding", "obsm\\['X_vae'\\] contains NaN"),
    ("too few cells", "need more than 90 cells"),
])
def test_bad_data_refused_adata_unchanged(trained, snapshot, what, message):
    adata = _both_batches(trained[0], 30) if what == "too few cells" else _broken(trained[0].copy(), what)
    snap = snapshot(adata)
    with pytest.raises(sa.InputError, match=message):
        sa.tl.score_integration(adata, bases="X_vae", batch_key="batch", label_key="cell_type")
    snap.assert_unchanged(adata)


def test_missing_scib_metrics_says_how_to_install(trained, snapshot, monkeypatch):
    adata = trained[0].copy()
    snap = snapshot(adata)
    monkeypatch.setitem(sys.modules, "scib_metrics.benchmark", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "scgen-ae\[metrics\]"'):
        sa.tl.score_integration(adata, bases="X_vae", batch_key="batch", label_key="cell_type")
    snap.assert_unchanged(adata)


def test_pl_scores_figure(scored, tmp_path):
    adata, table = scored
    fig = sa.pl.scores(adata, return_fig=True, save=tmp_path / "scores.png")
    assert isinstance(fig, Figure) and (tmp_path / "scores.png").stat().st_size > 0
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(table.sort_values("Total", ascending=False).index)
    assert len(ax.get_xticklabels()) == table.shape[1]
    fig = sa.pl.scores(adata, return_fig=True, metrics=False)
    assert len(fig.axes[0].get_xticklabels()) == 3


def test_pl_report_one_figure(scored, tmp_path):
    adata = scored[0].copy()
    fig = sa.pl.report(adata, return_fig=True, key="vae", color=["batch", "cell_type"], save=tmp_path / "report.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert "Training curves (vae)" in titles and "batch\nVAE latent space (UMAP)" in titles \
        and "cell type\nVAE latent space (UMAP)" in titles
    assert "Integration scores (scIB)" in titles
    table_ax = fig.axes[titles.index("Integration scores (scIB)")]
    assert "▶ X_vae" in [t.get_text() for t in table_ax.get_yticklabels()]
    assert (tmp_path / "report.png").stat().st_size > 0


def test_pl_report_and_scores_errors(trained_sim, snapshot):
    adata = trained_sim[0].copy()
    with pytest.raises(sa.InputError, match="run sa.tl.score_integration"):
        sa.pl.scores(adata)
    with pytest.raises(sa.InputError, match="has no training history"):
        sa.pl.report(adata, key="lda")
    with pytest.raises(sa.InputError, match="basis='X_nope' is not in adata.obsm"):
        sa.pl.report(adata, basis="X_nope")


def test_cli_score(scored, tmp_path, capsys):
    adata = scored[0].copy()
    del adata.uns["integration_scores"]
    src, out, csv, png = (tmp_path / n for n in ("in.h5ad", "out.h5ad", "scores.csv", "scores.png"))
    adata.write_h5ad(src)
    rc = main(["score", str(src), "--bases", "X_vae", "--batch-key", "batch", "--label-key", "cell_type",
               "-o", str(out), "--csv", str(csv), "--plot", str(png)])
    assert rc == 0
    assert "Total" in capsys.readouterr().out
    table = pd.read_csv(csv, index_col=0)
    assert list(table.index) == ["X_vae"]
    np.testing.assert_allclose(table.loc["X_vae", "Batch correction"],
                               scored[1].loc["X_vae", "Batch correction"], atol=1e-3)
    assert "integration_scores" in ad.read_h5ad(out).uns and png.stat().st_size > 0
    assert main(["score", str(src), "--bases", "X_vae", "--batch-key", "batch_typo"]) == 2
    assert "--batch-key batch_typo is not a column" in capsys.readouterr().err  # in flag form

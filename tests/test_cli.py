"""The ``scgen-ae`` command line: the main job end to end on real data and on the demo."""
from __future__ import annotations

import anndata as ad
import numpy as np

import scgen_ae as sa
from scgen_ae.cli import main

from .conftest import load_shared


def test_integrate_on_real_file(cellbench_raw, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    cellbench_raw.write_h5ad(src)
    out, plots, model_path = tmp_path / "out.h5ad", tmp_path / "plots", tmp_path / "model.npz"
    rc = main(["integrate", str(src), "--batch-key", "batch", "--label-key", "cell_type", "-o", str(out),
               "--plots", str(plots), "--save-model", str(model_path), "--n-top-genes", "500",
               "--max-epochs", "5", "--threads", "1", "--quiet", "--no-scib"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "integration summary" in printed and "X_vae" in printed and "not scIB's (--no-scib)" in printed
    result = ad.read_h5ad(out)
    # every gene is kept; the model's 500 are marked
    assert result.n_vars == cellbench_raw.n_vars and result.obsm["X_vae"].shape == (result.n_obs, 10)
    assert result.var["scgen_ae_model_gene"].sum() == 500
    assert "vae" in result.uns and "integration_summary" in result.uns
    assert {p.name for p in plots.iterdir()} == {"vae_umap.png", "uncorrected_umap.png", "vae_history.png"}
    model = sa.VAE.load(model_path, adata=result)
    np.testing.assert_allclose(model.get_latent(result), result.obsm["X_vae"], rtol=1e-5, atol=1e-5)


def test_integrate_bad_batch_key_exits_2(cellbench_raw, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    cellbench_raw[:60, :300].copy().write_h5ad(src)
    assert main(["integrate", str(src), "--batch-key", "protocol_typo", "--quiet", "--n-top-genes", "0"]) == 2
    assert "--batch-key protocol_typo is not a column" in capsys.readouterr().err  # the flag, not Python


def test_a_trainer_added_to_trainers_is_a_model_choice(cellbench_raw, tmp_path, monkeypatch, capsys):
    """--model's choices and help, and which plots a run draws, follow cli.TRAINERS: a model
    family joins the command line with one entry there."""
    from scgen_ae import cli

    def toy(adata, args):
        """toy factors; --n-latent of them"""
        model = sa.tl.nmf(adata, n_components=args.n_latent, max_iter=5, n_threads=1, progress=False,
                          key_added="X_toy", varm_key="toy_loadings", uns_key="toy")
        return model, "X_toy"

    monkeypatch.setitem(cli.TRAINERS, "toy", toy)
    assert main(["integrate", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "--model {vae,nmf,lda,toy}" in shown and "lda (--n-latent topics) or toy (toy factors; --n-latent of " \
        "them)" in shown and "(or --model nmf / lda / toy)" in shown
    src, plots = tmp_path / "in.h5ad", tmp_path / "plots"
    cellbench_raw[::7].copy().write_h5ad(src)
    assert main(["integrate", str(src), "--model", "toy", "--batch-key", "batch", "--n-latent", "3",
                 "--n-top-genes", "0", "--plots", str(plots), "--threads", "1", "--quiet", "--no-scib"]) == 0
    assert "training tl.toy" in capsys.readouterr().out
    # gene loadings recorded (uns["toy"]["varm_key"]): their top genes are drawn too, as for nmf and lda
    assert {p.name for p in plots.iterdir()} == {"toy_umap.png", "uncorrected_umap.png", "toy_history.png",
                                                 "toy_topics.png"}


def test_demo_runs_on_the_builtin_real_cells(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--n-cells", "300", "--max-epochs", "5", "--quiet",
                 "--no-scib"]) == 0
    printed = capsys.readouterr().out
    assert "CellBench" in printed and "integration summary" in printed and "skipped (--no-scib)" in printed
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"vae_umap.png", "uncorrected_umap.png",
                                                                "vae_history.png"}
    result = ad.read_h5ad(tmp_path / "demo.h5ad")
    assert result.n_obs == 300 and result.n_vars == 799  # a subset of the real cells, every gene
    assert set(result.obs["batch"]) == {"10x", "CEL-seq2", "Drop-seq"}
    assert set(result.obs["cell_type"]) == {"H1975", "H2228", "HCC827"}
    # real cells: those of the shared file the built-in dataset was copied from
    assert set(result.obs_names) <= set(load_shared("cellbench_3cl_3protocols_800genes").obs_names)
    assert result.obsm["X_vae"].shape == (300, 10) and "integration_summary" in result.uns


def test_demo_scores_with_scib_when_installed(tmp_path, capsys, monkeypatch):
    """With scib-metrics, the demo calls tl.score_integration and writes its table and figure
    (the scoring itself is tested in test_score.py; here it is replaced to keep the test short)."""
    import sys
    import types

    import pandas as pd

    calls, summary_calls = {}, {}

    def fake_scores(adata, **kwargs):
        if kwargs.get("metrics"):  # the summary's scIB columns
            summary_calls.update(kwargs)
            return pd.DataFrame({m: [0.1, 0.2] for m in kwargs["metrics"]}, index=kwargs["bases"])
        calls.update(kwargs)
        table = pd.DataFrame({"Total": [0.6, 0.8]}, index=kwargs["bases"])
        adata.uns["integration_scores"] = {"values": table.to_numpy(), "index": table.index.to_numpy(),
                                           "columns": table.columns.to_numpy()}
        return table

    monkeypatch.setitem(sys.modules, "scib_metrics", types.ModuleType("scib_metrics"))
    monkeypatch.setattr(sa.tl, "score_integration", fake_scores)
    monkeypatch.setattr(sa.pl, "scores", lambda adata, save: open(save, "wb").close())
    assert main(["demo", "--out", str(tmp_path), "--n-cells", "200", "--max-epochs", "2", "--quiet"]) == 0
    assert calls["bases"] == ["X_pca_uncorrected", "X_vae"] and calls["label_key"] == "cell_type"
    assert summary_calls["metrics"] == ["iLISI", "KMeans ARI", "Silhouette label"]
    assert (tmp_path / "scores.csv").exists() and (tmp_path / "plots" / "scores.png").exists()
    result = ad.read_h5ad(tmp_path / "demo.h5ad")
    assert "integration_scores" in result.uns
    summary = result.uns["integration_summary"]
    assert {"batch_entropy", "iLISI", "KMeans ARI", "Silhouette label"} <= set(summary)
    assert not {"batch_simpson", "ari", "label_silhouette"} & set(summary)  # one value per metric


def test_cli_summary_uses_score_integrations_metrics(tmp_path):
    """The demo's summary and its scIB table (sa.tl.score_integration, what `scgen-ae score`
    runs) give the same iLISI, KMeans ARI and label silhouette for the same embeddings."""
    import pytest

    pytest.importorskip("scib_metrics", reason="scib-metrics (the [metrics] extra) computes scIB's iLISI")
    assert main(["demo", "--out", str(tmp_path), "--n-cells", "200", "--max-epochs", "2", "--quiet"]) == 0
    result = ad.read_h5ad(tmp_path / "demo.h5ad")
    summary, scores = result.uns["integration_summary"], result.uns["integration_scores"]
    assert "scib-metrics via sa.tl.score_integration" in summary["source"]
    columns = list(scores["columns"])
    assert list(summary["basis"]) == list(scores["index"])
    for metric in ("iLISI", "KMeans ARI", "Silhouette label"):
        # one implementation run twice (neighbour search and float32 jax kernels each time): iLISI
        # came out 1 float32 ulp apart in one run; sa.metrics' batch_simpson, another definition, is off
        np.testing.assert_allclose(summary[metric], scores["values"][:, columns.index(metric)], rtol=1e-6,
                                   err_msg=metric)
    quick = sa.metrics.batch_simpson(result.obsm["X_vae"], result.obs["batch"])
    assert not np.isclose(quick, summary["iLISI"][1], rtol=0.05), (quick, summary["iLISI"])


def test_demo_without_scib_says_so(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scib_metrics", None)  # import scib_metrics raises ImportError
    assert main(["demo", "--out", str(tmp_path), "--n-cells", "200", "--max-epochs", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "scib-metrics is not installed" in printed and "not scIB's; pip install" in printed
    assert not (tmp_path / "scores.csv").exists()

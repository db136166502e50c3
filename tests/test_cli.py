"""The ``scgen-ae`` command line: the main job end to end on real data and on the demo."""
from __future__ import annotations

import anndata as ad
import numpy as np

import scgen_ae as sa
from scgen_ae.cli import main


def test_integrate_on_real_file(cellbench_raw, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    cellbench_raw.write_h5ad(src)
    out, plots, model_path = tmp_path / "out.h5ad", tmp_path / "plots", tmp_path / "model.npz"
    rc = main(["integrate", str(src), "--batch-key", "batch", "--label-key", "cell_type", "-o", str(out),
               "--plots", str(plots), "--save-model", str(model_path), "--n-top-genes", "500",
               "--max-epochs", "5", "--threads", "1", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "integration summary" in printed and "X_vae" in printed
    result = ad.read_h5ad(out)
    assert result.n_vars == 500 and result.obsm["X_vae"].shape == (result.n_obs, 10)
    assert "vae" in result.uns and "integration_summary" in result.uns
    assert {p.name for p in plots.iterdir()} == {"vae_umap.png", "uncorrected_umap.png", "vae_history.png"}
    model = sa.VAE.load(model_path, adata=result)
    np.testing.assert_allclose(model.get_latent(result), result.obsm["X_vae"], rtol=1e-5, atol=1e-5)


def test_integrate_bad_batch_key_exits_2(cellbench_raw, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    cellbench_raw[:60, :300].copy().write_h5ad(src)
    assert main(["integrate", str(src), "--batch-key", "protocol_typo", "--quiet", "--n-top-genes", "0"]) == 2
    assert "batch_key='protocol_typo' is not a column" in capsys.readouterr().err


def test_demo_runs_on_builtin_data(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--n-cells", "300", "--max-epochs", "5", "--quiet"]) == 0
    assert (tmp_path / "demo.h5ad").exists() and (tmp_path / "plots" / "vae_umap.png").exists()

"""DataSpec: what a trained model reads from an AnnData, learnt once and applied to new cells."""
from __future__ import annotations

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae.io import read_model_file
from scgen_ae.spec import DataSpec

from .conftest import FAST


def test_the_model_records_its_spec_and_the_file_carries_it(trained_sim, tmp_path):
    adata, model = trained_sim
    spec = model.spec
    assert spec.var_names == tuple(map(str, adata.var_names)) and spec.batch_key == "batch"
    assert spec.batch_categories == tuple(adata.obs["batch"].cat.categories) and spec.input_kind == "counts"
    assert model.var_names == list(spec.var_names)  # the model's fields are the spec's
    header, _ = read_model_file(model.save(tmp_path / "m"))
    assert {k: header[k] for k in spec.to_header()} == spec.to_header()
    assert sa.VAE.load(tmp_path / "m").spec == spec


def test_the_spec_aligns_genes_by_name_and_codes_batches_with_the_training_categories(trained_sim):
    adata, model = trained_sim
    cells = model.spec.cells(adata)
    shuffled = adata[:, np.random.default_rng(0).permutation(adata.n_vars)].copy()
    again = model.spec.cells(shuffled)
    assert (cells.X != again.X).nnz == 0 and np.array_equal(cells.batch, again.batch)
    one_batch = adata[adata.obs["batch"] == adata.obs["batch"].cat.categories[1]].copy()
    assert set(model.spec.cells(one_batch).batch) == {1}  # the model's code, not relearnt from the subset
    missing = adata[:, 1:].copy()
    with pytest.raises(sa.InputError, match="pad_missing"):
        model.spec.cells(missing)
    padded = model.spec.cells(missing, pad_missing=True)
    assert padded.X.shape == cells.X.shape and padded.X[:, 0].nnz == 0
    renamed = adata.copy()
    renamed.obs["batch"] = renamed.obs["batch"].astype(str) + "_new"
    with pytest.raises(sa.InputError, match="not trained on"):
        model.spec.cells(renamed)


def test_the_input_kind_follows_the_likelihood(sim):
    import scanpy as sc

    sc.pp.normalize_total(sim)
    sc.pp.log1p(sim)
    model = sa.tl.vae(sim, batch_key="batch", likelihood="gaussian", n_latent=2, n_hidden=16, max_epochs=1, **FAST)
    assert model.spec.input_kind == "real"
    assert model.spec.cells(sim).log1p_input is False  # log-normalised values are read as they are
    with pytest.raises(ValueError, match="input_kind"):
        DataSpec(("g",), input_kind="logcounts")

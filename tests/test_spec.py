"""DataSpec: what a trained model reads from an AnnData, learnt once and applied to new cells."""
from __future__ import annotations

import dataclasses

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


def test_learn_gives_the_spec_a_model_records_and_the_cells_that_spec_reads(trained_sim, tmp_path):
    adata, model = trained_sim
    spec, cells = DataSpec.learn(adata, batch_key="batch")
    assert spec == model.spec
    applied = spec.cells(adata)
    assert (cells.X != applied.X).nnz == 0 and np.array_equal(cells.batch, applied.batch)
    assert np.array_equal(cells.library, applied.library) and cells.log1p_input and applied.log1p_input
    adata.write_h5ad(tmp_path / "a.h5ad")  # X on disk: the same spec, the same codes and library sizes
    disk_spec, disk = DataSpec.learn(sa.read_backed(tmp_path / "a.h5ad"), batch_key="batch")
    assert isinstance(disk, sa.ondisk.OnDiskCellData) and disk_spec == spec
    assert np.array_equal(disk.batch, cells.batch) and np.array_equal(disk.library, cells.library)
    real, real_cells = DataSpec.learn(adata, batch_key="batch", input_kind="real")
    assert real.input_kind == "real" and real_cells.log1p_input is False
    halved = adata.copy()
    halved.X = halved.X * 0.5  # odd counts become halves
    with pytest.raises(sa.InputError, match="non-integer values .* models raw counts"):
        DataSpec.learn(halved, needs="this test", batch_key="batch")


def test_the_input_kind_follows_the_likelihood(sim):
    import scanpy as sc

    sc.pp.normalize_total(sim)
    sc.pp.log1p(sim)
    model = sa.tl.vae(sim, batch_key="batch", likelihood="gaussian", n_latent=2, n_hidden=16, max_epochs=1, **FAST)
    assert model.spec.input_kind == "real"
    assert model.spec.cells(sim).log1p_input is False  # log-normalised values are read as they are
    nmf = sa.tl.nmf(sim, n_components=2, transform="none", max_iter=2)  # NMF: by its transform
    assert nmf.spec.input_kind == "real"
    assert sa.NMF.input_kind_of(dataclasses.replace(nmf.config, transform="log1p")) == "counts"
    with pytest.raises(ValueError, match="input_kind"):
        DataSpec(("g",), input_kind="logcounts")

"""tl.vae on an AnnData opened with ``anndata.read_h5ad(path, backed="r")``: X, CSR or dense
on disk, is checked and trained on in bounded reads, never loaded whole, and the file is
never written. On the real 3-protocol CellBench file (1,394 cells x 799 genes)."""
from __future__ import annotations

import hashlib

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from anndata._core.sparse_dataset import BaseCompressedSparseDataset

import scgen_ae as sa
from scgen_ae import ondisk

from .conftest import FAST, assert_same_latent

pytestmark = pytest.mark.filterwarnings("ignore::scgen_ae.tl.CompositionWarning")

SMALL = dict(batch_key="batch", n_latent=4, n_hidden=32, kl_warmup_epochs=1, early_stopping=False, **FAST)
WINDOW = 64  # cells per window (and per read) under the `spy` fixture


@pytest.fixture(scope="module")
def written(cellbench_3protocols, tmp_path_factory):
    """(the in-memory AnnData with a "counts" layer, {"csr": path, "dense": path} of it)."""
    adata = cellbench_3protocols.copy()
    adata.layers["counts"] = adata.X.copy()
    folder = tmp_path_factory.mktemp("backed")
    paths = {"csr": folder / "csr.h5ad", "dense": folder / "dense.h5ad"}
    adata.write_h5ad(paths["csr"])
    dense = adata.copy()
    dense.X = adata.X.toarray()
    dense.write_h5ad(paths["dense"])
    return adata, paths


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keys(adata):
    return set(adata.obsm), set(adata.uns)


@pytest.fixture
def spy(monkeypatch):
    """Small chunks, windows and scan blocks; records the rows of every read of the on-disk
    source and of every 2-D read of an h5py dataset; anndata's own reads of a backed sparse
    X (``X[:]``, ``to_memory``) fail."""
    reads = {"span": [], "h5py": []}
    init, span, getitem = ondisk.OnDiskCellData.__init__, ondisk.OnDiskCellData.read_span, h5py.Dataset.__getitem__
    monkeypatch.setattr(ondisk.OnDiskCellData, "__init__",
                        lambda self, *a, **kw: init(self, *a, **{**kw, "chunk_cells": 16, "window_chunks": 4}))
    monkeypatch.setattr(ondisk, "SCAN_CELLS", WINDOW)
    monkeypatch.setattr(ondisk, "DENSE_READ_VALUES", 32 * 799)  # 32 dense rows per read
    monkeypatch.setattr(ondisk.OnDiskCellData, "read_span",
                        lambda self, a, b, **kw: reads["span"].append(b - a) or span(self, a, b, **kw))

    def h5py_read(self, *args, **kw):
        out = getitem(self, *args, **kw)
        if np.ndim(out) == 2:
            reads["h5py"].append(out.shape[0])
        return out

    def refuse_x(method):  # layers are read whole when the file is opened: that is anndata's backed mode
        def read(self, *args, **kw):
            assert self.group.name != "/X", "the backed X was read whole"
            return method(self, *args, **kw)
        return read

    monkeypatch.setattr(h5py.Dataset, "__getitem__", h5py_read)
    for name in ("__getitem__", "to_memory"):
        monkeypatch.setattr(BaseCompressedSparseDataset, name, refuse_x(getattr(BaseCompressedSparseDataset, name)))
    return reads


@pytest.mark.parametrize("fmt", ["csr", "dense"])
def test_backed_x_streams_in_bounded_reads_and_the_file_is_unchanged(written, spy, fmt):
    adata, paths = written
    before = _digest(paths[fmt])
    backed = ad.read_h5ad(paths[fmt], backed="r")
    model = sa.tl.vae(backed, max_epochs=2, **SMALL)  # with the default validation split
    assert backed.obsm["X_vae"].shape == (backed.n_obs, 4) and np.isfinite(backed.obsm["X_vae"]).all()
    assert backed.isbacked and ondisk.is_on_disk(backed)
    # the validation cells, spread over the whole file, are read a window at a time too
    assert max(spy["span"]) <= WINDOW < backed.n_obs and sum(spy["span"]) >= backed.n_obs
    assert max(spy["h5py"], default=0) <= (32 if fmt == "dense" else 0)
    assert_same_latent(model.get_latent(backed), model.get_latent(adata))
    backed.file.close()
    assert _digest(paths[fmt]) == before


def test_backed_training_matches_in_memory(written):
    adata, paths = written
    runs = {fmt: sa.tl.vae(ad.read_h5ad(paths[fmt], backed="r"), max_epochs=4, **SMALL) for fmt in paths}
    memory = sa.tl.vae(adata.copy(), max_epochs=4, **SMALL)
    # CSR and dense on disk give the same cells in the same order: the same model
    for a, b in zip(runs["csr"].module.state_dict().values(), runs["dense"].module.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())
    # in memory, only the shuffling differs (cells, not chunks): the same validation cells, close losses
    disk, mem = runs["csr"].history["validation_loss"], memory.history["validation_loss"]
    assert disk[-1] < disk[0] and abs(disk[-1] - mem[-1]) < 0.03 * mem[-1]


def test_layer_of_a_backed_adata_trains_from_memory_as_in_memory(written, spy):
    adata, paths = written
    backed = ad.read_h5ad(paths["csr"], backed="r")
    model = sa.tl.vae(backed, layer="counts", max_epochs=2, **SMALL)
    reference = sa.tl.vae(adata.copy(), layer="counts", max_epochs=2, **SMALL)
    assert spy["span"] == []  # the on-disk X was not touched
    assert_same_latent(backed.obsm["X_vae"], model.get_latent(adata, layer="counts"))
    assert_same_latent(model.get_latent(adata, layer="counts"), reference.get_latent(adata, layer="counts"))


def test_copy_of_a_backed_adata_refused_before_training(written, monkeypatch):
    backed = ad.read_h5ad(written[1]["csr"], backed="r")
    monkeypatch.setattr("scgen_ae.tl._vae.fit", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(sa.InputError, match="copy=True needs an in-memory AnnData.*copy=False"):
        sa.tl.vae(backed, copy=True, max_epochs=1, **SMALL)


@pytest.mark.parametrize("front, kwargs", [
    (sa.tl.denoise, dict(batch_key="batch", max_epochs=1)),
    (sa.tl.nmf, dict(n_components=3, batch_key="batch", max_iter=2)),
    (sa.tl.lda, dict(n_topics=3, batch_key="batch", max_epochs=1)),
    (sa.tl.batch_composition, dict(batch_key="batch")),
    (sa.tl.transfer_labels, dict(label_key="cell_type")),
], ids=lambda x: getattr(x, "__name__", ""))
def test_every_front_refuses_copy_of_a_backed_adata_before_any_work(written, front, kwargs):
    if front is sa.tl.transfer_labels:
        kwargs = {**kwargs, "reference": written[0]}
    path = written[1]["csr"]
    before = _digest(path)
    backed = ad.read_h5ad(path, backed="r")
    keys = _keys(backed)
    with pytest.raises(sa.InputError, match="copy=True needs an in-memory AnnData"):
        front(backed, copy=True, **kwargs)
    assert _keys(backed) == keys
    backed.file.close()
    assert _digest(path) == before


@pytest.mark.parametrize("fmt", ["csr", "dense"])
@pytest.mark.parametrize("value, message", [(2.5, "non-integer values"), (np.nan, "NaN/Inf")],
                         ids=["fraction", "nan"])
def test_bad_values_in_a_backed_x_refused_and_the_file_unchanged(written, tmp_path, spy, fmt, value, message):
    bad = written[0][::7].copy()  # 200 cells of all three batches
    X = bad.X.toarray()
    X[150, np.flatnonzero(X[150])[0]] = value  # past the first 64-cell scan block
    bad.X = X if fmt == "dense" else sp.csr_matrix(X)
    bad.write_h5ad(tmp_path / "bad.h5ad")
    before = _digest(tmp_path / "bad.h5ad")
    backed = ad.read_h5ad(tmp_path / "bad.h5ad", backed="r")
    keys = _keys(backed)
    with pytest.raises(sa.InputError, match=rf"In cells 128-191 of the on-disk matrix: .*{message}"):
        sa.tl.vae(backed, max_epochs=1, **SMALL)
    assert _keys(backed) == keys and ondisk.is_on_disk(backed) and max(spy["span"]) <= WINDOW
    backed.file.close()
    assert _digest(tmp_path / "bad.h5ad") == before


def test_applying_a_model_to_some_backed_cells_keeps_their_order(written, spy):
    """BaseModel._apply over cells in any order, read from disk a window at a time, gives what
    it gives in memory, row for row (here: decoding latents, as tl.predict does)."""
    adata, paths = written
    model = sa.tl.vae(adata.copy(), max_epochs=1, **SMALL)
    rows = np.random.default_rng(0).permutation(adata.n_obs)[:300]
    z = np.random.default_rng(1).normal(size=(len(rows), 4)).astype(np.float32)
    backed = ad.read_h5ad(paths["csr"], backed="r")
    on_disk, memory = (model._decode_latent(model._cell_data(a), z, rows, batch_size=50) for a in (backed, adata))
    assert ondisk.is_on_disk(backed) and on_disk.shape == (300, adata.n_vars)
    np.testing.assert_allclose(on_disk, memory, rtol=1e-5, atol=1e-6)
    backed.file.close()

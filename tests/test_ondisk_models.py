"""Issue 8: tl.lda (prodlda) and tl.nmf (online, batch_size=) trained straight from a backed
.h5ad, on a real file (every 2nd cell of the 3-protocol CellBench data: 697 cells x 799 genes,
three batches), compared with the same call on the same cells in memory."""
from __future__ import annotations

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae import ondisk
from scgen_ae.data import CellData, iter_row_blocks

from .conftest import FAST

LDA = dict(n_topics=5, batch_key="batch", max_epochs=2, **FAST)
NMF = dict(n_components=5, max_iter=15, n_threads=1)


@pytest.fixture(scope="module")
def cells(cellbench_3protocols, tmp_path_factory):
    """(in-memory AnnData, path of the same cells as .h5ad)."""
    adata = cellbench_3protocols[::2].copy()
    sa.pp.drop_empty(adata)
    path = tmp_path_factory.mktemp("ondisk_models") / "cb.h5ad"
    adata.write_h5ad(path)
    return adata, path


def _outputs(adata, obsm: str, varm: str) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(adata.obsm[obsm]), np.asarray(adata.varm[varm])


def test_row_blocks_on_disk_equal_in_memory(cells):
    adata, path = cells
    disk, _ = sa.tl._common.training_data(sa.read_backed(path), None, None, "poisson")
    mem = CellData(adata.X, np.zeros(adata.n_obs, np.int64), np.zeros(adata.n_obs))
    pairs = list(zip(iter_row_blocks(disk, 100), iter_row_blocks(mem, 100)))
    assert len(pairs) == 7 and pairs[-1][0][1] == adata.n_obs
    for (s, e, a), (s2, e2, b) in pairs:
        assert (s, e) == (s2, e2) and (a != b).nnz == 0


def test_prodlda_from_disk_equals_in_memory_with_the_same_cell_order(cells, monkeypatch):
    """Training from disk only changes the order minibatches visit cells (chunk-level shuffle).
    With the in-memory order (CellData.iterate's rng.permutation) every minibatch, and so every
    weight, is the same: the streamed gene sums, proportions and perplexities must be equal."""
    adata, path = cells
    monkeypatch.setattr(ondisk.OnDiskCellData, "epoch_order",
                        lambda self, idx, rng: np.asarray(idx) if rng is None else rng.permutation(idx))
    backed, memory = sa.read_backed(path), adata.copy()
    sa.tl.lda(backed, **LDA)
    sa.tl.lda(memory, **LDA)
    assert ondisk.is_on_disk(backed)  # X was streamed, never loaded into the AnnData
    for got, want in zip(_outputs(backed, "X_lda", "lda_topics"), _outputs(memory, "X_lda", "lda_topics")):
        np.testing.assert_array_equal(got, want)
    for key in ("perplexity", "train_perplexity"):
        assert backed.uns["lda"][key] == memory.uns["lda"][key]
    np.testing.assert_array_equal(backed.uns["lda"]["history"]["train_loss"], memory.uns["lda"]["history"]["train_loss"])


def test_prodlda_from_disk_with_its_own_shuffle(cells):
    adata, path = cells
    backed = sa.read_backed(path)
    model = sa.tl.lda(backed, **LDA)
    props, topics = _outputs(backed, "X_lda", "lda_topics")
    assert props.shape == (adata.n_obs, 5) and topics.shape == (adata.n_vars, 5)
    np.testing.assert_allclose(props.sum(1), 1.0, rtol=1e-5)
    assert {"perplexity", "train_perplexity", "history", "params"} <= set(backed.uns["lda"])
    assert np.isfinite(backed.uns["lda"]["perplexity"])
    # the trained model applied to the file and to the same cells in memory: the same numbers
    np.testing.assert_array_equal(model.transform(backed), model.transform(adata))
    assert model.perplexity(backed) == pytest.approx(model.perplexity(adata), rel=1e-12)


@pytest.mark.parametrize("options", [dict(batch_key="batch"), dict(), dict(loss="kl", solver="mu", transform="none")],
                         ids=["inmf", "nmf", "kl"])
def test_online_nmf_from_disk_equals_in_memory(cells, options):
    """Same chunks of the same cells, same float operations: equal, not just close."""
    adata, path = cells
    backed, memory = sa.read_backed(path), adata.copy()
    model = sa.tl.nmf(backed, batch_size=128, **NMF, **options)
    sa.tl.nmf(memory, batch_size=128, **NMF, **options)
    assert ondisk.is_on_disk(backed)
    for got, want in zip(_outputs(backed, "X_nmf", "nmf_loadings"), _outputs(memory, "X_nmf", "nmf_loadings")):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(backed.uns["nmf"]["history"]["train_loss"], memory.uns["nmf"]["history"]["train_loss"])
    assert backed.uns["nmf"]["params"]["batch_size"] == 128
    # new cells from disk: the same chunks solved as in memory
    np.testing.assert_array_equal(model.transform(backed), model.transform(adata))


def test_nmf_reads_one_chunk_at_a_time(cells, monkeypatch):
    adata, path = cells
    sizes = []
    read_rows = ondisk.OnDiskCellData.read_rows
    monkeypatch.setattr(ondisk.OnDiskCellData, "read_rows",
                        lambda self, rows, **kw: sizes.append(len(rows)) or read_rows(self, rows, **kw))
    sa.tl.nmf(sa.read_backed(path), batch_size=64, **NMF)
    assert sizes and max(sizes) <= 64


def test_full_batch_nmf_refuses_on_disk_input(cells, snapshot):
    backed = sa.read_backed(cells[1])
    snap = snapshot(backed)
    with pytest.raises(sa.InputError, match="on disk") as err:
        sa.tl.nmf(backed, n_components=5)
    assert "batch_size=" in str(err.value)
    snap.assert_unchanged(backed)  # X still on disk (same type) and reads the same


def test_bad_values_on_disk_refused_by_nmf_with_where(cells, tmp_path, snapshot):
    adata = cells[0].copy()
    adata.X = adata.X.tocsr().copy()
    adata.X.data[7] = -1.0
    adata.write_h5ad(tmp_path / "neg.h5ad")
    backed = sa.read_backed(tmp_path / "neg.h5ad")
    snap = snapshot(backed)
    with pytest.raises(sa.InputError, match="In cells 0-.*negative values"):
        sa.tl.nmf(backed, batch_size=128, **NMF)
    snap.assert_unchanged(backed)


def test_map_query_streams_a_backed_query(cellbench_hvg, tmp_path, monkeypatch):
    import anndata as ad

    ref = cellbench_hvg[cellbench_hvg.obs["batch"] == cellbench_hvg.obs["batch"].cat.categories[0]].copy()
    query = cellbench_hvg[cellbench_hvg.obs["batch"] != cellbench_hvg.obs["batch"].cat.categories[0]].copy()
    model = sa.tl.vae(ref, batch_key="batch", n_latent=4, n_hidden=32, max_epochs=2, **FAST)
    query.write_h5ad(tmp_path / "query.h5ad")
    backed = ad.read_h5ad(tmp_path / "query.h5ad", backed="r")
    streamed = []
    real = ondisk.apply_data
    monkeypatch.setattr(ondisk, "apply_data", lambda *a, **k: streamed.append(1) or real(*a, **k))
    mapped = model.map_query(backed, batch_key="batch", max_epochs=2, **FAST)
    assert streamed, "the backed query was read into memory instead of streamed"
    assert mapped.batch_categories == list(cellbench_hvg.obs["batch"].cat.categories)
    assert backed.obsm["X_vae"].shape == (query.n_obs, 4) and np.isfinite(backed.obsm["X_vae"]).all()
    # the latent of the streamed query equals the in-memory one under the same mapped model
    np.testing.assert_allclose(mapped.get_latent(query), backed.obsm["X_vae"], rtol=1e-5, atol=1e-5)

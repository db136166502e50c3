"""Issue 8, scale: training and inference streamed from a backed .h5ad / a zarr store,
checkpoint and resume, and DDP (2 CPU processes, gloo) through Lightning Fabric.
All on the real 3-protocol CellBench file (1,394 cells x 799 genes, written sorted by batch)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae import ondisk
from scgen_ae.tl._common import training_data

from .conftest import FAST, fit_copy

SMALL = dict(batch_key="batch", n_latent=4, n_hidden=32, kl_warmup_epochs=2, early_stopping=False, **FAST)


@pytest.fixture(scope="session")
def files(cellbench_3protocols, tmp_path_factory):
    """(in-memory AnnData sorted by batch, its .h5ad path, its zarr path)."""
    adata = cellbench_3protocols[np.argsort(cellbench_3protocols.obs["batch"].cat.codes, kind="stable")].copy()
    folder = tmp_path_factory.mktemp("ondisk")
    adata.write_h5ad(folder / "cb.h5ad")
    adata.write_zarr(folder / "cb.zarr")
    return adata, folder / "cb.h5ad", folder / "cb.zarr"


def _same_minibatch(a, b) -> bool:
    """Every field equal; optional fields (labels) may be None in both."""
    def same(x, y):
        return x is None and y is None or (x is not None and y is not None and np.array_equal(x.numpy(), y.numpy()))
    return all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)


def _keys(adata):
    return set(adata.obsm), set(adata.uns), list(adata.obs.columns)


# ---------------------------------------------------------------- the data source

@pytest.mark.parametrize("kind", [1, 2], ids=["h5ad", "zarr"])
def test_on_disk_minibatches_equal_in_memory(files, kind):
    adata, *paths = files
    backed = sa.read_backed(paths[kind - 1])
    assert ondisk.is_on_disk(backed) and not ondisk.is_on_disk(adata)
    disk, cats = training_data(backed, None, "batch", "zinb")
    mem, cats_mem = training_data(adata, None, "batch", "zinb")
    assert isinstance(disk, ondisk.OnDiskCellData) and cats == cats_mem
    np.testing.assert_array_equal(disk.library, mem.library)
    idx = np.random.default_rng(0).choice(adata.n_obs, 300, replace=False)
    assert _same_minibatch(disk.minibatch(idx), mem.minibatch(idx))


def test_on_disk_minibatches_carry_label_codes(files):
    adata, h5, _ = files
    disk, _ = training_data(sa.read_backed(h5), None, "batch", "zinb")
    mem, _ = training_data(adata, None, "batch", "zinb")
    codes = np.random.default_rng(2).integers(-1, 3, adata.n_obs)  # -1: unlabelled
    disk.labels, mem.labels = codes, codes
    idx = np.random.default_rng(3).choice(adata.n_obs, 300, replace=False)
    batch = disk.minibatch(idx)
    assert np.array_equal(batch.label.numpy(), codes[idx])
    assert _same_minibatch(batch, mem.minibatch(idx))
    for mb in disk.iterate(np.arange(adata.n_obs), 128, np.random.default_rng(0)):
        assert mb.label is not None and len(mb.label) == mb.x.shape[0]


def test_chunk_shuffling_covers_every_cell_once_and_mixes_batches(files):
    adata, h5, _ = files
    disk, _ = training_data(sa.read_backed(h5), None, "batch", "zinb")
    disk.chunk_size, disk.window_cells = 64, 256  # several windows on 1,394 cells
    mem, _ = training_data(adata, None, "batch", "zinb")
    idx = np.sort(np.random.default_rng(1).choice(adata.n_obs, 1201, replace=False))
    order = disk.epoch_order(idx, np.random.default_rng(5))
    assert np.array_equal(np.sort(order), idx)  # every cell exactly once
    mbs = list(disk.iterate(idx, 128, np.random.default_rng(5)))
    sizes = [mb.x.shape[0] for mb in mbs]
    assert sizes == [mb.x.shape[0] for mb in mem.iterate(idx, 128, np.random.default_rng(5))]
    pos = np.cumsum([0] + sizes)
    assert all(_same_minibatch(mb, mem.minibatch(order[s:e])) for mb, s, e in zip(mbs, pos[:-1], pos[1:]))
    # the file is sorted by batch; chunk-level shuffling still mixes batches within minibatches
    assert np.mean([len(np.unique(mb.batch.numpy())) > 1 for mb in mbs]) > 0.8


def test_reads_are_bounded_by_the_window_not_the_file(files, monkeypatch):
    _, h5, _ = files
    disk, _ = training_data(sa.read_backed(h5), None, "batch", "zinb")
    disk.chunk_size, disk.window_cells = 32, 128
    spans = []
    original = ondisk.OnDiskCellData.read_span
    monkeypatch.setattr(ondisk.OnDiskCellData, "read_span",
                        lambda self, a, b, **kw: spans.append(b - a) or original(self, a, b, **kw))
    n = sum(mb.x.shape[0] for mb in disk.iterate(np.arange(disk.n_cells), 64, np.random.default_rng(0)))
    assert n == disk.n_cells
    assert max(spans) <= 128 < disk.n_cells


# ---------------------------------------------------------------- tl.vae out of core

@pytest.fixture(scope="session")
def trained_on_disk(files):
    adata, h5, _ = files
    backed = sa.read_backed(h5)
    model = sa.tl.vae(backed, max_epochs=4, **SMALL)
    reference = fit_copy(sa.tl.vae, adata, max_epochs=4, **SMALL)[1]
    return backed, model, reference


def test_tl_vae_trains_from_disk_and_writes_back_without_loading_x(trained_on_disk, files):
    backed, model, reference = trained_on_disk
    assert backed.obsm["X_vae"].shape == (backed.n_obs, 4) and np.isfinite(backed.obsm["X_vae"]).all()
    assert ondisk.is_on_disk(backed)  # X was streamed, never replaced by an in-memory matrix
    hist, ref = model.history, reference.history
    assert hist["validation_loss"][-1] < hist["validation_loss"][0]
    # same data, same model, only the shuffling differs: the losses agree closely
    assert abs(hist["validation_loss"][-1] - ref["validation_loss"][-1]) < 0.03 * ref["validation_loss"][-1]


def test_streamed_inference_equals_in_memory(trained_on_disk, files):
    adata, _, zarr_path = files
    _, model, _ = trained_on_disk
    zarr_backed = sa.read_backed(zarr_path)
    np.testing.assert_array_equal(model.get_latent(zarr_backed), model.get_latent(adata))
    genes = list(adata.var_names[:50])
    np.testing.assert_allclose(
        model.get_normalized_expression(zarr_backed, transform_batch="10x", genes=genes),
        model.get_normalized_expression(adata, transform_batch="10x", genes=genes), rtol=1e-6)


def _bad_file(files, tmp_path, edit):
    adata = files[0][::7].copy()  # 200 cells of all three batches
    X = adata.X.tocsr().copy()
    edit(X)
    adata.X = X
    adata.write_h5ad(tmp_path / "bad.h5ad")
    return sa.read_backed(tmp_path / "bad.h5ad")


@pytest.mark.parametrize("edit, message", [
    (lambda X: X.data.__setitem__(5, 2.5), "non-integer values"),
    (lambda X: X.data.__setitem__(5, -1.0), "negative values"),
    (lambda X: X.data.__setitem__(5, np.nan), "NaN/Inf"),
], ids=["fraction", "negative", "nan"])
def test_bad_values_on_disk_refused_with_where_and_adata_unchanged(files, tmp_path, edit, message):
    backed = _bad_file(files, tmp_path, edit)
    before = _keys(backed)
    with pytest.raises(sa.InputError, match=rf"In cells 0-199 of the on-disk matrix: .*{message}"):
        sa.tl.vae(backed, max_epochs=1, **SMALL)
    assert _keys(backed) == before and ondisk.is_on_disk(backed)


def test_empty_cells_on_disk_refused(files, tmp_path):
    def empty_row(X):
        X.data[X.indptr[3]:X.indptr[4]] = 0
        X.eliminate_zeros()

    backed = _bad_file(files, tmp_path, empty_row)
    before = _keys(backed)
    with pytest.raises(sa.InputError, match=r"has 1 cells and \d+ genes with no counts.*drop_empty"):
        sa.tl.vae(backed, max_epochs=1, **SMALL)
    assert _keys(backed) == before


# ---------------------------------------------------------------- checkpoint and resume

def test_resume_continues_the_run_bit_for_bit(files, tmp_path):
    adata = files[0]
    ckpt = str(tmp_path / "run.npz")
    straight, m_straight = fit_copy(sa.tl.vae, adata, max_epochs=5, **SMALL)
    fit_copy(sa.tl.vae, adata, max_epochs=2, checkpoint_path=ckpt, **SMALL)  # "stopped" after 2 epochs
    resumed, m_resumed = fit_copy(sa.tl.vae, adata, max_epochs=5, checkpoint_path=ckpt, resume=True, **SMALL)
    np.testing.assert_array_equal(resumed.obsm["X_vae"], straight.obsm["X_vae"])
    for key in ("train_loss", "validation_loss", "kl_weight"):
        np.testing.assert_array_equal(m_resumed.history[key], m_straight.history[key])
    assert len(m_resumed.history["train_loss"]) == 5
    # the checkpoint is a safe model file (no pickle, checksum) but not a model
    with pytest.raises(sa.ModelFileError, match="not a VAE"):
        sa.VAE.load(ckpt)


def test_resume_from_another_run_refused(files, tmp_path, snapshot):
    adata = files[0].copy()
    ckpt = str(tmp_path / "run.npz")
    fit_copy(sa.tl.vae, adata, max_epochs=1, checkpoint_path=ckpt, **SMALL)
    snap = snapshot(adata)
    with pytest.raises(ValueError, match=r"belongs to another run \(seed: checkpoint 0, now 3\)"):
        sa.tl.vae(adata, max_epochs=2, checkpoint_path=ckpt, resume=True, **{**SMALL, "seed": 3})
    snap.assert_unchanged(adata)


def test_devices_without_launcher_refused(files, snapshot):
    adata = files[0].copy()
    snap = snapshot(adata)
    if "WORLD_SIZE" in os.environ:
        pytest.skip("running under a distributed launcher")
    with pytest.raises(ValueError, match="torchrun --nproc_per_node=2"):
        sa.tl.vae(adata, max_epochs=1, devices=2, **SMALL)
    snap.assert_unchanged(adata)


# ---------------------------------------------------------------- DDP, 2 CPU processes (gloo)

def test_ddp_two_processes_agree_stop_together_and_checkpoint(files, tmp_path):
    _, h5, _ = files
    ckpt = tmp_path / "ddp.npz"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(Path(sa.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).with_name("ddp_worker.py")), str(h5), str(tmp_path),
           f'checkpoint_path="{ckpt}"', "early_stopping=true", "patience=1", "kl_warmup_epochs=1", "max_epochs=40",
           # no epoch after the first can beat it by 1e9: the stop comes at epoch 2 on every machine
           # (a slowly falling validation loss otherwise need not plateau within 40 epochs)
           "min_delta=1e9"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for key in r0.files:  # same weights, same history, same latent on both ranks
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=key)
    n_epochs = len(r0["train_loss"])
    assert bool(r0["stopped_early"]) and n_epochs == 2  # early stopping worked, on both ranks at once
    assert np.isfinite(r0["latent"]).all() and r0["latent"].shape == (files[0].n_obs, 4)
    # rank 0 wrote the checkpoint; resuming it with another number of processes is refused
    with pytest.raises(ValueError, match=r"world_size: checkpoint 2, now 1"):
        sa.tl.vae(files[0].copy(), checkpoint_path=str(ckpt), resume=True, max_epochs=40, **SMALL)

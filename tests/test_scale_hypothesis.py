"""Property tests of the out-of-core path over small random count matrices written to disk:
the on-disk data source yields exactly the in-memory minibatches of its visiting order,
and tl.vae on a backed file trains or refuses exactly as it does in memory."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from hypothesis import event, given
from hypothesis import strategies as st

import scgen_ae as sa
from scgen_ae.tl._common import training_data

from .test_hypothesis import SETTINGS, _expected_error, count_anndata


def _on_disk(adata, folder: Path, zarr: bool):
    if zarr:
        adata.write_zarr(folder / "x.zarr")
        return sa.read_backed(folder / "x.zarr")
    adata.write_h5ad(folder / "x.h5ad")
    return sa.read_backed(folder / "x.h5ad")


@SETTINGS
@given(data=count_anndata(batch_modes=("two", "none"), empty=False), chunk=st.integers(1, 9),
       window=st.integers(1, 4), batch_size=st.sampled_from([2, 5, 128]), seed=st.integers(0, 99),
       zarr=st.booleans())
def test_on_disk_iterate_is_in_memory_iterate_of_its_order(data, chunk, window, batch_size, seed, zarr):
    adata, batch_key = data
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        disk, _ = training_data(_on_disk(adata, Path(tmp), zarr), None, batch_key, "zinb")
        disk.chunk_size, disk.window_cells = chunk, chunk * window
        mem, _ = training_data(adata, None, batch_key, "zinb")
        idx = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max(1, adata.n_obs - seed % 7), replace=False))
        order = disk.epoch_order(idx, np.random.default_rng(seed))
        assert np.array_equal(np.sort(order), idx)
        mbs = list(disk.iterate(idx, batch_size, np.random.default_rng(seed)))
    sizes = [mb.x.shape[0] for mb in mbs]
    assert sizes == [mb.x.shape[0] for mb in mem.iterate(idx, batch_size, np.random.default_rng(seed))]
    pos = np.cumsum([0] + sizes)
    for mb, s, e in zip(mbs, pos[:-1], pos[1:]):
        ref = mem.minibatch(order[s:e])
        for f in ref.__dataclass_fields__:
            got, want = getattr(mb, f), getattr(ref, f)
            if want is None:  # an optional field (labels) not set
                assert got is None, f
                continue
            assert np.array_equal(got.numpy(), want.numpy()), f


@SETTINGS
@given(data=count_anndata(), zarr=st.booleans())
def test_tl_vae_on_disk_trains_or_refuses_like_in_memory(data, zarr):
    adata, batch_key = data
    adata.X = sp.csr_matrix(adata.X)  # stored as CSR (any dtype): streamed, not read into memory
    expected = _expected_error(adata, batch_key)
    with tempfile.TemporaryDirectory() as tmp:
        backed = _on_disk(adata, Path(tmp), zarr)
        keys = (set(backed.obsm), set(backed.uns))
        try:
            sa.tl.vae(backed, batch_key=batch_key, n_latent=3, n_hidden=16, max_epochs=2, n_threads=1, progress=False)
        except sa.InputError as err:
            event("refused")
            assert expected is not None, f"valid input refused on disk: {err}"
            assert (set(backed.obsm), set(backed.uns)) == keys
            return
    event("trained")
    assert expected is None, f"invalid input accepted on disk (validators say: {expected})"
    z = backed.obsm["X_vae"]
    assert z.shape == (adata.n_obs, 3) and np.isfinite(z).all()

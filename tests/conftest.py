"""Shared fixtures for the scgen_ae test suite.

Real data is looked up with ``sa.datasets.find`` (``../shared/data`` relative to the
working directory, ``$SCGEN_AE_DATA``, ...); tests that need a file that is absent are
skipped with the reason. Expensive objects (HVG subsets, a trained model) are
session-scoped: tests that modify an AnnData must take a ``.copy()`` first.
"""
from __future__ import annotations

import copy
import os
import warnings

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scgen_ae as sa

# Fast, quiet, deterministic training for every test: two CPU cores on the CI machine.
FAST = dict(n_threads=1, progress=False)

warnings.filterwarnings("ignore", message=".*n_jobs value 1 overridden.*")


# ---------------------------------------------------------------- helpers

def load_shared(name: str):
    """Read a shared dataset or skip the test with the reason."""
    try:
        path = sa.datasets.find(name)
    except FileNotFoundError as err:
        pytest.skip(f"shared dataset {name!r} is not available: {err}")
    import anndata as ad

    return ad.read_h5ad(path)


#: each training front's default uns_key, under which sa.tl.get_model finds its model
_UNS_KEYS = {"vae": "vae", "denoise": "denoise", "nmf": "nmf", "lda": "lda"}


def fit_copy(front, adata, **kwargs):
    """(annotated copy, model) of a training front: ``copy=True`` returns the copy, as scanpy
    does, and the model comes from :func:`sa.tl.get_model`."""
    out = front(adata, copy=True, **kwargs)
    assert isinstance(out, type(adata)), f"{front.__name__}(copy=True) returned {type(out).__name__}"
    return out, sa.tl.get_model(out, kwargs.get("uns_key", _UNS_KEYS[front.__name__]))


def assert_same_latent(actual, expected) -> None:
    """Equal up to float32 rounding: a GEMM's last bits can differ between two calls on the
    same weights (MKL picks kernels by memory alignment on AVX-512 Xeons), so a latent
    recomputed later is compared with tolerance; a different model is far outside it."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def _dense(X):
    if X is None:
        return None
    if hasattr(X, "to_memory"):  # on disk (backed .h5ad / zarr): compare what it reads as
        X = X.to_memory()
    if sp.issparse(X):
        return X.toarray()
    return np.asarray(X)


class Snapshot:
    """A deep copy of everything a failed call must not change."""

    def __init__(self, adata):
        self.X = copy.deepcopy(_dense(adata.X))
        self.X_type = type(adata.X)
        self.X_dtype = getattr(adata.X, "dtype", None)
        self.obs = adata.obs.copy(deep=True)
        self.var = adata.var.copy(deep=True)
        self.obs_names = list(adata.obs_names)
        self.var_names = list(adata.var_names)
        self.obsm = {k: np.array(v, copy=True) for k, v in adata.obsm.items()}
        self.uns_keys = set(adata.uns.keys())
        self.layers = {k: copy.deepcopy(_dense(v)) for k, v in adata.layers.items()}
        self.varm_keys = set(adata.varm.keys())
        self.obsp_keys = set(adata.obsp.keys())

    def assert_unchanged(self, adata):
        X = _dense(adata.X)
        assert type(adata.X) is self.X_type, "the type of adata.X changed"
        assert getattr(adata.X, "dtype", None) == self.X_dtype, "the dtype of adata.X changed"
        assert X.shape == self.X.shape
        assert np.array_equal(X, self.X, equal_nan=np.issubdtype(X.dtype, np.floating)), "adata.X changed"
        pd.testing.assert_frame_equal(adata.obs, self.obs)
        pd.testing.assert_frame_equal(adata.var, self.var)
        assert list(adata.obs_names) == self.obs_names
        assert list(adata.var_names) == self.var_names
        assert set(adata.obsm.keys()) == set(self.obsm), "obsm keys changed"
        for k, v in self.obsm.items():
            assert np.array_equal(np.asarray(adata.obsm[k]), v, equal_nan=True), f"obsm[{k!r}] changed"
        assert set(adata.uns.keys()) == self.uns_keys, "uns keys changed"
        assert set(adata.layers.keys()) == set(self.layers), "layers keys changed"
        for k, v in self.layers.items():
            assert np.array_equal(_dense(adata.layers[k]), v, equal_nan=True), f"layers[{k!r}] changed"
        assert set(adata.varm.keys()) == self.varm_keys
        assert set(adata.obsp.keys()) == self.obsp_keys


@pytest.fixture
def snapshot():
    """``snap = snapshot(adata)`` ... ``snap.assert_unchanged(adata)``."""
    return Snapshot


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# ---------------------------------------------------------------- data

@pytest.fixture(scope="session")
def cellbench_raw():
    """cellbench_3cl as shipped (499 cells x 15,073 genes, raw counts). Do not modify."""
    return load_shared("cellbench_3cl")


def _hvg_subset(raw, n_top_genes: int):
    adata = raw.copy()
    sa.pp.highly_variable(adata, n_top_genes=n_top_genes, batch_key="batch")
    sa.pp.drop_empty(adata)
    return adata


@pytest.fixture(scope="session")
def cellbench_hvg(cellbench_raw):
    """cellbench_3cl restricted to 1000 HVGs (seurat_v3 on counts). Do not modify."""
    return _hvg_subset(cellbench_raw, 1000)


@pytest.fixture(scope="session")
def cellbench_hvg2000(cellbench_raw):
    """cellbench_3cl restricted to 2000 HVGs. Do not modify."""
    return _hvg_subset(cellbench_raw, 2000)


@pytest.fixture(scope="session")
def cellbench_3protocols():
    """cellbench_3cl_3protocols_800genes (1,394 cells x 799 genes, 3 batches). Do not modify."""
    adata = load_shared("cellbench_3cl_3protocols_800genes")
    sa.pp.drop_empty(adata)
    return adata


@pytest.fixture(scope="session")
def kang_hvg():
    """kang_ifnb_pbmc_subset, 500 HVGs (no labels). Do not modify."""
    adata = load_shared("kang_ifnb_pbmc_subset")
    sa.pp.highly_variable(adata, n_top_genes=500, batch_key="batch")
    sa.pp.drop_empty(adata)
    return adata


@pytest.fixture(scope="session")
def sim_session():
    """A small simulated dataset: 240 cells x ~150 genes, 2 batches, 3 groups. Do not modify."""
    return sa.datasets.simulate(n_cells=240, n_genes=150, n_batches=2, n_groups=3, seed=0)


@pytest.fixture
def sim(sim_session):
    """A fresh copy of the small simulated dataset, free to modify."""
    return sim_session.copy()


# ---------------------------------------------------------------- trained models

TRAINED_KW = dict(batch_key="batch", n_latent=8, max_epochs=15, seed=0, **FAST)


@pytest.fixture(scope="session")
def trained(cellbench_hvg):
    """(annotated copy of cellbench_hvg, VAE) trained once for the session. Do not modify."""
    adata, model = fit_copy(sa.tl.vae, cellbench_hvg, **TRAINED_KW)
    return adata, model


@pytest.fixture(scope="session")
def trained_sim(sim_session):
    """(annotated copy of the simulated data, VAE): a cheap model for io/validation tests."""
    adata, model = fit_copy(sa.tl.vae, sim_session, batch_key="batch", n_latent=4, n_hidden=32, max_epochs=3,
                             **FAST)
    return adata, model


@pytest.fixture(scope="session")
def saved_sim_model(trained_sim, tmp_path_factory):
    """Path of ``trained_sim``'s model written with ``save``."""
    _, model = trained_sim
    return model.save(tmp_path_factory.mktemp("models") / "sim_vae.npz")


def pytest_report_header(config):
    try:
        where = str(sa.datasets.find("cellbench_3cl").parent)
    except FileNotFoundError:
        where = "NOT FOUND (real-data tests will be skipped)"
    return [f"scgen_ae {sa.__version__}; shared data: {where}; cwd: {os.getcwd()}"]

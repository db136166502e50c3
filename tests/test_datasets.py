"""sa.datasets.load: a local copy first, else a checked download into the cache, else an
error that says where it looked, why nothing was downloaded and where the original is.

The network is never touched: downloads are either made to fail (monkeypatched
``_fetch``) or served from a local folder through a ``file://`` URL.
"""
from __future__ import annotations

import shutil
import urllib.error

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae import datasets

NAME = "cellbench_3cl_3protocols_800genes"


@pytest.fixture
def local_file():
    try:
        return datasets.find(NAME).resolve()
    except FileNotFoundError as err:
        pytest.skip(f"shared dataset {NAME!r} is not available: {err}")


@pytest.fixture
def no_local_copy(tmp_path, monkeypatch):
    """An empty cache and no folder holding the data: only a download could find it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCGEN_AE_CACHE", str(cache))
    monkeypatch.delenv("SCGEN_AE_DATA_URL", raising=False)
    monkeypatch.setattr(datasets, "_candidates", lambda data_dir: [tmp_path / "nowhere", cache])
    return cache


def test_every_shared_dataset_has_a_source():
    assert set(datasets.SOURCES) == set(datasets.SHARED)
    for src in datasets.SOURCES.values():
        assert src.original.startswith("https://github.com/")
        assert len(src.sha256) == 64 and int(src.sha256, 16) >= 0


def test_load_reads_the_local_copy(local_file):
    adata = sa.datasets.load(NAME)
    assert adata.shape == (1394, 799)
    assert set(adata.obs["batch"].cat.categories) == {"10x", "CEL-seq2", "Drop-seq"}
    assert np.all(adata.X.data == np.round(adata.X.data)), "raw counts expected"


def test_data_dir_is_searched_first(local_file, tmp_path):
    (tmp_path / f"{NAME}.h5ad").symlink_to(local_file)
    assert datasets.find(NAME, data_dir=tmp_path) == tmp_path / f"{NAME}.h5ad"


def test_reference_checksums_match_the_shared_files(local_file):
    """The checksums a download is verified against are those of the reference files."""
    assert datasets._sha256(local_file) == datasets.SOURCES[NAME].sha256


def test_offline_download_fails_with_a_clear_message(no_local_copy, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "_fetch", offline)
    with pytest.raises(FileNotFoundError) as err:
        sa.datasets.load(NAME, base_url="https://mirror.invalid/scgen_ae")
    msg = str(err.value)
    assert f"{NAME}.h5ad" in msg and "nowhere" in msg  # where it looked
    assert "https://mirror.invalid/scgen_ae failed" in msg and "name resolution" in msg  # why the download failed
    assert "PYangLab/Cepo" in msg and "SingleCellExperiment" in msg  # the original, and why it is not converted
    assert not any(no_local_copy.iterdir()), "a failed download left a file in the cache"


def test_no_mirror_no_download(no_local_copy, monkeypatch):
    def must_not_run(url, dest):
        raise AssertionError("downloaded without a mirror")

    monkeypatch.setattr(datasets, "_fetch", must_not_run)
    with pytest.raises(FileNotFoundError, match="No download was tried: no mirror is set") as err:
        sa.datasets.load("kang_ifnb_pbmc_subset")
    assert "immunogenomics/harmony" in str(err.value) and "R's Matrix package" in str(err.value)


def test_download_from_a_mirror_into_the_cache(local_file, no_local_copy, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(local_file, mirror / f"{NAME}.h5ad")
    monkeypatch.setenv("SCGEN_AE_DATA_URL", mirror.as_uri())  # file://: no network
    adata = sa.datasets.load(NAME)
    assert adata.shape == (1394, 799)
    assert sorted(p.name for p in no_local_copy.iterdir()) == [f"{NAME}.h5ad"]
    assert datasets.find(NAME) == no_local_copy / f"{NAME}.h5ad"  # the next load is local


def test_a_download_with_the_wrong_checksum_is_not_kept(no_local_copy, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{NAME}.h5ad").write_bytes(b"not the reference file")
    with pytest.raises(FileNotFoundError, match="is not the reference .*SHA-256"):
        sa.datasets.load(NAME, base_url=mirror.as_uri())
    assert not no_local_copy.exists() or not any(no_local_copy.iterdir())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: .*cellbench_3cl"):
        sa.datasets.load("pbmc3k")

"""sa.datasets.load: a local copy first, else a checked download into the cache, else an
error that says where it looked, why nothing was downloaded and where the original is.

The internet is never touched: downloads are made to fail (monkeypatched ``_fetch``),
served from a local folder through a ``file://`` URL, or served by an HTTP server the
test starts on 127.0.0.1.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading
import urllib.error
import urllib.request

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
    assert f"https://mirror.invalid/scgen_ae/{NAME}.h5ad failed" in msg and "name resolution" in msg  # why
    assert "raw.githubusercontent.com/PYangLab/Cepo/" in msg and "download_originals" in msg  # the original files
    assert "SCGEN_AE_DATA" in msg and str(no_local_copy) in msg  # how to provide the file by hand
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
    with pytest.raises(FileNotFoundError, match="is not the expected file: SHA-256"):
        sa.datasets.load(NAME, base_url=mirror.as_uri())
    assert not no_local_copy.exists() or not any(no_local_copy.iterdir())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: .*cellbench_3cl"):
        sa.datasets.load("pbmc3k")


# ---------------------------------------------------------------- the dataset shipped in the package

@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("the built-in dataset touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_builtin_dataset_loads_offline(no_network):
    adata = sa.datasets.cellbench_3protocols()
    assert adata.shape == (1394, 799)
    assert adata.obs["batch"].value_counts().to_dict() == {"10x": 895, "CEL-seq2": 274, "Drop-seq": 225}
    assert adata.obs["cell_type"].value_counts().to_dict() == {"H1975": 516, "H2228": 458, "HCC827": 420}
    # raw counts, whole numbers, in X and (a separate copy) in layers["counts"]
    assert np.all(adata.X.data == np.round(adata.X.data)) and adata.X.data.min() > 0
    assert adata.layers["counts"] is not adata.X
    assert (adata.layers["counts"] != adata.X).nnz == 0
    assert adata.var_names.is_unique and adata.var["gene_ids"].str.startswith("ENSG").all()


def test_builtin_dataset_is_a_fresh_object_each_call():
    first = sa.datasets.cellbench_3protocols()
    first.X.data[:] = 0
    first.obs["batch"] = "changed"
    second = sa.datasets.cellbench_3protocols()
    assert second.X.sum() > 0 and "changed" not in set(second.obs["batch"])


def test_builtin_dataset_checksum_is_the_reference_build():
    assert datasets._sha256(datasets.BUILTIN_FILE) == datasets.BUILTIN_SHA256
    # the shipped copy is the shared file of the same name, byte for byte
    assert datasets.BUILTIN_SHA256 == datasets.SOURCES[NAME].sha256
    try:
        shared = sa.datasets.find(NAME)
    except FileNotFoundError as err:
        pytest.skip(f"shared dataset {NAME!r} is not available: {err}")
    assert datasets._sha256(shared) == datasets.BUILTIN_SHA256


def test_a_damaged_builtin_dataset_is_refused(tmp_path, monkeypatch):
    damaged = tmp_path / "cellbench_3protocols.h5ad"
    data = bytearray(datasets.BUILTIN_FILE.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: h5py might still read it
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(datasets, "BUILTIN_FILE", damaged)
    with pytest.raises(OSError, match="damaged: its SHA-256 is .*Reinstall"):
        sa.datasets.cellbench_3protocols()
    monkeypatch.setattr(datasets, "BUILTIN_FILE", tmp_path / "absent.h5ad")
    with pytest.raises(OSError, match="missing from this installation"):
        sa.datasets.cellbench_3protocols()


def test_builtin_dataset_ships_with_the_package():
    """Declared as package data, next to its provenance note, and not git-ignored."""
    import subprocess

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    root = datasets.BUILTIN_FILE.parents[2]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {root / "scgen_ae" / p for p in package_data["scgen_ae"]}
    assert datasets.BUILTIN_FILE in shipped and datasets.BUILTIN_FILE.with_name("README.md") in shipped
    note = datasets.BUILTIN_FILE.with_name("README.md").read_text()
    assert all(s in note for s in ("LuyiTian/sc_mixology", "PYangLab/Cepo", "GSE118767", "Licence"))
    assert datasets.BUILTIN_FILE.stat().st_size <= 2 * 1024 * 1024
    if (root / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(datasets.BUILTIN_FILE)], cwd=root)
        assert ignored.returncode == 1, "the built-in dataset is git-ignored: it would not be committed"


# ---------------------------------------------------------------- downloads over HTTP (a server on 127.0.0.1)

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (a free port) for the test's duration: (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _no_partial_files(folder):
    return not folder.exists() or not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_http_download_success(http_folder, tmp_path):
    folder, url = http_folder
    payload = b"gene,cell1\nCD3E,4\n" * 1000
    (folder / "table.csv").write_bytes(payload)
    dest = tmp_path / "cache" / "sub" / "table.csv"
    got = datasets.download_file(f"{url}/table.csv", dest, hashlib.sha256(payload).hexdigest())
    assert got == dest and dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["table.csv"]  # no temporary file left


def test_http_download_with_a_wrong_checksum_is_not_kept(http_folder, tmp_path):
    folder, url = http_folder
    (folder / "table.csv").write_bytes(b"tampered")
    dest = tmp_path / "cache" / "table.csv"
    with pytest.raises(datasets.DownloadError, match=r"table.csv is not the expected file: SHA-256 [0-9a-f]{64}"):
        datasets.download_file(f"{url}/table.csv", dest, "0" * 64)
    assert not dest.exists() and _no_partial_files(dest.parent)


def test_http_download_does_not_replace_a_good_file_with_a_bad_one(http_folder, tmp_path):
    folder, url = http_folder
    (folder / "table.csv").write_bytes(b"tampered")
    dest = tmp_path / "table.csv"
    dest.write_bytes(b"the good copy")
    with pytest.raises(datasets.DownloadError):
        datasets.download_file(f"{url}/table.csv", dest, hashlib.sha256(b"the good copy").hexdigest())
    assert dest.read_bytes() == b"the good copy"


def test_http_404_is_a_clear_error(http_folder, tmp_path):
    _, url = http_folder
    dest = tmp_path / "cache" / "absent.csv"
    with pytest.raises(datasets.DownloadError) as err:
        datasets.download_file(f"{url}/absent.csv", dest, "0" * 64)
    msg = str(err.value)
    assert f"Downloading {url}/absent.csv failed" in msg and "HTTP 404" in msg  # what, which URL
    assert f"place it at {dest}" in msg and "SCGEN_AE_DATA" in msg  # how to fix
    assert not dest.exists() and _no_partial_files(dest.parent)


def test_server_down_is_a_clear_error(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/table.csv"
    dest = tmp_path / "cache" / "table.csv"
    with pytest.raises(datasets.DownloadError) as err:
        datasets.download_file(url, dest, "0" * 64)
    msg = str(err.value)
    assert f"Downloading {url} failed: the server could not be reached" in msg and "refused" in msg.lower()
    assert f"place it at {dest}" in msg and "SCGEN_AE_DATA" in msg
    assert not dest.exists() and _no_partial_files(dest.parent)


def test_load_downloads_from_an_http_mirror(http_folder, no_local_copy):
    folder, url = http_folder
    shutil.copy(datasets.BUILTIN_FILE, folder / f"{NAME}.h5ad")  # the shipped file is the reference build
    adata = sa.datasets.load(NAME, base_url=url)
    assert adata.shape == (1394, 799)
    assert sorted(p.name for p in no_local_copy.iterdir()) == [f"{NAME}.h5ad"]


def test_download_originals_checks_every_file(http_folder, no_local_copy, monkeypatch):
    folder, url = http_folder
    files = {"a.csv.gz": b"first original", "b.rds": b"second original"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    source = datasets.Source("https://github.com/example/repo", "test", "0" * 64, tuple(
        datasets.OriginalFile(f"{url}/{name}", hashlib.sha256(data).hexdigest()) for name, data in files.items()))
    monkeypatch.setitem(datasets.SOURCES, "kang_ifnb_pbmc_subset", source)
    paths = datasets.download_originals("kang_ifnb_pbmc_subset")
    assert [p.read_bytes() for p in paths] == list(files.values())
    assert paths[0].parent == no_local_copy / "originals" / "kang_ifnb_pbmc_subset"
    (folder / "a.csv.gz").unlink()  # already cached with the right checksum: not downloaded again
    assert datasets.download_originals("kang_ifnb_pbmc_subset") == paths


def test_original_files_are_pinned_github_urls_with_checksums():
    for name, src in datasets.SOURCES.items():
        assert src.files, f"{name} lists no original files"
        for f in src.files:
            owner_repo_commit = f.url.split("https://raw.githubusercontent.com/", 1)[1].split("/")
            assert len(owner_repo_commit[2]) == 40, f"{f.url} is not pinned to a commit"
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0

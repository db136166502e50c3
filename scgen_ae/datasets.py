"""Datasets: one real dataset shipped with the package, a simulation, and loaders for the
other real data.

:func:`cellbench_3protocols` reads real counts shipped inside the package (no network).

:func:`load` reads a local copy of a shared real dataset when there is one, looked up in
order in ``data_dir``, ``$SCGEN_AE_DATA``, ``./shared/data``, ``../shared/data`` and the
user cache (``$SCGEN_AE_CACHE``, default ``~/.cache/scgen_ae``). Otherwise it downloads
the ready ``.h5ad`` from a mirror into the cache, when one is configured, and checks it
against the SHA-256 of the reference build (:data:`SOURCES`).

Why a mirror and not the public originals: none of the originals is an ``.h5ad``. They
are CSV tables, an R ``.rda`` SingleCellExperiment, R ``.RData`` and ``.rds`` sparse
matrices in GitHub repositories, and building the shared files from them needs R
(Bioconductor ``org.Hs.eg.db`` for the gene symbols, ``SingleCellExperiment`` and
``Matrix`` to read the objects; see ``shared/data/README.md``). Rebuilding them at run
time in Python would give different files (other gene names), so :func:`load` does not
pretend to: its error names the original files and says how to get the ``.h5ad``.
:func:`download_originals` fetches those files (URLs pinned to a commit, SHA-256 checked)
into the cache, as input for that R build.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

#: The shared real datasets: name -> one-line description (cells x genes, labels).
SHARED = {
    "cellbench_3cl": "CellBench, 3 cell lines, CEL-seq2 vs Drop-seq (499 x 15,073, labels)",
    "cellbench_3cl_3protocols_800genes": "CellBench, 3 cell lines, 10x/CEL-seq2/Drop-seq (1,394 x 799, labels)",
    "kang_ifnb_pbmc_subset": "Kang 2018 PBMC, IFN-b ctrl vs stim (2,000 x 9,015, no labels)",
    "pbmc_10x_chemistries": "PBMC, 3 10x chemistries (2,860 x 11,221, no labels)",
}


@dataclass(frozen=True)
class OriginalFile:
    """One file of a public original: a URL pinned to a commit, and its SHA-256."""

    url: str
    sha256: str


@dataclass(frozen=True)
class Source:
    """Where a shared dataset comes from, and why it is not converted automatically."""

    original: str  #: the public original (repository and files), in words
    why_no_conversion: str  #: what rebuilding the ``.h5ad`` from it would need
    sha256: str  #: checksum of the reference ``.h5ad`` (a mirror must serve exactly this file)
    files: tuple[OriginalFile, ...] = ()  #: the original files, for :func:`download_originals`


def _github(repo: str, commit: str, path: str, sha256: str) -> OriginalFile:
    # raw.githubusercontent.com at a fixed commit: the bytes behind the URL never change
    return OriginalFile(f"https://raw.githubusercontent.com/{repo}/{commit}/{path}", sha256)


_MIXOLOGY = ("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f")
_MIXOLOGY_FILES = (
    _github(*_MIXOLOGY, "data/csv/sc_celseq2.count.csv.gz",
            "a82aa89b8995aed412f4260c0adb343967e33a801af6f2e0aa647c1d897a5a21"),
    _github(*_MIXOLOGY, "data/csv/sc_celseq2.metadata.csv.gz",
            "78429916bac394d92d8c972059a8f195c5479ce578da04f1eb3ba599585ef3d9"),
    _github(*_MIXOLOGY, "data/csv/sc_dropseq.count.csv.gz",
            "98c0bb6a9fbf4b93967ef82cef9985d7691cf59a31dc5b0b3699f70ed1a0fd08"),
    _github(*_MIXOLOGY, "data/csv/sc_dropseq.metadata.csv.gz",
            "4c48f3e13778e89192d9861095bc102cc0deb9eba1a7f47a093f5a058ce1aa6a"),
)
_SCWG = ("baj12/scWGParis", "4a3ea760e194ea1d79e7d1600b476ddc5107924d")

_R_SYMBOLS = "needs R: Ensembl IDs were mapped to symbols with Bioconductor org.Hs.eg.db 3.16"
#: Name -> :class:`Source`: the public original of each shared dataset, its files (pinned
#: URLs with checksums) and the checksum of the reference ``.h5ad`` built from them.
SOURCES = {
    "cellbench_3cl": Source(
        "https://github.com/LuyiTian/sc_mixology, data/csv/sc_celseq2.count.csv.gz, sc_celseq2.metadata.csv.gz, "
        "sc_dropseq.count.csv.gz, sc_dropseq.metadata.csv.gz (CSV tables; GEO GSE118767)",
        f"CSV count tables, not .h5ad; the symbol mapping {_R_SYMBOLS}",
        "8e51146d9e26000ed9a46c07455281cbd23fbd18cbc790524076d5350b8597b4",
        _MIXOLOGY_FILES),
    "cellbench_3cl_3protocols_800genes": Source(
        "https://github.com/PYangLab/Cepo, data/cellbench.rda (10x cells) plus the sc_mixology CSV tables "
        "of cellbench_3cl",
        "an R .rda SingleCellExperiment (readable only with R's SingleCellExperiment), intersected with "
        f"cellbench_3cl, whose symbol mapping {_R_SYMBOLS}",
        "2559932c1195ac17a55297adb570dfb4e51d23135d2efc0cebafc00decd8a620",
        (_github("PYangLab/Cepo", "48144fb8f94c1ea5afaa8c707e9fbefe3ded3d7b", "data/cellbench.rda",
                 "bda3124ffdb6c7d99644ba21358fbc2ab46a43f816fb57a19d4d932d74309edf"),
         *_MIXOLOGY_FILES)),
    "kang_ifnb_pbmc_subset": Source(
        "https://github.com/immunogenomics/harmony, data/pbmc_stim.RData (objects pbmc.ctrl, pbmc.stim; "
        "GEO GSE96583)",
        "an R .RData file of dgCMatrix objects (readable only with R's Matrix package)",
        "cabad0eb758966a91ef0b767d833f86500d50f3c6767885b65f5bc13edf28426",
        (_github("immunogenomics/harmony", "df19af23ae0639bd6ea2da63898f973f08c85862", "data/pbmc_stim.RData",
                 "d85a18ce8ec9dcb4ac86c8e195ed53ff893c5952a7d6bf70035a17856c9dc0ef"),)),
    "pbmc_10x_chemistries": Source(
        "https://github.com/baj12/scWGParis, data/1k_PBMC_v2_filt.rds, 1k_PBMC_v3_filt.rds, "
        "5prime_PBMC_filt_1kcells.rds (10x Genomics public PBMC data sets)",
        "R .rds files of dgTMatrix objects (readable only with R's Matrix package)",
        "6df893b9e5cbe93e1c0391b6e5466358876f6269048edeae87fa35e4d6c900e7",
        (_github(*_SCWG, "data/1k_PBMC_v2_filt.rds", "0814e8261a707b3e990298a4a69ad4fae9e4990d0cdb7d607928981459c219b0"),
         _github(*_SCWG, "data/1k_PBMC_v3_filt.rds", "80b0458449c34b4f937e4ce8d4317eca341dba6e0395af7349080e867bc70676"),
         _github(*_SCWG, "data/5prime_PBMC_filt_1kcells.rds",
                 "ff8a1a33ded340143ff662629da7cfec5a2d819f3d4cd483e3cfd3bff9af470c"))),
}


def simulate(n_cells: int = 1500, n_genes: int = 1000, n_batches: int = 3, n_groups: int = 4,
             batch_strength: float = 0.6, seed: int = 0) -> AnnData:
    """Simulated counts with known cell groups and batch effects (needs no network).

    Gene means are log-normal; each group up-regulates its own 5 % of genes (4x); each
    batch multiplies every gene by exp(N(0, batch_strength)) and scales library sizes.
    Counts are negative binomial (theta 2-10) with extra dropout of low means.
    Returns raw counts (CSR) with ``obs["batch"]`` and ``obs["cell_type"]``.
    """
    rng = np.random.default_rng(seed)
    base = rng.lognormal(-1.0, 1.5, n_genes)
    group = rng.integers(0, n_groups, n_cells)
    batch = rng.integers(0, n_batches, n_cells)
    group_fc = np.ones((n_groups, n_genes))
    for g in range(n_groups):
        group_fc[g, rng.choice(n_genes, max(1, n_genes // 20), replace=False)] = 4.0
    batch_fc = np.exp(rng.normal(0, batch_strength, (n_batches, n_genes)))
    lib = rng.lognormal(np.log(3000) + rng.normal(0, 0.4, n_batches)[batch], 0.3)
    scale = base * group_fc[group] * batch_fc[batch]
    mu = scale / scale.sum(1, keepdims=True) * lib[:, None]
    theta = rng.uniform(2, 10, n_genes)
    counts = rng.poisson(rng.gamma(theta, mu / theta))
    counts[rng.random(counts.shape) < np.exp(-mu)] = 0  # dropout, strongest for low means
    obs = pd.DataFrame({
        "batch": pd.Categorical([f"batch{b}" for b in batch]),
        "cell_type": pd.Categorical([f"group{g}" for g in group]),
    }, index=[f"cell{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    adata = AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    adata.uns["source"] = f"scgen_ae.datasets.simulate(seed={seed})"
    keep = np.asarray(adata.X.sum(0)).ravel() > 0
    return adata[:, keep].copy()


#: The dataset shipped inside the package, and the SHA-256 it must have when read.
BUILTIN_FILE = Path(__file__).resolve().parent / "data_files" / "cellbench_3protocols.h5ad"
BUILTIN_SHA256 = "2559932c1195ac17a55297adb570dfb4e51d23135d2efc0cebafc00decd8a620"


def cellbench_3protocols() -> AnnData:
    """Real counts shipped with the package: 3 cell lines on 3 protocols (CellBench).

    1,394 cells x 799 genes of raw UMI counts from Tian et al., Nat Methods 2019 (GEO
    GSE118767): three lung-adenocarcinoma cell lines (H1975, H2228, HCC827) sequenced with
    10x Chromium, CEL-seq2 and Drop-seq, a real cross-protocol batch effect with known
    labels. The genes are a 799-gene panel (see ``scgen_ae/data_files/README.md`` for the
    provenance, the processing and the licence situation). Needs no network.

    Returns
    -------
    AnnData
        A new object on every call. Raw counts (CSR float32) in ``X`` and a copy in
        ``layers["counts"]``; ``obs["batch"]`` (``"10x"``, ``"CEL-seq2"``, ``"Drop-seq"``),
        ``obs["cell_type"]`` (the cell line) and the authors' QC columns;
        ``var["gene_ids"]`` (Ensembl IDs); ``uns["source"]``.

    Raises
    ------
    OSError
        The shipped file is missing or its SHA-256 is not the expected one (a damaged or
        partial install); reinstalling the package restores it.

    Examples
    --------
    >>> import scgen_ae as sa
    >>> adata = sa.datasets.cellbench_3protocols()
    >>> adata.shape
    (1394, 799)
    """
    import anndata as ad

    if not BUILTIN_FILE.is_file():
        raise OSError(f"The built-in dataset {BUILTIN_FILE} is missing from this installation; "
                      "reinstall scgen-ae (pip install --force-reinstall scgen-ae, or pip install -e . in a checkout).")
    got = _sha256(BUILTIN_FILE)
    if got != BUILTIN_SHA256:
        raise OSError(f"The built-in dataset {BUILTIN_FILE} is damaged: its SHA-256 is {got}, expected "
                      f"{BUILTIN_SHA256}. Reinstall scgen-ae (in a source checkout: "
                      "git checkout scgen_ae/data_files/cellbench_3protocols.h5ad).")
    adata = ad.read_h5ad(BUILTIN_FILE)
    adata.layers["counts"] = adata.X.copy()
    return adata


def cache_dir() -> Path:
    """The download cache: ``$SCGEN_AE_CACHE``, default ``~/.cache/scgen_ae``."""
    return Path(os.environ.get("SCGEN_AE_CACHE") or Path.home() / ".cache" / "scgen_ae")


def _candidates(data_dir) -> list[Path]:
    dirs = [data_dir, os.environ.get("SCGEN_AE_DATA"), "shared/data", "../shared/data",
            Path(__file__).resolve().parents[2] / "shared" / "data", cache_dir()]
    return [Path(d) for d in dirs if d]


def _check_name(name: str) -> None:
    if name not in SHARED:
        raise ValueError(f"Unknown dataset {name!r}; known: {sorted(SHARED)}.")


def find(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of a local copy of the shared dataset ``name`` (see :data:`SHARED`); never downloads.

    Raises
    ------
    FileNotFoundError
        No folder searched holds ``{name}.h5ad``; the message lists them.
    """
    _check_name(name)
    for d in _candidates(data_dir):
        path = d / f"{name}.h5ad"
        if path.exists():
            return path
    searched = ", ".join(str(d) for d in _candidates(data_dir))
    raise FileNotFoundError(
        f"Dataset {name!r} was not found (looked in: {searched}). Put {name}.h5ad in one of these folders "
        "or set SCGEN_AE_DATA to the folder that holds it."
    )


class DownloadError(OSError):
    """A download failed (no network, HTTP error, wrong checksum); nothing was written."""


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (the one place that touches the network)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:  # noqa: S310
        while chunk := response.read(1 << 20):
            out.write(chunk)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, sha256: str) -> Path:
    """Download ``url`` to ``dest``, keeping it only if its SHA-256 is ``sha256``.

    The bytes go to a temporary file in ``dest``'s folder, which is renamed to ``dest``
    only after the checksum matched: an interrupted, failed or tampered download never
    leaves a file at ``dest``, and a reader never sees a partial one.

    Parameters
    ----------
    url
        ``https://``, ``http://`` or ``file://`` URL.
    dest
        Where the file goes; its folder is created.
    sha256
        Expected SHA-256 (hex) of the file.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        The server could not be reached, answered with an HTTP error, or sent other bytes
        than expected. The message names the URL and how to provide the file by hand.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fix = (f"To work offline, download it elsewhere and place it at {dest} (or put it in a folder and set "
           "SCGEN_AE_DATA to that folder).")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        try:
            _fetch(url, Path(tmp))
        except urllib.error.HTTPError as err:
            raise DownloadError(f"Downloading {url} failed: the server answered HTTP {err.code} {err.reason}. "
                                f"{fix}") from None
        except (urllib.error.URLError, OSError) as err:  # no network, DNS, refused, timeout
            reason = getattr(err, "reason", None) or err
            raise DownloadError(f"Downloading {url} failed: the server could not be reached ({reason}). "
                                f"{fix}") from None
        got = _sha256(Path(tmp))
        if got != sha256:
            raise DownloadError(f"{url} is not the expected file: SHA-256 {got}, expected {sha256}; "
                                f"nothing was kept. {fix}")
        os.replace(tmp, dest)  # atomic on one file system: dest is either absent or complete
        return dest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download(name: str, base_url: str) -> Path:
    """Download the reference ``{base_url}/{name}.h5ad`` into :func:`cache_dir`, checked.

    See :func:`download_file`: the file is verified against ``SOURCES[name].sha256`` before
    it appears in the cache.

    Raises
    ------
    DownloadError
        The download failed or the checksum does not match.
    """
    _check_name(name)
    url = f"{base_url.rstrip('/')}/{name}.h5ad"
    return download_file(url, cache_dir() / f"{name}.h5ad", SOURCES[name].sha256)


def download_originals(name: str) -> list[Path]:
    """Download the public original files of a shared dataset into the cache, checked.

    These are the inputs of the R build described in ``shared/data/README.md`` (CSV tables
    and R objects), not something :func:`load` can read. Files already in the cache with the
    right checksum are not downloaded again.

    Parameters
    ----------
    name
        One of :data:`SHARED`.

    Returns
    -------
    list of Path
        The files, in ``cache_dir() / "originals" / name``.

    Raises
    ------
    DownloadError
        A file could not be downloaded or has another checksum (see :func:`download_file`).
    """
    _check_name(name)
    folder = cache_dir() / "originals" / name
    paths = []
    for original in SOURCES[name].files:
        dest = folder / original.url.rsplit("/", 1)[-1]
        if not (dest.exists() and _sha256(dest) == original.sha256):
            download_file(original.url, dest, original.sha256)
        paths.append(dest)
    return paths


def load(name: str, data_dir: str | os.PathLike | None = None, *, base_url: str | None = None) -> AnnData:
    """Read a shared real dataset; download it into the cache first when it is not local.

    Local copies are looked up as described in :func:`find`. When there is none and a
    mirror is set (``base_url`` or ``$SCGEN_AE_DATA_URL``: a folder URL holding the
    ``.h5ad`` files), the file is downloaded into :func:`cache_dir` and checked against
    the reference checksum (:func:`download_file`). The public originals (:data:`SOURCES`,
    with pinned URLs and checksums) are CSV tables and R objects, not ``.h5ad``: converting
    them needs R (see the module docstring), so :func:`load` does not read them;
    :func:`download_originals` fetches them, and the error message names them.

    Parameters
    ----------
    name
        One of :data:`SHARED`: ``"cellbench_3cl"``, ``"cellbench_3cl_3protocols_800genes"``,
        ``"kang_ifnb_pbmc_subset"``, ``"pbmc_10x_chemistries"``.
    data_dir
        A folder searched first.
    base_url
        Mirror URL (overrides ``$SCGEN_AE_DATA_URL``).

    Returns
    -------
    AnnData
        Raw counts (CSR float32) in ``X``, ``obs["batch"]``, ``obs["cell_type"]`` where the
        data has labels, ``uns["source"]``.

    Raises
    ------
    FileNotFoundError
        Neither a local copy nor a download worked; the message says where it looked, why
        the download failed or was not tried, and where the public original is.
    """
    import anndata as ad

    try:
        return ad.read_h5ad(find(name, data_dir))
    except FileNotFoundError as err:
        local_error = err
    src = SOURCES[name]
    base_url = base_url or os.environ.get("SCGEN_AE_DATA_URL")
    if base_url:
        try:
            return ad.read_h5ad(download(name, base_url))
        except OSError as err:
            tried = f"A download from the mirror {base_url} was tried: {err}"
    else:
        tried = "No download was tried: no mirror is set (base_url= or $SCGEN_AE_DATA_URL)."
    urls = " ".join(f.url for f in src.files)
    builtin = (" The same cells ship with the package: sa.datasets.cellbench_3protocols() needs no file."
               if src.sha256 == BUILTIN_SHA256 else "")
    raise FileNotFoundError(
        f"{local_error} {tried} The public original is {src.original}; it is not converted automatically "
        f"because it is {src.why_no_conversion}. Its files ({urls}) can be fetched, checked, into the cache with "
        f"sa.datasets.download_originals({name!r}). Get {name}.h5ad from a colleague or a mirror of the scgen_ae "
        f"data and place it in {cache_dir()} (or set SCGEN_AE_DATA to its folder), or build it as "
        f"shared/data/README.md describes.{builtin}"
    ) from None

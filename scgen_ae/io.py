"""Model files that load without executing code.

A model file is a NumPy ``.npz`` archive holding only numeric arrays plus one
``__header__`` array of UTF-8 bytes with a JSON header::

    {"format": "scgen_ae.model", "format_version": 1, "package_version": "...",
     "model": "VAE", "config": {...}, "state": {...}, "sha256": "..."}

``np.load(allow_pickle=False)`` refuses object arrays, so a crafted file cannot run
code; the SHA-256 over the header (minus the hash) and every weight array detects
corruption. Writes go to a temporary file in the same folder and are renamed into
place, so an interrupted save never leaves a half-written model behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "scgen_ae.model"
FORMAT_VERSION = 1
_HEADER = "__header__"


class ModelFileError(ValueError):
    """A model file is corrupt, tampered with, of another format or incompatible."""


def _digest(header: dict, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_model_file(path: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write ``arrays`` and the JSON ``header`` to ``path``."""
    from . import __version__

    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__, **header}
    header["sha256"] = _digest(header, arrays)
    payload = {name: np.asarray(a) for name, a in arrays.items()}
    payload[_HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# Migrations from older format versions: {old_version: function(header, arrays) -> (header, arrays)}.
MIGRATIONS: dict[int, callable] = {}


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a model file; never unpickles."""
    path = Path(path)
    if not path.exists() and path.with_suffix(".npz").exists():
        path = path.with_suffix(".npz")
    if not path.exists():
        raise FileNotFoundError(f"No model file at {str(path)!r}.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise ModelFileError(
            f"{str(path)!r} is not a readable scgen_ae model file ({err}). Model files are .npz archives "
            "of plain arrays; objects that need pickle are refused on purpose."
        ) from err
    if _HEADER not in arrays:
        raise ModelFileError(f"{str(path)!r} has no scgen_ae header; it was not written by Model.save().")
    try:
        header = json.loads(arrays.pop(_HEADER).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"The header of {str(path)!r} is not valid JSON: the file is corrupt.") from err
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is not an scgen_ae model file (format={header.get('format')!r}).")
    if header.get("sha256") != _digest(header, arrays):
        raise ModelFileError(
            f"Checksum mismatch in {str(path)!r}: the file was modified or corrupted after it was saved."
        )
    version = int(header.get("format_version", 0))
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise ModelFileError(f"No migration from model file format {version} to {FORMAT_VERSION}.")
        header, arrays = MIGRATIONS[version](header, arrays)
        version = int(header["format_version"])
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} uses model file format {version}, newer than this scgen_ae "
            f"({FORMAT_VERSION}); upgrade scgen_ae to load it."
        )
    return header, arrays

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


def model_path(path: str | os.PathLike) -> Path:
    """The file a model named ``path`` is written to and read from: ``path`` itself when it
    ends in ``.npz``, else ``path`` + ``.npz`` ("run_1.5" -> "run_1.5.npz", "model.pt" ->
    "model.pt.npz"). Saving and loading both go through here, so any name round-trips."""
    path = Path(path)
    return path if path.name.endswith(".npz") else path.with_name(path.name + ".npz")


def write_model_file(path: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write ``arrays`` and the JSON ``header`` to :func:`model_path` of ``path``."""
    from . import __version__

    path = model_path(path)
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
    """Read and verify a model file; never unpickles.

    Reads :func:`model_path` of ``path`` (the file ``save`` wrote), or ``path`` itself when
    only that exists (a model file renamed by hand). Anything that is not an intact model
    file raises :class:`ModelFileError`; a missing file, ``FileNotFoundError``.
    """
    given = Path(path)
    path = model_path(given)
    if not path.exists() and given.exists():
        path = given
    if not path.exists():
        raise FileNotFoundError(f"No model file at {str(path)!r}.")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (.npy), not an .npz archive")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # empty, truncated, another format: numpy raises many kinds, all mean "not ours"
        detail = str(err) or type(err).__name__
        raise ModelFileError(
            f"{str(path)!r} is not a readable scgen_ae model file ({detail}). Model files are .npz archives "
            "of plain arrays written by Model.save(); objects that need pickle are refused on purpose."
        ) from err
    if _HEADER not in arrays:
        raise ModelFileError(f"{str(path)!r} has no scgen_ae header; it was not written by Model.save().")
    try:
        header = json.loads(arrays.pop(_HEADER).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"The header of {str(path)!r} is not valid JSON: the file is corrupt.") from err
    if not isinstance(header, dict):
        raise ModelFileError(f"The header of {str(path)!r} is not a JSON object: the file is corrupt.")
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is not an scgen_ae model file (format={header.get('format')!r}).")
    if header.get("sha256") != _digest(header, arrays):
        raise ModelFileError(
            f"Checksum mismatch in {str(path)!r}: the file was modified or corrupted after it was saved."
        )
    version = header.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"The header of {str(path)!r} has format_version={version!r}; an integer is required.")
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


STRINGS = "list of strings"  # a field type for header_fields: a list whose items are all str


def header_fields(path: str | os.PathLike, header: dict, fields: dict[str, tuple[type, ...] | str]) -> None:
    """Check that ``header`` has each of ``fields`` with a value of one of its types (or,
    for :data:`STRINGS`, a list of strings), so a file edited by hand fails here with the
    field named, not later inside the model."""
    for name, types in fields.items():
        if name not in header:
            raise ModelFileError(f"The header of {str(path)!r} has no {name!r} field: the file is incomplete or "
                                 "was edited by hand. Save the model again with Model.save().")
        value = header[name]
        if types == STRINGS:
            ok, expected = isinstance(value, list) and all(isinstance(x, str) for x in value), STRINGS
        else:
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            expected = " or ".join(t.__name__ for t in types)
        if not ok:
            raise ModelFileError(f"The header of {str(path)!r} has {name}={value!r:.80}, but a {expected} is "
                                 "required: the file was edited or is corrupt. Save the model again with "
                                 "Model.save().")

"""Model files: plain .npz, never unpickled, checksummed, versioned, written atomically."""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae import io as sio

MARKER_ENV = "SCGEN_AE_TEST_MARKER"


class _Evil:
    """Unpickling this writes a marker file: proof that code ran."""

    def __reduce__(self):
        return (Path.write_text, (Path(os.environ[MARKER_ENV]), "pwned"))


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _header(arrays):
    return json.loads(arrays["__header__"].tobytes().decode("utf-8"))


def _write_raw(path, arrays, header=None, rehash=True):
    """Write an .npz by hand, optionally with a new header (re-hashed like the writer does)."""
    arrays = dict(arrays)
    if header is not None:
        if rehash:
            body = {k: v for k, v in arrays.items() if k != "__header__"}
            header = {**header, "sha256": sio._digest(header, body)}
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "marker.txt"
    monkeypatch.setenv(MARKER_ENV, str(path))
    return path


# ---------------------------------------------------------------- format

def test_save_writes_npz_of_plain_arrays(trained_sim, tmp_path):
    _, model = trained_sim
    path = model.save(tmp_path / "model")
    assert path == tmp_path / "model.npz" and path.exists()
    assert zipfile.is_zipfile(path)
    arrays = _arrays(path)  # loads with allow_pickle=False: no object arrays inside
    assert all(a.dtype != object for a in arrays.values())
    header = _header(arrays)
    assert header["format"] == "scgen_ae.model"
    assert header["format_version"] == sio.FORMAT_VERSION
    assert header["model"] == "VAE"
    assert header["var_names"] == model.var_names
    assert any(k.startswith("w/") for k in arrays)


def test_save_suffixes(trained_sim, tmp_path):
    _, model = trained_sim
    assert model.save(tmp_path / "a.npz") == tmp_path / "a.npz"
    assert model.save(tmp_path / "b.pt").name == "b.pt.npz"
    assert model.save(str(tmp_path / "sub" / "dir" / "c")).exists()  # folders are created
    # load finds the file without the suffix too
    assert sa.VAE.load(tmp_path / "a").var_names == model.var_names


def test_save_leaves_no_temp_files(trained_sim, tmp_path):
    _, model = trained_sim
    model.save(tmp_path / "m.npz")
    model.save(tmp_path / "m.npz")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_load_never_unpickles_object_array(saved_sim_model, tmp_path, marker):
    arrays = _arrays(saved_sim_model)
    arrays["w/evil"] = np.array([_Evil()], dtype=object)
    bad = tmp_path / "evil.npz"
    np.savez(bad, **arrays)  # np.savez pickles the object array
    # sanity: unpickling really would write the marker
    with np.load(bad, allow_pickle=True) as npz:
        npz["w/evil"]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(sa.ModelFileError, match="pickle"):
        sa.VAE.load(bad)
    assert not marker.exists()


def test_load_never_unpickles_object_header(saved_sim_model, tmp_path, marker):
    arrays = _arrays(saved_sim_model)
    arrays["__header__"] = np.array([_Evil()], dtype=object)
    bad = tmp_path / "evil_header.npz"
    np.savez(bad, **arrays)
    with pytest.raises(sa.ModelFileError):
        sa.VAE.load(bad)
    assert not marker.exists()


def test_load_never_unpickles_plain_pickle(tmp_path, marker):
    bad = tmp_path / "model.npz"
    bad.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(sa.ModelFileError, match="pickle"):
        sa.VAE.load(bad)
    assert not marker.exists()


def test_load_never_unpickles_npy_with_object(tmp_path, marker):
    bad = tmp_path / "model.npz"
    with open(bad, "wb") as fh:
        np.save(fh, np.array([_Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(sa.ModelFileError):
        sa.VAE.load(bad)
    assert not marker.exists()


def test_garbage_and_truncated_files(saved_sim_model, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(sa.ModelFileError, match="not a readable scgen_ae model file"):
        sa.VAE.load(junk)
    data = saved_sim_model.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(sa.ModelFileError):
        sa.VAE.load(cut)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="No model file"):
        sa.VAE.load("/nonexistent/dir/model.npz")


def test_tampered_weight_fails_checksum(saved_sim_model, tmp_path):
    arrays = _arrays(saved_sim_model)
    name = next(k for k in sorted(arrays) if k.startswith("w/") and arrays[k].dtype.kind == "f")
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] += 1e-3
    bad = _write_raw(tmp_path / "tampered.npz", arrays)
    with pytest.raises(sa.ModelFileError, match="Checksum mismatch"):
        sa.VAE.load(bad)


def test_tampered_header_fails_checksum(saved_sim_model, tmp_path):
    arrays = _arrays(saved_sim_model)
    header = _header(arrays)
    header["batch_categories"] = header["batch_categories"][::-1]
    bad = _write_raw(tmp_path / "tampered.npz", arrays, header, rehash=False)
    with pytest.raises(sa.ModelFileError, match="Checksum mismatch"):
        sa.VAE.load(bad)


def test_added_or_removed_array_fails_checksum(saved_sim_model, tmp_path):
    arrays = _arrays(saved_sim_model)
    extra = _write_raw(tmp_path / "extra.npz", {**arrays, "w/extra": np.zeros(3, np.float32)})
    with pytest.raises(sa.ModelFileError, match="Checksum mismatch"):
        sa.VAE.load(extra)
    name = next(k for k in arrays if k.startswith("w/"))
    fewer = _write_raw(tmp_path / "fewer.npz", {k: v for k, v in arrays.items() if k != name})
    with pytest.raises(sa.ModelFileError, match="Checksum mismatch"):
        sa.VAE.load(fewer)


def test_wrong_format_header(saved_sim_model, tmp_path):
    arrays = _arrays(saved_sim_model)
    header = _header(arrays)
    header["format"] = "someone.else"
    bad = _write_raw(tmp_path / "other.npz", arrays, header)
    with pytest.raises(sa.ModelFileError, match=r"not an scgen_ae model file \(format='someone.else'\)"):
        sa.VAE.load(bad)


def test_missing_header(saved_sim_model, tmp_path):
    arrays = {k: v for k, v in _arrays(saved_sim_model).items() if k != "__header__"}
    bad = _write_raw(tmp_path / "noheader.npz", arrays)
    with pytest.raises(sa.ModelFileError, match="no scgen_ae header"):
        sa.VAE.load(bad)


def test_header_not_json(saved_sim_model, tmp_path):
    arrays = _arrays(saved_sim_model)
    arrays["__header__"] = np.frombuffer(b"\xff\xfe not json", dtype=np.uint8)
    bad = _write_raw(tmp_path / "badjson.npz", arrays)
    with pytest.raises(sa.ModelFileError, match="not valid JSON"):
        sa.VAE.load(bad)


def test_unknown_model_class(saved_sim_model, tmp_path):
    arrays = _arrays(saved_sim_model)
    header = _header(arrays)
    header["model"] = "NotAModel"
    bad = _write_raw(tmp_path / "cls.npz", arrays, header)
    with pytest.raises(sa.ModelFileError, match="'NotAModel' model, not a VAE"):
        sa.VAE.load(bad)


def test_a_class_named_like_a_package_class_does_not_take_over_its_files(trained_sim, tmp_path, monkeypatch):
    """A subclass of one's own that is also called VAE loads only the files it saved itself;
    the package's VAE files (which hold the bare name "VAE") still load as sa.VAE."""
    import copy

    from scgen_ae.models._base import BaseModel

    adata, model = trained_sim
    monkeypatch.setattr(BaseModel, "registry", dict(BaseModel.registry))  # the class below leaves with the test

    class VAE(sa.VAE):
        pass

    path = model.save(tmp_path / "package.npz")
    assert _header(_arrays(path))["model"] == "VAE"
    loaded = sa.VAE.load(path)
    assert type(loaded) is sa.VAE
    np.testing.assert_array_equal(loaded.get_latent(adata), model.get_latent(adata))

    mine = copy.copy(model)
    mine.__class__ = VAE
    own = mine.save(tmp_path / "own.npz")
    name = _header(_arrays(own))["model"]
    assert name == f"{__name__}.{VAE.__qualname__}"
    assert type(sa.VAE.load(own)) is VAE and type(VAE.load(own)) is VAE
    with pytest.raises(sa.ModelFileError, match=r"'VAE' model, not a tests\.test_io\..*<locals>\.VAE\."):
        VAE.load(path)  # sa.VAE is not the test's VAE
    del BaseModel.registry[name]  # as in a session that has not imported the class's module
    with pytest.raises(sa.ModelFileError, match="import the module that defines it first"):
        sa.VAE.load(own)


def test_two_package_classes_cannot_share_a_name(monkeypatch):
    from scgen_ae.models._base import BaseModel

    monkeypatch.setattr(BaseModel, "registry", dict(BaseModel.registry))
    with pytest.raises(TypeError, match="'VAE' is taken by scgen_ae.models.vae.VAE"):
        type("VAE", (sa.VAE,), {"__module__": "scgen_ae.models.other"})


def test_weights_that_do_not_fit_config(saved_sim_model, tmp_path):
    arrays = _arrays(saved_sim_model)
    header = _header(arrays)
    header["config"]["n_latent"] += 1
    bad = _write_raw(tmp_path / "shape.npz", arrays, header)
    with pytest.raises(sa.ModelFileError, match="do not fit the saved config"):
        sa.VAE.load(bad)


# ---------------------------------------------------------------- versions

def test_future_format_version_refused(trained_sim, tmp_path, monkeypatch):
    _, model = trained_sim
    monkeypatch.setattr(sio, "FORMAT_VERSION", sio.FORMAT_VERSION + 1)
    path = model.save(tmp_path / "future.npz")
    monkeypatch.undo()
    assert _header(_arrays(path))["format_version"] == sio.FORMAT_VERSION + 1
    with pytest.raises(sa.ModelFileError, match=r"newer than this scgen_ae.*upgrade"):
        sa.VAE.load(path)


def _version0_file(model, path, monkeypatch):
    """An old-format file: version 0, whose weights were stored under 'weights/' (not 'w/')."""
    header = {"model": "VAE", "config": __import__("dataclasses").asdict(model.config),
              "var_names": model.var_names, "batch_key": model.batch_key,
              "batch_categories": model.batch_categories, "layer": model.layer,
              "history": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in model.history.items()}}
    arrays = {f"weights/{k}": t.detach().cpu().numpy() for k, t in model.module.state_dict().items()}
    with monkeypatch.context() as m:
        m.setattr(sio, "FORMAT_VERSION", 0)
        return sio.write_model_file(path, header, arrays)


def test_migration_hook_applied(trained_sim, tmp_path, monkeypatch):
    adata, model = trained_sim
    path = _version0_file(model, tmp_path / "v0.npz", monkeypatch)
    assert _header(_arrays(path))["format_version"] == 0

    # without a migration the file is refused with a clear message
    monkeypatch.setattr(sio, "MIGRATIONS", {})
    with pytest.raises(sa.ModelFileError, match="No migration from model file format 0 to 1"):
        sa.VAE.load(path)

    calls = []

    def v0_to_v1(header, arrays):
        calls.append(header["format_version"])
        arrays = {("w/" + k[len("weights/"):] if k.startswith("weights/") else k): a for k, a in arrays.items()}
        return {**header, "format_version": 1}, arrays

    monkeypatch.setitem(sio.MIGRATIONS, 0, v0_to_v1)
    loaded = sa.VAE.load(path)
    assert calls == [0]
    assert np.array_equal(loaded.get_latent(adata), model.get_latent(adata))


def test_migration_chain(trained_sim, tmp_path, monkeypatch):
    """Migrations run one version at a time up to the current one."""
    adata, model = trained_sim
    monkeypatch.setattr(sio, "FORMAT_VERSION", 0)
    path = model.save(tmp_path / "old.npz")
    monkeypatch.setattr(sio, "FORMAT_VERSION", 3)
    seen = []

    def step(header, arrays):
        seen.append(header["format_version"])
        return {**header, "format_version": header["format_version"] + 1}, arrays

    monkeypatch.setattr(sio, "MIGRATIONS", {0: step, 1: step, 2: step})
    loaded = sa.VAE.load(path)
    assert seen == [0, 1, 2]
    assert np.array_equal(loaded.get_latent(adata), model.get_latent(adata))


# ---------------------------------------------------------------- load with data

def test_load_with_adata_missing_genes(trained_sim, saved_sim_model, snapshot):
    adata, _ = trained_sim
    sub = adata[:, 3:].copy()
    snap = snapshot(sub)
    with pytest.raises(sa.InputError, match=r"3 of the model's \d+ genes are not in adata.var_names"):
        sa.VAE.load(saved_sim_model, adata=sub)
    snap.assert_unchanged(sub)


def test_load_with_adata_ok(trained_sim, saved_sim_model):
    adata, model = trained_sim
    loaded = sa.VAE.load(saved_sim_model, adata=adata)
    assert np.array_equal(loaded.get_latent(adata), adata.obsm["X_vae"])
    assert loaded.device.type == "cpu"
    assert not loaded.module.training


# ---------------------------------------------------------------- atomic writes

def test_save_is_atomic(trained_sim, tmp_path, monkeypatch):
    adata, model = trained_sim
    path = model.save(tmp_path / "model.npz")
    before = path.read_bytes()

    real_savez = np.savez

    def failing_savez(file, *args, **kwds):
        file.write(b"PK\x03\x04 half a zip file")  # something lands on disk first
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    monkeypatch.setattr(np, "savez", real_savez)
    assert path.read_bytes() == before, "the previous model file was damaged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"], "a temporary file was left behind"
    assert np.array_equal(sa.VAE.load(path).get_latent(adata), adata.obsm["X_vae"])


def test_save_interrupted_by_keyboard_interrupt(trained_sim, tmp_path, monkeypatch):
    _, model = trained_sim

    def interrupted(file, *args, **kwds):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "new.npz")
    assert list(tmp_path.iterdir()) == []

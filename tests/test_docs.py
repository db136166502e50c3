"""The API reference (Sphinx, docs/) lists every public name and builds without a warning."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import scgen_ae as sa

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"pp": sa.pp, "tl": sa.tl, "pl": sa.pl, "datasets": sa.datasets, "metrics": sa.metrics,
           "models": sa.models}


def _public_names(module) -> list[str]:
    """``__all__``, or else the public functions and classes that scgen_ae defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", "").startswith("scgen_ae")]


@pytest.mark.parametrize("short", list(MODULES))
def test_api_reference_lists_every_public_name(short):
    api = (ROOT / "docs" / "api.rst").read_text()
    names = _public_names(MODULES[short])
    assert names
    missing = [n for n in names if f"scgen_ae.{short}.{n}\n" not in api and f"scgen_ae.{short}.{n} " not in api]
    assert not missing, f"add these to docs/api.rst: {[f'scgen_ae.{short}.{n}' for n in missing]}"


def test_api_reference_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="Sphinx is in the test extra: pip install -e '.[test]'")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    # -E: read every source again (a cached build would hide the warnings), -W: warnings are errors.
    result = subprocess.run([sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
                             str(ROOT / "docs"), str(tmp_path / "html")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr[-5000:]
    html = (tmp_path / "html" / "api.html").read_text()
    for name in ("scgen_ae.tl.vae", "scgen_ae.datasets.load", "scgen_ae.models.VAE"):
        assert f'id="{name}"' in html, f"{name} has no entry in the rendered reference"

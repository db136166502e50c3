"""The docs (Sphinx, docs/) list every public name and build without a warning: API reference,
install page, changelog, the tutorials as pages, links to scanpy and anndata.

The links are checked against small inventories the test writes (the real ones are on the
projects' sites, out of reach offline); numpy's and pandas' are left to the network, so the
build also shows that an unreachable inventory does not fail it under -W.
"""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import zlib
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


def _documented_whole(api: str, short: str) -> bool:
    """api.rst documents ``scgen_ae.<short>`` by ``.. automodule::`` with a bare ``:members:``:
    autodoc then documents every name of the module's ``__all__`` (checked on the built page)."""
    directive = re.search(rf"^\.\. automodule:: scgen_ae\.{short}\n((?:   :.*\n)*)", api, re.M)
    return bool(directive and hasattr(MODULES[short], "__all__")
                and re.search(r"^   :members:[ \t]*$", directive.group(1), re.M))


@pytest.mark.parametrize("short", list(MODULES))
def test_api_reference_lists_every_public_name(short):
    api = (ROOT / "docs" / "api.rst").read_text()
    names = _public_names(MODULES[short])
    assert names
    if _documented_whole(api, short):
        return
    missing = [n for n in names if f"scgen_ae.{short}.{n}\n" not in api and f"scgen_ae.{short}.{n} " not in api]
    assert not missing, f"add these to docs/api.rst: {[f'scgen_ae.{short}.{n}' for n in missing]}"


def test_models_are_documented_by_their_automodule():
    """A new model class needs no line in api.rst: exported in sa.models.__all__, it is documented."""
    assert _documented_whole((ROOT / "docs" / "api.rst").read_text(), "models")


def test_every_model_class_is_also_at_the_top_level():
    """sa.VAE, sa.NMF, ...: each trained-model class of sa.models.__all__ (not their configs and
    torch modules, nor BaseModel), the same object, in sa.__all__."""
    classes = [n for n in sa.models.__all__ if isinstance(getattr(sa.models, n), type)
               and issubclass(getattr(sa.models, n), sa.models.BaseModel) and n != "BaseModel"]
    assert {"VAE", "DAE", "LDA", "ClassicLDA", "NMF"} <= set(classes)
    assert all(getattr(sa, n) is getattr(sa.models, n) for n in classes)
    assert [n for n in sa.__all__ if n in sa.models.__all__] == classes


def _inventory(path: Path, project: str, *entries: str) -> None:
    """A Sphinx objects.inv (version 2) holding ``entries`` ("name domain:role priority uri dispname")."""
    header = f"# Sphinx inventory version 2\n# Project: {project}\n# Version: 0\n" \
             "# The remainder of this file is compressed using zlib.\n"
    path.write_bytes(header.encode() + zlib.compress("".join(f"{e}\n" for e in entries).encode()))


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx", reason="Sphinx is in the docs extra: pip install -e '.[test]'")
    pytest.importorskip("myst_nb", reason="myst-nb is in the docs extra: pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("docs")
    _inventory(tmp / "scanpy.inv", "scanpy", "scanpy.pp.neighbors py:function 1 generated/scanpy.pp.neighbors.html#$ -")
    _inventory(tmp / "anndata.inv", "anndata", "anndata.AnnData py:class 1 generated/anndata.AnnData.html#$ -")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               SCGEN_AE_DOCS_INVENTORIES=str(tmp))
    # -E: read every source again (a cached build would hide the warnings), -W: warnings are errors.
    result = subprocess.run([sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
                             str(ROOT / "docs"), str(tmp / "html")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr[-5000:]
    return tmp / "html"


def test_api_reference_builds_without_warnings(html):
    page = (html / "api.html").read_text()
    names = ["scgen_ae.tl.vae", "scgen_ae.datasets.load"] + [f"scgen_ae.models.{n}" for n in sa.models.__all__]
    for name in names:
        assert f'id="{name}"' in page, f"{name} has no entry in the rendered reference"
    # the methods a model class defines or takes from a mixin are on its entry; BaseModel's only on BaseModel's
    for name in ("VAE.get_latent", "VAE.get_latent_representation", "NMF.transform", "BaseModel.save",
                 "VAEModule.loss"):
        assert f'id="scgen_ae.models.{name}"' in page, f"{name} has no entry in the rendered reference"
    assert 'id="scgen_ae.models.NMF.save"' not in page


def test_every_tutorial_is_a_page_with_its_gallery_figure(html):
    tutorials = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
    assert tutorials
    for path in tutorials:
        page = (html / "tutorials" / f"{path.stem}.html").read_text()
        first_code = next(line for line in path.read_text().splitlines() if line.startswith("import "))
        assert first_code.split()[1] in page and 'class="cell' in page, f"{path.name}: its code is not on the page"
        assert f'src="../_images/{path.stem}.png"' in page, f"{path.name}: its gallery figure is not on the page"
        assert (html / "_images" / f"{path.stem}.png").is_file()
        assert f"tutorials/{path.stem}.html" in (html / "tutorials.html").read_text()


def test_install_and_changelog_pages(html):
    install = (html / "install.html").read_text()
    assert "torch==2.13.0" in install and "[test]" in install and "SCGEN_AE_DATA" in install
    changelog = (html / "changelog.html").read_text()
    first = next(line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## "))
    assert first[3:].strip() in changelog, "CHANGELOG.md is not rendered"
    index = (html / "index.html").read_text()
    assert all(f'href="{page}.html"' in index for page in ("install", "tutorials", "api", "changelog"))


def test_references_to_scanpy_and_anndata_resolve(html):
    # AnnData in signatures is named anndata._core.anndata.AnnData: linked by its public name
    assert 'href="https://anndata.readthedocs.io/en/stable/generated/anndata.AnnData.html#anndata.AnnData"' \
        in (html / "api.html").read_text()
    assert 'href="https://scanpy.readthedocs.io/en/stable/generated/scanpy.pp.neighbors.html#scanpy.pp.neighbors"' \
        in (html / "index.html").read_text()

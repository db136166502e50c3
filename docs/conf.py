"""Sphinx configuration of the scgen_ae docs (``python -m sphinx -W -b html docs docs/_build``)."""
import os
import sys
from pathlib import Path

# Document the source tree this file sits in, not whatever copy is installed.
sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import tutorial_pages  # noqa: E402 - needs the path above

project = "scgen_ae"
author = "the scgen_ae developers"
copyright = "the scgen_ae developers"  # noqa: A001 - Sphinx's name for it

# myst_nb brings myst_parser (Markdown pages: install, changelog) and reads the tutorials.
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.intersphinx", "myst_nb"]
# The docstrings are numpy style (like scanpy's); no Google style anywhere.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
# The house style lists every key a front writes under a "Sets" heading (scanpy says the same in prose).
napoleon_custom_sections = ["Sets"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"

# The tutorials (jupytext percent files) are pages; running them is the test suite's job
# (tests/test_tutorials.py, in a Jupyter kernel), so the build executes nothing.
tutorial_pages.copy_tutorials()
nb_custom_formats = {".py": "tutorial_pages.reads"}
nb_execution_mode = "off"
myst_heading_anchors = 3

# Links to the libraries scgen_ae is used with. Each inventory is read from
# $SCGEN_AE_DOCS_INVENTORIES/<name>.inv (or docs/_inventories/<name>.inv) when that file exists,
# else fetched from the site. Offline (CI) nothing can be fetched: the build still passes under
# -W (see tutorial_pages.tolerate_offline_inventories) and those references are plain text.
_INVENTORIES = Path(os.environ.get("SCGEN_AE_DOCS_INVENTORIES", Path(__file__).parent / "_inventories"))
_SITES = {"scanpy": "https://scanpy.readthedocs.io/en/stable/",
          "anndata": "https://anndata.readthedocs.io/en/stable/",
          "numpy": "https://numpy.org/doc/stable/",
          "pandas": "https://pandas.pydata.org/docs/"}
intersphinx_mapping = {name: (url, (str(_INVENTORIES / f"{name}.inv"), None) if (_INVENTORIES / f"{name}.inv").is_file()
                              else None) for name, url in _SITES.items()}
intersphinx_timeout = 10  # seconds per inventory: an unreachable site must not stall the build
tutorial_pages.tolerate_offline_inventories()

# Tests and ``.ci/run`` build with -W: every warning is an error, so the reference cannot rot.
exclude_patterns = ["_build", "_ext", "_inventories", "conf.py", "**/__pycache__"]
html_theme = "alabaster"
html_static_path: list[str] = []


def setup(app):
    """Link classes named by a private module path (see ``tutorial_pages.public_name``)."""
    # after intersphinx's own handler (priority 500), so a name it resolves is never rewritten
    app.connect("missing-reference", tutorial_pages.public_name, priority=900)

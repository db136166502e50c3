"""Sphinx configuration of the scgen_ae API reference (``python -m sphinx -W -b html docs docs/_build``)."""
import os
import sys

# Document the source tree this file sits in, not whatever copy is installed.
sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("MPLBACKEND", "Agg")

project = "scgen_ae"
author = "the scgen_ae developers"
copyright = "the scgen_ae developers"  # noqa: A001 - Sphinx's name for it

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
# The docstrings are numpy style (like scanpy's); no Google style anywhere.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
# The house style lists every key a front writes under a "Sets" heading (scanpy says the same in prose).
napoleon_custom_sections = ["Sets"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Tests and ``.ci/run`` build with -W: every warning is an error, so the reference cannot rot.
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

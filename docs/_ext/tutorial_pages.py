"""Sphinx glue: the jupytext tutorials as pages, and intersphinx that tolerates being offline.

The tutorials are read as notebooks (myst-nb, through :func:`reads`) and never executed at
build time: ``tests/test_tutorials.py`` runs them in a Jupyter kernel instead. Each page shows
the gallery figure (``docs/gallery``) under the cell that draws it.

Signatures name classes by their defining module (``anndata._core.anndata.AnnData``), which the
libraries' inventories do not list; :func:`public_name` links them by their public name.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import jupytext
import nbformat

DOCS = Path(__file__).resolve().parents[1]
TUTORIALS = DOCS.parent / "tutorials"
PAGES = DOCS / "tutorials"  # generated, git-ignored: Sphinx reads sources from docs/ only


def copy_tutorials() -> list[str]:
    """Mirror ``tutorials/NN_*.py`` into ``docs/tutorials/``; return the page names.

    A file is rewritten only when it changed, so an incremental build rereads only those pages.
    """
    PAGES.mkdir(exist_ok=True)
    sources = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
    for stale in set(PAGES.glob("*.py")) - {PAGES / s.name for s in sources}:
        stale.unlink()
    for source in sources:
        target = PAGES / source.name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
    return [s.stem for s in sources]


def reads(text: str, **kwargs) -> nbformat.NotebookNode:
    """A percent-format tutorial as a notebook, with its gallery image after the cell saving it."""
    nb = jupytext.reads(text, fmt="py:percent")
    cells = []
    for cell in nb.cells:
        cells.append(cell)
        saved = re.search(r"[\"'](\d\d_\w+\.png)[\"']", cell.source) if cell.cell_type == "code" else None
        if saved and (DOCS / "gallery" / saved.group(1)).exists():
            cells.append(nbformat.v4.new_markdown_cell(
                f"![The figure this cell draws](../gallery/{saved.group(1)})\n\n"
                "*The figure this cell draws (from `docs/gallery`; the docs do not run the tutorial).*"))
    nb.cells = cells
    return nb


class _OfflineInventory(logging.Filter):
    """Turn intersphinx's "failed to reach any of the inventories" warning into an info line.

    That warning has no type, so ``suppress_warnings`` cannot silence it, and under ``-W`` it
    fails an offline build. Offline, the references render as plain text instead of links.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and "failed to reach any of the inventories" in str(record.msg):
            record.levelno, record.levelname, record.nonl = logging.INFO, "INFO", False
            record.msg = "intersphinx (offline?): " + str(record.msg)
        return True


def tolerate_offline_inventories() -> None:
    """Install :class:`_OfflineInventory` on the logger of intersphinx's loader."""
    for name in ("sphinx.sphinx.ext.intersphinx._load", "sphinx.sphinx.ext.intersphinx"):
        logging.getLogger(name).addFilter(_OfflineInventory())


def public_name(app, env, node, contnode):
    """Resolve a missing Python reference through intersphinx under a shorter module path:
    ``anndata._core.anndata.AnnData`` -> ``anndata.AnnData``, ``pandas.core.frame.DataFrame``
    -> ``pandas.DataFrame``. None (unresolved, as before) when no shorter name is known."""
    from sphinx.ext.intersphinx import missing_reference

    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or target.count(".") < 2:
        return None
    *modules, name = target.split(".")
    for depth in range(len(modules) - 1, 0, -1):
        shorter = node.deepcopy()
        shorter["reftarget"] = ".".join([*modules[:depth], name])
        found = missing_reference(app, env, shorter, contnode)
        if found is not None:
            return found
    return None

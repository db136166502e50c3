"""Every tutorial runs through a real Jupyter kernel, on small settings, and shows each figure once.

One case per ``tutorials/[0-9][0-9]_*.py`` file: a new tutorial is picked up by adding the
file. jupytext reads it into a notebook, nbclient executes it in a fresh ``python3`` kernel
(ipykernel, the interpreter running the tests) with matplotlib's inline backend, as Jupyter
does, in a temporary folder, on one thread, with ``SCGEN_AE_TUTORIAL_SMALL=1``. A custom runner
would not see what a reader sees: a plot that is both shown and returned is drawn twice by the
inline backend, and an ``Axes`` repr printed under it. The checks, cell by cell: every cell
runs; a cell that draws (an ``sa.pl`` figure, ``sc.pl.``, ``plt.show()``) has exactly one image
output, any other cell none (one figure per cell, so a reader sees which call drew it); no
cell's result is a matplotlib object's text repr.

Optional dependencies: the tutorials run as if scib-metrics were absent (it is hidden in the
kernel before the first cell), which checks the scIB cell's clean skip and saves about a minute
of CPU (JAX compilation, kBET) per run; the scIB cell itself is checked by running the tutorial
by hand.
"""
from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path

import pytest

import scgen_ae as sa

jupytext = pytest.importorskip("jupytext", reason="in the test extra: pip install -e '.[test]'")
nbformat = pytest.importorskip("nbformat", reason="in the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="in the test extra: pip install -e '.[test]'")
jupyter_client = pytest.importorskip("jupyter_client", reason="nbclient's dependency")

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
GALLERY = ROOT / "docs" / "gallery"
HIDDEN = ("scib_metrics",)  # optional dependencies the tutorials run without (see the docstring)
INLINE = "module://matplotlib_inline.backend_inline"  # what ipykernel selects, and what draws twice
# the sa.pl functions that draw (those with scanpy's show=; sa.pl.top_genes is a table), sc.pl, plt.show()
_FIGURES = [name for name in sa.pl.__all__ if "show" in inspect.signature(getattr(sa.pl, name)).parameters]
DRAWS = re.compile(rf"\bsa\.pl\.(?:{'|'.join(_FIGURES)})\(|\bsc\.pl\.|\bplt\.show\(")
MPL_REPR = re.compile(r"<(?:Figure|Axes|matplotlib\.)|AxesSubplot|^Text\(")
# the kernel's first cell: hide modules, and report the interpreter and backend the test expects
SETUP = ("import sys\nimport matplotlib\nfor _name in {hidden!r}:\n    sys.modules[_name] = None\n"
         "print(sys.executable, matplotlib.get_backend())")


def _kernel_run(nb, cwd: Path, *, hidden=HIDDEN, timeout: int = 900):
    """Execute ``nb`` in a new kernel; return its cells (the setup cell removed) and the error, if any."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND=INLINE, SCGEN_AE_TUTORIAL_SMALL="1",
               SCGEN_AE_TUTORIAL_FIGURES=str(cwd / "figures"))
    nb.cells.insert(0, nbformat.v4.new_code_cell(SETUP.format(hidden=tuple(hidden))))
    # IPC sockets in the folder, not TCP ports: nothing listens on the network
    km = jupyter_client.KernelManager(kernel_name="python3", transport="ipc", ip=str(cwd / "kernel"))
    client = nbclient.NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(cwd)}})
    error = None
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as err:
        error = err
    setup = nb.cells.pop(0)
    assert f"{sys.executable} {INLINE}" in _text(setup), f"kernel is not this interpreter with inline: {_text(setup)}"
    return [c for c in nb.cells if c.cell_type == "code"], error


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def problems(cells) -> list[str]:
    """What a reader would see wrong, one line per cell: a missing or doubled figure, a stray
    figure, a matplotlib object's repr as the cell's result."""
    found = []
    for i, cell in enumerate(cells, start=1):
        where = f"code cell {i} ({cell.source.strip().splitlines()[-1][:60]!r})"
        expected = 1 if any(DRAWS.search(line) for line in cell.source.splitlines()
                            if not line.lstrip().startswith("#")) else 0
        if _images(cell) != expected:
            found.append(f"{where}: {_images(cell)} images, expected {expected}")
        for out in cell.get("outputs", []):
            plain = out.get("data", {}).get("text/plain", "")
            # a returned Figure is drawn (an image, counted above); an Axes or a Text shows its repr
            if out.output_type == "execute_result" and "image/png" not in out.data and MPL_REPR.search(plain):
                found.append(f"{where}: its result is a matplotlib repr {plain[:80]!r}")
    return found


def _failed_cell(cells, error) -> str:
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))[-5000:]  # IPython colours its tracebacks
    for i, cell in enumerate(cells, start=1):
        if any(o.output_type == "error" for o in cell.get("outputs", [])):
            return f"code cell {i} of {len(cells)} failed:\n{message}"
    return f"the run failed:\n{message}"


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials/NN_*.py found"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_a_kernel(path, tmp_path):
    for name in re.findall(r"sa\.datasets\.load\(\s*[\"'](\w+)[\"']", path.read_text()):
        try:
            sa.datasets.find(name)
        except FileNotFoundError as err:
            pytest.skip(f"tutorial needs the shared dataset {name!r}: {err}")
    cells, error = _kernel_run(jupytext.read(path), tmp_path)
    assert error is None, f"{path.name}: {_failed_cell(cells, error)}"
    assert "small settings: True" in _text(cells[0]), "the first cell must read SCGEN_AE_TUTORIAL_SMALL"
    assert not problems(cells), f"{path.name} under a Jupyter kernel:\n" + "\n".join(problems(cells))
    # The gallery figure is drawn by the tutorial itself, so the README's image stays reproducible.
    assert (tmp_path / "figures" / f"{path.stem}.png").stat().st_size > 10_000


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_format(path):
    """jupytext percent format with its header, markdown explaining each step, no outputs, plain Python."""
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:\n#   jupytext:\n#     formats: py:percent"), "jupytext header missing"
    assert text.count("# %% [markdown]") >= 5, "explain the why of each step in markdown cells"
    assert "SCGEN_AE_TUTORIAL_SMALL" in text
    # jupytext keeps magics as comments, so only the notebook shows them; `python file.py` must run the tutorial
    magics = [line for cell in jupytext.read(path).cells if cell.cell_type == "code"
              for line in cell.source.splitlines() if line.lstrip().startswith(("%", "!"))]
    assert not magics, f"IPython magics or shell escapes make the tutorial a notebook only: {magics}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_gallery_has_the_tutorial_figure(path):
    png = GALLERY / f"{path.stem}.png"
    assert png.exists(), f"render {path.name} and copy figures/{png.name} to docs/gallery/"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 150_000, "keep gallery images small"
    assert f"docs/gallery/{png.name}" in (ROOT / "README.md").read_text(), "show it in the README's Gallery"


# ---------------------------------------------------------------- the checks themselves

def test_the_checks_see_a_doubled_figure_a_repr_and_a_failing_cell(tmp_path):
    """One probe notebook: what a returned Figure, a returned Axes and a hidden module do in a kernel."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in (
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\nplt.show()",  # fine
        "fig, ax = plt.subplots()\nax.plot([1, 2])\nplt.show()\nfig",  # shown, then again as the result
        "fig, ax = plt.subplots()\nax.plot([1, 2])",  # a stray figure in a cell that does not plot
        "plt.subplots()[1].plot([1])\nplt.show()\nplt.gca()",  # the Axes repr as the result, and a stray
        "try:\n    import wave\nexcept ImportError:\n    print('wave is hidden')",
        "raise ValueError('boom')",
        "print('never reached')",
    )])
    cells, error = _kernel_run(nb, tmp_path, hidden=("wave",), timeout=120)
    assert _failed_cell(cells, error).startswith("code cell 6 of 7 failed")
    assert "ValueError: boom" in _failed_cell(cells, error)
    assert "wave is hidden" in _text(cells[4]) and not cells[6].get("outputs")
    found = problems(cells[:4])
    assert [line.split(": ")[1][:20] for line in found] == [
        "2 images, expected 1", "1 images, expected 0", "its result is a matp",  # [<matplotlib.lines.Line2D ...>]
        "2 images, expected 1", "its result is a matp"], found
    assert [line[:11] for line in found] == ["code cell 2", "code cell 3", "code cell 3", "code cell 4", "code cell 4"]

"""Every tutorial runs, cell by cell, on small settings; a failing cell fails the test.

One case per ``tutorials/[0-9][0-9]_*.py`` file: a new tutorial is picked up by adding
the file. Each runs in a fresh process through ``tutorials/_execute.py`` (what a
notebook kernel does, without installing one: see that file's docstring) with
``SCGEN_AE_TUTORIAL_SMALL=1``, in a temporary folder, on one thread.

Optional dependencies: the tutorials run as if scib-metrics were absent (``--without``),
which is the CI case (it is in the ``bench`` extra, not ``test``) and checks the cell's
clean skip. Where it is installed it would add about a minute of CPU (JAX compilation,
kBET) to every run; the scIB cell itself is checked by running the tutorial by hand.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import scgen_ae as sa

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
EXECUTE = ROOT / "tutorials" / "_execute.py"
GALLERY = ROOT / "docs" / "gallery"
WITHOUT = ("--without", "scib_metrics")  # optional dependencies the CI machine does not have


def _execute(path: Path, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MPLBACKEND="Agg", SCGEN_AE_TUTORIAL_FIGURES=str(cwd / "figures"))
    return subprocess.run([sys.executable, str(EXECUTE), *args, str(path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _datasets_used(path: Path) -> list[str]:
    return re.findall(r"sa\.datasets\.load\(\s*[\"'](\w+)[\"']", path.read_text())


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials/NN_*.py found"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    for name in _datasets_used(path):
        try:
            sa.datasets.find(name)
        except FileNotFoundError as err:
            pytest.skip(f"tutorial needs the shared dataset {name!r}: {err}")
    result = _execute(path, tmp_path, "--small", *WITHOUT)
    assert result.returncode == 0, f"{path.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "small settings: True" in result.stdout, "the first cell must read SCGEN_AE_TUTORIAL_SMALL"
    # The gallery figure is drawn by the tutorial itself, so the README's image stays reproducible.
    assert (tmp_path / "figures" / f"{path.stem}.png").stat().st_size > 10_000


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_format(path):
    """jupytext percent format with its header, markdown explaining each step, no outputs."""
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:\n#   jupytext:\n#     formats: py:percent"), "jupytext header missing"
    assert text.count("# %% [markdown]") >= 5, "explain the why of each step in markdown cells"
    assert "SCGEN_AE_TUTORIAL_SMALL" in text


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_gallery_has_the_tutorial_figure(path):
    png = GALLERY / f"{path.stem}.png"
    assert png.exists(), f"render {path.name} and copy figures/{png.name} to docs/gallery/"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 150_000, "keep gallery images small"
    assert f"docs/gallery/{png.name}" in (ROOT / "README.md").read_text(), "show it in the README's Gallery"


# ---------------------------------------------------------------- the executor itself

def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "99_probe.py"
    path.write_text("# ---\n# jupyter:\n# ---\n\n" + body)
    return path


def test_a_failing_cell_fails_the_run_and_names_the_cell(tmp_path):
    path = _write(tmp_path, "# %%\nx = 1\n\n# %% [markdown]\n# text\n\n# %%\ny = x + 1\nraise ValueError('boom')\n\n"
                            "# %%\nprint('never reached')\n")
    result = _execute(path, tmp_path)
    assert result.returncode == 1
    assert "FAILED: code cell 2 of 3 (99_probe.py, line 12)" in result.stderr
    assert "ValueError: boom" in result.stderr and "line 13" in result.stderr  # the line in the file
    assert "never reached" not in result.stdout


def test_cells_share_a_namespace_and_display_their_last_expression(tmp_path):
    path = _write(tmp_path, "# %%\nimport pandas as pd\nx = 20\n\n# %%\nint(pd.Series([x + 1, x + 2]).sum())\n\n"
                            "# %%\nx = None\nx\n")
    result = _execute(path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\n43\n" in result.stdout  # evaluated and displayed, like Out[2]
    assert "None" not in result.stdout.replace("[cell", "")  # None is not displayed, as in Jupyter


def test_magics_are_refused_before_anything_runs(tmp_path):
    path = _write(tmp_path, "# %%\nprint('first cell ran')\n\n# %%\n%time x = 1\n")
    result = _execute(path, tmp_path)
    assert result.returncode != 0
    assert "IPython magic" in result.stderr and "first cell ran" not in result.stdout


def test_without_makes_an_installed_module_unimportable(tmp_path):
    path = _write(tmp_path, "# %%\ntry:\n    import wave\nexcept ImportError:\n    print('wave is hidden')\n")
    result = _execute(path, tmp_path, "--without", "wave")
    assert result.returncode == 0, result.stderr
    assert "wave is hidden" in result.stdout

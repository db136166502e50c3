"""Execute a jupytext percent-format tutorial cell by cell, the way a notebook kernel does.

    python tutorials/_execute.py tutorials/01_batch_correction.py [--small]

Why not nbclient: a Jupyter kernel (ipykernel, pyzmq, jupyter_client, ...) costs more to
install in CI than the tutorials take to run, and adds nothing a test needs. What a
kernel does with a notebook is what this does with the ``.py``:

- the code cells run in order, in one namespace, in a fresh process (the test starts one
  per tutorial), with ``__name__ == "__main__"``;
- a cell's last expression is evaluated and displayed (its ``repr`` is printed), so a
  table that fails to render fails here too;
- figures are closed after each cell, as the inline backend does;
- the first cell that raises stops the run: the traceback names the cell and its line
  in the tutorial file, and the exit status is 1.

IPython magics (``%time``, ``!pip``) would not run here: they are refused up front, and
the tutorials use none, so the ``.py`` stays a plain script too. ``--small`` sets
``SCGEN_AE_TUTORIAL_SMALL=1``, the switch every tutorial reads in its first code cell
to lower epochs and sizes for the CI run. ``--without MODULE`` makes ``import MODULE``
fail as if it were not installed, to check a tutorial's path for a missing optional
dependency on a machine that has it.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

_CELL = re.compile(r"^# %%(.*)$")


@dataclass
class Cell:
    kind: str  # "code" or "markdown"
    line: int  # 1-based line of the first source line in the file
    source: str


def read_cells(path: str | os.PathLike) -> list[Cell]:
    """The cells of a percent-format file (the YAML header before the first marker is dropped)."""
    cells: list[Cell] = []
    kind, start, lines = None, 0, []
    for number, text in enumerate(Path(path).read_text().splitlines(), start=1):
        marker = _CELL.match(text)
        if marker:
            if kind is not None:
                cells.append(Cell(kind, start, "\n".join(lines)))
            kind = "markdown" if "[markdown]" in marker.group(1) else "code"
            start, lines = number + 1, []
        elif kind is not None:
            lines.append(text)
    if kind is not None:
        cells.append(Cell(kind, start, "\n".join(lines)))
    return cells


def _check_no_magics(cell: Cell, path: Path) -> None:
    for offset, text in enumerate(cell.source.splitlines()):
        if text.lstrip().startswith(("%", "!")):
            raise SyntaxError(f"{path}:{cell.line + offset}: IPython magic or shell escape {text.strip()!r}; "
                              "tutorials must be plain Python so that CI and `python file.py` run them.")


def _run_cell(cell: Cell, path: Path, namespace: dict) -> None:
    # Pad with blank lines so that tracebacks give the line number in the tutorial file.
    tree = ast.parse("\n" * (cell.line - 1) + cell.source, filename=str(path))
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, str(path), "exec"), namespace)  # noqa: S102
    if last is not None:
        value = eval(compile(ast.Expression(last.value), str(path), "eval"), namespace)  # noqa: S307
        if value is not None:
            print(repr(value))


def run(path: str | os.PathLike) -> int:
    """Run every code cell of ``path``; return 0, or 1 after printing the failing cell's traceback."""
    import matplotlib

    matplotlib.use("Agg")  # no display in CI; plt.show() is a no-op
    import matplotlib.pyplot as plt

    path = Path(path).resolve()
    namespace = {"__name__": "__main__", "__file__": str(path)}
    code = [c for c in read_cells(path) if c.kind == "code"]
    for cell in code:
        _check_no_magics(cell, path)
    for i, cell in enumerate(code, start=1):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            _run_cell(cell, path, namespace)
        except Exception:  # noqa: BLE001 - report any failure as the cell's failure
            print(f"\nFAILED: code cell {i} of {len(code)} ({path.name}, line {cell.line})", file=sys.stderr)
            traceback.print_exc()
            return 1
        finally:
            plt.close("all")
        print(f"[cell {i}/{len(code)} (line {cell.line}) done: {time.perf_counter() - start:.1f} s wall, "
              f"{time.process_time() - cpu:.1f} s CPU]", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tutorial", help="a percent-format .py tutorial")
    parser.add_argument("--small", action="store_true", help="small settings (what CI runs)")
    parser.add_argument("--without", action="append", default=[], metavar="MODULE",
                        help="run as if MODULE were not installed (repeatable)")
    args = parser.parse_args(argv)
    for name in args.without:
        sys.modules[name] = None  # the import system raises ImportError for a None entry
    if args.small:
        os.environ["SCGEN_AE_TUTORIAL_SMALL"] = "1"
    return run(args.tutorial)


if __name__ == "__main__":
    sys.exit(main())

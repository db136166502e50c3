"""Package-wide settings (``sa.settings``) and the ``"scgen_ae"`` logger.

Mirrors scanpy's ``sc.settings``: set once, used by every front when the call does not say
otherwise. Verbosity follows scanpy's levels and, left at None, scanpy's own setting, so
``sc.settings.verbosity = 0`` quiets this package as well.
"""
from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("scgen_ae")

#: scanpy's verbosity levels: 0 errors, 1 warnings, 2 info, 3 hints, 4 debug
_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG, 4: logging.DEBUG}
PROGRESS_BARS = ("auto", "text", "none")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class Settings:
    """``sa.settings``: defaults for every training front.

    Attributes
    ----------
    n_threads
        torch threads used while training and restored afterwards; None: every usable core.
        Training sets them itself because other libraries (numba through
        ``sc.pp.highly_variable_genes``) change torch's count under the user.
    device
        "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:1" or "mps"; an unavailable
        device is refused with :class:`~scgen_ae.InputError` before any work.
    seed
        Default random seed of training.
    verbosity
        scanpy's levels: 0 errors only (no progress bars), 1 warnings, 2 info, 3 hints, 4
        debug. None (default): scanpy's ``sc.settings.verbosity`` when scanpy is imported,
        else 1.
    progress_bar
        "auto" (a widget in Jupyter when ipywidgets is installed, text otherwise), "text",
        or "none".
    """

    def __init__(self):
        self._n_threads: int | None = None
        self._device = "auto"
        self._seed = 0
        self._verbosity: int | None = None
        self._progress_bar = "auto"

    def __repr__(self) -> str:
        return (f"scgen_ae settings: n_threads={self.n_threads!r}, device={self.device!r}, seed={self.seed!r}, "
                f"verbosity={self._verbosity!r} (effective {self.effective_verbosity}), "
                f"progress_bar={self.progress_bar!r}")

    @property
    def n_threads(self) -> int | None:
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value):
        from ._validate import InputError, _is_int

        if value is not None and not (_is_int(value) and value >= 1):
            raise InputError(f"sa.settings.n_threads={value!r}: it must be None (every usable core) or an integer >= 1.")
        self._n_threads = value

    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value):
        from ._validate import check_device

        check_device(value)
        self._device = value

    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, value):
        from ._validate import InputError, _is_int

        if not (_is_int(value) and value >= 0):
            raise InputError(f"sa.settings.seed={value!r}: it must be an integer >= 0.")
        self._seed = int(value)

    @property
    def verbosity(self) -> int | None:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value):
        from ._validate import InputError

        if value is not None and int(value) not in _LEVELS:
            raise InputError(f"sa.settings.verbosity={value!r}: choose None (follow scanpy) or 0 to 4.")
        self._verbosity = None if value is None else int(value)

    @property
    def effective_verbosity(self) -> int:
        """The level in force: this package's own, else scanpy's (when imported), else 1."""
        if self._verbosity is not None:
            return self._verbosity
        scanpy = sys.modules.get("scanpy")
        try:
            return int(scanpy.settings.verbosity) if scanpy is not None else 1
        except (AttributeError, TypeError, ValueError):
            return 1

    @property
    def progress_bar(self) -> str:
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value):
        from ._validate import InputError

        if value not in PROGRESS_BARS:
            raise InputError(f"sa.settings.progress_bar={value!r}: choose one of {PROGRESS_BARS}.")
        self._progress_bar = value

    def threads(self, n_threads: int | None = None) -> int:
        """Threads for one run: the call's value, else the setting, else every usable core."""
        return int(n_threads or self._n_threads or usable_cores())

    def show_progress(self, requested: bool = True) -> bool:
        """Whether a progress bar is drawn: asked for, a style other than "none", verbosity >= 1."""
        return bool(requested) and self._progress_bar != "none" and self.effective_verbosity >= 1


settings = Settings()


def progress_bar_class():
    """tqdm's widget bar in Jupyter when ipywidgets is there, else the text bar: never the
    widget bar without ipywidgets, which warns "IProgress not found" and draws nothing."""
    import importlib.util

    from tqdm import std

    if settings.progress_bar == "auto" and "ipykernel" in sys.modules:
        try:  # ipywidgets is optional: looked up, not imported (tqdm imports it for its widget bar)
            widgets = sys.modules.get("ipywidgets", False) is not None and importlib.util.find_spec("ipywidgets")
        except (ImportError, ValueError):
            widgets = None
        if widgets:
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm
    return std.tqdm


class _VerbosityFilter(logging.Filter):
    """Let a record through when its level is in force under :attr:`Settings.effective_verbosity`,
    read at each record so a change of scanpy's verbosity applies at once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= _LEVELS[min(settings.effective_verbosity, 4)]


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (Jupyter and pytest replace it after import)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _install_handler() -> None:
    if any(getattr(h, "_scgen_ae", False) for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler._scgen_ae = True
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_VerbosityFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # the handler's filter decides, following the verbosity
    logger.propagate = False  # as scanpy's logger: one line per message, not one more via the root


_install_handler()

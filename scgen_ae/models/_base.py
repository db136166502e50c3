"""What every trained model object shares: data preparation for new cells, safe
save/load, device handling. Models differ only in their torch module and config."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from anndata import AnnData

from .. import _validate as v
from ..covariates import CovariateSpec
from ..data import CellData
from ..io import STRINGS, ModelFileError, header_fields, model_path, read_model_file, write_model_file
from ..spec import DataSpec
from ..train import History


_PACKAGE = __name__.partition(".")[0]


def registry_name(model_cls: type) -> str:
    """The name a model class is saved under and found by on loading.

    The package's own classes keep their bare name (``"VAE"``), which is what every model file
    has held. A class defined elsewhere (a user's subclass) is named by its module and qualified
    name (``"mymodule.VAE"``), so a class that happens to share a package class's name cannot
    take over loading that class's files.
    """
    module = model_cls.__module__
    if module == _PACKAGE or module.startswith(_PACKAGE + "."):
        return model_cls.__name__
    return f"{module}.{model_cls.__qualname__}"


class BaseModel:
    """A trained model: a torch ``module`` plus what is needed to apply it to AnnData.

    Attributes
    ----------
    module : torch.nn.Module
    config : frozen dataclass with the architecture
    spec : :class:`~scgen_ae.spec.DataSpec`, what the model reads from an AnnData; its fields
        are also properties of the model: ``var_names`` (the trained genes, in order),
        ``batch_key``, ``batch_categories``, ``layer`` (the default for new data) and
        ``covariates`` (besides the batch, read from ``obs`` by every method taking an ``adata``)
    history : dict of per-epoch losses (see :class:`scgen_ae.train.History`)
    label_categories : list[str], the classes a label classifier predicts (empty without one)
    label_key : str | None, the ``obs`` column the classifier was trained on
    """

    module_class: ClassVar[type]
    config_class: ClassVar[type]
    registry: ClassVar[dict[str, type]] = {}
    # how the error for data that are not counts names what needs them, and the alternative it
    # offers (see _validate.check_counts): advice must be something this model can do
    counts_needs: ClassVar[str | None] = None  # None: "likelihood=<the model's>" (models with a likelihood)
    counts_otherwise: ClassVar[str | None] = "train a model with likelihood='gaussian' for log-normalised data"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = registry_name(cls)
        known = BaseModel.registry.get(name)
        # the same class defined again (a module reloaded, a notebook cell run twice) replaces itself;
        # two package classes of one bare name would load each other's files
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"The model name {name!r} is taken by {known.__module__}.{known.__qualname__}; "
                            f"rename {cls.__module__}.{cls.__qualname__}.")
        BaseModel.registry[name] = cls

    @classmethod
    def input_kind_of(cls, config) -> str:
        """What a model with ``config`` reads: "counts" or "real"
        (:data:`~scgen_ae.spec.INPUT_KINDS`). Counts unless a model family says otherwise
        (the VAE by its likelihood, NMF by its transform)."""
        return "counts"

    def __init__(self, config, var_names, batch_key, batch_categories, layer=None, history=None, module=None,
                 label_categories=(), label_key=None, covariates: CovariateSpec | None = None):
        self.config = config
        self.spec = DataSpec(tuple(var_names), layer, batch_key, tuple(batch_categories),
                             covariates if covariates is not None else CovariateSpec(), self.input_kind_of(config))
        # the spec's lists as lists (callers index and compare them), built once: the spec is frozen
        self._var_names, self._batch_categories = list(self.spec.var_names), list(self.spec.batch_categories)
        self.label_categories = [str(c) for c in label_categories]
        self.label_key = label_key
        self.history = history if history is not None else History().as_dict()
        self.module = module if module is not None else self.module_class(config)
        self.module.eval()

    # what the model reads from an AnnData: its spec's fields
    var_names = property(lambda self: self._var_names, doc="The trained genes, in order (list of str).")
    batch_categories = property(lambda self: self._batch_categories, doc="The batch categories (list of str).")
    batch_key = property(lambda self: self.spec.batch_key, doc="The obs column of the training batches.")
    layer = property(lambda self: self.spec.layer, doc="The layer trained on (None: X).")
    covariates = property(lambda self: self.spec.covariates, doc="The covariates besides the batch.")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.config).items())
        return f"{type(self).__name__}({fields}; {len(self.var_names)} genes, batches={self.batch_categories})"

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    # ------------------------------------------------------------ data in
    def _cell_data(self, adata: AnnData, layer="model", batch_key="model", pad_missing=False,
                   sorted_indices: bool = True) -> CellData:
        """``adata`` validated against the model's :attr:`spec` (:meth:`~scgen_ae.spec.DataSpec.cells`)."""
        return self.spec.cells(adata, layer=layer, batch_key=batch_key, pad_missing=pad_missing,
                               sorted_indices=sorted_indices, otherwise=self.counts_otherwise,
                               needs=self.counts_needs or f"likelihood={self.config.likelihood!r}")

    @torch.no_grad()
    def _apply(self, cells, fn, batch_size: int = 1024, *, rows: np.ndarray | None = None,
               constants: bool = False, with_part: bool = False) -> list:
        """``fn`` of each minibatch of ``cells``, the module in eval mode: the one loop every
        model runs to apply itself to cells.

        Parameters
        ----------
        cells
            Validated cells (:meth:`_cell_data`): a :class:`~scgen_ae.data.CellData`, or an
            :class:`~scgen_ae.ondisk.OnDiskCellData` read a window at a time.
        fn
            Called with each minibatch, moved to the model's device; with ``with_part``,
            also with the ``slice`` of the cells visited (of ``rows``, or of all cells)
            that it holds, so per-cell inputs (latents, proportions) can be matched to it.
        batch_size
            Cells per minibatch: minibatch i holds the visited cells i * batch_size onwards.
        rows
            The cells to visit, in this order (default: all, in order).
        constants
            Give the minibatches the likelihood's per-cell constants (computed for every
            cell first): only for ``fn`` that score whole-cell likelihoods.

        Returns
        -------
        list
            ``fn``'s results, one per minibatch, in the order of the cells visited.
        """
        order = np.arange(cells.n_cells) if rows is None else np.asarray(rows, dtype=np.int64)
        self.module.eval()
        device = self.device
        out, start = [], 0
        for mb in cells.iterate(order, batch_size, drop_last_if_tiny=False, constants=constants):
            stop = start + len(mb.batch)
            mb = mb.to(device)
            out.append(fn(mb, slice(start, stop)) if with_part else fn(mb))
            start = stop
        return out

    def _apply_adata(self, adata: AnnData, fn, batch_size: int = 1024, *, layer="model", batch_key="model",
                     pad_missing: bool = False, constants: bool = False, with_part: bool = False) -> list:
        """:meth:`_apply` to all cells of ``adata``. Rows are only densified, so the counts are
        not copied to sort their indices."""
        data = self._cell_data(adata, layer, batch_key, pad_missing, sorted_indices=False)
        return self._apply(data, fn, batch_size, constants=constants, with_part=with_part)

    def _transformed_covs(self, transform_covariates):
        """A function of a minibatch's ``covs`` that puts the values of ``transform_covariates``
        (checked here, before any work) in place of each cell's own: decoding "as if"."""
        codes, scaled = self.covariates.fixed_values(transform_covariates)
        if not codes and not scaled:
            return lambda covs: covs

        def transformed(covs):
            cat, cont = (None if c is None else c.clone() for c in covs)
            for j, code in codes.items():
                cat[:, j] = code
            for j, value in scaled.items():
                cont[:, j] = value
            return cat, cont

        return transformed

    def _batch_index(self, transform_batch: str | None) -> int | None:
        if transform_batch is None:
            return None
        if str(transform_batch) not in self.batch_categories:
            raise v.InputError(f"transform_batch={transform_batch!r} is not one of the model's batches {self.batch_categories}.")
        return self.batch_categories.index(str(transform_batch))

    @torch.no_grad()
    def sample_scale(self, data: CellData, cells: np.ndarray, decode_batch: np.ndarray,
                     generator: torch.Generator) -> torch.Tensor:
        """Samples of the normalised expression (expression shares), ``(len(cells), n_genes)``:
        one per entry of ``cells`` (rows of the validated ``data``, repeats allowed), decoded
        in batch ``decode_batch`` (codes). Differential expression pairs these across groups."""
        unique, inverse = np.unique(cells, return_inverse=True)  # encode each cell once
        mb = data.minibatch(unique, constants=False).to(self.device)
        pick = torch.as_tensor(inverse, device=self.device)
        batch = torch.as_tensor(decode_batch, dtype=torch.long, device=self.device)
        return self._log_scale(mb, pick, batch, generator).exp()

    def _log_scale(self, mb, pick: torch.Tensor, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no normalised expression to sample.")

    def _decoder_output(self, mb) -> dict:
        """The predicted distribution of ``mb``'s counts (keys as in
        :func:`~scgen_ae.likelihoods.cell_log_prob`), each cell decoded in its own batch."""
        raise NotImplementedError(f"{type(self).__name__} predicts no count distribution.")

    def entry_log_prob(self, adata: AnnData, rows, cols, counts, *, layer="model", batch_key="model",
                       batch_size: int = 1024) -> np.ndarray:
        """Log-probability of ``counts[i]`` at cell ``rows[i]``, gene ``cols[i]`` under the
        distribution the model predicts for that entry from the cell's counts in ``adata``
        (its own batch and observed library size; the VAE decodes the posterior mean).

        ``rows`` index the cells of ``adata``, ``cols`` the model's genes (:attr:`var_names`);
        all three are ``(k,)``. Scoring held-out entries this way (``counts`` hidden from
        ``adata``) is :func:`~scgen_ae.tl.denoise_benchmark`'s negative log-likelihood.
        Returns ``(k,)`` float64.
        """
        from ..likelihoods import entry_log_prob

        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.float32)
        if not (rows.shape == cols.shape == counts.shape and rows.ndim == 1):
            raise v.InputError(f"rows, cols and counts must be 1-D arrays of one length; got shapes {rows.shape}, "
                               f"{cols.shape}, {counts.shape}.")
        data = self._cell_data(adata, layer, batch_key)
        if len(rows) and (rows.min() < 0 or rows.max() >= data.n_cells or cols.min() < 0
                          or cols.max() >= len(self.var_names)):
            raise v.InputError(f"rows must index the {data.n_cells} cells and cols the {len(self.var_names)} "
                               "model genes.")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        result = np.empty(len(rows))
        as_tensor = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731

        def fn(mb, part):
            lo, hi = np.searchsorted(sorted_rows, (part.start, part.stop))
            pick = order[lo:hi]  # the entries of the cells of mb, in the order of the argsort
            if not len(pick):  # no entry to score in these cells: no decoding
                return
            out = self._decoder_output(mb)
            lp = entry_log_prob(self.config.likelihood, as_tensor(counts[pick]), out,
                                as_tensor(rows[pick] - part.start), as_tensor(cols[pick]))
            result[pick] = lp.double().cpu().numpy()

        self._apply(data, fn, batch_size, with_part=True)
        return result

    # ------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model atomically; returns the path written: ``path`` when it ends in
        ``.npz``, else ``path`` + ``.npz`` ("run_1.5" -> "run_1.5.npz"). :meth:`load` takes
        the same ``path``."""
        header = {
            "model": registry_name(type(self)),
            "config": dataclasses.asdict(self.config),
            **self.spec.to_header(),
            "history": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.history.items()},
            "label_categories": self.label_categories,
            "label_key": self.label_key,
        }
        arrays = {f"w/{k}": t.detach().cpu().numpy() for k, t in self.module.state_dict().items()}
        return write_model_file(path, header, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, adata: AnnData | None = None, device: str = "cpu") -> "BaseModel":
        """Load a model written by :meth:`save` (same ``path``: any name round-trips). Nothing is unpickled.

        Any file that is not an intact model file raises :class:`~scgen_ae.ModelFileError`.
        With ``adata``, also checks that it holds every trained gene. The file names its class
        (:func:`registry_name`): a class of one's own loads once its module is imported.
        """
        header, arrays = read_model_file(path)
        where = str(model_path(path))
        header_fields(where, header, {"model": (str,)})
        model_cls = BaseModel.registry.get(header["model"])
        if model_cls is None or not issubclass(model_cls, cls):
            # a class defined outside the package is known only once its module has been imported
            hint = (" If it is a class of your own, import the module that defines it first."
                    if model_cls is None and "." in header["model"] else "")
            raise ModelFileError(f"{where!r} holds a {header['model']!r} model, not a {registry_name(cls)}.{hint}")
        header_fields(where, header, {"config": (dict,), "var_names": STRINGS, "batch_key": (str, type(None)),
                                      "batch_categories": STRINGS, "layer": (str, type(None)), "history": (dict,)})
        try:
            # fields added later take the value files written before them were trained with
            legacy = getattr(model_cls.config_class, "LEGACY_DEFAULTS", {})
            config = model_cls.config_class(**{**legacy, **_without_dropped(model_cls.config_class, header["config"])})
            # the weights' shapes follow the config; these lists must match it too, or genes,
            # batches and labels would be silently mislabelled (files written before the label
            # classifier have no label fields: none)
            labels = header.get("label_categories", [])
            if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
                raise ValueError("label_categories is not a list of strings")
            lists = {"var_names": header["var_names"], "batch_categories": header["batch_categories"],
                     "label_categories": labels}
            for name, listed in (("n_genes", "var_names"), ("n_batches", "batch_categories"),
                                 ("n_labels", "label_categories")):
                size = getattr(config, name, None)
                if size is not None and len(lists[listed]) != size:
                    raise ValueError(f"the header lists {len(header[listed])} {listed} but the config has "
                                     f"{name}={size!r}")
            history = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in header["history"].items()}
            covariates = CovariateSpec.from_header(header.get("covariates"))  # files before covariates: none
            if (covariates.n_categories != tuple(getattr(config, "n_covariate_categories", ()))
                    or covariates.n_continuous != getattr(config, "n_continuous_covariates", 0)):
                raise ValueError("the covariates listed do not match the config's covariate sizes")
            model = model_cls(config, header["var_names"], header["batch_key"], header["batch_categories"],
                              header["layer"], history, label_categories=labels,
                              label_key=header.get("label_key") if isinstance(header.get("label_key"), str) else None,
                              covariates=covariates)
        except (TypeError, ValueError, RuntimeError) as err:  # a config the module cannot be built from
            raise ModelFileError(f"The header of {where!r} does not describe a valid {model_cls.__name__}: {err}. "
                                 "The file was edited or is corrupt; save the model again with Model.save().") from err
        state = {k[2:]: torch.from_numpy(np.array(a)) for k, a in arrays.items() if k.startswith("w/")}
        try:
            model.module.load_state_dict(state)
        except RuntimeError as err:
            raise ModelFileError(f"The weights in {where!r} do not fit the saved config: {err}") from err
        model.module.to(device).eval()
        if adata is not None:
            v.align_genes(adata, model.var_names)
        return model


def _without_dropped(config_class, stored: dict) -> dict:
    """A file's config without the fields its config class has since dropped
    (``LEGACY_DROPPED``: each field and the one value files ever held; another value means
    the file was edited, refused as ValueError)."""
    stored = dict(stored)
    for name, written in getattr(config_class, "LEGACY_DROPPED", {}).items():
        value = stored.pop(name, written)
        if value != written:
            raise ValueError(f"config {name}={value!r}, but files of this model only ever held {written!r}")
    return stored

"""Covariates besides the batch: which ``obs`` columns a model is conditioned on, and how
their values become codes and scaled numbers.

A :class:`CovariateSpec` is learnt from the training cells (the categories of each
categorical covariate, the centre and scale of each continuous one), stored with the model
and in its file, and applied unchanged to any new cells, so that a code or a scaled value
means the same thing at training and at apply time.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._validate import InputError, MissingKeyError, present_categories


def _keys(value, name: str) -> tuple[str, ...]:
    """``categorical_covariate_keys`` / ``continuous_covariate_keys`` as a tuple of column names."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(k, str) for k in value):
        raise InputError(f"{name}={value!r}: pass a list of adata.obs column names (or None).")
    if len(set(value)) != len(value):
        raise InputError(f"{name}={list(value)!r} names a column twice.")
    return tuple(value)


def _column(obs: pd.DataFrame, key: str, name: str) -> pd.Series:
    if key not in obs:
        cols = ", ".join(map(repr, obs.columns[:20])) or "none"
        raise MissingKeyError(f"{name} names {key!r}, which is not a column of adata.obs (columns: {cols}).")
    return obs[key]


def _continuous(obs: pd.DataFrame, key: str) -> np.ndarray:
    col = _column(obs, key, "continuous_covariate_keys")
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise InputError(f"adata.obs[{key!r}] is a continuous covariate but holds {col.dtype} values; pass numbers, "
                         f"or list it in categorical_covariate_keys.")
    values = col.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"adata.obs[{key!r}] has {int(bad.sum())} missing or infinite values (a continuous "
                         "covariate needs a finite number for every cell); fill or drop those cells.")
    return values


@dataclass(frozen=True)
class CovariateSpec:
    """The covariates of a model, learnt from its training cells.

    Attributes
    ----------
    categorical_keys
        ``obs`` columns of the categorical covariates, in order.
    categories
        Per categorical covariate, its categories; codes index these.
    continuous_keys
        ``obs`` columns of the continuous covariates, in order.
    center, scale
        Per continuous covariate, the training mean and standard deviation: the model sees
        ``(value - center) / scale``.
    """

    categorical_keys: tuple[str, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()
    continuous_keys: tuple[str, ...] = ()
    center: tuple[float, ...] = ()
    scale: tuple[float, ...] = field(default=())

    @property
    def n_categories(self) -> tuple[int, ...]:
        """Categories per categorical covariate (the sizes of the model's tables)."""
        return tuple(len(c) for c in self.categories)

    @property
    def n_continuous(self) -> int:
        return len(self.continuous_keys)

    def __bool__(self) -> bool:
        return bool(self.categorical_keys or self.continuous_keys)

    @classmethod
    def learn(cls, obs: pd.DataFrame, categorical_keys=None, continuous_keys=None,
              batch_key: str | None = None) -> "CovariateSpec":
        """Validate the covariate columns of the training cells and learn their encoding.

        Refuses (:class:`~scgen_ae.InputError`) a key that is not an ``obs`` column, is the
        ``batch_key`` or is listed twice, a categorical covariate with missing values or a
        single category, and a continuous covariate that is not numeric, has NaN / Inf, or
        is constant over all cells (it would carry no information).
        """
        cat_keys = _keys(categorical_keys, "categorical_covariate_keys")
        cont_keys = _keys(continuous_keys, "continuous_covariate_keys")
        both = sorted(set(cat_keys) & set(cont_keys))
        if both:
            raise InputError(f"{both} are listed as both categorical and continuous covariates; list each once.")
        if batch_key is not None and batch_key in cat_keys + cont_keys:
            raise InputError(f"{batch_key!r} is the batch_key; it is already a covariate of the model, do not list it "
                             "in categorical_covariate_keys / continuous_covariate_keys.")
        categories = []
        for key in cat_keys:
            col = _column(obs, key, "categorical_covariate_keys")
            if col.isna().any():
                raise InputError(f"adata.obs[{key!r}] has {int(col.isna().sum())} missing values; assign those cells "
                                 "a category or drop them.")
            cats = tuple(present_categories(col))
            if len(cats) < 2:
                raise InputError(f"adata.obs[{key!r}] has a single category ({cats[0]!r}) over all cells: as a "
                                 "covariate it would explain nothing. Leave it out.")
            categories.append(cats)
        center, scale = [], []
        for key in cont_keys:
            values = _continuous(obs, key)
            sd = float(values.std())
            if not sd > 0:
                raise InputError(f"adata.obs[{key!r}] is constant ({values[0]:g}) over all cells: as a covariate it "
                                 "would explain nothing. Leave it out.")
            center.append(float(values.mean()))
            scale.append(sd)
        return cls(cat_keys, tuple(categories), cont_keys, tuple(center), tuple(scale))

    def check_values(self, values: Mapping | None) -> dict:
        """``values`` (covariate -> one value for every cell, e.g. ``{"donor": "d1"}``) checked
        against the spec: known keys, known categories, finite numbers."""
        if not values:
            return {}
        if not isinstance(values, Mapping):
            raise InputError(f"transform_covariates={values!r}: pass a dict of covariate -> value.")
        known = self.categorical_keys + self.continuous_keys
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"transform_covariates names {unknown}, which are not covariates of the model "
                             f"(covariates: {list(known) or 'none'}; the batch goes to transform_batch).")
        for key, value in values.items():
            if key in self.categorical_keys:
                cats = self.categories[self.categorical_keys.index(key)]
                if str(value) not in cats:
                    raise InputError(f"transform_covariates[{key!r}]={value!r} is not a category of the model "
                                     f"({list(cats)[:10]}).")
            elif not isinstance(value, (int, float, np.number)) or isinstance(value, bool) or not np.isfinite(value):
                raise InputError(f"transform_covariates[{key!r}]={value!r}: a continuous covariate takes a finite "
                                 "number.")
        return dict(values)

    def fixed_values(self, values: Mapping | None) -> tuple[dict[int, int], dict[int, float]]:
        """``values`` (see :meth:`check_values`) as {column: code} of the categorical and
        {column: scaled value} of the continuous covariates: what decoding "as if every cell
        had these values" puts in place of each cell's own."""
        values = self.check_values(values)
        codes = {j: self.categories[j].index(str(values[k]))
                 for j, k in enumerate(self.categorical_keys) if k in values}
        scaled = {j: (float(values[k]) - self.center[j]) / self.scale[j]
                  for j, k in enumerate(self.continuous_keys) if k in values}
        return codes, scaled

    def encode(self, obs: pd.DataFrame, values: Mapping | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Codes ``(n_cells, n_categorical)`` int64 and scaled values ``(n_cells, n_continuous)``
        float32 of the cells in ``obs`` (None where the spec has none). ``values`` set a
        covariate to one value for every cell (see :meth:`check_values`). Categories the
        model was not trained on are refused, naming :meth:`~scgen_ae.models.VAE.map_query`."""
        values = self.check_values(values)
        n = len(obs)
        codes = None
        if self.categorical_keys:
            codes = np.empty((n, len(self.categorical_keys)), dtype=np.int64)
            for j, (key, cats) in enumerate(zip(self.categorical_keys, self.categories)):
                lookup = {c: i for i, c in enumerate(cats)}
                if key in values:
                    codes[:, j] = lookup[str(values[key])]
                    continue
                col = _column(obs, key, "the model's categorical covariate")
                if col.isna().any():
                    raise InputError(f"adata.obs[{key!r}] has {int(col.isna().sum())} missing values; assign those "
                                     "cells a category or drop them.")
                strings = col.astype(str).to_numpy()
                unseen = sorted(set(strings) - set(cats))
                if unseen:
                    raise InputError(f"adata.obs[{key!r}] has categories the model was not trained on: {unseen[:10]} "
                                     f"(known: {list(cats)[:10]}). Map them onto known ones, or extend the model with "
                                     "model.map_query(query, batch_key=...), which learns new categories.")
                codes[:, j] = np.fromiter((lookup[s] for s in strings), dtype=np.int64, count=n)
        scaled = None
        if self.continuous_keys:
            scaled = np.empty((n, len(self.continuous_keys)), dtype=np.float32)
            for j, key in enumerate(self.continuous_keys):
                raw = np.full(n, float(values[key])) if key in values else _continuous(obs, key)
                scaled[:, j] = (raw - self.center[j]) / self.scale[j]
        return codes, scaled

    def extended(self, obs: pd.DataFrame) -> tuple["CovariateSpec", dict[str, list[str]]]:
        """The spec with the new categories of ``obs`` appended (known ones keep their codes),
        and the new categories per covariate: what :meth:`~scgen_ae.models.VAE.map_query` learns."""
        categories, new = [], {}
        for key, cats in zip(self.categorical_keys, self.categories):
            col = _column(obs, key, "the model's categorical covariate")
            if col.isna().any():
                raise InputError(f"query.obs[{key!r}] has {int(col.isna().sum())} missing values; assign those cells "
                                 "a category or drop them.")
            added = [c for c in present_categories(col) if c not in cats]
            if added:
                new[key] = added
            categories.append(tuple(cats) + tuple(added))
        return CovariateSpec(self.categorical_keys, tuple(categories), self.continuous_keys, self.center,
                             self.scale), new

    # ------------------------------------------------------------ model files
    def to_header(self) -> dict:
        return {"categorical_keys": list(self.categorical_keys), "categories": [list(c) for c in self.categories],
                "continuous_keys": list(self.continuous_keys), "center": list(self.center),
                "scale": list(self.scale)}

    @classmethod
    def from_header(cls, header: dict | None) -> "CovariateSpec":
        """The spec stored by :meth:`to_header`; files written before covariates have none.
        Raises ``ValueError`` on a malformed record (the loader turns it into a
        :class:`~scgen_ae.ModelFileError`)."""
        if header is None:
            return cls()
        try:
            spec = cls(tuple(map(str, header["categorical_keys"])),
                       tuple(tuple(map(str, c)) for c in header["categories"]),
                       tuple(map(str, header["continuous_keys"])), tuple(map(float, header["center"])),
                       tuple(map(float, header["scale"])))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"the covariates record is malformed ({err!r})") from None
        if len(spec.categories) != len(spec.categorical_keys) or not (
                len(spec.center) == len(spec.scale) == len(spec.continuous_keys)):
            raise ValueError("the covariates record lists keys and encodings of different lengths")
        return spec

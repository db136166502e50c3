"""Checkpoints of a training run, to stop a long run and resume it where it was.

A checkpoint holds what the next epoch depends on: the weights, the best weights so
far, the optimizer state (Adam's moments and step), the history, the early-stopping
counters and every random generator (numpy's shuffling state and each rank's torch
state), so a resumed run continues the interrupted one exactly (tested bit for bit on
the CPU). It is written with the model-file machinery (:mod:`scgen_ae.io`): arrays plus
a JSON header, SHA-256, atomic rename, nothing pickled.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .io import ModelFileError, header_fields, read_model_file, write_model_file

KIND = "training-checkpoint"
# what must match for a resumed run to continue the same run (max_epochs may grow)
FINGERPRINT = ("n_cells", "n_train", "seed", "batch_size", "world_size")


def _arrays(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": t.detach().cpu().numpy() for k, t in state.items()}


def _tensors(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: torch.from_numpy(np.array(a)) for k, a in arrays.items() if k.startswith(prefix + "/")}


def save(path: str | os.PathLike, *, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
         best_state: dict | None, history: dict, loop: dict, rng_state: dict | None,
         torch_rng: np.ndarray) -> Path:
    """Write a checkpoint. ``loop``: epoch, best_loss, since_best and the :data:`FINGERPRINT`
    fields; ``torch_rng``: (world_size, L) uint8, one torch RNG state per rank."""
    opt = optimizer.state_dict()
    arrays = _arrays("w", module.state_dict())
    arrays.update(_arrays("best", best_state or {}))
    for i, per_param in opt["state"].items():
        arrays.update(_arrays(f"opt/{i}", per_param))
    arrays["torch_rng"] = np.asarray(torch_rng, dtype=np.uint8)
    best = loop.get("best_loss")
    header = {
        "model": KIND,
        "loop": {**loop, "best_loss": None if best is None or math.isinf(best) else float(best)},
        "param_groups": opt["param_groups"],
        "history": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in history.items()},
        "rng": rng_state,
    }
    return write_model_file(path, header, arrays)


def load(path: str | os.PathLike, expect: dict) -> dict:
    """Read a checkpoint and check it belongs to this run (``expect``: the fingerprint).

    Returns ``weights``, ``best_state`` (or None), ``optimizer`` (a state dict),
    ``history``, ``loop``, ``rng`` and ``torch_rng``.
    """
    header, arrays = read_model_file(path)
    if header.get("model") != KIND:
        raise ModelFileError(f"{str(path)!r} is not a training checkpoint (it holds {header.get('model')!r}).")
    header_fields(path, header, {"loop": (dict,), "param_groups": (list,), "history": (dict,),
                                 "rng": (dict, type(None))})
    loop = header["loop"]
    if "torch_rng" not in arrays or "best_loss" not in loop:
        missing = "torch_rng" if "torch_rng" not in arrays else "loop.best_loss"
        raise ModelFileError(f"The checkpoint {str(path)!r} has no {missing}: it is incomplete or was edited. "
                             "Pass resume=False (or another checkpoint_path) to start a new run.")
    wrong = {k: (loop.get(k), expect[k]) for k in FINGERPRINT if loop.get(k) != expect[k]}
    if wrong:
        detail = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in wrong.items())
        raise ValueError(
            f"The checkpoint {str(path)!r} belongs to another run ({detail}). Resume with the same data, "
            "seed, batch_size and number of processes, or pass resume=False (or another checkpoint_path) "
            "to start a new run."
        )
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in header["param_groups"]]
    state: dict[int, dict] = {}
    for key, value in _tensors("opt", arrays).items():
        i, name = key.split("/", 1)
        state.setdefault(int(i), {})[name] = value
    best = _tensors("best", arrays)
    return {
        "weights": _tensors("w", arrays),
        "best_state": best or None,
        "optimizer": {"state": state, "param_groups": groups},
        "history": header["history"],
        "loop": {**loop, "best_loss": math.inf if loop["best_loss"] is None else loop["best_loss"]},
        "rng": header["rng"],
        "torch_rng": arrays["torch_rng"],
    }

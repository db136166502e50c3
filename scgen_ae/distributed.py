"""Data-parallel training on several devices / nodes: PyTorch DDP driven by Lightning Fabric.

``train.fit`` uses this when ``devices * num_nodes > 1``. Every process runs the same
script, started by the engine's launcher::

    torchrun --nproc_per_node=8 train.py                      # one node, 8 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \\
             --rdzv-endpoint=HOST:29500 train.py              # two nodes

with ``sa.tl.vae(adata, devices=8, num_nodes=..., ...)`` in ``train.py`` (CPU: gloo,
CUDA: NCCL; Fabric picks). What keeps the ranks in step:

- every rank visits its own shard of the training cells each epoch: whole chunks of
  the file (``data.chunk_size`` rows; one cell for in-memory data), dealt round-robin
  from one permutation that every rank draws alike from (seed, epoch), trimmed to the
  same length on every rank so all run the same number of steps (DDP all-reduces
  gradients at every step);
- training and validation losses are summed over ranks, so every rank sees the same
  monitored value and takes the same early-stopping decision (also all-reduced);
- a non-finite loss on any rank makes the all-reduced gradient non-finite on all, so
  all stop together;
- only rank 0 writes checkpoints (with every rank's torch RNG state), and the final
  weights are broadcast from rank 0 so every rank returns the same model.
"""
from __future__ import annotations

import os

import numpy as np
import torch


class Distributed:
    """A started Fabric DDP run: rank, world size, device and the collectives fit needs."""

    def __init__(self, accelerator: str, devices: int, num_nodes: int):
        from lightning.fabric import Fabric
        from lightning.fabric.strategies import DDPStrategy

        if "WORLD_SIZE" not in os.environ:
            raise ValueError(
                f"devices={devices}, num_nodes={num_nodes} trains with one process per device: start the "
                f"script with the launcher, e.g. `torchrun --nproc_per_node={devices} your_script.py` "
                "(see scgen_ae/distributed.py), or pass devices=1."
            )
        # find_unused_parameters: some likelihoods leave a parameter out of the loss (poisson: dispersion)
        self.fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                             strategy=DDPStrategy(find_unused_parameters=True), precision="32-true")
        self.fabric.launch()  # under torchrun: joins the process group, spawns nothing
        self.rank, self.world = self.fabric.global_rank, self.fabric.world_size
        self.device = self.fabric.device

    def wrap(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer):
        """DDP-wrap ``module``; its ``loss`` method goes through DDP's forward (gradient sync)
        and returns the :class:`~scgen_ae.losses.LossRecord`'s fields as a dict (Fabric walks a
        forward's output and cannot rebuild a frozen dataclass; train.fit makes it a record)."""
        wrapped, optimizer = self.fabric.setup(_FieldsOfLoss(module), optimizer)
        wrapped.mark_forward_method("loss")
        return wrapped, optimizer

    def all_sum(self, values) -> np.ndarray:
        t = torch.as_tensor(np.asarray(values, dtype=np.float64))
        return self.fabric.all_reduce(t, reduce_op="sum").numpy()

    def any(self, flag: bool) -> bool:
        return bool(self.all_sum([float(flag)])[0] > 0)

    def gather(self, array: np.ndarray) -> np.ndarray:
        """(world, ...) stack of every rank's ``array``."""
        return self.fabric.all_gather(torch.from_numpy(np.ascontiguousarray(array))).numpy()

    def broadcast_state(self, module: torch.nn.Module) -> None:
        for t in module.state_dict().values():
            torch.distributed.broadcast(t, src=0)

    def barrier(self) -> None:
        self.fabric.barrier()


class _FieldsOfLoss(torch.nn.Module):
    """``module`` whose ``loss`` returns the record's fields as a dict (tensors, None, a dict
    of penalties), which DDP and Fabric can walk; the module's own parameters only."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def loss(self, mb, kl_weight: float = 1.0) -> dict:
        record = self.module.loss(mb, kl_weight)
        if isinstance(record, torch.Tensor):  # a module that returns its objective alone
            return {"total": record, "reconstruction": record}
        return {"total": record.total, "reconstruction": record.reconstruction, "kl": record.kl,
                "penalties": dict(record.penalties), "monitor": record.monitor}


def shard(idx: np.ndarray, block: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's training cells for ``epoch``: whole blocks of ``block`` consecutive rows,
    dealt round-robin from a permutation all ranks draw alike, trimmed to equal length."""
    rng = np.random.default_rng([seed, epoch])
    keys = idx // max(1, block)
    piece = np.cumsum(np.r_[0, keys[1:] != keys[:-1]])
    owner = np.empty(piece[-1] + 1, dtype=np.int64)
    owner[rng.permutation(len(owner))] = np.arange(len(owner)) % world
    owner_of_cell = owner[piece]
    n_equal = int(np.bincount(owner_of_cell, minlength=world).min())
    mine = idx[owner_of_cell == rank]
    return np.sort(rng.permutation(mine)[:n_equal])

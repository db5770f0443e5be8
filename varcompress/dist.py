"""Process-group plumbing for `torchrun`: gloo on CPU, NCCL on GPU; a no-op for one process."""
from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from .errors import VarcompressError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_dist(device: str = "auto", timeout_min: float = 60.0) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    has_cuda = torch.cuda.is_available()
    if device.startswith("cuda") and not has_cuda:
        raise VarcompressError(f"run.device: {device} requested but no GPU is available")
    use_cuda = device.startswith("cuda") or (device == "auto" and has_cuda)
    if world > 1 and ":" in device:
        raise VarcompressError("run.device: with torchrun each process uses cuda:LOCAL_RANK; use auto or cuda")
    if use_cuda:
        dev = torch.device(device if ":" in device else f"cuda:{local if world > 1 else 0}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    owns = False
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if use_cuda else "gloo",
                                 timeout=datetime.timedelta(minutes=timeout_min))
        owns = True
    return Dist(rank, world, local, dev, owns)


@contextmanager
def dist_session(device: str = "auto", timeout_min: float = 60.0):
    """`init_dist`, then `shutdown` on leaving: together after a success, at once after a failure."""
    d = init_dist(device, timeout_min)
    try:
        yield d
    except BaseException:
        shutdown(d, clean=False)
        raise
    shutdown(d)


def barrier(d: Dist) -> None:
    if d.world > 1:
        tdist.barrier()


def all_mean(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        t = t.clone()
        tdist.all_reduce(t)
        t /= d.world
    return t


def broadcast_error(msg: str | None, d: Dist) -> str | None:
    """Share rank 0's failure (or None) with every rank, so all stop together."""
    if d.world == 1:
        return msg
    box = [msg]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(d: Dist, clean: bool = True) -> None:
    """Leave together after a success (a rank tearing gloo down while a peer still talks to it
    can abort the peer); after a failure just leave (a peer may be stuck in another collective)."""
    if d.owns_group and tdist.is_initialized():
        try:
            if clean:
                tdist.barrier()
        finally:
            tdist.destroy_process_group()

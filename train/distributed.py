"""The process group `torchrun` sets up (or one process without it), FSDP2 full sharding, and the few collectives
the loop needs. The backend is NCCL on GPUs and gloo on CPU; rendezvous binds where torchrun's `--master-addr`
says (127.0.0.1 for one machine: by default its store listens on every interface)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from transformers import LlavaForConditionalGeneration

from configs.secrets import exposure_warning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this run initialised the process group and tears it down

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def start() -> Processes:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        address = os.environ.get("MASTER_ADDR", "127.0.0.1")
        if local_rank == 0 and (warning := exposure_warning("torchrun's rendezvous store", address)):
            logger.warning(warning + " (one machine: torchrun --master-addr 127.0.0.1)")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Processes(rank, world_size, device, owns)


def stop(processes: Processes) -> None:
    if processes.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()


def all_sum(values: list[float], processes: Processes) -> list[float]:
    if not processes.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=processes.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_true(flag: bool, processes: Processes) -> bool:
    """Whether every rank has its batch: they stop together, or FSDP's collectives hang on the ones that stopped."""
    if not processes.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=processes.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def gather_objects(value: Any, processes: Processes) -> list[Any]:
    if not processes.distributed:
        return [value]
    gathered: list[Any] = [None] * processes.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def shard(model: LlavaForConditionalGeneration, param_dtype: torch.dtype | None) -> None:
    """FSDP2 full shard: each transformer block of both towers is a unit gathered only while it runs, then the root
    (embeddings, projector, head). `param_dtype` bf16 computes in bf16 and reduces gradients in float32."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in [*_blocks(model.model.vision_tower), *_blocks(model.model.language_model)]:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def _blocks(tower: torch.nn.Module) -> torch.nn.ModuleList:
    """A tower's stack of transformer blocks (`layers`, wherever its class nests it)."""
    return next(
        m for name, m in tower.named_modules() if name.endswith("layers") and isinstance(m, torch.nn.ModuleList)
    )

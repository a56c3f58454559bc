"""The trained model in the Hugging Face format (`LlavaForConditionalGeneration.from_pretrained` loads it; vLLM
serves it), with its processor. Under FSDP every rank takes part in gathering the full weights; rank 0 writes
them through a plain (unsharded) model built on the meta device, with LoRA adapters merged in."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from configs.train import LoraConfig
from storage.outdir import fsync_path
from train.distributed import Processes, barrier
from train.parts import merge_lora


def export(
    model: torch.nn.Module,
    config: LlavaConfig,
    processor: LlavaProcessor,
    lora: LoraConfig | None,
    folder: Path,
    processes: Processes,
) -> None:
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if processes.main:
        with torch.device("meta"):
            plain = LlavaForConditionalGeneration._from_config(config, dtype=torch.float32)
        if lora is None:
            plain.load_state_dict(state, assign=True)
        else:
            plain = merge_lora(plain, lora, state)
        plain.tie_weights()
        partial = folder.with_name(folder.name + ".partial")  # a killed export never looks like a model
        shutil.rmtree(partial, ignore_errors=True)
        plain.save_pretrained(partial)
        processor.save_pretrained(partial)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        fsync_path(folder.parent)
    barrier(processes)

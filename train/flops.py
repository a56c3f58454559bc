"""Model FLOPs per step and MFU, as the training issue defines them: every matmul weight costs 6 FLOPs per position
it sees when it is trained and 2 when frozen, plus attention (4 s^2 d per layer forward for a sequence of s
positions, times 3 with its backward when the tower trains, never halved for the causal mask); recompute by
gradient checkpointing is not counted. The language model sees every position of a sample, the projector each
image embedding, the vision tower each patch and its CLS."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlavaForConditionalGeneration

# Dense bf16 peaks (no sparsity) of the GPUs a run is likely to meet, by a substring of torch's device name.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "B200": 2250e12,
}


def _weight_flops(module: torch.nn.Module) -> float:
    """FLOPs per position of a module's matmul weights: 6 per trained weight, 2 per frozen one."""
    total = 0.0
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear | torch.nn.Conv2d):
            total += (6 if layer.weight.requires_grad else 2) * layer.weight.numel()
    return total


def _trains(module: torch.nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


@dataclass(frozen=True)
class FlopsModel:
    text_per_position: float
    projector_per_embedding: float
    vision_per_image: float
    text_attention: float  # per squared position
    embeddings_per_image: int

    @classmethod
    def of(cls, model: LlavaForConditionalGeneration) -> FlopsModel:
        """Measured on the unsharded model (sharded weights report their local size)."""
        config = model.config
        text, vision = config.text_config, config.vision_config
        language = model.model.language_model
        text_width = text.num_attention_heads * getattr(text, "head_dim", text.hidden_size // text.num_attention_heads)
        vision_positions = (vision.image_size // vision.patch_size) ** 2 + 1
        vision_tower = model.model.vision_tower
        vision_attention = (12 if _trains(vision_tower) else 4) * vision_positions**2 * vision.hidden_size
        return cls(
            text_per_position=_weight_flops(language) + _weight_flops(model.lm_head),
            projector_per_embedding=_weight_flops(model.model.multi_modal_projector),
            vision_per_image=vision_positions * _weight_flops(vision_tower)
            + vision_attention * vision.num_hidden_layers,
            text_attention=(12 if _trains(language) else 4) * text_width * text.num_hidden_layers,
            embeddings_per_image=config.image_seq_length,
        )

    def step(self, lengths: list[int], images: int) -> float:
        """FLOPs of the samples of `lengths` positions holding `images` images (padding not counted)."""
        text = sum(self.text_per_position * length + self.text_attention * length**2 for length in lengths)
        return text + images * (self.vision_per_image + self.embeddings_per_image * self.projector_per_embedding)


def peak_flops(device: torch.device, configured: float | None) -> float | None:
    """The per-device peak MFU divides by; None on CPU or an unknown GPU (MFU is then not reported)."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)

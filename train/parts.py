"""Which parts of the model learn: the projector, the projector and the language model (the paper), or everything;
optionally through LoRA adapters on the language model instead of its full weights."""

from __future__ import annotations

import re

from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import LlavaForConditionalGeneration

from configs.train import LoraConfig, Trainable


def _lora(cfg: LoraConfig) -> PeftLoraConfig:
    names = "|".join(re.escape(name) for name in cfg.target_modules)
    return PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=rf".*language_model\..*\.({names})$",  # never the vision tower's layers of the same name
    )


def add_lora(model: LlavaForConditionalGeneration, cfg: LoraConfig) -> LlavaForConditionalGeneration:
    """The same model with adapters injected into its language model's layers (peft edits it in place)."""
    return get_peft_model(model, _lora(cfg)).get_base_model()


def merge_lora(model: LlavaForConditionalGeneration, cfg: LoraConfig, state: dict) -> LlavaForConditionalGeneration:
    """A plain model whose weights are `state` (a model with adapters) with the adapters merged in."""
    wrapped = get_peft_model(model, _lora(cfg))
    wrapped.get_base_model().load_state_dict(state, assign=True)
    return wrapped.merge_and_unload()


def set_trainable(model: LlavaForConditionalGeneration, trainable: Trainable, lora: bool) -> None:
    language = [*model.model.language_model.parameters(), *model.lm_head.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad = trainable == "all"
    for parameter in model.model.multi_modal_projector.parameters():
        parameter.requires_grad = True
    if trainable != "projector":
        for parameter in language:
            parameter.requires_grad = not lora
    if lora:
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.requires_grad = True

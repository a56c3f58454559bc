"""A LlavaForConditionalGeneration and its LlavaProcessor, loaded whole or assembled from parts by config.

The processor is built so the counts agree with the model: `<image>` is a special token whose id is the config's
`image_token_id` (otherwise LlavaProcessor silently takes another id: with SmolLM2's tokenizer, 44 for `<`), and it
knows the patch size, the CLS embedding and the select strategy (otherwise it counts one image token too few).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from configs.schema import ConfigError
from configs.train import ModelConfig, PartConfig
from pipeline.models.assets import resolve_local
from pipeline.models.llm.transformers_backend import converted_model_dir


def local_source(spec: str, cache_dir: str) -> str:
    """What `from_pretrained` reads for a model spec: a packaged GGUF is converted once by the LLM loader."""
    local = resolve_local(spec)
    if local is None:
        return spec
    if local.suffix == ".gguf":
        local = converted_model_dir(local, Path(cache_dir).expanduser())
    return str(local)


def _tokenizer_spec(cfg: ModelConfig) -> str:
    spec = cfg.tokenizer or cfg.source or cfg.language_model.source
    if spec is None:
        raise ConfigError("model.tokenizer is needed when neither model.source nor language_model.source is set")
    return spec


def load_tokenizer(cfg: ModelConfig):
    """The tokenizer with `<image>` added as a special token, and a pad token (SmolLM2's is its EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(local_source(_tokenizer_spec(cfg), cfg.model_cache_dir))
    if cfg.image_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(cfg.image_token, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _part_config(part: PartConfig, cache_dir: str) -> PretrainedConfig:
    if part.source is None:
        settings = dict(part.config)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)
    config = AutoConfig.from_pretrained(local_source(part.source, cache_dir))
    config = getattr(config, "vision_config", config)  # a whole CLIP checkpoint: its vision half
    for key, value in part.config.items():
        setattr(config, key, value)
    return config


def _check_positions(cfg: ModelConfig, text_config: PretrainedConfig) -> None:
    if cfg.rope_parameters is not None:
        text_config.rope_parameters = dict(cfg.rope_parameters)
        factor = float(cfg.rope_parameters.get("factor", 1.0))
        text_config.max_position_embeddings = int(text_config.max_position_embeddings * factor)
    if cfg.model_max_length > text_config.max_position_embeddings:
        raise ConfigError(
            f"model.model_max_length {cfg.model_max_length} exceeds the language model's "
            f"{text_config.max_position_embeddings} positions: set model.rope_parameters or use a long-context model"
        )


def _assemble(cfg: ModelConfig, vocab_size: int, image_token_id: int) -> LlavaForConditionalGeneration:
    vision_config = _part_config(cfg.vision_tower, cfg.model_cache_dir)
    text_config = _part_config(cfg.language_model, cfg.model_cache_dir)
    if cfg.language_model.source is None:
        text_config.vocab_size = vocab_size
    _check_positions(cfg, text_config)
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        image_seq_length=patches + (1 if cfg.vision_feature_select_strategy == "full" else 0),
        projector_hidden_act=cfg.projector_hidden_act,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        vision_feature_layer=cfg.vision_feature_layer,
    )
    model = LlavaForConditionalGeneration(config)
    if cfg.vision_tower.source is not None:  # the tower's own class reads the vision half of a whole CLIP too
        tower = type(model.model.vision_tower).from_pretrained(
            local_source(cfg.vision_tower.source, cfg.model_cache_dir)
        )
        model.model.vision_tower.load_state_dict(tower.state_dict())
    if cfg.language_model.source is not None:
        source = local_source(cfg.language_model.source, cfg.model_cache_dir)
        language_model = AutoModelForCausalLM.from_pretrained(source)
        model.model.language_model.load_state_dict(language_model.model.state_dict())
        model.lm_head.load_state_dict(language_model.lm_head.state_dict())
    return model


def image_processor(vision_config: PretrainedConfig, mean: list[float], std: list[float]) -> LlavaImageProcessorPil:
    """Pads to a square in the mean colour, then resizes (LLaVA-1.5's 'pad'), never a center crop. The PIL backend
    is pinned: the torchvision one (picked when torchvision is installed, as on GPU machines) resizes differently."""
    side = vision_config.image_size
    return LlavaImageProcessorPil(
        do_pad=True,
        size={"height": side, "width": side},
        crop_size={"height": side, "width": side},
        do_center_crop=False,
        image_mean=mean,
        image_std=std,
    )


def build_processor(cfg: ModelConfig, model_config: LlavaConfig, tokenizer) -> LlavaProcessor:
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    if cfg.source is not None:  # keep the checkpoint's normalisation
        shipped = AutoImageProcessor.from_pretrained(local_source(cfg.source, cfg.model_cache_dir))
        mean, std = shipped.image_mean, shipped.image_std
    vision_config = model_config.vision_config
    return LlavaProcessor(
        image_processor=image_processor(vision_config, list(mean), list(std)),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=model_config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS
        image_token=cfg.image_token,
    )


def build_model(cfg: ModelConfig, seed: int) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """The model (float32, on CPU; the launcher moves and casts it) and its processor."""
    tokenizer = load_tokenizer(cfg)
    image_token_id = tokenizer.convert_tokens_to_ids(cfg.image_token)
    torch.manual_seed(seed)  # every rank builds the same random parts
    if cfg.source is not None:
        source = local_source(cfg.source, cfg.model_cache_dir)
        config = AutoConfig.from_pretrained(source)
        _check_positions(cfg, config.text_config)  # before the model is built: its rotary tables follow the config
        model = LlavaForConditionalGeneration.from_pretrained(source, config=config, dtype=torch.float32)
    else:
        model = _assemble(cfg, len(tokenizer), image_token_id)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.image_token_id = image_token_id
    model.set_attn_implementation(cfg.attn_implementation)
    return model, build_processor(cfg, model.config, tokenizer)

"""The tokenizer that counts `token_num`: a tokenizer.json a package ships, a local one, the tokenizer inside a
GGUF model (the embedded SmolLM2 that the tiny training config trains), or a hub tokenizer."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from pipeline.models.assets import resolve_local
from pipeline.models.loading import loaded_once

GGUF_CACHE = Path("~/.cache/video2textbook/models")  # where the LLM back-end converts GGUF files (its default)


@loaded_once
def load_tokenizer(spec: str) -> Tokenizer:
    local = resolve_local(spec)
    if local is None:
        return Tokenizer.from_pretrained(spec)
    if local.suffix == ".gguf":
        from pipeline.models.llm.transformers_backend import converted_model_dir

        local = converted_model_dir(local, GGUF_CACHE.expanduser())
    return Tokenizer.from_file(str(local / "tokenizer.json" if local.is_dir() else local))


def count_tokens(spec: str, texts: list[str]) -> int:
    if not texts:
        return 0
    tokenizer = load_tokenizer(spec)
    return sum(len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False))

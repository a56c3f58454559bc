"""A CTranslate2 Whisper model (`model.bin` + `config.json`) as an openai-whisper checkpoint.

The embedded tiny.en ships only as CTranslate2 files; openai-whisper runs on the same weights once they are
rewritten as its checkpoint (`{"dims": ..., "model_state_dict": ...}`, loaded by `whisper.load_model(path)`).

`model.bin` layout (binary version 6, written by `ctranslate2/specs/model_spec.py:_serialize`), little-endian:
u32 version; string spec name; u32 revision; u32 variable count; per variable: string name, u8 rank, u32 dims,
u8 dtype id, u32 byte count, raw bytes; u32 alias count; per alias: string alias, string target. A string is a
u16 length (NUL included), the bytes and the NUL. Quantized weights (int8, int16) sit beside a `<name>_scale`
variable that multiplied them: dividing by it restores floats.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.assets import file_digests

logger = logging.getLogger(__name__)

BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
# Ids of `_dtype_to_type_id` in ctranslate2/specs/model_spec.py; bfloat16 has no numpy type and is widened below.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
BFLOAT16 = 5
LINEAR, NORM = ("weight", "bias"), ("gamma", "beta")  # CTranslate2's names for a part's weight and bias
# The parts of a block that map one to one: CTranslate2 name, openai-whisper name, kind. The fused projections
# (self_attention/linear_0 = q|k|v, attention/linear_1 = k|v) are split apart in `_fused`.
BLOCK_PARTS = (
    ("self_attention/linear_1", "attn.out", LINEAR),
    ("self_attention/layer_norm", "attn_ln", NORM),
    ("attention/linear_0", "cross_attn.query", LINEAR),
    ("attention/linear_2", "cross_attn.out", LINEAR),
    ("attention/layer_norm", "cross_attn_ln", NORM),
    ("ffn/linear_0", "mlp.0", LINEAR),
    ("ffn/linear_1", "mlp.2", LINEAR),
    ("ffn/layer_norm", "mlp_ln", NORM),
)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        length = self.take("H")
        text = self.data[self.offset : self.offset + length - 1].decode()
        self.offset += length
        return text

    def array(self, dtype_id: int, shape: tuple[int, ...], size: int) -> np.ndarray:
        dtype = np.dtype(DTYPES[dtype_id])
        raw = np.frombuffer(self.data, dtype=dtype, count=size // dtype.itemsize, offset=self.offset)
        self.offset += size
        if dtype_id == BFLOAT16:
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.reshape(shape)


def read_variables(model_bin: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 Whisper `model.bin` by name, aliases resolved, quantized ones as floats."""
    reader = _Reader(model_bin.read_bytes())
    version = reader.take("I")
    if version != BINARY_VERSION:
        raise ValueError(f"{model_bin}: CTranslate2 binary version {version}, this reader knows {BINARY_VERSION}")
    spec, _revision = reader.string(), reader.take("I")
    if spec != SPEC_NAME:
        raise ValueError(f"{model_bin}: a {spec} model, not Whisper")
    variables = {}
    for _ in range(reader.take("I")):
        name = reader.string()
        shape = tuple(reader.take("I") for _ in range(reader.take("B")))
        dtype_id = reader.take("B")
        variables[name] = reader.array(dtype_id, shape, reader.take("I"))
    for _ in range(reader.take("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return _dequantized(variables)


def _dequantized(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    floats = {}
    for name, value in variables.items():
        if name.endswith("_scale"):
            continue
        scale = variables.get(f"{name}_scale")
        if scale is not None:  # int8 has one scale per output row (a conv's first axis), int16 a single one
            per_row = (-1,) + (1,) * (value.ndim - 1)
            value = value.astype(np.float32) / scale.astype(np.float32).reshape(per_row if scale.ndim else ())
        floats[name] = value
    return floats


def _pair(variables: dict[str, np.ndarray], source: str, target: str, kind: tuple[str, str]) -> dict[str, np.ndarray]:
    weight, bias = kind
    return {f"{target}.weight": variables[f"{source}/{weight}"], f"{target}.bias": variables[f"{source}/{bias}"]}


def _fused(variables: dict[str, np.ndarray], source: str, targets: list[str]) -> dict[str, np.ndarray]:
    """Split a fused projection (q|k|v or k|v); openai-whisper's key has no bias (CTranslate2 stored zeros)."""
    weights = np.split(variables[f"{source}/weight"], len(targets))
    biases = np.split(variables[f"{source}/bias"], len(targets))
    state = {}
    for target, weight, bias in zip(targets, weights, biases, strict=True):
        state[f"{target}.weight"] = weight
        if not target.endswith("key"):
            state[f"{target}.bias"] = bias
    return state


def _block(variables: dict[str, np.ndarray], source: str, target: str, cross: bool) -> dict[str, np.ndarray]:
    """One residual block: self-attention, cross-attention (decoder only), MLP, each with its layer norm."""
    qkv = [f"{target}.attn.{name}" for name in ("query", "key", "value")]
    state = _fused(variables, f"{source}/self_attention/linear_0", qkv)
    if cross:
        kv = [f"{target}.cross_attn.{name}" for name in ("key", "value")]
        state |= _fused(variables, f"{source}/attention/linear_1", kv)
    for part, name, kind in BLOCK_PARTS:
        if cross or not part.startswith("attention/"):
            state |= _pair(variables, f"{source}/{part}", f"{target}.{name}", kind)
    return state


def _layers(variables: dict[str, np.ndarray], part: str) -> int:
    return len({name.split("/")[1] for name in variables if re.match(rf"{part}/layer_\d+/", name)})


def whisper_checkpoint(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """openai-whisper's checkpoint: model dimensions and its state dict, weights as stored (float16 stays)."""
    import torch

    if not np.array_equal(variables["decoder/projection/weight"], variables["decoder/embeddings/weight"]):
        raise ValueError("openai-whisper ties the output projection to the token embedding; this model does not")
    encoder_layers, decoder_layers = _layers(variables, "encoder"), _layers(variables, "decoder")
    embedding = variables["decoder/embeddings/weight"]
    dims = {
        "n_mels": variables["encoder/conv1/weight"].shape[1],
        "n_audio_ctx": variables["encoder/position_encodings/encodings"].shape[0],
        "n_audio_state": variables["encoder/conv1/weight"].shape[0],
        "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": encoder_layers,
        "n_vocab": embedding.shape[0],
        "n_text_ctx": variables["decoder/position_encodings/encodings"].shape[0],
        "n_text_state": embedding.shape[1],
        "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": decoder_layers,
    }
    state = {
        "encoder.positional_embedding": variables["encoder/position_encodings/encodings"],
        "decoder.positional_embedding": variables["decoder/position_encodings/encodings"],
        "decoder.token_embedding.weight": embedding,
    }
    for conv in ("conv1", "conv2"):
        state |= _pair(variables, f"encoder/{conv}", f"encoder.{conv}", LINEAR)
    for part, final in (("encoder", "ln_post"), ("decoder", "ln")):
        state |= _pair(variables, f"{part}/layer_norm", f"{part}.{final}", NORM)
    for index in range(encoder_layers):
        state |= _block(variables, f"encoder/layer_{index}", f"encoder.blocks.{index}", cross=False)
    for index in range(decoder_layers):
        state |= _block(variables, f"decoder/layer_{index}", f"decoder.blocks.{index}", cross=True)
    return {
        "dims": dims,
        "model_state_dict": {name: torch.from_numpy(np.array(value)) for name, value in state.items()},
    }


def alignment_heads_dump(heads: list[list[int]], layers: int, heads_per_layer: int) -> bytes:
    """The (layer, head) pairs used for word timestamps, in the form `Whisper.set_alignment_heads` reads."""
    mask = np.zeros((layers, heads_per_layer), dtype=bool)
    for layer, head in heads:
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes()))


def converted_checkpoint(model_dir: Path, cache_dir: Path) -> Path:
    """The openai-whisper checkpoint of a CTranslate2 model folder, converted once into `cache_dir`.

    Named by the sha256 of `model.bin`, so a changed model converts again; written to a `.partial-<pid>` file,
    fsynced and renamed, so a killed run leaves no half checkpoint and concurrent conversions end with one file.
    """
    import torch

    model_bin = model_dir / "model.bin"
    target = cache_dir / f"whisper-ct2-{file_digests(model_bin)[str(model_bin)][:16]}.pt"
    if target.is_file():
        return target
    logger.info("converting %s to an openai-whisper checkpoint in %s (once)", model_dir, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as handle:
            torch.save(whisper_checkpoint(read_variables(model_bin)), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def ct2_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}

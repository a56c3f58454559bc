"""Production-size models on a GPU: Whisper large-v3 and a 7B-class LLM, randomly initialised, batched, with a
fixed decode length, through transformers.

Why: the embedded CPU models say nothing about what a GPU worker sustains. Real weights do not travel to a GPU
machine here (at most 64 MiB is carried; tiny.en alone is 75 MB), and throughput does not depend on the weights'
values, so both models are built from their published shapes with random weights, inputs are random log-mel
features and token ids, and every sequence decodes exactly `--new-tokens` tokens (min = max new tokens, no end of
text). Reports audio seconds per second, generated tokens per second, the GPU's name and its utilisation sampled
by nvidia-smi while the models run. `--smoke` runs the same code on CPU with tiny shapes, to check the path where
no GPU is lent.

    .venv/bin/python benchmarks/gpu.py [--batch 16] [--new-tokens 128] [--smoke]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperForConditionalGeneration

WHISPER_LARGE_V3 = {"d_model": 1280, "encoder_layers": 32, "decoder_layers": 32, "encoder_attention_heads": 20,
                    "decoder_attention_heads": 20, "encoder_ffn_dim": 5120, "decoder_ffn_dim": 5120,
                    "num_mel_bins": 128, "vocab_size": 51866, "max_target_positions": 448}  # fmt: skip
QWEN2_7B = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "intermediate_size": 18944, "vocab_size": 152064, "max_position_embeddings": 32768}  # fmt: skip
TINY_WHISPER = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "num_mel_bins": 128,
                "vocab_size": 51866, "max_target_positions": 448}  # fmt: skip
TINY_LLM = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 128, "vocab_size": 152064, "max_position_embeddings": 4096}  # fmt: skip
WINDOW_SECONDS = 30  # Whisper's input: 3000 mel frames


class Utilisation:
    """GPU utilisation (%) sampled by nvidia-smi every half second while a block runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.wait(0.5):
            answer = subprocess.run(query, capture_output=True, text=True, check=False)
            if answer.returncode == 0 and answer.stdout.strip():
                self.samples.append(float(answer.stdout.split()[0]))

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def timed(run: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def whisper(shape: dict, batch: int, new_tokens: int, device: str, dtype: torch.dtype) -> tuple[float, float]:
    """(audio seconds per second, tokens per second) of batched 30 s windows decoded to exactly `new_tokens`."""
    model = WhisperForConditionalGeneration(WhisperConfig(**shape)).to(device, dtype).eval()
    features = torch.randn(batch, shape["num_mel_bins"], 100 * WINDOW_SECONDS, device=device, dtype=dtype)

    def run() -> None:
        with torch.inference_mode():
            model.generate(input_features=features, min_new_tokens=new_tokens, max_new_tokens=new_tokens)

    run()  # warm-up: kernels chosen, memory reserved
    seconds = timed(run, device)
    return batch * WINDOW_SECONDS / seconds, batch * new_tokens / seconds


def llm(shape: dict, batch: int, prompt: int, new_tokens: int, device: str, dtype: torch.dtype) -> float:
    """Generated tokens per second of a batch of `prompt`-token prompts decoded to exactly `new_tokens`."""
    model = Qwen2ForCausalLM(Qwen2Config(**shape)).to(device, dtype).eval()
    ids = torch.randint(0, shape["vocab_size"], (batch, prompt), device=device)

    def run() -> None:
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), min_new_tokens=new_tokens,
                           max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)  # fmt: skip

    run()
    return batch * new_tokens / timed(run, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: checks the code path only")
    args = parser.parse_args()
    if args.smoke:
        device, dtype, shapes, name = "cpu", torch.float32, (TINY_WHISPER, TINY_LLM), "CPU (smoke: tiny shapes)"
    elif torch.cuda.is_available():
        device, dtype, shapes, name = (
            "cuda",
            torch.bfloat16,
            (WHISPER_LARGE_V3, QWEN2_7B),
            torch.cuda.get_device_name(),
        )
    else:
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --smoke to check the code path on CPU")
    torch.manual_seed(0)
    with Utilisation() as asr_use:
        audio_rate, asr_tokens = whisper(shapes[0], args.batch, args.new_tokens, device, dtype)
    if device == "cuda":
        torch.cuda.empty_cache()
    with Utilisation() as llm_use:
        llm_tokens = llm(shapes[1], args.batch, args.prompt_tokens, args.new_tokens, device, dtype)
    use = {key: f"{value.mean:.0f} %" if value.mean is not None else "unmeasured" for key, value in
           (("asr", asr_use), ("llm", llm_use))}  # fmt: skip
    print(f"device: {name}; batch {args.batch}, {args.new_tokens} new tokens each, {dtype}".replace("torch.", ""))
    models = ("tiny whisper", "tiny LLM") if args.smoke else ("whisper large-v3", "7B LLM (Qwen2-7B shape)")
    print(f"{models[0]}: {audio_rate:.0f} s of audio per s, {asr_tokens:.0f} tokens/s, GPU {use['asr']}")
    print(f"{models[1]}: {llm_tokens:.0f} generated tokens/s, prompts of {args.prompt_tokens}, GPU {use['llm']}")
    print(f"asr: {audio_rate:.1f}x real time per GPU")


if __name__ == "__main__":
    main()

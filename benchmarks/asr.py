"""ASR speed: the real-time factor of faster-whisper and openai-whisper on the same audio and the same weights.

Both run in this process on the same file with the same threads, in turn, best of N, so slow drifts of a shared
machine hit both alike. Loading, the one-off checkpoint conversion and openai-whisper's numba compilation are
left out: each back-end transcribes a few seconds once before it is timed. On a machine busy with other work,
torch's threads wait on each other far more than CTranslate2's: pass --threads 1 there for a fair ratio.

Then the recovery of lost speech (`asr.recovery`: stretches the VAD hears that no trusted segment covers, decoded
again) is timed on and off with faster-whisper on real-slides, whose 3-second pause makes a window lose 26 s of
narration, with the word error rate of each against the narration.

    .venv/bin/python benchmarks/asr.py [VIDEO] [--repeat N] [--threads N] [--config CONFIG] [--recovery-only]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from quality import REAL_SLIDES, word_error_rate

from configs import load_config
from configs.schema import AsrConfig
from pipeline.asr import transcribe_media
from pipeline.audio import SAMPLE_RATE, audio_chunks
from pipeline.models.asr import load_asr

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "lecture.mp4"
BACKENDS = ("faster-whisper", "openai-whisper")
WARM_UP_SECONDS = 5


def recovery_cost(cfg: AsrConfig, repeat: int, label: str) -> None:
    """faster-whisper on real-slides with recovery on and off, best of `repeat` each, in turn."""
    truth_file = REAL_SLIDES / "truth.json"
    if not truth_file.is_file():
        print(f"recovery: real-slides not found at {REAL_SLIDES}, not measured")
        return
    truth = json.loads(truth_file.read_text())
    video = str(REAL_SLIDES / truth["video"])
    on = cfg.model_copy(update={"backend": "faster-whisper"})
    off = on.model_copy(update={"recovery": on.recovery.model_copy(update={"enabled": False})})
    timings: dict[str, list[float]] = {"on": [], "off": []}
    outcome = {}
    for _ in range(repeat):
        for name, variant in (("on", on), ("off", off)):
            started = time.perf_counter()
            segments, _, _, recovered = transcribe_media(video, variant)
            timings[name].append(time.perf_counter() - started)
            text = " ".join(segment["text"] for segment in segments)
            outcome[name] = (word_error_rate(truth["narration"], text), recovered)
    best = {name: min(values) for name, values in timings.items()}
    print(
        f"recovery on real-slides ({truth['duration']:.0f} s, {label}): on {best['on']:.2f} s, "
        f"WER {outcome['on'][0]:.3f}, {outcome['on'][1]:.1f} s of speech decoded again; "
        f"off {best['off']:.2f} s, WER {outcome['off'][0]:.3f}"
    )
    print(f"recovery costs {best['on'] / best['off']:.2f}x the ASR time without it (best of {repeat})")


def recovery_costs(cfg: AsrConfig, repeat: int) -> None:
    recovery_cost(cfg, repeat, "the config's decoding")
    # Greedy whole 30 s windows: the decoding under which a window loses the speech after the 3-second pause.
    recovery_cost(cfg.model_copy(update={"beam_size": 1, "vad_filter": False}), repeat, "greedy whole windows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", default=str(SAMPLE))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="model threads for both; default: the config's")
    parser.add_argument("--config", default=None, help="a config whose asr section both back-ends share")
    parser.add_argument("--recovery-only", action="store_true", help="only the recovery's cost")
    args = parser.parse_args()
    base = load_config(args.config).asr
    if args.threads is not None:
        base = base.model_copy(update={"cpu_threads": args.threads})
    if args.recovery_only:
        recovery_costs(base, args.repeat)
        return
    audio = [chunk.samples for chunk in audio_chunks(args.video, base.chunk_seconds)]
    seconds = sum(len(samples) for samples in audio) / SAMPLE_RATE
    configs = {backend: base.model_copy(update={"backend": backend}) for backend in BACKENDS}
    for cfg in configs.values():
        load_asr(cfg).transcribe(audio[0][: WARM_UP_SECONDS * SAMPLE_RATE], cfg.language)
    timings: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    words: dict[str, int] = {}
    for _ in range(args.repeat):
        for backend, cfg in configs.items():
            started = time.perf_counter()
            segments, _, _, _ = transcribe_media(args.video, cfg)
            timings[backend].append(time.perf_counter() - started)
            words[backend] = sum(len(segment["words"]) for segment in segments)
    best = {backend: min(values) for backend, values in timings.items()}
    print(f"audio: {args.video} ({seconds:.0f} s), model {base.model} on {base.device}, threads {base.cpu_threads}")
    for backend in BACKENDS:
        print(
            f"{backend}: {best[backend]:.2f} s, {words[backend]} words, real-time factor {best[backend] / seconds:.3f}"
        )
    ratio = best["openai-whisper"] / best["faster-whisper"]
    recovery_costs(base, args.repeat)
    print(f"faster-whisper is {ratio:.2f}x faster than openai-whisper (best of {args.repeat})")


if __name__ == "__main__":
    main()

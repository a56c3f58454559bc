"""The whole data DAG on a fresh 10-minute lecture: seconds of video per second, per stage and end to end.

Why: users choose a pipeline by how many hours of video it turns into data per hour of machine. The lecture
(`benchmarks/lecture.py`) holds no clip whose speech another clip holds, the LLM call cache starts empty in a
new folder, and refinement is on (as in production, though the default config turns it off), so every LLM call
is really made. Models are loaded before the clock starts and their loading is reported apart: a long run loads
each model once per process, whatever the number of videos.

    .venv/bin/python benchmarks/end_to_end.py [--minutes 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from lecture import fresh_lecture
from PIL import Image

from configs import PipelineConfig, load_config
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.inputs import resolve_inputs
from pipeline.models.asr import load_asr
from pipeline.models.embed import load_text_embedder
from pipeline.models.faces import load_face_detector
from pipeline.models.llm import load_llm
from pipeline.models.ocr import load_ocr
from pipeline.models.tokenizer import load_tokenizer
from pipeline.ocr import OCR_WORKERS
from storage.outdir import OutDir

TARGET = 6.0


def bench_config(folder: Path) -> PipelineConfig:
    """The embedded defaults with refinement on and the LLM call cache in a new, empty file."""
    config = load_config(None)
    llm = config.llm.model_copy(update={"cache_path": str(folder / "llm_calls.sqlite")})
    refine = config.refine.model_copy(update={"enabled": True})
    return config.model_copy(update={"llm": llm, "refine": refine})


def load_models(config: PipelineConfig) -> dict[str, float]:
    """Seconds to load each model the DAG uses, once per process (the GGUF conversion is cached on disk)."""
    loads = {
        "asr (faster-whisper tiny.en)": lambda: load_asr(config.asr),
        "llm (SmolLM2-135M)": lambda: load_llm(config.llm),
        "text embedder (MiniLM)": lambda: load_text_embedder(config.embeddings.text_model, config.embeddings.device),
        "ocr (RapidOCR)": lambda: load_ocr(config.ocr),
        "faces (Haar)": lambda: load_face_detector(
            tuple(config.clip_filter.face_cascades), config.clip_filter.min_face_area_share
        ),
        "tokenizer": lambda: load_tokenizer(config.pack.tokenizer),
    }
    seconds = {}
    for name, load in loads.items():
        started = time.perf_counter()
        load()
        seconds[name] = time.perf_counter() - started
    return seconds


def read_every_keyframe(engine: Engine, video_id: str) -> float:
    """Seconds to OCR every keyframe, a picture already read included, as the stage reads (on its threads): what the
    stage costs on a lecture whose slides never return."""
    jpegs = engine.table(("keyframes", video_id))["jpeg"].to_pylist()
    backend = load_ocr(engine.config.ocr)
    started = time.perf_counter()
    with ThreadPoolExecutor(OCR_WORKERS) as pool:
        list(pool.map(lambda jpeg: backend.read(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))), jpegs))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--out", type=Path, default=None, help="where the run goes (default: a temporary folder)")
    args = parser.parse_args()
    video = fresh_lecture(args.minutes)
    folder = args.out or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    config = bench_config(folder)
    loading = load_models(config)
    inputs = resolve_inputs(video, config.input)
    engine = Engine(OutDir(folder / "out"), config, DAG, inputs.videos)
    started, cpu_started = time.perf_counter(), time.process_time()
    reports = run_stages(engine, PROCESS_STAGES)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    (unit,) = inputs.videos
    duration = engine.duration(unit.video_id)
    print(f"video: {video.name}, {duration:.0f} s; out: {folder}")
    for name, seconds in loading.items():
        print(f"model loading, {name}: {seconds:.2f} s (not counted below)")
    print("stage: seconds (stages of one video overlap where neither reads the other), seconds of video per second")
    for report in reports:
        rate = f"{duration / report.wall_seconds:8.1f}" if report.wall_seconds > 0.05 else "    fast"
        print(f"{report.stage:>12}: {report.wall_seconds:7.2f} s, {rate} s/s  {report.counts}")
    print(f"sum of stage seconds {sum(r.wall_seconds for r in reports):.1f} s in {wall:.1f} s of wall time")
    ocr = next(report for report in reports if report.stage == "ocr")
    stats = engine.stamp(("ocr", unit.video_id)).stats["counters"]
    every = read_every_keyframe(engine, unit.video_id)
    print(
        f"ocr read {stats['read']} distinct pictures of {stats['keyframes']} keyframes; reading every keyframe "
        f"takes {every:.1f} s (whole DAG then {wall - ocr.wall_seconds + every:.1f} s, if nothing else overlapped)"
    )
    cores = os.cpu_count() or 1
    print(
        f"CPU time of the whole DAG, every thread: {cpu:.0f} s; on {cores} cores of its own the wall time could be no "
        f"less than {cpu / cores:.0f} s: at best {duration * cores / cpu:.1f}x real time whatever the scheduling"
    )
    print(f"whole DAG: {wall:.1f} s for {duration:.0f} s of video (target >= {TARGET:.0f}x)")
    print(f"end to end: {duration / wall:.1f}x real time")


if __name__ == "__main__":
    main()

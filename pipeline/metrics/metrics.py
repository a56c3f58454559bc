"""OUT/metrics.json: what a run produced, per run and per shard, read from the stage stamps, the shards and the
run summary, so a stage added to the DAG shows up without an edit here.

- samples: images and tokens per sample (mean, median, min, max);
- units: each stage's funnel (`stats["funnel"]`: unit, in, kept, dropped by reason) summed over videos, grouped by
  unit (clips, keyframes, ...);
- videos: in, failed by stage and reason, dropped by reason, done and dropped at each stage, in the shards;
- throughput: each stage's wall time and seconds of video per second (a stage this run only skipped keeps the
  figures of the run that computed it);
- InSI-SIM (pipeline/insi_sim.py) with the image embedder the config names.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow.parquet as pq

from configs import PipelineConfig
from pipeline.dag import VIDEO_STAGES
from pipeline.engine.engine import drop_label
from pipeline.metrics.insi_sim import PAPER_OBELICS, PAPER_TEXTBOOK, decode, sample_similarity
from pipeline.models.embed import load_image_embedder
from storage.outdir import OutDir
from storage.shards import SHARD_DIR, read_index
from storage.tables import digest, read_stamp, read_table

# The stats of each stage's result, by stage (DAG order) then video: what stage_stamps reads.
StageStats = dict[str, dict[str, dict[str, Any]]]

METRICS_FILE = "metrics.json"
SHARD_METRICS_FILE = "metrics.json"  # beside shards/index.json
_LIGHT_COLUMNS = ["metadata", "image_num", "token_num"]
NOT_SCORED = {"value": None, "samples": 0, "pairs": 0, "ssim": None, "embedding_cosine": None}


def distribution(values: Iterable[float]) -> dict[str, float | int | None]:
    values = list(values)
    if not values:
        return {"count": 0, "mean": None, "median": None, "min": None, "max": None}
    return {
        "count": len(values),
        "mean": round(statistics.fmean(values), 3),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def stage_stamps(out: OutDir, video_ids: Iterable[str]) -> StageStats:
    """The stats of every per-video stage file present, by stage (DAG order) then video."""
    video_ids = list(video_ids)
    stamps: StageStats = {}
    for stage in VIDEO_STAGES:
        found = {video: read_stamp(out, out.stage_file(stage.name, video)) for video in video_ids}
        stamps[stage.name] = {video: stamp.stats for video, stamp in found.items() if stamp is not None}
    return stamps


def add_funnel(total: dict[str, Any], funnel: dict[str, Any]) -> None:
    total["in"] += funnel["in"]
    total["kept"] += funnel["kept"]
    for reason, count in funnel["dropped"].items():
        total["dropped"][reason] = total["dropped"].get(reason, 0) + count


def unit_funnels(stamps: StageStats, video_ids: Iterable[str]) -> dict[str, Any]:
    """{unit: {stage: {in, kept, dropped: {reason: n}}}} summed over `video_ids`; each stage's own convention
    holds (in == kept + sum(dropped)) so every row adds up."""
    video_ids = set(video_ids)
    units: dict[str, dict[str, Any]] = defaultdict(dict)
    for stage, by_video in stamps.items():
        for video, stats in by_video.items():
            funnel = stats.get("funnel")
            if video in video_ids and funnel:
                total = units[funnel["unit"]].setdefault(stage, {"in": 0, "kept": 0, "dropped": {}})
                add_funnel(total, funnel)
    return {unit: stages for unit, stages in units.items()}


def read_failures(out: OutDir) -> list[dict[str, Any]]:
    path = out.path("failures.parquet")
    return read_table(out, path).to_pylist() if out.exists(path) else []


def video_funnel(stamps: StageStats, failures: list[dict[str, Any]], video_ids: list[str]) -> list[dict[str, Any]]:
    """Per stage: videos it ran on (done), dropped there by a filter, failed there, and left to go on (passed)."""
    wanted = set(video_ids)
    failed = Counter(record["stage"] for record in failures if record["video_id"] in wanted)
    rows = []
    for stage, by_video in stamps.items():
        ran = [stats for video, stats in by_video.items() if video in wanted]
        ran = [stats for stats in ran if not stats["drop"] or stats["drop"]["stage"] == stage]
        dropped = sum(1 for stats in ran if stats["drop"])
        rows.append(
            {
                "stage": stage,
                "done": len(ran),
                "dropped": dropped,
                "failed": failed[stage],
                "passed": len(ran) - dropped,
            }
        )
    return rows


def dropped_videos(stamps: StageStats, video_ids: Iterable[str]) -> Counter[str]:
    """Videos a filter dropped, by "stage: reason", read from the last per-video stage (every drop reaches it)."""
    wanted = set(video_ids)
    last = list(stamps)[-1] if stamps else None
    labels = (drop_label(stats) for video, stats in stamps.get(last, {}).items() if video in wanted)
    return Counter(label for label in labels if label)


def totals(stamps: StageStats) -> Counter[str]:
    """Per stage: the videos it has a result for, and the sum of each of its counters (never of its values: a
    score or a duration does not add up)."""
    counts: Counter[str] = Counter()
    for stage, by_video in stamps.items():
        for stats in by_video.values():
            counts[f"{stage}_videos"] += 1
            for key, value in stats["counters"].items():
                counts[f"{stage}.{key}"] += value
    return counts


def llm_unparsed(out: OutDir, stamps: StageStats, video_ids: list[str]) -> dict[str, int]:
    """Per filter stage, the videos kept unscored because the LLM's answer never parsed: a weak or drifting model
    shows here before it shows in the corpus."""
    wanted = set(video_ids)
    counts = {}
    for stage, by_video in stamps.items():
        scored = [
            stats for video, stats in by_video.items() if video in wanted and "llm_unparsed" in stats["counters"]
        ]
        if scored:
            counts[stage] = sum(stats["counters"]["llm_unparsed"] for stats in scored)
    collected = read_stamp(out, out.stage_file("filter_meta", "videos"))
    if collected is not None:
        counts["filter_meta"] = collected.stats["counters"].get("llm_unparsed", 0)
    return counts


def videos_metrics(
    stamps: StageStats,
    failures: list[dict[str, Any]],
    video_ids: list[str],
    in_shards: set[str],
) -> dict[str, Any]:
    by_stage: dict[str, Counter[str]] = defaultdict(Counter)
    for record in failures:
        if record["video_id"] in video_ids:
            by_stage[record["stage"]][f"{record['error_type']}: {record['message']}"] += 1
    dropped = dropped_videos(stamps, video_ids)
    return {
        "in": len(video_ids),
        "failed": {
            "count": len({record["video_id"] for record in failures if record["video_id"] in video_ids}),
            "by_stage": {stage: dict(reasons.most_common()) for stage, reasons in by_stage.items()},
        },
        "dropped": {"count": sum(dropped.values()), "by_reason": dict(dropped.most_common())},
        "in_shards": len(in_shards & set(video_ids)),
        "by_stage": video_funnel(stamps, failures, video_ids),
    }


def iter_shard_rows(out: OutDir, name: str, columns: list[str], limit: int | None = None) -> Iterator[dict]:
    """Rows of one shard in order, read a few at a time (a shard holds hundreds of MB of JPEG bytes)."""
    seen = 0
    with out.fs.open(out.path(SHARD_DIR, name), "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=16, columns=columns):
            for row in batch.to_pylist():
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield row


def insi_sim_of_shard(out: OutDir, name: str, config: PipelineConfig) -> dict[str, Any]:
    """InSI-SIM and its halves over the shard's first `insi_sim_samples_per_shard` samples with >= 2 images."""
    settings = config.embeddings
    embedder = load_image_embedder(
        settings.image_backend, settings.image_model, settings.image_pretrained, settings.device,
        settings.image_batch_size,
    )  # fmt: skip
    scores = []
    rows = iter_shard_rows(out, name, ["images"], config.metrics.insi_sim_samples_per_shard)
    for row in rows:
        images = [decode(image["bytes"]) for image in row["images"] if image is not None]
        score = sample_similarity(images, embedder, config.metrics.ssim_width)
        if score is not None:
            scores.append(score)
    if not scores:
        return dict(NOT_SCORED)
    return {
        "value": round(statistics.fmean(s.insi_sim for s in scores), 4),
        "samples": len(scores),
        "pairs": sum(s.pairs for s in scores),
        "ssim": round(statistics.fmean(s.ssim for s in scores), 4),
        "embedding_cosine": round(statistics.fmean(s.cosine for s in scores), 4),
    }


def pooled_insi_sim(per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's InSI-SIM: the mean over every scored sample, whichever shard it is in."""
    scored = [entry for entry in per_shard if entry["samples"]]
    samples = sum(entry["samples"] for entry in scored)
    if not samples:
        return dict(NOT_SCORED)

    def weighted(key: str) -> float:
        return round(sum(entry[key] * entry["samples"] for entry in scored) / samples, 4)

    return {
        "value": weighted("value"),
        "samples": samples,
        "pairs": sum(entry["pairs"] for entry in scored),
        "ssim": weighted("ssim"),
        "embedding_cosine": weighted("embedding_cosine"),
    }


def insi_sim_key(config: PipelineConfig) -> str:
    """What an InSI-SIM figure depends on besides its shard (named by its content): the embedder and the metric's
    settings. A shard whose file and key are unchanged keeps its figure, so publishing a set that rewrote one
    shard scores only that one."""
    embeddings = config.embeddings
    settings = [embeddings.image_backend, embeddings.image_model, embeddings.image_pretrained]
    return digest([settings, config.metrics.model_dump()])


def read_shard_counts(out: OutDir, name: str) -> tuple[list[int], list[int], list[str]]:
    """Images and tokens of each sample of one shard, and the videos its samples come from (in order)."""
    images, tokens, videos = [], [], []
    for row in iter_shard_rows(out, name, _LIGHT_COLUMNS):
        images.append(row["image_num"])
        tokens.append(row["token_num"])
        videos += [video["video_id"] for video in json.loads(row["metadata"])["videos"]]
    return images, tokens, list(dict.fromkeys(videos))


def sample_metrics(images: list[int], tokens: list[int]) -> dict[str, Any]:
    return {
        "count": len(images),
        "images": sum(images),
        "tokens": sum(tokens),
        "images_per_sample": distribution(images),
        "tokens_per_sample": distribution(tokens),
    }


def throughput(summary: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Each stage's figures from this run where it computed something, else the last run's that did."""
    earlier = (previous or {}).get("throughput", {})
    rows = {}
    for stage in summary.get("stage_order", []):
        row = summary.get("stages", {}).get(stage)
        if row is not None and row["done"]:
            rows[stage] = {**row, "earlier_run": False}
        elif stage in earlier:
            rows[stage] = {**earlier[stage], "earlier_run": True}
    return rows


def compute_metrics(
    out: OutDir,
    config: PipelineConfig,
    summary: dict[str, Any],
    video_ids: list[str],
    stamps: StageStats,
) -> dict[str, Any]:
    """Every figure of metrics.json from `stamps` (stage_stamps); a shard's InSI-SIM is reused from the last
    metrics.json when the shard and the key are unchanged."""
    previous_path = out.path(METRICS_FILE)
    previous = out.read_json(previous_path) if out.exists(previous_path) else None
    index = read_index(out) or {"shards": []}
    failures = read_failures(out)
    shards_fingerprint = index.get("set")
    key = insi_sim_key(config)
    reused = previous.get("shards", {}) if previous and previous.get("insi_sim", {}).get("key") == key else {}
    shards, all_images, all_tokens = {}, [], []
    for entry in index["shards"]:
        images, tokens, shard_videos = read_shard_counts(out, entry["file"])
        all_images += images
        all_tokens += tokens
        shards[entry["file"]] = {
            "samples": sample_metrics(images, tokens),
            "videos": shard_videos,
            "units": unit_funnels(stamps, shard_videos),
            "insi_sim": reused[entry["file"]]["insi_sim"]
            if entry["file"] in reused
            else insi_sim_of_shard(out, entry["file"], config),
        }
    in_shards = {video for metrics in shards.values() for video in metrics["videos"]}
    embeddings = config.embeddings
    return {
        "out": out.url,
        "shards_fingerprint": shards_fingerprint,
        "samples": {**sample_metrics(all_images, all_tokens), "tokenizer": config.pack.tokenizer},
        "videos": videos_metrics(stamps, failures, video_ids, in_shards),
        "units": unit_funnels(stamps, video_ids),
        "llm_unparsed": llm_unparsed(out, stamps, video_ids),
        "throughput": throughput(summary, previous),
        "seconds": summary.get("seconds"),
        "insi_sim": {
            **pooled_insi_sim([metrics["insi_sim"] for metrics in shards.values()]),
            "key": key,
            "embedder": {
                "backend": embeddings.image_backend,
                "model": embeddings.image_model,
                "pretrained": embeddings.image_pretrained,
            },
            "ssim_width": config.metrics.ssim_width,
            "samples_per_shard": config.metrics.insi_sim_samples_per_shard,
            "paper": {"textbook": PAPER_TEXTBOOK, "obelics": PAPER_OBELICS},
        },
        "shards": shards,
    }


def write_metrics(
    out: OutDir,
    config: PipelineConfig,
    summary: dict[str, Any],
    video_ids: list[str],
    stamps: StageStats,
) -> dict:
    """OUT/metrics.json, and the per-shard part beside shards/index.json for whoever takes only the shards."""
    metrics = compute_metrics(out, config, summary, video_ids, stamps)
    out.write_json(out.path(METRICS_FILE), metrics)
    if metrics["shards"]:
        shard_part = {"shards_fingerprint": metrics["shards_fingerprint"], "shards": metrics["shards"]}
        out.write_json(out.path(SHARD_DIR, SHARD_METRICS_FILE), shard_part)
    return metrics

"""OUT/report.html: the run on one page that opens from disk with no server, no script and no request.

The funnel (videos at each stage, units kept and dropped by reason), throughput per stage, the sample metrics
and InSI-SIM, then a preview of the first samples: keyframe thumbnails (JPEG data URIs) interleaved with their
text, each image's OCR below it and on hover.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from configs import PipelineConfig
from configs.schema import ReportConfig
from pipeline.metrics.insi_sim import decode
from pipeline.metrics.metrics import METRICS_FILE, StageStats, iter_shard_rows, stage_stamps, write_metrics
from storage.outdir import OutDir
from storage.tables import read_table

REPORT_FILE = "report.html"
OCR_CAPTION_CHARS = 160
logger = logging.getLogger(__name__)

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 16px 24px; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 6px 0 12px; } td, th { padding: 3px 10px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.bar { display: inline-block; height: 12px; background: #2b7bb9; vertical-align: middle; }
.bar.dropped { background: #d9822b; } .bar.failed { background: #c23030; }
.muted { color: #777; } td:has(> .why) { text-align: left; }
.headline span { margin-right: 18px; } .headline b { font-size: 17px; }
.sample { border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; margin: 14px 0; }
.sample header { color: #555; margin-bottom: 8px; }
.images { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
figure { margin: 0; width: min-content; } figure img { display: block; border: 1px solid #ccc; }
figcaption { font-size: 11px; color: #666; } p.speech { margin: 6px 0 10px; }
p.marker { color: #999; text-align: center; font-style: italic; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A table whose cells are already HTML (callers escape what they take from data)."""
    head = "".join(f"<th>{header}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def bar(count: int, total: int, kind: str = "", width: int = 240) -> str:
    pixels = round(width * count / total) if total else 0
    return f'<span class="bar {kind}" style="width:{pixels}px"></span>' if pixels else ""


def reasons_list(reasons: dict[str, int]) -> str:
    listed = ", ".join(f"{esc(reason)} &times;{count}" for reason, count in reasons.items()) or "-"
    return f'<span class="why">{listed}</span>'


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else esc(value)


def funnel_section(metrics: dict[str, Any]) -> str:
    videos = metrics["videos"]
    total = videos["in"]
    rows = [["input", total, "", "", total, bar(total, total)]]
    for row in videos["by_stage"]:
        rows.append(
            [esc(row["stage"]), row["done"], row["dropped"] or "", row["failed"] or "", row["passed"],
             bar(row["passed"], total) + bar(row["dropped"], total, "dropped") + bar(row["failed"], total, "failed")]
        )  # fmt: skip
    rows.append(["in shards", "", "", "", videos["in_shards"], bar(videos["in_shards"], total)])
    parts = [
        "<h2>Funnel</h2><h3>Videos through the stages</h3>",
        table(["stage", "done", "dropped here", "failed here", "go on", ""], rows),
        f"<p>dropped: {reasons_list(videos['dropped']['by_reason'])}</p>",
    ]
    for stage, reasons in videos["failed"]["by_stage"].items():
        parts.append(f"<p>failed in {esc(stage)}: {reasons_list(reasons)}</p>")
    unparsed = metrics.get("llm_unparsed", {})
    parts.append(
        "<p>LLM answers that never parsed (videos kept unscored): "
        + (reasons_list(unparsed) if any(unparsed.values()) else "none")
        + "</p>"
    )
    for unit, stages in metrics["units"].items():
        unit_rows = [
            [esc(stage), row["in"], row["kept"], sum(row["dropped"].values()), reasons_list(row["dropped"]),
             bar(row["kept"], row["in"]) + bar(sum(row["dropped"].values()), row["in"], "dropped")]
            for stage, row in stages.items()
        ]  # fmt: skip
        parts += [
            f"<h3>{esc(unit.capitalize())} kept and dropped by the stages that filter them</h3>",
            table(["stage", "in", "kept", "dropped", "why", ""], unit_rows),
        ]
    return "".join(parts)


def throughput_section(metrics: dict[str, Any]) -> str:
    rows = [
        [esc(stage), row["done"], row["skipped"], fmt(row["wall_seconds"]), fmt(row["media_seconds"]),
         fmt(row["media_seconds_per_second"]), "earlier run" if row["earlier_run"] else ""]
        for stage, row in metrics["throughput"].items()
    ]  # fmt: skip
    headers = ["stage", "units done", "skipped", "wall s", "video s", "video s per s", "measured in"]
    return "<h2>Throughput</h2>" + (table(headers, rows) if rows else "<p class='muted'>no stage measured yet</p>")


def distribution_row(name: str, dist: dict[str, Any]) -> list[str]:
    return [name, *(fmt(dist[key]) for key in ("mean", "median", "min", "max"))]


def quality_section(metrics: dict[str, Any]) -> str:
    samples, insi = metrics["samples"], metrics["insi_sim"]
    embedder = insi["embedder"]
    rows = [
        distribution_row("images per sample", samples["images_per_sample"]),
        distribution_row("tokens per sample", samples["tokens_per_sample"]),
    ]
    paper = insi["paper"]
    shard_rows = []
    for name, shard in metrics["shards"].items():
        counts = shard["samples"]
        tokens = fmt(counts["tokens_per_sample"]["mean"])
        shard_rows.append([esc(name), counts["count"], counts["images"], tokens, fmt(shard["insi_sim"]["value"], 3),
                           len(shard["videos"])])  # fmt: skip
    return (
        "<h2>Samples</h2>"
        + table(["", "mean", "median", "min", "max"], rows)
        + f"<p>tokens counted with {esc(samples['tokenizer'])}</p>"
        + f"<h3>InSI-SIM: {fmt(insi['value'], 3)}</h3>"
        + f"<p>over {insi['samples']} samples with two or more images ({insi['pairs']} image pairs): "
        f"SSIM {fmt(insi['ssim'], 3)}, embedding cosine {fmt(insi['embedding_cosine'], 3)}; "
        f"image embedder: {esc(embedder['backend'])} {esc(embedder['model'])}"
        + (f" ({esc(embedder['pretrained'])})" if embedder["pretrained"] else "")
        + f". The paper: {paper['textbook']} for its textbook, {paper['obelics']} for OBELICS.</p>"
        + "<h3>Shards</h3>"
        + table(["shard", "samples", "images", "tokens per sample", "InSI-SIM", "videos"], shard_rows)
    )


def thumbnail(jpeg: bytes, cfg: ReportConfig) -> str:
    image = decode(jpeg).convert("RGB")
    if image.width > cfg.thumbnail_width:
        height = max(1, round(image.height * cfg.thumbnail_width / image.width))
        image = image.resize((cfg.thumbnail_width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=cfg.thumbnail_quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def ocr_by_image(out: OutDir, video_ids: set[str]) -> dict[str, str]:
    """OCR text by keyframe name (the shards' image path) for these videos, from the keyframes and ocr tables."""
    texts = {}
    for video in video_ids:
        paths = [out.stage_file("keyframes", video), out.stage_file("ocr", video)]
        if all(out.exists(path) for path in paths):
            names = read_table(out, paths[0]).select(["keyframe_id", "name"]).to_pylist()
            table = read_table(out, paths[1])
            ocr = dict(zip(table["keyframe_id"].to_pylist(), table["text"].to_pylist(), strict=True))
            texts |= {row["name"]: ocr.get(row["keyframe_id"], "") for row in names}
    return texts


def sample_html(sample: dict[str, Any], number: int, cfg: ReportConfig, marker: str, ocr: dict[str, str]) -> str:
    """One sample in reading order: runs of images as a row of thumbnails (OCR below and on hover), then text."""
    metadata = json.loads(sample["metadata"])
    videos = ", ".join(video["video_id"] for video in metadata["videos"])
    parts = [
        f'<article class="sample"><header><b>#{number}</b> {esc(metadata["topic"])} &middot; videos: {esc(videos)}'
        f" &middot; {sample['image_num']} images &middot; {sample['token_num']} tokens</header>"
    ]
    figures: list[str] = []
    for image, text, ocr_text in zip(sample["images"], sample["texts"], sample["text_ocr_list"], strict=True):
        if image is not None:
            ocr_text = ocr_text or ocr.get(image["path"], "")
            caption = ocr_text[:OCR_CAPTION_CHARS] + ("..." if len(ocr_text) > OCR_CAPTION_CHARS else "")
            figures.append(
                f'<figure><img src="{thumbnail(image["bytes"], cfg)}" alt="{esc(image["path"])}" '
                f'title="{esc(ocr_text or "no OCR text")}"><figcaption>{esc(caption) or "<i>no OCR text</i>"}'
                "</figcaption></figure>"
            )
            continue
        if figures:
            parts.append(f'<div class="images">{"".join(figures)}</div>')
            figures = []
        kind = "marker" if text == marker else "speech"
        parts.append(f'<p class="{kind}">{esc(text)}</p>')
    if figures:
        parts.append(f'<div class="images">{"".join(figures)}</div>')
    return "".join(parts) + "</article>"


def preview_samples(out: OutDir, shards: list[str], limit: int) -> Iterator[dict[str, Any]]:
    left = limit
    for name in shards:
        for row in iter_shard_rows(out, name, ["images", "texts", "text_ocr_list", "metadata", "image_num",
                                               "token_num"], left):  # fmt: skip
            left -= 1
            yield row
        if left <= 0:
            return


def render_report(out: OutDir, config: PipelineConfig, metrics: dict[str, Any]) -> str:
    cfg = config.report
    samples = metrics["samples"]
    samples_shown = list(preview_samples(out, list(metrics["shards"]), cfg.preview_samples))
    videos = {video["video_id"] for sample in samples_shown for video in json.loads(sample["metadata"])["videos"]}
    ocr = ocr_by_image(out, videos)
    marker = config.pack.end_of_video_marker
    preview = [sample_html(sample, number, cfg, marker, ocr) for number, sample in enumerate(samples_shown)]
    insi = metrics["insi_sim"]["value"]
    headline = (
        f'<p class="headline"><span><b>{metrics["videos"]["in"]}</b> videos in</span>'
        f"<span><b>{metrics['videos']['in_shards']}</b> in the shards</span>"
        f"<span><b>{samples['count']}</b> samples</span><span><b>{samples['images']}</b> images</span>"
        f"<span><b>{samples['tokens']}</b> tokens</span><span>InSI-SIM <b>{fmt(insi, 3)}</b></span></p>"
    )
    shown = f"the first {len(preview)} of {samples['count']}" if len(preview) < samples["count"] else "all"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>video2textbook report: {esc(out.url)}</title><style>{CSS}</style></head><body>"
        f"<h1>video2textbook report</h1><p class='muted'>{esc(out.url)} &middot; "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}</p>{headline}"
        + funnel_section(metrics)
        + throughput_section(metrics)
        + quality_section(metrics)
        + f"<h2>Preview ({shown} samples)</h2>"
        + ("".join(preview) or "<p class='muted'>no samples</p>")
        + "</body></html>"
    )


def report_url(out: OutDir, name: str = REPORT_FILE) -> str:
    """Where a browser opens a file of OUT (the report, or another page or figure): a file:// URI for a local OUT,
    the fsspec URL otherwise."""
    path = out.path(name)
    return Path(path).resolve().as_uri() if out.is_local else f"{out.url.rstrip('/')}/{name}"


def write_report(out: OutDir, config: PipelineConfig, metrics: dict[str, Any]) -> str:
    """Write OUT/report.html; returns its path."""
    path = out.path(REPORT_FILE)
    out.write_bytes(path, render_report(out, config, metrics).encode())
    return path


_MARKUP = re.compile(r"([\\`*_\[\]()|!#~])")


def markdown_text(value: Any) -> str:
    """Text from data (a failure message, a file name) as Markdown shows it literally: HTML and markup escaped."""
    return _MARKUP.sub(r"\\\1", html.escape(str(value), quote=False))


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """The report's figures as markdown tables, for the Prefect UI's artifacts."""
    insi, samples = metrics["insi_sim"], metrics["samples"]
    lines = [
        f"**InSI-SIM {fmt(insi['value'], 3)}** over {insi['samples']} samples ({insi['embedder']['backend']}; "
        f"SSIM {fmt(insi['ssim'], 3)}, cosine {fmt(insi['embedding_cosine'], 3)}; the paper: "
        f"{insi['paper']['textbook']} textbook, {insi['paper']['obelics']} OBELICS)",
        "",
        "| per sample | mean | median | min | max |",
        "|---|---|---|---|---|",
        "| " + " | ".join(distribution_row("images", samples["images_per_sample"])) + " |",
        "| " + " | ".join(distribution_row("tokens", samples["tokens_per_sample"])) + " |",
        "",
        "| videos at stage | done | dropped here | failed here | go on |",
        "|---|---|---|---|---|",
        *(f"| {r['stage']} | {r['done']} | {r['dropped']} | {r['failed']} | {r['passed']} |"
          for r in metrics["videos"]["by_stage"]),
        f"| in shards | | | | {metrics['videos']['in_shards']} |",
    ]  # fmt: skip
    units = [(unit, stage, row) for unit, stages in metrics["units"].items() for stage, row in stages.items()]
    if units:
        lines += ["", "| unit | stage | in | kept | dropped by reason |", "|---|---|---|---|---|"]
        lines += [
            f"| {markdown_text(unit)} | {stage} | {row['in']} | {row['kept']} | "
            f"{', '.join(f'{markdown_text(reason)} x{count}' for reason, count in row['dropped'].items()) or '-'} |"
            for unit, stage, row in units
        ]
    return "\n".join(lines)


def write_metrics_and_report(
    out: OutDir,
    config: PipelineConfig,
    summary: dict[str, Any],
    video_ids: list[str],
    stamps: StageStats,
    report: bool,
) -> dict[str, Any]:
    """metrics.json, then report.html when asked; returns the headline figures for summary.json. A failure here
    is logged and put in the headline: the run's results stand without their report."""
    started = time.perf_counter()
    try:
        metrics = write_metrics(out, config, summary, video_ids, stamps)
        report_path = write_report(out, config, metrics) if report else None
    except Exception as error:  # the run itself is done; say why its figures are missing instead of failing it
        logger.exception("metrics or report failed")
        return {"error": f"{type(error).__name__}: {error}"}
    return {
        "file": METRICS_FILE,
        "report": REPORT_FILE if report_path else None,
        "insi_sim": metrics["insi_sim"]["value"],
        "image_embedder": metrics["insi_sim"]["embedder"]["backend"],
        "images_per_sample": metrics["samples"]["images_per_sample"]["mean"],
        "tokens_per_sample": metrics["samples"]["tokens_per_sample"]["mean"],
        "seconds": round(time.perf_counter() - started, 3),
    }


def report_run(out: OutDir, config: PipelineConfig) -> tuple[str, dict[str, Any]]:
    """`textbook report OUT`: metrics.json and report.html from what OUT holds now; returns the report's path and
    the metrics."""
    inputs = out.path("inputs.parquet")
    if not out.exists(inputs):
        raise FileNotFoundError(f"{out.url} has no inputs.parquet: it is not the output of `textbook run`")
    video_ids = read_table(out, inputs).column("video_id").to_pylist()
    summary_path = out.path("summary.json")
    summary = out.read_json(summary_path) if out.exists(summary_path) else {}
    metrics = write_metrics(out, config, summary, video_ids, stage_stamps(out, video_ids))
    return write_report(out, config, metrics), metrics

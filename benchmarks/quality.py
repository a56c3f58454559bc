"""What each stage gets right and wrong on the bundled sample and on real-slides (../shared/data/real-slides), with
the default config, against the exact ground truth beside each video. Prints a markdown table for the README.

    .venv/bin/python benchmarks/quality.py [--out DIR]

Per lecture: ASR word error rate against the narration, with the recovery of lost windows and without it (the
baseline, measured in the same run), and of the text the shards carry (refined where a rewrite was accepted), with
refinement as configured and with it on; keyframes against the true picture changes; OCR word recall of the slide
titles; the images in the shards that belong there (precision) and the slides that reached them (recall), and what
must not appear (`../shared/tools/match-slides`); key words of the narration found in the shards' texts.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from configs import PipelineConfig, load_config
from eval.scorers import levenshtein
from pipeline.asr import asr_output
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.inputs import resolve_inputs
from storage.outdir import OutDir
from storage.shards import ShardSet

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_SLIDES = SHARED / "data" / "real-slides"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length, on lowercase words without punctuation."""
    ref = words(reference)
    return levenshtein(ref, words(hypothesis)) / max(1, len(ref))


def lectures() -> list[dict]:
    sample = json.loads((ROOT / "tests/data/make_sample/lecture.json").read_text())
    found = [
        {
            "name": "sample (lecture.mp4)",
            "video": ROOT / "tests/data/lecture.mp4",
            "narration": sample["transcript"],
            "changes": [0.0, *sample["slide_changes"]],
            "titles": sample["titles"],
            "slides": sample["slides"],
            "key_words": [],
            "truth_dir": None,
        }
    ]
    if (REAL_SLIDES / "truth.json").is_file():
        truth = json.loads((REAL_SLIDES / "truth.json").read_text())
        found.append(
            {
                "name": "real-slides",
                "video": REAL_SLIDES / truth["video"],
                "narration": truth["narration"],
                "changes": [segment["start"] for segment in truth["timeline"] if segment["kind"] != "zoom"],
                "titles": [slide["title"] for key, slide in truth["slide_text"].items() if not key.startswith("_")],
                "key_words": truth["key_words"],
                "truth_dir": REAL_SLIDES,
            }
        )
    else:
        print(f"real-slides not found at {REAL_SLIDES}: measuring the sample only", file=sys.stderr)
    return found


def image_slides(lecture: dict, samples: list[dict]) -> list[str]:
    """The slide each shard image shows, by its time on the sample's timeline."""
    times = [ref["time"] for sample in samples for ref in json.loads(sample["metadata"])["images"]]
    return [next(s["id"] for s in lecture["slides"] if s["start"] <= time < s["end"]) for time in times]


def precision_recall(lecture: dict, samples: list[dict], matched: str) -> tuple[str, str]:
    """Images in the shards that belong there, and slides that reached them."""
    if lecture["truth_dir"] is None:
        shown = image_slides(lecture, samples)
        wanted = {s["id"] for s in lecture["slides"] if s["kind"] not in ("blank", "talking_head")}
        good = sum(slide in wanted for slide in shown)
        return f"{good}/{len(shown)}", f"{len(wanted & set(shown))}/{len(wanted)}"
    counts = dict(re.findall(r"(slides|images|forbidden|unmatched) (\d+/?\d*)", matched))
    images = int(counts.get("images", 0))
    good = images - int(counts.get("forbidden", 0)) - int(counts.get("unmatched", 0))
    return f"{good}/{images}", counts.get("slides", "-")


def refined_text_wer(lecture: dict, config: PipelineConfig, out: OutDir) -> tuple[float, str]:
    """The WER of the text the shards would carry with refinement on, over the same run's results."""
    config = config.model_copy(update={"refine": config.refine.model_copy(update={"enabled": True})})
    inputs = resolve_inputs(lecture["video"], config.input)
    engine = Engine(out, config, DAG, inputs.videos)
    run_stages(engine, ("refine",))
    refined = engine.table(("refine", inputs.videos[0].video_id)).to_pylist()
    used = " ".join(row["refined_asr"] if row["accepted"] else row["asr"] for row in refined)
    return word_error_rate(lecture["narration"], used), f"{sum(row['accepted'] for row in refined)}/{len(refined)}"


def measure(lecture: dict, config: PipelineConfig, out: OutDir) -> dict:
    plain = config.asr.model_copy(update={"recovery": config.asr.recovery.model_copy(update={"enabled": False})})
    baseline = asr_output(str(lecture["video"]), plain)
    inputs = resolve_inputs(lecture["video"], config.input)
    engine = Engine(out, config, DAG, inputs.videos)
    run_stages(engine, PROCESS_STAGES)
    (video,) = inputs.videos
    asr = engine.table(("asr", video.video_id)).to_pylist()
    refined = engine.table(("refine", video.video_id)).to_pylist()
    keyframes = engine.table(("keyframes", video.video_id)).to_pylist()
    ocr_words = set(words(" ".join(row["text"] for row in engine.table(("ocr", video.video_id)).to_pylist())))
    used = " ".join(row["refined_asr"] if row["accepted"] else row["asr"] for row in refined)
    samples = list(ShardSet.open(out).samples()) if engine.current(("shards", "all")) else []
    shard_text = " ".join(text for sample in samples for text in sample["texts"] if text).lower()
    title_words = [word for title in lecture["titles"] for word in words(title)]
    times = [row["time"] for row in keyframes]
    found_changes = sum(any(abs(t - change) <= 1.0 for t in times) for change in lecture["changes"])
    result = {
        "asr_wer_plain": word_error_rate(lecture["narration"], " ".join(s["text"] for s in baseline.rows)),
        "asr_wer": word_error_rate(lecture["narration"], " ".join(row["text"] for row in asr)),
        "text_wer": word_error_rate(lecture["narration"], used),
        "rewrites_accepted": f"{sum(row['accepted'] for row in refined)}/{len(refined)}",
        "keyframes": len(keyframes),
        "changes_found": f"{found_changes}/{len(lecture['changes'])}",
        "title_word_recall": sum(word in ocr_words for word in title_words) / max(1, len(title_words)),
        "images_in_shards": sum(sample["image_num"] for sample in samples),
        "key_words": f"{sum(word in shard_text for word in lecture['key_words'])}/{len(lecture['key_words'])}",
    }
    if lecture["truth_dir"] is not None:
        tool = SHARED / "tools" / "match-slides"
        matched = subprocess.run([sys.executable, str(tool), out.root, str(lecture["truth_dir"]), "--max-per-slide",
                                  "3"], capture_output=True, text=True, check=False)  # fmt: skip
        result["match_slides"] = (matched.stdout.strip().splitlines() or ["-"])[-1]
    matched_line = result.get("match_slides", "")
    result["image_precision"], result["slide_recall"] = precision_recall(lecture, samples, matched_line)
    result["text_wer_refine_on"], result["rewrites_accepted_refine_on"] = refined_text_wer(lecture, config, out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    config = load_config(None)
    folder = args.out or Path(tempfile.mkdtemp(prefix="quality-"))
    rows = {lecture["name"]: measure(lecture, config, OutDir(folder / f"run{i}")) for i, lecture in
            enumerate(lectures())}  # fmt: skip
    keys = list(dict.fromkeys(key for row in rows.values() for key in row))
    print("| figure | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
        cells = [
            f"{row[key]:.3f}" if isinstance(row.get(key), float) else str(row.get(key, "-")) for row in rows.values()
        ]
        print(f"| {key} | " + " | ".join(cells) + " |")
    for name, row in rows.items():
        print(f"{name}: ASR WER with recovery over without: {row['asr_wer'] / max(row['asr_wer_plain'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()

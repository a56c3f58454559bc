"""A long benchmark lecture made from the real media this project has, so no clip repeats another's speech.

There is no speech synthesiser here, so no new narration can be made. Instead the three narrated lectures (the
sample's two parts and real-slides, 232 s together) are cut into pieces at their sentence gaps (a slide change in a
gap is the cut), and each pass over the pieces takes them in its own seeded order. A clip (10-20 s of speech ended
at a sentence) then holds a run of pieces that no other clip holds, so its refine prompt is new to the LLM cache; a
piece is a whole sentence, so every sentence is still heard whole. Each pass shows its pictures at its own scale on
a dark canvas, so a picture of one pass is not the pixels of another (real lectures do not loop); within a pass a
slide that returns, a zoom and a build-up are what the sources hold.

    .venv/bin/python benchmarks/lecture.py [MINUTES]   # builds out/bench/fresh_<MINUTES>min.mp4 once
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.media import ffmpeg_exe

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "tests" / "data"
REAL_SLIDES = ROOT.parent / "shared" / "data" / "real-slides"
BENCH_DIR = ROOT / "out" / "bench"
WIDTH, HEIGHT, FPS = 854, 480, 15  # the download stage's default format is at most 480p
BACKGROUND = "0x1e1e1e"


@dataclass(frozen=True)
class Piece:
    source: Path
    start: float
    end: float


def cuts(speech: list[tuple[float, float]], changes: list[float], duration: float) -> list[float]:
    """Piece boundaries: in each gap between two stretches of speech, the slide change inside it, else its middle."""
    bounds = [0.0]
    for (_, end), (start, _) in zip(speech, speech[1:], strict=False):
        inside = [change for change in changes if end <= change <= start]
        bounds.append(inside[0] if inside else round((end + start) / 2, 3))
    return [*bounds, duration]


def sample_pieces(name: str) -> list[Piece]:
    truth = json.loads((SAMPLE_DIR / "make_sample" / f"{name}.json").read_text())
    speech = [(sentence["start"], sentence["end"]) for sentence in truth["narration"]]
    bounds = cuts(speech, truth["slide_changes"], truth["duration"])
    return [Piece(SAMPLE_DIR / truth["video"], a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def real_slides_pieces() -> list[Piece]:
    truth = json.loads((REAL_SLIDES / "truth.json").read_text())
    speech = [tuple(span) for segment in truth["timeline"] for span in segment["speech"]]
    changes = [segment["start"] for segment in truth["timeline"]]
    bounds = cuts(speech, changes, truth["duration"])
    return [Piece(REAL_SLIDES / truth["video"], a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def all_pieces() -> list[Piece]:
    pieces = sample_pieces("lecture") + sample_pieces("lecture_part2")
    if (REAL_SLIDES / "truth.json").is_file():
        pieces += real_slides_pieces()
    else:
        print(f"real-slides not found at {REAL_SLIDES}: the lecture is made of the sample alone", file=sys.stderr)
    return pieces


def encode_pass(pieces: list[Piece], scale: float, path: Path) -> None:
    """One pass: its pieces in order, fitted into the canvas at `scale`, re-encoded as one H.264 + AAC file."""
    inputs, chains = [], []
    box_w, box_h = int(WIDTH * scale) // 2 * 2, int(HEIGHT * scale) // 2 * 2
    for n, piece in enumerate(pieces):
        inputs += ["-ss", f"{piece.start:.3f}", "-t", f"{piece.end - piece.start:.3f}", "-i", str(piece.source)]
        chains.append(
            f"[{n}:v]fps={FPS},scale={box_w}:{box_h}:force_original_aspect_ratio=decrease,"
            f"pad={WIDTH}:{HEIGHT}:(ow-iw)/2:(oh-ih)/2:color={BACKGROUND},setsar=1,format=yuv420p[v{n}];"
            f"[{n}:a]aresample=16000,aformat=channel_layouts=mono[a{n}]"
        )
    streams = "".join(f"[v{n}][a{n}]" for n in range(len(pieces)))
    graph = ";".join(chains) + f";{streams}concat=n={len(pieces)}:v=1:a=1[v][a]"
    encode = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-g", str(5 * FPS), "-c:a", "aac", "-b:a", "64k"]
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[v]",
               "-map", "[a]", *encode, "-f", "mp4", str(path)]  # fmt: skip
    subprocess.run(command, check=True)


def fresh_lecture(minutes: float) -> Path:
    """The lecture of at least `minutes`, built once under out/bench/ (atomically: a partial file never counts)."""
    path = BENCH_DIR / f"fresh_{minutes:g}min.mp4"
    if path.exists():
        return path
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    pieces, target, passes, total = all_pieces(), minutes * 60, [], 0.0
    while total < target:
        order = random.Random(len(passes)).sample(pieces, len(pieces))
        taken = []
        for piece in order:
            if total >= target:
                break
            taken.append(piece)
            total += piece.end - piece.start
        passes.append(taken)
    parts = []
    for number, taken in enumerate(passes):
        part = BENCH_DIR / f"fresh_{minutes:g}min.pass{number}.mp4"
        encode_pass(taken, 1.0 - 0.02 * number, part)
        parts.append(part)
    listing = BENCH_DIR / f"fresh_{minutes:g}min.txt"
    listing.write_text("".join(f"file '{part.name}'\n" for part in parts))
    building = path.with_suffix(".partial")
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
    subprocess.run([*command, "-c", "copy", "-movflags", "+faststart", "-f", "mp4", str(building)], check=True)
    building.rename(path)
    for part in parts:
        part.unlink()
    listing.unlink()
    return path


if __name__ == "__main__":
    print(fresh_lecture(float(sys.argv[1]) if len(sys.argv) > 1 else 10))

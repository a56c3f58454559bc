"""Generate the bundled sample lecture videos and their ground truth.

Writes ``tests/data/lecture.mp4`` and ``tests/data/lecture_part2.mp4`` (640x360, H.264 + AAC mono)
and ``tests/data/make_sample/lecture.json`` / ``lecture_part2.json`` next to this script.

Slides are drawn with Pillow using its bundled font, narration is synthesised with ``espeak-ng``
and mixed into a 16 kHz mono track with numpy, and both are muxed by the ffmpeg binary shipped
with ``imageio-ffmpeg``. There is no randomness beyond a fixed seed, so every run gives the same files.

Usage::

    .venv/bin/python tests/data/make_sample/make_sample.py
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.signal import resample_poly

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE.parent

WIDTH, HEIGHT = 640, 360
FPS = 15
SAMPLE_RATE = 16_000
CRF = 30
GOP_SECONDS = 5

VOICE = "en-us"
WORDS_PER_MINUTE = 150

LEAD_IN = 0.6  # silence between a segment appearing and its first sentence
SENTENCE_GAP = 0.45  # silence between two sentences of one segment
TAIL = 0.6  # minimum silence after the last sentence before the next segment
TIME_GRID = 0.2  # segment boundaries are rounded up to this grid; must be a whole number of frames

ZOOM_FROM, ZOOM_TO = 1.0, 1.05
WORD_SPACING = 0.35  # gap between words of body text, in em (the font's own space is ~0.22 em)
TITLE_SPACING = 0.22  # the same for titles (36 px and up), where wide gaps split OCR boxes
SUPERSAMPLE = 2  # diagram and talking head are drawn at this multiple and downscaled

BACKGROUND = (255, 255, 255)
TEXT = (25, 30, 40)
TITLE = (20, 45, 95)
ACCENT = (40, 110, 190)
MUTED = (95, 100, 110)
RULE = (205, 212, 222)

Frame = Image.Image
Renderer = Callable[[float], Frame]  # progress in [0, 1) within the segment -> RGB frame


@cache
def font(size: int) -> ImageFont.FreeTypeFont:
    """Return Pillow's bundled scalable font (Aileron Regular) at ``size`` pixels."""
    return ImageFont.load_default(size=size)  # type: ignore[return-value]


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    size: int,
    fill: tuple[int, int, int],
    anchor: str = "la",
) -> None:
    """Draw ``text`` like ``ImageDraw.text`` but with wider gaps between words.

    The bundled font's space is narrow (about 0.22 em); OCR engines then tend to glue words together,
    so words are placed one by one with a gap of ``WORD_SPACING`` em. ``anchor`` is a Pillow
    two-letter anchor; its first letter (l, m, r) aligns the whole line horizontally.
    """
    face = font(size)
    words = text.split(" ")
    gap = (WORD_SPACING if size < 36 else TITLE_SPACING) * size
    widths = [face.getlength(word) for word in words]
    total = sum(widths) + gap * (len(words) - 1)
    x = xy[0] - {"l": 0.0, "m": total / 2, "r": total}[anchor[0]]
    for word, width in zip(words, widths, strict=True):
        draw.text((x, xy[1]), word, font=face, fill=fill, anchor="l" + anchor[1])
        x += width + gap


def static(image: Frame) -> Renderer:
    """Wrap a fixed image as a renderer that ignores time."""
    return lambda _progress: image


# ---------------------------------------------------------------------------------------------------------------------
# Slide drawing
# ---------------------------------------------------------------------------------------------------------------------


def slide_canvas(title: str) -> tuple[Frame, ImageDraw.ImageDraw]:
    """Return a blank content slide with ``title`` drawn at the top and a thin accent frame."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, WIDTH, 8), fill=ACCENT)
    draw_text(draw, (36, 26), title, 40, TITLE)
    draw.line((36, 80, WIDTH - 36, 80), fill=RULE, width=2)
    draw.rectangle((0, HEIGHT - 6, WIDTH, HEIGHT), fill=ACCENT)
    return image, draw


def title_slide(title: str, subtitle: str, note: str) -> Frame:
    """Draw the centred opening slide."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, WIDTH, 8), fill=ACCENT)
    draw_text(draw, (WIDTH / 2, 135), title, 48, TITLE, anchor="mm")
    draw.line((170, 172, WIDTH - 170, 172), fill=ACCENT, width=3)
    draw_text(draw, (WIDTH / 2, 210), subtitle, 28, TEXT, anchor="mm")
    draw_text(draw, (WIDTH / 2, 255), note, 24, MUTED, anchor="mm")
    draw.rectangle((0, HEIGHT - 6, WIDTH, HEIGHT), fill=ACCENT)
    return image


def bullet_slide(title: str, bullets: list[str]) -> Frame:
    """Draw a slide with a title and round bullet points."""
    image, draw = slide_canvas(title)
    y = 112
    for bullet in bullets:
        draw.ellipse((44, y + 8, 56, y + 20), fill=ACCENT)
        draw_text(draw, (72, y), bullet, 27, TEXT)
        y += 56
    return image


def formula_slide(title: str, formulas: list[str], notes: list[str]) -> Frame:
    """Draw a slide with boxed formulas followed by plain explanatory lines."""
    image, draw = slide_canvas(title)
    y = 104
    for formula in formulas:
        draw.rounded_rectangle((36, y, WIDTH - 36, y + 54), radius=8, fill=(240, 245, 252), outline=RULE, width=2)
        draw_text(draw, (WIDTH / 2, y + 27), formula, 30, TEXT, anchor="mm")
        y += 70
    y += 6
    for note in notes:
        draw_text(draw, (44, y), note, 24, MUTED)
        y += 38
    return image


def table_slide(title: str, header: list[str], rows: list[list[str]]) -> Frame:
    """Draw a slide with a ruled table: a shaded header row and one line per data row."""
    image, draw = slide_canvas(title)
    col_width, row_height = 170, 44
    left = (WIDTH - col_width * len(header)) // 2
    top = 100
    bottom = top + row_height * (len(rows) + 1)
    right = left + col_width * len(header)
    draw.rectangle((left, top, right, top + row_height), fill=(228, 236, 248))
    for r, cells in enumerate([header, *rows]):
        y = top + r * row_height + row_height / 2
        for c, cell in enumerate(cells):
            x = left + c * col_width + col_width / 2
            draw_text(draw, (x, y), cell, 26, TITLE if r == 0 else TEXT, anchor="mm")
    for r in range(len(rows) + 2):
        y = top + r * row_height
        draw.line((left, y, right, y), fill=MUTED, width=2)
    for c in range(len(header) + 1):
        x = left + c * col_width
        draw.line((x, top, x, bottom), fill=MUTED, width=2)
    return image


def blank_frame() -> Frame:
    """Return a uniformly black frame (the presenter blanked the screen)."""
    return Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))


# ---------------------------------------------------------------------------------------------------------------------
# Moving content: zoom over a diagram and a talking head
# ---------------------------------------------------------------------------------------------------------------------


def plot_diagram(title: str) -> Frame:
    """Draw a scatter plot with a fitted line and residuals at ``SUPERSAMPLE`` times the output size."""
    k = SUPERSAMPLE
    image = Image.new("RGB", (WIDTH * k, HEIGHT * k), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, WIDTH * k, 8 * k), fill=ACCENT)
    draw_text(draw, (36 * k, 26 * k), title, 40 * k, TITLE)
    draw.line((36 * k, 80 * k, (WIDTH - 36) * k, 80 * k), fill=RULE, width=2 * k)
    draw.rectangle((0, (HEIGHT - 6) * k, WIDTH * k, HEIGHT * k), fill=ACCENT)

    x0, y0, x1, y1 = 90 * k, 100 * k, 470 * k, 320 * k  # plot area in pixels
    xs = np.arange(1, 11, dtype=float)
    rng = np.random.default_rng(7)
    ys = 0.8 * xs + 1.0 + rng.normal(0.0, 0.6, xs.size)
    slope, intercept = np.polyfit(xs, ys, 1)

    def px(x: float, y: float) -> tuple[float, float]:
        return x0 + (x / 11) * (x1 - x0), y1 - (y / 11) * (y1 - y0)

    for tick in range(0, 11, 2):  # light grid with tick labels
        gx, _ = px(tick, 0)
        _, gy = px(0, tick)
        draw.line((gx, y0, gx, y1), fill=(235, 238, 243), width=k)
        draw.line((x0, gy, x1, gy), fill=(235, 238, 243), width=k)
        draw_text(draw, (gx, y1 + 6 * k), str(tick), 14 * k, MUTED, anchor="ma")
        draw_text(draw, (x0 - 8 * k, gy), str(tick), 14 * k, MUTED, anchor="rm")
    draw.line((x0, y1, x1, y1), fill=TEXT, width=2 * k)
    draw.line((x0, y0, x0, y1), fill=TEXT, width=2 * k)
    draw_text(draw, (x1 + 10 * k, y1), "x", 22 * k, TEXT, anchor="lm")
    draw_text(draw, (x0, y0 - 6 * k), "y", 22 * k, TEXT, anchor="md")

    draw.line((*px(0.3, slope * 0.3 + intercept), *px(10.7, slope * 10.7 + intercept)), fill=ACCENT, width=3 * k)
    for x, y in zip(xs, ys, strict=True):
        fit = px(x, slope * x + intercept)
        point = px(x, y)
        draw.line((*point, *fit), fill=(210, 60, 50), width=k)
        r = 6 * k
        draw.ellipse((point[0] - r, point[1] - r, point[0] + r, point[1] + r), fill=(230, 120, 40), outline=TEXT)

    lx, ly = 500 * k, 130 * k  # legend
    draw.ellipse((lx, ly, lx + 12 * k, ly + 12 * k), fill=(230, 120, 40), outline=TEXT)
    draw_text(draw, (lx + 22 * k, ly + 6 * k), "data", 22 * k, TEXT, anchor="lm")
    draw.line((lx - 4 * k, ly + 46 * k, lx + 16 * k, ly + 46 * k), fill=ACCENT, width=3 * k)
    draw_text(draw, (lx + 22 * k, ly + 46 * k), "fitted line", 22 * k, TEXT, anchor="lm")
    draw.line((lx + 6 * k, ly + 76 * k, lx + 6 * k, ly + 96 * k), fill=(210, 60, 50), width=k)
    draw_text(draw, (lx + 22 * k, ly + 86 * k), "residual", 22 * k, TEXT, anchor="lm")
    return image


def zoom(big: Frame, centre_to: tuple[float, float]) -> Renderer:
    """Return a renderer that zooms linearly from ``ZOOM_FROM`` to ``ZOOM_TO`` into ``big``.

    ``centre_to`` is the point (in output pixels) that ends up in the middle of the frame;
    the crop centre moves to it linearly while the scale grows, so every frame differs slightly.
    """
    bw, bh = big.size
    k = bw / WIDTH

    def render(progress: float) -> Frame:
        scale = ZOOM_FROM + (ZOOM_TO - ZOOM_FROM) * progress
        w, h = bw / scale, bh / scale
        cx = (1 - progress) * bw / 2 + progress * centre_to[0] * k
        cy = (1 - progress) * bh / 2 + progress * centre_to[1] * k
        cx = min(max(cx, w / 2), bw - w / 2)
        cy = min(max(cy, h / 2), bh - h / 2)
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        return big.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS, box=box)

    return render


def talking_head(duration: float) -> Renderer:
    """Return a renderer for a cartoon presenter (head and shoulders) that sways and talks; no text."""
    k = SUPERSAMPLE

    def render(progress: float) -> Frame:
        t = progress * duration
        image = Image.new("RGB", (WIDTH * k, HEIGHT * k), (206, 218, 230))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 250 * k, WIDTH * k, HEIGHT * k), fill=(190, 203, 218))  # desk/wall split
        sway = 7 * math.sin(2 * math.pi * 0.23 * t)
        bob = 3 * math.sin(2 * math.pi * 0.61 * t)
        cx, cy = 320 + sway, 150 + bob  # head centre, output pixels

        def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
            return x0 * k, y0 * k, x1 * k, y1 * k

        body_x = 320 + 0.4 * sway
        draw.ellipse(box(body_x - 150, 245 + 0.5 * bob, body_x + 150, 470), fill=(45, 70, 110))  # shoulders
        collar = [((body_x - 26) * k, 250 * k), ((body_x + 26) * k, 250 * k), (body_x * k, 290 * k)]
        draw.polygon(collar, fill=(240, 240, 245))
        draw.rectangle(box(cx - 20, cy + 55, cx + 20, cy + 95), fill=(225, 180, 150))  # neck
        draw.ellipse(box(cx - 62, cy - 78, cx + 62, cy + 78), fill=(235, 192, 160))  # face
        draw.chord(box(cx - 66, cy - 86, cx + 66, cy + 20), 180, 360, fill=(70, 50, 40))  # hair
        blink = (t % 3.7) < 0.15
        for ex in (cx - 24, cx + 24):
            if blink:
                draw.line(box(ex - 9, cy + 5, ex + 9, cy + 5), fill=TEXT, width=2 * k)
            else:
                draw.ellipse(box(ex - 7, cy - 2, ex + 7, cy + 12), fill=(40, 40, 50))
        opening = 3 + 9 * abs(math.sin(2 * math.pi * 2.3 * t)) * (0.6 + 0.4 * math.sin(2 * math.pi * 0.9 * t))
        draw.ellipse(box(cx - 18, cy + 36 - opening / 2, cx + 18, cy + 36 + opening / 2), fill=(150, 60, 60))
        return image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)

    return render


# ---------------------------------------------------------------------------------------------------------------------
# Timeline, narration and encoding
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Segment:
    """A stretch of the video with one kind of visible content and the sentences spoken over it."""

    id: str
    kind: str  # slide | build_step | zoom | blank | talking_head | return
    title: str | None
    text: list[str]
    sentences: list[str]
    min_duration: float
    render: Renderer | None = None  # None -> built later from the final duration (talking head)
    returns: str | None = None
    start: float = 0.0
    end: float = 0.0
    narration: list[dict[str, float | str]] = field(default_factory=list)


@dataclass
class VideoSpec:
    """One sample video: its file name, topic and segments in play order."""

    name: str
    topic: str
    segments: list[Segment]


def synthesize(sentence: str, workdir: Path, index: int) -> np.ndarray:
    """Speak ``sentence`` with espeak-ng; return float32 mono samples at ``SAMPLE_RATE`` with silence trimmed."""
    wav_path = workdir / f"sentence_{index:03d}.wav"
    subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(wav_path), sentence],
        check=True,
    )
    with wave.open(str(wav_path), "rb") as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    gcd = math.gcd(SAMPLE_RATE, rate)
    samples = resample_poly(samples, SAMPLE_RATE // gcd, rate // gcd).astype(np.float32)
    voiced = np.flatnonzero(np.abs(samples) > 0.02)
    pad = int(0.02 * SAMPLE_RATE)
    samples = samples[max(voiced[0] - pad, 0) : voiced[-1] + pad]
    return 0.85 * samples / np.max(np.abs(samples))


def layout(spec: VideoSpec, workdir: Path) -> np.ndarray:
    """Assign start/end times to segments and sentences; return the mixed narration track."""
    assert math.isclose(TIME_GRID * FPS, round(TIME_GRID * FPS)), "segment boundaries must fall on frames"
    clips: list[tuple[float, np.ndarray]] = []
    cursor = 0.0
    index = 0
    for segment in spec.segments:
        segment.start = cursor
        t = cursor + LEAD_IN
        segment.narration = []
        for sentence in segment.sentences:
            samples = synthesize(sentence, workdir, index)
            index += 1
            clips.append((t, samples))
            length = samples.size / SAMPLE_RATE
            segment.narration.append({"start": round(t, 3), "end": round(t + length, 3), "text": sentence})
            t += length + SENTENCE_GAP
        needed = (t - SENTENCE_GAP + TAIL - cursor) if segment.sentences else 0.0
        duration = max(segment.min_duration, math.ceil(needed / TIME_GRID - 1e-6) * TIME_GRID)
        segment.end = cursor = round(cursor + duration, 3)
        if segment.render is None:
            segment.render = talking_head(duration)
    track = np.zeros(round(cursor * SAMPLE_RATE), dtype=np.float32)
    for start, samples in clips:
        offset = round(start * SAMPLE_RATE)
        track[offset : offset + samples.size] += samples
    return track


def frames(spec: VideoSpec) -> Iterator[bytes]:
    """Yield raw RGB24 frames for the whole video, one segment after another."""
    for segment in spec.segments:
        assert segment.render is not None
        first, last = round(segment.start * FPS), round(segment.end * FPS)
        cached: bytes | None = None
        for i in range(first, last):
            if segment.kind in ("zoom", "talking_head"):
                yield segment.render((i - first) / (last - first)).tobytes()
            else:
                cached = cached or segment.render(0.0).tobytes()
                yield cached


def write_wav(path: Path, track: np.ndarray) -> None:
    """Write a float track as 16-bit mono PCM."""
    pcm = (np.clip(track, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())


def encode(spec: VideoSpec, audio_path: Path, out_path: Path) -> None:
    """Stream frames into ffmpeg (libx264, yuv420p) and mux them with the narration as AAC mono."""
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-",
        "-i", str(audio_path),
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "slow", "-crf", str(CRF), "-pix_fmt", "yuv420p",
        "-g", str(GOP_SECONDS * FPS), "-threads", "1",
        "-c:a", "aac", "-b:a", "32k", "-ar", str(SAMPLE_RATE), "-ac", "1",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-movflags", "+faststart", str(out_path),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert process.stdin is not None
    for frame in frames(spec):
        process.stdin.write(frame)
    process.stdin.close()
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg failed for {out_path}")


def ground_truth(spec: VideoSpec) -> dict[str, object]:
    """Build the JSON ground truth for a laid-out video."""
    segments = spec.segments
    changes = [s.start for s in segments[1:]]

    def stretch(kind: str) -> dict[str, float] | None:
        match = [s for s in segments if s.kind == kind]
        return {"start": match[0].start, "end": match[0].end} if match else None

    zoom_stretch = stretch("zoom")
    if zoom_stretch is not None:
        zoom_stretch.update(scale_from=ZOOM_FROM, scale_to=ZOOM_TO)

    titles: list[str] = []
    for segment in segments:
        if segment.title and segment.kind != "build_step":
            titles.append(segment.title)
    narration = [line for s in segments for line in s.narration]
    return {
        "video": spec.name,
        "topic": spec.topic,
        "duration": segments[-1].end,
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "slides": [
            {
                "id": s.id,
                "start": s.start,
                "end": s.end,
                "kind": s.kind,
                "title": s.title,
                "text": s.text,
                "returns": s.returns,
            }
            for s in segments
        ],
        "slide_changes": changes,
        "zoom": zoom_stretch,
        "blank": stretch("blank"),
        "talking_head": stretch("talking_head"),
        "titles": titles,
        "narration": narration,
        "transcript": " ".join(str(line["text"]) for line in narration),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------------------------------


def lecture_spec() -> VideoSpec:
    """Describe the main ~95 s sample: an introduction to linear regression."""
    what_title = "What is Linear Regression?"
    bullets = [
        "Predict a number from input features",
        "Fit a straight line to the data",
        "Learn weights by minimizing the error",
    ]
    formula_title = "The Model and the Loss"
    formulas = ["y = w * x + b", "Loss = mean of (y - prediction)^2"]
    formula_notes = ["w is the slope, b is the intercept", "The loss is the mean squared error (MSE)"]
    formula = formula_slide(formula_title, formulas, formula_notes)
    header = ["x", "y", "prediction"]
    rows = [["1", "2.1", "2.0"], ["2", "3.9", "4.0"], ["3", "6.2", "6.0"], ["4", "7.8", "8.0"]]
    plot_title = "Fitting a Line"
    summary = [
        "A line models the data: y = w * x + b",
        "Mean squared error measures the fit",
        "Training finds the best w and b",
        "Next lecture: Gradient Descent",
    ]
    segments = [
        Segment(
            "title", "slide", "Linear Regression",
            ["Linear Regression", "Introduction to Machine Learning", "Lecture 3"],
            [
                "Welcome to this lecture on linear regression.",
                "Linear regression is one of the simplest and most useful models in machine learning.",
            ],
            8.0, static(title_slide("Linear Regression", "Introduction to Machine Learning", "Lecture 3")),
        ),
        Segment(
            "what_is_1", "slide", what_title, [what_title, *bullets[:1]],
            ["What is linear regression?", "It predicts a number from one or more input features."],
            6.0, static(bullet_slide(what_title, bullets[:1])),
        ),
        Segment(
            "what_is_2", "build_step", what_title, [what_title, *bullets[:2]],
            ["To do this, it fits a straight line through the data points."],
            5.0, static(bullet_slide(what_title, bullets[:2])),
        ),
        Segment(
            "what_is_3", "build_step", what_title, [what_title, *bullets],
            ["The weights of the line are learned by minimizing the prediction error."],
            5.0, static(bullet_slide(what_title, bullets)),
        ),
        Segment(
            "formula", "slide", formula_title, [formula_title, *formulas, *formula_notes],
            [
                "The model says that y equals w times x plus b.",
                "Here, w is the slope, and b is the intercept.",
                "The loss is the mean squared error between the predictions and the true values.",
            ],
            10.0, static(formula),
        ),
        Segment(
            "table", "slide", "Example Data", ["Example Data", " ".join(header), *(" ".join(r) for r in rows)],
            [
                "This table shows a small example data set.",
                "Each row has an input x, a target y, and the prediction of the model.",
            ],
            8.0, static(table_slide("Example Data", header, rows)),
        ),
        Segment(
            "plot_zoom", "zoom", plot_title, [plot_title, "x", "y", "data", "fitted line", "residual"],
            [
                "Here is a plot of the data and the fitted line.",
                "The short red lines between the points and the line are called residuals.",
            ],
            10.0, zoom(plot_diagram(plot_title), centre_to=(300, 215)),
        ),
        Segment("blank", "blank", None, [], [], 5.0, static(blank_frame())),
        Segment(
            "talking_head", "talking_head", None, [],
            [
                "Now let me explain how we find the best line.",
                "We start with random weights and improve them step by step.",
            ],
            8.0,
        ),
        Segment(
            "formula_again", "return", formula_title, [formula_title, *formulas, *formula_notes],
            [
                "Let us go back to the loss function.",
                "Training means changing w and b to make this loss as small as possible.",
            ],
            8.0, static(formula), returns="formula",
        ),
        Segment(
            "summary", "slide", "Summary", ["Summary", *summary],
            [
                "To summarize, linear regression fits a straight line to the data.",
                "The mean squared error tells us how good the fit is.",
                "In the next lecture, we will learn about gradient descent.",
                "Thank you for watching.",
            ],
            10.0, static(bullet_slide("Summary", summary)),
        ),
    ]  # fmt: skip
    return VideoSpec("lecture.mp4", "Linear Regression", segments)


def part2_spec() -> VideoSpec:
    """Describe the second, shorter sample (~30 s): gradient descent, following on from the first video."""
    rule_title = "The Update Rule"
    rules = ["w = w - lr * dL/dw", "b = b - lr * dL/db"]
    rule_notes = ["lr is the learning rate", "Repeat until the loss stops going down"]
    rate_title = "Choosing the Learning Rate"
    rate_bullets = [
        "Too small: very slow progress",
        "Too large: the loss can blow up",
        "Plot the loss after each step",
    ]
    segments = [
        Segment(
            "title", "slide", "Gradient Descent",
            ["Gradient Descent", "Linear Regression, Part 2", "Lecture 4"],
            ["In this short lecture, we look at gradient descent."],
            5.0, static(title_slide("Gradient Descent", "Linear Regression, Part 2", "Lecture 4")),
        ),
        Segment(
            "update_rule", "slide", rule_title, [rule_title, *rules, *rule_notes],
            [
                "Gradient descent updates each weight by taking a small step against the gradient of the loss.",
                "The size of the step is set by the learning rate.",
                "We repeat this until the loss stops going down.",
            ],
            10.0, static(formula_slide(rule_title, rules, rule_notes)),
        ),
        Segment(
            "learning_rate", "slide", rate_title, [rate_title, *rate_bullets],
            [
                "Choosing the learning rate matters.",
                "If it is too small, training is very slow.",
                "If it is too large, the loss can blow up.",
                "So always plot the loss after each step.",
            ],
            10.0, static(bullet_slide(rate_title, rate_bullets)),
        ),
    ]  # fmt: skip
    return VideoSpec("lecture_part2.mp4", "Gradient Descent", segments)


def build(spec: VideoSpec) -> dict[str, object]:
    """Render, narrate and encode one video; write its ground truth JSON and return it."""
    with tempfile.TemporaryDirectory(prefix="make_sample_") as tmp:
        workdir = Path(tmp)
        track = layout(spec, workdir)
        audio_path = workdir / "narration.wav"
        write_wav(audio_path, track)
        encode(spec, audio_path, DATA_DIR / spec.name)
    truth = ground_truth(spec)
    json_path = HERE / (Path(spec.name).stem + ".json")
    json_path.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def main() -> None:
    """Regenerate every sample video and its ground truth."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is required (apt-get install espeak-ng)")
    for spec in (lecture_spec(), part2_spec()):
        truth = build(spec)
        size = (DATA_DIR / spec.name).stat().st_size
        print(f"{spec.name}: {truth['duration']:.1f} s, {size / 1e6:.2f} MB, {len(spec.segments)} segments")


if __name__ == "__main__":
    main()

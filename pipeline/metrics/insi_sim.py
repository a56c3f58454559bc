"""InSI-SIM, the textbook paper's in-sample image similarity: how much the images of one sample belong together.

For a sample, every pair of its images scores the mean of their SSIM (grayscale, downscaled) and the cosine of
their embeddings; the sample's value is the mean over its pairs, and a corpus's value the mean over samples with
at least two images. The paper measures 0.686 on its textbook and 0.345 on OBELICS (web pages).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

from pipeline.models.embed import ImageEmbedder

PAPER_TEXTBOOK = 0.686
PAPER_OBELICS = 0.345


@dataclass(frozen=True)
class SampleSimilarity:
    """One sample's InSI-SIM and its two halves, each a mean over the sample's image pairs."""

    insi_sim: float
    ssim: float
    cosine: float
    pairs: int


def gray(image: Image.Image, width: int, height: int) -> np.ndarray:
    return np.asarray(image.convert("L").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def pair_ssim(a: Image.Image, b: Image.Image, width: int) -> float:
    """SSIM of two images made grayscale at `width` pixels wide, both at the first one's aspect ratio."""
    height = max(7, round(width * a.height / a.width))
    return float(structural_similarity(gray(a, width, height), gray(b, width, height), data_range=255.0))


def sample_similarity(images: list[Image.Image], embedder: ImageEmbedder, ssim_width: int) -> SampleSimilarity | None:
    """InSI-SIM of one sample; None when it has fewer than two images (no pair to compare)."""
    if len(images) < 2:
        return None
    vectors = embedder.embed(images)
    pairs = list(combinations(range(len(images)), 2))
    ssims = np.array([pair_ssim(images[i], images[j], ssim_width) for i, j in pairs])
    cosines = np.array([float(vectors[i] @ vectors[j]) for i, j in pairs])
    return SampleSimilarity(
        float(np.mean((ssims + cosines) / 2)), float(ssims.mean()), float(cosines.mean()), len(pairs)
    )


def decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image

"""Embedders shared by the stages and metrics: text (refine guards, clip_filter) and images (InSI-SIM, RICES)."""

from pipeline.models.embed.image import ImageEmbedder, PictureLabeller, load_image_embedder, load_picture_labeller
from pipeline.models.embed.text import TextEmbedder, load_text_embedder

__all__ = [
    "ImageEmbedder",
    "PictureLabeller",
    "TextEmbedder",
    "load_image_embedder",
    "load_picture_labeller",
    "load_text_embedder",
]

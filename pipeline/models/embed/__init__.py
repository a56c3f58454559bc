"""Embedders shared by the stages and metrics: text (refine guards, clip_filter) and images (InSI-SIM, RICES)."""

from pipeline.models.embed.image import ImageEmbedder, load_image_embedder
from pipeline.models.embed.text import TextEmbedder, load_text_embedder

__all__ = ["ImageEmbedder", "TextEmbedder", "load_image_embedder", "load_text_embedder"]

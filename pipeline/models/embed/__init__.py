"""Embedders shared by the stages: text (refine guards, clip_filter) and, later, images (InSI-SIM, RICES)."""

from pipeline.models.embed.text import TextEmbedder, load_text_embedder

__all__ = ["TextEmbedder", "load_text_embedder"]

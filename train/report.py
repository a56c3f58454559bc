"""What a run leaves for people and machines: `metrics.json` (every logged step and the totals) and `loss.png`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from storage.outdir import OutDir  # noqa: E402

METRICS_FILE = "metrics.json"
LOSS_PLOT = "loss.png"


def write_file(run: Path, name: str, data: bytes) -> Path:
    """`run/name` written atomically (storage's `.partial`, fsync, rename): a killed run never leaves half a file."""
    folder = OutDir(run)
    folder.write_bytes(folder.path(name), data)
    return run / name


def write_metrics(run: Path, metrics: dict[str, Any]) -> Path:
    return write_file(run, METRICS_FILE, json.dumps(metrics, indent=2).encode())


def plot_loss(run: Path, history: list[dict[str, Any]], title: str) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot([entry["step"] for entry in history], [entry["loss"] for entry in history], linewidth=1.2)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (per target token)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    plt.close(figure)
    return write_file(run, LOSS_PLOT, image.getvalue())

"""What a run leaves for people and machines: `metrics.json` (every logged step and the totals) and `loss.png`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

METRICS_FILE = "metrics.json"
LOSS_PLOT = "loss.png"


def write_metrics(run: Path, metrics: dict[str, Any]) -> Path:
    path = run / METRICS_FILE
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(json.dumps(metrics, indent=2))
    os.replace(temporary, path)
    return path


def plot_loss(run: Path, history: list[dict[str, Any]], title: str) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot([entry["step"] for entry in history], [entry["loss"] for entry in history], linewidth=1.2)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (per target token)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = run / LOSS_PLOT
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

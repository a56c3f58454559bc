"""The run's human-facing results: a markdown table in the paper's layout (one row per shot count, one column per
benchmark, then the average) and a plot of accuracy by shots."""

from __future__ import annotations

import io

Accuracies = dict[str, dict[int, float]]  # benchmark title -> shots -> accuracy in percent


def average_by_shots(accuracies: Accuracies) -> dict[int, float]:
    """The mean over the benchmarks scored at each shot count."""
    shots = sorted({k for by_shots in accuracies.values() for k in by_shots})
    averages = {}
    for k in shots:
        values = [by_shots[k] for by_shots in accuracies.values() if k in by_shots]
        averages[k] = sum(values) / len(values)
    return averages


def markdown_table(model: str, selection: str, accuracies: Accuracies) -> str:
    titles = list(accuracies)
    averages = average_by_shots(accuracies)
    lines = [
        f"Few-shot accuracy (%) of `{model}`, in-context examples by {selection}",
        "",
        "| Shots | " + " | ".join(titles) + " | Avg. |",
        "|---:|" + "---:|" * (len(titles) + 1),
    ]
    for k, average in averages.items():
        cells = [f"{accuracies[title][k]:.1f}" if k in accuracies[title] else "-" for title in titles]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {average:.1f} |")
    return "\n".join(lines) + "\n"


def accuracy_plot(accuracies: Accuracies) -> bytes:
    """A PNG: accuracy by number of shots, one line per benchmark and a dashed average."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4), dpi=100)
    for title, by_shots in accuracies.items():
        shots = sorted(by_shots)
        axes.plot(shots, [by_shots[k] for k in shots], marker="o", label=title)
    averages = average_by_shots(accuracies)
    axes.plot(list(averages), list(averages.values()), "k--", marker="s", label="Avg.")
    axes.set_xlabel("in-context examples (shots)")
    axes.set_ylabel("accuracy (%)")
    axes.set_xticks(sorted(averages))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    return buffer.getvalue()

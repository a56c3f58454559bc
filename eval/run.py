"""One evaluation run: every benchmark x shot count, resumable, then the table, the plot and a summary.

Per cell, OUT gets `predictions/<benchmark>-<k>shot.jsonl` (one row per query: its id, the ids of its in-context
examples in prompt order, the prediction, its token count, `context_overflow`, its score and what scored it) and
`scores/<benchmark>-<k>shot.json`. Predictions are written after every batch; a rerun generates only the queries
without a prediction made under the same settings (model, sets, templates, selection, RoPE), and rescores all.
The run ends with `results.md`, `accuracy_by_shots.png` and `summary.json`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from configs.eval import EvalConfig
from eval.generate import Generator, load_generator
from eval.items import Example, load_examples
from eval.prompt import build_prompt
from eval.report import accuracy_plot, average_by_shots, markdown_table
from eval.rices import cached_embeddings, excluded_shots, load_embedder, most_similar, random_shots
from eval.score import OVERFLOW, score_predictions
from pipeline.models.assets import resolve_local
from storage.outdir import OutDir
from storage.tables import digest

logger = logging.getLogger(__name__)
TABLE_FILE = "results.md"
PLOT_FILE = "accuracy_by_shots.png"


class EvalRun:
    """Sets, embeddings and the model are loaded once per run, and only when a cell needs them."""

    def __init__(self, config: EvalConfig, model: str, out: OutDir, max_shots: int) -> None:
        self.config = config
        self.model = model
        self.model_identity = model_identity(model)
        self.out = out
        self.max_shots = max_shots
        self._sets: dict[str, list[Example]] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._generator: Generator | None = None

    def examples(self, name: str) -> list[Example]:
        if name not in self._sets:
            self._sets[name] = load_examples(name, self.config.datasets[name], self.config.mathverse_versions)
        return self._sets[name]

    def queries(self, benchmark: str) -> list[Example]:
        queries = self.examples(self.config.benchmarks[benchmark].queries)
        return queries[: self.config.limit] if self.config.limit else queries

    def vectors(self, name: str, examples: list[Example]) -> np.ndarray:
        """Embeddings of a set's first len(examples) items (a limited query set is a prefix of its set)."""
        key = f"{name}:{len(examples)}"
        if key not in self._vectors:
            cache = Path(self.config.rices.cache_dir).expanduser()
            self._vectors[key] = cached_embeddings(examples, load_embedder(self.config.rices), cache, name)
        return self._vectors[key]

    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = load_generator(self.model, self.config.generation, self.max_shots + 1)
        return self._generator

    def rope_scaled(self, shots: int) -> bool:
        return rope_scaled(self.config, shots)

    def fingerprint(self, benchmark: str, shots: int) -> str:
        return digest({"model": self.model_identity, **generation_settings(self.config, benchmark, shots)})

    def shots_for(self, benchmark: str, queries: list[Example], shots: int) -> list[list[Example]]:
        if shots == 0:
            return [[] for _ in queries]
        bench = self.config.benchmarks[benchmark]
        support = self.examples(bench.support)
        excluded = [excluded_shots(query, support) for query in queries]
        if self.config.selection == "random":
            picks = [
                random_shots(self.config.seed, benchmark, q, len(support), shots, ex)
                for q, ex in zip(queries, excluded, strict=True)
            ]
        else:
            support_vectors = self.vectors(bench.support, support)
            evaluated = self.queries(benchmark)
            query_vectors = self.vectors(bench.queries, evaluated)
            positions = {example.id: i for i, example in enumerate(evaluated)}
            picks = [
                most_similar(query_vectors[positions[q.id]], support_vectors, shots, ex)
                for q, ex in zip(queries, excluded, strict=True)
            ]
        return [[support[i] for i in pick] for pick in picks]

    def run_cell(self, benchmark: str, shots: int) -> dict[str, Any]:
        started = time.perf_counter()
        bench = self.config.benchmarks[benchmark]
        queries = self.queries(benchmark)
        path = self.out.path("predictions", f"{benchmark}-{shots}shot.jsonl")
        fingerprint = self.fingerprint(benchmark, shots)
        done = {row["id"]: row for row in read_jsonl(self.out, path) if row["fingerprint"] == fingerprint}
        todo = [query for query in queries if query.id not in done]
        size = self.config.generation.batch_size
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            generator = self.generator()
            prompts = [
                build_prompt(query, examples, bench, self.config.prompt, generator.eos_token)
                for query, examples in zip(batch, self.shots_for(benchmark, batch, shots), strict=True)
            ]
            for prompt, generation in zip(prompts, generator.generate(prompts, self.rope_scaled(shots)), strict=True):
                done[prompt.query_id] = {
                    "id": prompt.query_id,
                    "example_ids": list(prompt.example_ids),
                    "prediction": generation.text,
                    "prompt_tokens": generation.prompt_tokens,
                    "context_overflow": generation.context_overflow,
                    "fingerprint": fingerprint,
                }
            write_jsonl(self.out, path, [done[q.id] for q in queries if q.id in done])
        rows = [done[query.id] for query in queries]
        triples = [(q, row["prediction"], row["context_overflow"]) for q, row in zip(queries, rows, strict=True)]
        scores = score_predictions(bench.scorer, triples, self.config.math_scoring)
        for row, score in zip(rows, scores, strict=True):
            row.update(score=score.value, scored_by=score.scored_by, extracted=score.extracted)
        write_jsonl(self.out, path, rows)
        result = {
            "benchmark": benchmark,
            "title": bench.title,
            "shots": shots,
            "selection": "none" if shots == 0 else self.config.selection,
            "model": self.model,
            "count": len(rows),
            "accuracy": 100 * sum(score.value for score in scores) / len(scores) if scores else 0.0,
            "context_overflow": sum(score.scored_by == OVERFLOW for score in scores),
            "scored_by": sorted({score.scored_by for score in scores}),
            "rope_scaled": self.rope_scaled(shots),
            "generated_now": len(todo),
        }
        self.out.write_json(self.out.path("scores", f"{benchmark}-{shots}shot.json"), result)
        logger.info(
            "%s %d-shot: %d queries (%d generated now) in %.1f s, accuracy %.1f",
            benchmark, shots, len(rows), len(todo), time.perf_counter() - started, result["accuracy"],
        )  # fmt: skip
        return result


def rope_scaled(config: EvalConfig, shots: int) -> bool:
    rope = config.generation.rope_scaling
    return rope is not None and shots >= rope.from_shots


def generation_settings(config: EvalConfig, benchmark: str, shots: int) -> dict[str, Any]:
    """Every setting a cell's predictions depend on besides the model: what a prediction is kept under."""
    bench = config.benchmarks[benchmark]
    selection = "none" if shots == 0 else config.selection
    return {
        "benchmark": bench.model_dump(exclude={"title", "scorer"}),
        "sets": [config.datasets[bench.queries].model_dump(), config.datasets[bench.support].model_dump()],
        "prompt": config.prompt.model_dump(),
        "shots": shots,
        "selection": selection,
        "seed": config.seed if selection == "random" else None,
        "embedder": config.rices.model_dump(exclude={"cache_dir", "batch_size", "device"})
        if selection == "rices"
        else None,
        "rope": config.generation.rope_scaling.model_dump() if rope_scaled(config, shots) else None,
    }


def model_identity(model: str) -> str:
    """A local checkpoint by its files' names, sizes and modification times (a checkpoint retrained into the same
    folder is another model), a hub id by its name."""
    local = resolve_local(model)
    if local is None:
        return model
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
    stats = [
        (str(p.relative_to(local)) if local.is_dir() else p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in files
    ]
    return digest([model, stats])


def read_jsonl(out: OutDir, path: str) -> list[dict[str, Any]]:
    if not out.exists(path):
        return []
    return [json.loads(line) for line in out.read_bytes(path).decode().splitlines() if line.strip()]


def write_jsonl(out: OutDir, path: str, rows: list[dict[str, Any]]) -> None:
    out.write_bytes(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode())


def cells(
    config: EvalConfig, benchmarks: list[str] | None = None, shots: list[int] | None = None
) -> tuple[list[str], list[int]]:
    """The benchmarks (default: all configured) and shot counts (default: the config's) of a run, checked."""
    names = list(benchmarks or config.benchmarks)
    unknown = [name for name in names if name not in config.benchmarks]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; configured: {', '.join(config.benchmarks)}")
    shot_counts = list(shots if shots is not None else config.shots)
    if not shot_counts or min(shot_counts) < 0:
        raise ValueError(f"shot counts must be a non-empty list of numbers >= 0, got {shot_counts}")
    return names, shot_counts


def write_results(
    target: OutDir,
    config: EvalConfig,
    model: str,
    shot_counts: list[int],
    results: dict[str, dict[int, dict]],
    **extra: Any,
) -> dict[str, Any]:
    """`results.md`, `accuracy_by_shots.png` and `summary.json` (holding `extra` too) from the cells' results
    (benchmark -> shots -> what `run_cell` returns); returns the summary."""
    accuracies = {
        config.benchmarks[name].title: {k: cell["accuracy"] for k, cell in by_k.items()}
        for name, by_k in results.items()
    }
    table = target.path(TABLE_FILE)
    plot = target.path(PLOT_FILE)
    target.write_bytes(table, markdown_table(model, config.selection, accuracies).encode())
    target.write_bytes(plot, accuracy_plot(accuracies))
    summary = {
        "model": model,
        "selection": config.selection,
        "shots": shot_counts,
        "cells": {name: {str(k): cell for k, cell in by_k.items()} for name, by_k in results.items()},
        "average": {str(k): value for k, value in average_by_shots(accuracies).items()},
        "table": table,
        "plot": plot,
        **extra,
    }
    target.write_json(target.path("summary.json"), summary)
    return summary


def evaluate(
    config: EvalConfig,
    model: str,
    out: str | Path,
    benchmarks: list[str] | None = None,
    shots: list[int] | None = None,
) -> dict[str, Any]:
    """Evaluate `model` (a local HF-format LLaVA folder, or a hub id for the vLLM back-end) on `benchmarks` (default:
    all configured) at `shots` (default: the config's), writing under `out` (local or fsspec URL). Returns the summary
    that `summary.json` holds."""
    names, shot_counts = cells(config, benchmarks, shots)
    target = OutDir(out)
    run = EvalRun(config, model, target, max(shot_counts))
    results = {name: {k: run.run_cell(name, k) for k in shot_counts} for name in names}
    return write_results(target, config, model, shot_counts, results)

"""The instruct branch as stages of the engine, run under an `InstructConfig`:

    items -> triage -> rewrite -> filter -> decontaminate -> dedup -> mix -> export

`items` has one unit per source part (a shard of the set, a user-brought set); the four per-batch stages one unit
per `batch_size` items of a part (`<part>-<batch>`), each reading its batch's rows of the stage before and of
`items`; `dedup`, `mix` and `export` one corpus unit over every current batch (a failed batch is recorded and left
out, not waited for). Each stage is given only what the stage before kept, so each table's drops are its own. A
changed prompt reruns the rewrite and what follows, a new shard only its own batches, a finished batch is skipped.
`summarize` writes the funnel report (`report.json`, `report.md`) from the tables.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from configs.eval import load_eval_config
from configs.instruct import InstructConfig
from eval.dag import files_fingerprint
from instruct import decontaminate, export, rewrite, schemas, sources, text, triage
from instruct import dedup as dedup_module
from instruct import filter as filter_module
from instruct import mix as mix_module
from instruct.decontaminate import benchmark_index, contamination, image_embedder
from instruct.export import write_export
from instruct.filter import filter_candidates
from instruct.mix import mix
from instruct.report import write_report
from instruct.rewrite import original_candidate, rewrite_items
from instruct.sources import shard_items, user_items
from instruct.text import source_text
from instruct.triage import categorise
from pipeline.engine.engine import Engine
from pipeline.engine.run_files import StageReport
from pipeline.engine.stage import Dag, ResultRef, Stage, Unit, UnitWork, code_version
from pipeline.models.embed import load_text_embedder
from pipeline.models.llm import load_llm
from pipeline.records import StageOutput, funnel
from storage.shards import ShardSet
from storage.tables import digest

VERSION = 1
STAGES = ("items", "triage", "rewrite", "filter", "decontaminate", "dedup", "mix", "export")
CORPUS = "corpus"


def _safe(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tag).strip("._") or "source"


def no_sections(config: InstructConfig) -> tuple[str, ...]:
    return ()


def candidate_stats(rows: list[dict[str, Any]], unit: str = "candidates", **counters: int) -> StageOutput:
    """A candidate table's output: its funnel, and counts in and kept by origin and category."""
    counts: Counter[str] = Counter()
    for row in rows:
        counts[f"in.{row['origin']}.{row['category']}"] += 1
        counts[f"kept.{row['origin']}.{row['category']}"] += bool(row["keep"])
    reasons = [row["reason"] or "" for row in rows]
    return StageOutput(rows=rows, counters={**counters, **counts},
                       funnel=funnel(unit, [bool(row["keep"]) for row in rows], reasons))  # fmt: skip


@dataclass(frozen=True)
class InstructDag:
    """The planners and run functions of one instruct run over the shards folder `shards` (None: user sets only)."""

    shards: str | None

    # -- planning ---------------------------------------------------------------------------------------------

    def plan_items(self, engine: Engine, stage: Stage) -> Iterator[Unit]:
        config: InstructConfig = engine.config
        if self.shards is not None and config.shards.action != "discard":
            shard_set = ShardSet.at(self.shards)
            settings = config.shards.model_dump(mode="json")
            for entry in shard_set.shards:
                external = {"shard": entry["digest"], "cfg": settings}
                source = f"{shard_set.url}/{entry['file']}"
                yield Unit(f"shards-{entry['digest'][:16]}", external=external, payload=("shards", shard_set, entry),
                           source=source)  # fmt: skip
        for tag, source in config.sources.items():
            external = {"files": files_fingerprint(source.path), "cfg": source.model_dump(mode="json")}
            yield Unit(f"source-{_safe(tag)}", external=external, payload=("user", tag, source), source=source.path)

    def batches(self, engine: Engine) -> Iterator[tuple[str, int, int]]:
        """(items unit, batch number, its first row) of every current items result."""
        size = engine.config.batch_size
        for unit_id in engine.units("items"):
            if engine.current(("items", unit_id)) is None:
                continue
            count = engine.stamp(("items", unit_id)).stats["counters"]["items"]
            for number in range(math.ceil(count / size)):
                yield unit_id, number, number * size

    def batch_planner(self, before: str | None) -> Callable[[Engine, Stage], Iterator[Unit]]:
        def plan(engine: Engine, stage: Stage) -> Iterator[Unit]:
            external: dict[str, Any] = {"batch_size": engine.config.batch_size}
            if stage.name == "decontaminate":
                external["sets"] = decontamination_sets(engine.config)
            for part, number, first in self.batches(engine):
                unit_id = f"{part}-{number:04d}"
                reads: tuple[ResultRef, ...] = (("items", part),) + (((before, unit_id),) if before else ())
                yield Unit(unit_id, reads=reads, external=external, payload=(part, first), source=unit_id)

        return plan

    def corpus_planner(self, reads_of: Callable[[Engine], tuple[ResultRef, ...]]) -> Callable:
        def plan(engine: Engine, stage: Stage) -> Iterator[Unit]:
            reads = reads_of(engine)
            if reads:
                yield Unit(CORPUS, reads=reads, source="corpus")

        return plan

    @staticmethod
    def current_batches(engine: Engine) -> tuple[ResultRef, ...]:
        """Every current decontaminate batch: a failed batch is recorded as such and left out, not waited for."""
        return tuple(("decontaminate", unit) for unit in engine.units("decontaminate")
                     if engine.current(("decontaminate", unit)) is not None)  # fmt: skip

    @staticmethod
    def mixed_and_items(engine: Engine) -> tuple[ResultRef, ...]:
        if engine.current(("mix", CORPUS)) is None:
            return ()
        parts = [("items", unit) for unit in engine.units("items") if engine.current(("items", unit)) is not None]
        return (("mix", CORPUS), *parts)

    # -- running ----------------------------------------------------------------------------------------------

    @staticmethod
    def batch_items(work: UnitWork) -> list[dict[str, Any]]:
        part, first = work.payload
        return work.read("items", part).slice(first, work.config.batch_size).to_pylist()

    def run_items(self, work: UnitWork) -> StageOutput:
        kind, *rest = work.payload
        skipped: Counter[str] = Counter()
        if kind == "shards":
            shard_set, entry = rest
            rows = list(shard_items(shard_set, entry, work.config.shards))
            limit = work.config.shards.max_items
            rows = rows[:limit] if limit else rows
        else:
            tag, source = rest
            rows, skipped = user_items(tag, source)
        reasons = [""] * len(rows) + [reason for reason, n in skipped.items() for _ in range(n)]
        kept = [True] * len(rows) + [False] * sum(skipped.values())
        return StageOutput(rows=rows, counters={"items": len(rows)}, funnel=funnel("rows", kept, reasons))

    def run_triage(self, work: UnitWork) -> StageOutput:
        cfg: InstructConfig = work.config
        llm = load_llm(cfg.llm) if cfg.triage.llm_fallback else None
        rows = categorise(self.batch_items(work), cfg.triage, llm)
        by = Counter(f"by.{row['category_by'].split(':')[0]}" for row in rows)
        categories = Counter(f"category.{row['category']}" for row in rows)
        reasons = [row["reason"] or "" for row in rows]
        return StageOutput(rows=rows, counters={"items": len(rows), **by, **categories},
                           funnel=funnel("items", [row["keep"] for row in rows], reasons))  # fmt: skip

    def run_rewrite(self, work: UnitWork) -> StageOutput:
        cfg: InstructConfig = work.config
        items = self.batch_items(work)
        triage = {row["item_id"]: row for row in work.read("triage").to_pylist()}
        targets = [item for item in items if triage[item["item_id"]]["keep"]]
        rewrite = [item for item in targets if triage[item["item_id"]]["action"] == "rewrite"]
        seen_by_vlm = [item for item in rewrite if cfg.rewrite.vlm is not None and item["images"]
                       and not (item["caption"] and not item["conversations"])]  # fmt: skip
        by_text = [item for item in rewrite if item not in seen_by_vlm]
        rewritten: dict[str, dict[str, Any]] = {}
        for group, llm_cfg in ((seen_by_vlm, cfg.rewrite.vlm), (by_text, cfg.llm)):
            if group:
                categories = [triage[item["item_id"]]["category"] for item in group]
                made = rewrite_items(group, categories, cfg.rewrite, load_llm(llm_cfg), llm_cfg is cfg.rewrite.vlm)
                rewritten.update({row["item_id"]: row for row in made})
        rows = []
        for item in targets:
            if item["item_id"] in rewritten:
                rows.append(rewritten[item["item_id"]])
            if (original := original_candidate(item, triage[item["item_id"]]["category"])) is not None:
                rows.append(original)
        return candidate_stats(rows, items=len(items), to_vlm=len(seen_by_vlm), to_text_llm=len(by_text))

    def run_filter(self, work: UnitWork) -> StageOutput:
        cfg: InstructConfig = work.config
        items = {item["item_id"]: item for item in self.batch_items(work)}
        candidates = [row for row in work.read("rewrite").to_pylist() if row["keep"]]
        sources = [source_text({**items[c["item_id"]], "conversations": []}) for c in candidates]
        llm = load_llm(cfg.llm) if cfg.filter.judge.enabled else None
        return candidate_stats(filter_candidates(candidates, sources, cfg.filter, llm))

    def run_decontaminate(self, work: UnitWork) -> StageOutput:
        cfg: InstructConfig = work.config
        items = {item["item_id"]: item for item in self.batch_items(work)}
        index = benchmark_index(cfg.decontaminate, cfg.embeddings)
        texts = load_text_embedder(cfg.embeddings.text_model, cfg.embeddings.device)
        kept = [row for row in work.read("filter").to_pylist() if row["keep"]]
        rows = contamination(kept, items, index, cfg.decontaminate,
                             image_embedder(cfg.embeddings), texts)  # fmt: skip
        output = candidate_stats(rows)
        output.values["unchecked_sets"] = index.unchecked
        output.values["benchmark_items"] = len(index.ids)
        return output

    def run_dedup(self, work: UnitWork) -> StageOutput:
        cfg: InstructConfig = work.config
        rows = [row for ref in work.unit.reads for row in work.tables(ref).to_pylist() if row["keep"]]
        embedder = load_text_embedder(cfg.embeddings.text_model, cfg.embeddings.device)
        return candidate_stats(dedup_module.near_duplicates(rows, cfg.dedup, embedder))

    def run_mix(self, work: UnitWork) -> StageOutput:
        rows = [row for row in work.read("dedup", CORPUS).to_pylist() if row["keep"]]
        return candidate_stats(mix(rows, work.config.mix))

    def run_export(self, work: UnitWork) -> StageOutput:
        chosen = [row for row in work.read("mix", CORPUS).to_pylist() if row["keep"]]
        wanted = {row["item_id"] for row in chosen}
        items = {}
        for ref in work.unit.reads[1:]:
            part = work.tables(ref)
            mask = pc.is_in(part["item_id"], value_set=pa.array(sorted(wanted), pa.string()))
            items.update({item["item_id"]: item for item in part.filter(mask).to_pylist()})
        records = [{"id": dedup_module.candidate_id(row), "images": items[row["item_id"]]["images"],
                    "conversations": row["conversations"], "source": items[row["item_id"]]["source"],
                    "category": row["category"], "origin": row["origin"]} for row in chosen]  # fmt: skip
        counts = write_export(work.out, records, work.config.export)
        return StageOutput(rows=[{"file": "instruct.json", **counts}], counters=counts)


def decontamination_sets(config: InstructConfig) -> dict[str, Any]:
    """What identifies the benchmark sets outside OUT: their files' digests (a hub set by its name)."""
    datasets = load_eval_config(config.decontaminate.eval_config).datasets
    return {name: files_fingerprint(datasets[name].path) or datasets[name].hub
            for name in config.decontaminate.sets if name in datasets}  # fmt: skip


def _version(*modules: Any) -> str:
    """A stage's version: its own module's code and this one's (planning and wiring)."""
    return f"{VERSION}-{digest([code_version(module) for module in (sys.modules[__name__], *modules)])[:8]}"


def _current_dedup(engine: Engine) -> tuple[ResultRef, ...]:
    return (("dedup", CORPUS),) if engine.current(("dedup", CORPUS)) else ()


def instruct_dag(shards: str | None) -> Dag:
    """The instruct DAG over the shards folder `shards` (or none) and the config's user sets."""
    runs = InstructDag(shards)
    batch, corpus = runs.batch_planner, runs.corpus_planner
    stages = (
        Stage("items", "batch", _version(sources), (), (), schemas.ITEMS, runs.run_items, runs.plan_items,
              sections=no_sections),
        Stage("triage", "batch", _version(triage), ("items",), ("triage", "llm"), schemas.TRIAGE, runs.run_triage,
              batch(None), kind="model"),
        Stage("rewrite", "batch", _version(rewrite, text), ("items", "triage"), ("rewrite", "llm"), schemas.REWRITE,
              runs.run_rewrite, batch("triage"), kind="model"),
        Stage("filter", "batch", _version(filter_module, text), ("items", "rewrite"), ("filter", "llm"),
              schemas.FILTER, runs.run_filter, batch("rewrite"), kind="model"),
        Stage("decontaminate", "batch", _version(decontaminate), ("items", "filter"),
              ("decontaminate", "embeddings"), schemas.DECONTAMINATE, runs.run_decontaminate, batch("filter"),
              kind="model"),
        Stage("dedup", "corpus", _version(dedup_module), ("decontaminate",), ("dedup", "embeddings"), schemas.DEDUP,
              runs.run_dedup, corpus(runs.current_batches), kind="model"),
        Stage("mix", "corpus", _version(mix_module), ("dedup",), ("mix",), schemas.MIX, runs.run_mix,
              corpus(_current_dedup)),
        Stage("export", "corpus", _version(export), ("mix", "items"), ("export",), schemas.EXPORT, runs.run_export,
              corpus(runs.mixed_and_items)),
    )  # fmt: skip
    return Dag(stages, config_model=InstructConfig)


def summarize(engine: Engine, reports: list[StageReport]) -> dict[str, Any]:
    """The funnel report of every current table, written to OUT/report.json and OUT/report.md."""
    return write_report(engine, reports)

"""taxonomy: subjects expanded by an LLM, level by level, into subject -> course -> sub-course -> knowledge point.

Each level is one batch of structured calls (one per parent). Names are cleaned and deduplicated among siblings,
and knowledge points across the whole tree. A parent whose answer never validates gets no children and is
reported; the rest of the tree goes on. A user-supplied tree (YAML or CSV) replaces generation.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from configs.schema import TaxonomyConfig
from pipeline.engine.stage import UnitWork
from pipeline.inputs import sanitize_id
from pipeline.models.llm import Llm
from pipeline.models.llm.structured import LlmOutputError, complete_json_batch
from pipeline.records import StageOutput

VERSION = 1
LEVELS = ("subject", "course", "sub_course", "knowledge_point")
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)


class Names(BaseModel):
    names: list[str] = Field(min_length=1, description="short names, one per item")


def clean_name(name: str) -> str:
    """Strip list numbering, quotes and stray punctuation so that near-identical names compare equal."""
    name = _NUMBERING.sub("", str(name)).strip(" \"'`.;:,")
    return re.sub(r"\s+", " ", name)


def unique_names(names: list[str], limit: int, seen: set[str] | None = None) -> list[str]:
    """Cleaned names in order, without case-insensitive duplicates (also against `seen`), at most `limit`."""
    kept: list[str] = []
    seen = seen if seen is not None else set()
    for name in map(clean_name, names):
        key = name.casefold()
        if name and key not in seen:
            seen.add(key)
            kept.append(name)
        if len(kept) == limit:
            break
    return kept


def node_id(path: list[str]) -> str:
    """A file-safe id for a node of the tree: its readable last name plus a hash of the whole path."""
    digest = hashlib.sha256(" > ".join(path).encode()).hexdigest()[:8]
    return f"{sanitize_id(path[-1])[:48]}-{digest}"


def point_row(path: list[str]) -> dict[str, Any]:
    return {"point_id": node_id(path), **dict(zip(LEVELS, path, strict=True)), "path": " > ".join(path)}


def generate(llm: Llm, cfg: TaxonomyConfig) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The knowledge-point rows of an LLM-grown tree, and the parents it could not expand, with reasons."""
    counts = {
        "course": cfg.courses_per_subject,
        "sub_course": cfg.sub_courses_per_course,
        "knowledge_point": cfg.points_per_sub_course,
    }
    paths = [[name] for name in unique_names(cfg.subjects, len(cfg.subjects))]
    failures: list[dict[str, str]] = []
    points_seen: set[str] = set()
    for level in LEVELS[1:]:
        child = level.replace("_", "-")
        prompts = [cfg.prompt.format(count=counts[level], child=child, path=" > ".join(path)) for path in paths]
        answers = complete_json_batch(llm, prompts, Names)
        grown = []
        for path, answer in zip(paths, answers, strict=True):
            if isinstance(answer, LlmOutputError):
                failures.append({"path": " > ".join(path), "level": level, "reason": answer.reason})
                continue
            seen = points_seen if level == "knowledge_point" else set()
            grown += [[*path, name] for name in unique_names(answer.names, counts[level], seen)]
        paths = grown
    return [point_row(path) for path in paths], failures


def load_file(path: str | Path) -> list[dict[str, Any]]:
    """A user tree: YAML nested as {subject: {course: {sub_course: [points]}}}, or a CSV with the level columns."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            rows = [[row[level] for level in LEVELS] for row in csv.DictReader(handle)]
    else:
        rows = list(_walk(yaml.safe_load(path.read_text()), []))
    seen: set[str] = set()
    points = []
    for row in rows:
        names = [clean_name(name) for name in row]
        if len(names) != len(LEVELS) or not all(names):
            raise ValueError(f"taxonomy {path}: every point needs {len(LEVELS)} levels, got {row}")
        key = " > ".join(names).casefold()
        if key not in seen:
            seen.add(key)
            points.append(point_row(names))
    return points


def _walk(node: Any, path: list[str]):
    if isinstance(node, dict):
        for name, child in node.items():
            yield from _walk(child, [*path, str(name)])
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, path) if isinstance(item, dict | list) else [[*path, str(item)]]
    elif node is not None:
        yield [*path, str(node)]


def run(work: UnitWork) -> StageOutput:
    """The tree: read from the configured file, or grown by the LLM; a parent it could not expand is a failure."""
    cfg = work.config.taxonomy
    if cfg.file:
        return StageOutput(rows=load_file(cfg.file), labels={"source": "file"})
    from pipeline.models.llm import load_llm

    points, unexpanded = generate(load_llm(work.config.llm), cfg)
    failures = [
        {
            "unit": node_id(part["path"].split(" > ")),
            "error_type": "LlmOutputError",
            "message": part["reason"],
            "source": part["path"],
        }  # fmt: skip
        for part in unexpanded
    ]
    if not points:
        raise ValueError(f"the LLM expanded no knowledge point from {cfg.subjects}")
    counters = {"points": len(points), "unexpanded": len(unexpanded)}
    return StageOutput(rows=points, counters=counters, labels={"source": "llm"}, failures=failures)

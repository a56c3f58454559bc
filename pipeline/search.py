"""search: for each knowledge point, video metadata from a yt-dlp search, without downloading anything.

The source is a URL template (`ytsearch{n}:{query}` in production), so any page that lists videos works the
same way: that is how the tests and the collection demo search a page served on 127.0.0.1. Results are
deduplicated by URL across knowledge points, and a video keeps every point it matched.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote_plus

from configs.schema import SearchConfig
from pipeline.engine.stage import UnitWork
from pipeline.inputs import sanitize_id, url_stem
from pipeline.records import StageOutput

VERSION = 1
METADATA_FIELDS = ("title", "description", "duration", "channel", "upload_date", "view_count", "language", "license")


class SearchFailed(Exception):
    """A search that returned nothing usable; its reason is recorded for the knowledge point."""


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "query"


def search_url(query: str, cfg: SearchConfig) -> str:
    return cfg.url_template.format(n=cfg.results_per_point, query=query, quoted=quote_plus(query), slug=slug(query))


def refresh_round(cfg: SearchConfig, now: float) -> int:
    """Which refresh period `now` falls in: a search made in an earlier period is out of date."""
    return int(now // (cfg.refresh_hours * 3600)) if cfg.refresh_hours else 0


def search_point(point_id: str, query: str, cfg: SearchConfig) -> list[dict[str, Any]]:
    """The results for one knowledge point, in rank order, as rows of the search table."""
    import yt_dlp

    options = {"quiet": True, "no_warnings": True, "extract_flat": "in_playlist", "skip_download": True}
    try:
        with yt_dlp.YoutubeDL(options) as client:
            info = client.extract_info(search_url(query, cfg), download=False) or {}
    except yt_dlp.utils.DownloadError as error:
        raise SearchFailed(str(error).removeprefix("ERROR: ")[:300]) from None
    entries = [entry for entry in info.get("entries") or [info] if entry and entry.get("url")]
    rows = []
    for rank, entry in enumerate(entries[: cfg.results_per_point]):
        url = entry["url"]
        rows.append(
            {
                "point_id": point_id,
                "rank": rank,
                "video_id": sanitize_id(url_stem(url)),
                "url": url,
                **{name: entry.get(name) for name in METADATA_FIELDS},
                "live": bool(entry.get("is_live") or entry.get("live_status") in {"is_live", "is_upcoming"}),
            }
        )
    return rows


def merge_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per URL in first-seen order, with every knowledge point that found it; ids made unique."""
    merged: dict[str, dict[str, Any]] = {}
    for row in results:
        if row["url"] in merged:
            merged[row["url"]]["point_ids"].append(row["point_id"])
            continue
        merged[row["url"]] = {**{k: v for k, v in row.items() if k not in {"point_id", "rank"}},
                              "point_ids": [row["point_id"]]}  # fmt: skip
    taken: set[str] = set()
    for row in merged.values():
        base, n = row["video_id"], 1
        while row["video_id"] in taken:
            n += 1
            row["video_id"] = f"{base}-{n}"
        taken.add(row["video_id"])
    return list(merged.values())


def run(work: UnitWork) -> StageOutput:
    """One knowledge point's search, its query made from the point's names."""
    rows = search_point(work.unit.unit_id, work.unit.external["query"], work.config.search)
    return StageOutput(rows=rows, counters={"results": len(rows)})

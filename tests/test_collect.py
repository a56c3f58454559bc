"""The collection front: taxonomy files and name cleaning, search against a local site, metadata rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configs import parse_config
from pipeline.filter_meta import apply_rules, filter_videos
from pipeline.language import detect_language
from pipeline.search import merge_results, search_point, search_url
from pipeline.taxonomy import LEVELS, clean_name, load_file, unique_names


def test_names_are_cleaned_and_deduplicated():
    assert clean_name(' 2. "Linear Algebra". ') == "Linear Algebra"
    assert unique_names(["1. Algebra", "algebra", "- Geometry", "", "Calculus", "Topology"], 3) == [
        "Algebra",
        "Geometry",
        "Calculus",
    ]
    seen = {"calculus"}
    assert unique_names(["Calculus", "Limits"], 5, seen) == ["Limits"] and "limits" in seen


def test_user_taxonomy_from_yaml_and_csv(tmp_path: Path):
    tree = tmp_path / "tree.yaml"
    tree.write_text("Mathematics:\n  Algebra:\n    Linear Algebra: [Vectors, Matrices, vectors]\n")
    points = load_file(tree)
    assert [p["knowledge_point"] for p in points] == ["Vectors", "Matrices"]
    assert points[0]["path"] == "Mathematics > Algebra > Linear Algebra > Vectors"
    assert set(LEVELS) <= set(points[0]) and points[0]["point_id"].startswith("Vectors-")
    table = tmp_path / "tree.csv"
    table.write_text("subject,course,sub_course,knowledge_point\nPhysics,Mechanics,Kinematics,Velocity\n")
    assert load_file(table)[0]["path"] == "Physics > Mechanics > Kinematics > Velocity"


def test_search_a_results_page_and_merge_across_points(media_server):
    cfg = parse_config({"search": {"url_template": media_server.url + "/search/{slug}.html"}}).search
    assert search_url("Linear Regression!", cfg).endswith("/search/linear-regression.html")
    first = search_point("p1", "linear regression", cfg)
    second = search_point("p2", "gradient descent", cfg)
    assert [row["video_id"] for row in first] == ["lecture", "lecture_part2"]
    assert first[0]["title"].startswith("Lectures on linear regression") and first[0]["rank"] == 0
    merged = merge_results(first + second)
    assert [row["point_ids"] for row in merged] == [["p1", "p2"], ["p1", "p2"]]
    assert [row["video_id"] for row in merged] == ["lecture", "lecture_part2"]


def test_metadata_rules_give_reasons():
    cfg = parse_config({"filter_meta": {"blocked_channels": ["Spam TV"]}}).filter_meta
    base = {"url": "https://example.invalid/v", "title": "Linear regression explained", "description": "",
            "channel": "Math", "duration": 600.0, "live": False, "detected_language": "en",
            "language_confidence": 1.0}  # fmt: skip
    assert apply_rules(base, cfg).keep
    verdict = apply_rules({**base, "duration": 20.0}, cfg)
    assert (verdict.keep, verdict.reason, verdict.detail) == (False, "too_short", "20 s < 60 s")
    assert apply_rules({**base, "duration": 9000.0}, cfg).reason == "too_long"
    assert apply_rules({**base, "live": True}, cfg).reason == "live"
    assert apply_rules({**base, "url": "https://www.youtube.com/shorts/abc"}, cfg).reason == "short"
    assert apply_rules({**base, "channel": "spam tv"}, cfg).reason == "blocked_channel"
    verdict = apply_rules({**base, "title": "ASMR math"}, cfg)
    assert (verdict.reason, verdict.detail) == ("blocked_keyword", "asmr")
    spanish = {**base, "detected_language": "es", "language_confidence": 0.9}
    assert apply_rules(spanish, cfg).reason == "other_language"


def test_language_detector_tells_english_from_spanish():
    assert detect_language("How to solve quadratic equations step by step")[0] == "en"
    assert detect_language("Cómo resolver ecuaciones cuadráticas paso a paso con ejemplos")[0] == "es"
    assert detect_language("   ") == (None, 0.0)


def test_filter_without_llm_keeps_rows_and_reasons():
    cfg = parse_config({"filter_meta": {"llm_scoring": False}}).filter_meta
    videos = [
        {"video_id": "a", "url": "u1", "title": "Intro to vectors", "description": "", "channel": "c",
         "duration": 300.0, "live": False, "point_ids": ["p"]},
        {"video_id": "b", "url": "u2", "title": "Vectors", "description": "", "channel": "c",
         "duration": 5.0, "live": False, "point_ids": ["p"]},
    ]  # fmt: skip
    rows = filter_videos(videos, {"p": "Math > Algebra > Linear > Vectors"}, cfg, None)
    assert [(row["keep"], row["reason"]) for row in rows] == [(True, None), (False, "too_short")]
    assert rows[1]["reason_detail"] == "5 s < 60 s"
    assert rows[0]["knowledge_points"] == ["Math > Algebra > Linear > Vectors"]


def test_a_refreshed_search_finds_new_uploads(tmp_path: Path):
    from pipeline.dag import DAG
    from pipeline.engine.engine import Engine
    from storage.outdir import OutDir
    from tests.conftest import DATA
    from tests.demo_site import MediaServer

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(DATA / "lecture.mp4", site / "first.mp4")
    tree = tmp_path / "tree.yaml"
    tree.write_text("Math:\n  Statistics:\n    Models: [regression]\n")
    clock = {"now": 500_000 * 3600.0 + 60}  # a minute into an hour, whenever the test runs
    with MediaServer(site) as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr("pipeline.dag.time.time", lambda: clock["now"])
        search = {"url_template": server.url + "/search/{slug}.html", "query_template": "{knowledge_point}"}
        configs = {
            "once": parse_config({"search": search, "taxonomy": {"file": str(tree)}}),
            "hourly": parse_config({"search": {**search, "refresh_hours": 1}, "taxonomy": {"file": str(tree)}}),
        }

        def searched(name: str) -> str:
            """A new run's search of the one knowledge point (each run plans its units afresh)."""
            engine = Engine(OutDir(tmp_path / name), configs[name], DAG)
            engine.run_unit("taxonomy", "tree")
            (point,) = engine.units("search")
            return engine.run_unit("search", point).status

        assert searched("once") == "done"
        assert searched("hourly") == "done"
        shutil.copy(DATA / "lecture_part2.mp4", site / "second.mp4")
        clock["now"] += 1800
        assert searched("once") == "skipped"
        assert searched("hourly") == "skipped"  # the same hour
        clock["now"] += 1800
        assert searched("once") == "skipped"
        assert searched("hourly") == "done"
    (found,) = [pq.read_table(path).to_pylist() for path in (tmp_path / "hourly" / "stages" / "search").iterdir()]
    assert [row["video_id"] for row in found] == ["first", "second"]

"""The model half of the bad-input matrix: the LLM stages (filter_asr's score, refine's rewrite) of the processed
sample, pointed at an OpenAI-compatible endpoint on 127.0.0.1 that misbehaves one way per case. An answer that is no
use keeps the video with the reason said; an endpoint that cannot answer is a recorded failure with its code; the
run goes on either way."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from configs import parse_config
from pipeline.dag import DAG
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.filter_asr import UNSCORED
from pipeline.refine import ACCEPTED, EMPTY_ANSWER
from storage.outdir import OutDir
from tests.demo_site import LoopbackServer

LLM_STAGES = ["filter_asr", "clips", "refine"]
ANSWERS = {
    "empty": "",
    "malformed_json": '{"knowledge_density": seven,,',
    "other_language": "La régression linéaire est l'un des modèles les plus simples de l'apprentissage automatique.",
    "over_long": "regression " * 4000,
}


class Endpoint(LoopbackServer):
    """`POST /v1/chat/completions` answering `ANSWERS[mode]`, or, for `close`, hanging up without a response and,
    for `not_json`, a 200 whose body is not JSON."""

    def __init__(self) -> None:
        self.mode = "empty"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if endpoint.mode == "close":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if endpoint.mode == "not_json":
                    body = b"<html>502 bad gateway, but said with a 200</html>"
                else:
                    finish = "length" if endpoint.mode == "over_long" else "stop"
                    message = {"role": "assistant", "content": ANSWERS[endpoint.mode]}
                    body = json.dumps({"choices": [{"message": message, "finish_reason": finish}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)
        self.url += "/v1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    with Endpoint() as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(processed, tmp_path, base_url: str) -> Engine:
    """filter_asr, clips and refine of the processed sample again, their LLM behind `base_url`."""
    workspace, videos = processed
    out = tmp_path / "out"
    shutil.copytree(workspace.out.root, out, ignore=shutil.ignore_patterns("media", "shards*", "stale"))
    settings = {"backend": "openai", "cache_path": None, "max_retries": 0,
                "openai": {"base_url": base_url, "api_key_env": None, "timeout_seconds": 5}}  # fmt: skip
    config = parse_config({"llm": settings, "refine": {"enabled": True}})
    engine = Engine(OutDir(out), config, DAG, videos)
    run_stages(engine, LLM_STAGES)
    return engine


@pytest.mark.parametrize("mode", sorted(ANSWERS))
def test_an_answer_that_is_no_use_keeps_the_video_with_the_reason(processed, tmp_path, endpoint, mode):
    endpoint.mode = mode
    engine = _run(processed, tmp_path, endpoint.url)
    assert not engine.failures()
    for video in engine.videos:
        scored = engine.table(("filter_asr", video.video_id)).to_pylist()[0]
        assert scored["keep"] and scored["llm_response"].startswith(UNSCORED), scored["llm_response"]
        refined = engine.table(("refine", video.video_id)).to_pylist()
        assert refined and not any(row["accepted"] for row in refined)
        assert all(row["reason"] != ACCEPTED and row["reason"] for row in refined)
        if mode == "empty":
            assert {row["reason"] for row in refined} == {EMPTY_ANSWER}


@pytest.mark.parametrize(("mode", "reason"), [("close", "endpoint_unreachable"), ("not_json", "malformed_response"),
                                               ("down", "endpoint_unreachable")])  # fmt: skip
def test_an_endpoint_that_cannot_answer_is_a_failure_with_its_code(processed, tmp_path, endpoint, mode, reason):
    endpoint.mode = mode
    url = f"http://127.0.0.1:{_closed_port()}/v1" if mode == "down" else endpoint.url
    engine = _run(processed, tmp_path, url)
    failures = engine.failures()
    assert {record["video_id"] for record in failures} == {video.video_id for video in engine.videos}
    assert {(record["stage"], record["reason"]) for record in failures} == {("filter_asr", reason)}

"""The network half of the bad-input matrix, against a hostile server on 127.0.0.1: what cannot pass fails at once
with its code (a 404 costs under 2 s), what can pass is retried (a 429 after its Retry-After), and a response over the
size bound is stopped before it is all sent."""

from __future__ import annotations

import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from configs import parse_config
from pipeline.download import DownloadFailed, _options, download
from tests.conftest import PART2
from tests.demo_site import LoopbackServer

VIDEO = PART2.read_bytes()
BIG = 64 << 20  # what /big and /unannounced would send, against a bound of 1 MB
SETTINGS = {"attempts": 2, "backoff_seconds": 0.05, "socket_timeout_seconds": 1.0, "max_filesize_mb": 1.0}


class Hostile(LoopbackServer):
    """`/status/<code>`, `/retry-after` (a 429 asking for 1 s, then the file), `/reset` (half the file, then a TCP
    reset; whole on the next try), `/stall` (a few bytes, then silence), `/loop` (redirects to itself), `/big` (64 MB
    announced), `/unannounced` (64 MB, no length), `/script.mp4` (a shell script). Counts requests, the times they
    came, and bytes sent per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.sent: Counter[str] = Counter()
        self.script = b""
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                path = self.path.split("?")[0]
                hostile.hits[path] += 1
                hostile.times.setdefault(path, []).append(time.monotonic())
                try:
                    self.route(path, hostile.hits[path])
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def route(self, path: str, hit: int) -> None:
                if path.startswith("/status/"):
                    self.send_error(int(path.rsplit("/", 1)[1]))
                elif path == "/retry-after" and hit == 1:
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/reset" and hit == 1:
                    self.head(len(VIDEO))
                    self.wfile.write(VIDEO[: len(VIDEO) // 2])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                elif path == "/stall":
                    self.head(len(VIDEO))
                    self.wfile.write(VIDEO[:1000])
                    self.wfile.flush()
                    time.sleep(4)
                elif path == "/loop":
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/script.mp4":
                    self.head(len(hostile.script))
                    self.wfile.write(hostile.script)
                elif path in ("/big", "/unannounced"):
                    self.head(BIG if path == "/big" else None)
                    chunk = b"\0" * 65536
                    for _ in range(BIG // len(chunk)):
                        self.wfile.write(chunk)
                        hostile.sent[path] += len(chunk)
                else:
                    self.head(len(VIDEO))
                    self.wfile.write(VIDEO)

            def head(self, length: int | None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                if length is None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(length))
                self.end_headers()

        super().__init__(Handler)


@pytest.fixture()
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    with Hostile() as server:
        _fetch(server, "/status/404", tmp_path_factory.mktemp("warm"))  # yt-dlp loaded once, as in a run's process
        server.hits.clear()
        server.times.clear()
        yield server


def _fetch(hostile: Hostile, path: str, folder: Path, **changes) -> tuple[dict | DownloadFailed, float]:
    """The download of `path`, and the seconds it took (the config read before the clock starts)."""
    cfg = parse_config({"download": {**SETTINGS, **changes}}).download
    started, name = time.monotonic(), path.strip("/").replace("/", "_")
    try:
        result: dict | DownloadFailed = download(f"{hostile.url}{path}", name, folder, cfg)
    except DownloadFailed as error:
        result = error
    return result, time.monotonic() - started


@pytest.mark.parametrize("code", [404, 403, 410])
def test_a_permanent_http_error_fails_at_once_with_its_code(hostile, tmp_path, code):
    failure, seconds = _fetch(hostile, f"/status/{code}", tmp_path, attempts=4, backoff_seconds=2)
    assert isinstance(failure, DownloadFailed) and failure.reason == f"http_{code}" and not failure.transient
    assert hostile.hits[f"/status/{code}"] == 1 and seconds < 2.0
    print(f"HTTP {code}: {seconds:.2f} s")


def test_a_429_is_retried_after_its_retry_after(hostile, tmp_path):
    result, seconds = _fetch(hostile, "/retry-after", tmp_path)
    assert isinstance(result, dict) and Path(result["filepath"]).read_bytes() == VIDEO
    first, second = hostile.times["/retry-after"][:2]  # then yt-dlp looks at the page and fetches the file
    assert second - first >= 1.0 > SETTINGS["backoff_seconds"]  # the server's wait, not the backoff's


def test_a_connection_reset_mid_file_is_retried_and_completes(hostile, tmp_path):
    result, _ = _fetch(hostile, "/reset", tmp_path)
    assert isinstance(result, dict) and Path(result["filepath"]).read_bytes() == VIDEO
    assert hostile.hits["/reset"] == 2


def test_a_stalled_server_times_out_on_every_attempt(hostile, tmp_path):
    failure, seconds = _fetch(hostile, "/stall", tmp_path)
    assert isinstance(failure, DownloadFailed) and failure.reason == "timeout" and failure.transient
    assert hostile.hits["/stall"] == 2 * SETTINGS["attempts"] and seconds < 8  # a look at the URL, then the file


def test_a_redirect_loop_fails_at_once(hostile, tmp_path):
    failure, seconds = _fetch(hostile, "/loop", tmp_path, attempts=4)
    assert isinstance(failure, DownloadFailed) and failure.reason == "redirect_loop" and not failure.transient
    assert seconds < 5


@pytest.mark.parametrize("path", ["/big", "/unannounced"])
def test_a_response_over_the_size_bound_is_stopped_before_it_is_all_sent(hostile, tmp_path, path):
    failure, _ = _fetch(hostile, path, tmp_path)
    assert isinstance(failure, DownloadFailed) and failure.reason == "too_large" and not failure.transient
    time.sleep(0.2)
    assert hostile.sent[path] < BIG // 4  # the client hung up long before the end
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(path.strip("/") + ".")
                and not p.name.endswith(".info.json")]  # fmt: skip


def test_yt_dlp_never_executes_what_it_downloads(hostile, tmp_path):
    marker = tmp_path / "executed"
    hostile.script = f"#!/bin/sh\ntouch {marker}\n".encode()
    cfg = parse_config({"download": SETTINGS}).download
    options = _options(cfg, tmp_path, "script", tmp_path / "archive.txt")
    assert not {"exec", "exec_cmd", "postprocessors", "external_downloader", "plugin_dirs"} & set(options)
    result, _ = _fetch(hostile, "/script.mp4", tmp_path)
    fetched = Path(result["filepath"])
    assert fetched.read_bytes() == hostile.script and not fetched.stat().st_mode & 0o111 and not marker.exists()

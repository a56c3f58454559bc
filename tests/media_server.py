"""A real HTTP server on 127.0.0.1 serving the sample videos the ways the web does, for yt-dlp tests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SLOW_BYTES_PER_SECOND = 40_000


class MediaServer:
    """Serves `folder` plus: `/page.html` (one <video>), `/search.html` (several), `/busy.mp4` (always 429),
    `/slow/<name>` (the file, throttled, so a download can be killed mid-file). Counts requests per path."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                server.hits[self.path] += 1
                if self.path == "/busy.mp4":
                    self.send_error(429, "Too Many Requests")
                elif self.path.startswith("/slow/"):
                    self._send_slowly(folder / self.path.removeprefix("/slow/"))
                elif self.path in server.pages:
                    self._send_html(server.pages[self.path])
                else:
                    super().do_GET()

            def _send_html(self, html: str) -> None:
                body = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send_slowly(self, path: Path) -> None:
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                step = SLOW_BYTES_PER_SECOND // 10
                for offset in range(0, len(data), step):
                    self.wfile.write(data[offset : offset + step])
                    time.sleep(0.1)

        self.pages: dict[str, str] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def page(self, path: str, title: str, videos: list[str]) -> str:
        tags = "".join(f'<video src="{video}" controls></video>' for video in videos)
        self.pages[path] = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{tags}</body></html>"
        return self.url + path

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

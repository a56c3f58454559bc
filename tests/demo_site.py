"""A small video site on 127.0.0.1 serving the sample videos the ways the web does: the collection demo searches
it, and the download tests fetch from it.

    python -m tests.demo_site --port 8766 [--folder tests/data]
"""

from __future__ import annotations

import argparse
import base64
import threading
import time
from collections import Counter
from html import escape
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

SLOW_BYTES_PER_SECOND = 40_000


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (never another address) answering in a thread while the `with` block runs."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class MediaServer(LoopbackServer):
    """Serves the videos of `folder`, pages registered with `page()`, `/search/<query>.html` (a results page
    listing every video), `/busy.mp4` (always 429) and `/slow/<name>` (the file, throttled, so a download can be
    killed mid-file). Setting `throttled` sends every file that slowly. It is also an HTTP proxy for itself: a request
    for an absolute URL is served as its path, and with `proxy_password` set it must carry that password in its
    Proxy-Authorization. Counts requests per path and keeps the Cookie headers it was sent."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = folder
        self.hits: Counter[str] = Counter()
        self.throttled = False
        self.proxy_password: str | None = None
        self.proxied: Counter[str] = Counter()
        self.cookies: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # a client that stops reading (a killed download) is normal here

            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                if self.path.startswith("http://"):  # a proxy request: check its credentials, serve its path
                    given = base64.b64decode(self.headers.get("Proxy-Authorization", "Basic ").split()[-1]).decode()
                    if server.proxy_password is not None and given.partition(":")[2] != server.proxy_password:
                        self.send_error(407, "Proxy Authentication Required")
                        return
                    self.path = "/" + self.path.split("/", 3)[3]
                    server.proxied[self.path] += 1
                if cookie := self.headers.get("Cookie"):
                    server.cookies.append(cookie)
                server.hits[self.path] += 1
                if self.path == "/busy.mp4":
                    self.send_error(429, "Too Many Requests")
                elif self.path.startswith("/slow/"):
                    self._send_slowly(folder / self.path.removeprefix("/slow/"))
                elif server.throttled and (folder / Path(self.path).name).is_file():
                    self._send_slowly(folder / Path(self.path).name)
                elif self.path in server.pages:
                    self._send_html(server.pages[self.path])
                elif self.path.startswith("/search/"):
                    self._send_html(server.results_page(self.path.removeprefix("/search/").removesuffix(".html")))
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
        super().__init__(Handler, port)

    def page(self, path: str, title: str, videos: list[str]) -> str:
        self.pages[path] = _html(title, videos)
        return self.url + path

    def results_page(self, query: str) -> str:
        words = " ".join(query.replace("-", " ").split())
        return _html(f"Lectures on {words}", sorted(p.name for p in self.folder.iterdir() if p.suffix == ".mp4"))


def _html(title: str, videos: list[str]) -> str:
    tags = "".join(f'<video src="/{escape(video)}" controls></video>' for video in videos)
    return f"<html><head><title>{escape(title)}</title></head><body><h1>{escape(title)}</h1>{tags}</body></html>"


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the sample videos and search pages on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--folder", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    args = parser.parse_args()
    with MediaServer(args.folder, args.port) as server:
        print(f"serving {args.folder} at {server.url} (search pages: {server.url}/search/<query>.html)", flush=True)
        server.thread.join()


if __name__ == "__main__":
    main()

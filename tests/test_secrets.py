"""Secrets never leave the process: one `textbook run` through Prefect (its own PREFECT_HOME) that really uses a fake
API key (an OpenAI-compatible server on 127.0.0.1 that demands it), a proxy password (the demo site as a proxy that
demands it) and a cookie file (its cookie reaches the site), then every file the run wrote, everything it printed and
Prefect's database are searched for each of them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configs import parse_config
from pipeline.models.llm import load_llm
from pipeline.models.llm.server import ChatServer
from tests.conftest import DATA
from tests.demo_site import MediaServer

pytestmark = pytest.mark.slow

API_KEY = "sk-FAKE-KEY-video2textbook-7f3a9c"
PROXY_PASSWORD = "PROXY-PASS-5e1d-never-logged"
COOKIE = "COOKIE-SECRET-3b7c-never-logged"


def _files_holding(folder: Path, secret: bytes) -> list[str]:
    return [str(path) for path in folder.rglob("*") if path.is_file() and secret in path.read_bytes()]


def test_no_secret_reaches_a_file_the_output_or_the_prefect_database(tmp_path: Path):
    out, home, cache = tmp_path / "out", tmp_path / "prefect", tmp_path / "llm_calls.sqlite"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\t{COOKIE}\n")
    with MediaServer(DATA) as site:
        site.proxy_password = PROXY_PASSWORD
        chat = ChatServer(("127.0.0.1", 0), load_llm(parse_config({"llm": {"cache_path": None}}).llm), API_KEY)
        threading.Thread(target=chat.serve_forever, daemon=True).start()
        try:
            config = tmp_path / "config.yaml"
            config.write_text(
                f"download: {{cookiefile: {cookies}, proxy_env: V2T_PROXY, attempts: 1}}\n"
                f"llm: {{backend: openai, model: '{chat.llm.model_id}', cache_path: {cache}, openai: {{base_url: "
                f"'http://127.0.0.1:{chat.server_address[1]}/v1', api_key_env: V2T_API_KEY}}}}\n"
            )
            manifest = tmp_path / "lectures.txt"
            manifest.write_text(f"{site.url}/lecture_part2.mp4\n{site.url}/missing.mp4\n")
            proxy = f"http://lecturer:{PROXY_PASSWORD}@{site.url.removeprefix('http://')}"
            env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "V2T_API_KEY": API_KEY, "V2T_PROXY": proxy}  # fmt: skip
            env.pop("PREFECT_API_URL", None)
            command = [sys.executable, "-m", "flows.cli", "run", "--config", str(config), "--input", str(manifest),
                       "--out", str(out)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, env=env, timeout=600, check=False)
        finally:
            chat.shutdown()
            chat.server_close()
    assert done.returncode == 0, done.stderr[-3000:]
    # each secret was really used: the proxy let the download through, the site got the cookie, the LLM answered
    assert site.proxied["/lecture_part2.mp4"] >= 1 and any(COOKIE in cookie for cookie in site.cookies)
    scored = pq.read_table(out / "stages" / "filter_asr" / "lecture_part2.parquet").to_pylist()[0]
    assert scored["llm_response"] and not scored["llm_response"].startswith("unscored")
    failures = {row["video_id"]: row for row in pq.read_table(out / "failures.parquet").to_pylist()}
    assert failures["missing"]["reason"] == "http_404"
    assert (out / "media" / "lecture_part2.info.json").is_file() and (home / "prefect.db").is_file()
    for secret in (API_KEY, PROXY_PASSWORD, COOKIE):
        raw = secret.encode()
        assert raw not in done.stdout and raw not in done.stderr, secret
        assert not _files_holding(out, raw) and not _files_holding(home, raw) and raw not in cache.read_bytes(), secret

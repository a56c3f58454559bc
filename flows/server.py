"""`textbook server`: the Prefect server and UI on loopback, found again by later `textbook` commands.

While it runs, a small state file in PREFECT_HOME names its URL; every `textbook` command that finds the file
and a healthy server behind it sends its flow runs there, so they appear in the UI with their task runs, logs
and artifacts. Without a server, flows run on Prefect's ephemeral API as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from configs.secrets import exposure_warning

STATE_FILE = "textbook-server.json"
HEALTH_TIMEOUT_SECONDS = 1.0


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=HEALTH_TIMEOUT_SECONDS) as response:
            return response.status == 200
    except OSError:
        return False


def connect_if_running() -> str | None:
    """Point this process at a running `textbook server` unless PREFECT_API_URL is already set."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    state = prefect_home() / STATE_FILE
    if not state.is_file():
        return None
    api_url = json.loads(state.read_text())["api_url"]
    if not healthy(api_url):
        return None
    os.environ["PREFECT_API_URL"] = api_url
    return api_url


def run_server(host: str, port: int) -> int:
    """Run `prefect server start` in the foreground (analytics off) and record its URL while it lives."""
    ui_url = f"http://{host}:{port}"
    state = prefect_home() / STATE_FILE
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"api_url": f"{ui_url}/api", "ui_url": ui_url}))
    print(f"Prefect UI: {ui_url}  (textbook commands run here while this server is up; Ctrl-C stops it)", flush=True)
    if warning := exposure_warning("the Prefect server (its UI and API, flow-run parameters included)", host):
        print(warning, file=sys.stderr, flush=True)
    # The UI page asks its API at a path relative to wherever it was loaded from, so it works on any port and
    # behind any host name or tunnel (Prefect's default, built from the default port, would send it to :4200).
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_URL": ui_url,
           "PREFECT_UI_API_URL": "/api"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        state.unlink(missing_ok=True)

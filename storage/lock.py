"""One writer per output folder: `textbook run` and `textbook stage` hold `OUT/.lock` while they write, so a second
run on the same folder refuses with the first one's pid and host instead of both writing. Readers (export, report,
training) never take it. A lock whose process is gone (same host, pid not running) is stale and taken over.

Only a local folder is locked (an exclusive create); an object store has no such primitive, so runs on an
`s3://` output must be kept to one per prefix by whoever schedules them.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.outdir import OutDir, unwritable

LOCK_FILE = ".lock"


class OutputLocked(RuntimeError):
    """Another live process writes to this output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def writer_lock(out: OutDir, command: str) -> Iterator[None]:
    """Hold the folder's lock for the duration of a writing command; a no-op for remote outputs."""
    if not out.is_local:
        yield
        return
    path = Path(out.root) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise unwritable(error, str(path)) from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    for _ in range(2):
        try:
            with open(path, "x") as handle:  # exclusive create: one of two racing processes wins
                json.dump(me, handle)
            break
        except OSError as error:
            if not isinstance(error, FileExistsError):
                raise unwritable(error, str(path)) from None
            holder = _holder(path)
            if holder is None and time.time() - path.stat().st_mtime < 5:  # another process is writing it now
                raise OutputLocked(f"{out.url} is being locked by another process ({path})") from None
            if holder and (holder["host"] != me["host"] or _alive(int(holder["pid"]))):
                raise OutputLocked(
                    f"{out.url} is being written by `{holder['command']}` (pid {holder['pid']} on {holder['host']}); "
                    f"wait for it, or remove {path} if that process is gone"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise OutputLocked(f"could not take the lock {path}")
    try:
        yield
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)

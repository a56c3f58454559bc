"""A persistent cache of LLM calls, so a rerun or a resumed run never pays for the same answer twice.

SQLite: one file, safe across threads (one connection behind a lock) and processes (SQLite's own locking, WAL).
A call is keyed by the sha256 of (model, messages, sampling params); the request is kept beside its answer so the
file can be audited. Nothing else goes in: no endpoint, no header, no key. An inline image enters both as the
sha256 of its bytes, so the file does not hold every frame ever captioned.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path

from pipeline.models.llm.base import Completion, Message, SamplingParams, data_url_bytes


def call_request(model_id: str, messages: list[Message], params: SamplingParams) -> dict:
    return {"model": model_id, "messages": [_image_digests(message) for message in messages], "params": asdict(params)}


def _image_digests(message: Message) -> Message:
    if isinstance(message["content"], str):
        return message
    parts = []
    for part in message["content"]:
        data = data_url_bytes(part["image_url"]["url"]) if part.get("type") == "image_url" else None
        if data is not None:
            part = {**part, "image_url": {**part["image_url"], "url": f"sha256:{hashlib.sha256(data).hexdigest()}"}}
        parts.append(part)
    return {**message, "content": parts}


def call_key(request: dict) -> str:
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class CallCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, request TEXT NOT NULL, text TEXT NOT NULL,"
                " finish_reason TEXT NOT NULL, created REAL NOT NULL)"
            )

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # SQLite caps the parameters of one statement
                chunk = unique[start : start + 500]
                rows = self._db.execute(
                    f"SELECT key, text, finish_reason FROM calls WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
                found.update({key: Completion(text, reason) for key, text, reason in rows})
        return found

    def put_many(self, entries: list[tuple[dict, Completion]]) -> None:
        now = time.time()
        rows = [
            (
                call_key(request),
                json.dumps(request, ensure_ascii=False),
                completion.text,
                completion.finish_reason,
                now,
            )
            for request, completion in entries
        ]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO calls (key, request, text, finish_reason, created) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

"""The output folder: where each artefact lives, and writes that are atomic on any fsspec filesystem.

A file under its final name is complete: writers fill `<name>.partial`, flush and fsync it, rename it into place
and, on a local disk, fsync the folder so the rename itself survives a power cut. A killed run leaves only `.partial`
files, which the next run overwrites; a failed write (a full disk) removes its `.partial` and raises.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

PARTIAL_SUFFIX = ".partial"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@#-]*$")


UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class OutputUnwritable(OSError):
    """OUT refuses writes (a full disk, a read-only mount, no permission): no unit can finish, so the run stops with
    this one line; nothing half-written is left under a final name, and a rerun once it is writable resumes."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def unwritable(error: OSError, path: str) -> OSError:
    """`error` as `OutputUnwritable` when the disk refused the write to `path`, else `error` itself."""
    if error.errno in UNWRITABLE:
        return OutputUnwritable(error.errno, f"cannot write {path}: {os.strerror(error.errno)}")
    return error


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file, or a folder: a rename or a new entry in a folder is durable only once the folder is flushed too
    (POSIX keeps names in the folder, not in the file)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_durable(paths: Iterable[str]) -> None:
    """Make local files written with `durable=False`, and their names, survive a power cut: an fsync per file, then
    one per folder for all of them (the two fsyncs of every atomic write become about one). Not syncfs: it would
    wait for every other writer's data on the filesystem too (a download of gigabytes)."""
    paths = list(paths)
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # moved aside (retired) since it was written
            fsync_path(path)
    for folder in {path.rsplit("/", 1)[0] for path in paths}:
        fsync_path(folder)


class OutDir:
    """Paths inside OUT, and the only place that writes there."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        self.url = str(url)
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Join parts under OUT; every part must be a plain name so no input can point outside OUT."""
        for part in parts:
            for piece in part.split("/"):
                if not _SAFE_NAME.match(piece) or piece.endswith(PARTIAL_SUFFIX):
                    raise ValueError(f"unsafe path component {piece!r} in {part!r}")
        return "/".join([self.root, *parts])

    def stage_file(self, stage: str, unit_id: str) -> str:
        return self.path("stages", stage, f"{unit_id}.parquet")

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def list(self, *parts: str) -> list[str]:
        folder = self.path(*parts)
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if not p.endswith(PARTIAL_SUFFIX))

    def remove(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path)

    @contextmanager
    def open_atomic(self, path: str, durable: bool = True) -> Iterator[IO[bytes]]:
        """Yield a binary file that appears under `path` only once fully written. A write the disk refuses (full,
        read-only, not permitted) raises `OutputUnwritable`, which stops the run instead of failing one unit.

        `durable=False` leaves the fsyncs to a later `make_durable` of many files at once: a kill cannot hurt such a
        file either, but until then a power cut may lose it or leave it unreadable, so its reader must take an
        unreadable file for a missing one."""
        partial = path + PARTIAL_SUFFIX
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(partial, "wb") as handle:
                yield handle
                handle.flush()
                if self.is_local and durable:
                    os.fsync(handle.fileno())
            self.fs.mv(partial, path)
            if self.is_local and durable:
                fsync_path(path.rsplit("/", 1)[0])
        except BaseException as error:
            with contextlib.suppress(OSError):  # on a read-only disk there is nothing to remove, nor a way to
                if self.fs.exists(partial):
                    self.fs.rm(partial)
            if isinstance(error, OSError):
                raise unwritable(error, path) from None
            raise

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.open_atomic(path) as handle:
            handle.write(data)

    def write_json(self, path: str, data: Any) -> None:
        self.write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as handle:
            return handle.read()

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

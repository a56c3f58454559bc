"""Where model files come from: a package that ships them (`pkg:<module>/<path>`), a local path, or a hub name."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

PACKAGE_PREFIX = "pkg:"


class ModelNotFound(Exception):
    """A configured model whose files are not on this machine."""


def resolve_local(spec: str) -> Path | None:
    """The local path a model spec names, or None when it names a hub model."""
    if spec.startswith(PACKAGE_PREFIX):
        module, _, relative = spec[len(PACKAGE_PREFIX) :].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise ModelNotFound(f"model {spec!r}: package {module!r} is not installed")
        path = Path(next(iter(found.submodule_search_locations))) / relative
        if not path.exists():
            raise ModelNotFound(f"model {spec!r}: {path} does not exist")
        return path
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if spec.startswith((".", "/", "~")):
        raise ModelNotFound(f"model path {spec!r} does not exist")
    return None


def file_digests(path: Path) -> dict[str, str]:
    """sha256 of every file of a model, for the run manifest."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digests = {}
    for file in files:
        sha = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        digests[str(file)] = sha.hexdigest()
    return digests

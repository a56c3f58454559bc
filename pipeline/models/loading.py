"""Loading a model once per process, however many threads ask for it at the same time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def loaded_once(load: Callable[P, R]) -> Callable[P, R]:
    """`lru_cache` behind a lock: two videos of one stage start together, and two concurrent loads of one model
    waste memory or, with transformers, fail half-initialised ("Cannot copy out of meta tensor")."""
    cached = lru_cache(maxsize=4)(load)
    lock = threading.Lock()

    @wraps(load)
    def shared(*args: P.args, **kwargs: P.kwargs) -> R:
        with lock:
            return cached(*args, **kwargs)

    return shared

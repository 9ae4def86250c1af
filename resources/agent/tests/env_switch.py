"""A test helper: an environment variable set for the length of a `with` block, then restored."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def env_set(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old

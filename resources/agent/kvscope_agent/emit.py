"""The only writer of events: one compact JSON object per line, seq-numbered, flushed as it goes.

The app tails `events.jsonl` by byte offset while the run goes on (docs/desktop.md, "Running on a GPU host"), so a
line must reach the file within `flush_interval_s` of being emitted, and a line is written whole
or not at all (docs/protocol.md: at most 1 MiB a line; seq 0,1,2,... with no gaps or repeats).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO, Any

from .clock import RunClock
from .protocol import MAX_LINE_BYTES  # docs/protocol.md: "at most 1 MiB a line"; written with its newline
_RESERVED = ("seq", "t", "type")


class EventWriter:
    """Thread-safe writer of event lines (docs/protocol.md) into `path` (created; an existing file is refused
    so that a second run never interleaves its seq numbers with an earlier one's)."""

    def __init__(
        self, path: str | os.PathLike, clock: RunClock, flush_interval_s: float = 0.05
    ) -> None:
        self.path = os.fspath(path)
        self.clock = clock
        self.flush_interval_s = float(flush_interval_s)
        # "x": exclusive create. Appending a second run to an old log would repeat seq 0.
        self._file: IO[bytes] | None = open(self.path, "xb")
        self._lock = threading.Lock()
        self._seq = 0
        self._dirty = False
        self._last_flush = time.monotonic()
        self._closed = False
        self._stop = threading.Event()
        # A timer flushes lines emitted just before a quiet spell (e.g. a long prefill), so a
        # tail sees them without waiting for the next emit().
        self._flusher = threading.Thread(
            target=self._flush_loop, name="kvscope-event-flush", daemon=True
        )
        self._flusher.start()

    @property
    def count(self) -> int:
        """Lines written so far (the next line's seq)."""
        return self._seq

    @property
    def closed(self) -> bool:
        return self._closed

    def emit(self, type: str, t: int | None = None, **fields: Any) -> int:
        """Thread-safe. Writes one line {"seq","t","type",**fields} (compact JSON, keys in that
        order first), seq 0,1,2,... assigned under a lock in write order; t defaults to
        clock.now(). Returns the seq. Lines over 1 MiB are refused (ValueError) before anything
        is written."""
        for key in _RESERVED:
            if key in fields:
                raise ValueError(f"field {key!r} is set by the writer")
        # Serialise outside the lock; allow_nan=False keeps every line valid JSON (NaN is not).
        body = json.dumps(fields, separators=(",", ":"), allow_nan=False, ensure_ascii=False)[1:-1]
        return self._write(type, [body], None if t is None else int(t))

    def emit_bodies(self, type: str, bodies: "list[str]") -> int:
        """Thread-safe. One line per body, all with the same `t` (now), under one lock and in one
        write: {"seq","t","type", then the body}. A body is the caller's JSON text of the other
        fields without the braces ('"dir":"h2d","bytes":4096'), built from values it controls
        (numbers, strings it encoded with json.dumps); the CUPTI collector writes thousands of
        xfer lines a second this way, where emit()'s json.dumps and lock per line cost 2.3 times
        the host time (bench/collector-gil-results.md). Returns the first seq. A body with a
        newline, or a line over 1 MiB, is refused (ValueError) before anything is written."""
        for b in bodies:
            if not b or "\n" in b or "\r" in b:
                raise ValueError("an event body must be non-empty and on one line")
        return self._write(type, bodies, None)

    def _write(self, type: str, bodies: "list[str]", t: int | None) -> int:
        """The one writer of lines: seq assigned under the lock, every line checked against the
        size limit before any is written, then one write. An empty body is a line of seq, t and
        type only. Returns the first seq."""
        if not isinstance(type, str) or not type:
            raise ValueError("event type must be a non-empty string")
        type_json = json.dumps(type, ensure_ascii=False)
        with self._lock:
            if self._closed or self._file is None:
                raise ValueError("event writer is closed")
            first = self._seq
            if not bodies:
                return first
            stamp = self.clock.now() if t is None else t
            lines = []
            for i, b in enumerate(bodies):
                line = '{"seq":%d,"t":%d,"type":%s%s}\n' % (first + i, stamp, type_json, "," + b if b else "")
                data = line.encode("utf-8")
                if len(data) > MAX_LINE_BYTES:
                    raise ValueError(f"event line of {len(data)} bytes exceeds the {MAX_LINE_BYTES}-byte limit")
                lines.append(data)
            self._file.write(b"".join(lines))
            self._seq = first + len(lines)
            self._dirty = True
            if time.monotonic() - self._last_flush >= self.flush_interval_s:
                self._flush_locked()
        return first

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._file is not None and self._dirty:
            self._file.flush()
            self._dirty = False
        self._last_flush = time.monotonic()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            with self._lock:
                if self._closed:
                    return
                if self._dirty and time.monotonic() - self._last_flush >= self.flush_interval_s:
                    self._flush_locked()

    def close(self) -> None:
        """Flush, fsync and close; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            f = self._file
            self._file = None
            if f is not None:
                f.flush()
                try:
                    os.fsync(f.fileno())
                finally:
                    f.close()
        if self._flusher is not threading.current_thread():
            self._flusher.join(timeout=1.0)

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

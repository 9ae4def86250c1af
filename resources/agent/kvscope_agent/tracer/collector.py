"""Tails the trace files the CUPTI library writes (one per traced process) and emits `xfer` events.

The binary layout is documented in kvscope_record.h; this module decodes it with `struct` only
(no CUDA, no torch), so it is tested anywhere. CUPTI timestamps are mapped onto the run clock
through the anchor pairs each file carries (a CUPTI timestamp taken together with
CLOCK_MONOTONIC), not by assuming which clock CUPTI follows: on the H100 host it read as
CLOCK_REALTIME (shared/reference/h100-measurements.md), but that is CUPTI's default, not a rule.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import json
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

MAGIC = b"KVSCUPTI"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIIIQQQIIII")
RECORD = struct.Struct("<BBBBIQQQIIIIIIQ")
assert HEADER.size == 64 and RECORD.size == 64

REC_MEMCPY, REC_MEMSET, REC_MEMCPY_PEER, REC_DROPPED, REC_ANCHOR, REC_ERROR = 1, 2, 3, 4, 5, 6
NO_DEVICE = 0xFFFFFFFF
POLL_S = 0.05  # ≤ 100 ms, so a record reaches events.jsonl within ~flush period + 50 ms

# CUpti_ActivityMemoryKind -> the protocol's memory names. Arrays and statically allocated
# device memory are device memory; static managed memory is managed.
MEMORY_KINDS = {
    0: "unknown",
    1: "pageable",
    2: "pinned",
    3: "device",
    4: "device",
    5: "managed",
    6: "device",
    7: "managed",
}
# CUpti_ActivityMemcpyKind -> direction. "A" (CUDA array) is device memory; PTOP is a peer copy.
COPY_DIRECTIONS = {
    1: "h2d",  # HTOD
    2: "d2h",  # DTOH
    3: "h2d",  # HTOA
    4: "d2h",  # ATOH
    5: "d2d",  # ATOA
    6: "d2d",  # ATOD
    7: "d2d",  # DTOA
    8: "d2d",  # DTOD
    9: "h2h",  # HTOH
    10: "d2d",  # PTOP
}
STEP_NAMES = {
    1: "cuptiGetTimestamp",
    2: "cuptiActivityRegisterCallbacks",
    3: "cuptiActivityEnable(MEMCPY)",
    4: "cuptiActivityEnable(MEMSET)",
    5: "cuptiActivityEnable(MEMCPY2)",
    6: "cuptiActivityFlushPeriod",
    7: "cuptiActivityFlushAll",
    8: "cuptiActivityGetNextRecord",
    9: "cuptiActivityGetNumDroppedRecords",
    10: "activity buffer allocation",
    11: "trace file write",
    12: "cuptiActivityEnable(GRAPH_TRACE)",
}
# CUptiResult names (cupti_result.h of CUDA 13.0; the numbers are stable across versions, and
# the library also prints the name CUPTI gives on stderr).
CUPTI_RESULTS = {
    1: "CUPTI_ERROR_INVALID_PARAMETER",
    2: "CUPTI_ERROR_INVALID_DEVICE",
    3: "CUPTI_ERROR_INVALID_CONTEXT",
    4: "CUPTI_ERROR_INVALID_EVENT_DOMAIN_ID",
    5: "CUPTI_ERROR_INVALID_EVENT_ID",
    6: "CUPTI_ERROR_INVALID_EVENT_NAME",
    7: "CUPTI_ERROR_INVALID_OPERATION",
    8: "CUPTI_ERROR_OUT_OF_MEMORY",
    9: "CUPTI_ERROR_HARDWARE",
    10: "CUPTI_ERROR_PARAMETER_SIZE_NOT_SUFFICIENT",
    11: "CUPTI_ERROR_API_NOT_IMPLEMENTED",
    12: "CUPTI_ERROR_MAX_LIMIT_REACHED",
    13: "CUPTI_ERROR_NOT_READY",
    14: "CUPTI_ERROR_NOT_COMPATIBLE",
    15: "CUPTI_ERROR_NOT_INITIALIZED",
    16: "CUPTI_ERROR_INVALID_METRIC_ID",
    17: "CUPTI_ERROR_INVALID_METRIC_NAME",
    18: "CUPTI_ERROR_QUEUE_EMPTY",
    19: "CUPTI_ERROR_INVALID_HANDLE",
    20: "CUPTI_ERROR_INVALID_STREAM",
    21: "CUPTI_ERROR_INVALID_KIND",
    22: "CUPTI_ERROR_INVALID_EVENT_VALUE",
    23: "CUPTI_ERROR_DISABLED",
    24: "CUPTI_ERROR_INVALID_MODULE",
    25: "CUPTI_ERROR_INVALID_METRIC_VALUE",
    26: "CUPTI_ERROR_HARDWARE_BUSY",
    27: "CUPTI_ERROR_NOT_SUPPORTED",
    28: "CUPTI_ERROR_UM_PROFILING_NOT_SUPPORTED",
    29: "CUPTI_ERROR_UM_PROFILING_NOT_SUPPORTED_ON_DEVICE",
    30: "CUPTI_ERROR_UM_PROFILING_NOT_SUPPORTED_ON_NON_P2P_DEVICES",
    31: "CUPTI_ERROR_UM_PROFILING_NOT_SUPPORTED_WITH_MPS",
    32: "CUPTI_ERROR_CDP_TRACING_NOT_SUPPORTED",
    33: "CUPTI_ERROR_VIRTUALIZED_DEVICE_NOT_SUPPORTED",
    34: "CUPTI_ERROR_CUDA_COMPILER_NOT_COMPATIBLE",
    35: "CUPTI_ERROR_INSUFFICIENT_PRIVILEGES",
    36: "CUPTI_ERROR_OLD_PROFILER_API_INITIALIZED",
    37: "CUPTI_ERROR_OPENACC_UNDEFINED_ROUTINE",
    38: "CUPTI_ERROR_LEGACY_PROFILER_NOT_SUPPORTED",
    39: "CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED",
    40: "CUPTI_ERROR_VIRTUALIZED_DEVICE_INSUFFICIENT_PRIVILEGES",
    41: "CUPTI_ERROR_CONFIDENTIAL_COMPUTING_NOT_SUPPORTED",
    42: "CUPTI_ERROR_CMP_DEVICE_NOT_SUPPORTED",
    43: "CUPTI_ERROR_MIG_DEVICE_NOT_SUPPORTED",
    44: "CUPTI_ERROR_SLI_DEVICE_NOT_SUPPORTED",
    45: "CUPTI_ERROR_WSL_DEVICE_NOT_SUPPORTED",
    46: "CUPTI_ERROR_INVALID_CHIP_NAME",
    999: "CUPTI_ERROR_UNKNOWN",
    0: "CUPTI_ERROR_FORCE_INT",
}


class TraceFormatError(ValueError):
    """A trace file that is not in the format of kvscope_record.h."""


@dataclass(frozen=True)
class TraceHeader:
    pid: int
    anchor_cupti_ns: int
    anchor_realtime_ns: int
    anchor_monotonic_ns: int
    cupti_api_version: int
    flush_period_ms: int
    buffer_bytes: int


@dataclass(frozen=True)
class TraceRecord:
    type: int
    copy_kind: int
    src_kind: int
    dst_kind: int
    flags: int
    bytes: int
    start: int
    end: int
    device_id: int
    context_id: int
    stream_id: int
    correlation_id: int
    src_device_id: int
    dst_device_id: int
    extra: int


def decode_header(data: bytes) -> TraceHeader:
    if len(data) < HEADER.size:
        raise TraceFormatError(f"header needs {HEADER.size} bytes, got {len(data)}")
    (magic, version, header_size, record_size, pid, c, r, m, api, flush_ms, buf, _r) = (
        HEADER.unpack_from(data, 0)
    )
    if magic != MAGIC:
        raise TraceFormatError(f"bad magic {magic!r} (expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise TraceFormatError(f"format version {version}, this reader knows {FORMAT_VERSION}")
    if header_size != HEADER.size or record_size != RECORD.size:
        raise TraceFormatError(f"header/record size {header_size}/{record_size}, expected 64/64")
    return TraceHeader(pid, c, r, m, api, flush_ms, buf)


def decode_records(data: bytes | memoryview) -> Iterator[TraceRecord]:
    """Whole records in `data` (a trailing partial record is ignored by the caller's offset)."""
    for fields in RECORD.iter_unpack(data[: len(data) - len(data) % RECORD.size]):
        yield TraceRecord(*fields)


def memory_name(kind: int) -> str:
    return MEMORY_KINDS.get(kind, "unknown")


def copy_direction(copy_kind: int, src_kind: int, dst_kind: int) -> str | None:
    """Protocol direction of a copy; for CUPTI's UNKNOWN copy kind it is inferred from the memory
    kinds when both ends are plainly host or device, else None (counted, never guessed)."""
    d = COPY_DIRECTIONS.get(copy_kind)
    if d is not None:
        return d
    side = {1: "h", 2: "h", 3: "d", 4: "d", 6: "d"}
    s, t = side.get(src_kind), side.get(dst_kind)
    if s is None or t is None:
        return None
    return f"{s}2{t}"


class TraceFile:
    """Incremental reader of one growing trace file: poll() returns the records appended since."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.header: TraceHeader | None = None
        self.offset = 0
        self.error: str | None = None

    def poll(self) -> list[TraceRecord]:
        if self.error is not None:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError as e:
            self.error = f"cannot read {self.path}: {e}"
            return []
        if self.header is None:
            if len(data) < HEADER.size:
                return []  # the writer's one header write() has not landed yet
            try:
                self.header = decode_header(data)
            except TraceFormatError as e:
                self.error = f"{self.path}: {e}"
                return []
            self.offset += HEADER.size
            data = data[HEADER.size :]
        whole = len(data) - len(data) % RECORD.size
        self.offset += whole
        return list(decode_records(data[:whole]))


class ClockMap:
    """CUPTI ns -> run ns through the latest anchor pair (CUPTI ns, CLOCK_MONOTONIC ns)."""

    def __init__(self, clock: Any, header: TraceHeader) -> None:
        self.clock = clock
        self.cupti_ns = header.anchor_cupti_ns
        self.mono_ns = header.anchor_monotonic_ns

    @property
    def usable(self) -> bool:
        return self.cupti_ns != 0

    def update(self, cupti_ns: int, mono_ns: int) -> None:
        if cupti_ns != 0:
            self.cupti_ns, self.mono_ns = cupti_ns, mono_ns

    def to_run(self, cupti_ns: int) -> int:
        return int(self.clock.from_monotonic(self.mono_ns + (cupti_ns - self.cupti_ns)))


@dataclass
class Totals:
    """What the collector saw; `stop()` reports it in a `log` line."""

    files: int = 0
    xfers: int = 0
    bytes_by_dir: dict[str, int] = field(default_factory=lambda: {"h2d": 0, "d2h": 0, "d2d": 0, "h2h": 0})
    count_by_dir: dict[str, int] = field(default_factory=lambda: {"h2d": 0, "d2h": 0, "d2d": 0, "h2h": 0})
    memsets: int = 0
    memset_bytes: int = 0
    dropped: int = 0
    untimed: int = 0  # CUPTI gave start = end = 0 (timestamps not collected)
    unmapped: int = 0  # no usable anchor pair in that file
    unclassified: int = 0  # copy kind UNKNOWN and memory kinds ambiguous
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "xfers": self.xfers,
            "bytes_by_dir": dict(self.bytes_by_dir),
            "count_by_dir": dict(self.count_by_dir),
            "memsets": self.memsets,
            "memset_bytes": self.memset_bytes,
            "dropped": self.dropped,
            "untimed": self.untimed,
            "unmapped": self.unmapped,
            "unclassified": self.unclassified,
            "errors": list(self.errors),
        }


def describe_error(rec: TraceRecord) -> str:
    step = STEP_NAMES.get(rec.correlation_id, f"step {rec.correlation_id}")
    code = CUPTI_RESULTS.get(rec.flags, "CUptiResult")
    hint = ""
    if rec.flags == 39:
        hint = " (another CUPTI client, e.g. Nsight Systems or a profiler, holds CUPTI)"
    elif rec.flags == 35:
        hint = (
            " (profiling needs privileges: NVreg_RestrictProfilingToAdminUsers=0 or run as root)"
        )
    return f"{step} failed: {code} ({rec.flags}){hint}"


@functools.cache
def _json_text(s: str) -> str:
    """The JSON text of a string an xfer body holds (a direction, a memory kind)."""
    return json.dumps(s, ensure_ascii=False)


# One xfer line's fields after seq, t and type, in the order emit() would write them: a poll's lines
# are formatted with this from integers and _json_text and written in one go (EventWriter.emit_bodies;
# 2.6 µs a record against emit()'s 6.0, bench/collector-gil-results.md).
_XFER_BODY = '"dir":%s,"bytes":%d,"start":%d,"end":%d,"src_mem":%s,"dst_mem":%s,"device":%d,"stream":%d,"source":"cupti","pid":%d'


class _Discard:
    """The writer while skip_existing() reads past old records: both of EventWriter's write paths."""

    def emit(self, type: str, t: int | None = None, **fields: Any) -> int:
        return -1

    def emit_bodies(self, type: str, bodies: "list[str]") -> int:
        return -1


class Collector:
    """A thread that tails `trace_dir/cupti-*.bin` and emits one `xfer` per copy."""

    def __init__(self, writer: Any, clock: Any, trace_dir: str, poll_s: float = POLL_S) -> None:
        self.writer = writer
        self.clock = clock
        self.trace_dir = trace_dir
        self.poll_s = poll_s
        self.totals = Totals()
        self._files: dict[str, TraceFile] = {}
        self._maps: dict[str, ClockMap] = {}
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="kvscope-cupti-collector", daemon=True)

    def start(self) -> "Collector":
        self._thread.start()
        return self

    def _emit(self, type: str, **fields: Any) -> None:
        try:
            self.writer.emit(type, **fields)
        except ValueError:
            # The writer is closed (the run is ending); nothing else can be written.
            self._stop.set()

    def _warn_once(self, key: str, msg: str) -> None:
        if key in self._reported:
            return
        self._reported.add(key)
        self.totals.errors.append(msg)
        self._emit("log", level="warn", msg=msg)

    def poll_once(self) -> int:
        """Reads every trace file once; returns the number of records handled."""
        with self._lock:
            n = 0
            for path in sorted(glob.glob(os.path.join(self.trace_dir, "cupti-*.bin"))):
                tf = self._files.get(path)
                if tf is None:
                    tf = self._files[path] = TraceFile(path)
                    self.totals.files += 1
                records = tf.poll()
                if tf.error is not None:
                    self._warn_once("file:" + path, f"transfer trace unreadable: {tf.error}")
                    continue
                if tf.header is None:
                    continue
                cmap = self._maps.get(path)
                if cmap is None:
                    cmap = self._maps[path] = ClockMap(self.clock, tf.header)
                bodies: list[str] = []
                for rec in records:
                    self._handle(tf.header, cmap, rec, bodies)
                if bodies:
                    try:
                        self.writer.emit_bodies("xfer", bodies)
                    except ValueError:
                        self._stop.set()  # the writer is closed (the run is ending)
                n += len(records)
            return n

    def skip_existing(self) -> int:
        """A later run of a sweep shares the trace files of the first: reads past the records earlier
        runs left there, writing nothing and counting afresh, so this run's log holds only its own
        copies. Returns the number of records skipped."""
        writer, self.writer = self.writer, _Discard()
        try:
            n = self.poll_once()
        finally:
            self.writer = writer
        self.totals = Totals()
        return n

    def _handle(self, header: TraceHeader, cmap: ClockMap, rec: TraceRecord, bodies: list[str]) -> None:
        """Counts `rec`; a copy's xfer line goes into `bodies` (written by poll_once)."""
        t = self.totals
        if rec.type in (REC_MEMCPY, REC_MEMCPY_PEER):
            direction = copy_direction(rec.copy_kind, rec.src_kind, rec.dst_kind)
            if direction is None:
                t.unclassified += 1
                return
            if rec.start == 0 and rec.end == 0:
                t.untimed += 1
                return
            if not cmap.usable:
                t.unmapped += 1
                return
            t.xfers += 1
            t.bytes_by_dir[direction] += rec.bytes
            t.count_by_dir[direction] += 1
            bodies.append(_XFER_BODY % (
                _json_text(direction), rec.bytes, cmap.to_run(rec.start), cmap.to_run(rec.end),
                _json_text(memory_name(rec.src_kind)), _json_text(memory_name(rec.dst_kind)),
                rec.device_id, rec.stream_id, header.pid))
        elif rec.type == REC_MEMSET:
            # A memset moves no data between memories, so it is no `xfer`; it is counted only.
            t.memsets += 1
            t.memset_bytes += rec.bytes
        elif rec.type == REC_DROPPED:
            t.dropped += rec.bytes
        elif rec.type == REC_ANCHOR:
            cmap.update(rec.start, rec.extra)
        elif rec.type == REC_ERROR:
            msg = describe_error(rec)
            self._warn_once(
                f"err:{header.pid}:{rec.correlation_id}:{rec.flags}",
                f"transfer tracing in pid {header.pid}: {msg}",
            )

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll_once()

    def _read_until_quiet(self, settle_s: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.poll_once() > 0:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle_s:
                break
            time.sleep(min(self.poll_s, 0.02))

    def drain(self, settle_s: float = 0.15, timeout_s: float = 1.0) -> None:
        """Emits every copy finished so far, now: call it after a synchronize and before the
        `phase` line that closes (or opens) a window, so the copies of that window are written
        before the line that bounds it (check_log and the app count `xfer` lines by position).

        Uses the non-forced flush: CUPTI hands back every buffer whose records are complete, and
        keeps one with a copy still in flight instead of returning it without timestamps."""
        if self._stopped:
            return
        flush_in_process(forced=False)
        self._read_until_quiet(settle_s, timeout_s)

    def stop(self, settle_s: float = 0.3, timeout_s: float = 3.0) -> dict[str, Any]:
        """Drains every file and emits a `log` with the totals (a warn if records were dropped).

        Call it with the GPU idle (after the run's last synchronize): this process's CUPTI
        buffers are force-flushed, and other processes' records are read until the files have
        stopped growing for `settle_s` (their exit flush lands within it)."""
        if self._stopped:
            return self.totals.as_dict()
        self._stopped = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        flush_in_process(forced=True)
        self._read_until_quiet(settle_s, timeout_s)
        t = self.totals
        gb = {k: round(v / 1e9, 6) for k, v in t.bytes_by_dir.items()}
        self._emit(
            "log",
            level="info",
            msg=(
                f"transfer trace: {t.xfers} copies from {t.files} process(es); GB "
                f"h2d {gb['h2d']} d2h {gb['d2h']} d2d {gb['d2d']} h2h {gb['h2h']}; "
                f"{t.memsets} memsets ({t.memset_bytes} bytes); dropped {t.dropped}"
            ),
        )
        if t.dropped:
            self._emit(
                "log",
                level="warn",
                msg=(
                    f"CUPTI dropped {t.dropped} activity records (buffers full): traced bytes "
                    "undercount the real copies; raise KVSCOPE_TRACE_BUFFER_BYTES"
                ),
            )
        lost = {"untimed": t.untimed, "unmapped": t.unmapped, "unclassified": t.unclassified}
        if any(lost.values()):
            self._emit(
                "log",
                level="warn",
                msg="transfer trace: copies not emitted as xfer: "
                + ", ".join(f"{k} {v}" for k, v in lost.items() if v)
                + " (untimed: CUPTI gave no timestamps; unmapped: no anchor pair; "
                "unclassified: copy kind unknown)",
            )
        return t.as_dict()


def loaded_tracer() -> ctypes.CDLL | None:
    """The CUPTI library named by CUDA_INJECTION64_PATH if this process has it loaded."""
    path = os.environ.get("CUDA_INJECTION64_PATH")
    if not path:
        return None
    try:
        return ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError:
        return None


def hold_flushes(on: bool) -> bool:
    """Holds (or releases) the loaded CUPTI library's periodic flushes in this process; True when
    a library that can took the request. The decode runner holds them while it captures a CUDA
    graph (kvscope_cupti.c, kvscope_cupti_hold, says why)."""
    lib = loaded_tracer()
    if lib is None:
        return False
    try:
        return lib.kvscope_cupti_hold(1 if on else 0) == 0
    except AttributeError:
        return False  # an older build of the library, or some other injection library


def flush_in_process(forced: bool = True) -> bool:
    """Flushes the CUPTI buffers of this process when the library is loaded in it (forced: also
    buffers with copies still in flight, which come back without timestamps).

    The agent's own copies sit in CUPTI buffers until the next periodic flush or process exit;
    drain() and stop() run before exit, so they ask the library directly (RTLD_NOLOAD: this
    never loads the library into a process that does not have it)."""
    lib = loaded_tracer()
    if lib is None:
        return False
    try:
        if not lib.kvscope_cupti_active():
            return False
        return lib.kvscope_cupti_flush(1 if forced else 0) == 0
    except AttributeError:
        return False  # some other injection library


def start_collector(writer: Any, clock: Any, trace_dir: str, skip_existing: bool = False) -> Collector | None:
    """The agent's hook: starts tailing trace_dir, or returns None after a `log` warn.
    skip_existing: a later run of a sweep, whose trace files hold earlier runs' records."""
    try:
        os.makedirs(trace_dir, exist_ok=True)
    except OSError as e:
        writer.emit("log", level="warn", msg=f"transfer tracing off: cannot create {trace_dir}: {e}")
        return None
    col = Collector(writer, clock, trace_dir, poll_period_s())
    if skip_existing:
        col.skip_existing()
    return col.start()


def poll_period_s() -> float:
    """The collector's poll period: KVSCOPE_TRACE_POLL_MS (1..1000 ms) or POLL_S. A knob for the
    overhead attribution in bench/gpu/tracer-overhead.sh ("traceslow"); longer periods delay the live view
    by as much. A value that is not a number in range is ignored (POLL_S), not an error."""
    raw = os.environ.get("KVSCOPE_TRACE_POLL_MS", "")
    try:
        ms = int(raw)
    except ValueError:
        return POLL_S
    return ms / 1000 if 1 <= ms <= 1000 else POLL_S

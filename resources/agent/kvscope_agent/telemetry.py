"""GPU telemetry on the run clock: nvidia-smi `--query-gpu` sampling, PCIe throughput from NVML.

Sources, by preference:
- memory used, utilisation (gpu, memory), power, SM clock, current PCIe gen/width: one
  `nvidia-smi --query-gpu=... -lms <period>` process for every GPU of the run (one process, not a
  process per sample: nvidia-smi's start-up costs tens of ms, which alone would cap the rate);
  each line carries nvidia-smi's own `timestamp`, so a sample's `t` is when it was taken, not
  when the line reached us. Without nvidia-smi the same counters come from NVML directly.
- PCIe rx/tx: NVML `nvmlDeviceGetPcieThroughput` (a 20 ms byte-counter window, so it can follow
  the sample period) through ctypes on libnvidia-ml.so.1; else `nvidia-smi dmon -s t`, whose
  period cannot go below 1 s.

`rx`/`tx` are from the GPU's side, as NVML and dmon report them: host-to-device copies are rx.
All parsers are pure functions over nvidia-smi's text, tested on outputs recorded on an H100
(tests/fixtures/nvidia-smi/). Any missing piece degrades to a `log` warn; nothing here fails
a run.
"""

from __future__ import annotations

import csv
import ctypes
import datetime as _dt
import importlib.metadata
import io
import os
import platform
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .probe import SMI_FIELDS

MIB = 1 << 20
# NVML reports PCIe throughput in "KB/s", read as KiB as nvtop and most NVML clients do; dmon in
# "MB/s". These count link traffic, headers included: on the H100 NVML read 1.11x the payload
# rate of a pinned H2D copy (bench/tracer-smoke-h100.md), so they sit ~10% above `xfer` rates.
NVML_PCIE_KB = 1024
DMON_MB = 1_000_000

SAMPLE_FIELDS = (
    "timestamp",
    "index",
    "memory.used",
    "utilization.gpu",
    "utilization.memory",
    "power.draw",
    "clocks.sm",
    "pcie.link.gen.current",
    "pcie.link.width.current",
)
# The probe's query: probe.py is sent alone to hosts without the agent, so the list lives there.
PROBE_FIELDS = SMI_FIELDS
NVIDIA_SMI_MISSING = (
    "nvidia-smi not found on PATH: it ships with the NVIDIA driver (e.g. the nvidia-utils "
    "package); install the driver's utilities or add their folder to PATH"
)
NVML_MISSING = (
    "libnvidia-ml.so.1 (NVML) not loadable: it ships with the NVIDIA driver; add its folder to "
    "LD_LIBRARY_PATH"
)


# ----------------------------------------------------------------------------- parsing (pure)


def field_value(raw: str | None) -> str | None:
    """nvidia-smi's text for one field, or None where it reports no value: "[N/A]",
    "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]", "N/A", ""."""
    if raw is None:
        return None
    v = raw.strip()
    if not v or v == "N/A" or (v.startswith("[") and v.endswith("]")):
        return None
    return v


def number(raw: str | None) -> float | None:
    """A number with or without nvidia-smi's unit suffix ("124.77 W", "81559 MiB", "0 %")."""
    v = field_value(raw)
    if v is None:
        return None
    m = re.match(r"^[-+]?\d+(?:\.\d+)?", v)
    return float(m.group(0)) if m else None


def parse_csv_rows(text: str, fields: Sequence[str]) -> list[dict[str, str | None]]:
    """Rows of `--format=csv,noheader[,nounits]` output keyed by field (a header line, if
    present, is skipped). Rows with the wrong number of columns are skipped."""
    rows: list[dict[str, str | None]] = []
    for cols in csv.reader(io.StringIO(text.replace("\r", "")), skipinitialspace=True):
        if not cols:
            continue
        if cols[0].strip() == fields[0] or cols[0].strip().startswith(fields[0] + " "):
            continue  # header line
        if len(cols) != len(fields):
            continue
        rows.append({f: field_value(c) for f, c in zip(fields, cols)})
    return rows


def parse_timestamp_ns(text: str | None) -> int | None:
    """nvidia-smi's `timestamp` ("2026/11/27 01:59:24.822", local time) -> CLOCK_REALTIME ns."""
    v = field_value(text)
    if v is None:
        return None
    try:
        dt = _dt.datetime.strptime(v, "%Y/%m/%d %H:%M:%S.%f")
    except ValueError:
        return None
    return int(time.mktime(dt.timetuple())) * 1_000_000_000 + dt.microsecond * 1000


def sample_from_row(row: dict[str, str | None]) -> tuple[dict[str, Any] | None, str | None]:
    """A `gpu` event's fields (no `source`) from one --query-gpu row with SAMPLE_FIELDS, or
    (None, reason) without an index. Memory used and utilisation, which the protocol requires
    as keys, are null where nvidia-smi reports none (a MIG slice has no utilization.gpu); the
    optional keys are left out."""
    idx = number(row.get("index"))
    if idx is None:
        return None, "no index"
    mem = number(row.get("memory.used"))
    util = number(row.get("utilization.gpu"))
    ev: dict[str, Any] = {
        "index": int(idx),
        "mem_used_bytes": None if mem is None else int(mem * MIB),
        "util_pct": util,
    }
    optional = (
        ("mem_util_pct", "utilization.memory", float),
        ("power_w", "power.draw", float),
        ("sm_clock_mhz", "clocks.sm", int),
        ("pcie_gen", "pcie.link.gen.current", int),
        ("pcie_width", "pcie.link.width.current", int),
    )
    for key, src, conv in optional:
        v = number(row.get(src))
        if v is not None:
            ev[key] = conv(v)
    return ev, None


def parse_dmon(text: str) -> list[tuple[int, int | None, int | None]]:
    """`nvidia-smi dmon -s t` lines -> (gpu index, rx bytes/s, tx bytes/s). Columns are found by
    name in dmon's "# gpu rxpci txpci" header, since other -s letters add columns; "-" is N/A."""
    out: list[tuple[int, int | None, int | None]] = []
    cols: list[str] | None = None
    for line in text.replace("\r", "").splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            names = s.lstrip("#").split()
            if "gpu" in names and cols is None:
                cols = names
            continue
        if cols is None:
            continue
        parts = s.split()
        if len(parts) != len(cols):
            continue
        rec = dict(zip(cols, parts))
        try:
            idx = int(rec["gpu"])
        except (KeyError, ValueError):
            continue
        rx = number(rec.get("rxpci")) if rec.get("rxpci") != "-" else None
        tx = number(rec.get("txpci")) if rec.get("txpci") != "-" else None
        out.append(
            (idx, None if rx is None else int(rx * DMON_MB), None if tx is None else int(tx * DMON_MB))
        )
    return out


def parse_versions(text: str) -> dict[str, str | None]:
    """Driver and CUDA versions from `nvidia-smi -q` (any -d) or the plain `nvidia-smi` banner."""
    out: dict[str, str | None] = {"driver_version": None, "cuda_version": None}
    for key, label in (("driver_version", "Driver Version"), ("cuda_version", "CUDA Version")):
        m = re.search(label + r"\s*:\s*([0-9][0-9.]*)", text)
        if m:
            out[key] = m.group(1)
    return out


def parse_q_pci(text: str) -> dict[str, dict[str, Any]]:
    """Per bus id, from `nvidia-smi -q -d PCI`: PCIe generation/width (max and current) and the
    Tx/Rx throughput lines. Values reported as N/A are None."""
    gpus: dict[str, dict[str, Any]] = {}
    cur: dict[str, Any] | None = None
    section: list[str] = []  # the indented headings above the current line
    for line in text.replace("\r", "").splitlines():
        m = re.match(r"^GPU ([0-9A-Fa-f:.]+)\s*$", line)
        if m:
            cur = gpus.setdefault(m.group(1), {})
            section = []
            continue
        if cur is None or not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if ":" not in line:
            level = indent // 4
            section = section[: max(level - 1, 0)] + [line.strip()]
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        level = indent // 4
        section = section[: max(level - 1, 0)]
        ctx = section[-1] if section else ""
        val = field_value(value)
        if ctx == "PCIe Generation" and key in ("Max", "Current"):
            cur[f"pcie_gen_{key.lower()}"] = None if val is None else int(number(val) or 0)
        elif ctx == "Link Width" and key in ("Max", "Current"):
            cur[f"pcie_width_{key.lower()}"] = None if val is None else int(number(val) or 0)
        elif key in ("Tx Throughput", "Rx Throughput"):
            n = number(val)
            cur[key.split()[0].lower() + "_kb_per_s"] = None if n is None else int(n)
        elif key == "Bus Id":
            cur["bus_id"] = val
    return gpus


def gpus_from_probe(
    rows: Iterable[dict[str, str | None]], c2c: dict[int, bool | None] | None = None
) -> list[dict[str, Any]]:
    """run.start `host.gpus` entries from --query-gpu rows with PROBE_FIELDS."""
    gpus = []
    for row in rows:
        idx = number(row.get("index"))
        if idx is None:
            continue
        total = number(row.get("memory.total"))
        gen = number(row.get("pcie.link.gen.max"))
        width = number(row.get("pcie.link.width.max"))
        gpus.append(
            {
                "index": int(idx),
                "name": row.get("name"),
                "uuid": row.get("uuid"),
                "memory_total_bytes": None if total is None else int(total * MIB),
                "pcie_gen": None if gen is None else int(gen),
                "pcie_width": None if width is None else int(width),
                "c2c": (c2c or {}).get(int(idx)),
            }
        )
    return gpus


def parse_c2c_mode(value: str | None) -> bool | None:
    """`c2c.mode`: "Enabled"/"Disabled"; N/A (no C2C on the card) -> None."""
    v = field_value(value)
    if v is None:
        return None
    return v.lower() == "enabled"


# ------------------------------------------------------------------------------------ NVML


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class Nvml:
    """The few NVML calls used, through ctypes (no pynvml dependency)."""

    PCIE_TX, PCIE_RX = 0, 1  # nvmlPcieUtilCounter_t
    CLOCK_SM = 1  # nvmlClockType_t

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.handles: dict[int, ctypes.c_void_p] = {}

    @classmethod
    def open(cls) -> tuple["Nvml | None", str]:
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            return None, NVML_MISSING
        try:
            rc = lib.nvmlInit_v2()
        except AttributeError:
            return None, "NVML has no nvmlInit_v2 (driver too old)"
        if rc != 0:
            return None, f"nvmlInit_v2 failed with NVML error {rc}"
        return cls(lib), ""

    def handle(self, index: int) -> ctypes.c_void_p | None:
        h = self.handles.get(index)
        if h is None:
            h = ctypes.c_void_p()
            if self.lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(h)) != 0:
                return None
            self.handles[index] = h
        return h

    def pcie_throughput(self, index: int) -> tuple[int | None, int | None]:
        """(rx, tx) bytes/s over NVML's 20 ms window; None where not supported."""
        h = self.handle(index)
        if h is None:
            return None, None
        out = []
        for counter in (self.PCIE_RX, self.PCIE_TX):
            v = ctypes.c_uint()
            rc = self.lib.nvmlDeviceGetPcieThroughput(h, ctypes.c_int(counter), ctypes.byref(v))
            out.append(v.value * NVML_PCIE_KB if rc == 0 else None)
        return out[0], out[1]

    def sample(self, index: int) -> dict[str, Any] | None:
        """A `gpu` event's fields from NVML alone (the fallback when nvidia-smi is absent)."""
        h = self.handle(index)
        if h is None:
            return None
        mem, util = _Memory(), _Utilization()
        if self.lib.nvmlDeviceGetMemoryInfo(h, ctypes.byref(mem)) != 0:
            return None
        if self.lib.nvmlDeviceGetUtilizationRates(h, ctypes.byref(util)) != 0:
            return None
        ev: dict[str, Any] = {
            "index": index,
            "mem_used_bytes": int(mem.used),
            "util_pct": float(util.gpu),
            "mem_util_pct": float(util.memory),
        }
        mw, mhz, gen, width = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
        if self.lib.nvmlDeviceGetPowerUsage(h, ctypes.byref(mw)) == 0:
            ev["power_w"] = mw.value / 1000.0
        if self.lib.nvmlDeviceGetClockInfo(h, ctypes.c_int(self.CLOCK_SM), ctypes.byref(mhz)) == 0:
            ev["sm_clock_mhz"] = int(mhz.value)
        if self.lib.nvmlDeviceGetCurrPcieLinkGeneration(h, ctypes.byref(gen)) == 0:
            ev["pcie_gen"] = int(gen.value)
        if self.lib.nvmlDeviceGetCurrPcieLinkWidth(h, ctypes.byref(width)) == 0:
            ev["pcie_width"] = int(width.value)
        return ev

    def close(self) -> None:
        try:
            self.lib.nvmlShutdown()
        except (AttributeError, OSError):
            pass


# --------------------------------------------------------------------------------- sampler


def _spawn_tty(cmd: list[str]) -> tuple[subprocess.Popen, int]:
    """Starts cmd with stdout on a pseudo-terminal: nvidia-smi's stdio then flushes each line,
    where a pipe would hold samples back in a block buffer (the app must see them live)."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            cmd, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, close_fds=True,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    return proc, master


def _read_lines(fd: int, stop: threading.Event, on_line: Callable[[str], None]) -> None:
    buf = b""
    while not stop.is_set():
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            on_line(line.decode("utf-8", "replace").rstrip("\r"))


def _terminate(proc: subprocess.Popen | None) -> str:
    if proc is None:
        return ""
    import signal

    # The whole process group (started with start_new_session): a child it left behind would
    # hold the stderr pipe open and block the read below.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=2)
            break
        except subprocess.TimeoutExpired:
            continue
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    return err.strip()


@dataclass
class SamplerStats:
    started_mono_ns: int = 0
    samples: dict[int, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


class Sampler:
    """Emits one `gpu` event per GPU per period until stop()."""

    def __init__(
        self,
        writer: Any,
        clock: Any,
        gpu_indices: Sequence[int],
        sample_ms: int,
        smi: str | None,
        nvml: Nvml | None,
    ) -> None:
        self.writer, self.clock = writer, clock
        self.gpu_indices = list(gpu_indices)
        self.sample_ms = int(sample_ms)
        self.smi, self.nvml = smi, nvml
        self.source = "nvidia-smi" if smi else "nvml"
        # KVSCOPE_PCIE_MS: period of the PCIe reads (default: the sample period; 0 = none). Each
        # NVML read holds a 20 ms counter window, and on the H100 runs with sampling were slower
        # than runs with tracing alone (bench/tracer-overhead-h100.md): this lets a run tell
        # whether the PCIe reads are the cost without touching the other counters.
        self.pcie_ms = _env_ms("KVSCOPE_PCIE_MS", self.sample_ms)
        if self.pcie_ms == 0:
            self.pcie_source: str | None = None
        else:
            self.pcie_source = "nvml" if nvml else ("nvidia-smi dmon" if smi else None)
            if self.pcie_source == "nvidia-smi dmon":
                self.pcie_ms = 1000  # dmon's shortest period (`-d 1`)
        self.stats = SamplerStats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._procs: list[subprocess.Popen] = []
        self._fds: list[int] = []
        self._pcie: dict[int, tuple[int | None, int | None]] = {}
        self._pcie_lock = threading.Lock()
        self._warned: set[str] = set()
        self._stopped = False

    @property
    def capability(self) -> dict[str, Any]:
        """run.start `capabilities.telemetry`."""
        return {
            "on": True,
            "source": self.source,
            "sample_ms": self.sample_ms,
            "pcie_source": self.pcie_source,
            "pcie_ms": self.pcie_ms if self.pcie_source else None,
            "gpus": self.gpu_indices,
            "reason": "",
        }

    def _emit(self, type: str, t: int | None = None, **fields: Any) -> None:
        try:
            self.writer.emit(type, t=t, **fields)
        except ValueError:
            self._stop.set()  # writer closed

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._emit("log", level="warn", msg=msg)

    def _thread(self, target: Callable[[], None], name: str) -> None:
        th = threading.Thread(target=target, name=name, daemon=True)
        th.start()
        self._threads.append(th)

    def start(self) -> "Sampler":
        self.stats.started_mono_ns = time.monotonic_ns()
        ids = ",".join(str(i) for i in self.gpu_indices)
        if self.smi:
            cmd = [
                self.smi,
                "--query-gpu=" + ",".join(SAMPLE_FIELDS),
                "--format=csv,noheader,nounits",
                "-lms",
                str(self.sample_ms),
                "-i",
                ids,
            ]
            proc, fd = _spawn_tty(cmd)
            self._procs.append(proc)
            self._fds.append(fd)
            self._thread(lambda: self._smi_reader(proc, fd), "kvscope-smi")
        else:
            self._thread(self._nvml_loop, "kvscope-nvml")
        if self.pcie_source is None:
            pass
        elif self.nvml:
            # One thread per GPU: each NVML throughput call waits out its 20 ms window, so one
            # thread for eight GPUs would stretch the PCIe period to ~320 ms.
            for idx in self.gpu_indices:
                self._thread(lambda i=idx: self._nvml_pcie_loop(i), f"kvscope-nvml-pcie-{idx}")
        elif self.smi:
            dmon = [self.smi, "dmon", "-s", "t", "-d", "1", "-i", ids]
            proc, fd = _spawn_tty(dmon)
            self._procs.append(proc)
            self._fds.append(fd)
            lines: list[str] = []

            def on_dmon(line: str) -> None:
                if line.lstrip().startswith("#"):
                    if not lines:
                        lines.append(line)  # keep the column header
                    return
                for idx, rx, tx in parse_dmon(lines[0] + "\n" + line if lines else line):
                    with self._pcie_lock:
                        self._pcie[idx] = (rx, tx)

            self._thread(lambda: _read_lines(fd, self._stop, on_dmon), "kvscope-dmon")
        return self

    def _t_for(self, ts_ns: int | None) -> int:
        now = self.clock.now()
        if ts_ns is None:
            return now
        t = self.clock.from_realtime(ts_ns)
        # nvidia-smi prints local time with ms resolution; if the mapping is off by more than a
        # period or two (a clock step, a TZ mismatch), the arrival time is the better estimate.
        if abs(t - now) > 2_000_000_000:
            self._warn_once("ts", "nvidia-smi timestamps disagree with the host clock by "
                            f"{(t - now) / 1e9:.1f} s; sample times are arrival times")
            return now
        return t

    def _with_pcie(self, ev: dict[str, Any]) -> dict[str, Any]:
        with self._pcie_lock:
            rx, tx = self._pcie.get(ev["index"], (None, None))
        if rx is not None:
            ev["pcie_rx_bytes_per_s"] = rx
        if tx is not None:
            ev["pcie_tx_bytes_per_s"] = tx
        return ev

    def _on_query_line(self, line: str) -> None:
        if not line.strip():
            return
        rows = parse_csv_rows(line, SAMPLE_FIELDS)
        if not rows:
            self._warn_once("line:" + line[:40], f"nvidia-smi printed an unexpected line: {line[:200]}")
            return
        row = rows[0]
        ev, why = sample_from_row(row)
        if ev is None:
            self.stats.skipped[why or "?"] = self.stats.skipped.get(why or "?", 0) + 1
            self._warn_once("skip:" + str(why), f"GPU sample skipped: {why}")
            return
        t = self._t_for(parse_timestamp_ns(row.get("timestamp")))
        self.stats.samples[ev["index"]] = self.stats.samples.get(ev["index"], 0) + 1
        self._emit("gpu", t=t, **self._with_pcie(ev), source="nvidia-smi")

    def _smi_reader(self, proc: subprocess.Popen, fd: int) -> None:
        _read_lines(fd, self._stop, self._on_query_line)
        if self._stop.is_set():
            return
        # nvidia-smi ended on its own (an unknown field on an older driver, a driver error):
        # say why, and go on with NVML when it is there.
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return
        err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
        msg = f"nvidia-smi sampling stopped (exit {proc.returncode}): {err[:300]}"
        if self.nvml is not None:
            self._emit("log", level="warn", msg=msg + "; sampling from NVML instead")
            self.source = "nvml"
            self._nvml_loop()
        else:
            self._emit("log", level="warn", msg=msg + "; no NVML to fall back on: telemetry off")

    def _nvml_pcie_loop(self, idx: int) -> None:
        assert self.nvml is not None
        period = self.pcie_ms / 1000.0
        while not self._stop.is_set():
            t0 = time.monotonic()
            rx, tx = self.nvml.pcie_throughput(idx)
            with self._pcie_lock:
                self._pcie[idx] = (rx, tx)
            self._stop.wait(max(0.0, period - (time.monotonic() - t0)))

    def _nvml_loop(self) -> None:
        assert self.nvml is not None
        period = self.sample_ms / 1000.0
        next_at = time.monotonic()
        while not self._stop.is_set():
            for idx in self.gpu_indices:
                ev = self.nvml.sample(idx)
                if ev is None:
                    self._warn_once(f"nvml:{idx}", f"NVML gives no sample for GPU {idx}")
                    continue
                self.stats.samples[idx] = self.stats.samples.get(idx, 0) + 1
                self._emit("gpu", **self._with_pcie(ev), source="nvml")
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> dict[str, Any]:
        """Stops sampling; emits a `log` with the achieved rate. Returns the stats."""
        if self._stopped:
            return self.summary()
        self._stopped = True
        # Set before the processes end: a reader that sees nvidia-smi go must know it was asked
        # to (nvidia-smi exits 0 on SIGTERM, which otherwise reads as stopping on its own; the
        # H100 smoke run showed exactly that false warning).
        self._stop.set()
        errs = []
        for proc in self._procs:
            early = proc.poll() is not None
            err = _terminate(proc)
            if early and proc.returncode not in (0, None, -15) and "dmon" in proc.args:
                errs.append(f"nvidia-smi dmon exited {proc.returncode}: {err[:300]}")
        for th in self._threads:
            th.join(timeout=3)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if self.nvml:
            self.nvml.close()
        s = self.summary()
        for e in errs:
            self._emit("log", level="warn", msg=f"telemetry: {e}")
        rates = ", ".join(f"GPU {i}: {r:.2f}/s" for i, r in s["rate_per_s"].items())
        self._emit(
            "log",
            level="info",
            msg=(
                f"telemetry: {sum(s['samples'].values())} samples from {self.source} "
                f"(PCIe from {self.pcie_source or 'nowhere'}), asked every {self.sample_ms} ms, "
                f"achieved {rates or 'none'}"
            ),
        )
        return s

    def summary(self) -> dict[str, Any]:
        secs = max(1e-9, (time.monotonic_ns() - self.stats.started_mono_ns) / 1e9)
        return {
            "source": self.source,
            "pcie_source": self.pcie_source,
            "sample_ms": self.sample_ms,
            "seconds": secs,
            "samples": dict(self.stats.samples),
            "rate_per_s": {i: n / secs for i, n in self.stats.samples.items()},
            "skipped": dict(self.stats.skipped),
        }


def _env_ms(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        return default
    return v if v >= 0 else default


def start_sampler(
    writer: Any, clock: Any, gpu_indices: list[int], sample_ms: int
) -> Sampler | None:
    """The agent's hook. gpu_indices are nvidia-smi/NVML indices (PCI bus order), which differ
    from CUDA ordinals under CUDA_VISIBLE_DEVICES or CUDA_DEVICE_ORDER=FASTEST_FIRST."""
    if not gpu_indices:
        writer.emit("log", level="warn", msg="telemetry off: the run uses no GPU")
        return None
    if sample_ms <= 0:
        writer.emit("log", level="warn", msg=f"telemetry off: --sample-ms {sample_ms} is not positive")
        return None
    smi = shutil.which("nvidia-smi")
    nvml, nvml_reason = Nvml.open()
    if smi is None and nvml is None:
        writer.emit(
            "log", level="warn",
            msg=f"telemetry off: {NVIDIA_SMI_MISSING}; and {nvml_reason}",
        )
        return None
    if smi is None:
        writer.emit("log", level="warn", msg=f"telemetry from NVML only: {NVIDIA_SMI_MISSING}")
    elif nvml is None:
        writer.emit(
            "log", level="warn",
            msg=f"PCIe throughput from `nvidia-smi dmon` (1 s periods): {nvml_reason}",
        )
    try:
        return Sampler(writer, clock, gpu_indices, sample_ms, smi, nvml).start()
    except OSError as e:
        writer.emit("log", level="warn", msg=f"telemetry off: cannot start nvidia-smi: {e}")
        return None


def available_sources(sample_ms: int) -> dict[str, Any]:
    """What start_sampler would use, without starting it: for run.start `capabilities.telemetry`,
    which is written before the sampler starts. Loads NVML only to see that it initialises."""
    smi = shutil.which("nvidia-smi")
    nvml, nvml_reason = Nvml.open()
    if nvml is not None:
        nvml.close()
    if smi is None and nvml is None:
        return capability_off(f"{NVIDIA_SMI_MISSING}; and {nvml_reason}")
    return {
        "on": sample_ms > 0,
        "source": "nvidia-smi" if smi else "nvml",
        "sample_ms": sample_ms,
        "pcie_source": "nvml" if nvml else "nvidia-smi dmon",
        "reason": "" if sample_ms > 0 else "--sample-ms 0",
    }


def capability_off(reason: str) -> dict[str, Any]:
    return {"on": False, "source": None, "sample_ms": None, "pcie_source": None, "reason": reason}


# ------------------------------------------------------------------------------- host probe


def _run_smi(args: list[str], timeout: float = 15.0) -> tuple[int, str, str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 127, "", NVIDIA_SMI_MISSING
    try:
        p = subprocess.run([smi, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        return 1, "", str(e)
    return p.returncode, p.stdout, p.stderr


def _torch_version() -> str | None:
    mod = sys.modules.get("torch")
    if mod is not None:
        return getattr(mod, "__version__", None)
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def probe_host(gpu_indices: Sequence[int] | None = None) -> dict[str, Any]:
    """run.start `host`: hostname, gpus[], driver_version, cuda_version, python_version,
    torch_version. Never raises; what cannot be read is None (and `probe_error` says why)."""
    host: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "gpus": [],
        "driver_version": None,
        "cuda_version": None,
        "python_version": platform.python_version(),
        "torch_version": _torch_version(),
    }
    rc, out, err = _run_smi(
        ["--query-gpu=" + ",".join(PROBE_FIELDS), "--format=csv,noheader,nounits"]
    )
    if rc != 0:
        host["probe_error"] = (err or out).strip()[:300] or f"nvidia-smi exited {rc}"
        return host
    rows = parse_csv_rows(out, PROBE_FIELDS)
    # c2c.mode is a newer field; an older nvidia-smi refuses the whole query if it is asked for.
    c2c: dict[int, bool | None] = {}
    rc2, out2, _ = _run_smi(["--query-gpu=index,c2c.mode", "--format=csv,noheader,nounits"])
    if rc2 == 0:
        for r in parse_csv_rows(out2, ("index", "c2c.mode")):
            i = number(r.get("index"))
            if i is not None:
                c2c[int(i)] = parse_c2c_mode(r.get("c2c.mode"))
    gpus = gpus_from_probe(rows, c2c)
    if gpu_indices:
        wanted = set(gpu_indices)
        gpus = [g for g in gpus if g["index"] in wanted]
    host["gpus"] = gpus
    drivers = {r.get("driver_version") for r in rows if r.get("driver_version")}
    host["driver_version"] = sorted(drivers)[0] if drivers else None
    # The CUDA version the driver supports is in no --query-gpu field; `nvidia-smi -q` has it
    # in its header (`-q -d PCI` is refused by driver 580: "Failed to parse --display/-d
    # flags"), along with the PCI section, which fills PCIe gen/width the query left N/A.
    rc3, out3, _ = _run_smi(["-q"])
    if rc3 == 0:
        v = parse_versions(out3)
        host["cuda_version"] = v["cuda_version"]
        host["driver_version"] = host["driver_version"] or v["driver_version"]
        pci = {k.lower(): d for k, d in parse_q_pci(out3).items()}
        bus_of = {int(i): (r.get("pci.bus_id") or "").lower() for r in rows
                  for i in [number(r.get("index"))] if i is not None}
        for g in gpus:
            d = pci.get(bus_of.get(g["index"], ""))
            if d:
                if g["pcie_gen"] is None:
                    g["pcie_gen"] = d.get("pcie_gen_max")
                if g["pcie_width"] is None:
                    g["pcie_width"] = d.get("pcie_width_max")
    return host

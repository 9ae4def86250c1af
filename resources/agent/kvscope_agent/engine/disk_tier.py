"""The file behind the host pool: the built-in engine's disk tier (`--disk-kv-bytes N --disk-kv-path DIR`).

One file in DIR, block `s` at byte `s × block_bytes`, created sparse and unlinked once open (the
space goes back to the filesystem when the process ends, however it ends). Blocks move between
the file and host memory given by address, so the host pool's own (pinned) slots are the I/O
buffers: disk -> pinned host -> GPU with no extra copy.

How it reads and writes, so that the page cache does not fake the disk's speed:
  * "o_direct": the file is opened with O_DIRECT; every transfer is a multiple of ALIGN bytes at an
    ALIGN-aligned offset from an ALIGN-aligned address (a host slot, or a bounce buffer when the
    slot is not aligned), at most IO_CHUNK_BYTES a call;
  * "buffered": where O_DIRECT is refused (EINVAL from the filesystem, or a block size that is not a
    multiple of ALIGN), the same large reads and writes through the page cache, each write batch
    followed by fdatasync and posix_fadvise(DONTNEED) over its range, each read preceded and
    followed by DONTNEED, so a read comes from the device, not from pages cached by the write.
    On tmpfs (memory) DONTNEED does nothing: `filesystem` says so in the pool line's log.
The mode in use is `io`, and `io_reason` says why when it is not the one asked for.

Pure Python (no torch): the engine passes memory addresses (tensor.data_ptr()).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Sequence

ALIGN = 4096
# One read or write call at most, and the promotion pipeline's chunk (the read of chunk k+1
# overlaps the host->GPU copy of chunk k): 64 MiB is 16 blocks of the 8B preset, large enough for
# an NVMe drive's sequential rate and small enough that the first copy starts early.
IO_CHUNK_BYTES = 64 << 20
IO_MODES = ("auto", "o_direct", "buffered")
# Segments one vectored transfer may take (preadv/pwritev refuse more).
try:
    IOV_MAX = max(16, min(1024, os.sysconf("SC_IOV_MAX")))
except (ValueError, OSError):
    IOV_MAX = 1024


class DiskTierError(Exception):
    """The disk tier cannot be set up as asked (a clear message naming the folder)."""


class DiskWriteError(Exception):
    """A write into the tier's file failed (ENOSPC, EFBIG past RLIMIT_FSIZE, EIO, ...): the runs
    before `run_index` were written; `errno` and `message` say what failed."""

    def __init__(self, err: OSError, offset: int, nbytes: int, path: str, run_index: int = 0) -> None:
        self.errno = err.errno
        self.offset = offset
        self.nbytes = nbytes
        self.run_index = run_index
        self.message = (f"[Errno {err.errno}] {err.strerror or err} writing {nbytes} bytes at offset {offset} "
                        f"of the disk tier's file in {path}")
        super().__init__(self.message)


def filesystem_of(path: str) -> str:
    """The filesystem type of the mount holding `path` (from /proc/self/mountinfo; "unknown"
    where that cannot be read)."""
    real = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, sep, right = line.partition(" - ")
                fields = left.split()
                if not sep or len(fields) < 5 or not right.split():
                    continue
                mount = fields[4].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, fstype = mount, right.split()[0]
    except OSError:
        pass
    return fstype


Segment = tuple[int, int]  # (memory address, bytes)
Run = tuple[int, list[Segment]]  # (first file slot, the memory its blocks come from or go to, in file order)


def _view(addr: int, nbytes: int) -> memoryview:
    return memoryview((ctypes.c_char * nbytes).from_address(addr)).cast("B")


@dataclass
class IoTimes:
    """One transfer's run-clock start and end (ns) and its bytes."""

    start_ns: int
    end_ns: int
    bytes: int


class FileTier:
    """`capacity` blocks of `block_bytes` in one file under `folder`, read and written by `io`
    ("auto": O_DIRECT where the filesystem takes it, else buffered)."""

    def __init__(self, folder: str, capacity: int, block_bytes: int, io: str = "auto",
                 clock_now: Callable[[], int] = time.perf_counter_ns) -> None:
        if io not in IO_MODES:
            raise DiskTierError(f"disk I/O mode {io!r} is not one of {', '.join(IO_MODES)}")
        if not os.path.isdir(folder):
            raise DiskTierError(f"{folder}: not a folder")
        self.folder = folder
        self.capacity = int(capacity)
        self.block_bytes = int(block_bytes)
        self.clock_now = clock_now
        self.filesystem = filesystem_of(folder)
        self.io_reason = ""
        name = os.path.join(folder, f"kvscope-kv-{os.getpid()}-{uuid.uuid4().hex[:12]}.bin")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd = os.open(name, flags, 0o600)
        except OSError as e:
            raise DiskTierError(f"{folder}: cannot create the disk tier's file: {e.strerror}") from e
        try:
            self.io = self._choose_io(name, io)
        except BaseException:
            os.close(self.fd)
            raise
        finally:
            # Unlinked once open: nothing is left behind, whatever ends the process.
            os.unlink(name)
        self._bounce: mmap.mmap | None = None
        self._bounce_addr = 0
        self.closed = False

    # ---- set-up --------------------------------------------------------------------------------

    def _choose_io(self, name: str, asked: str) -> str:
        if asked == "buffered":
            self.io_reason = "--disk-kv-io buffered"
            return "buffered"
        why = ""
        if self.block_bytes % ALIGN:
            why = f"block size {self.block_bytes} is not a multiple of {ALIGN} bytes"
        elif not hasattr(os, "O_DIRECT"):
            why = "this platform has no O_DIRECT"
        else:
            try:
                fd = os.open(name, os.O_RDWR | os.O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                why = f"the filesystem refused O_DIRECT ({e.strerror})"
            else:
                probe = mmap.mmap(-1, ALIGN)
                try:
                    addr = ctypes.addressof(ctypes.c_char.from_buffer(probe))
                    os.pwritev(fd, [_view(addr, ALIGN)], 0)
                    os.preadv(fd, [_view(addr, ALIGN)], 0)
                    os.close(self.fd)
                    self.fd = fd
                    return "o_direct"
                except OSError as e:
                    why = f"an aligned O_DIRECT transfer failed ({e.strerror})"
                    os.close(fd)
                finally:
                    probe.close()
        if asked == "o_direct":
            raise DiskTierError(f"{self.folder}: --disk-kv-io o_direct: {why}")
        self.io_reason = why
        return "buffered"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            if self._bounce is not None:
                self._bounce.close()
                self._bounce = None

    # ---- transfers -----------------------------------------------------------------------------

    def _bounce_buffer(self) -> int:
        if self._bounce is None:
            self._bounce = mmap.mmap(-1, IO_CHUNK_BYTES)
            self._bounce_addr = ctypes.addressof(ctypes.c_char.from_buffer(self._bounce))
        return self._bounce_addr

    def _pieces(self, slot: int, segments: Sequence[Segment]) -> list[tuple[int, list[Segment]]]:
        """A run (its first slot, its memory segments in file order) as transfers of at most
        IO_CHUNK_BYTES and IOV_MAX segments: (file offset, segments), a segment split where a
        transfer ends."""
        out: list[tuple[int, list[Segment]]] = []
        offset = slot * self.block_bytes
        cur: list[Segment] = []
        size = 0
        for addr, n in segments:
            while n > 0:
                take = min(n, IO_CHUNK_BYTES - size)
                cur.append((addr, take))
                addr, n, size = addr + take, n - take, size + take
                if size == IO_CHUNK_BYTES or len(cur) == IOV_MAX:
                    out.append((offset, cur))
                    offset, cur, size = offset + size, [], 0
        if cur:
            out.append((offset, cur))
        return out

    def _direct_ok(self, segments: Sequence[Segment]) -> bool:
        return self.io != "o_direct" or all(a % ALIGN == 0 and n % ALIGN == 0 for a, n in segments)

    @staticmethod
    def _views(segments: Sequence[Segment], skip: int) -> list[memoryview]:
        """The segments as buffers, less their first `skip` bytes (after a partial transfer)."""
        out = []
        for addr, n in segments:
            if skip >= n:
                skip -= n
                continue
            out.append(_view(addr + skip, n - skip))
            skip = 0
        return out

    def _write_piece(self, offset: int, segments: Sequence[Segment]) -> None:
        total = sum(n for _, n in segments)
        if not self._direct_ok(segments):
            bounce = self._bounce_buffer()
            at = 0
            for addr, n in segments:
                ctypes.memmove(bounce + at, addr, n)
                at += n
            segments = [(bounce, total)]
        done = 0
        while done < total:  # one vectored write: the file range is contiguous, the memory need not be
            wrote = os.pwritev(self.fd, self._views(segments, done), offset + done)
            if wrote <= 0:
                raise OSError(errno.EIO, "write returned nothing")
            done += wrote

    def _read_piece(self, offset: int, segments: Sequence[Segment]) -> None:
        total = sum(n for _, n in segments)
        direct = self._direct_ok(segments)
        target = list(segments) if direct else [(self._bounce_buffer(), total)]
        done = 0
        while done < total:
            got = os.preadv(self.fd, self._views(target, done), offset + done)
            if got <= 0:
                raise OSError(errno.EIO, f"short read at offset {offset + done} of the disk tier's file")
            done += got
        if not direct:
            at = 0
            for addr, n in segments:
                ctypes.memmove(addr, self._bounce_addr + at, n)
                at += n

    def write_runs(self, runs: Sequence[Run]) -> IoTimes:
        """Write runs (first slot, memory segments): each run is contiguous in the file, its
        memory in as many segments as it takes. Raises DiskWriteError at the first failure (the
        runs before it are written)."""
        start = self.clock_now()
        total = 0
        for i, (slot, segments) in enumerate(runs):
            for off, part in self._pieces(slot, segments):
                try:
                    self._write_piece(off, part)
                except OSError as e:
                    raise DiskWriteError(e, off, sum(n for _, n in part), self.folder, i) from e
            total += sum(n for _, n in segments)
        if self.io == "buffered" and runs:
            try:
                os.fdatasync(self.fd)
            except OSError as e:  # nothing is known to be on disk
                raise DiskWriteError(e, 0, total, self.folder, 0) from e
            for slot, segments in runs:
                os.posix_fadvise(self.fd, slot * self.block_bytes, sum(n for _, n in segments), os.POSIX_FADV_DONTNEED)
        return IoTimes(start, self.clock_now(), total)

    def read_runs(self, runs: Sequence[Run]) -> IoTimes:
        """Read runs (first slot, memory segments) from the file into memory."""
        start = self.clock_now()
        total = 0
        for slot, segments in runs:
            offset, nbytes = slot * self.block_bytes, sum(n for _, n in segments)
            if self.io == "buffered":
                os.posix_fadvise(self.fd, offset, nbytes, os.POSIX_FADV_DONTNEED)
            for off, part in self._pieces(slot, segments):
                self._read_piece(off, part)
            if self.io == "buffered":
                os.posix_fadvise(self.fd, offset, nbytes, os.POSIX_FADV_DONTNEED)
            total += nbytes
        return IoTimes(start, self.clock_now(), total)

    def measure_plain(self, spans: Sequence[tuple[int, int]], reps: int = 2) -> dict[str, object]:
        """The disk's own sequential rate, by the tier's method: `spans` (address, blocks) of host
        memory written to the file from slot 0 on, then read back; best of `reps`. Overwrites the
        file's first blocks, so call it before the workload. A failure is reported in `error`."""
        runs: list[Run] = []
        slot = 0
        for addr, count in spans:
            count = min(count, self.capacity - slot)
            if count <= 0:
                break
            runs.append((slot, [(addr, count * self.block_bytes)]))
            slot += count
        nbytes = slot * self.block_bytes
        out: dict[str, object] = {"bytes": nbytes, "reps": reps, "io": self.io, "io_chunk_bytes": IO_CHUNK_BYTES}
        if nbytes == 0:
            out["error"] = "no blocks to measure with"
            return out
        best_w = best_r = None
        try:
            for _ in range(reps):
                w = self.write_runs(runs)
                r = self.read_runs(runs)
                dw, dr = max(1, w.end_ns - w.start_ns), max(1, r.end_ns - r.start_ns)
                best_w = dw if best_w is None else min(best_w, dw)
                best_r = dr if best_r is None else min(best_r, dr)
        except (DiskWriteError, OSError) as e:
            out["error"] = str(e)
            return out
        assert best_w is not None and best_r is not None
        out["write_bytes_per_s"] = round(nbytes * 1e9 / best_w)
        out["read_bytes_per_s"] = round(nbytes * 1e9 / best_r)
        return out

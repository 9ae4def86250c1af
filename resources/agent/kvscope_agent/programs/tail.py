"""The tail of a run: `<python> - RUN_DIR OFFSET [POLL_S [pid|scheduler]]`, this file on stdin.

Streams the bytes of RUN_DIR/events.jsonl from byte OFFSET to stdout as they are written. When the
run has ended (RUN_DIR/exit exists) and every byte is out, or the run cannot go on (its folder was
deleted, its process group is gone without an exit file), it prints one JSON status line on stderr
and exits 0: {"end": "exit" | "gone" | "dead", "code": the exit status or null, "size": the bytes
read up to, "free_bytes": free space where the run is, "stderr": the last 4000 bytes of the agent's
agent.stderr}. Liveness "pid" watches the process group in RUN_DIR/pid; "scheduler" (a batch job
on another node, whose pid means nothing here) leaves that to the scheduler's queue (core/slurm).
It also exits when the SSH session that started it is gone (its parent changed).
"""

import json
import os
import sys
import time


def free_bytes(run_dir):
    try:
        st = os.statvfs(run_dir if os.path.isdir(run_dir) else os.path.dirname(run_dir) or "/")
        return st.f_bavail * st.f_frsize
    except OSError:
        return None


def stderr_tail(run_dir):
    try:
        with open(os.path.join(run_dir, "agent.stderr"), "rb") as f:
            f.seek(0, 2)
            n = f.tell()
            f.seek(max(0, n - 4000))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def alive(run_dir):
    """Whether the run's process group lives: None while there is no readable pid file."""
    try:
        with open(os.path.join(run_dir, "pid")) as f:
            pg = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return None
    try:
        os.kill(-pg, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv):
    run_dir, offset = argv[1], int(argv[2])
    poll = float(argv[3]) if len(argv) > 3 else 0.02
    pid_liveness = (argv[4] if len(argv) > 4 else "pid") == "pid"
    path = os.path.join(run_dir, "events.jsonl")
    out = sys.stdout.buffer
    ppid = os.getppid()
    f = None

    def copy_rest():
        got = False
        while True:
            b = f.read(1 << 20)
            if not b:
                return got
            out.write(b)
            got = True

    def end(kind, code=None):
        out.flush()
        status = {"end": kind, "code": code, "size": f.tell() if f else None, "free_bytes": free_bytes(run_dir),
                  "stderr": stderr_tail(run_dir)}
        sys.stderr.write(json.dumps(status) + "\n")
        sys.stderr.flush()
        return 0

    started = time.monotonic()
    while True:
        if not os.path.isdir(run_dir):
            if f is not None:
                copy_rest()
            return end("gone")
        finished = os.path.exists(os.path.join(run_dir, "exit"))
        state = alive(run_dir) if pid_liveness else True
        if f is None:
            try:
                f = open(path, "rb")
                f.seek(offset)
            except FileNotFoundError:
                f = None
        got = False
        if f is not None:
            got = copy_rest()
            out.flush()
        if finished:
            try:
                with open(os.path.join(run_dir, "exit")) as e:
                    code = int(e.read().strip())
            except (OSError, ValueError):
                code = None
            return end("exit", code)
        if state is False and not os.path.exists(os.path.join(run_dir, "exit")):
            return end("dead")
        if state is None and time.monotonic() - started > 30:
            return end("dead")
        if os.getppid() != ppid:
            return 0  # the SSH session that started us is gone
        if not got:
            time.sleep(poll)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

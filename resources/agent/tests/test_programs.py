"""The programs the app sends to a host (kvscope_agent/programs), run as the app runs them: the
file's text on stdin of `python3 - ARGS` (src/main/core/runs/tail.ts, runs/remote-cleanup.ts).
Each test waits for what the program writes or for it to exit, never for a span of time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

PROGRAMS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kvscope_agent", "programs")
GUARD_S = 60  # only a hung program reaches this


def program(name: str) -> bytes:
    with open(os.path.join(PROGRAMS, name), "rb") as f:
        return f.read()


def start(name: str, *args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdin.write(program(name))
    p.stdin.close()
    return p


def finish(p: subprocess.Popen) -> tuple[bytes, dict | None]:
    out = p.stdout.read()
    err = p.stderr.read().decode()
    assert p.wait(GUARD_S) == 0, err
    lines = [line for line in err.strip().splitlines() if line.startswith('{"end"')]
    return out, (json.loads(lines[-1]) if lines else None)


def read_exactly(p: subprocess.Popen, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = os.read(p.stdout.fileno(), n - len(got))
        assert chunk, "the tail ended early"
        got += chunk
    return got


@pytest.fixture
def group():
    """A live process group of our own (its leader's pid is the group id), ended after the test."""
    p = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield p.pid
    p.kill()
    p.wait()


def ended_group() -> int:
    p = subprocess.Popen(["true"], start_new_session=True)
    p.wait()
    return p.pid


def make_run(tmp_path, log: bytes = b"", pid: int | None = None, exit_code: int | None = None, stderr: bytes = b""):
    d = tmp_path / "run"
    d.mkdir()
    (d / "events.jsonl").write_bytes(log)
    if pid is not None:
        (d / "pid").write_text(f"{pid}\n")
    if stderr:
        (d / "agent.stderr").write_bytes(stderr)
    if exit_code is not None:
        write_exit(d, exit_code)
    return d


def write_exit(d, code: int) -> None:
    """The exit file as the launcher writes it (runs/launch.ts, slurm/job-script.ts): whole, by a
    rename, so a tail never sees it created but still empty."""
    (d / "exit.tmp").write_text(f"{code}\n")
    os.replace(d / "exit.tmp", d / "exit")


# ---- tail.py ----------------------------------------------------------------------------------


def test_tail_sends_the_log_from_the_offset_then_the_exit_status(tmp_path, group):
    log = b'{"seq":0}\n{"seq":1}\n{"seq":2}\n'
    d = make_run(tmp_path, log, pid=group, exit_code=0, stderr=b"x" * 5000 + b"last words\n")
    out, end = finish(start("tail.py", str(d), "10", "0.01", "pid"))
    assert out == log[10:]
    assert end["end"] == "exit" and end["code"] == 0 and end["size"] == len(log)
    assert isinstance(end["free_bytes"], int) and end["free_bytes"] > 0
    assert end["stderr"].endswith("last words\n") and len(end["stderr"]) == 4000


def test_tail_follows_a_growing_log_until_the_exit_file(tmp_path, group):
    d = make_run(tmp_path, b"", pid=group)
    p = start("tail.py", str(d), "0", "0.01", "pid")
    with open(d / "events.jsonl", "ab") as f:
        f.write(b'{"seq":0}\n')
        f.flush()
        assert read_exactly(p, 10) == b'{"seq":0}\n'
        f.write(b'{"seq":1}\n')
    write_exit(d, 143)
    out, end = finish(p)
    assert out == b'{"seq":1}\n'
    assert end == {**end, "end": "exit", "code": 143, "size": 20}


def test_tail_says_dead_when_the_group_is_gone_without_an_exit_file(tmp_path):
    d = make_run(tmp_path, b'{"seq":0}\n', pid=ended_group())
    out, end = finish(start("tail.py", str(d), "0", "0.01", "pid"))
    assert out == b'{"seq":0}\n' and end["end"] == "dead" and end["code"] is None and end["size"] == 10


def test_tail_says_gone_when_the_run_folder_is_deleted(tmp_path, group):
    d = make_run(tmp_path, b'{"seq":0}\n', pid=group)
    p = start("tail.py", str(d), "0", "0.01", "pid")
    assert read_exactly(p, 10) == b'{"seq":0}\n'
    shutil.rmtree(d)
    out, end = finish(p)
    assert out == b"" and end["end"] == "gone" and end["size"] == 10


def test_tail_of_a_scheduled_run_needs_no_pid_and_ends_at_the_exit_file(tmp_path):
    d = make_run(tmp_path, b'{"seq":0}\n')
    p = start("tail.py", str(d), "0", "0.01", "scheduler")
    assert read_exactly(p, 10) == b'{"seq":0}\n'
    write_exit(d, 0)
    _, end = finish(p)
    assert end["end"] == "exit" and end["code"] == 0


def running(pid: int) -> bool:
    """Whether pid is a process that has not ended (a zombie nobody reaped yet has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_tail_stops_when_the_session_that_started_it_is_gone(tmp_path, group):
    """Started from a shell that then exits (as an SSH session that drops): its parent changes and
    it exits 0 without a status line; the run itself is not its to end."""
    d = make_run(tmp_path, b'{"seq":0}\n', pid=group)
    prog, out = tmp_path / "tail.py", tmp_path / "tail.out"
    prog.write_bytes(program("tail.py"))
    session = subprocess.Popen(["sh", "-c", '"$0" - "$1" 0 0.01 pid < "$2" > "$3" 2>&1 & echo $!; read x; exit 0',
                                sys.executable, str(d), str(prog), str(out)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid = int(session.stdout.readline())
    deadline = time.monotonic() + GUARD_S
    # Once the tail has sent the log it has noted its parent: then the session goes.
    while (not out.exists() or out.read_bytes() != b'{"seq":0}\n') and time.monotonic() < deadline:
        time.sleep(0.02)
    assert out.read_bytes() == b'{"seq":0}\n'
    session.stdin.close()
    assert session.wait(GUARD_S) == 0
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the tail went on after its session was gone")
    assert out.read_bytes() == b'{"seq":0}\n'  # no status line: the run did not end
    assert os.path.exists(d / "pid") and running(group)


# ---- list_runs.py -----------------------------------------------------------------------------


def test_list_runs_says_which_runs_and_agents_may_go(tmp_path, group):
    root = tmp_path / "root"
    runs = root / "runs"
    for name in ("ended", "running", "dead", "starting", "stale"):
        (runs / name).mkdir(parents=True)
        (runs / name / "events.jsonl").write_bytes(b"x" * 100)
    (runs / "ended" / "exit").write_text("0\n")
    (runs / "running" / "pid").write_text(f"{group}\n")
    (runs / "dead" / "pid").write_text(f"{ended_group()}\n")
    old = time.time() - 3600
    os.utime(runs / "stale", (old, old))
    (runs / "a-file").write_text("not a run")
    os.symlink(runs / "ended", runs / "link")
    for name in ("agent-inuse", "agent-old", ".agent-upload", "other"):
        (root / name / "kvscope_agent").mkdir(parents=True)
        (root / name / "kvscope_agent" / "run.py").write_bytes(b"y" * 10)
    # A live process launched with agent-inuse on its PYTHONPATH, as the launcher's command line has it.
    user = subprocess.Popen(["sh", "-c", "sleep 600", f"PYTHONPATH={root / 'agent-inuse'}"])
    try:
        out, _ = finish(start("list_runs.py", str(root)))
    finally:
        user.kill()
        user.wait()
    listed = json.loads(out)
    states = {r["name"]: r["state"] for r in listed["runs"]}
    assert states == {"ended": "ended", "running": "running", "dead": "dead", "starting": "running", "stale": "dead"}
    ended = next(r for r in listed["runs"] if r["name"] == "ended")
    assert ended["path"] == str(runs / "ended") and ended["bytes"] == 102 and isinstance(ended["mtime_s"], int)
    agents = {a["name"]: (a["state"], a["bytes"]) for a in listed["agents"]}
    assert agents == {"agent-inuse": ("running", 10), "agent-old": ("ended", 10), ".agent-upload": ("ended", 10)}


def test_list_runs_of_a_root_without_runs_lists_nothing(tmp_path):
    out, _ = finish(start("list_runs.py", str(tmp_path / "nowhere")))
    assert json.loads(out) == {"runs": [], "agents": []}

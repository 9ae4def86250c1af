"""The run folders and deployed agents on a host, for `kvscope clean`: `<python> - ROOT`, this file
on stdin. Prints one JSON object {"runs": [...], "agents": [...]}, each entry {"path", "name",
"state", "mtime_s", "bytes"}.

A run folder (ROOT/runs/*) is "ended" with an exit file, "running" while its process group (its
pid file) lives or, with no pid file yet, for 2 minutes after it was made (mkdir comes before the
launcher writes pid), else "dead". An agent folder (ROOT/agent-*, and ROOT/.agent-* temp uploads)
is "running" while a live process was launched with it on its PYTHONPATH (the launcher's command
line names it: PYTHONPATH=<folder>), else "ended".
"""

import json
import os
import sys
import time


def folder_bytes(d):
    """The bytes of the files under d, and the newest mtime among d and them."""
    size, mt = 0, os.lstat(d).st_mtime
    for dp, _dn, fn in os.walk(d):
        for x in fn:
            try:
                st = os.lstat(os.path.join(dp, x))
            except OSError:
                continue
            size += st.st_size
            mt = max(mt, st.st_mtime)
    return size, mt


def run_state(d):
    if os.path.exists(os.path.join(d, "exit")):
        return "ended"
    if not os.path.exists(os.path.join(d, "pid")):
        return "running" if time.time() - os.lstat(d).st_mtime < 120 else "dead"
    try:
        with open(os.path.join(d, "pid")) as f:
            os.kill(-int(f.read().strip()), 0)
        return "running"
    except PermissionError:
        return "running"
    except (OSError, ValueError):
        return "dead"


def subfolders(parent):
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        names = []
    for n in names:
        d = os.path.join(parent, n)
        if os.path.isdir(d) and not os.path.islink(d):
            yield n, d


def command_lines():
    out = []
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
    return out


def main(argv):
    root = argv[1]
    runs = []
    for n, d in subfolders(os.path.join(root, "runs")):
        state = run_state(d)
        size, mt = folder_bytes(d)
        runs.append({"path": d, "name": n, "state": state, "mtime_s": int(mt), "bytes": size})
    cmdlines = command_lines()
    agents = []
    for n, d in subfolders(root):
        if not (n.startswith("agent-") or n.startswith(".agent-")):
            continue
        size, _ = folder_bytes(d)
        in_use = any(("PYTHONPATH=" + d) in c or ("PYTHONPATH='" + d) in c for c in cmdlines)
        agents.append({"path": d, "name": n, "state": "running" if in_use else "ended",
                       "mtime_s": int(os.lstat(d).st_mtime), "bytes": size})
    print(json.dumps({"runs": runs, "agents": agents}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

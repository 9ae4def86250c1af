#!/usr/bin/env python3
"""An independent reader of a KV Scope Perfetto export (Chrome Trace Event JSON), written apart
from the TypeScript exporter and its tests so a shared misreading of the format shows up.

Checks the rules Perfetto's JSON importer relies on (shared/reference/profilers.md section 2):
every used pid and (pid, tid) is named; ts/dur are numbers >= 0 (microseconds); X slices on one
thread nest strictly; counter values are numbers; every v2 flow (bind_id) has a flow_out slice
and at least one flow_in slice, and starts no later than it ends. And what floating-point viewers
(DevTools' trace engine, speedscope) need: ts and dur lie on the 2**-11 us grid the exporter
writes (docs/export.md), so ts + dur is exact in binary floating point; instants are "I" (DevTools
ignores "i"); each counter event has one value.

Usage: export-check-trace.py TRACE.json  -> prints a JSON summary; exit 1 listing each problem.
"""
import json
import math
import sys
from collections import defaultdict


def check(path):
    with open(path, "rb") as f:
        doc = json.load(f)
    problems = []
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    procs, threads = set(), set()
    used_pids, used_threads = set(), set()
    slices = defaultdict(list)
    flow_out, flow_in = {}, defaultdict(list)
    counts = defaultdict(int)
    for i, e in enumerate(events):
        ph = e.get("ph")
        counts[ph] += 1
        if ph == "M":
            if e["name"] == "process_name":
                procs.add(e["pid"])
            elif e["name"] == "thread_name":
                threads.add((e["pid"], e["tid"]))
            continue
        ts = e.get("ts")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts) or ts < 0:
            problems.append(f"event {i}: ts {ts!r} is not a number >= 0")
            continue
        used_pids.add(e.get("pid"))
        if ph == "X":
            dur = e.get("dur")
            if not isinstance(dur, (int, float)) or dur < 0:
                problems.append(f"event {i}: dur {dur!r}")
                continue
            key = (e["pid"], e["tid"])
            used_threads.add(key)
            # Multiples of 2**-11 us: exact in a double, so ts + dur is exact too.
            if not float(ts * 2048).is_integer() or not float(dur * 2048).is_integer():
                problems.append(f"event {i}: ts {ts!r} or dur {dur!r} is off the 2**-11 us grid")
            # Integer nanoseconds, read back as Perfetto does (round us * 1000).
            s = round(ts * 1000)
            slices[key].append((s, round((ts + dur) * 1000), i))
            if "bind_id" in e:
                if e.get("flow_out") and e.get("flow_in"):
                    problems.append(f"event {i}: flow step not expected")
                elif e.get("flow_out"):
                    if e["bind_id"] in flow_out:
                        problems.append(f"event {i}: bind_id {e['bind_id']} has two flow_out slices")
                    flow_out[e["bind_id"]] = s
                elif e.get("flow_in"):
                    flow_in[e["bind_id"]].append(s)
                else:
                    problems.append(f"event {i}: bind_id without flow_out/flow_in")
        elif ph == "i":
            problems.append(f"event {i}: instant with ph 'i' (DevTools reads only 'I')")
        elif ph == "I":
            if e.get("s", "t") == "t":
                used_threads.add((e["pid"], e["tid"]))
        elif ph == "C":
            args = e.get("args")
            if not isinstance(args, dict) or len(args) != 1:
                problems.append(f"event {i}: counter {e.get('name')!r} with {len(args or {})} values, not one")
            else:
                for k, v in args.items():
                    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                        problems.append(f"event {i}: counter {e['name']} {k} = {v!r} is not a number")
        else:
            problems.append(f"event {i}: unexpected ph {ph!r}")
    for pid in sorted(used_pids - procs):
        problems.append(f"pid {pid} is used but has no process_name")
    for key in sorted(used_threads - threads):
        problems.append(f"pid/tid {key} is used but has no thread_name")
    for key, lst in slices.items():
        lst.sort(key=lambda x: (x[0], -(x[1] - x[0]), x[2]))
        stack = []
        for s, end, i in lst:
            while stack and stack[-1][1] <= s and not (stack[-1][1] == s and stack[-1][0] == s and end == s):
                stack.pop()
            if stack and end > stack[-1][1]:
                problems.append(f"thread {key}: slice event {i} [{s},{end}] overlaps event {stack[-1][2]} [{stack[-1][0]},{stack[-1][1]}] without nesting")
                continue
            stack.append((s, end, i))
    for bid, s in flow_out.items():
        ins = flow_in.get(bid)
        if not ins:
            problems.append(f"flow {bid}: flow_out with no flow_in")
        elif min(ins) < s:
            problems.append(f"flow {bid}: ends at {min(ins)} before it starts at {s}")
    for bid in flow_in:
        if bid not in flow_out:
            problems.append(f"flow {bid}: flow_in with no flow_out")
    summary = {
        "events": len(events),
        "by_ph": dict(counts),
        "threads": len(threads),
        "processes": len(procs),
        "flows": len(flow_out),
        "flow_ins": sum(len(v) for v in flow_in.values()),
        "problems": problems[:50],
        "problem_count": len(problems),
        "has_metadata": isinstance(doc, dict) and "metadata" in doc,
    }
    return summary


if __name__ == "__main__":
    out = check(sys.argv[1])
    print(json.dumps(out))
    sys.exit(1 if out["problem_count"] else 0)

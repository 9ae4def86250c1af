#!/usr/bin/env python3
"""Write the best configurations a tuning run measured into the engine's configuration tables.

The tuning scripts print the lines to paste; this pastes them, so one device command can tune,
apply and measure the engine with what it found (bench/gpu/engine-roofline.sh, TUNE=1), and the
same JSON applied here gives the same source:

  * bench/fp8-decode-tune.py's JSON: `gemv.suggested` (per measured row count) becomes
    fp8_gemv.GEMV_CONFIGS (a row count's line covers the counts up to the next measured one, the
    last up to 16 rows); `attention.suggested.config` becomes paged_attention.DECODE_CONFIGS["fp8"];
  * bench/prefill-attention-tune.py's JSON: each model's `best` becomes its
    (query heads per KV head, KV storage) row of paged_attention.PREFILL_CONFIGS (a new row at
    the table's end where that shape has none).

A table whose text is not found as expected is left alone and said so (exit 1): never a
half-edited source. Prints each change. The tuning scripts print their "lines to paste" with this
file's `gemv_table`, `decode_fp8_line` and `prefill_row`, so the printed and the applied lines
are one text.

    python3 bench/apply-tuned-configs.py [--fp8-decode FILE] [--prefill FILE] [--engine-dir DIR] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

ENGINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resources", "agent", "kvscope_agent", "engine")
PREFILL_KEYS = ("block_m", "block_n", "num_warps", "num_stages", "f16")


class TableNotFound(RuntimeError):
    pass


def max_rows(engine_dir: str = ENGINE) -> int:
    """fp8_gemv.MAX_ROWS, read from its source (this script edits text and needs no torch)."""
    with open(os.path.join(engine_dir, "fp8_gemv.py"), encoding="utf-8") as f:
        m = re.search(r"^MAX_ROWS = (\d+)", f.read(), re.M)
    if not m:
        raise TableNotFound("fp8_gemv.MAX_ROWS")
    return int(m.group(1))


def gemv_table(suggested: list[dict[str, Any]], engine_dir: str = ENGINE) -> str:
    """fp8_gemv.GEMV_CONFIGS from the measured row counts' configurations: a row count's line
    covers the counts up to the next measured one, the last up to fp8_gemv.MAX_ROWS."""
    last_rows = max_rows(engine_dir)
    counts = [int(s["rows"]) for s in suggested]
    lines = ["GEMV_CONFIGS: list[tuple[int, dict[str, int]]] = ["]
    for i, s in enumerate(suggested):
        last = counts[i + 1] - 1 if i + 1 < len(counts) else last_rows
        lines.append(f"    ({last}, {json.dumps(s['config'])}),")
    return "\n".join(lines + ["]"])


def decode_fp8_line(config: dict[str, Any]) -> str:
    """paged_attention.DECODE_CONFIGS' "fp8" line."""
    return f'    "fp8": {json.dumps(config)},'


def prefill_row(group: int, kv: str, config: dict[str, Any]) -> str:
    """A paged_attention.PREFILL_CONFIGS line (its keys only), without a comment."""
    keep = {k: config[k] for k in PREFILL_KEYS if k in config}
    return f'    ({group}, "{kv}"): {json.dumps(keep)},'


def replace_gemv(src: str, suggested: list[dict[str, Any]], engine_dir: str = ENGINE) -> str:
    pat = re.compile(r"^GEMV_CONFIGS: list\[tuple\[int, dict\[str, int\]\]\] = \[\n(?:    \(.*\),\n)+\]", re.M)
    if not pat.search(src):
        raise TableNotFound("fp8_gemv.GEMV_CONFIGS")
    return pat.sub(lambda _m: gemv_table(suggested, engine_dir), src, count=1)


def replace_decode_fp8(src: str, config: dict[str, Any]) -> str:
    pat = re.compile(r'^    "fp8": \{[^\n]*\},$', re.M)
    if not pat.search(src):
        raise TableNotFound('paged_attention.DECODE_CONFIGS["fp8"]')
    return pat.sub(lambda _m: decode_fp8_line(config), src, count=1)


def replace_prefill_row(src: str, group: int, kv: str, config: dict[str, Any]) -> str:
    """Replace the (group, kv) row of PREFILL_CONFIGS, keeping its comment; a shape with no row
    yet gets one at the table's end."""
    row = prefill_row(group, kv, config)
    pat = re.compile(r'^    \(' + str(group) + r', "' + re.escape(kv) + r'"\): \{[^\n]*?\},(.*)$', re.M)
    if pat.search(src):
        return pat.sub(lambda m: row + m.group(1), src, count=1)
    table = re.compile(r"^PREFILL_CONFIGS: [^\n]*\{\n(?:    \(.*\n)+(?=\}\n)", re.M)
    m = table.search(src)
    if not m:
        raise TableNotFound("paged_attention.PREFILL_CONFIGS")
    return src[:m.end()] + row + "  # from a tuning run\n" + src[m.end():]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fp8-decode", help="bench/fp8-decode-tune.py's JSON")
    ap.add_argument("--prefill", help="bench/prefill-attention-tune.py's JSON")
    ap.add_argument("--engine-dir", default=ENGINE)
    ap.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    a = ap.parse_args(argv)
    gemv_py = os.path.join(a.engine_dir, "fp8_gemv.py")
    paged_py = os.path.join(a.engine_dir, "paged_attention.py")
    sources = {p: open(p, encoding="utf-8").read() for p in (gemv_py, paged_py)}
    edited = dict(sources)
    missing: list[str] = []

    def apply(path: str, what: str, fn: Any) -> None:
        try:
            edited[path] = fn(edited[path])
            print(f"{what}: applied")
        except TableNotFound as e:
            missing.append(str(e))
            print(f"{what}: its table was not found as expected in {path}: left alone", file=sys.stderr)

    if a.fp8_decode:
        r = json.load(open(a.fp8_decode, encoding="utf-8"))
        sug = (r.get("gemv") or {}).get("suggested") or []
        if sug:
            apply(gemv_py, f"GEMV_CONFIGS <- {[(s['rows'], s['config']) for s in sug]}", lambda s: replace_gemv(s, sug, a.engine_dir))
        att = ((r.get("attention") or {}).get("suggested") or {}).get("config")
        if att:
            apply(paged_py, f'DECODE_CONFIGS["fp8"] <- {att}', lambda s: replace_decode_fp8(s, att))
    if a.prefill:
        r = json.load(open(a.prefill, encoding="utf-8"))
        for m in r.get("models", []):
            if m.get("best") and m.get("group") is not None and m.get("kv"):
                g, kv, c = int(m["group"]), str(m["kv"]), m["best"]
                apply(paged_py, f"PREFILL_CONFIGS[({g}, {kv!r})] <- {c}", lambda s, g=g, kv=kv, c=c: replace_prefill_row(s, g, kv, c))
    if missing:
        print("nothing written: " + "; ".join(missing), file=sys.stderr)
        return 1
    for path, text in edited.items():
        if text != sources[path] and not a.dry_run:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""FP8 correctness at full 70B shapes on the GPU: one layer's four projections vs references.

    PYTHONPATH=resources/agent python3 bench/issue9-fp8-check.py OUT.json

For each projection of a Llama-3.1-70B layer (qkv 8192->10240, o 8192->8192, gate_up
8192->57344, down 28672->8192): fp32 weights W ~ N(0, 1/K) and fresh bf16 activations x ~ N(0, 1)
(M = 512 tokens); reference = x @ W.T in fp32 (TF32 off, PyTorch's default for matmul). Reported:
relative Frobenius error of the bf16 product (W and x in bf16) and of `Fp8Linear` with per-tensor
and per-channel scales. Pass: every FP8 error within fp8.FP8_LINEAR_RTOL (0.05) and above
FP8_LINEAR_MIN_ERR (0.02, else the FP8 path was not taken). Exit 1 on a failure, 3 if FP8 is
unsupported here (the reason is printed). About 10 s on an H100.
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch

from kvscope_agent.engine import fp8

SHAPES = {"qkv": (8192, 10240), "o": (8192, 8192), "gate_up": (8192, 57344), "down": (28672, 8192)}
M = 512


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a.double() - b.double()) / torch.linalg.norm(b.double()))


def main(argv: list) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    ok, why = fp8.supported("cuda")
    print("supported:", ok, why, flush=True)
    res: dict = {"supported": ok, "reason": why, "m": M, "rtol": fp8.FP8_LINEAR_RTOL, "min_err": fp8.FP8_LINEAR_MIN_ERR,
                 "torch": torch.__version__, "rows": {}}
    if not ok:
        with open(argv[0], "w") as f:
            json.dump(res, f, indent=1)
        return 3
    res["gpu"] = torch.cuda.get_device_name(0)
    g = torch.Generator(device="cuda")
    g.manual_seed(90)
    t0 = time.time()
    all_ok = True
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, generator=g, device="cuda") / math.sqrt(k)
        x = torch.randn(M, k, generator=g, device="cuda").to(torch.bfloat16)
        ref = x.float() @ w.t()
        row = {"k": k, "n": n, "bf16": round(rel(x @ w.to(torch.bfloat16).t(), ref), 5)}
        for scaling in ("tensor", "channel"):
            layer = fp8.Fp8Linear.from_weight(w, scaling=scaling)
            out = layer(x)
            row[scaling] = round(rel(out, ref), 5)
            row[f"{scaling}_dtype"] = str(out.dtype)
            del layer, out
        row["pass"] = all(fp8.FP8_LINEAR_MIN_ERR < row[s] < fp8.FP8_LINEAR_RTOL for s in ("tensor", "channel"))
        all_ok &= row["pass"]
        res["rows"][name] = row
        print(name, json.dumps(row), flush=True)
        del w, x, ref
        torch.cuda.empty_cache()
    res["pass"] = all_ok
    res["seconds"] = round(time.time() - t0, 2)
    with open(argv[0], "w") as f:
        json.dump(res, f, indent=1)
    print("FP8 70B-shape check:", "PASS" if all_ok else "FAIL", flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

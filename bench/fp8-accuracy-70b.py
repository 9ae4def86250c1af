#!/usr/bin/env python3
"""FP8 correctness at full 70B shapes on the GPU: one layer's four projections vs references.

    PYTHONPATH=resources/agent python3 bench/fp8-accuracy-70b.py OUT.json

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


def _gpu_us(fn, iters: int = 50) -> float:
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / iters * 1e3


def _cpu_us(fn, iters: int = 50) -> float:
    """Host time to issue one call (no synchronisation inside the loop): the launch cost."""
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    dt = time.perf_counter() - t
    torch.cuda.synchronize()
    return dt / iters * 1e6


def decode_breakdown() -> dict:
    """Where the time of a decode-sized Fp8Linear call goes (the smoke saw ~200-300 us a call at
    M = 1..16 whatever the weight size, where 84 MB of weights need ~30 us): host issue cost vs
    GPU time, activation quantisation vs the FP8 product, the same scale tensor every call vs a
    new one (cuBLASLt gets scale pointers as descriptor attributes), and bf16 F.linear beside."""
    import torch.nn.functional as F

    out: dict = {}
    g = torch.Generator(device="cuda")
    g.manual_seed(7)
    for name in ("qkv", "gate_up"):
        k, n = SHAPES[name]
        layer = fp8.Fp8Linear.from_random(k, n, "cuda", g)
        wb = layer.dequantized_weight(torch.bfloat16)
        for m in (2, 16):
            x = torch.randn(m, k, generator=g, device="cuda").to(torch.bfloat16)
            buf = torch.empty((), dtype=torch.float32, device="cuda")
            xq, sx = fp8.quantize_per_tensor(x, buf)
            rot = [sx.clone() for _ in range(8)]
            i = [0]

            def mm_rotating() -> None:
                i[0] += 1
                fp8._scaled_mm(xq, layer.weight.t(), rot[i[0] % 8], layer.scale, torch.bfloat16, False)

            r = {
                "full_gpu_us": _gpu_us(lambda: layer(x)),
                "full_cpu_issue_us": _cpu_us(lambda: layer(x)),
                "quant_gpu_us": _gpu_us(lambda: fp8.quantize_per_tensor(x, buf)),
                "quant_cpu_issue_us": _cpu_us(lambda: fp8.quantize_per_tensor(x, buf)),
                "mm_same_scale_gpu_us": _gpu_us(lambda: fp8._scaled_mm(xq, layer.weight.t(), sx, layer.scale, torch.bfloat16, False)),
                "mm_same_scale_cpu_issue_us": _cpu_us(lambda: fp8._scaled_mm(xq, layer.weight.t(), sx, layer.scale, torch.bfloat16, False)),
                "mm_new_scale_ptr_gpu_us": _gpu_us(mm_rotating),
                "mm_fast_accum_gpu_us": _gpu_us(lambda: fp8._scaled_mm(xq, layer.weight.t(), sx, layer.scale, torch.bfloat16, True)),
                "bf16_linear_gpu_us": _gpu_us(lambda: F.linear(x, wb)),
                "bf16_linear_cpu_issue_us": _cpu_us(lambda: F.linear(x, wb)),
            }
            out[f"{name}_m{m}"] = {kk: round(v, 1) for kk, v in r.items()}
            print(f"decode {name} M={m}", json.dumps(out[f"{name}_m{m}"]), flush=True)
        del layer, wb
        torch.cuda.empty_cache()
    try:  # kernel names and times of 10 calls (qkv, M = 16)
        from torch.profiler import ProfilerActivity, profile

        k, n = SHAPES["qkv"]
        layer = fp8.Fp8Linear.from_random(k, n, "cuda", g)
        x = torch.randn(16, k, generator=g, device="cuda").to(torch.bfloat16)
        layer(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                layer(x)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60)
        out["profile_qkv_m16_x10"] = table
        print(table, flush=True)
    except Exception as e:  # noqa: BLE001 - the profiler is optional here
        out["profile_error"] = f"{type(e).__name__}: {e}"
    return out


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
    try:
        res["decode"] = decode_breakdown()
    except RuntimeError as e:  # informative only: never fails the check
        res["decode"] = {"error": str(e).splitlines()[0][:300]}
    res["seconds"] = round(time.time() - t0, 2)
    with open(argv[0], "w") as f:
        json.dump(res, f, indent=1)
    print("FP8 70B-shape check:", "PASS" if all_ok else "FAIL", flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

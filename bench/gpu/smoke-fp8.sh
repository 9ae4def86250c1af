#!/usr/bin/env bash
# Smoke check of the FP8 pieces (resources/agent/kvscope_agent/engine/fp8.py) on the GPU host.
# Budget: < 60 s wall on an H100 (about 10 s of it is importing torch and starting CUDA).
#   bash bench/gpu/smoke-fp8.sh            # from the repository root; $OUT gets smoke-fp8.json
# Checks, in order (each prints one line; a failure prints FAIL and the script goes on):
#   1. supported("cuda") and its reason; torch._scaled_mm probes (tensor-wise, row-wise)
#   2. one Fp8Linear per projection of a 70B layer (qkv 8192->10240, o 8192->8192,
#      gate_up 8192->57344, down 28672->8192): relative Frobenius error vs an fp32 product of the
#      unquantised weights (tolerance FP8_LINEAR_RTOL = 0.05; bf16 shown beside), per-tensor and
#      per-channel scales, fast accumulation off/on
#   3. TFLOP/s of the FP8 product at a prefill chunk (M = 4096) and weight GB/s at decode (M = 16),
#      with bf16 torch.matmul beside, and the per-step estimates they imply for 80 layers
#   4. from_random time and peak memory for one layer (x 80 = the preset's weight build)
#   5. KV round trip: bf16 -> e4m3 -> bf16 error, saturation, bit-exact pinned-host round trip
#   6. the engine's attention over one user's FP8 KV at 17,280 tokens (decode and prefill chunks):
#      per-layer time and peak memory, inputs to the 70B sweep's run-time estimate
#   7. bench/fp8-accuracy-70b.py: 70B-shape accuracy and the decode-call time breakdown
#   8. tests/test_fp8.py (pytest if installed, else its own runner)
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/kvscope-smoke}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/resources/agent${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
date -u +"date %Y-%m-%dT%H:%M:%SZ"
nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader 2>&1 | head -2

timeout 40 "$PY" - <<'EOF' 2>&1 | tee "$OUT/smoke-fp8.txt"
import json, math, os, sys, time, traceback
import torch
from kvscope_agent.engine import fp8

res = {"torch": torch.__version__, "cuda": torch.version.cuda, "checks": {}}
def record(name, **kv):
    res["checks"][name] = kv
    print(name, json.dumps(kv, default=str), flush=True)

def step(name):
    def deco(fn):
        t0 = time.time()
        try:
            fn()
        except Exception as e:
            record(name, status="FAIL", error=f"{type(e).__name__}: {e}", tb=traceback.format_exc()[-1500:])
        print(f"  ({name}: {time.time() - t0:.1f} s)", flush=True)
        return fn
    return deco

print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0], flush=True)

def rel(a, b):
    return float(torch.linalg.norm(a.double() - b.double()) / torch.linalg.norm(b.double()))

def timeit(fn, iters):
    fn(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / iters / 1e3  # seconds per call

@step("supported")
def _():
    ok, why = fp8.supported("cuda")
    cap = torch.cuda.get_device_capability(0)
    record("supported", status="ok" if ok else "FAIL", ok=ok, reason=why, capability=f"{cap[0]}.{cap[1]}",
           probe_tensorwise=fp8._probe(0, "tensor"), probe_rowwise=fp8._probe(0, "row"),
           has_F_scaled_mm=hasattr(torch.nn.functional, "scaled_mm"))
    if not ok:
        raise RuntimeError(f"FP8 unsupported: {why}")

SHAPES = {"qkv": (8192, 10240), "o": (8192, 8192), "gate_up": (8192, 57344), "down": (28672, 8192)}
M_ERR = 512
g = torch.Generator(device="cuda"); g.manual_seed(1234)

@step("accuracy_70b_shapes")
def _():
    rows = {}
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, generator=g, device="cuda") / math.sqrt(k)  # fp32 truth
        x = torch.randn(M_ERR, k, generator=g, device="cuda").to(torch.bfloat16)
        ref = x.float() @ w.t()  # fp32 (TF32 is off by default for matmul)
        r = {"bf16": rel(x @ w.to(torch.bfloat16).t(), ref)}
        for scaling in ("tensor", "channel"):
            for fast in (False, True):
                layer = fp8.Fp8Linear.from_weight(w, scaling=scaling, fast_accum=fast)
                out = layer(x)
                assert out.dtype == torch.bfloat16
                r[f"{scaling}{'_fast' if fast else ''}"] = round(rel(out, ref), 5)
                del layer
        worst = max(v for kk, v in r.items() if kk != "bf16")
        best = min(v for kk, v in r.items() if kk != "bf16")
        r["pass"] = fp8.FP8_LINEAR_MIN_ERR < best and worst < fp8.FP8_LINEAR_RTOL
        r["bf16"] = round(r["bf16"], 5)
        rows[name] = r
        del w, x, ref
    torch.cuda.empty_cache()
    record("accuracy_70b_shapes", status="ok" if all(r["pass"] for r in rows.values()) else "FAIL",
           rtol=fp8.FP8_LINEAR_RTOL, m=M_ERR, rows=rows)

@step("speed_70b_shapes")
def _():
    rows = {}
    tot = {"fp8_prefill_s": 0.0, "bf16_prefill_s": 0.0, "fp8_decode_s": 0.0, "fp8_decode_fast_s": 0.0, "gemm_only_prefill_s": 0.0}
    for name, (k, n) in SHAPES.items():
        layer = fp8.Fp8Linear.from_random(k, n, "cuda", g)
        fast = fp8.Fp8Linear(layer.weight, layer.scale, fast_accum=True)
        r = {}
        xp = torch.randn(4096, k, device="cuda").to(torch.bfloat16)
        t = timeit(lambda: layer(xp), 10); r["fp8_prefill_tflops"] = round(2 * 4096 * k * n / t / 1e12, 1); tot["fp8_prefill_s"] += t
        t = timeit(lambda: fast(xp), 10); r["fp8_fast_prefill_tflops"] = round(2 * 4096 * k * n / t / 1e12, 1)
        xq, sx = fp8.quantize_per_tensor(xp)
        t = timeit(lambda: fp8._scaled_mm(xq, layer.weight.t(), sx, layer.scale, torch.bfloat16, False), 10)
        r["gemm_only_tflops"] = round(2 * 4096 * k * n / t / 1e12, 1); tot["gemm_only_prefill_s"] += t
        wb = layer.weight.to(torch.bfloat16)
        t = timeit(lambda: xp @ wb.t(), 10); r["bf16_prefill_tflops"] = round(2 * 4096 * k * n / t / 1e12, 1); tot["bf16_prefill_s"] += t
        del wb, xp, xq
        xd = torch.randn(16, k, device="cuda").to(torch.bfloat16)
        t = timeit(lambda: layer(xd), 30); r["fp8_decode16_us"] = round(t * 1e6, 1); r["fp8_decode16_weight_GBps"] = round(k * n / t / 1e9, 1); tot["fp8_decode_s"] += t
        t = timeit(lambda: fast(xd), 30); r["fp8_fast_decode16_us"] = round(t * 1e6, 1); tot["fp8_decode_fast_s"] += t
        xd1 = xd[:1].contiguous()
        t = timeit(lambda: layer(xd1), 30); r["fp8_decode1_us"] = round(t * 1e6, 1)
        rows[name] = r
        del layer, fast
        torch.cuda.empty_cache()
    est = {
        "prefill_16k_tokens_linear_s (80 layers, fp8)": round(tot["fp8_prefill_s"] * 80 * 16000 / 4096, 2),
        "prefill_16k_tokens_linear_s (80 layers, bf16)": round(tot["bf16_prefill_s"] * 80 * 16000 / 4096, 2),
        "decode_step_linear_ms (80 layers, batch 16, fp8)": round(tot["fp8_decode_s"] * 80 * 1e3, 1),
        "decode_step_linear_ms (80 layers, batch 16, fp8 fast accum)": round(tot["fp8_decode_fast_s"] * 80 * 1e3, 1),
        "activation_quant_overhead_prefill_pct": round(100 * (tot["fp8_prefill_s"] / tot["gemm_only_prefill_s"] - 1), 1),
    }
    record("speed_70b_shapes", status="ok", rows=rows, estimates=est)

@step("from_random_one_layer")
def _():
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.time()
    layer = [fp8.Fp8Linear.from_random(k, n, "cuda", g) for (k, n) in SHAPES.values()]
    torch.cuda.synchronize(); dt = time.time() - t0
    wbytes = sum(l.weight_bytes for l in layer)
    peak = torch.cuda.max_memory_allocated() - base
    q = layer[0].weight.float()
    record("from_random_one_layer", status="ok" if peak < wbytes + 2 * 2**30 else "FAIL",
           seconds=round(dt, 3), est_80_layers_s=round(dt * 80, 1), weight_bytes=wbytes,
           peak_extra_bytes=peak - wbytes, qkv_amax=float(q.abs().max()),
           qkv_dequant_std_x_sqrt_in=round(float(layer[0].dequantized_weight().std()) * math.sqrt(8192), 4))
    del layer, q
    torch.cuda.empty_cache()

@step("kv_round_trip")
def _():
    # one 32-token block of the 70B preset: 80 layers x (K, V) x 8 heads x 128 dims
    kv = torch.randn(80, 2, 32, 8, 128, generator=g, device="cuda").to(torch.bfloat16)
    st = fp8.kv_to_storage(kv)
    back = fp8.kv_from_storage(st, torch.bfloat16)
    err = rel(back, kv)
    exact = torch.equal(fp8.kv_to_storage(back).view(torch.uint8), st.view(torch.uint8))
    host = torch.empty(st.shape, dtype=st.dtype, pin_memory=True)
    host.copy_(st, non_blocking=True); again = torch.empty_like(st); again.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    hostexact = torch.equal(again.view(torch.uint8), st.view(torch.uint8))
    edge = torch.tensor([1000.0, -1e30, float("inf"), float("-inf"), 0.0], device="cuda").to(torch.bfloat16)
    sat = fp8.kv_from_storage(fp8.kv_to_storage(edge), torch.float32).tolist()
    big = torch.randn(2**28, device="cuda").to(torch.bfloat16)  # 512 MiB bf16
    t_to = timeit(lambda: fp8.kv_to_storage(big), 5); sbig = fp8.kv_to_storage(big)
    t_from = timeit(lambda: fp8.kv_from_storage(sbig, torch.bfloat16), 5)
    ok = 0.01 < err < 0.035 and exact and hostexact and sat == [448.0, -448.0, 448.0, -448.0, 0.0]
    record("kv_round_trip", status="ok" if ok else "FAIL", block_bytes=st.numel() * st.element_size(),
           rel_err=round(err, 5), bf16_fp8_bf16_exact=exact, pinned_host_round_trip_exact=hostexact,
           saturation=sat, to_storage_GBps_in=round(big.numel() * 2 / t_to / 1e9, 1),
           from_storage_GBps_out=round(big.numel() * 2 / t_from / 1e9, 1))
    del big, sbig

@step("engine_attention_70b")
def _():
    # Not FP8 itself, but what the 70B sweep's run time and memory hinge on: the engine's
    # attention (engine/model.py) over one user's FP8 KV at the last round's length, as the engine
    # reads it (row gather from the uint8 pool view, e4m3 -> bf16, SDPA), per layer.
    from kvscope_agent.engine.model import attention
    ctx, d, H, KVH = 17280, 128, 64, 8
    f8 = fp8.fp8_dtype()
    pool = fp8.kv_to_storage(torch.randn(2 * ctx, KVH * d, device="cuda", dtype=torch.bfloat16)).view(torch.uint8)
    idx = torch.arange(ctx, device="cuda")
    def read():
        k = fp8.kv_from_storage(pool.index_select(0, idx).view(f8), torch.bfloat16).view(-1, KVH, d)
        v = fp8.kv_from_storage(pool.index_select(0, idx + ctx).view(f8), torch.bfloat16).view(-1, KVH, d)
        return k, v
    q1 = torch.randn(1, H, d, device="cuda", dtype=torch.bfloat16)
    t_read = timeit(read, 20)
    t_dec = timeit(lambda: attention(q1, *read(), ctx - 1), 20)
    r = {"ctx": ctx, "read_kv_per_layer_us": round(t_read * 1e6, 1), "decode_attn_per_layer_us": round(t_dec * 1e6, 1),
         "decode_attn_per_user_step_ms (80 layers)": round(t_dec * 80 * 1e3, 2)}
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for n in (512, 2048):
        qc = torch.randn(n, H, d, device="cuda", dtype=torch.bfloat16)
        try:
            t = timeit(lambda: attention(qc, *read(), ctx - n), 3)
            r[f"prefill_chunk{n}_attn_per_layer_ms"] = round(t * 1e3, 2)
            r[f"prefill_chunk{n}_peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base
        except RuntimeError as e:
            r[f"prefill_chunk{n}_error"] = str(e).splitlines()[0][:300]
        del qc
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    record("engine_attention_70b", status="ok" if not any(k.endswith("_error") for k in r) else "FAIL", **r)
    del pool

res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
res["fails"] = [k for k, v in res["checks"].items() if v.get("status") != "ok"]
out = os.environ.get("OUT", "/tmp/kvscope-smoke")
with open(os.path.join(out, "smoke-fp8.json"), "w") as f:
    json.dump(res, f, indent=1, default=str)
print("SMOKE", "FAIL " + ",".join(res["fails"]) if res["fails"] else "OK", flush=True)
EOF
echo "python exit: ${PIPESTATUS[0]}"

# 70B-shape accuracy again plus where a decode-sized FP8 call spends its time (host issue cost,
# quantisation, product, scale-pointer reuse, bf16 beside, profiler table): ~15 s
timeout 40 "$PY" bench/fp8-accuracy-70b.py "$OUT/fp8-accuracy.json" 2>&1 | tail -40

cd resources/agent
if "$PY" -c "import pytest" 2>/dev/null; then
  timeout 18 "$PY" -m pytest -q -rs tests/test_fp8.py 2>&1 | tail -15 | tee "$OUT/test_fp8.txt"
else
  timeout 18 "$PY" tests/test_fp8.py 2>&1 | tail -15 | tee "$OUT/test_fp8.txt"
fi

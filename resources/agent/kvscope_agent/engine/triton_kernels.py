"""The engine's Triton kernels: paged attention (`paged_attention.py` says what it computes and
why) and the decode step's fused small ops (`fused_ops.py`). A module of its own because Triton
reads a kernel's globals and TRITON_INTERPRET when the kernel is defined: the callers import it
at first use, and never where Triton is missing."""

import triton
import triton.language as tl

@triton.jit
def _program_rows(pid_bh, pid_m, lens_ptr, n_query, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
                  BLOCK_M: tl.constexpr):
    """What a program of (request × KV head pid_bh, query tile pid_m) works on: request b, KV
    head kvh, each row's query token t and head, which rows are real (not past the last whole
    group of the tile or the chunk), the position of query token 0 (`first`: queries are
    bottom-right aligned to the request's key count) and the tile's first token t0."""
    b = pid_bh // KV_HEADS
    kvh = pid_bh % KV_HEADS
    TOKENS: tl.constexpr = BLOCK_M // GROUP  # query tokens per tile, all heads of the group
    r = tl.arange(0, BLOCK_M)
    t0 = pid_m * TOKENS
    t = t0 + r // GROUP
    head = kvh * GROUP + r % GROUP
    first = tl.load(lens_ptr + b).to(tl.int32) - n_query
    return b, kvh, t, head, (r < TOKENS * GROUP) & (t < n_query), first, t0


@triton.jit
def _kv_tile(rows_ptr, table_ptr, keys, hi, layer_off, block_stride, head_d, d_ok,
             BLOCK_TOKENS: tl.constexpr, ROW_ELEMS: tl.constexpr, KV_FP8: tl.constexpr, EVEN_D: tl.constexpr,
             MASKED: tl.constexpr):
    """K and V of `keys` (one tile, [BLOCK_N, BLOCK_D]) read through the block table: element
    block × block_stride + layer_off + (key % BLOCK_TOKENS) × ROW_ELEMS + head_d of the pool, V
    BLOCK_TOKENS rows after K; 64-bit arithmetic once per key (the block's base), 32-bit inside a
    block. MASKED: keys from hi on read as 0. FP8 storage comes back as float8e4nv."""
    if MASKED:
        k_ok = keys < hi
        blk = tl.load(table_ptr + keys // BLOCK_TOKENS, mask=k_ok, other=0)
    else:
        blk = tl.load(table_ptr + keys // BLOCK_TOKENS)
    base = blk.to(tl.int64) * block_stride + layer_off
    k_ptrs = rows_ptr + base[:, None] + ((keys % BLOCK_TOKENS) * ROW_ELEMS)[:, None] + head_d[None, :]
    v_ptrs = k_ptrs + BLOCK_TOKENS * ROW_ELEMS  # V rows follow the block's K rows
    if MASKED:
        ld = k_ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptrs, mask=ld, other=0)
        v = tl.load(v_ptrs, mask=ld, other=0)
    elif EVEN_D:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    else:
        k = tl.load(k_ptrs, mask=d_ok[None, :], other=0)
        v = tl.load(v_ptrs, mask=d_ok[None, :], other=0)
    if KV_FP8:  # e4m3 bytes, unit scale (fp8.kv_from_storage)
        k = k.to(tl.float8e4nv, bitcast=True)
        v = v.to(tl.float8e4nv, bitcast=True)
    return k, v


@triton.jit
def _tile(acc, l_i, m_i, q, rows_ptr, table_ptr, start_n, hi, q_pos, head_off, layer_row0,
          block_rows, qk_scale, d, d_ok,
          BLOCK_N: tl.constexpr, BLOCK_TOKENS: tl.constexpr, ROW_ELEMS: tl.constexpr,
          KV_FP8: tl.constexpr, EVEN_D: tl.constexpr, MASKED: tl.constexpr, IEEE: tl.constexpr):
    keys = start_n + tl.arange(0, BLOCK_N)
    if MASKED:
        k_ok = keys < hi
    k, v = _kv_tile(rows_ptr, table_ptr, keys, hi, layer_row0 * ROW_ELEMS, block_rows * ROW_ELEMS, head_off + d,
                    d_ok, BLOCK_TOKENS, ROW_ELEMS, KV_FP8, EVEN_D, MASKED)
    k = k.to(q.dtype)
    v = v.to(q.dtype)
    if IEEE:  # fp32 compute: no TF32 (the reference keeps fp32 products)
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    s = s * qk_scale
    if MASKED:
        s = tl.where(k_ok[None, :] & (keys[None, :] <= q_pos[:, None]), s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    if IEEE:
        pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        pv = tl.dot(p.to(v.dtype), v)
    acc = acc * alpha[:, None] + pv
    return acc, l_i, m_new

@triton.jit
def paged_attention_fwd(q_ptr, rows_ptr, table_ptr, lens_ptr, out_ptr, mid_o_ptr, mid_lse_ptr,
         stride_qb, stride_qt, stride_qh, stride_ob, stride_ot, stride_oh, stride_tb,
         n_query, layer_row0, block_rows, qk_scale, num_splits,
         HEADS: tl.constexpr, GROUP: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
         BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
         BLOCK_TOKENS: tl.constexpr, KV_FP8: tl.constexpr, SPLIT: tl.constexpr, IEEE: tl.constexpr,
         F16: tl.constexpr = False):
    # F16 (paged_attention.DECODE_CONFIGS "f16", e4m3 K/V): the products in fp16, the queries and
    # probabilities rounded to fp16 (whose 10 mantissa bits hold a bf16 value exactly in range):
    # an e4m3 byte pair converts to fp16 in one instruction, to bf16 in a longer sequence.
    pid_bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_s = tl.program_id(2)
    TOKENS: tl.constexpr = BLOCK_M // GROUP
    b, kvh, t, head, row_ok, first, t0 = _program_rows(pid_bh, pid_m, lens_ptr, n_query, KV_HEADS, GROUP, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q_pos = first + t
    t_end = tl.minimum(t0 + TOKENS, n_query)
    tile_hi = first + t_end  # keys this tile needs: [0, tile_hi)
    free_end = first + t0 + 1  # keys below it are seen by every token of the tile
    per_split = tl.cdiv(tl.cdiv(tile_hi, num_splits), BLOCK_N) * BLOCK_N
    lo = pid_s * per_split
    hi = tl.minimum(lo + per_split, tile_hi)
    mid = tl.maximum(tl.minimum((free_end // BLOCK_N) * BLOCK_N, (hi // BLOCK_N) * BLOCK_N), lo)
    q = tl.load(q_ptr + b * stride_qb + t[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if F16:
        q = q.to(tl.float16)
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite: a fully masked tile gives p = 0, not NaN
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    table_b = table_ptr + b * stride_tb
    head_off = kvh * HEAD_DIM
    ROW_ELEMS: tl.constexpr = KV_HEADS * HEAD_DIM
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM
    for start_n in range(lo, mid, BLOCK_N):
        acc, l_i, m_i = _tile(acc, l_i, m_i, q, rows_ptr, table_b, start_n, hi, q_pos, head_off,
                              layer_row0, block_rows, qk_scale, d, d_ok,
                              BLOCK_N, BLOCK_TOKENS, ROW_ELEMS, KV_FP8, EVEN_D, False, IEEE)
    for start_n in range(mid, hi, BLOCK_N):
        acc, l_i, m_i = _tile(acc, l_i, m_i, q, rows_ptr, table_b, start_n, hi, q_pos, head_off,
                              layer_row0, block_rows, qk_scale, d, d_ok,
                              BLOCK_N, BLOCK_TOKENS, ROW_ELEMS, KV_FP8, EVEN_D, True, IEEE)
    seen = l_i > 0
    o = acc / tl.where(seen, l_i, 1.0)[:, None]
    if SPLIT:
        lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
        idx = ((b * n_query + t) * HEADS + head) * num_splits + pid_s
        tl.store(mid_lse_ptr + idx, lse, mask=row_ok)
        tl.store(mid_o_ptr + idx[:, None] * HEAD_DIM + d[None, :], o, mask=row_ok[:, None] & d_ok[None, :])
    else:
        tl.store(out_ptr + b * stride_ob + t[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])

@triton.jit
def paged_attention_combine(mid_o_ptr, mid_lse_ptr, out_ptr, stride_ob, stride_ot, stride_oh, n_query, num_splits,
             HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    pid = tl.program_id(0)  # (b * n_query + t) * HEADS + head
    head = pid % HEADS
    bt = pid // HEADS
    t = bt % n_query
    b = bt // n_query
    s = tl.arange(0, BLOCK_S)
    s_ok = s < num_splits
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    lse = tl.load(mid_lse_ptr + pid * num_splits + s, mask=s_ok, other=float("-inf"))
    w = tl.exp2(lse - tl.max(lse, 0))  # an empty split (lse -inf) weighs 0
    o = tl.load(mid_o_ptr + (pid * num_splits + s[:, None]) * HEAD_DIM + d[None, :],
                mask=s_ok[:, None] & d_ok[None, :], other=0.0)
    out = tl.sum(o * w[:, None], 0) / tl.sum(w, 0)
    tl.store(out_ptr + b * stride_ob + t * stride_ot + head * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d_ok)


# ---- prefill over a cached prefix (paged_attention.py: `prefill_config`, `_launch_prefill`) -----


@triton.jit
def _prefill_tile(acc, l_i, m_i, q, rows_ptr, table_ptr, start_n, hi, q_pos, layer_off, block_stride, head_d,
                  qk_scale, d_ok,
                  BLOCK_N: tl.constexpr, BLOCK_TOKENS: tl.constexpr, ROW_ELEMS: tl.constexpr, KV_FP8: tl.constexpr,
                  EVEN_D: tl.constexpr, MASKED: tl.constexpr, IEEE: tl.constexpr):
    """One K/V tile (keys start_n ..) for every query row of the program: the flash-attention
    update with the softmax scale folded into one multiply-add before exp2, and P·V accumulated
    into acc by the product itself (no second accumulator)."""
    keys = start_n + tl.arange(0, BLOCK_N)
    if MASKED:
        k_ok = keys < hi
    k, v = _kv_tile(rows_ptr, table_ptr, keys, hi, layer_off, block_stride, head_d, d_ok,
                    BLOCK_TOKENS, ROW_ELEMS, KV_FP8, EVEN_D, MASKED)
    k = k.to(q.dtype)  # q's dtype is the products' (fp16 for FP8 KV: see paged_prefill_fwd)
    v = v.to(q.dtype)
    if IEEE:  # fp32 compute: no TF32 (the reference keeps fp32 products)
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    if MASKED:
        s = tl.where(k_ok[None, :] & (keys[None, :] <= q_pos[:, None]), s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    p = tl.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if IEEE:
        acc = tl.dot(p.to(q.dtype), v, acc, input_precision="ieee")
    else:
        acc = tl.dot(p.to(q.dtype), v, acc)
    return acc, l_i, m_new


@triton.jit
def paged_prefill_fwd(q_ptr, rows_ptr, table_ptr, lens_ptr, out_ptr,
                      stride_qb, stride_qt, stride_qh, stride_ob, stride_ot, stride_oh, stride_tb,
                      n_query, layer_off, block_stride, qk_scale,
                      GROUP: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_TOKENS: tl.constexpr,
                      KV_FP8: tl.constexpr, F16: tl.constexpr, IEEE: tl.constexpr):
    """A prefill chunk over a cached prefix, one program per (request, KV head, query tile), no
    key splits: what `paged_attention_fwd` computes with one split, as a kernel of its own so that
    its tiles and warps are tuned for long chunks (`paged_attention.PREFILL_CONFIGS`) apart from
    decode's. Query tiles are taken heaviest (last) first, so the short ones fill the tail.

    F16 (PREFILL_CONFIGS "f16", as the general kernel's): the products in fp16, for FP8 KV: e4m3 converts to fp16 in
    one instruction per pair of values (to bf16 it goes through fp32), and every e4m3 and bf16
    value of a query inside ±65504 is an fp16 value (q is clamped there), so nothing is lost; P
    (in [0, 1]) keeps 3 more mantissa bits than in bf16."""
    pid_bh = tl.program_id(0)
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)
    TOKENS: tl.constexpr = BLOCK_M // GROUP
    b, kvh, t, head, row_ok, first, t0 = _program_rows(pid_bh, pid_m, lens_ptr, n_query, KV_HEADS, GROUP, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q_pos = first + t
    hi = first + tl.minimum(t0 + TOKENS, n_query)  # keys this tile needs: [0, hi)
    mid = ((first + t0 + 1) // BLOCK_N) * BLOCK_N  # keys below it are seen by every token of the tile
    q = tl.load(q_ptr + b * stride_qb + t[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if F16:
        q = tl.minimum(tl.maximum(q.to(tl.float32), -65504.0), 65504.0).to(tl.float16)
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite: a fully masked row gives p = 0, not NaN
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    table_b = table_ptr + b * stride_tb
    head_d = kvh * HEAD_DIM + d
    ROW_ELEMS: tl.constexpr = KV_HEADS * HEAD_DIM
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM
    for start_n in range(0, mid, BLOCK_N):
        acc, l_i, m_i = _prefill_tile(acc, l_i, m_i, q, rows_ptr, table_b, start_n, hi, q_pos, layer_off,
                                      block_stride, head_d, qk_scale, d_ok,
                                      BLOCK_N, BLOCK_TOKENS, ROW_ELEMS, KV_FP8, EVEN_D, False, IEEE)
    for start_n in range(mid, hi, BLOCK_N):
        acc, l_i, m_i = _prefill_tile(acc, l_i, m_i, q, rows_ptr, table_b, start_n, hi, q_pos, layer_off,
                                      block_stride, head_d, qk_scale, d_ok,
                                      BLOCK_N, BLOCK_TOKENS, ROW_ELEMS, KV_FP8, EVEN_D, True, IEEE)
    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + b * stride_ob + t[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :],
             o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


# ---- fused small ops (fused_ops.py) --------------------------------------------------------------


@triton.jit
def _e4m3_bits(y):
    """fp32 -> float8_e4m3fn bytes as `fp8.kv_to_storage` makes them: saturated to ±448, rounded
    to nearest even, subnormals kept. The rounding is done in fp32 first ((y + C) - C with C a
    power of two times 1.5 whose ulp is e4m3's at y), so the cast itself is exact: Triton 3.6's
    interpreter rounds a cast to fp8 half up without carrying into the exponent (7.9 -> 4)."""
    bits = y.to(tl.int32, bitcast=True)
    a = tl.minimum(tl.abs(y), 448.0)
    e = ((a.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127  # binade of |y|
    k = tl.maximum(e, -6) - 3  # log2 of e4m3's spacing there (subnormals below 2^-6: 2^-9)
    c = (((k + 150) << 23) | (1 << 22)).to(tl.float32, bitcast=True)  # 1.5 * 2^(23 + k)
    r = (a + c) - c
    # y's sign bit (so that -0.0 and negatives rounding to zero give -0, as torch's cast; a
    # negation would not: Triton's -x is 0 - x)
    r = (r.to(tl.int32, bitcast=True) | (bits & -2147483648)).to(tl.float32, bitcast=True)
    return r.to(tl.float8e4nv).to(tl.uint8, bitcast=True)


@triton.jit
def rope_write_kv(qkv_ptr, cos_ptr, sin_ptr, index_ptr, q_ptr, rows_ptr,
                  stride_qkv, stride_cos, stride_qt, stride_qh,
                  HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_H: tl.constexpr, KV_FP8: tl.constexpr):
    """One token's heads of the fused QKV projection: RoPE (rotate-half) on its query and key heads,
    the query to q, the key and value to the pool rows index[2t] and index[2t + 1]."""
    t = tl.program_id(0)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # over heads + 2 × kv_heads
    d = tl.arange(0, BLOCK_D)
    HALF: tl.constexpr = HEAD_DIM // 2
    d_ok = d < HEAD_DIM
    ok = (h < HEADS + 2 * KV_HEADS)[:, None] & d_ok[None, :]
    base = qkv_ptr + t * stride_qkv + h[:, None] * HEAD_DIM
    x = tl.load(base + d[None, :], mask=ok, other=0.0).to(tl.float32)
    partner = tl.where(d < HALF, d + HALF, d - HALF)
    xp = tl.load(base + partner[None, :], mask=ok, other=0.0).to(tl.float32)
    rot = tl.where((d < HALF)[None, :], -xp, xp)
    c = tl.load(cos_ptr + t * stride_cos + d, mask=d_ok, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + t * stride_cos + d, mask=d_ok, other=0.0).to(tl.float32)
    is_v = h >= HEADS + KV_HEADS
    y = tl.where(is_v[:, None], x, x * c[None, :] + rot * s[None, :])
    is_q = h < HEADS
    tl.store(q_ptr + t * stride_qt + h[:, None] * stride_qh + d[None, :], y.to(q_ptr.dtype.element_ty),
             mask=ok & is_q[:, None])
    k_row = tl.load(index_ptr + 2 * t).to(tl.int64)
    v_row = tl.load(index_ptr + 2 * t + 1).to(tl.int64)
    row = tl.where(is_v, v_row, k_row)
    kvh = tl.where(is_v, h - HEADS - KV_HEADS, h - HEADS)
    dst = rows_ptr + row[:, None] * (KV_HEADS * HEAD_DIM) + kvh[:, None] * HEAD_DIM + d[None, :]
    if KV_FP8:
        val = _e4m3_bits(y)
    else:
        val = y.to(rows_ptr.dtype.element_ty)
    tl.store(dst, val, mask=ok & (~is_q)[:, None])


@triton.jit
def add_rms_norm(x_ptr, y_ptr, w_ptr, x_out_ptr, h_ptr, stride_x, stride_y, stride_xo, stride_h, n, eps,
                 HAS_Y: tl.constexpr, BLOCK: tl.constexpr):
    """One row: x + y (rounded to x's dtype, the new residual) and its RMS norm times w."""
    r = tl.program_id(0)
    c = tl.arange(0, BLOCK)
    m = c < n
    x = tl.load(x_ptr + r * stride_x + c, mask=m, other=0.0).to(tl.float32)
    if HAS_Y:
        x = x + tl.load(y_ptr + r * stride_y + c, mask=m, other=0.0).to(tl.float32)
        xr = x.to(x_out_ptr.dtype.element_ty)
        tl.store(x_out_ptr + r * stride_xo + c, xr, mask=m)
        x = xr.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(x * x, 0) / n + eps)
    w = tl.load(w_ptr + c, mask=m, other=0.0).to(tl.float32)
    tl.store(h_ptr + r * stride_h + c, (x * inv * w).to(h_ptr.dtype.element_ty), mask=m)


@triton.jit
def silu_mul(gu_ptr, out_ptr, stride_gu, stride_out, n, BLOCK: tl.constexpr):
    """silu(gate) × up of one row block: gate = gu[:, :n], up = gu[:, n:]."""
    r = tl.program_id(0)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = c < n
    g = tl.load(gu_ptr + r * stride_gu + c, mask=m, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + r * stride_gu + n + c, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + r * stride_out + c, (g / (1.0 + tl.exp(-g)) * u).to(out_ptr.dtype.element_ty), mask=m)


# ---- decode-size FP8 weight-only products (fp8_gemv.py) ------------------------------------------


@triton.jit
def fp8_gemv(x_ptr, w_ptr, scale_ptr, out_ptr, part_ptr, M, N, K, stride_xm, stride_wn, stride_om, k_per_split,
             ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
             PER_CHANNEL: tl.constexpr, SPLIT: tl.constexpr, DOT: tl.constexpr, EVEN_K: tl.constexpr,
             IEEE: tl.constexpr):
    """out[m, n] = scale[n] × Σ_k x[m, k] · w[n, k] for a tile of BLOCK_N output columns and one
    split of K: x in its own dtype (no activation quantisation), w e4m3 bytes (N, K) row-major,
    converted in registers, fp32 accumulation. DOT: the tile as one tensor-core product
    w (BLOCK_N × BLOCK_K, in x's dtype) × xᵀ (BLOCK_K × BLOCK_M, rows past M zero); otherwise
    ROWS (= M) multiply-add reductions over K. SPLIT: the scaled fp32 partial sum goes to
    part[pid_k, m, n] for fp8_gemv_reduce."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    n_ld = tl.minimum(n, N - 1)  # rows past N read the last row (never stored): no load mask on N
    kk = tl.arange(0, BLOCK_K)
    m = tl.arange(0, BLOCK_M)
    m_ok = m < M
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    w_ptrs = w_ptr + n_ld.to(tl.int64)[:, None] * stride_wn + kk[None, :]
    acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + kk
        k_ok = k < k_hi
        if EVEN_K:
            w = tl.load(w_ptrs + k0)
        else:
            w = tl.load(w_ptrs + k0, mask=k_ok[None, :], other=0)
        w = w.to(tl.float8e4nv, bitcast=True)
        if DOT:
            x = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            if IEEE:
                acc += tl.dot(w.to(x.dtype), tl.trans(x), input_precision="ieee")
            else:
                acc += tl.dot(w.to(x.dtype), tl.trans(x))
        else:
            wf = w.to(tl.float32)
            for i in tl.static_range(ROWS):
                if EVEN_K:
                    xi = tl.load(x_ptr + i * stride_xm + k)
                else:
                    xi = tl.load(x_ptr + i * stride_xm + k, mask=k_ok, other=0.0)
                part = tl.sum(wf * xi.to(tl.float32)[None, :], 1)
                acc += tl.where((m == i)[None, :], part[:, None], 0.0)
    if PER_CHANNEL:
        acc = acc * tl.load(scale_ptr + n_ld)[:, None]
    else:
        acc = acc * tl.load(scale_ptr)
    ok = n_ok[:, None] & m_ok[None, :]
    if SPLIT:
        tl.store(part_ptr + (pid_k * M + m[None, :]) * N + n[:, None], acc, mask=ok)
    else:
        tl.store(out_ptr + m[None, :] * stride_om + n[:, None], acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def fp8_gemv_reduce(part_ptr, out_ptr, M, N, splits, stride_om, BLOCK: tl.constexpr, BLOCK_S: tl.constexpr):
    """out[m, n] = Σ_s part[s, m, n] (the split-K partial sums of fp8_gemv), in out's dtype."""
    row = tl.program_id(0)
    n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    s = tl.arange(0, BLOCK_S)
    ok = (s < splits)[:, None] & (n < N)[None, :]
    p = tl.load(part_ptr + (s[:, None] * M + row) * N + n[None, :], mask=ok, other=0.0)
    tl.store(out_ptr + row * stride_om + n, tl.sum(p, 0).to(out_ptr.dtype.element_ty), mask=n < N)



@triton.jit
def _round_bf16(y):
    """fp32 -> the nearest bf16 value (ties to even), still as fp32: the rounding a cast to bf16
    does on the GPU, in integer steps because Triton 3.6's interpreter truncates that cast."""
    b = y.to(tl.int32, bitcast=True)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
    return b.to(tl.float32, bitcast=True)


@triton.jit
def quantize_e4m3(x_ptr, scale_ptr, q_ptr, scale_out_ptr, n, ROUND_BF16: tl.constexpr, BLOCK: tl.constexpr):
    """`fp8.quantize_per_tensor`'s division and cast in one pass, given its scale
    (`fp8.per_tensor_scale`, 0-dim in x's dtype): q = e4m3(x / scale), the quotient correctly
    rounded and (bf16 x) rounded to bf16 first, as torch's bf16 division is; the scale widened to
    fp32 into scale_out_ptr."""
    pid = tl.program_id(0)
    s = tl.load(scale_ptr).to(tl.float32)
    if pid == 0:
        tl.store(scale_out_ptr, s)
    off = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = off < n
    x = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
    y = tl.math.div_rn(x, tl.zeros_like(x) + s)
    if ROUND_BF16:
        y = _round_bf16(y)
    tl.store(q_ptr + off, _e4m3_bits(y), mask=m)

"""The built-in engine on the CPU (fp32, tiny preset): paged attention, block copies, reuse.

Runs on Debian's PyTorch 1.13 (no scaled_dot_product_attention: the explicit-softmax fallback)
and on current PyTorch (the SDPA path). Tolerance for paged vs contiguous: 1e-4 absolute on
logits of magnitude ~1-10 in fp32 — the two orders of summation differ only by rounding
(~1e-6 relative); a wrong block, position or mask is off by O(1).
"""

from __future__ import annotations

import math
import os
import random
import sys

import torch

try:
    import pytest
except ImportError:  # the GPU host's Python may lack pytest: `python3 tests/test_engine.py`
    pytest = None  # type: ignore[assignment]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvscope_agent.clock import RunClock  # noqa: E402
from kvscope_agent.engine.kv_cache import PagedKVCache
from kvscope_agent.engine.model import LlamaModel, Piece, rms_norm, rope
from kvscope_agent.engine.scheduler import block_id
from kvscope_agent.presets import PRESETS

TINY = PRESETS["tiny"]
LOGIT_ATOL = 1e-4
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def devices(fn):
    """Each test runs on the CPU and, where one is present, on a CUDA device (fp32 both, so
    the same tolerance holds: PyTorch keeps TF32 off for fp32 matmuls by default)."""
    if pytest is None:
        return fn
    return pytest.mark.parametrize("device", DEVICES)(fn)


def make(device: str = "cpu", gpu_blocks: int = 64, host_blocks: int = 16, block_tokens: int = 8):
    torch.manual_seed(0)
    dev = torch.device(device)
    model = LlamaModel(TINY, dev, torch.float32, seed=1)
    clock = RunClock()
    cache = PagedKVCache(TINY, dev, torch.float32, "native", block_tokens, gpu_blocks, host_blocks, clock.now)
    return model, cache


def contiguous_logits(model: LlamaModel, tokens: list[int]) -> torch.Tensor:
    """Reference: the whole sequence at once, K/V kept contiguous, explicit causal softmax."""
    cfg = model.cfg
    hd = cfg.head_dim
    n = len(tokens)
    dev = model.device
    x = model.embed[torch.tensor(tokens, device=dev)]
    pos = torch.arange(n, device=dev)
    ang = pos.float()[:, None] * model.inv_freq[None, :]
    ang = torch.cat((ang, ang), -1)[:, None, :]
    cos, sin = ang.cos(), ang.sin()
    mask = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
    group = cfg.heads // cfg.kv_heads
    for layer in model.layers:
        h = rms_norm(x, layer.norm1, cfg.rms_eps)
        qkv = layer.qkv(h)
        q = rope(qkv[:, : cfg.heads * hd].reshape(n, cfg.heads, hd), cos, sin)
        k = rope(qkv[:, cfg.heads * hd : (cfg.heads + cfg.kv_heads) * hd].reshape(n, cfg.kv_heads, hd), cos, sin)
        v = qkv[:, (cfg.heads + cfg.kv_heads) * hd :].reshape(n, cfg.kv_heads, hd)
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        s = s.masked_fill(~mask, float("-inf"))
        o = torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v).reshape(n, -1)
        x = x + layer.o(o)
        h = rms_norm(x, layer.norm2, cfg.rms_eps)
        gu = layer.gate_up(h)
        x = x + layer.down(torch.nn.functional.silu(gu[:, : cfg.ffn]) * gu[:, cfg.ffn :])
    return model.lm_head(rms_norm(x, model.norm, cfg.rms_eps)).float()


@devices
def test_paged_attention_equals_contiguous_attention(device):
    model, cache = make(device, gpu_blocks=64, block_tokens=8)
    rng = random.Random(3)
    tokens = [rng.randrange(TINY.vocab) for _ in range(77)]
    ref = contiguous_logits(model, tokens)
    # Two requests at once with scattered, interleaved block tables (nothing adjacent), prefill in
    # uneven chunks (not block-aligned), then decode steps batched with the other's prefill.
    slots = list(range(64))
    rng.shuffle(slots)
    table_a, table_b = slots[:11], slots[11:22]
    rows_a, rows_b = cache.request_rows(table_a), cache.request_rows(table_b)
    other = [rng.randrange(TINY.vocab) for _ in range(40)]
    got = []
    a_chunks = [(0, 13), (13, 50), (50, 75)]
    for i, (s, e) in enumerate(a_chunks):
        pieces = [Piece(tokens[s:e], None, s, e - s, rows_a, True)]
        if i < 2:
            bs, be = i * 20, (i + 1) * 20
            pieces.append(Piece(other[bs:be], None, bs, 20, rows_b, True))
        out = model.forward_step(pieces, cache, return_logits=True)
        got.append(out[0])
    for p in (75, 76):  # decode: one token each, attending to everything before
        out = model.forward_step([Piece(None, torch.tensor([tokens[p]], device=model.device), p, 1, rows_a, True)], cache, return_logits=True)
        got.append(out[0])
    want = [ref[12], ref[49], ref[74], ref[75], ref[76]]
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=LOGIT_ATOL, rtol=0), (g - w).abs().max()
    # And the check can fail: a decode step that reads a wrong block is far off.
    wrong_rows = cache.request_rows(list(reversed(table_a)))
    bad = model.forward_step([Piece(None, torch.tensor([tokens[76]], device=model.device), 76, 1, wrong_rows, True)], cache, return_logits=True)
    # (not allclose rather than a difference above a bound: an unwritten slot may hold NaN)
    assert not torch.allclose(bad[0], ref[76], atol=100 * LOGIT_ATOL, rtol=0)


@devices
def test_offloaded_and_onboarded_block_is_bit_identical(device):
    _, cache = make(device, gpu_blocks=16, host_blocks=8, block_tokens=8)
    g = torch.Generator().manual_seed(5)
    cache.pool.copy_(torch.randn(cache.pool.shape, generator=g).to(cache.pool.device))
    if cache.cuda:
        assert cache.host.view(0, 1).is_pinned()
    before = cache.pool.clone()
    # Offload a run of adjacent blocks and a lone one; onboard into other, scattered slots.
    cache.copy_batch(offloads=[(3, 0), (4, 1), (5, 2), (9, 5)], onboards=[])
    cache.pool[3:6].zero_()
    cache.pool[9].zero_()
    cache.copy_batch(offloads=[], onboards=[(0, 12), (1, 7), (2, 3), (5, 14)])
    cache.synchronize()
    for src, dst in ((3, 12), (4, 7), (5, 3), (9, 14)):
        assert torch.equal(cache.pool[dst], before[src])
        assert cache.pool[dst].view(-1).view(torch.int32).equal(before[src].view(-1).view(torch.int32))
    recs = cache.completed_copies(wait=True)
    assert [(r.dir, r.blocks, r.runs, r.bytes) for r in recs] == [
        ("d2h", 4, 2, 4 * cache.block_bytes),
        ("h2d", 4, 4, 4 * cache.block_bytes),
    ]
    # One block is one contiguous chunk of block_bytes in the pool.
    assert cache.pool[0].numel() * cache.pool.element_size() == cache.block_bytes
    assert cache.pool[1].data_ptr() - cache.pool[0].data_ptr() == cache.block_bytes


@devices
def test_overlapped_copy_batch_equals_the_sequential_one(device):
    """--copy-overlap on: offloads in chunks on the copy stream, onboards on their own stream
    waiting for the chunk that frees each slot. Same bytes as the sequential batch, read on the
    compute stream with no synchronize (compute must wait for both streams); on CUDA the
    records name the two streams. Blocks of 256 tokens (128 KiB) on CUDA, so the offload of
    256 blocks lasts long enough for an onboard that did not wait to overtake it."""
    cuda = device == "cuda"
    bt, n, victims = (256, 512, 256) if cuda else (8, 64, 32)
    caches = []
    for overlap in (False, True):
        torch.manual_seed(0)
        dev = torch.device(device)
        cache = PagedKVCache(TINY, dev, torch.float32, "native", bt, n, 2 * victims + 8, RunClock().now,
                             copy_overlap=overlap)
        g = torch.Generator().manual_seed(9)
        cache.pool.copy_(torch.randn(cache.pool.shape, generator=g).to(dev))
        cache.host.ensure(2 * victims + 8)
        for c in cache.host.chunks:
            c.copy_(torch.randn(c.shape, generator=g))
        cache.overlap_chunk_blocks = 16
        caches.append(cache)
    rng = random.Random(4)
    slots = list(range(n))
    rng.shuffle(slots)
    offloads = [(g, h) for h, g in enumerate(slots[:victims])]  # victim slots -> host 0..victims-1
    # The request's host blocks (host victims.. on) into victim slots and two free slots.
    targets = slots[:victims] + slots[victims : victims + 2]
    onboards = [(victims + i, g) for i, g in enumerate(reversed(targets))]
    for cache in caches:
        cache.copy_batch(offloads, onboards)
    seq, ovl = caches
    assert ovl.overlap_stats["batches"] == 1 and ovl.overlap_stats["onboard_waits"] >= victims // 16 - 1
    assert torch.equal(seq.pool, ovl.pool)  # on the compute stream, no synchronize before
    seq.synchronize()
    ovl.synchronize()
    assert torch.equal(torch.cat(seq.host.chunks), torch.cat(ovl.host.chunks))
    recs = ovl.completed_copies(wait=True)
    assert recs[0].dir == "d2h" and recs[0].blocks == victims and all(r.dir == "h2d" for r in recs[1:])
    assert sum(r.blocks for r in recs[1:]) == len(onboards)
    assert all(r.start_ns <= r.end_ns for r in recs)
    if cuda:
        assert recs[0].stream == int(ovl.copy_stream.cuda_stream)
        assert {r.stream for r in recs[1:]} == {int(ovl.onboard_stream.cuda_stream)} != {recs[0].stream}
        # The d2h start is recorded before the onboard stream's first wait: no onboard starts earlier.
        assert all(r.start_ns >= recs[0].start_ns for r in recs[1:])
    else:
        assert {r.stream for r in recs} == {0}


def test_block_ids_are_content_addressed():
    a = block_id(None, [1, 2, 3, 4])
    assert a == block_id(None, [1, 2, 3, 4])
    assert a != block_id(None, [1, 2, 3, 5])
    assert block_id(a, [5, 6]) != block_id(None, [5, 6])  # same tokens, different prefix
    assert 0 <= a < 2**53


@devices
def test_fp8_kv_pool_stores_e4m3_and_copies_bit_identical(device):
    if not hasattr(torch, "float8_e4m3fn"):
        if pytest is None:
            return
        pytest.skip(f"torch {torch.__version__} has no float8 dtype (the fp8 KV pool needs one)")
    from kvscope_agent.engine import fp8

    dev = torch.device(device)
    clock = RunClock()
    cache = PagedKVCache(TINY, dev, torch.float32, "fp8", 8, 8, 4, clock.now)
    assert cache.pool.dtype == torch.float8_e4m3fn
    assert cache.block_bytes == 8 * TINY.layers * 2 * TINY.kv_heads * TINY.head_dim  # one byte a value
    rows = cache.request_rows([5, 2])
    g = torch.Generator().manual_seed(1)
    k = torch.randn(12, TINY.kv_heads, TINY.head_dim, generator=g).to(dev)
    v = torch.randn(12, TINY.kv_heads, TINY.head_dim, generator=g).to(dev)
    cache.write(1, rows, 0, k, v)
    kr, vr = cache.read(1, rows, 12, torch.float32)
    assert torch.equal(kr, fp8.kv_from_storage(fp8.kv_to_storage(k), torch.float32))
    assert torch.equal(vr, fp8.kv_from_storage(fp8.kv_to_storage(v), torch.float32))
    before = cache.pool[5].view(torch.uint8).clone()
    cache.copy_batch(offloads=[(5, 3)], onboards=[])
    cache.copy_batch(offloads=[], onboards=[(3, 7)])
    cache.synchronize()
    assert torch.equal(cache.pool[7].view(torch.uint8), before)


def test_preset_sizes_match_the_model_built_and_config_json_loads(tmp_path=None):
    import json as _json
    import tempfile

    from kvscope_agent.presets import describe, load_model_config

    model = LlamaModel(TINY, torch.device("cpu"), torch.float32, seed=0)
    assert sum(p.numel() for p in model.parameters()) == TINY.param_count()
    d = describe(PRESETS["llama-3.1-8b"])
    assert d["weight_bytes_gpu"] == 16060522496  # what the H100 smoke run's 8B model allocated
    folder = tempfile.mkdtemp() if tmp_path is None else str(tmp_path)
    path = os.path.join(folder, "config.json")
    with open(path, "w") as f:
        _json.dump({"num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "intermediate_size": 512, "vocab_size": 1024, "max_position_embeddings": 8192,
                    "quantization_config": {"quant_method": "fp8"}}, f)
    cfg = load_model_config(path)
    assert (cfg.layers, cfg.head_dim, cfg.kv_heads, cfg.weight_format, cfg.kv_dtype) == (2, 64, 2, "fp8", "fp8")


@devices
def test_fixed_shape_decode_equals_the_eager_step(device):
    """engine/decode_graph.py: the step CUDA graphs replay (rows gathered over a padded span,
    positions past each request masked to the pool's zero block) gives the eager step's logits
    and writes the same K/V, for a batch of requests at different positions and spans."""
    from kvscope_agent.engine.decode_graph import DecodeGraphs

    model, cache = make(device, gpu_blocks=64, block_tokens=8)
    rng = random.Random(11)
    slots = list(range(64))
    rng.shuffle(slots)
    tables = [slots[:7], slots[7:20], slots[20:26]]  # 56, 104 and 48 reserved positions
    lengths = [37, 90, 5]  # prompt tokens already computed per request
    rows = [cache.request_rows(t) for t in tables]
    tokens = [[rng.randrange(TINY.vocab) for _ in range(n + 3)] for n in lengths]
    for r, toks, n in zip(rows, tokens, lengths):
        model.forward_step([Piece(toks[:n], None, 0, n, r, False)], cache)
    # Garbage in every slot no request has written, as a pool holds after other runs: the
    # masked positions must not read it (NaN would poison the softmax's weighted sum).
    written = torch.zeros(cache.num_blocks, dtype=torch.bool)
    for t, n in zip(tables, lengths):
        for b in range(-(-(n + 3) // 8)):
            written[t[b]] = True
    for slot in range(cache.num_blocks):
        if not written[slot]:
            cache.pool[slot].fill_(float("nan"))
    runner = DecodeGraphs(model, cache, use_graphs=False, bucket_tokens=32)
    assert not runner.would_capture(len(rows), max(lengths))  # no graphs: never a capture
    for step in range(3):
        pieces = [Piece(None, torch.tensor([toks[n + step]], device=model.device), n + step, 1, r, True)
                  for r, toks, n in zip(rows, tokens, lengths)]
        before = cache.pool.clone()
        want = model.forward_step(pieces, cache, return_logits=True)
        after_eager = cache.pool.clone()
        cache.pool.copy_(before)
        got = runner.logits(pieces)
        assert torch.isfinite(got).all()
        assert torch.allclose(got, want, atol=LOGIT_ATOL, rtol=0), (got - want).abs().max()
        # The same K/V written at the same rows (layers past the first see the attention output,
        # so they differ by rounding, ~6e-7 here; a wrong row is off by O(1) or leaves NaN).
        assert torch.allclose(cache.pool, after_eager, atol=1e-5, rtol=0, equal_nan=True)
        cache.pool.copy_(after_eager)
    # The runner's step() (what forward_step calls) picks the same greedy tokens.
    pieces = [Piece(None, torch.tensor([toks[n + 3 - 1]], device=model.device), n + 2, 1, r, True)
              for r, toks, n in zip(rows, tokens, lengths)]
    want_tok = torch.argmax(model.forward_step(pieces, cache, return_logits=True), dim=-1)
    model.decode_runner = runner
    try:
        got_tok = model.forward_step(pieces, cache)
    finally:
        model.decode_runner = None
    assert torch.equal(got_tok, want_tok)
    assert runner.stats["eager_steps"] == 1 and runner.stats["graphs"] == 0
    runner.reset_stats()  # the next run of a sweep counts from zero
    assert runner.describe() == {"cuda_graphs": False, "off_reason": "off", "bucket_tokens": 32,
                                 "attention": "paged" if model.paged_kernel else "gather", "graphs": 0,
                                 "capture_ns": 0, "replays": 0, "eager_steps": 0, "inputs_carried": 0,
                                 "graphs_held": 0}
    # And the check can fail: requests whose rows point at other requests' blocks are far off
    # (or NaN, where those blocks were never written).
    good = runner.logits(pieces)
    wrong = [Piece(p.token_ids, p.token_dev, p.start, 1, rows[(i + 1) % 3], True) for i, p in enumerate(pieces)]
    bad = runner.logits(wrong)
    assert not torch.allclose(bad, good, atol=100 * LOGIT_ATOL, rtol=0)


@devices
def test_decode_steps_carry_their_inputs_and_keep_the_eager_tokens(device):
    """engine/decode_graph.py `_carries`: a decode step whose requests are the last step's, in
    the same order, each fed that step's token, reuses the ids and positions the last step left
    in its entry (nothing uploaded); any change (a batch that shrinks, a token from an eager
    mixed step) refills them. Greedy tokens equal the eager step's throughout."""
    from kvscope_agent.engine.decode_graph import DecodeGraphs

    model, cache = make(device, gpu_blocks=64, block_tokens=8)
    rng = random.Random(13)
    tables = [list(range(0, 12)), list(range(20, 32)), list(range(40, 52))]
    rows = [cache.request_rows(t) for t in tables]
    prompts = [[rng.randrange(TINY.vocab) for _ in range(n)] for n in (27, 9, 14)]
    results = []
    for runner in (None, DecodeGraphs(model, cache, use_graphs=False, bucket_tokens=16)):
        model.decode_runner = runner
        toks: list[list[int]] = [[], [], []]
        last = [model.forward_step([Piece(p, None, 0, len(p), r, True)], cache) for r, p in zip(rows[:2], prompts[:2])]
        pos = [len(prompts[0]), len(prompts[1])]
        for step in range(20):
            if step == 10:
                # A mixed step (eager): a third request's prefill beside both decode tokens.
                pieces = [Piece(None, last[i], pos[i], 1, rows[i], True) for i in range(2)]
                pieces.append(Piece(prompts[2], None, 0, len(prompts[2]), rows[2], True))
                nxt = model.forward_step(pieces, cache)
                for i in range(2):
                    last[i] = nxt[i : i + 1]
                    toks[i].append(int(nxt[i]))
                    pos[i] += 1
                continue
            if step == 7:
                # A token from elsewhere at the expected position (not the last step's output):
                # the runner must take it, not what its entry holds.
                last[1] = torch.tensor([(int(last[1]) + 1) % TINY.vocab], device=model.device)
            active = [0, 1] if step < 15 else [0]  # then the batch shrinks
            pieces = [Piece(None, last[i], pos[i], 1, rows[i], True) for i in active]
            nxt = model.forward_step(pieces, cache)
            for j, i in enumerate(active):
                last[i] = nxt[j : j + 1]
                toks[i].append(int(nxt[j]))
                pos[i] += 1
        results.append(toks)
        if runner is not None:
            # 14 of 19 runner steps carry. Refilled: step 0 (tokens from the prefill), step 5
            # (request 0 reaches position 32: the span grows from 32 to 48, another entry), step 7
            # (a token from elsewhere), step 11 (tokens from the mixed step), step 15 (the batch
            # shrinks: another entry).
            assert runner.stats["eager_steps"] == 19 and runner.stats["inputs_carried"] == 14, runner.stats
    model.decode_runner = None
    assert results[1] == results[0]
    assert len(results[0][0]) == 20 and len(results[0][1]) == 15


def test_cuda_graph_decode_replays_the_eager_tokens():
    """On a CUDA device: decode steps captured as CUDA graphs and replayed (two batch sizes,
    spans crossing a bucket) pick the same greedy tokens as the eager step, in fp32."""
    if not torch.cuda.is_available():
        if pytest is not None:
            pytest.skip("needs a CUDA device (CUDA graphs); the fixed-shape step itself is tested on the CPU above")
        return
    from kvscope_agent.engine.decode_graph import DecodeGraphs

    model, cache = make("cuda", gpu_blocks=64, block_tokens=8)
    rng = random.Random(12)
    tables = [list(range(0, 12)), list(range(20, 32))]
    rows = [cache.request_rows(t) for t in tables]
    prompts = [[rng.randrange(TINY.vocab) for _ in range(n)] for n in (27, 9)]
    toks_eager: list[list[int]] = [[], []]
    toks_graph: list[list[int]] = [[], []]
    for runner, out in ((None, toks_eager), (DecodeGraphs(model, cache, bucket_tokens=16), toks_graph)):
        model.decode_runner = runner
        last = []
        for r, p in zip(rows, prompts):
            nxt = model.forward_step([Piece(p, None, 0, len(p), r, True)], cache)
            last.append(nxt)
        for step in range(24):
            active = [0, 1] if step < 16 else [0]  # the batch shrinks: another graph
            pieces = [Piece(None, last[i], len(prompts[i]) + step, 1, rows[i], True) for i in active]
            if runner is not None:  # the scheduler's forecast of a capture (host time) is right
                will, graphs = runner.would_capture(len(active), max(p.start for p in pieces)), runner.stats["graphs"]
            nxt = model.forward_step(pieces, cache)
            if runner is not None:
                assert will == (runner.stats["graphs"] == graphs + 1), (step, will, runner.stats)
            for j, i in enumerate(active):
                last[i] = nxt[j : j + 1]
                out[i].append(int(nxt[j]))
        if runner is not None:
            assert runner.use_graphs, runner.off_reason
            assert runner.stats["graphs"] >= 3 and runner.stats["replays"] == 24, runner.stats
            assert runner.stats["inputs_carried"] >= 18, runner.stats  # all but a batch's first step
    model.decode_runner = None
    assert toks_graph == toks_eager


if __name__ == "__main__":
    # Standalone run (no pytest): every test on every device present; exit 1 on a failure.
    import sys
    import traceback

    failed = 0
    for name, fn in sorted(globals().items()):
        if not name.startswith("test_") or not callable(fn):
            continue
        takes_device = "device" in fn.__code__.co_varnames[: fn.__code__.co_argcount]
        for dev in DEVICES if takes_device else [None]:
            label = f"{name}[{dev}]" if dev else name
            try:
                fn(dev) if dev else fn()
                print(f"PASS {label}")
            except BaseException as e:  # noqa: BLE001
                if pytest is not None and isinstance(e, pytest.skip.Exception):
                    print(f"SKIP {label}: {e}")
                    continue
                if not isinstance(e, Exception):
                    raise
                failed += 1
                print(f"FAIL {label}")
                traceback.print_exc()
    print(f"torch {torch.__version__}: {failed} failed")
    sys.exit(1 if failed else 0)

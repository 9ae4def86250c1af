/*
 * Writes a trace file through the same encoders kvscope_cupti.c uses (kvscope_record.h), without
 * CUDA, and prints what it wrote as one JSON object per line. tests/test_tracer_format.py builds
 * it with the host's C compiler and checks that collector.py decodes exactly these values, so the
 * C writer's layout and the Python reader cannot drift apart unnoticed.
 *
 * usage: record_selftest OUT_FILE [TRUNCATE_LAST_RECORD_TO_BYTES]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "kvscope_record.h"

static void print_record(const struct kvs_record *r)
{
    printf("{\"type\":%u,\"copy_kind\":%u,\"src_kind\":%u,\"dst_kind\":%u,\"flags\":%" PRIu32
           ",\"bytes\":%" PRIu64 ",\"start\":%" PRIu64 ",\"end\":%" PRIu64
           ",\"device_id\":%" PRIu32 ",\"context_id\":%" PRIu32 ",\"stream_id\":%" PRIu32
           ",\"correlation_id\":%" PRIu32 ",\"src_device_id\":%" PRIu32
           ",\"dst_device_id\":%" PRIu32 ",\"extra\":%" PRIu64 "}\n",
           r->type, r->copy_kind, r->src_kind, r->dst_kind, r->flags, r->bytes, r->start, r->end,
           r->device_id, r->context_id, r->stream_id, r->correlation_id, r->src_device_id,
           r->dst_device_id, r->extra);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s OUT_FILE [TRUNCATE_LAST_RECORD_TO_BYTES]\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "wb");
    if (f == NULL) {
        perror(argv[1]);
        return 1;
    }
    /* Values above 2^32 and with every byte distinct, so a swapped or shifted field shows. */
    const uint64_t base = 0x18ec0b625f4088eaull;
    struct kvs_header h = {
        .pid = 4242,
        .anchor_cupti_ns = base,
        .anchor_realtime_ns = base - 171,
        .anchor_monotonic_ns = 0x0000004c377db653ull,
        .cupti_api_version = 130001,
        .flush_period_ms = 100,
        .buffer_bytes = 4u << 20,
    };
    uint8_t head[KVS_HEADER_BYTES];
    kvs_encode_header(&h, head);
    fwrite(head, 1, sizeof head, f);
    printf("{\"header\":true,\"pid\":%" PRIu32 ",\"anchor_cupti_ns\":%" PRIu64
           ",\"anchor_realtime_ns\":%" PRIu64 ",\"anchor_monotonic_ns\":%" PRIu64
           ",\"cupti_api_version\":%" PRIu32 ",\"flush_period_ms\":%" PRIu32
           ",\"buffer_bytes\":%" PRIu32 "}\n",
           h.pid, h.anchor_cupti_ns, h.anchor_realtime_ns, h.anchor_monotonic_ns,
           h.cupti_api_version, h.flush_period_ms, h.buffer_bytes);

    struct kvs_record recs[] = {
        /* pinned H2D, 2 MiB, async (CUPTI_ACTIVITY_FLAG_MEMCPY_ASYNC) */
        {KVS_REC_MEMCPY, 1, 2, 3, 1, 2097152, base + 1000, base + 41000, 0, 1, 13, 0x01020304,
         KVS_NO_DEVICE, KVS_NO_DEVICE, 1},
        /* pageable D2H, larger than 4 GiB */
        {KVS_REC_MEMCPY, 2, 3, 1, 0, 0x123456789ull, base + 50000, base + 90000, 1, 2, 7, 77,
         KVS_NO_DEVICE, KVS_NO_DEVICE, 1},
        /* D2D, then H2H, then an unknown copy kind between managed and unknown memory */
        {KVS_REC_MEMCPY, 8, 3, 3, 1, 4096, base + 91000, base + 92000, 0, 1, 13, 78,
         KVS_NO_DEVICE, KVS_NO_DEVICE, 1},
        {KVS_REC_MEMCPY, 9, 2, 1, 0, 64, base + 93000, base + 94000, 0, 1, 13, 79, KVS_NO_DEVICE,
         KVS_NO_DEVICE, 1},
        {KVS_REC_MEMCPY, 0, 5, 0, 0, 128, base + 95000, base + 96000, 0, 1, 13, 80, KVS_NO_DEVICE,
         KVS_NO_DEVICE, 3},
        /* peer copy device 0 -> device 1 */
        {KVS_REC_MEMCPY_PEER, 10, 3, 3, 1, 1 << 20, base + 97000, base + 99000, 0, 1, 14, 81, 0,
         1, 0},
        /* memset of device memory */
        {KVS_REC_MEMSET, 0, 3, 0, 0, 512, base + 100000, base + 100500, 0, 1, 13, 82,
         KVS_NO_DEVICE, KVS_NO_DEVICE, 0},
        /* a later anchor pair (CUPTI ns, CLOCK_REALTIME ns, CLOCK_MONOTONIC ns in `extra`) in which
         * the CUPTI clock has fallen 500 ns behind CLOCK_MONOTONIC since the header's pair */
        {KVS_REC_ANCHOR, 0, 0, 0, 0, 0, base + 1000000000ull, base + 1000000000ull - 180,
         KVS_NO_DEVICE, 0, 0, 0, KVS_NO_DEVICE, KVS_NO_DEVICE, 0x0000004c377db653ull + 1000000500ull},
        /* a copy with no timestamps (CUPTI: start = end = 0 when they could not be collected) */
        {KVS_REC_MEMCPY, 1, 2, 3, 1, 256, 0, 0, 0, 1, 13, 83, KVS_NO_DEVICE, KVS_NO_DEVICE, 1},
        {KVS_REC_DROPPED, 0, 0, 0, 0, 5, 0, 0, KVS_NO_DEVICE, 0, 0, 0, KVS_NO_DEVICE,
         KVS_NO_DEVICE, 0},
        /* CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED (39) while enabling memsets */
        {KVS_REC_ERROR, 0, 0, 0, 39, 0, 0, 0, KVS_NO_DEVICE, 0, 0, KVS_STEP_ENABLE_MEMSET,
         KVS_NO_DEVICE, KVS_NO_DEVICE, 0},
        {KVS_REC_MEMCPY, 1, 2, 3, 1, 8192, base + 1000000500ull, base + 1000000900ull, 0, 1, 13,
         84, KVS_NO_DEVICE, KVS_NO_DEVICE, 1},
    };
    size_t count = sizeof recs / sizeof recs[0];
    size_t truncate_last = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : KVS_RECORD_BYTES;
    for (size_t i = 0; i < count; i++) {
        uint8_t out[KVS_RECORD_BYTES];
        kvs_encode_record(&recs[i], out);
        size_t n = i + 1 == count && truncate_last < KVS_RECORD_BYTES ? truncate_last
                                                                       : KVS_RECORD_BYTES;
        fwrite(out, 1, n, f);
        if (n == KVS_RECORD_BYTES)
            print_record(&recs[i]);
    }
    return fclose(f) == 0 ? 0 : 1;
}

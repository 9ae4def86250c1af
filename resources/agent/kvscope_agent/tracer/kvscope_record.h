/*
 * The trace file format written by kvscope_cupti.c and read by collector.py.
 *
 * This header has no CUDA or CUPTI dependency, so record_selftest.c can write the same bytes on
 * a machine without CUDA and the Python decoder is tested against the C writer's real output.
 *
 * One file per traced process: $KVSCOPE_TRACE_DIR/cupti-<pid>.bin. All integers little-endian,
 * written byte by byte (no struct memcpy), so the layout does not depend on compiler padding.
 *
 * Header, KVS_HEADER_BYTES (64) bytes, written once with one write():
 *   0  char[8] magic "KVSCUPTI"
 *   8  u32     format version (KVS_FORMAT_VERSION)
 *  12  u32     header size in bytes (64)
 *  16  u32     record size in bytes (64)
 *  20  u32     pid of the traced process
 *  24  u64     anchor: cuptiGetTimestamp() ns
 *  32  u64     anchor: CLOCK_REALTIME ns (midpoint of readings taken around the CUPTI one)
 *  40  u64     anchor: CLOCK_MONOTONIC ns (midpoint, likewise)
 *  48  u32     CUPTI_API_VERSION the library was compiled against
 *  52  u32     flush period in ms
 *  56  u32     activity buffer size in bytes
 *  60  u32     reserved (0)
 *
 * Records, KVS_RECORD_BYTES (64) bytes each, appended:
 *   0  u8  type (KVS_REC_*)
 *   1  u8  copyKind  (CUpti_ActivityMemcpyKind, raw)          memcpy / peer memcpy
 *   2  u8  srcKind   (CUpti_ActivityMemoryKind, raw)          memcpy / peer; memset: memoryKind
 *   3  u8  dstKind   (CUpti_ActivityMemoryKind, raw)          memcpy / peer
 *   4  u32 flags     (CUpti_ActivityFlag bits; error: CUptiResult)
 *   8  u64 bytes     (dropped: number of records CUPTI dropped; error: 0)
 *  16  u64 start     (CUPTI ns; anchor: cuptiGetTimestamp)
 *  24  u64 end       (CUPTI ns; anchor: CLOCK_REALTIME ns)
 *  32  u32 deviceId
 *  36  u32 contextId
 *  40  u32 streamId
 *  44  u32 correlationId (error: KVS_STEP_* that failed)
 *  48  u32 srcDeviceId (peer memcpy; else 0xffffffff)
 *  52  u32 dstDeviceId (peer memcpy; else 0xffffffff)
 *  56  u64 extra     (memcpy: copyCount; anchor: CLOCK_MONOTONIC ns; else 0)
 *
 * Raw CUPTI enum values are kept (not mapped) so nothing is lost; collector.py maps them onto
 * the protocol's "pinned"/"pageable"/"device"/"managed"/"unknown" and "h2d"/"d2h"/"d2d"/"h2h".
 * Anchor records are repeated while the process runs so a long run is mapped onto the run
 * clock with the most recent pair, not one taken minutes earlier (CLOCK_REALTIME, which CUPTI
 * follows by default on Linux, may be slewed by NTP relative to CLOCK_MONOTONIC).
 */
#ifndef KVSCOPE_RECORD_H
#define KVSCOPE_RECORD_H

#include <stdint.h>
#include <string.h>

#define KVS_MAGIC "KVSCUPTI"
#define KVS_FORMAT_VERSION 1u
#define KVS_HEADER_BYTES 64u
#define KVS_RECORD_BYTES 64u
#define KVS_NO_DEVICE 0xffffffffu

enum kvs_record_type {
    KVS_REC_MEMCPY = 1,
    KVS_REC_MEMSET = 2,
    KVS_REC_MEMCPY_PEER = 3,
    KVS_REC_DROPPED = 4,
    KVS_REC_ANCHOR = 5,
    KVS_REC_ERROR = 6,
};

/* Which library step an error record is about (u32 at offset 44 of an error record). */
enum kvs_step {
    KVS_STEP_GET_TIMESTAMP = 1,
    KVS_STEP_REGISTER_CALLBACKS = 2,
    KVS_STEP_ENABLE_MEMCPY = 3,
    KVS_STEP_ENABLE_MEMSET = 4,
    KVS_STEP_ENABLE_MEMCPY2 = 5,
    KVS_STEP_FLUSH_PERIOD = 6,
    KVS_STEP_FLUSH_ALL = 7,
    KVS_STEP_GET_NEXT_RECORD = 8,
    KVS_STEP_GET_DROPPED = 9,
    KVS_STEP_BUFFER_ALLOC = 10,
    KVS_STEP_WRITE = 11,
    KVS_STEP_ENABLE_GRAPH_TRACE = 12,
};

struct kvs_record {
    uint8_t type, copy_kind, src_kind, dst_kind;
    uint32_t flags;
    uint64_t bytes, start, end;
    uint32_t device_id, context_id, stream_id, correlation_id, src_device_id, dst_device_id;
    uint64_t extra;
};

struct kvs_header {
    uint32_t pid;
    uint64_t anchor_cupti_ns, anchor_realtime_ns, anchor_monotonic_ns;
    uint32_t cupti_api_version, flush_period_ms, buffer_bytes;
};

static inline void kvs_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void kvs_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void kvs_encode_header(const struct kvs_header *h, uint8_t out[KVS_HEADER_BYTES])
{
    memset(out, 0, KVS_HEADER_BYTES);
    memcpy(out, KVS_MAGIC, 8);
    kvs_put_u32(out + 8, KVS_FORMAT_VERSION);
    kvs_put_u32(out + 12, KVS_HEADER_BYTES);
    kvs_put_u32(out + 16, KVS_RECORD_BYTES);
    kvs_put_u32(out + 20, h->pid);
    kvs_put_u64(out + 24, h->anchor_cupti_ns);
    kvs_put_u64(out + 32, h->anchor_realtime_ns);
    kvs_put_u64(out + 40, h->anchor_monotonic_ns);
    kvs_put_u32(out + 48, h->cupti_api_version);
    kvs_put_u32(out + 52, h->flush_period_ms);
    kvs_put_u32(out + 56, h->buffer_bytes);
}

static inline void kvs_encode_record(const struct kvs_record *r, uint8_t out[KVS_RECORD_BYTES])
{
    out[0] = r->type;
    out[1] = r->copy_kind;
    out[2] = r->src_kind;
    out[3] = r->dst_kind;
    kvs_put_u32(out + 4, r->flags);
    kvs_put_u64(out + 8, r->bytes);
    kvs_put_u64(out + 16, r->start);
    kvs_put_u64(out + 24, r->end);
    kvs_put_u32(out + 32, r->device_id);
    kvs_put_u32(out + 36, r->context_id);
    kvs_put_u32(out + 40, r->stream_id);
    kvs_put_u32(out + 44, r->correlation_id);
    kvs_put_u32(out + 48, r->src_device_id);
    kvs_put_u32(out + 52, r->dst_device_id);
    kvs_put_u64(out + 56, r->extra);
}

#endif /* KVSCOPE_RECORD_H */

/*
 * KV Scope's CUPTI injection library: every memcpy / memset of a CUDA process, to a file.
 *
 * Loaded by the CUDA driver through CUDA_INJECTION64_PATH, which calls InitializeInjection()
 * during cuInit in every process that sets the variable (so an engine's worker processes are
 * traced too: they inherit the agent's environment). Seen working this way on an H100 with
 * CUDA 13.0 / driver 580 (shared/reference/h100-measurements.md).
 *
 * Records go to $KVSCOPE_TRACE_DIR/cupti-<pid>.bin in the format of kvscope_record.h; the agent's
 * collector (collector.py) tails those files and turns them into protocol `xfer` events.
 *
 * Liveness: cuptiActivityFlushPeriod only hands back *full* buffers ("Periodic flush can return
 * only those activity buffers which are full", cupti_activity.h), and a 4 MiB buffer holds ~47k
 * memcpy records, so a flusher thread also calls cuptiActivityFlushAll(0) every period: that
 * returns every buffer whose records are complete, full or not, which the header documents as
 * meant to be called "at a regular interval in a separate thread".
 *
 * Buffers: CUPTI zeroes every activity buffer it is handed, in the thread that needs it (the
 * application's, for CUPTI_ACTIVITY_ATTR_ZEROED_OUT_ACTIVITY_BUFFER = 0, the default: "a few stalls
 * may appear in critical path because CUPTI will zero out the buffer in the main thread",
 * cupti_activity.h). FlushAll hands back every buffer with complete records, full or not, so at a
 * 100 ms period CUPTI asks for a fresh buffer ~10 times a second, and each was a new 4 MiB
 * allocation (new pages, faulted in) zeroed on the launching thread. Instead the library tells
 * CUPTI that its buffers come zeroed and keeps a small pool: a completed buffer is zeroed by the
 * flusher thread after the flush, and the next request takes it ready, touched and zeroed.
 *
 * Environment:
 *   KVSCOPE_TRACE_DIR           folder for the per-process files (required; unset = do nothing)
 *   KVSCOPE_TRACE_FLUSH_MS      flush period, 1..200 ms (default 100)
 *   KVSCOPE_TRACE_BUFFER_BYTES  CUPTI activity buffer size, 1..256 MiB (default 4 MiB)
 *   KVSCOPE_TRACE_MEMSET        0 = do not enable MEMSET activity (A/B of its cost; default 1)
 *   KVSCOPE_TRACE_GRAPH_LEVEL   1 = enable GRAPH_TRACE: a CUDA graph launch traced whole (default);
 *                               0 = per-node graph tracing (see InitializeInjection)
 *   KVSCOPE_TRACE_POOL          1 = the buffer pool (default); 0 = a new buffer per request,
 *                               zeroed by CUPTI (the library before the pool, for A/B timing:
 *                               bench/gpu/tracer-overhead-micro.py's
 *                               "tracenopool")
 */
#define _GNU_SOURCE
#include <cupti.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvscope_record.h"

#define KVS_DEFAULT_BUFFER_BYTES (4u << 20)
#define KVS_MIN_BUFFER_BYTES (1u << 20)
#define KVS_MAX_BUFFER_BYTES (256u << 20)
#define KVS_DEFAULT_FLUSH_MS 100u
#define KVS_MAX_FLUSH_MS 200u
#define KVS_ANCHOR_EVERY_MS 1000u
#define KVS_CHUNK_RECORDS 64u

/*
 * The leading fields of CUPTI's memcpy, peer-memcpy and memset records. They have kept these
 * offsets in every version (CUpti_ActivityMemcpy .. Memcpy6, MemcpyPtoP .. PtoP4, Memset ..
 * Memset4), so reading only this prefix works with the CUPTI of CUDA 11, 12 and 13 alike; on
 * CUDA 13 the offsets are checked against the real structs below.
 */
typedef struct {
    CUpti_ActivityKind kind;
    uint8_t copyKind, srcKind, dstKind, flags;
    uint64_t bytes, start, end;
    uint32_t deviceId, contextId, streamId, correlationId;
} kvs_memcpy_prefix;

typedef struct {
    CUpti_ActivityKind kind;
    uint8_t copyKind, srcKind, dstKind, flags;
    uint64_t bytes, start, end;
    uint32_t deviceId, contextId, streamId, srcDeviceId, srcContextId, dstDeviceId, dstContextId,
        correlationId;
} kvs_peer_prefix;

typedef struct {
    CUpti_ActivityKind kind;
    uint32_t value;
    uint64_t bytes, start, end;
    uint32_t deviceId, contextId, streamId, correlationId;
    uint16_t flags, memoryKind;
} kvs_memset_prefix;

#if defined(CUPTI_API_VERSION) && CUPTI_API_VERSION >= 130000
#define KVS_SAME_OFFSET(ours, theirs, field) \
    _Static_assert(offsetof(ours, field) == offsetof(theirs, field), #theirs "." #field)
KVS_SAME_OFFSET(kvs_memcpy_prefix, CUpti_ActivityMemcpy6, bytes);
KVS_SAME_OFFSET(kvs_memcpy_prefix, CUpti_ActivityMemcpy6, end);
KVS_SAME_OFFSET(kvs_memcpy_prefix, CUpti_ActivityMemcpy6, streamId);
KVS_SAME_OFFSET(kvs_memcpy_prefix, CUpti_ActivityMemcpy6, correlationId);
KVS_SAME_OFFSET(kvs_peer_prefix, CUpti_ActivityMemcpyPtoP4, dstDeviceId);
KVS_SAME_OFFSET(kvs_peer_prefix, CUpti_ActivityMemcpyPtoP4, correlationId);
KVS_SAME_OFFSET(kvs_memset_prefix, CUpti_ActivityMemset4, correlationId);
KVS_SAME_OFFSET(kvs_memset_prefix, CUpti_ActivityMemset4, memoryKind);
/* copyCount (records merged by cudaMemcpyBatchAsync) exists from CUpti_ActivityMemcpy6 on. */
#define KVS_COPY_COUNT(rec) (((const CUpti_ActivityMemcpy6 *)(rec))->copyCount)
#else
#define KVS_COPY_COUNT(rec) 1u
#endif

static int g_fd = -1;
static pid_t g_pid;
static uint32_t g_buffer_bytes = KVS_DEFAULT_BUFFER_BYTES;
static uint32_t g_flush_ms = KVS_DEFAULT_FLUSH_MS;
static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_flush_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_stop_cond = PTHREAD_COND_INITIALIZER;
static int g_stop;
static int g_flusher_started;
static pthread_t g_flusher;
static int g_active;
static volatile int g_hold; /* periodic flushes held (kvscope_cupti_hold); set under g_flush_lock */
static int g_write_failed;

/* The buffer pool (see "Buffers" above). Buffers of g_buffer_bytes only; at most KVS_POOL_MAX
 * clean (zeroed, ready) and KVS_POOL_MAX dirty (completed, to be zeroed) are kept, the rest freed,
 * so the pool holds at most 2 x 4 x 4 MiB by default. */
#define KVS_POOL_MAX 4u
#define KVS_POOL_PREFILL 2u
static pthread_mutex_t g_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *g_clean[KVS_POOL_MAX];
static uint32_t g_nclean;
static uint8_t *g_dirty[KVS_POOL_MAX];
static uint32_t g_ndirty;
/* Counters for tests and the at-exit note: buffers allocated new, handed out from the pool, and
 * zeroed in the requesting thread because none was clean (the old, slow path). */
static uint64_t g_pool_allocated, g_pool_reused, g_pool_zeroed_on_request;
static uint32_t g_pool_on = 1;

static uint64_t kvs_clock_ns(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *kvs_result_name(CUptiResult res)
{
    const char *s = NULL;
    if (cuptiGetResultString(res, &s) != CUPTI_SUCCESS || s == NULL)
        return "unknown CUPTI error";
    return s;
}

/* Appends whole records under the lock; a short write is retried, never split across calls. */
static void kvs_write(const uint8_t *buf, size_t n)
{
    pthread_mutex_lock(&g_write_lock);
    size_t done = 0;
    while (g_fd >= 0 && done < n) {
        ssize_t w = write(g_fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (!g_write_failed)
                fprintf(stderr, "kvscope-cupti: writing the trace file failed: %s\n",
                        w < 0 ? strerror(errno) : "no progress");
            g_write_failed = 1;
            break;
        }
        done += (size_t)w;
    }
    pthread_mutex_unlock(&g_write_lock);
}

static void kvs_write_record(const struct kvs_record *r)
{
    uint8_t out[KVS_RECORD_BYTES];
    kvs_encode_record(r, out);
    kvs_write(out, sizeof out);
}

static void kvs_error(uint32_t step, CUptiResult res, const char *what)
{
    fprintf(stderr, "kvscope-cupti[%d]: %s failed: %s (%d)\n", (int)getpid(), what,
            kvs_result_name(res), (int)res);
    struct kvs_record r;
    memset(&r, 0, sizeof r);
    r.type = KVS_REC_ERROR;
    r.flags = (uint32_t)res;
    r.correlation_id = step;
    r.device_id = r.src_device_id = r.dst_device_id = KVS_NO_DEVICE;
    kvs_write_record(&r);
}

/* Every CUPTI return code is checked through this; a failure becomes an error record. */
static int kvs_check(uint32_t step, CUptiResult res, const char *what)
{
    if (res == CUPTI_SUCCESS)
        return 1;
    kvs_error(step, res, what);
    return 0;
}
#define KVS_CHECK(step, call) kvs_check((step), (call), #call)

/* An anchor pair: a CUPTI timestamp bracketed by two readings of each host clock. The first
 * cuptiGetTimestamp of a process is slow (~0.3 ms here while CUPTI initialises), which would put
 * the midpoint off by half of that; so the narrowest of a few brackets is kept. */
static int kvs_take_anchor(uint64_t *cupti_ns, uint64_t *real_ns, uint64_t *mono_ns)
{
    uint64_t best_width = UINT64_MAX;
    for (int i = 0; i < 4; i++) {
        uint64_t m0 = kvs_clock_ns(CLOCK_MONOTONIC);
        uint64_t r0 = kvs_clock_ns(CLOCK_REALTIME);
        uint64_t c = 0;
        CUptiResult res = cuptiGetTimestamp(&c);
        uint64_t r1 = kvs_clock_ns(CLOCK_REALTIME);
        uint64_t m1 = kvs_clock_ns(CLOCK_MONOTONIC);
        if (res != CUPTI_SUCCESS) {
            *cupti_ns = 0;
            *real_ns = r0;
            *mono_ns = m0;
            return (int)res;
        }
        if (m1 - m0 < best_width) {
            best_width = m1 - m0;
            *cupti_ns = c;
            *real_ns = r0 + (r1 - r0) / 2;
            *mono_ns = m0 + (m1 - m0) / 2;
        }
    }
    return 0;
}

static void kvs_write_anchor(void)
{
    struct kvs_record r;
    memset(&r, 0, sizeof r);
    int res = kvs_take_anchor(&r.start, &r.end, &r.extra);
    if (res != 0) {
        kvs_error(KVS_STEP_GET_TIMESTAMP, (CUptiResult)res, "cuptiGetTimestamp");
        return;
    }
    r.type = KVS_REC_ANCHOR;
    r.device_id = r.src_device_id = r.dst_device_id = KVS_NO_DEVICE;
    kvs_write_record(&r);
}

/* A new zeroed buffer of g_buffer_bytes (8-byte aligned, as CUPTI's samples use ALIGN_SIZE 8),
 * its pages touched by the memset; NULL when out of memory. */
static uint8_t *kvs_pool_alloc(void)
{
    void *p = NULL;
    if (posix_memalign(&p, 8, g_buffer_bytes) != 0)
        return NULL;
    memset(p, 0, g_buffer_bytes);
    return (uint8_t *)p;
}

/* Zeroes the completed buffers and makes them clean. Called by the flusher thread after each
 * flush (outside any CUPTI call), so the zeroing is off the application's threads. */
static void kvs_pool_clean(void)
{
    uint8_t *todo[KVS_POOL_MAX];
    pthread_mutex_lock(&g_pool_lock);
    uint32_t n = g_ndirty;
    memcpy(todo, g_dirty, n * sizeof todo[0]);
    g_ndirty = 0;
    pthread_mutex_unlock(&g_pool_lock);
    for (uint32_t i = 0; i < n; i++) {
        /* The whole buffer, not only valid_size: a zeroed buffer is what CUPTI was promised. */
        memset(todo[i], 0, g_buffer_bytes);
        pthread_mutex_lock(&g_pool_lock);
        if (g_nclean < KVS_POOL_MAX) {
            g_clean[g_nclean++] = todo[i];
            todo[i] = NULL;
        }
        pthread_mutex_unlock(&g_pool_lock);
        free(todo[i]);
    }
}

static void kvs_pool_prefill(void)
{
    for (uint32_t i = 0; i < KVS_POOL_PREFILL; i++) {
        uint8_t *b = kvs_pool_alloc();
        if (b == NULL)
            return;
        pthread_mutex_lock(&g_pool_lock);
        g_clean[g_nclean++] = b;
        g_pool_allocated++;
        pthread_mutex_unlock(&g_pool_lock);
    }
}

static void CUPTIAPI kvs_buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    uint8_t *p = NULL, *dirty = NULL;
    if (!g_pool_on) {
        /* KVSCOPE_TRACE_POOL=0: a new buffer each time, which CUPTI zeroes (its default). */
        void *q = NULL;
        if (posix_memalign(&q, 8, g_buffer_bytes) == 0)
            p = (uint8_t *)q;
        pthread_mutex_lock(&g_pool_lock);
        g_pool_allocated++;
        pthread_mutex_unlock(&g_pool_lock);
        if (p == NULL)
            kvs_error(KVS_STEP_BUFFER_ALLOC, CUPTI_ERROR_OUT_OF_MEMORY, "activity buffer allocation");
        *buffer = p;
        *size = p ? g_buffer_bytes : 0;
        *max_records = 0;
        return;
    }
    pthread_mutex_lock(&g_pool_lock);
    if (g_nclean > 0) {
        p = g_clean[--g_nclean];
        g_pool_reused++;
    } else if (g_ndirty > 0) {
        dirty = g_dirty[--g_ndirty];
        g_pool_zeroed_on_request++;
    } else {
        g_pool_allocated++;
    }
    pthread_mutex_unlock(&g_pool_lock);
    if (dirty != NULL) {
        /* No clean buffer yet (the flusher has not run since): zero one here, which still
         * saves the allocation and page faults of a new one. */
        memset(dirty, 0, g_buffer_bytes);
        p = dirty;
    } else if (p == NULL) {
        p = kvs_pool_alloc();
    }
    if (p == NULL)
        kvs_error(KVS_STEP_BUFFER_ALLOC, CUPTI_ERROR_OUT_OF_MEMORY, "activity buffer allocation");
    *buffer = p;
    *size = p ? g_buffer_bytes : 0;
    *max_records = 0;
}

/* A completed buffer goes back to the pool to be zeroed by the flusher; one of another size (not
 * ours) or beyond the pool's bound is freed. */
static void kvs_pool_return(uint8_t *buffer, size_t size)
{
    if (buffer == NULL)
        return;
    if (g_pool_on && size == g_buffer_bytes) {
        pthread_mutex_lock(&g_pool_lock);
        if (g_ndirty < KVS_POOL_MAX) {
            g_dirty[g_ndirty++] = buffer;
            buffer = NULL;
        }
        pthread_mutex_unlock(&g_pool_lock);
    }
    free(buffer);
}

/* The fields a memcpy and a peer memcpy record share (two CUPTI structs, same member names). */
#define KVS_COPY_FIELDS(r, m)                                                                      \
    do {                                                                                           \
        (r)->copy_kind = (m)->copyKind;                                                            \
        (r)->src_kind = (m)->srcKind;                                                              \
        (r)->dst_kind = (m)->dstKind;                                                              \
        (r)->flags = (m)->flags;                                                                   \
        (r)->bytes = (m)->bytes;                                                                   \
        (r)->start = (m)->start;                                                                   \
        (r)->end = (m)->end;                                                                       \
        (r)->device_id = (m)->deviceId;                                                            \
        (r)->context_id = (m)->contextId;                                                          \
        (r)->stream_id = (m)->streamId;                                                            \
        (r)->correlation_id = (m)->correlationId;                                                  \
    } while (0)

static int kvs_convert(const CUpti_Activity *a, struct kvs_record *r)
{
    memset(r, 0, sizeof *r);
    r->src_device_id = r->dst_device_id = KVS_NO_DEVICE;
    switch (a->kind) {
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const kvs_memcpy_prefix *m = (const kvs_memcpy_prefix *)a;
        r->type = KVS_REC_MEMCPY;
        KVS_COPY_FIELDS(r, m);
        r->extra = KVS_COPY_COUNT(a);
        return 1;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY2: {
        const kvs_peer_prefix *m = (const kvs_peer_prefix *)a;
        r->type = KVS_REC_MEMCPY_PEER;
        KVS_COPY_FIELDS(r, m);
        r->src_device_id = m->srcDeviceId;
        r->dst_device_id = m->dstDeviceId;
        return 1;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
        const kvs_memset_prefix *m = (const kvs_memset_prefix *)a;
        r->type = KVS_REC_MEMSET;
        r->src_kind = (uint8_t)m->memoryKind;
        r->flags = m->flags;
        r->bytes = m->bytes;
        r->start = m->start;
        r->end = m->end;
        r->device_id = m->deviceId;
        r->context_id = m->contextId;
        r->stream_id = m->streamId;
        r->correlation_id = m->correlationId;
        return 1;
    }
    default:
        return 0;
    }
}

static void CUPTIAPI kvs_buffer_completed(CUcontext ctx, uint32_t stream_id, uint8_t *buffer,
                                          size_t size, size_t valid_size)
{
    uint8_t chunk[KVS_CHUNK_RECORDS * KVS_RECORD_BYTES];
    size_t n = 0;
    CUpti_Activity *a = NULL;
    if (buffer != NULL && valid_size > 0) {
        for (;;) {
            CUptiResult res = cuptiActivityGetNextRecord(buffer, valid_size, &a);
            if (res == CUPTI_ERROR_MAX_LIMIT_REACHED)
                break; /* the documented end of a buffer, not an error */
            if (!kvs_check(KVS_STEP_GET_NEXT_RECORD, res, "cuptiActivityGetNextRecord"))
                break;
            struct kvs_record r;
            if (!kvs_convert(a, &r))
                continue;
            kvs_encode_record(&r, chunk + n * KVS_RECORD_BYTES);
            if (++n == KVS_CHUNK_RECORDS) {
                kvs_write(chunk, n * KVS_RECORD_BYTES);
                n = 0;
            }
        }
    }
    if (n > 0)
        kvs_write(chunk, n * KVS_RECORD_BYTES);
    kvs_pool_return(buffer, size);

    size_t dropped = 0;
    if (KVS_CHECK(KVS_STEP_GET_DROPPED,
                  cuptiActivityGetNumDroppedRecords(ctx, stream_id, &dropped)) &&
        dropped > 0) {
        struct kvs_record r;
        memset(&r, 0, sizeof r);
        r.type = KVS_REC_DROPPED;
        r.bytes = dropped;
        r.device_id = r.src_device_id = r.dst_device_id = KVS_NO_DEVICE;
        kvs_write_record(&r);
    }
}

/* Hands every completed (forced: every) record to the file now. Exported so the agent's own
 * collector can drain its process before it stops (collector.py calls it through ctypes). */
int kvscope_cupti_flush(int forced)
{
    if (!forced && g_hold)
        return 2; /* held (kvscope_cupti_hold): a periodic flush waits for the release */
    if (!g_active)
        return -1;
    pthread_mutex_lock(&g_flush_lock);
    if (!forced && g_hold) { /* held while this call waited for the lock */
        pthread_mutex_unlock(&g_flush_lock);
        return 2;
    }
    int ok = KVS_CHECK(KVS_STEP_FLUSH_ALL,
                       cuptiActivityFlushAll(forced ? CUPTI_ACTIVITY_FLAG_FLUSH_FORCED : 0));
    pthread_mutex_unlock(&g_flush_lock);
    return ok ? 0 : 1;
}

int kvscope_cupti_active(void) { return g_active; }

/* Holds (on = 1) or releases (0) the periodic flushes; forced flushes still run. The agent holds
 * them while it captures a CUDA graph (engine/decode_graph.py): a capture is a short window
 * (tens of ms) and a FlushAll from the flusher thread racing a stream capture was the prime
 * suspect of a traced 70B run that died at its first capture (bench/results/h100-2026-11-28b).
 * Taking g_flush_lock to set the flag waits out a flush already in progress, so once this
 * returns no periodic flush runs until the release. Records are not lost: the next flush after
 * the release hands them over. */
int kvscope_cupti_hold(int on)
{
    pthread_mutex_lock(&g_flush_lock);
    g_hold = on ? 1 : 0;
    pthread_mutex_unlock(&g_flush_lock);
    return 0;
}

/* The pool's counters (for tests and for reading a run's behaviour through ctypes). */
void kvscope_cupti_pool_stats(uint64_t *allocated, uint64_t *reused, uint64_t *zeroed_on_request)
{
    pthread_mutex_lock(&g_pool_lock);
    *allocated = g_pool_allocated;
    *reused = g_pool_reused;
    *zeroed_on_request = g_pool_zeroed_on_request;
    pthread_mutex_unlock(&g_pool_lock);
}

static void *kvs_flusher_main(void *arg)
{
    (void)arg;
    uint32_t since_anchor = 0;
    pthread_mutex_lock(&g_stop_lock);
    while (!g_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until); /* pthread_cond_timedwait's default clock */
        until.tv_nsec += (long)g_flush_ms * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&g_stop_cond, &g_stop_lock, &until);
        if (g_stop)
            break;
        pthread_mutex_unlock(&g_stop_lock);
        kvscope_cupti_flush(0);
        kvs_pool_clean();
        since_anchor += g_flush_ms;
        if (since_anchor >= KVS_ANCHOR_EVERY_MS) {
            kvs_write_anchor();
            since_anchor = 0;
        }
        pthread_mutex_lock(&g_stop_lock);
    }
    pthread_mutex_unlock(&g_stop_lock);
    return NULL;
}

static void kvs_at_exit(void)
{
    /* A forked child inherits this handler and a copy of CUPTI's buffers; flushing there would
     * write the parent's records a second time into the parent's file. */
    if (!g_active || getpid() != g_pid)
        return;
    if (g_flusher_started) {
        pthread_mutex_lock(&g_stop_lock);
        g_stop = 1;
        pthread_cond_signal(&g_stop_cond);
        pthread_mutex_unlock(&g_stop_lock);
        pthread_join(g_flusher, NULL);
        g_flusher_started = 0;
    }
    kvscope_cupti_flush(1);
    kvs_write_anchor();
    g_active = 0;
    pthread_mutex_lock(&g_write_lock);
    if (g_fd >= 0)
        close(g_fd);
    g_fd = -1;
    pthread_mutex_unlock(&g_write_lock);
}

static uint32_t kvs_env_u32(const char *name, uint32_t def, uint32_t lo, uint32_t hi)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0')
        return def;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "kvscope-cupti: ignoring %s=%s (expected %u..%u); using %u\n", name, s,
                lo, hi, def);
        return def;
    }
    return (uint32_t)v;
}

static int kvs_open_trace_file(const char *dir)
{
    char path[PATH_MAX];
    for (int attempt = 0; attempt < 100; attempt++) {
        int n = attempt == 0 ? snprintf(path, sizeof path, "%s/cupti-%d.bin", dir, (int)g_pid)
                             : snprintf(path, sizeof path, "%s/cupti-%d-%d.bin", dir, (int)g_pid,
                                        attempt);
        if (n < 0 || (size_t)n >= sizeof path) {
            fprintf(stderr, "kvscope-cupti: KVSCOPE_TRACE_DIR is too long\n");
            return -1;
        }
        /* O_EXCL: a recycled pid must not append to an earlier process's file. */
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST) {
            fprintf(stderr, "kvscope-cupti: cannot create %s: %s\n", path, strerror(errno));
            return -1;
        }
    }
    fprintf(stderr, "kvscope-cupti: no free trace file name for pid %d in %s\n", (int)g_pid, dir);
    return -1;
}

/* The entry point the CUDA driver calls for CUDA_INJECTION64_PATH (once, during cuInit). */
int InitializeInjection(void)
{
    static int initialised;
    if (initialised)
        return 1;
    initialised = 1;

    const char *dir = getenv("KVSCOPE_TRACE_DIR");
    if (dir == NULL || *dir == '\0') {
        fprintf(stderr, "kvscope-cupti: KVSCOPE_TRACE_DIR is not set; not tracing\n");
        return 1;
    }
    g_pid = getpid();
    g_flush_ms = kvs_env_u32("KVSCOPE_TRACE_FLUSH_MS", KVS_DEFAULT_FLUSH_MS, 1, KVS_MAX_FLUSH_MS);
    g_buffer_bytes = kvs_env_u32("KVSCOPE_TRACE_BUFFER_BYTES", KVS_DEFAULT_BUFFER_BYTES,
                                 KVS_MIN_BUFFER_BYTES, KVS_MAX_BUFFER_BYTES);
    g_fd = kvs_open_trace_file(dir);
    if (g_fd < 0)
        return 1;

    struct kvs_header h;
    memset(&h, 0, sizeof h);
    h.pid = (uint32_t)g_pid;
    int ts_res = kvs_take_anchor(&h.anchor_cupti_ns, &h.anchor_realtime_ns, &h.anchor_monotonic_ns);
#ifdef CUPTI_API_VERSION
    h.cupti_api_version = CUPTI_API_VERSION;
#endif
    h.flush_period_ms = g_flush_ms;
    h.buffer_bytes = g_buffer_bytes;
    uint8_t head[KVS_HEADER_BYTES];
    kvs_encode_header(&h, head);
    kvs_write(head, sizeof head);
    if (ts_res != 0)
        kvs_error(KVS_STEP_GET_TIMESTAMP, (CUptiResult)ts_res, "cuptiGetTimestamp");

    g_pool_on = kvs_env_u32("KVSCOPE_TRACE_POOL", 1, 0, 1);
    if (g_pool_on) {
        /* Our buffers come zeroed (see "Buffers"). If CUPTI refuses the attribute it zeroes them
         * itself, the documented default: slower, not wrong, so a note and not an error. */
        uint8_t zeroed = 1;
        size_t zeroed_size = sizeof zeroed;
        CUptiResult zres = cuptiActivitySetAttribute(CUPTI_ACTIVITY_ATTR_ZEROED_OUT_ACTIVITY_BUFFER,
                                                     &zeroed_size, &zeroed);
        if (zres != CUPTI_SUCCESS)
            fprintf(stderr, "kvscope-cupti: CUPTI zeroes each activity buffer itself (%s)\n",
                    kvs_result_name(zres));
        kvs_pool_prefill();
    }
    if (!KVS_CHECK(KVS_STEP_REGISTER_CALLBACKS,
                   cuptiActivityRegisterCallbacks(kvs_buffer_requested, kvs_buffer_completed)))
        return 1;
    if (!KVS_CHECK(KVS_STEP_ENABLE_MEMCPY, cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY)))
        return 1;
    g_active = 1;
    /* Memsets and peer copies are wanted but not essential: their failure is recorded only. */
    if (kvs_env_u32("KVSCOPE_TRACE_MEMSET", 1, 0, 1))
        KVS_CHECK(KVS_STEP_ENABLE_MEMSET, cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET));
    KVS_CHECK(KVS_STEP_ENABLE_MEMCPY2, cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY2));
#if defined(CUPTI_API_VERSION) && CUPTI_API_VERSION >= 17
    /* KVSCOPE_TRACE_GRAPH_LEVEL=1 (the default): CUPTI records each CUDA graph launch as one
     * GRAPH_TRACE record, "without giving visibility about the execution of its nodes ... to reduce
     * overheads in tracing each node" (cupti_activity.h); this library skips those records
     * (kvs_convert). Measured on the H100 (bench/tracer-overhead-h100.md, 2026-11-28): with memcpy
     * and memset activity on, every launch of a ~1,000-node decode graph cost ~1.3 ms of host time
     * traced per node (1.066x a graph-decode step) against 1.016x traced per launch, same call; an
     * 8B run's E2E ratio traced/untraced read 1.016 at graph level (1.168 per node in an earlier
     * call, sized differently). The price: a copy issued INSIDE a
     * graph goes unrecorded. KV offload/onboard copies are issued outside graphs (the built-in
     * engine's copy stream; TensorRT-LLM's and vLLM's transfer paths), and every agreement check
     * since still balanced. Per-node tracing (0) also coincided with native crashes (SIGSEGV) around
     * graph capture: one traced 70B run, and one traced microbenchmark worker in each of two calls;
     * none in the 19 runs and workers traced at graph level since. */
    if (kvs_env_u32("KVSCOPE_TRACE_GRAPH_LEVEL", 1, 0, 1))
        KVS_CHECK(KVS_STEP_ENABLE_GRAPH_TRACE, cuptiActivityEnable(CUPTI_ACTIVITY_KIND_GRAPH_TRACE));
#endif
    KVS_CHECK(KVS_STEP_FLUSH_PERIOD, cuptiActivityFlushPeriod(g_flush_ms));

    if (pthread_create(&g_flusher, NULL, kvs_flusher_main, NULL) == 0)
        g_flusher_started = 1;
    else
        fprintf(stderr, "kvscope-cupti: no flusher thread; records arrive as buffers fill\n");
    if (atexit(kvs_at_exit) != 0)
        fprintf(stderr, "kvscope-cupti: atexit failed; records of the last period may be lost\n");
    return 1;
}

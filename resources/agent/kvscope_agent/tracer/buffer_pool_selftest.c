/*
 * Drives the library's activity-buffer pool through its CUPTI callbacks without a GPU, the way
 * CUPTI does: request a buffer, fill it (as CUPTI writes records), hand it back completed, let the
 * flusher's clean step run, request again. tests/test_tracer_pool.py checks what it prints: every
 * buffer handed to CUPTI is zeroed in full (the library promises CUPTI zeroed buffers), completed
 * buffers are reused rather than allocated again, buffers not of the pool's size are not kept,
 * and the pool stays bounded. Needs libcupti (linked), no GPU.
 *
 * usage: buffer_pool_selftest     (one JSON line per check)
 */
#include "kvscope_cupti.c"

static int all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return 0;
    return 1;
}

static void stats(const char *label)
{
    uint64_t a = 0, r = 0, z = 0;
    kvscope_cupti_pool_stats(&a, &r, &z);
    printf("{\"check\":\"%s\",\"allocated\":%llu,\"reused\":%llu,\"zeroed_on_request\":%llu,"
           "\"clean\":%u,\"dirty\":%u}\n",
           label, (unsigned long long)a, (unsigned long long)r, (unsigned long long)z, g_nclean,
           g_ndirty);
}

int main(void)
{
    g_buffer_bytes = KVS_MIN_BUFFER_BYTES;
    kvs_pool_prefill();
    stats("prefill");

    uint8_t *b = NULL;
    size_t size = 0, maxr = 1;
    kvs_buffer_requested(&b, &size, &maxr);
    printf("{\"check\":\"first\",\"size\":%zu,\"zero\":%d,\"aligned\":%d,\"max_records\":%zu}\n",
           size, b && all_zero(b, size), b && ((uintptr_t)b % 8 == 0), maxr);
    /* CUPTI writes records over the whole buffer; none is an activity record kind we convert
     * (valid_size 0), so completing it writes nothing and returns the buffer to the pool. */
    memset(b, 0xA5, size);
    uint8_t *first = b;
    kvs_buffer_completed(NULL, 0, b, size, 0);
    stats("completed");
    kvs_pool_clean();
    stats("cleaned");

    /* Take every clean buffer: the one used above must come back, zeroed in full. */
    uint8_t *got[KVS_POOL_MAX + 2];
    int n = 0, saw_first = 0, zero = 1;
    for (; n < (int)KVS_POOL_PREFILL; n++) {
        kvs_buffer_requested(&got[n], &size, &maxr);
        saw_first |= got[n] == first;
        zero &= got[n] != NULL && all_zero(got[n], size);
    }
    printf("{\"check\":\"reuse\",\"saw_first\":%d,\"zero\":%d}\n", saw_first, zero);

    /* Completed but not yet cleaned (the flusher has not run): a request zeroes one itself. */
    memset(got[0], 0x5A, size);
    kvs_buffer_completed(NULL, 0, got[0], size, 0);
    uint8_t *again = NULL;
    kvs_buffer_requested(&again, &size, &maxr);
    printf("{\"check\":\"dirty_request\",\"same\":%d,\"zero\":%d}\n", again == got[0],
           again != NULL && all_zero(again, size));
    stats("dirty_request");

    /* More completed buffers than the pool keeps: the extra ones are freed, the pool bounded. */
    got[0] = again;
    for (int i = n; i < (int)KVS_POOL_MAX + 2; i++)
        kvs_buffer_requested(&got[i], &size, &maxr);
    for (int i = 0; i < (int)KVS_POOL_MAX + 2; i++)
        kvs_buffer_completed(NULL, 0, got[i], size, 0);
    stats("overflow");
    kvs_pool_clean();
    stats("overflow_cleaned");

    /* A buffer not of the pool's size (not the library's) is freed, never handed out later. */
    uint8_t *foreign = NULL;
    if (posix_memalign((void **)&foreign, 8, 4096) != 0)
        return 1;
    kvs_buffer_completed(NULL, 0, foreign, 4096, 0);
    stats("foreign");

    /* KVSCOPE_TRACE_POOL=0: every request allocates, every completed buffer is freed. */
    g_pool_on = 0;
    uint8_t *o1 = NULL, *o2 = NULL;
    kvs_buffer_requested(&o1, &size, &maxr);
    kvs_buffer_completed(NULL, 0, o1, size, 0);
    kvs_buffer_requested(&o2, &size, &maxr);
    kvs_buffer_completed(NULL, 0, o2, size, 0);
    stats("pool_off");
    return 0;
}

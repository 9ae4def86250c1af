/*
 * Feeds the library's buffer-completed callback a buffer of real CUPTI record structs (the
 * CUpti_ActivityMemcpy6 / MemcpyPtoP4 / Memset4 of the CUPTI headers it is compiled against),
 * walked by CUPTI's own cuptiActivityGetNextRecord, and lets it write them to a trace file.
 * tests/test_tracer_build.py decodes that file: the prefix structs kvscope_cupti.c reads must
 * yield the values put into CUPTI's structs. Needs libcupti, no GPU.
 *
 * usage: cupti_convert_selftest OUT_FILE    (prints the values it stored, one JSON per record)
 */
#include "kvscope_cupti.c"

#if !(defined(CUPTI_API_VERSION) && CUPTI_API_VERSION >= 130000)
#error "this self-test builds CUDA 13 CUPTI records"
#endif

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT_FILE\n", argv[0]);
        return 2;
    }
    g_fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (g_fd < 0) {
        perror(argv[1]);
        return 1;
    }
    size_t size = 1 << 16;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 8, size) != 0)
        return 1;
    memset(buf, 0, size);
    size_t off = 0;

    CUpti_ActivityMemcpy6 *m = (CUpti_ActivityMemcpy6 *)(buf + off);
    m->kind = CUPTI_ACTIVITY_KIND_MEMCPY;
    m->copyKind = CUPTI_ACTIVITY_MEMCPY_KIND_HTOD;
    m->srcKind = CUPTI_ACTIVITY_MEMORY_KIND_PINNED;
    m->dstKind = CUPTI_ACTIVITY_MEMORY_KIND_DEVICE;
    m->flags = CUPTI_ACTIVITY_FLAG_MEMCPY_ASYNC;
    m->bytes = 0x123456789ull;
    m->start = 0x18ec0b625f4088eaull;
    m->end = 0x18ec0b625f4188eaull;
    m->deviceId = 3;
    m->contextId = 4;
    m->streamId = 55;
    m->correlationId = 0xabcdef;
    m->runtimeCorrelationId = 99;
    m->copyCount = 7;
    off += sizeof *m;

    CUpti_ActivityMemcpyPtoP4 *p = (CUpti_ActivityMemcpyPtoP4 *)(buf + off);
    p->kind = CUPTI_ACTIVITY_KIND_MEMCPY2;
    p->copyKind = CUPTI_ACTIVITY_MEMCPY_KIND_PTOP;
    p->srcKind = CUPTI_ACTIVITY_MEMORY_KIND_DEVICE;
    p->dstKind = CUPTI_ACTIVITY_MEMORY_KIND_DEVICE;
    p->bytes = 1 << 20;
    p->start = 1000;
    p->end = 2000;
    p->deviceId = 1;
    p->contextId = 2;
    p->streamId = 9;
    p->srcDeviceId = 1;
    p->dstDeviceId = 2;
    p->correlationId = 42;
    off += sizeof *p;

    CUpti_ActivityMemset4 *s = (CUpti_ActivityMemset4 *)(buf + off);
    s->kind = CUPTI_ACTIVITY_KIND_MEMSET;
    s->value = 0;
    s->bytes = 4096;
    s->start = 3000;
    s->end = 3500;
    s->deviceId = 0;
    s->contextId = 1;
    s->streamId = 7;
    s->correlationId = 43;
    s->flags = 1;
    s->memoryKind = CUPTI_ACTIVITY_MEMORY_KIND_DEVICE;
    off += sizeof *s;

    printf("{\"sizes\":[%zu,%zu,%zu],\"valid\":%zu}\n", sizeof *m, sizeof *p, sizeof *s, off);
    fflush(stdout);
    kvs_buffer_completed(NULL, 0, buf, size, off); /* frees buf */
    close(g_fd);
    return 0;
}

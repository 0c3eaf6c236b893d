/* grpc_fuzz.c — libFuzzer target for client/grpc.c: the gRPC message reader fed the input in
 * input-chosen splits must deliver exactly the messages (bytes and order) that a one-shot
 * reference parser finds, and fail exactly where the reference fails; also grpc-message
 * percent-decoding and grpc-timeout formatting on input-derived values.
 * Built and run by tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"

#define FUZZ_ASSERT(c) do { if (!(c)) __builtin_trap(); } while (0)

typedef struct seen {
    uint8_t *cat;      /* every delivered message, each as 4-byte length + bytes */
    size_t len, cap;
    size_t n;
} seen;

static void seen_add(void *arg, const uint8_t *m, size_t len)
{
    seen *s = arg;
    FUZZ_ASSERT(m != NULL || len == 0);
    if (s->len + len + 4 > s->cap) {
        s->cap = (s->len + len + 4) * 2;
        s->cat = realloc(s->cat, s->cap);
        FUZZ_ASSERT(s->cat);
    }
    uint32_t l = (uint32_t)len;
    memcpy(s->cat + s->len, &l, 4);
    if (len)
        memcpy(s->cat + s->len + 4, m, len);
    s->len += 4 + len;
    s->n++;
}

/* The reference: walk whole frames of the complete input. Returns the error the reader must
 * report (0 when the input ends cleanly or in the middle of a frame). */
static int reference(const uint8_t *d, size_t len, size_t max, seen *out)
{
    while (len >= 5) {
        if (d[0] != 0)
            return -ETCD_E_PROTOCOL;
        uint32_t ml = (uint32_t)d[1] << 24 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 8 | d[4];
        if (ml > max)
            return -ETCD_E_TOO_LARGE;
        if (len - 5 < ml)
            return 0;
        seen_add(out, d + 5, ml);
        d += 5 + ml;
        len -= 5 + ml;
    }
    return 0;
}

static void fuzz_reader(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t max = (data[0] & 1) ? 64 : 1u << 20;     /* small limit: reach TOO_LARGE often */
    unsigned step = data[1];                         /* 0: one chunk; else split pattern */
    data += 2;
    size -= 2;

    seen want = {0}, got = {0};
    int want_rc = reference(data, size, max, &want);

    grpc_reader g = {.max_len = max};
    int rc = 0;
    size_t off = 0, i = 0;
    while (off < size && rc == 0) {
        size_t n = step ? 1 + ((step * (i + 1) * 7) % 97) : size;
        if (n > size - off)
            n = size - off;
        rc = grpc_reader_feed(&g, data + off, n, seen_add, &got);
        off += n;
        i++;
    }
    grpc_reader_reset(&g);
    FUZZ_ASSERT(rc == want_rc);
    /* On an error the reader may stop before delivering later messages; before it, and
     * always without error, it delivered exactly the reference's messages. */
    FUZZ_ASSERT(got.n == want.n && got.len == want.len);
    FUZZ_ASSERT(got.len == 0 || memcmp(got.cat, want.cat, got.len) == 0);
    free(want.cat);
    free(got.cat);
}

static void fuzz_strings(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    FUZZ_ASSERT(s);
    memcpy(s, data, size);
    s[size] = '\0';
    size_t before = strlen(s);
    grpc_message_decode(s);
    FUZZ_ASSERT(strlen(s) <= before);   /* decoding never grows (a %00 shortens the string) */
    free(s);

    int ms = 0;
    if (size >= 4)
        memcpy(&ms, data, 4);
    char out[16];
    memset(out, 'x', sizeof out);
    grpc_timeout_format(out, ms);
    size_t l = strnlen(out, sizeof out);
    /* gRPC allows at most 8 digits plus the unit. */
    FUZZ_ASSERT(l >= 2 && l <= 9);
    FUZZ_ASSERT(out[l - 1] == 'S' || out[l - 1] == 'm');
    for (size_t k = 0; k + 1 < l; k++)
        FUZZ_ASSERT(out[k] >= '0' && out[k] <= '9');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_reader(data, size);
    fuzz_strings(data, size);
    return 0;
}

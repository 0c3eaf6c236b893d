/* grpc_test.c — gRPC framing without a network: the 5-byte prefix, the incremental reader fed
 * across every possible split, compressed and oversized messages, grpc-timeout values and
 * grpc-message percent-decoding (client/grpc.c). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rpc.h"

typedef struct sink {
    int n;
    size_t lens[16];
    uint8_t data[4096];
    size_t used;
} sink;

static void on_msg(void *arg, const uint8_t *m, size_t len)
{
    sink *s = arg;
    if (s->n < 16)
        s->lens[s->n] = len;
    s->n++;
    if (s->used + len <= sizeof s->data) {
        memcpy(s->data + s->used, m, len);
        s->used += len;
    }
}

/* Three messages: "hello", empty, 300 bytes of a pattern. */
static size_t build_stream(uint8_t *out, uint8_t *expect, size_t *expect_len)
{
    size_t n = 0, e = 0;
    grpc_frame_header(out + n, 5);
    n += 5;
    memcpy(out + n, "hello", 5);
    n += 5;
    memcpy(expect + e, "hello", 5);
    e += 5;
    grpc_frame_header(out + n, 0);
    n += 5;
    grpc_frame_header(out + n, 300);
    n += 5;
    for (int i = 0; i < 300; i++) {
        out[n++] = (uint8_t)(i * 7);
        expect[e++] = (uint8_t)(i * 7);
    }
    *expect_len = e;
    return n;
}

static bool check_sink(const sink *s, const uint8_t *expect, size_t elen)
{
    return s->n == 3 && s->lens[0] == 5 && s->lens[1] == 0 && s->lens[2] == 300 &&
           s->used == elen && memcmp(s->data, expect, elen) == 0;
}

static void test_header(void)
{
    uint8_t h[5];
    grpc_frame_header(h, 0x01020304);
    CHECK(h[0] == 0 && h[1] == 1 && h[2] == 2 && h[3] == 3 && h[4] == 4,
          "frame header: uncompressed flag and big-endian length");
    grpc_frame_header(h, 0);
    CHECK(h[0] == 0 && h[1] == 0 && h[4] == 0, "frame header of an empty message");
}

static void test_reader_splits(void)
{
    uint8_t stream[512], expect[512];
    size_t elen;
    size_t n = build_stream(stream, expect, &elen);

    sink whole = {0};
    grpc_reader g = {.max_len = 1 << 20};
    int rc = grpc_reader_feed(&g, stream, n, on_msg, &whole);
    CHECK(rc == 0 && check_sink(&whole, expect, elen), "reader: all messages in one chunk");
    grpc_reader_reset(&g);

    /* Every two-way split, and the three-way splits around the headers. */
    bool all_ok = true;
    for (size_t a = 0; a <= n; a++) {
        sink s = {0};
        rc = grpc_reader_feed(&g, stream, a, on_msg, &s);
        rc |= grpc_reader_feed(&g, stream + a, n - a, on_msg, &s);
        if (rc != 0 || !check_sink(&s, expect, elen)) {
            all_ok = false;
            DIAG("split at %zu failed", a);
        }
        grpc_reader_reset(&g);
    }
    CHECK(all_ok, "reader: every split in two gives the same messages");

    all_ok = true;
    for (size_t a = 0; a < 20; a++)
        for (size_t b = a; b < n; b += 3) {
            sink s = {0};
            rc = grpc_reader_feed(&g, stream, a, on_msg, &s);
            rc |= grpc_reader_feed(&g, stream + a, b - a, on_msg, &s);
            rc |= grpc_reader_feed(&g, stream + b, n - b, on_msg, &s);
            if (rc != 0 || !check_sink(&s, expect, elen))
                all_ok = false;
            grpc_reader_reset(&g);
        }
    CHECK(all_ok, "reader: three-way splits give the same messages");

    sink s = {0};
    rc = 0;
    for (size_t i = 0; i < n; i++)
        rc |= grpc_reader_feed(&g, stream + i, 1, on_msg, &s);
    CHECK(rc == 0 && check_sink(&s, expect, elen), "reader: one byte at a time");
    grpc_reader_reset(&g);

    s = (sink){0};
    rc = grpc_reader_feed(&g, stream, 12, on_msg, &s);
    grpc_reader_reset(&g);
    rc |= grpc_reader_feed(&g, stream, n, on_msg, &s);
    CHECK(rc == 0 && s.n == 4, "reader: reset drops a partial message (%d messages)", s.n);
    grpc_reader_reset(&g);
}

static void test_reader_errors(void)
{
    uint8_t buf[16];
    grpc_reader g = {.max_len = 100};
    sink s = {0};
    grpc_frame_header(buf, 3);
    buf[0] = 1;   /* compressed */
    memcpy(buf + 5, "abc", 3);
    CHECK(grpc_reader_feed(&g, buf, 8, on_msg, &s) == -ETCD_E_PROTOCOL && s.n == 0,
          "compressed flag is a protocol error");
    grpc_reader_reset(&g);
    CHECK(grpc_reader_feed(&g, buf, 1, on_msg, &s) == 0 &&
          grpc_reader_feed(&g, buf + 1, 7, on_msg, &s) == -ETCD_E_PROTOCOL,
          "compressed flag detected across a split header");
    grpc_reader_reset(&g);

    grpc_frame_header(buf, 101);
    CHECK(grpc_reader_feed(&g, buf, 5, on_msg, &s) == -ETCD_E_TOO_LARGE,
          "message past max_len is TOO_LARGE");
    grpc_reader_reset(&g);
    grpc_frame_header(buf, 100);
    CHECK(grpc_reader_feed(&g, buf, 5, on_msg, &s) == 0 && s.n == 0,
          "message of exactly max_len is accepted (waits for its body)");
    grpc_reader_reset(&g);

    grpc_reader big = {.max_len = 64u << 20};
    grpc_frame_header(buf, (64u << 20) + 1);
    CHECK(grpc_reader_feed(&big, buf, 5, on_msg, &s) == -ETCD_E_TOO_LARGE,
          "64 MiB + 1 refused before allocating");
    grpc_reader_reset(&big);
}

static void test_timeout(void)
{
    char out[16];
    grpc_timeout_format(out, 1000);
    CHECK(strcmp(out, "1S") == 0, "1000 ms → %s", out);
    grpc_timeout_format(out, 250);
    CHECK(strcmp(out, "250m") == 0, "250 ms → %s", out);
    grpc_timeout_format(out, 10000);
    CHECK(strcmp(out, "10S") == 0, "10000 ms → %s", out);
    grpc_timeout_format(out, 1500);
    CHECK(strcmp(out, "1500m") == 0, "1500 ms → %s", out);
    grpc_timeout_format(out, 0);
    CHECK(strcmp(out, "1m") == 0, "0 ms → %s (never zero or negative)", out);
    grpc_timeout_format(out, -5);
    CHECK(strcmp(out, "1m") == 0, "-5 ms → %s", out);
    grpc_timeout_format(out, 100000001);
    CHECK(strlen(out) <= 9 && out[strlen(out) - 1] == 'S', "huge timeout stays within 8 digits: %s",
          out);
}

static void test_message_decode(void)
{
    char s1[] = "etcdserver: request is too large";
    grpc_message_decode(s1);
    CHECK(strcmp(s1, "etcdserver: request is too large") == 0, "plain text unchanged");
    char s2[] = "a%20b%3Ac%25";
    grpc_message_decode(s2);
    CHECK(strcmp(s2, "a b:c%") == 0, "percent escapes decoded: %s", s2);
    char s3[] = "%E2%9C%93 ok";
    grpc_message_decode(s3);
    CHECK(strcmp(s3, "\xe2\x9c\x93 ok") == 0, "UTF-8 bytes decoded");
    char s4[] = "100% sure %zz %4";
    grpc_message_decode(s4);
    CHECK(strcmp(s4, "100% sure %zz %4") == 0, "malformed escapes kept: %s", s4);
    char s5[] = "";
    grpc_message_decode(s5);
    CHECK(s5[0] == '\0', "empty message");
}

int main(void)
{
    test_header();
    test_reader_splits();
    test_reader_errors();
    test_timeout();
    test_message_decode();
    return check_done();
}

/* grpc.c — gRPC wire framing independent of any socket: the 5-byte message prefix, an
 * incremental reader that reassembles length-prefixed messages from arbitrary byte splits,
 * the grpc-timeout header value and grpc-message percent-decoding. */
#include "rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRPC_DEFAULT_MAX (64u << 20)

void grpc_frame_header(uint8_t out[5], uint32_t len)
{
    out[0] = 0; /* never compressed: we do not negotiate grpc-encoding */
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

void grpc_reader_reset(grpc_reader *g)
{
    free(g->msg);
    g->msg = NULL;
    g->hdr_have = 0;
    g->msg_len = g->msg_have = 0;
}

/* Validates a complete prefix and sets msg_len. */
static int reader_take_header(grpc_reader *g, const uint8_t *h)
{
    size_t max = g->max_len ? g->max_len : GRPC_DEFAULT_MAX;
    if (h[0] != 0)
        return -ETCD_E_PROTOCOL;
    uint32_t len = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
    if (len > max)
        return -ETCD_E_TOO_LARGE;
    g->msg_len = len;
    g->msg_have = 0;
    return 0;
}

int grpc_reader_feed(grpc_reader *g, const uint8_t *data, size_t len,
                     void (*on_msg)(void *arg, const uint8_t *msg, size_t len), void *arg)
{
    while (len > 0) {
        if (g->hdr_have < 5) {
            /* Fast path: a whole message in this chunk is delivered without a copy. */
            if (g->hdr_have == 0 && len >= 5) {
                int rc = reader_take_header(g, data);
                if (rc < 0)
                    return rc;
                if (len - 5 >= g->msg_len) {
                    on_msg(arg, data + 5, g->msg_len);
                    data += 5 + g->msg_len;
                    len -= 5 + g->msg_len;
                    g->msg_len = 0;
                    continue;
                }
                memcpy(g->hdr, data, 5);
                g->hdr_have = 5;
                data += 5;
                len -= 5;
            } else {
                size_t n = 5 - g->hdr_have;
                if (n > len)
                    n = len;
                memcpy(g->hdr + g->hdr_have, data, n);
                g->hdr_have += n;
                data += n;
                len -= n;
                if (g->hdr_have < 5)
                    break;
                int rc = reader_take_header(g, g->hdr);
                if (rc < 0)
                    return rc;
            }
            if (g->msg_len > 0) {
                g->msg = malloc(g->msg_len);
                if (!g->msg)
                    return -ETCD_E_NOMEM;
            }
        }
        size_t n = g->msg_len - g->msg_have;
        if (n > len)
            n = len;
        if (n) {
            memcpy(g->msg + g->msg_have, data, n);
            g->msg_have += n;
            data += n;
            len -= n;
        }
        if (g->msg_have == g->msg_len) {
            uint8_t *m = g->msg;
            size_t ml = g->msg_len;
            g->msg = NULL;
            g->hdr_have = 0;
            g->msg_len = g->msg_have = 0;
            on_msg(arg, m ? m : (const uint8_t *)"", ml);
            free(m);
        }
    }
    return 0;
}

void grpc_timeout_format(char out[16], int timeout_ms)
{
    /* The value has at most 8 digits; milliseconds cover 27 hours, beyond that seconds. */
    if (timeout_ms < 1)
        timeout_ms = 1;
    if (timeout_ms % 1000 == 0)
        snprintf(out, 16, "%dS", timeout_ms / 1000);
    else if (timeout_ms <= 99999999)
        snprintf(out, 16, "%dm", timeout_ms);
    else
        snprintf(out, 16, "%dS", timeout_ms / 1000 + 1);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void grpc_message_decode(char *s)
{
    char *w = s;
    for (const char *p = s; *p; p++) {
        int hi, lo;
        /* A malformed escape is kept literally, as the gRPC spec asks of receivers. */
        if (p[0] == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0) {
            *w++ = (char)(hi << 4 | lo);
            p += 2;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
}

/* h2_fuzz.c — libFuzzer target for the HTTP/2 layer of client/rpc.c: the input, after a
 * first byte that picks the read size, is what a hostile server sends on a connection that
 * carries one unary call and two streams; it goes through nghttp2 into our callbacks (headers,
 * grpc-status/-message, DATA into the gRPC reader, RST_STREAM, GOAWAY, stream close and retry
 * decisions). Stream messages are decoded as WatchResponse like watch.c does.
 * Needs client/rpc.c built with -DETCDFS_FUZZ_HOOKS. Built and run by tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

int rpc_fuzz_h2(const uint8_t *data, size_t len, size_t chunk,
                void (*on_msg)(void *arg, const uint8_t *msg, size_t len));

static void on_msg(void *arg, const uint8_t *msg, size_t len)
{
    (void)arg;
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, msg);
    if (r)
        etcdserverpb__watch_response__free_unpacked(r, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const size_t chunks[8] = {0, 1, 7, 9, 64, 1000, 4096, 0};
    size_t chunk = chunks[data[0] & 7];
    rpc_fuzz_h2(data + 1, size - 1, chunk, on_msg);
    return 0;
}

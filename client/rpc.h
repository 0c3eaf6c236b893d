/* rpc.h — the transport under the etcd API: one event-loop thread owning every socket,
 * TLS (OpenSSL, ALPN h2) or h2c, one nghttp2 client session per connection, gRPC framing and
 * status, endpoint selection and failover, PING keepalive. Knows nothing of etcd's messages:
 * requests and responses are serialized protobuf bytes. Used only by the files of client/. */
#ifndef ETCDFS_RPC_H
#define ETCDFS_RPC_H

#include "etcd.h"

typedef struct rpc rpc;

typedef struct rpc_config {
    const char *const *endpoints;
    size_t n_endpoints;
    const char *cacert, *cert, *key;
    bool insecure_skip_verify;
    int dial_timeout_ms, keepalive_time_ms, keepalive_timeout_ms; /* already defaulted */
} rpc_config;

/* Parses endpoints, builds the TLS context (loads CA, cert, key: errors here name the file),
 * starts the loop thread. Connects lazily: see rpc_connect. */
int rpc_new(const rpc_config *cfg, rpc **out, etcd_error *err);
/* Fails pending calls with ETCD_E_CANCELLED, closes streams (their on_close runs), joins. */
void rpc_free(rpc *r);
/* Connects to the first endpoint that answers (TCP, TLS, HTTP/2 SETTINGS exchanged) within
 * the dial timeout of each; the error says why the last one failed (refused, TLS verify failed:
 * reason, not HTTP/2, ...). */
int rpc_connect(rpc *r, etcd_error *err);
/* URL of the endpoint in use (or last tried). Stable pointer owned by r. */
const char *rpc_endpoint(rpc *r);

enum rpc_flags {
    /* Safe to send again after the connection broke with the request possibly delivered
     * (Range, read-only Txn, Status, MemberList, ...). Without it a call is retried on another
     * endpoint only when the request provably never reached etcd (connect failed, stream
     * refused, GOAWAY below our stream id); otherwise it fails with ETCD_E_UNKNOWN_OUTCOME. */
    RPC_IDEMPOTENT = 1 << 0,
};

typedef struct rpc_call_opts {
    const char *method;     /* "/etcdserverpb.KV/Range" */
    const char *token;      /* etcd auth token sent as "token" metadata, or NULL */
    const char *endpoint;   /* send to this URL only (own connection, no failover), or NULL */
    int timeout_ms;         /* deadline, also sent as grpc-timeout */
    unsigned flags;
} rpc_call_opts;

/* A unary call. On success *resp (malloc'd, caller frees; may be NULL when len 0) holds the
 * one response message. On failure err holds grpc-status and grpc-message when the server sent
 * them, or the local cause. Returns 0 or -ETCD_E_*. Unavailable endpoints (connection refused,
 * reset, dead by keepalive, GOAWAY, UNAVAILABLE status) are failed over within the deadline as
 * the flags allow. Response messages up to 64 MiB are accepted. */
int rpc_unary(rpc *r, const rpc_call_opts *o, const uint8_t *req, size_t req_len, uint8_t **resp,
              size_t *resp_len, etcd_error *err);

/* Streams (Watch, LeaseKeepAlive: bidirectional; Snapshot: server streaming). */
typedef struct rpc_stream rpc_stream;

typedef struct rpc_stream_cbs {
    /* One whole gRPC message. Loop thread; must not block or call rpc_* functions that wait
     * (rpc_stream_send and rpc_stream_consume are fine). */
    void (*on_msg)(void *arg, const uint8_t *msg, size_t len);
    /* The stream ended: err->code 0 for a clean end (grpc-status 0), else the cause (transport
     * loss is ETCD_E_UNAVAILABLE). Called exactly once unless rpc_stream_close came first. */
    void (*on_close)(void *arg, const etcd_error *err);
} rpc_stream_cbs;

enum rpc_stream_flags {
    /* Flow control by the consumer: the receive window is returned to the server only by
     * rpc_stream_consume (used by snapshot). Otherwise data is consumed as delivered. */
    RPC_STREAM_MANUAL_FLOW = 1 << 8,
};

/* Opens a stream on the current connection (connecting/failing over first if needed, within
 * o->timeout_ms; o->timeout_ms is NOT sent as grpc-timeout for streams). The first message may
 * be given (NULL/0 for none). Returns once the stream is submitted; errors later go to on_close. */
int rpc_stream_open(rpc *r, const rpc_call_opts *o, const rpc_stream_cbs *cbs, void *arg,
                    const uint8_t *first, size_t first_len, rpc_stream **out, etcd_error *err);
/* Queues one message (copied). Any thread. -ETCD_E_CANCELLED when the stream has ended. */
int rpc_stream_send(rpc_stream *s, const uint8_t *msg, size_t len);
/* Half-close our side (END_STREAM) after the queued messages. Any thread. */
int rpc_stream_end(rpc_stream *s);
/* RPC_STREAM_MANUAL_FLOW: give back n bytes of receive window. Any thread. */
void rpc_stream_consume(rpc_stream *s, size_t n);
/* Cancels (RST_STREAM CANCEL) if still open and frees. After it returns no callback of this
 * stream runs, even one already in progress on the loop thread has finished. Any thread but the
 * loop thread. */
void rpc_stream_close(rpc_stream *s);

/* Run fn(arg) on the loop thread as soon as possible (used by stream owners to re-open streams
 * from a callback context without blocking). Any thread. */
int rpc_defer(rpc *r, void (*fn)(void *arg), void *arg);

/* ---- gRPC framing (grpc.c), exposed for unit tests and fuzzing ---- */

/* 5-byte prefix: compressed flag, big-endian length. */
void grpc_frame_header(uint8_t out[5], uint32_t len);

typedef struct grpc_reader {
    uint8_t hdr[5];
    size_t hdr_have;
    uint8_t *msg;
    size_t msg_len, msg_have;
    size_t max_len;
} grpc_reader;

/* Feeds bytes; for each complete message calls on_msg. Returns 0, or -ETCD_E_PROTOCOL on a
 * compressed message (we never negotiate compression), -ETCD_E_TOO_LARGE past max_len. */
int grpc_reader_feed(grpc_reader *g, const uint8_t *data, size_t len,
                     void (*on_msg)(void *arg, const uint8_t *msg, size_t len), void *arg);
void grpc_reader_reset(grpc_reader *g);

/* "1S", "250m", ... for a deadline in ms. */
void grpc_timeout_format(char out[16], int timeout_ms);
/* Percent-decodes a grpc-message in place. */
void grpc_message_decode(char *s);

#endif

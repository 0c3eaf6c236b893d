/* internal.h — what client/ sources share behind etcd.h: the etcd_client struct, the unary call
 * helper (token metadata, transparent re-authentication, protobuf packing) and the hooks by
 * which the watch and lease modules hang their per-client state on the client. */
#ifndef ETCDFS_CLIENT_INTERNAL_H
#define ETCDFS_CLIENT_INTERNAL_H

#include <protobuf-c/protobuf-c.h>
#include <pthread.h>

#include "etcd.h"
#include "kv.pb-c.h"
#include "rpc.h"
#include "rpc.pb-c.h"

/* Lock order: c->mux_mu (only to create a mux) and c->tok_mu (held across the Authenticate
 * call) are leaves for our own locks; watch_mux.mu and lease_mux.mu are taken before the
 * transport's internal lock (rpc_stream_send under them) and are never held while a user
 * callback runs or while waiting on the transport (stream open/close happen unlocked). */
struct watch_mux;
struct lease_mux;

struct etcd_client {
    rpc *rpc;
    int call_timeout_ms;
    char *user, *password;

    /* The auth token and a generation counter bumped at each renewal, so that several threads
     * hitting an expired token renew it once. */
    pthread_mutex_t tok_mu;
    char *token;
    unsigned long tok_gen;

    pthread_mutex_t mux_mu;          /* guards creation of the two muxes below */
    struct watch_mux *watch;         /* watch.c, created at the first watch */
    struct lease_mux *lease;         /* lease.c, created at the first keepalive_start */
};

/* A copy of the current token (NULL without auth) and its generation. Caller frees. */
char *client_token(etcd_client *c, unsigned long *gen);
/* Authenticate again unless someone already did since generation gen. */
int client_reauth(etcd_client *c, unsigned long gen, etcd_error *err);

/* One unary call: packs req, sends it with the token (re-authenticating once on an invalid
 * token), unpacks the answer with resp_desc into *resp (free with protobuf_c_message_free_
 * unpacked). timeout_ms 0 → client default; endpoint NULL → the current connection. */
int client_call(etcd_client *c, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                int timeout_ms, unsigned flags, const char *endpoint, etcd_error *err);

/* Whether a serialized response nests messages no deeper than 32 levels (client_call refuses
 * deeper ones before protobuf-c's recursive unpack could overflow the stack). */
bool client_pb_depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len);

/* Opens a stream with the current token. */
int client_stream_open(etcd_client *c, const char *method, const rpc_stream_cbs *cbs, void *arg,
                       const uint8_t *first, size_t first_len, int timeout_ms,
                       unsigned flags, rpc_stream **out, etcd_error *err);

/* Packs a message into malloc'd bytes. NULL on ENOMEM. */
uint8_t *client_pack(const ProtobufCMessage *m, size_t *len);

void client_header(etcd_header *out, const Etcdserverpb__ResponseHeader *h);
void client_kv(etcd_kv *out, const Mvccpb__KeyValue *kv);

/* Monotonic milliseconds. */
int64_t client_now_ms(void);

/* Teardown hooks called by etcd_client_free before the transport goes away. */
void watch_mux_free(etcd_client *c);
void lease_mux_free(etcd_client *c);

#endif

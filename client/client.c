/* client.c — etcd_client lifetime (config defaults, transport, authentication) and the unary
 * call helper every API module uses: protobuf packing, token metadata, and one transparent
 * re-authentication when etcd says the token is invalid or expired. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

int64_t client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint8_t *client_pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}

void client_header(etcd_header *out, const Etcdserverpb__ResponseHeader *h)
{
    memset(out, 0, sizeof(*out));
    if (!h)
        return;
    out->cluster_id = h->cluster_id;
    out->member_id = h->member_id;
    out->revision = h->revision;
    out->raft_term = h->raft_term;
}

void client_kv(etcd_kv *out, const Mvccpb__KeyValue *kv)
{
    memset(out, 0, sizeof(*out));
    if (!kv)
        return;
    out->key = kv->key.data;
    out->key_len = kv->key.len;
    out->value = kv->value.data;
    out->value_len = kv->value.len;
    out->create_revision = kv->create_revision;
    out->mod_revision = kv->mod_revision;
    out->version = kv->version;
    out->lease = kv->lease;
}

char *client_token(etcd_client *c, unsigned long *gen)
{
    pthread_mutex_lock(&c->tok_mu);
    char *t = c->token ? strdup(c->token) : NULL;
    if (gen)
        *gen = c->tok_gen;
    pthread_mutex_unlock(&c->tok_mu);
    return t;
}

/* Authenticate is sent without a token; the mutex is held across the call so concurrent
 * renewals collapse into one (the others see the generation moved and just retry). */
int client_reauth(etcd_client *c, unsigned long gen, etcd_error *err)
{
    if (!c->user)
        return etcd_error_set(err, ETCD_E_INVALID_TOKEN, -1, "auth token rejected, no user");
    pthread_mutex_lock(&c->tok_mu);
    if (c->tok_gen != gen) {
        pthread_mutex_unlock(&c->tok_mu);
        return 0;
    }
    Etcdserverpb__AuthenticateRequest req = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
    req.name = c->user;
    req.password = c->password ? c->password : "";
    size_t len;
    uint8_t *buf = client_pack(&req.base, &len);
    if (!buf) {
        pthread_mutex_unlock(&c->tok_mu);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    rpc_call_opts o = { .method = "/etcdserverpb.Auth/Authenticate",
                        .timeout_ms = c->call_timeout_ms, .flags = RPC_IDEMPOTENT };
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    int rc = rpc_unary(c->rpc, &o, buf, len, &resp, &resp_len, err);
    free(buf);
    if (rc == 0) {
        Etcdserverpb__AuthenticateResponse *ar =
            etcdserverpb__authenticate_response__unpack(NULL, resp_len, resp);
        if (!ar || !ar->token || !ar->token[0]) {
            rc = etcd_error_set(err, ETCD_E_PROTOCOL, -1, "bad AuthenticateResponse");
        } else {
            char *t = strdup(ar->token);
            if (!t) {
                rc = etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
            } else {
                free(c->token);
                c->token = t;
                c->tok_gen++;
            }
        }
        if (ar)
            etcdserverpb__authenticate_response__free_unpacked(ar, NULL);
    }
    free(resp);
    pthread_mutex_unlock(&c->tok_mu);
    return rc;
}

/* protobuf-c unpacks nested messages recursively: a hostile server could nest TxnResponses
 * (ResponseOp.response_txn) deep enough to overflow the stack well under the 64 MiB message cap.
 * We never send nested Txns, so any nesting deeper than this is refused before unpacking. */
#define PB_MAX_DEPTH 32

static bool pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* false only when a message nests deeper than PB_MAX_DEPTH; malformed input is left to the
 * unpacker, which reports it. */
static bool pb_depth_ok_at(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                           int depth)
{
    if (depth > PB_MAX_DEPTH)
        return false;
    const uint8_t *end = p + len;
    while (p < end) {
        uint64_t tag, n;
        if (!pb_varint(&p, end, &tag))
            return true;
        switch (tag & 7) {
        case 0: if (!pb_varint(&p, end, &n)) return true; break;
        case 1: p += 8; break;
        case 5: p += 4; break;
        case 2: {
            if (!pb_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return true;
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !pb_depth_ok_at(f->descriptor, p, (size_t)n, depth + 1))
                return false;
            p += n;
            break;
        }
        default: return true;
        }
    }
    return true;
}

bool client_pb_depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len)
{
    return pb_depth_ok_at(d, p, len, 0);
}

int client_call(etcd_client *c, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                int timeout_ms, unsigned flags, const char *endpoint, etcd_error *err)
{
    size_t len;
    uint8_t *buf = client_pack(req, &len);
    if (!buf)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    etcd_error local;
    if (!err)
        err = &local;
    int rc;
    for (int attempt = 0;; attempt++) {
        unsigned long gen;
        char *token = client_token(c, &gen);
        rpc_call_opts o = { .method = method, .token = token, .endpoint = endpoint,
                            .timeout_ms = timeout_ms > 0 ? timeout_ms : c->call_timeout_ms,
                            .flags = flags };
        uint8_t *rbuf = NULL;
        size_t rlen = 0;
        rc = rpc_unary(c->rpc, &o, buf, len, &rbuf, &rlen, err);
        free(token);
        if (rc == -ETCD_E_INVALID_TOKEN && attempt == 0 && c->user) {
            /* etcd refused the request before executing it: safe to resend even a Put. */
            free(rbuf);
            if (client_reauth(c, gen, err) == 0)
                continue;
            rc = -err->code;
            break;
        }
        if (rc == 0 && !client_pb_depth_ok(resp_desc, rbuf, rlen)) {
            rc = etcd_error_set(err, ETCD_E_PROTOCOL, -1, "%s response nests messages deeper "
                                "than %d levels: refused", method, PB_MAX_DEPTH);
        } else if (rc == 0) {
            *resp = protobuf_c_message_unpack(resp_desc, NULL, rlen, rbuf);
            if (!*resp)
                rc = etcd_error_set(err, ETCD_E_PROTOCOL, -1, "cannot decode %s response",
                                    method);
        }
        free(rbuf);
        break;
    }
    free(buf);
    return rc;
}

int client_stream_open(etcd_client *c, const char *method, const rpc_stream_cbs *cbs, void *arg,
                       const uint8_t *first, size_t first_len, int timeout_ms,
                       unsigned flags, rpc_stream **out, etcd_error *err)
{
    char *token = client_token(c, NULL);
    rpc_call_opts o = { .method = method, .token = token,
                        .timeout_ms = timeout_ms > 0 ? timeout_ms : c->call_timeout_ms,
                        .flags = flags };
    int rc = rpc_stream_open(c->rpc, &o, cbs, arg, first, first_len, out, err);
    free(token);
    return rc;
}

static char *dup_opt(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

int etcd_client_new(const etcd_config *cfg, etcd_client **out, etcd_error *err)
{
    *out = NULL;
    if (!cfg || !cfg->endpoints || cfg->n_endpoints == 0)
        return etcd_error_set(err, ETCD_E_INVALID_ARG, -1, "no endpoints given");
    etcd_client *c = calloc(1, sizeof(*c));
    if (!c)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    bool oom = false;
    c->user = dup_opt(cfg->user, &oom);
    c->password = dup_opt(cfg->password, &oom);
    if (oom) {
        free(c->user);
        free(c->password);
        free(c);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    c->call_timeout_ms = cfg->call_timeout_ms > 0 ? cfg->call_timeout_ms : 10000;
    pthread_mutex_init(&c->tok_mu, NULL);
    pthread_mutex_init(&c->mux_mu, NULL);

    rpc_config rc_cfg = {
        .endpoints = cfg->endpoints, .n_endpoints = cfg->n_endpoints,
        .cacert = cfg->cacert, .cert = cfg->cert, .key = cfg->key,
        .insecure_skip_verify = cfg->insecure_skip_verify,
        .dial_timeout_ms = cfg->dial_timeout_ms > 0 ? cfg->dial_timeout_ms : 5000,
        /* The library's defaults are etcdctl-like (PING after 10 s idle, 5 s to answer);
         * etcdfs asks for 5.5 s / 2.5 s so a hung member is left within ~8 s (etcd's
         * --grpc-keepalive-min-time is 5 s: the margin keeps "too_many_pings" away). */
        .keepalive_time_ms = cfg->keepalive_time_ms > 0 ? cfg->keepalive_time_ms : 10000,
        .keepalive_timeout_ms = cfg->keepalive_timeout_ms > 0 ? cfg->keepalive_timeout_ms : 5000,
    };
    int rc = rpc_new(&rc_cfg, &c->rpc, err);
    if (rc == 0)
        rc = rpc_connect(c->rpc, err);
    if (rc == 0 && c->user)
        rc = client_reauth(c, c->tok_gen, err);
    if (rc) {
        etcd_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void etcd_client_free(etcd_client *c)
{
    if (!c)
        return;
    watch_mux_free(c);
    lease_mux_free(c);
    if (c->rpc)
        rpc_free(c->rpc);
    pthread_mutex_destroy(&c->tok_mu);
    pthread_mutex_destroy(&c->mux_mu);
    free(c->token);
    free(c->user);
    if (c->password) {
        memset(c->password, 0, strlen(c->password));
        free(c->password);
    }
    free(c);
}

int etcd_client_call_timeout(const etcd_client *c)
{
    return c->call_timeout_ms;
}

const char *etcd_client_endpoint(etcd_client *c)
{
    return rpc_endpoint(c->rpc);
}

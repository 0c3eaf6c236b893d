/* lease.c — Lease Grant/Revoke/TimeToLive/Leases, a one-shot keepalive, and long-running
 * keepalives: all leases kept alive by a client share one LeaseKeepAlive stream, refreshed every
 * ttl/3 by a timer thread that also re-opens the stream after a loss. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define LEASE_METHOD(name) "/etcdserverpb.Lease/" name
#define RETRY_MS 1000          /* resend when a refresh got no answer */

/* ---- unary calls ---- */

int etcd_lease_grant(etcd_client *c, int64_t ttl, int64_t id, int64_t *out_id, int64_t *out_ttl,
                     etcd_error *err)
{
    Etcdserverpb__LeaseGrantRequest r = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    r.ttl = ttl;
    r.id = id;
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, LEASE_METHOD("LeaseGrant"), &r.base,
                         &etcdserverpb__lease_grant_response__descriptor, &m, 0, 0, NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__LeaseGrantResponse *g = (Etcdserverpb__LeaseGrantResponse *)m;
    if (g->error && g->error[0])
        rc = etcd_error_set(err, etcd_err_from_grpc(2, g->error), -1, "%s", g->error);
    if (out_id)
        *out_id = g->id;
    if (out_ttl)
        *out_ttl = g->ttl;
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int etcd_lease_revoke(etcd_client *c, int64_t id, etcd_error *err)
{
    Etcdserverpb__LeaseRevokeRequest r = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    r.id = id;
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, LEASE_METHOD("LeaseRevoke"), &r.base,
                         &etcdserverpb__lease_revoke_response__descriptor, &m, 0, 0, NULL, err);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int etcd_lease_timetolive(etcd_client *c, int64_t id, bool keys, etcd_lease_ttl *out,
                          etcd_error *err)
{
    memset(out, 0, sizeof(*out));
    Etcdserverpb__LeaseTimeToLiveRequest r = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    r.id = id;
    r.keys = keys;
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, LEASE_METHOD("LeaseTimeToLive"), &r.base,
                         &etcdserverpb__lease_time_to_live_response__descriptor, &m, 0,
                         RPC_IDEMPOTENT, NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__LeaseTimeToLiveResponse *t = (Etcdserverpb__LeaseTimeToLiveResponse *)m;
    out->id = t->id;
    out->ttl = t->ttl;
    out->granted_ttl = t->grantedttl;
    out->priv = m;
    if (t->n_keys) {
        out->keys = calloc(t->n_keys, sizeof(*out->keys));
        out->key_lens = calloc(t->n_keys, sizeof(*out->key_lens));
        if (!out->keys || !out->key_lens) {
            etcd_lease_ttl_free(out);
            return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
        }
        for (size_t i = 0; i < t->n_keys; i++) {
            out->keys[i] = t->keys[i].data;
            out->key_lens[i] = t->keys[i].len;
        }
        out->n_keys = t->n_keys;
    }
    return 0;
}

void etcd_lease_ttl_free(etcd_lease_ttl *t)
{
    if (!t)
        return;
    free(t->keys);
    free(t->key_lens);
    if (t->priv)
        protobuf_c_message_free_unpacked(t->priv, NULL);
    memset(t, 0, sizeof(*t));
}

int etcd_lease_leases(etcd_client *c, int64_t **ids, size_t *n, etcd_error *err)
{
    *ids = NULL;
    *n = 0;
    Etcdserverpb__LeaseLeasesRequest r = ETCDSERVERPB__LEASE_LEASES_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, LEASE_METHOD("LeaseLeases"), &r.base,
                         &etcdserverpb__lease_leases_response__descriptor, &m, 0,
                         RPC_IDEMPOTENT, NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__LeaseLeasesResponse *l = (Etcdserverpb__LeaseLeasesResponse *)m;
    if (l->n_leases) {
        *ids = calloc(l->n_leases, sizeof(**ids));
        if (!*ids) {
            protobuf_c_message_free_unpacked(m, NULL);
            return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
        }
        for (size_t i = 0; i < l->n_leases; i++)
            (*ids)[i] = l->leases[i]->id;
        *n = l->n_leases;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static uint8_t *pack_keepalive(int64_t id, size_t *len)
{
    Etcdserverpb__LeaseKeepAliveRequest r = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    r.id = id;
    return client_pack(&r.base, len);
}

static void cv_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void abs_ms(struct timespec *ts, int64_t when_ms)
{
    ts->tv_sec = when_ms / 1000;
    ts->tv_nsec = (when_ms % 1000) * 1000000;
}

/* ---- one keepalive round trip on its own stream ---- */

typedef struct once_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int64_t ttl;
    etcd_error err;
} once_ctx;

static void once_on_msg(void *arg, const uint8_t *msg, size_t len)
{
    once_ctx *o = arg;
    Etcdserverpb__LeaseKeepAliveResponse *r =
        etcdserverpb__lease_keep_alive_response__unpack(NULL, len, msg);
    pthread_mutex_lock(&o->mu);
    if (!o->done) {
        o->done = true;
        if (r)
            o->ttl = r->ttl;
        else
            etcd_error_set(&o->err, ETCD_E_PROTOCOL, -1, "bad LeaseKeepAliveResponse");
        pthread_cond_broadcast(&o->cv);
    }
    pthread_mutex_unlock(&o->mu);
    if (r)
        etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
}

static void once_on_close(void *arg, const etcd_error *err)
{
    once_ctx *o = arg;
    pthread_mutex_lock(&o->mu);
    if (!o->done) {
        o->done = true;
        if (err && err->code)
            o->err = *err;
        else
            etcd_error_set(&o->err, ETCD_E_PROTOCOL, -1, "keepalive stream ended unanswered");
        pthread_cond_broadcast(&o->cv);
    }
    pthread_mutex_unlock(&o->mu);
}

static int keepalive_try(etcd_client *c, int64_t id, int64_t *ttl, unsigned long *gen,
                         etcd_error *err)
{
    static const rpc_stream_cbs cbs = { once_on_msg, once_on_close };
    once_ctx o = { .ttl = 0 };
    pthread_mutex_init(&o.mu, NULL);
    cv_init_mono(&o.cv);
    size_t len;
    uint8_t *buf = pack_keepalive(id, &len);
    rpc_stream *s = NULL;
    int rc;
    free(client_token(c, gen));
    if (!buf)
        rc = etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    else
        rc = client_stream_open(c, LEASE_METHOD("LeaseKeepAlive"), &cbs, &o, buf, len, 0, 0,
                                &s, err);
    free(buf);
    if (rc == 0) {
        struct timespec ts;
        abs_ms(&ts, client_now_ms() + c->call_timeout_ms);
        pthread_mutex_lock(&o.mu);
        while (!o.done)
            if (pthread_cond_timedwait(&o.cv, &o.mu, &ts) == ETIMEDOUT)
                break;
        bool done = o.done;
        pthread_mutex_unlock(&o.mu);
        rpc_stream_close(s);   /* after this no callback touches o */
        if (!done)
            rc = etcd_error_set(err, ETCD_E_DEADLINE, -1, "no keepalive answer in time");
        else if (o.err.code) {
            rc = -o.err.code;
            if (err)
                *err = o.err;
        } else if (ttl)
            *ttl = o.ttl > 0 ? o.ttl : 0;
    }
    pthread_mutex_destroy(&o.mu);
    pthread_cond_destroy(&o.cv);
    return rc;
}

int etcd_lease_keepalive_once(etcd_client *c, int64_t id, int64_t *ttl, etcd_error *err)
{
    unsigned long gen;
    int rc = keepalive_try(c, id, ttl, &gen, err);
    if (rc == -ETCD_E_INVALID_TOKEN && c->user) {
        rc = client_reauth(c, gen, err);
        if (rc == 0)
            rc = keepalive_try(c, id, ttl, &gen, err);
    }
    return rc;
}

/* ---- long-running keepalives on a shared stream ---- */

struct etcd_keepalive {
    struct lease_mux *mux;          /* NULL once the client is gone */
    int64_t id, ttl;
    int64_t next_ms;                /* when the next refresh is due */
    bool lost;
    void (*on_lost)(void *arg, int64_t id);
    void *arg;
    int in_cb;
    bool free_after_cb;
    struct etcd_keepalive *next;
};

struct lease_mux {
    etcd_client *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_stream *stream;
    bool need_reopen, shutdown;
    int backoff_ms;
    unsigned long tok_gen;
    bool need_reauth;
    etcd_keepalive *list;
    pthread_t thr;
    pthread_t loop_tid;
    bool have_loop_tid;
};

static void ka_list_remove(struct lease_mux *m, etcd_keepalive *k)
{
    for (etcd_keepalive **pp = &m->list; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            k->next = NULL;
            return;
        }
    }
}

static void ka_on_msg(void *arg, const uint8_t *msg, size_t len)
{
    struct lease_mux *m = arg;
    Etcdserverpb__LeaseKeepAliveResponse *r =
        etcdserverpb__lease_keep_alive_response__unpack(NULL, len, msg);
    if (!r)
        return;
    pthread_mutex_lock(&m->mu);
    m->loop_tid = pthread_self();
    m->have_loop_tid = true;
    m->backoff_ms = 0;
    int64_t now = client_now_ms();
    bool again = true;
    while (again) {
        again = false;
        for (etcd_keepalive *k = m->list; k; k = k->next) {
            if (k->id != r->id || k->lost)
                continue;
            if (r->ttl > 0) {
                k->ttl = r->ttl;
                k->next_ms = now + (r->ttl * 1000) / 3;
                continue;
            }
            /* Expired or revoked: tell the owner once; it leaves the refresh list. */
            k->lost = true;
            ka_list_remove(m, k);
            if (!k->on_lost)
                continue;
            k->in_cb++;
            pthread_mutex_unlock(&m->mu);
            k->on_lost(k->arg, k->id);
            pthread_mutex_lock(&m->mu);
            k->in_cb--;
            pthread_cond_broadcast(&m->cv);
            if (k->free_after_cb && k->in_cb == 0)
                free(k);
            again = true;          /* the list may have changed while unlocked */
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
}

static void ka_on_close(void *arg, const etcd_error *err)
{
    struct lease_mux *m = arg;
    pthread_mutex_lock(&m->mu);
    m->loop_tid = pthread_self();
    m->have_loop_tid = true;
    if (err && err->code == ETCD_E_INVALID_TOKEN)
        m->need_reauth = true;
    m->need_reopen = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* m->mu held on entry and exit. */
static void ka_reopen(struct lease_mux *m)
{
    static const rpc_stream_cbs cbs = { ka_on_msg, ka_on_close };
    rpc_stream *old = m->stream;
    m->stream = NULL;
    m->need_reopen = false;
    bool reauth = m->need_reauth;
    m->need_reauth = false;
    int backoff = m->backoff_ms;
    unsigned long gen = m->tok_gen;
    pthread_mutex_unlock(&m->mu);
    if (old)
        rpc_stream_close(old);
    if (backoff > 0) {
        struct timespec ts;
        abs_ms(&ts, client_now_ms() + backoff);
        pthread_mutex_lock(&m->mu);
        while (!m->shutdown && pthread_cond_timedwait(&m->cv, &m->mu, &ts) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&m->mu);
    }
    etcd_error e;
    int rc = 0;
    if (reauth && m->c->user)
        rc = client_reauth(m->c, gen, &e);
    rpc_stream *s = NULL;
    unsigned long new_gen = 0;
    free(client_token(m->c, &new_gen));
    if (rc == 0)
        rc = client_stream_open(m->c, LEASE_METHOD("LeaseKeepAlive"), &cbs, m, NULL, 0, 0, 0,
                                &s, &e);
    pthread_mutex_lock(&m->mu);
    m->backoff_ms = backoff ? (backoff * 2 > 2000 ? 2000 : backoff * 2) : 50;
    if (rc) {
        m->need_reopen = true;
        return;
    }
    m->stream = s;
    m->tok_gen = new_gen;
    int64_t now = client_now_ms();
    for (etcd_keepalive *k = m->list; k; k = k->next)
        k->next_ms = now;     /* refresh everything on the new stream at once */
}

static void *ka_thread(void *arg)
{
    struct lease_mux *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->shutdown) {
        if (m->need_reopen && m->list) {
            ka_reopen(m);
            continue;
        }
        int64_t now = client_now_ms();
        int64_t wake = now + 60000;
        for (etcd_keepalive *k = m->list; k; k = k->next) {
            if (k->lost)
                continue;
            if (k->next_ms <= now && m->stream) {
                size_t len;
                uint8_t *buf = pack_keepalive(k->id, &len);
                if (buf) {
                    rpc_stream_send(m->stream, buf, len);
                    free(buf);
                }
                k->next_ms = now + RETRY_MS;   /* pushed back by the answer */
            }
            if (k->next_ms < wake)
                wake = k->next_ms;
        }
        struct timespec ts;
        abs_ms(&ts, wake);
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static struct lease_mux *lease_mux_get(etcd_client *c)
{
    pthread_mutex_lock(&c->mux_mu);
    struct lease_mux *m = c->lease;
    if (!m && (m = calloc(1, sizeof(*m)))) {
        m->c = c;
        pthread_mutex_init(&m->mu, NULL);
        cv_init_mono(&m->cv);
        m->need_reopen = true;
        if (pthread_create(&m->thr, NULL, ka_thread, m) != 0) {
            pthread_mutex_destroy(&m->mu);
            pthread_cond_destroy(&m->cv);
            free(m);
            m = NULL;
        } else {
            c->lease = m;
        }
    }
    pthread_mutex_unlock(&c->mux_mu);
    return m;
}

int etcd_lease_keepalive_start(etcd_client *c, int64_t id,
                               void (*on_lost)(void *arg, int64_t id), void *arg,
                               etcd_keepalive **out, etcd_error *err)
{
    *out = NULL;
    /* One synchronous refresh first: a lease that does not exist fails here, not later. */
    int64_t ttl = 0;
    int rc = etcd_lease_keepalive_once(c, id, &ttl, err);
    if (rc)
        return rc;
    if (ttl <= 0)
        return etcd_error_set(err, ETCD_E_NOT_FOUND, -1, "lease %llx not found",
                              (unsigned long long)id);
    etcd_keepalive *k = calloc(1, sizeof(*k));
    struct lease_mux *m = k ? lease_mux_get(c) : NULL;
    if (!m) {
        free(k);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    k->mux = m;
    k->id = id;
    k->ttl = ttl;
    k->next_ms = client_now_ms() + ttl * 1000 / 3;
    k->on_lost = on_lost;
    k->arg = arg;
    pthread_mutex_lock(&m->mu);
    k->next = m->list;
    m->list = k;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    *out = k;
    return 0;
}

void etcd_lease_keepalive_stop(etcd_keepalive *k)
{
    if (!k)
        return;
    struct lease_mux *m = k->mux;
    if (!m) {
        free(k);
        return;
    }
    pthread_mutex_lock(&m->mu);
    ka_list_remove(m, k);
    k->lost = true;
    if (k->in_cb && m->have_loop_tid && pthread_equal(m->loop_tid, pthread_self())) {
        k->free_after_cb = true;
        pthread_mutex_unlock(&m->mu);
        return;
    }
    while (k->in_cb)
        pthread_cond_wait(&m->cv, &m->mu);
    pthread_mutex_unlock(&m->mu);
    free(k);
}

void lease_mux_free(etcd_client *c)
{
    struct lease_mux *m = c->lease;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->shutdown = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thr, NULL);
    if (m->stream)
        rpc_stream_close(m->stream);
    for (etcd_keepalive *k = m->list, *n; k; k = n) {
        n = k->next;
        k->mux = NULL;
        k->next = NULL;
    }
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    c->lease = NULL;
}

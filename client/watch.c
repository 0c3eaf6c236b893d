/* watch.c — all watches of a client multiplexed on one bidirectional Watch stream. Creates are
 * serialized (etcd assigns watch ids in order), fragments are reassembled, and a background
 * thread re-opens a lost stream (with backoff and re-authentication) and re-creates every watch
 * from the revision after the last one it delivered, so nothing is lost or repeated. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define WATCH_METHOD "/etcdserverpb.Watch/Watch"
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

enum w_state { W_PENDING, W_CREATING, W_ACTIVE, W_DONE };

struct etcd_watch {
    struct watch_mux *mux;          /* NULL once the client is gone */
    uint8_t *key, *range_end;
    size_t key_len, range_end_len;
    bool prev_kv, progress_notify;
    etcd_watch_cbs cbs;
    void *arg;

    enum w_state state;
    int64_t id;                     /* etcd's id on the current stream, -1 if none */
    int64_t next_rev;               /* where a (re)create starts; 0 = now */
    bool auth_retried;              /* one stream re-open after "permission denied" at create */
    int in_cb;                      /* callbacks running on the loop thread */
    bool free_after_cb;             /* stopped from inside its own callback */

    bool start_done;                /* etcd_watch_start's wait */
    int start_rc;
    etcd_error start_err;

    Etcdserverpb__WatchResponse **frags;
    size_t n_frags;
    struct etcd_watch *next;
};

struct watch_mux {
    etcd_client *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;              /* CLOCK_MONOTONIC */
    rpc_stream *stream;
    unsigned long stream_tok_gen;   /* token generation the stream was opened with */
    etcd_watch *list;               /* live watches, in start order */
    etcd_watch *creating;           /* the watch whose create is in flight */
    bool creating_orphan;           /* its watch was stopped: cancel the id when it comes */
    bool need_reopen, need_reauth, shutdown;
    int backoff_ms;
    etcd_error last_err;            /* why the stream last failed */
    uint64_t cluster_id;            /* the cluster the watches were made on (0: not yet) */
    pthread_t thr;
    pthread_t loop_tid;
    bool have_loop_tid;
};

static void cv_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static void frags_clear(etcd_watch *w)
{
    for (size_t i = 0; i < w->n_frags; i++)
        etcdserverpb__watch_response__free_unpacked(w->frags[i], NULL);
    free(w->frags);
    w->frags = NULL;
    w->n_frags = 0;
}

/* ---- sending (mux->mu held: the stream pointer is only swapped under it) ---- */

static void send_msg(struct watch_mux *m, Etcdserverpb__WatchRequest *req)
{
    if (!m->stream)
        return;
    size_t len;
    uint8_t *buf = client_pack(&req->base, &len);
    if (!buf)
        return;
    /* A failed send means the stream is ending; its on_close schedules the re-open. */
    rpc_stream_send(m->stream, buf, len);
    free(buf);
}

static void send_cancel(struct watch_mux *m, int64_t id)
{
    Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
    Etcdserverpb__WatchCancelRequest cr = ETCDSERVERPB__WATCH_CANCEL_REQUEST__INIT;
    cr.watch_id = id;
    req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST;
    req.cancel_request = &cr;
    send_msg(m, &req);
}

/* Sends the create of the first pending watch unless one is already in flight. */
static void kick_creates(struct watch_mux *m)
{
    if (!m->stream || m->creating || m->creating_orphan)
        return;
    etcd_watch *w = m->list;
    while (w && w->state != W_PENDING)
        w = w->next;
    if (!w)
        return;
    Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key.data = w->key;
    cr.key.len = w->key_len;
    if (w->range_end) {
        cr.range_end.data = w->range_end;
        cr.range_end.len = w->range_end_len;
    }
    cr.start_revision = w->next_rev;
    cr.progress_notify = w->progress_notify;
    cr.prev_kv = w->prev_kv;
    cr.fragment = true;         /* big batches come split; reassembled in deliver_events */
    req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    req.create_request = &cr;
    w->state = W_CREATING;
    m->creating = w;
    send_msg(m, &req);
}

/* ---- delivering (loop thread) ---- */

static bool on_loop_thread(struct watch_mux *m)
{
    return m->have_loop_tid && pthread_equal(m->loop_tid, pthread_self());
}

static void cb_enter(etcd_watch *w) { w->in_cb++; }

/* Returns false when w was freed by a stop from inside the callback. */
static bool cb_leave(struct watch_mux *m, etcd_watch *w)
{
    w->in_cb--;
    pthread_cond_broadcast(&m->cv);
    if (w->free_after_cb && w->in_cb == 0) {
        frags_clear(w);
        free(w->key);
        free(w->range_end);
        free(w);
        return false;
    }
    return true;
}

static void list_remove(struct watch_mux *m, etcd_watch *w)
{
    for (etcd_watch **pp = &m->list; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            w->next = NULL;
            return;
        }
    }
}

/* The watch ends for good: it leaves the list (the owner still calls etcd_watch_stop). */
static void finish(struct watch_mux *m, etcd_watch *w, int64_t compact_rev, const etcd_error *e)
{
    w->state = W_DONE;
    w->id = -1;
    list_remove(m, w);
    frags_clear(w);
    if (!w->cbs.on_cancel)
        return;
    cb_enter(w);
    pthread_mutex_unlock(&m->mu);
    w->cbs.on_cancel(w->arg, compact_rev, e);
    pthread_mutex_lock(&m->mu);
    cb_leave(m, w);
}

static etcd_watch *find_id(struct watch_mux *m, int64_t id)
{
    for (etcd_watch *w = m->list; w; w = w->next)
        if (w->state == W_ACTIVE && w->id == id)
            return w;
    return NULL;
}

static void cancel_error(etcd_error *e, const Etcdserverpb__WatchResponse *r)
{
    if (r->compact_revision > 0) {
        etcd_error_set(e, ETCD_E_COMPACTED, -1, "watch revision compacted at %lld",
                       (long long)r->compact_revision);
    } else if (r->cancel_reason && r->cancel_reason[0]) {
        etcd_error_set(e, etcd_err_from_grpc(2, r->cancel_reason), -1, "%s", r->cancel_reason);
    } else {
        etcd_error_set(e, ETCD_E_CANCELLED, -1, "watch cancelled by etcd");
    }
}

/* A re-created watch answered by a different cluster, or at a revision older than events
 * already delivered. A member that lags behind can also answer below next_rev: that costs a
 * needless resync (whose Range is linearizable), never a wrong tree. */
static bool identity_changed(struct watch_mux *m, const etcd_watch *w, const etcd_header *h)
{
    if (m->cluster_id && h->cluster_id && h->cluster_id != m->cluster_id) {
        m->cluster_id = h->cluster_id;
        return true;
    }
    return w->next_rev > 1 && h->revision > 0 && h->revision < w->next_rev - 1;
}

static void handle_created(struct watch_mux *m, Etcdserverpb__WatchResponse *r)
{
    etcd_watch *w = m->creating;
    m->creating = NULL;
    if (!w) {
        /* The watch was stopped while its create was in flight. */
        if (m->creating_orphan && !r->canceled)
            send_cancel(m, r->watch_id);
        m->creating_orphan = false;
        kick_creates(m);
        return;
    }
    m->backoff_ms = 0;
    etcd_header h;
    client_header(&h, r->header);
    if (r->canceled) {
        etcd_error e;
        cancel_error(&e, r);
        bool auth = e.code == ETCD_E_INVALID_TOKEN || e.code == ETCD_E_PERMISSION;
        if (auth && m->c->user && !w->auth_retried) {
            /* The stream's token is checked at each create (etcd 3.4 cancels with "invalid
             * auth token", older ones with "permission denied"): renew it, re-open once. */
            w->auth_retried = true;
            w->state = W_PENDING;
            m->need_reauth = m->need_reopen = true;
            pthread_cond_broadcast(&m->cv);
            return;
        }
        if (!w->start_done && r->compact_revision == 0) {
            w->state = W_DONE;
            list_remove(m, w);
            w->start_done = true;
            w->start_rc = -e.code;
            w->start_err = e;
            pthread_cond_broadcast(&m->cv);
        } else {
            w->start_done = true;
            pthread_cond_broadcast(&m->cv);
            finish(m, w, r->compact_revision, &e);
        }
        kick_creates(m);
        return;
    }
    if (w->start_done && identity_changed(m, w, &h)) {
        /* Another cluster (restored from a snapshot) or a revision that went back: events
         * from next_rev on would be a mixture. The owner resyncs from a Range. */
        etcd_error e;
        etcd_error_set(&e, ETCD_E_INTERNAL, -1, "etcd changed under the watch (cluster id "
                       "%016llx, revision %lld, expected at least %lld): history lost",
                       (unsigned long long)h.cluster_id, (long long)h.revision,
                       (long long)w->next_rev - 1);
        send_cancel(m, r->watch_id);
        finish(m, w, 0, &e);
        kick_creates(m);
        return;
    }
    if (h.cluster_id)
        m->cluster_id = h.cluster_id;
    w->id = r->watch_id;
    w->state = W_ACTIVE;
    w->auth_retried = false;
    if (w->next_rev == 0)
        w->next_rev = h.revision + 1;
    if (!w->start_done) {
        w->start_done = true;
        w->start_rc = 0;
        pthread_cond_broadcast(&m->cv);
    }
    kick_creates(m);
}

/* Delivers the reassembled response r (plus earlier fragments) to w. Takes r. */
static void deliver_events(struct watch_mux *m, etcd_watch *w, Etcdserverpb__WatchResponse *r)
{
    size_t total = r->n_events;
    for (size_t i = 0; i < w->n_frags; i++)
        total += w->frags[i]->n_events;
    etcd_header h;
    client_header(&h, r->header);
    etcd_event *evs = total ? calloc(total, sizeof(*evs)) : NULL;
    size_t n = 0;
    for (size_t f = 0; f <= w->n_frags && (evs || !total); f++) {
        Etcdserverpb__WatchResponse *part = f < w->n_frags ? w->frags[f] : r;
        for (size_t i = 0; i < part->n_events && evs; i++) {
            const Mvccpb__Event *ev = part->events[i];
            int64_t rev = ev->kv ? ev->kv->mod_revision : 0;
            if (rev < w->next_rev)
                continue;       /* already delivered before a re-open */
            evs[n].type = ev->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? ETCD_EVENT_DELETE
                                                                         : ETCD_EVENT_PUT;
            client_kv(&evs[n].kv, ev->kv);
            evs[n].has_prev = ev->prev_kv != NULL;
            client_kv(&evs[n].prev_kv, ev->prev_kv);
            n++;
        }
    }
    if (total && !evs) {
        /* Out of memory: end the stream so the events are fetched again after re-open. */
        m->need_reopen = true;
        pthread_cond_broadcast(&m->cv);
        frags_clear(w);
        etcdserverpb__watch_response__free_unpacked(r, NULL);
        return;
    }
    bool call = false;
    if (total == 0) {
        /* Progress notification: etcd only sends it once the watch is synced. */
        if (h.revision + 1 > w->next_rev)
            w->next_rev = h.revision + 1;
        call = true;
    } else if (n > 0) {
        w->next_rev = evs[n - 1].kv.mod_revision + 1;
        call = true;
    }
    if (call && w->cbs.on_events) {
        cb_enter(w);
        pthread_mutex_unlock(&m->mu);
        w->cbs.on_events(w->arg, &h, evs, n);
        pthread_mutex_lock(&m->mu);
        if (!cb_leave(m, w))
            w = NULL;
    }
    free(evs);
    if (w)
        frags_clear(w);
    etcdserverpb__watch_response__free_unpacked(r, NULL);
}

static void ws_on_msg(void *arg, const uint8_t *msg, size_t len)
{
    struct watch_mux *m = arg;
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, msg);
    pthread_mutex_lock(&m->mu);
    m->loop_tid = pthread_self();
    m->have_loop_tid = true;
    if (!r) {
        etcd_error_set(&m->last_err, ETCD_E_PROTOCOL, -1, "bad WatchResponse");
        m->need_reopen = true;
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
        return;
    }
    if (r->created) {
        handle_created(m, r);
        etcdserverpb__watch_response__free_unpacked(r, NULL);
    } else if (r->watch_id == -1 && r->n_events == 0) {
        /* Progress for the whole stream (answer to a progress request): nothing to track. */
        etcdserverpb__watch_response__free_unpacked(r, NULL);
    } else {
        etcd_watch *w = find_id(m, r->watch_id);
        if (!w) {
            etcdserverpb__watch_response__free_unpacked(r, NULL);
        } else if (r->canceled) {
            etcd_error e;
            cancel_error(&e, r);
            int64_t crev = r->compact_revision;
            etcdserverpb__watch_response__free_unpacked(r, NULL);
            finish(m, w, crev, &e);
        } else if (r->fragment) {
            Etcdserverpb__WatchResponse **nf =
                realloc(w->frags, (w->n_frags + 1) * sizeof(*nf));
            if (!nf) {
                etcdserverpb__watch_response__free_unpacked(r, NULL);
                m->need_reopen = true;
                pthread_cond_broadcast(&m->cv);
            } else {
                w->frags = nf;
                w->frags[w->n_frags++] = r;
            }
        } else {
            deliver_events(m, w, r);
        }
    }
    pthread_mutex_unlock(&m->mu);
}

static void ws_on_close(void *arg, const etcd_error *err)
{
    struct watch_mux *m = arg;
    pthread_mutex_lock(&m->mu);
    m->loop_tid = pthread_self();
    m->have_loop_tid = true;
    if (err && err->code)
        m->last_err = *err;
    else
        etcd_error_set(&m->last_err, ETCD_E_UNAVAILABLE, 0, "watch stream ended by etcd");
    if (err && err->code == ETCD_E_INVALID_TOKEN)
        m->need_reauth = true;
    m->need_reopen = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* ---- the re-open thread ---- */

static const rpc_stream_cbs ws_cbs = { ws_on_msg, ws_on_close };

/* Called with m->mu held; returns with it held. */
static void reopen(struct watch_mux *m)
{
    rpc_stream *old = m->stream;
    m->stream = NULL;
    m->need_reopen = false;
    m->creating = NULL;
    m->creating_orphan = false;
    for (etcd_watch *w = m->list; w; w = w->next) {
        if (w->state == W_CREATING || w->state == W_ACTIVE)
            w->state = W_PENDING;
        w->id = -1;
        frags_clear(w);
    }
    bool reauth = m->need_reauth;
    m->need_reauth = false;
    unsigned long gen = m->stream_tok_gen;
    int backoff = m->backoff_ms;
    pthread_mutex_unlock(&m->mu);

    if (old)
        rpc_stream_close(old);
    if (backoff > 0) {
        struct timespec ts;
        cv_deadline(&ts, backoff);
        pthread_mutex_lock(&m->mu);
        while (!m->shutdown && pthread_cond_timedwait(&m->cv, &m->mu, &ts) != ETIMEDOUT)
            ;
        bool stop = m->shutdown;
        pthread_mutex_unlock(&m->mu);
        if (stop) {
            pthread_mutex_lock(&m->mu);
            return;
        }
    }
    etcd_error e = {0};
    int rc = 0;
    if (reauth && m->c->user)
        rc = client_reauth(m->c, gen, &e);
    unsigned long new_gen = 0;
    free(client_token(m->c, &new_gen));
    rpc_stream *s = NULL;
    if (rc == 0)
        rc = client_stream_open(m->c, WATCH_METHOD, &ws_cbs, m, NULL, 0, 0, 0, &s, &e);

    pthread_mutex_lock(&m->mu);
    m->backoff_ms = backoff ? (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2)
                            : BACKOFF_MIN_MS;
    if (rc) {
        m->last_err = e;
        m->need_reopen = true;
        pthread_cond_broadcast(&m->cv);   /* starters waiting may want to give up */
        return;
    }
    m->stream = s;
    m->stream_tok_gen = new_gen;
    kick_creates(m);
}

static void *mux_thread(void *arg)
{
    struct watch_mux *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->shutdown) {
        if (m->need_reopen && m->list) {
            reopen(m);
            continue;
        }
        pthread_cond_wait(&m->cv, &m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static struct watch_mux *mux_get(etcd_client *c, etcd_error *err)
{
    pthread_mutex_lock(&c->mux_mu);
    struct watch_mux *m = c->watch;
    if (!m) {
        m = calloc(1, sizeof(*m));
        if (m) {
            m->c = c;
            pthread_mutex_init(&m->mu, NULL);
            pthread_condattr_t ca;
            pthread_condattr_init(&ca);
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
            pthread_cond_init(&m->cv, &ca);
            pthread_condattr_destroy(&ca);
            m->need_reopen = true;
            if (pthread_create(&m->thr, NULL, mux_thread, m) != 0) {
                pthread_mutex_destroy(&m->mu);
                pthread_cond_destroy(&m->cv);
                free(m);
                m = NULL;
            } else {
                c->watch = m;
            }
        }
    }
    pthread_mutex_unlock(&c->mux_mu);
    if (!m)
        etcd_error_set(err, ETCD_E_NOMEM, -1, "cannot start the watch stream");
    return m;
}

/* ---- API ---- */

static void *memdup(const void *p, size_t n)
{
    void *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

static void watch_free(etcd_watch *w)
{
    frags_clear(w);
    free(w->key);
    free(w->range_end);
    free(w);
}

int etcd_watch_start(etcd_client *c, const etcd_watch_req *req, const etcd_watch_cbs *cbs,
                     void *arg, etcd_watch **out, etcd_error *err)
{
    *out = NULL;
    etcd_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    w->key = memdup(req->key, req->key_len);
    w->key_len = req->key_len;
    if (req->range_end) {
        w->range_end = memdup(req->range_end, req->range_end_len);
        w->range_end_len = req->range_end_len;
    }
    if (!w->key || (req->range_end && !w->range_end)) {
        watch_free(w);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    w->prev_kv = req->prev_kv;
    w->progress_notify = req->progress_notify;
    w->cbs = *cbs;
    w->arg = arg;
    w->id = -1;
    w->next_rev = req->start_revision;
    w->state = W_PENDING;

    struct watch_mux *m = mux_get(c, err);
    if (!m) {
        watch_free(w);
        return -ETCD_E_NOMEM;
    }
    w->mux = m;
    pthread_mutex_lock(&m->mu);
    etcd_watch **pp = &m->list;
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    if (!m->stream)
        m->need_reopen = true;
    kick_creates(m);
    pthread_cond_broadcast(&m->cv);

    struct timespec ts;
    cv_deadline(&ts, c->call_timeout_ms);
    int rc = 0;
    while (!w->start_done && !m->shutdown) {
        if (pthread_cond_timedwait(&m->cv, &m->mu, &ts) == ETIMEDOUT) {
            if (m->last_err.code)
                rc = etcd_error_set(err, m->last_err.code, m->last_err.grpc_status,
                                    "watch not created: %s", m->last_err.msg);
            else
                rc = etcd_error_set(err, ETCD_E_DEADLINE, -1, "watch not created in time");
            break;
        }
    }
    if (!rc && !w->start_done)
        rc = etcd_error_set(err, ETCD_E_CANCELLED, -1, "client shutting down");
    if (!rc && w->start_rc) {
        rc = w->start_rc;
        if (err)
            *err = w->start_err;
    }
    pthread_mutex_unlock(&m->mu);
    if (rc) {
        etcd_watch_stop(w);
        return rc;
    }
    *out = w;
    return 0;
}

void etcd_watch_stop(etcd_watch *w)
{
    if (!w)
        return;
    struct watch_mux *m = w->mux;
    if (!m) {
        watch_free(w);
        return;
    }
    pthread_mutex_lock(&m->mu);
    if (w->state == W_ACTIVE && w->id >= 0)
        send_cancel(m, w->id);
    if (m->creating == w) {
        m->creating = NULL;
        m->creating_orphan = true;
    }
    w->state = W_DONE;
    list_remove(m, w);
    if (on_loop_thread(m) && w->in_cb) {
        w->free_after_cb = true;      /* freed when its callback returns */
        pthread_mutex_unlock(&m->mu);
        return;
    }
    while (w->in_cb)
        pthread_cond_wait(&m->cv, &m->mu);
    pthread_mutex_unlock(&m->mu);
    watch_free(w);
}

void watch_mux_free(etcd_client *c)
{
    struct watch_mux *m = c->watch;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->shutdown = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thr, NULL);
    if (m->stream)
        rpc_stream_close(m->stream);   /* no callback runs after this */
    m->stream = NULL;
    etcd_error e;
    etcd_error_set(&e, ETCD_E_CANCELLED, -1, "client shut down");
    /* The loop thread is gone with the stream: detach each watch first, so that an owner
     * stopping its watch from on_cancel just frees it. */
    while (m->list) {
        etcd_watch *w = m->list;
        m->list = w->next;
        w->next = NULL;
        w->mux = NULL;
        w->state = W_DONE;
        frags_clear(w);
        if (w->cbs.on_cancel)
            w->cbs.on_cancel(w->arg, 0, &e);
    }
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    c->watch = NULL;
}

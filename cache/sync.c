/* sync.c — keeping the tree equal to etcd: the paged load at one revision, the watch (its
 * callbacks only queue), the sync thread that applies events strictly in order, the resync
 * after a compaction or a lost watch, tombstones of local deletes, and the outbox of events
 * delivered to the listener with no lock held. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- outbox ---------------------------------------------------------------------------------- */

void sync_kick(cache *c)
{
    pthread_mutex_lock(&c->qlock);
    c->out_pending = true;
    pthread_cond_broadcast(&c->qcond);
    pthread_mutex_unlock(&c->qlock);
}

static void outev_free(outev *o)
{
    free((char *)o->ev.name);
    free((uint8_t *)o->ev.key);
    free(o);
}

void sync_emit_locked(cache *c, int type, node *n, node *parent, const char *name, bool remote)
{
    if (c->quiet)
        return;
    if (!c->listener_set && c->out_n >= CACHE_OUTBOX_HELD_MAX) {
        outev *o = c->out_head;     /* nobody listens yet: keep only the newest events */
        c->out_head = o->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_n--;
        outev_free(o);
    }
    outev *o = calloc(1, sizeof(*o));
    if (!o)
        return;
    o->ev.type = type;
    o->ev.ino = n->ino;
    o->ev.parent = parent ? parent->ino : 0;
    o->ev.name = strdup(name ? name : "");
    o->ev.is_dir = n->is_dir;
    o->ev.remote = remote;
    o->ev.mod_revision = type == CACHE_EV_DELETED && n->del_rev ? n->del_rev : n->mod_rev;
    if (!n->is_dir && n->key) {
        uint8_t *k = malloc(n->key_len + 1);
        if (k) {
            memcpy(k, n->key, n->key_len);
            o->ev.key = k;
            o->ev.key_len = n->key_len;
        }
    }
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_n++;
    sync_kick(c);   /* lock order c->lock → c->qlock */
}

static void deliver(cache *c)
{
    pthread_mutex_lock(&c->lock);
    if (!c->listener_set) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    outev *o = c->out_head;
    c->out_head = c->out_tail = NULL;
    c->out_n = 0;
    cache_event_fn fn = c->listener;
    void *arg = c->listener_arg;
    pthread_mutex_unlock(&c->lock);
    while (o) {
        outev *nx = o->next;
        if (fn)
            fn(arg, &o->ev);
        outev_free(o);
        o = nx;
    }
}

void cache_set_listener(cache *c, cache_event_fn fn, void *arg)
{
    pthread_mutex_lock(&c->lock);
    c->listener = fn;
    c->listener_arg = arg;
    c->listener_set = true;
    pthread_mutex_unlock(&c->lock);
    sync_kick(c);
}

/* ---- applying changes ------------------------------------------------------------------------ */

void sync_tomb_locked(cache *c, const uint8_t *key, size_t len, int64_t rev)
{
    hent *e = hmap_put(&c->tombs, 0, key, len, NULL);
    if (e && e->num < rev)
        e->num = rev;
    if (rev > c->tomb_max)
        c->tomb_max = rev;
}

/* n->excl survives: an O_EXCL file whose key someone else created meanwhile must still fail
 * at its first write. */
static void set_meta_locked(cache *c, node *n, const etcd_kv *kv, bool may_evict)
{
    n->local = false;
    n->create_rev = kv->create_revision;
    n->mod_rev = kv->mod_revision;
    n->version = kv->version;
    n->lease = kv->lease;
    n->size = kv->value_len;
    tree_now(&n->mtime);
    n->ctime = n->mtime;
    cache_value *v = NULL;
    if (kv->value || kv->value_len == 0)
        v = values_new(kv->value, kv->value_len, kv->mod_revision);
    values_install_locked(c, n, v, may_evict);
}

void sync_inflight_add_locked(cache *c, const uint8_t *key, size_t len)
{
    hent *e = hmap_put(&c->inflight, 0, key, len, NULL);
    if (e)
        e->num++;
}

void sync_inflight_done_locked(cache *c, const uint8_t *key, size_t len)
{
    hent *e = hmap_get(&c->inflight, 0, key, len);
    if (e && --e->num <= 0)
        hmap_del(&c->inflight, 0, key, len);
    pthread_cond_broadcast(&c->inflight_cond);
}

/* The echo of a local request can reach the sync thread before the requesting thread applied
 * the response: wait for it (bounded: the request has its own deadline). */
static void wait_inflight_locked(cache *c, const uint8_t *key, size_t len)
{
    if (!c->inflight.n || !hmap_get(&c->inflight, 0, key, len))
        return;
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    int ms = c->cfg.write_timeout_ms > 0 ? c->cfg.write_timeout_ms
                                         : etcd_client_call_timeout(c->cfg.client);
    end.tv_sec += ms / 1000 + 2;
    while (hmap_get(&c->inflight, 0, key, len)) {
        if (pthread_cond_timedwait(&c->inflight_cond, &c->lock, &end) == ETIMEDOUT)
            break;
    }
}

/* A PUT seen by the watch or a load page. Older than what the node holds: nothing; the same
 * revision (the echo of our own write): metadata only, silently. */
static void apply_put_locked(cache *c, const etcd_kv *kv, bool may_evict)
{
    wait_inflight_locked(c, kv->key, kv->key_len);
    hent *t = hmap_get(&c->tombs, 0, kv->key, kv->key_len);
    if (t && t->num >= kv->mod_revision && !c->rewind)
        return;
    node *n = tree_file_for_key_locked(c, kv->key, kv->key_len, false);
    if (n) {
        n->seen_gen = c->gen;
        /* After a restore revisions mean another history: whatever differs is replaced. */
        bool other = c->rewind && (kv->mod_revision != n->mod_rev ||
                                   kv->create_revision != n->create_rev);
        if (kv->mod_revision < n->mod_rev && !other)
            return;
        if (kv->mod_revision == n->mod_rev && !other) {
            n->create_rev = kv->create_revision;
            n->version = kv->version;
            n->lease = kv->lease;
            return;
        }
        set_meta_locked(c, n, kv, may_evict);
        sync_emit_locked(c, CACHE_EV_MODIFIED, n, n->parent, n->name, true);
        return;
    }
    n = tree_file_for_key_locked(c, kv->key, kv->key_len, true);
    if (!n) {
        fprintf(stderr, "etcdfs: cache: cannot place key %.*s (skipped)\n",
                (int)kv->key_len, (const char *)kv->key);
        return;
    }
    n->seen_gen = c->gen;
    set_meta_locked(c, n, kv, may_evict);
    sync_emit_locked(c, CACHE_EV_CREATED, n, n->parent, n->name, true);
}

static void apply_delete_locked(cache *c, const etcd_kv *kv)
{
    wait_inflight_locked(c, kv->key, kv->key_len);
    node *n = tree_file_for_key_locked(c, kv->key, kv->key_len, false);
    if (!n || n->local || kv->mod_revision <= n->mod_rev)
        return;
    n->del_rev = kv->mod_revision;   /* mod_rev stays: an open file reads its last value */
    tree_remove_locked(c, n, true, false);
}

static void purge_tombs_locked(cache *c)
{
    if (c->tombs.n && c->revision >= c->tomb_max)
        hmap_free(&c->tombs);
}

/* ---- load / resync --------------------------------------------------------------------------- */

static void range_start(cache *c, const uint8_t **k, size_t *len)
{
    static const uint8_t zero = 0;   /* etcd rejects an empty key: "\0" is the first key */
    *k = c->prefix_len ? c->prefix : &zero;
    *len = c->prefix_len ? c->prefix_len : 1;
}

typedef struct sweep_ctx {
    node **v;
    size_t n, cap;
    uint64_t gen;
    int64_t rev;
} sweep_ctx;

static bool collect_unseen(hent *e, void *arg)
{
    sweep_ctx *s = arg;
    node *n = e->val;
    if (n->local || n->seen_gen == s->gen || n->mod_rev > s->rev)
        return false;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        node **v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = n;
    return false;
}

/* Removes every key the load at rev did not see (deleted while the watch was gone). */
static void sweep_unseen_locked(cache *c, int64_t rev)
{
    sweep_ctx s = { .gen = c->gen, .rev = rev };
    hmap_sweep(&c->keys, collect_unseen, &s);
    for (size_t i = 0; i < s.n; i++)
        tree_remove_locked(c, s.v[i], true, false);
    free(s.v);
}

static int load_page(cache *c, const uint8_t *key, size_t key_len, int64_t *rev,
                     uint8_t **next, size_t *next_len, etcd_error *err)
{
    etcd_range_req req = { .key = key, .key_len = key_len, .range_end = c->prefix_end,
                           .range_end_len = c->prefix_end_len, .limit = (int64_t)c->cfg.page_keys,
                           .revision = *rev };
    /* No sort order: etcd returns keys in ascending order anyway, and any sort order makes it
     * read the whole range for every page (apply.go: "fetch everything; sort and truncate"). */
    etcd_range_resp resp = {0};
    int rc = etcd_range(c->cfg.client, &req, &resp, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&c->lock);
    if (*rev == 0) {
        *rev = resp.header.revision;
        /* A quorum Range older than what the cache has applied: etcd was restored from a
         * snapshot (its history went back). The load then replaces instead of merging. */
        c->rewind = !c->quiet && *rev < c->revision;
        if (c->rewind)
            fprintf(stderr, "etcdfs: cache: etcd is at revision %lld, behind the cache's %lld "
                    "(restored from a snapshot?): replacing the cache\n",
                    (long long)*rev, (long long)c->revision);
    }
    for (size_t i = 0; i < resp.n_kvs; i++)
        apply_put_locked(c, &resp.kvs[i], !c->quiet);
    pthread_mutex_unlock(&c->lock);
    *next = NULL;
    if (resp.more && resp.n_kvs) {
        etcd_kv *last = &resp.kvs[resp.n_kvs - 1];
        *next = malloc(last->key_len + 1);    /* the smallest key after the last one */
        if (!*next) {
            etcd_range_resp_free(&resp);
            return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
        }
        memcpy(*next, last->key, last->key_len);
        (*next)[last->key_len] = 0;
        *next_len = last->key_len + 1;
    }
    etcd_range_resp_free(&resp);
    return 0;
}

/* Paged Range of the prefix at one revision (the first page's), applied page by page so no
 * second copy of the data is ever held; then what the pages did not contain is deleted. */
int sync_load(cache *c, bool initial, etcd_error *err)
{
    pthread_mutex_lock(&c->lock);
    c->gen++;
    c->quiet = initial;
    pthread_mutex_unlock(&c->lock);
    int64_t rev = 0;
    const uint8_t *k;
    size_t klen;
    range_start(c, &k, &klen);
    uint8_t *owned = NULL;
    int rc;
    for (;;) {
        uint8_t *next = NULL;
        size_t next_len = 0;
        rc = load_page(c, k, klen, &rev, &next, &next_len, err);
        free(owned);
        owned = next;
        if (rc < 0 || !next)
            break;
        k = next;
        klen = next_len;
    }
    free(owned);
    pthread_mutex_lock(&c->lock);
    if (rc == 0) {
        sweep_unseen_locked(c, c->rewind ? INT64_MAX : rev);
        if (rev > c->revision || c->rewind)
            c->revision = rev;
        if (c->rewind)
            hmap_free(&c->tombs);    /* they name revisions of the lost history */
        purge_tombs_locked(c);
    }
    c->rewind = false;
    c->quiet = false;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* ---- watch ----------------------------------------------------------------------------------- */

/* Client loop thread: copy the events into one block and queue it. Never blocks long. */
static void on_events(void *arg, const etcd_header *hdr, const etcd_event *evs, size_t n)
{
    cache *c = arg;
    if (n == 0)
        return;     /* progress notifications are not trusted on etcd 3.4 (docs/CACHE.md) */
    size_t bytes = sizeof(qbatch) + n * sizeof(etcd_event);
    for (size_t i = 0; i < n; i++)
        bytes += evs[i].kv.key_len + evs[i].kv.value_len;
    qbatch *b = malloc(bytes);
    if (!b) {
        fprintf(stderr, "etcdfs: cache: out of memory queueing watch events: resync\n");
        pthread_mutex_lock(&c->qlock);
        c->need_resync = true;
        pthread_cond_broadcast(&c->qcond);
        pthread_mutex_unlock(&c->qlock);
        return;
    }
    b->next = NULL;
    b->n = n;
    b->revision = 0;
    b->evs = (etcd_event *)(b + 1);
    uint8_t *p = (uint8_t *)(b->evs + n);
    for (size_t i = 0; i < n; i++) {
        etcd_event *e = &b->evs[i];
        memset(e, 0, sizeof(*e));
        e->type = evs[i].type;
        e->kv = evs[i].kv;
        memcpy(p, evs[i].kv.key, evs[i].kv.key_len);
        e->kv.key = p;
        p += evs[i].kv.key_len;
        if (evs[i].kv.value_len)
            memcpy(p, evs[i].kv.value, evs[i].kv.value_len);
        e->kv.value = p;
        p += evs[i].kv.value_len;
        if (e->kv.mod_revision > b->revision)
            b->revision = e->kv.mod_revision;
    }
    pthread_mutex_lock(&c->qlock);
    if (c->q_tail)
        c->q_tail->next = b;
    else
        c->q_head = b;
    c->q_tail = b;
    if (++c->q_len > c->q_max)
        c->q_max = c->q_len;
    pthread_cond_broadcast(&c->qcond);
    pthread_mutex_unlock(&c->qlock);
}

static void on_cancel(void *arg, int64_t compact_revision, const etcd_error *err)
{
    cache *c = arg;
    if (compact_revision == 0 && err && err->code == ETCD_E_CANCELLED)
        return;     /* client shutting down */
    fprintf(stderr, "etcdfs: cache: watch ended (%s%s): resync\n",
            compact_revision > 0 ? "compacted" : "error: ",
            compact_revision > 0 ? "" : (err ? err->msg : "?"));
    pthread_mutex_lock(&c->qlock);
    c->need_resync = true;
    pthread_cond_broadcast(&c->qcond);
    pthread_mutex_unlock(&c->qlock);
}

int sync_watch_start(cache *c, etcd_error *err)
{
    const uint8_t *k;
    size_t klen;
    range_start(c, &k, &klen);
    pthread_mutex_lock(&c->lock);
    int64_t from = c->revision + 1;
    pthread_mutex_unlock(&c->lock);
    etcd_watch_req req = { .key = k, .key_len = klen, .range_end = c->prefix_end,
                           .range_end_len = c->prefix_end_len, .start_revision = from };
    etcd_watch_cbs cbs = { .on_events = on_events, .on_cancel = on_cancel };
    return etcd_watch_start(c->cfg.client, &req, &cbs, c, &c->watch, err);
}

/* ---- sync thread ----------------------------------------------------------------------------- */

static void apply_batch(cache *c, qbatch *b)
{
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < b->n; i++) {
        if (b->evs[i].type == ETCD_EVENT_PUT)
            apply_put_locked(c, &b->evs[i].kv, true);
        else
            apply_delete_locked(c, &b->evs[i].kv);
    }
    if (b->revision > c->revision)
        c->revision = b->revision;
    purge_tombs_locked(c);
    pthread_mutex_unlock(&c->lock);
}

static qbatch *take_queue(cache *c)
{
    pthread_mutex_lock(&c->qlock);
    qbatch *b = c->q_head;
    c->q_head = c->q_tail = NULL;
    c->q_len = 0;
    pthread_mutex_unlock(&c->qlock);
    return b;
}

static void apply_all(cache *c, qbatch *b)
{
    while (b) {
        qbatch *nx = b->next;
        apply_batch(c, b);
        free(b);
        deliver(c);
        b = nx;
    }
}

static void resync(cache *c)
{
    if (c->watch) {
        etcd_watch_stop(c->watch);
        c->watch = NULL;
    }
    apply_all(c, take_queue(c));    /* events the old watch delivered before it ended */
    etcd_error err = {0};
    int rc = sync_load(c, false, &err);
    if (rc == 0)
        rc = sync_watch_start(c, &err);
    if (rc == 0) {
        __atomic_add_fetch(&c->resyncs, 1, __ATOMIC_RELAXED);
        return;
    }
    fprintf(stderr, "etcdfs: cache: resync failed: %s: %s (retrying in 1 s)\n",
            etcd_err_name(-rc), err.msg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_mutex_lock(&c->qlock);
    while (!c->stop && pthread_cond_timedwait(&c->qcond, &c->qlock, &ts) != ETIMEDOUT)
        ;
    c->need_resync = true;
    pthread_mutex_unlock(&c->qlock);
}

/* Test hook, on the sync thread with c->qlock held (only the sync thread touches c->watch). */
static void test_watch_locked(cache *c)
{
    int req = c->test_watch_req;
    pthread_mutex_unlock(&c->qlock);
    apply_all(c, take_queue(c));
    if (req == 1 && c->watch) {
        etcd_watch_stop(c->watch);
        c->watch = NULL;
    } else if (req == 2 && !c->watch) {
        etcd_error err = {0};
        if (sync_watch_start(c, &err) < 0) {
            pthread_mutex_lock(&c->qlock);
            c->need_resync = true;      /* e.g. compacted at once */
            pthread_mutex_unlock(&c->qlock);
        }
    }
    pthread_mutex_lock(&c->qlock);
    c->test_watch_req = 0;
    pthread_cond_broadcast(&c->qcond);
}

void cache_test_watch(cache *c, bool on)
{
    pthread_mutex_lock(&c->qlock);
    c->test_watch_req = on ? 2 : 1;
    pthread_cond_broadcast(&c->qcond);
    while (c->test_watch_req && !c->stop)
        pthread_cond_wait(&c->qcond, &c->qlock);
    pthread_mutex_unlock(&c->qlock);
}

static void *sync_main(void *arg)
{
    cache *c = arg;
    pthread_mutex_lock(&c->qlock);
    for (;;) {
        while (!c->stop && !c->q_head && !c->need_resync && !c->out_pending &&
               !c->test_watch_req)
            pthread_cond_wait(&c->qcond, &c->qlock);
        if (c->stop)
            break;
        if (c->test_watch_req) {
            test_watch_locked(c);
            continue;
        }
        bool rs = c->need_resync;
        c->need_resync = false;
        c->out_pending = false;
        pthread_mutex_unlock(&c->qlock);
        apply_all(c, take_queue(c));
        if (rs)
            resync(c);
        deliver(c);
        pthread_mutex_lock(&c->qlock);
    }
    pthread_mutex_unlock(&c->qlock);
    return NULL;
}

int sync_thread_start(cache *c)
{
    if (pthread_create(&c->thread, NULL, sync_main, c) != 0)
        return -EAGAIN;
    c->thread_started = true;
    return 0;
}

void sync_thread_stop(cache *c)
{
    if (!c->thread_started)
        return;
    pthread_mutex_lock(&c->qlock);
    c->stop = true;
    pthread_cond_broadcast(&c->qcond);
    pthread_mutex_unlock(&c->qlock);
    pthread_join(c->thread, NULL);
    c->thread_started = false;
}

void sync_queue_free(cache *c)
{
    qbatch *b = take_queue(c);
    while (b) {
        qbatch *nx = b->next;
        free(b);
        b = nx;
    }
    pthread_mutex_lock(&c->lock);
    outev *o = c->out_head;
    c->out_head = c->out_tail = NULL;
    c->out_n = 0;
    pthread_mutex_unlock(&c->lock);
    while (o) {
        outev *nx = o->next;
        outev_free(o);
        o = nx;
    }
}

void cache_test_force_resync(cache *c)
{
    pthread_mutex_lock(&c->qlock);
    c->need_resync = true;
    pthread_cond_broadcast(&c->qcond);
    pthread_mutex_unlock(&c->qlock);
}

void cache_test_stats(cache *c, uint64_t *resyncs, size_t *q_max)
{
    if (resyncs)
        *resyncs = __atomic_load_n(&c->resyncs, __ATOMIC_RELAXED);
    pthread_mutex_lock(&c->qlock);
    if (q_max)
        *q_max = c->q_max;
    pthread_mutex_unlock(&c->qlock);
}

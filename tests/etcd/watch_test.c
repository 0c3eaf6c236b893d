/* watch_test.c — the multiplexed Watch stream against real etcd: 1,000 events in order with
 * none lost, prev_kv and deletes, historical start, compaction reported through on_cancel,
 * stop semantics, many concurrent watches, and (3 members) resumption across the kill of the
 * member in use with no event lost or duplicated. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "etcd.h"
#include "etcd_fixture.h"

static etcd_client *connect_fx(etcd_fixture *f)
{
    static char eps[512];
    static const char *list[FIXTURE_MAX_MEMBERS];
    snprintf(eps, sizeof(eps), "%s", f->endpoints);
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(eps, ",", &save); t; t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    /* short keepalive so a killed member is noticed quickly */
    etcd_config cfg = { .endpoints = list, .n_endpoints = n, .keepalive_time_ms = 1000,
                        .keepalive_timeout_ms = 1000, .dial_timeout_ms = 1000 };
    etcd_client *c = NULL;
    etcd_error e;
    if (etcd_client_new(&cfg, &c, &e))
        DIAG("connect: %s", e.msg);
    return c;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What a watch received. */
typedef struct rec_ev {
    int type;
    char key[64], val[64], prev[64];
    int has_prev;
    int64_t rev;
    size_t val_len;
} rec_ev;
typedef struct collector {
    pthread_mutex_t mu;
    rec_ev *evs;
    size_t n, cap;
    int progress, cancels, cb_after_stop;
    int64_t compact_rev, last_hdr_rev;
    int cancel_code;
    int bad_order;
    int stopped;
} collector;

static void col_init(collector *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
}

static void col_free(collector *c)
{
    free(c->evs);
    pthread_mutex_destroy(&c->mu);
}

static void copy_s(char *dst, const uint8_t *p, size_t n)
{
    if (n > 63)
        n = 63;
    if (n)
        memcpy(dst, p, n);
    dst[n] = 0;
}

static void on_events(void *arg, const etcd_header *h, const etcd_event *evs, size_t n)
{
    collector *c = arg;
    pthread_mutex_lock(&c->mu);
    if (c->stopped)
        c->cb_after_stop++;
    if (n == 0)
        c->progress++;
    c->last_hdr_rev = h->revision;
    for (size_t i = 0; i < n; i++) {
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 256;
            c->evs = realloc(c->evs, c->cap * sizeof(*c->evs));
        }
        rec_ev *r = &c->evs[c->n++];
        r->type = evs[i].type;
        copy_s(r->key, evs[i].kv.key, evs[i].kv.key_len);
        copy_s(r->val, evs[i].kv.value, evs[i].kv.value_len);
        r->val_len = evs[i].kv.value_len;
        r->has_prev = evs[i].has_prev;
        r->prev[0] = 0;
        if (evs[i].has_prev)
            copy_s(r->prev, evs[i].prev_kv.value, evs[i].prev_kv.value_len);
        r->rev = evs[i].kv.mod_revision;
        if (c->n > 1 && r->rev < c->evs[c->n - 2].rev)
            c->bad_order++;
    }
    pthread_mutex_unlock(&c->mu);
}

static void on_cancel(void *arg, int64_t compact_rev, const etcd_error *err)
{
    collector *c = arg;
    pthread_mutex_lock(&c->mu);
    c->cancels++;
    c->compact_rev = compact_rev;
    c->cancel_code = err ? err->code : 0;
    pthread_mutex_unlock(&c->mu);
}

static const etcd_watch_cbs cbs = { on_events, on_cancel };

/* Polls until the collector holds at least n events (or cancels >= 1 when n == 0). */
static bool wait_events(collector *c, size_t n, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool ok = n ? c->n >= n : c->cancels > 0;
        pthread_mutex_unlock(&c->mu);
        if (ok)
            return true;
        if (now_ms() > end)
            return false;
        usleep(5000);
    }
}

static etcd_watch *watch_prefix(etcd_client *cl, const char *prefix, int64_t rev, bool prev,
                                collector *col)
{
    size_t el;
    uint8_t *end = etcd_prefix_end(prefix, strlen(prefix), &el);
    etcd_watch_req req = { .key = prefix, .key_len = strlen(prefix), .range_end = end,
                           .range_end_len = el, .start_revision = rev, .prev_kv = prev };
    etcd_watch *w = NULL;
    etcd_error e;
    if (etcd_watch_start(cl, &req, &cbs, col, &w, &e))
        DIAG("watch %s: %s", prefix, e.msg);
    free(end);
    return w;
}

static int64_t put_rev(etcd_client *c, const char *k, const char *v)
{
    etcd_put_resp r;
    etcd_error e;
    if (etcd_put(c, k, strlen(k), v, strlen(v), NULL, &r, &e)) {
        DIAG("put %s: %s", k, e.msg);
        return -1;
    }
    int64_t rev = r.header.revision;
    etcd_put_resp_free(&r);
    return rev;
}

static void test_thousand(etcd_client *c)
{
    collector col;
    col_init(&col);
    etcd_watch *w = watch_prefix(c, "/w1/", 0, false, &col);
    CHECK(w != NULL, "watch /w1/ started");
    if (!w)
        return;
    int64_t first = 0, last = 0;
    char k[64], v[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "/w1/k%d", i % 37);
        snprintf(v, sizeof(v), "v%d", i);
        last = put_rev(c, k, v);
        if (i == 0)
            first = last;
    }
    CHECK(wait_events(&col, 1000, 10000), "1,000 events received (%zu)", col.n);
    pthread_mutex_lock(&col.mu);
    int ok = col.n == 1000;
    for (size_t i = 0; ok && i < col.n; i++) {
        snprintf(v, sizeof(v), "v%zu", i);
        if (col.evs[i].rev != first + (int64_t)i || strcmp(col.evs[i].val, v) ||
            col.evs[i].type != ETCD_EVENT_PUT)
            ok = 0;
    }
    CHECK(ok && !col.bad_order && col.evs[col.n - 1].rev == last,
          "events in revision order %lld..%lld, none lost, none duplicated",
          (long long)first, (long long)last);
    pthread_mutex_unlock(&col.mu);
    etcd_watch_stop(w);
    col_free(&col);
}

static void test_prev_and_delete(etcd_client *c)
{
    collector col;
    col_init(&col);
    put_rev(c, "/w2/a", "old");
    etcd_watch *w = watch_prefix(c, "/w2/", 0, true, &col);
    put_rev(c, "/w2/a", "new");
    etcd_error e;
    etcd_delete(c, "/w2/a", 5, NULL, 0, false, NULL, &e);
    CHECK(w && wait_events(&col, 2, 5000), "put and delete seen");
    pthread_mutex_lock(&col.mu);
    CHECK(col.n == 2 && col.evs[0].has_prev && !strcmp(col.evs[0].prev, "old") &&
              !strcmp(col.evs[0].val, "new"), "PUT carries prev_kv");
    CHECK(col.n == 2 && col.evs[1].type == ETCD_EVENT_DELETE && !strcmp(col.evs[1].key, "/w2/a")
              && col.evs[1].has_prev && !strcmp(col.evs[1].prev, "new") &&
              col.evs[1].rev > col.evs[0].rev, "DELETE with key, revision and prev_kv");
    pthread_mutex_unlock(&col.mu);
    etcd_watch_stop(w);
    col_free(&col);
}

static void test_history_and_compaction(etcd_client *c)
{
    int64_t r1 = put_rev(c, "/w3/a", "1");
    put_rev(c, "/w3/a", "2");
    int64_t r3 = put_rev(c, "/w3/a", "3");
    collector col;
    col_init(&col);
    etcd_watch *w = watch_prefix(c, "/w3/", r1, false, &col);
    bool got3 = w && wait_events(&col, 3, 5000);
    pthread_mutex_lock(&col.mu);
    CHECK(got3 && col.evs[0].rev == r1 && col.evs[2].rev == r3,
          "watch from an old revision replays history");
    pthread_mutex_unlock(&col.mu);
    etcd_watch_stop(w);
    col_free(&col);

    etcd_error e;
    int rc = etcd_compact(c, r3, true, &e);
    CHECK(rc == 0, "compact to %lld", (long long)r3);
    col_init(&col);
    w = watch_prefix(c, "/w3/", r1, false, &col);
    CHECK(w != NULL, "watch at a compacted revision is created");
    CHECK(wait_events(&col, 0, 5000), "on_cancel called");
    pthread_mutex_lock(&col.mu);
    CHECK(col.compact_rev == r3 && col.cancel_code == ETCD_E_COMPACTED && col.n == 0,
          "compaction reported: compact_revision %lld (want %lld), %s", (long long)col.compact_rev,
          (long long)r3, etcd_err_name(col.cancel_code));
    pthread_mutex_unlock(&col.mu);
    etcd_watch_stop(w);
    col_free(&col);
}

/* Replaying 1 MiB values makes a batch above etcd's 1.5 MiB request limit: etcd sends it in
 * fragments, which must come out as the same whole events. */
static void test_fragments(etcd_client *c)
{
    size_t big = 1 << 20;
    char *v = malloc(big + 1);
    memset(v, 'f', big);
    v[big] = 0;
    int64_t first = 0;
    for (int i = 0; i < 4; i++) {
        v[0] = (char)('0' + i);
        int64_t r = put_rev(c, "/w7/big", v);
        if (i == 0)
            first = r;
    }
    free(v);
    collector col;
    col_init(&col);
    etcd_watch *w = watch_prefix(c, "/w7/", first, true, &col);
    bool got = w && wait_events(&col, 4, 10000);
    pthread_mutex_lock(&col.mu);
    int ok = got && col.n == 4;
    for (size_t i = 0; ok && i < 4; i++)
        ok = col.evs[i].val_len == big && col.evs[i].val[0] == (char)('0' + i) &&
             col.evs[i].rev == first + (int64_t)i;
    CHECK(ok, "4 x 1 MiB events (with prev_kv) reassembled from fragments (%zu events)", col.n);
    pthread_mutex_unlock(&col.mu);
    etcd_watch_stop(w);
    col_free(&col);
}

/* After stop returns nothing more arrives: a later watch on the same stream sees a put that
 * the stopped one must not see (one stream delivers in order). */
static void test_stop(etcd_client *c)
{
    collector a, b;
    col_init(&a);
    col_init(&b);
    etcd_watch *wa = watch_prefix(c, "/w4/", 0, false, &a);
    put_rev(c, "/w4/x", "1");
    CHECK(wait_events(&a, 1, 5000), "first watch sees the first put");
    etcd_watch_stop(wa);
    pthread_mutex_lock(&a.mu);
    a.stopped = 1;
    pthread_mutex_unlock(&a.mu);
    etcd_watch *wb = watch_prefix(c, "/w4/", 0, false, &b);
    put_rev(c, "/w4/x", "2");
    CHECK(wait_events(&b, 1, 5000), "second watch sees the second put");
    pthread_mutex_lock(&a.mu);
    CHECK(a.n == 1 && a.cb_after_stop == 0, "no callback after etcd_watch_stop");
    pthread_mutex_unlock(&a.mu);
    etcd_watch_stop(wb);
    col_free(&a);
    col_free(&b);
}

#define NW 20
typedef struct starter { etcd_client *c; int i; collector col; etcd_watch *w; } starter;

static void *start_thread(void *arg)
{
    starter *s = arg;
    char p[32];
    snprintf(p, sizeof(p), "/w5/%02d/", s->i);
    s->w = watch_prefix(s->c, p, 0, false, &s->col);
    return NULL;
}

static void test_many(etcd_client *c)
{
    starter st[NW];
    pthread_t th[NW];
    for (int i = 0; i < NW; i++) {
        st[i].c = c;
        st[i].i = i;
        col_init(&st[i].col);
        pthread_create(&th[i], NULL, start_thread, &st[i]);
    }
    for (int i = 0; i < NW; i++)
        pthread_join(th[i], NULL);
    int started = 0;
    for (int i = 0; i < NW; i++)
        started += st[i].w != NULL;
    CHECK(started == NW, "%d watches started concurrently", started);
    char k[64];
    for (int i = 0; i < NW; i++) {
        snprintf(k, sizeof(k), "/w5/%02d/key", i);
        put_rev(c, k, k);
    }
    int right = 0;
    for (int i = 0; i < NW; i++) {
        snprintf(k, sizeof(k), "/w5/%02d/key", i);
        if (!wait_events(&st[i].col, 1, 5000))
            continue;
        pthread_mutex_lock(&st[i].col.mu);
        right += st[i].col.n == 1 && !strcmp(st[i].col.evs[0].key, k);
        pthread_mutex_unlock(&st[i].col.mu);
    }
    CHECK(right == NW, "each watch got exactly its own key (%d/%d)", right, NW);
    for (int i = 0; i < NW; i++) {
        etcd_watch_stop(st[i].w);
        col_free(&st[i].col);
    }
}

/* ---- 3 members: resume across a member kill ---- */

typedef struct writer { etcd_client *c; int n; volatile int done; int errors; } writer;

static void *write_thread(void *arg)
{
    writer *w = arg;
    char k[64], v[64];
    for (int i = 0; i < w->n; i++) {
        snprintf(k, sizeof(k), "/w6/k%d", i % 50);
        snprintf(v, sizeof(v), "%d", i);
        int64_t end = now_ms() + 20000;
        for (;;) {
            etcd_error e;
            int rc = etcd_put(w->c, k, strlen(k), v, strlen(v), NULL, NULL, &e);
            if (rc == 0 || rc == -ETCD_E_UNKNOWN_OUTCOME)
                break;          /* unknown outcome: maybe applied; the check is on revisions */
            w->errors++;
            if (now_ms() > end)
                break;
            usleep(50000);
        }
    }
    w->done = 1;
    return NULL;
}

static int member_of(etcd_fixture *f, const char *url)
{
    for (int i = 0; i < f->n; i++)
        if (url && strstr(url, f->m[i].client_url + 7) != NULL)   /* skip "http://" */
            return i;
    return -1;
}

static void test_resume_across_kill(void)
{
    etcd_fixture *f = fixture_start(&(fixture_opts){ .members = 3 });
    CHECK(f != NULL, "3-member cluster started");
    if (!f)
        return;
    etcd_client *wc = connect_fx(f), *pc = connect_fx(f);
    CHECK(wc && pc, "watch and writer clients connected");
    if (!wc || !pc)
        goto out;
    collector col;
    col_init(&col);
    int64_t start = put_rev(pc, "/w6/start", "s");
    etcd_watch *w = watch_prefix(wc, "/w6/", start + 1, false, &col);
    CHECK(w != NULL, "watch started from %lld", (long long)(start + 1));
    writer wr = { .c = pc, .n = 600 };
    pthread_t th;
    pthread_create(&th, NULL, write_thread, &wr);
    wait_events(&col, 150, 10000);
    int victim = member_of(f, etcd_client_endpoint(wc));
    pthread_mutex_lock(&col.mu);
    size_t before = col.n;
    pthread_mutex_unlock(&col.mu);
    DIAG("watch client uses %s (member %d); killing it after %zu events",
         etcd_client_endpoint(wc), victim, before);
    if (victim < 0)
        victim = 0;
    CHECK(fixture_kill(f, victim) == 0, "member %d killed", victim);
    pthread_join(th, NULL);
    /* the last revision etcd holds for the prefix */
    size_t el;
    uint8_t *end = etcd_prefix_end("/w6/", 4, &el);
    etcd_range_req q = { .key = "/w6/", .key_len = 4, .range_end = end, .range_end_len = el,
                         .sort_order = ETCD_SORT_DESCEND, .sort_target = ETCD_SORT_MOD,
                         .limit = 1 };
    etcd_range_resp r;
    etcd_error e;
    int rc = etcd_range(pc, &q, &r, &e);
    int64_t last = rc == 0 && r.n_kvs ? r.kvs[0].mod_revision : -1;
    if (!rc)
        etcd_range_resp_free(&r);
    free(end);
    int64_t deadline = now_ms() + 20000;
    for (;;) {
        pthread_mutex_lock(&col.mu);
        bool got = col.n && col.evs[col.n - 1].rev >= last;
        pthread_mutex_unlock(&col.mu);
        if (got || now_ms() > deadline)
            break;
        usleep(10000);
    }
    pthread_mutex_lock(&col.mu);
    int gaps = 0, dups = 0;
    for (size_t i = 1; i < col.n; i++) {
        if (col.evs[i].rev <= col.evs[i - 1].rev)
            dups++;
        else if (col.evs[i].rev != col.evs[i - 1].rev + 1)
            gaps++;
    }
    CHECK(col.n > 0 && col.evs[0].rev == start + 1 && col.evs[col.n - 1].rev == last &&
              gaps == 0 && dups == 0 && col.cancels == 0,
          "after the kill: %zu events %lld..%lld (want ..%lld), %d gaps, %d duplicates, "
          "%d writer retries", col.n, col.n ? (long long)col.evs[0].rev : 0LL,
          col.n ? (long long)col.evs[col.n - 1].rev : 0LL, (long long)last, gaps, dups,
          wr.errors);
    pthread_mutex_unlock(&col.mu);
    CHECK(strcmp(etcd_client_endpoint(wc), f->m[victim].client_url) != 0,
          "the watch client moved to %s", etcd_client_endpoint(wc));
    etcd_watch_stop(w);
    col_free(&col);
out:
    etcd_client_free(wc);
    etcd_client_free(pc);
    fixture_stop(f);
}

int main(void)
{
    if (access("/usr/bin/etcd", X_OK) != 0)
        check_skip_all("etcd not installed");
    etcd_fixture *f = fixture_start(&(fixture_opts){ .members = 1 });
    CHECK(f != NULL, "etcd fixture starts");
    if (!f)
        return check_done();
    etcd_client *c = connect_fx(f);
    CHECK(c != NULL, "client connects");
    if (c) {
        test_thousand(c);
        test_prev_and_delete(c);
        test_history_and_compaction(c);
        test_stop(c);
        test_many(c);
        test_fragments(c);
        etcd_client_free(c);
    }
    fixture_stop(f);
    test_resume_across_kill();
    return check_done();
}

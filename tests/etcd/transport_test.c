/* transport_test.c — the rpc layer (client/rpc.c) against real etcd: raw unary Put/Range bytes,
 * concurrency from many threads, large messages, a Watch stream and its close, deadlines on a
 * paused member, keepalive, endpoint failover on a 3-member cluster, dedicated endpoints. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "etcd_fixture.h"
#include "rpc.h"

#define KV_PUT "/etcdserverpb.KV/Put"
#define KV_RANGE "/etcdserverpb.KV/Range"
#define WATCH "/etcdserverpb.Watch/Watch"

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- minimal protobuf writing: length-delimited fields only ---- */

typedef struct pb {
    uint8_t *p;
    size_t len;
} pb;

static void pb_raw(pb *b, const void *d, size_t n)
{
    b->p = realloc(b->p, b->len + n + 1);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void pb_varint(pb *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n] = v & 0x7f;
        v >>= 7;
        if (v)
            t[n] |= 0x80;
        n++;
    } while (v);
    pb_raw(b, t, n);
}

static void pb_bytes(pb *b, int field, const void *d, size_t n)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    pb_raw(b, d, n);
}

static rpc *open_rpc(const char *const *eps, size_t n, int ka_time, int ka_timeout,
                     etcd_error *err)
{
    rpc_config cfg = {.endpoints = eps, .n_endpoints = n, .dial_timeout_ms = 2000,
                      .keepalive_time_ms = ka_time, .keepalive_timeout_ms = ka_timeout};
    rpc *r = NULL;
    if (rpc_new(&cfg, &r, err) < 0)
        return NULL;
    return r;
}

static int unary(rpc *r, const char *method, const pb *req, unsigned flags, int timeout_ms,
                 const char *endpoint, uint8_t **resp, size_t *resp_len, etcd_error *err)
{
    rpc_call_opts o = {.method = method, .timeout_ms = timeout_ms, .flags = flags,
                       .endpoint = endpoint};
    return rpc_unary(r, &o, req->p, req->len, resp, resp_len, err);
}

static int put_t(rpc *r, const char *key, const void *val, size_t val_len, int timeout_ms,
                 etcd_error *err)
{
    pb req = {0};
    pb_bytes(&req, 1, key, strlen(key));
    pb_bytes(&req, 2, val, val_len);
    uint8_t *resp = NULL;
    size_t rl = 0;
    int rc = unary(r, KV_PUT, &req, 0, timeout_ms, NULL, &resp, &rl, err);
    free(resp);
    free(req.p);
    return rc;
}

static int put(rpc *r, const char *key, const void *val, size_t val_len, etcd_error *err)
{
    return put_t(r, key, val, val_len, 10000, err);
}

/* Range of key (or [key, end) when end) — returns the raw response. */
static int range(rpc *r, const char *key, const char *end, int timeout_ms, uint8_t **resp,
                 size_t *rl, etcd_error *err)
{
    pb req = {0};
    pb_bytes(&req, 1, key, strlen(key));
    if (end)
        pb_bytes(&req, 2, end, strlen(end));
    int rc = unary(r, KV_RANGE, &req, RPC_IDEMPOTENT, timeout_ms, NULL, resp, rl, err);
    free(req.p);
    return rc;
}

static bool range_has(rpc *r, const char *key, const char *want, etcd_error *err)
{
    uint8_t *resp = NULL;
    size_t rl = 0;
    int rc = range(r, key, NULL, 10000, &resp, &rl, err);
    bool ok = rc == 0 && resp && memmem(resp, rl, want, strlen(want)) != NULL;
    free(resp);
    return ok;
}

/* ---- threads ---- */

typedef struct worker {
    rpc *r;
    int ok;
    char msg[256];
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < 8; i++) {
        etcd_error err = {0};
        if (range_has(w->r, "foo", "bar", &err))
            w->ok++;
        else
            snprintf(w->msg, sizeof w->msg, "%s", err.msg);
    }
    return NULL;
}

/* ---- a Watch stream ---- */

typedef struct watch_state {
    pthread_mutex_t mu;
    int msgs, closes, close_code;
    bool saw_value;
    const char *want;
    pthread_t loop;
} watch_state;

static void w_on_msg(void *arg, const uint8_t *m, size_t len)
{
    watch_state *w = arg;
    pthread_mutex_lock(&w->mu);
    w->msgs++;
    w->loop = pthread_self();
    if (w->want && memmem(m, len, w->want, strlen(w->want)))
        w->saw_value = true;
    pthread_mutex_unlock(&w->mu);
}

static void w_on_close(void *arg, const etcd_error *err)
{
    watch_state *w = arg;
    pthread_mutex_lock(&w->mu);
    w->closes++;
    w->close_code = err->code;
    pthread_mutex_unlock(&w->mu);
}

static const rpc_stream_cbs w_cbs = {w_on_msg, w_on_close};

/* Polls cond (reading w under its lock) until true or ms passed. */
#define WAIT_FOR(w, cond, ms)                                                      \
    ({                                                                             \
        long long until_ = now_ms() + (ms);                                        \
        bool ok_ = false;                                                          \
        for (;;) {                                                                 \
            pthread_mutex_lock(&(w)->mu);                                          \
            ok_ = (cond);                                                          \
            pthread_mutex_unlock(&(w)->mu);                                        \
            if (ok_ || now_ms() > until_)                                          \
                break;                                                             \
            sleep_ms(20);                                                          \
        }                                                                          \
        ok_;                                                                       \
    })

static int watch_open(rpc *r, const char *key, watch_state *w, rpc_stream **s, etcd_error *err)
{
    pb create = {0}, req = {0};
    pb_bytes(&create, 1, key, strlen(key));
    pb_bytes(&req, 1, create.p, create.len);
    rpc_call_opts o = {.method = WATCH, .timeout_ms = 5000};
    int rc = rpc_stream_open(r, &o, &w_cbs, w, req.p, req.len, s, err);
    free(create.p);
    free(req.p);
    return rc;
}

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t l = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static void deferred(void *arg)
{
    watch_state *w = arg;
    pthread_mutex_lock(&w->mu);
    w->msgs = 1000;
    w->loop = pthread_self();
    pthread_mutex_unlock(&w->mu);
}

/* ---- manual flow control: a Snapshot stream stops when its consumer does not consume ---- */

typedef struct snap_state {
    pthread_mutex_t mu;
    size_t bytes;
    int msgs, closes, close_code;
    bool autoc;
    rpc_stream *s;
} snap_state;

static void snap_on_msg(void *arg, const uint8_t *m, size_t len)
{
    snap_state *st = arg;
    pthread_mutex_lock(&st->mu);
    st->bytes += len;
    st->msgs++;
    bool a = st->autoc;
    pthread_mutex_unlock(&st->mu);
    if (a)
        rpc_stream_consume(st->s, len);   /* allowed from the loop thread */
}

static void snap_on_close(void *arg, const etcd_error *err)
{
    snap_state *st = arg;
    pthread_mutex_lock(&st->mu);
    st->closes++;
    st->close_code = err->code;
    pthread_mutex_unlock(&st->mu);
}

static void test_snapshot(rpc *r)
{
    etcd_error err = {0};
    size_t big = 1 << 20;
    char *val = malloc(big);
    memset(val, 's', big);
    int ok = 0;
    for (int i = 0; i < 12; i++) {
        char key[32];
        snprintf(key, sizeof key, "snap/%d", i);
        ok += put(r, key, val, big, &err) == 0;
    }
    free(val);
    CHECK(ok == 12, "12 MiB more data for the snapshot (%d)", ok);

    static const rpc_stream_cbs cbs = {snap_on_msg, snap_on_close};
    snap_state st = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_call_opts o = {.method = "/etcdserverpb.Maintenance/Snapshot", .timeout_ms = 5000,
                       .flags = RPC_STREAM_MANUAL_FLOW};
    rpc_stream *s = NULL;
    int rc = rpc_stream_open(r, &o, &cbs, &st, (const uint8_t *)"", 0, &s, &err);
    CHECK(rc == 0, "Snapshot stream opened: %s", rc ? err.msg : "ok");
    if (rc)
        return;
    st.s = s;
    rpc_stream_end(s);
    /* Without consumption the server must stop at the stream window (8 MiB). */
    size_t last = (size_t)-1;
    long long stable_since = now_ms(), until = now_ms() + 10000;
    while (now_ms() < until) {
        pthread_mutex_lock(&st.mu);
        size_t b = st.bytes;
        pthread_mutex_unlock(&st.mu);
        if (b != last) {
            last = b;
            stable_since = now_ms();
        } else if (now_ms() - stable_since > 500) {
            break;
        }
        sleep_ms(20);
    }
    CHECK(last >= (1 << 20) && last <= (8 << 20), "unconsumed snapshot stalls at %zu bytes", last);
    CHECK(st.closes == 0, "stalled snapshot still open");
    pthread_mutex_lock(&st.mu);
    st.autoc = true;
    size_t pending = st.bytes;
    pthread_mutex_unlock(&st.mu);
    rpc_stream_consume(s, pending);
    bool done = WAIT_FOR(&st, st.closes == 1, 20000);
    CHECK(done && st.close_code == 0 && st.bytes > (12u << 20),
          "consuming lets the snapshot finish: %zu bytes in %d messages, close %d", st.bytes,
          st.msgs, st.close_code);
    rpc_stream_close(s);
}

/* ---- single member ---- */

static void test_single(etcd_fixture *f)
{
    etcd_error err = {0};
    const char *ep = f->m[0].client_url;
    rpc *r = open_rpc(&ep, 1, 0, 0, &err);
    CHECK(r != NULL, "rpc_new: %s", r ? "ok" : err.msg);
    if (!r)
        return;
    int rc = rpc_connect(r, &err);
    CHECK(rc == 0, "rpc_connect to %s: %s", ep, rc ? err.msg : "ok");
    CHECK(strcmp(rpc_endpoint(r), ep) == 0, "rpc_endpoint is %s", rpc_endpoint(r));

    /* Raw bytes as the brief gives them: RangeRequest{key="foo"} = 0a 03 66 6f 6f. */
    rc = put(r, "foo", "bar", 3, &err);
    CHECK(rc == 0, "Put foo=bar: %s", rc ? err.msg : "ok");
    static const uint8_t range_foo[] = {0x0a, 0x03, 'f', 'o', 'o'};
    pb raw = {(uint8_t *)range_foo, sizeof range_foo};
    uint8_t *resp = NULL;
    size_t rl = 0;
    rc = unary(r, KV_RANGE, &raw, RPC_IDEMPOTENT, 5000, NULL, &resp, &rl, &err);
    CHECK(rc == 0 && resp && memmem(resp, rl, "bar", 3), "Range foo returns bar (%zu bytes)", rl);
    free(resp);

    resp = NULL;
    rc = unary(r, "/etcdserverpb.KV/NoSuchMethod", &raw, 0, 5000, NULL, &resp, &rl, &err);
    CHECK(rc < 0 && err.grpc_status == 12, "unknown method → grpc-status 12 (got rc %d status %d: %s)",
          rc, err.grpc_status, err.msg);
    free(resp);

    /* 64 concurrent calls from 8 threads. */
    worker w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker){.r = r};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    int total = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += w[i].ok;
        if (w[i].msg[0])
            DIAG("worker %d: %s", i, w[i].msg);
    }
    CHECK(total == 64, "64 concurrent Range calls from 8 threads succeeded (%d)", total);

    /* 1 MiB value round trip. */
    size_t big = 1 << 20;
    char *val = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        val[i] = 'a' + (char)(i % 26);
    val[big] = '\0';
    rc = put(r, "big1", val, big, &err);
    CHECK(rc == 0, "Put 1 MiB value: %s", rc ? err.msg : "ok");
    resp = NULL;
    rc = range(r, "big1", NULL, 10000, &resp, &rl, &err);
    CHECK(rc == 0 && rl > big && memmem(resp, rl, val, big), "Range returns the 1 MiB value (%zu)",
          rl);
    free(resp);

    /* A response above grpc's usual 4 MiB limit. */
    int puts_ok = 0;
    for (int i = 0; i < 6; i++) {
        char key[32];
        snprintf(key, sizeof key, "bulk/%d", i);
        val[0] = (char)('0' + i);
        puts_ok += put(r, key, val, big, &err) == 0;
    }
    CHECK(puts_ok == 6, "6 values of 1 MiB put (%d)", puts_ok);
    resp = NULL;
    long long t0 = now_ms();
    rc = range(r, "bulk/", "bulk0", 20000, &resp, &rl, &err);
    CHECK(rc == 0 && rl > 6 * big, "Range of 6 MiB (%zu bytes, %lld ms): %s", rl, now_ms() - t0,
          rc ? err.msg : "ok");
    free(resp);
    free(val);

    /* A Watch stream receives messages; closing it stops the callbacks. */
    watch_state ws = {.mu = PTHREAD_MUTEX_INITIALIZER, .want = "wval1"};
    rpc_stream *s = NULL;
    rc = watch_open(r, "wkey", &ws, &s, &err);
    CHECK(rc == 0, "Watch stream opened: %s", rc ? err.msg : "ok");
    CHECK(WAIT_FOR(&ws, ws.msgs >= 1, 5000), "watch created response arrives");
    put(r, "wkey", "wval1", 5, &err);
    CHECK(WAIT_FOR(&ws, ws.saw_value, 5000), "watch event with the put value arrives");
    CHECK(!pthread_equal(ws.loop, pthread_self()), "stream callbacks run on the loop thread");
    rpc_stream_close(s);
    pthread_mutex_lock(&ws.mu);
    int msgs = ws.msgs, closes = ws.closes;
    pthread_mutex_unlock(&ws.mu);
    put(r, "wkey", "wval2", 5, &err);
    CHECK(range_has(r, "wkey", "wval2", &err), "put after close applied");
    pthread_mutex_lock(&ws.mu);
    CHECK(ws.msgs == msgs && ws.closes == closes && closes == 0,
          "no callback after rpc_stream_close (msgs %d→%d, closes %d)", msgs, ws.msgs, ws.closes);
    pthread_mutex_unlock(&ws.mu);

    /* A stream that sends more messages after opening: a second watch on the same stream. */
    ws = (watch_state){.mu = PTHREAD_MUTEX_INITIALIZER, .want = "other-v"};
    rc = watch_open(r, "wkey", &ws, &s, &err);
    pb create = {0}, req = {0};
    pb_bytes(&create, 1, "other", 5);
    pb_bytes(&req, 1, create.p, create.len);
    int src = rc == 0 ? rpc_stream_send(s, req.p, req.len) : -1;
    free(create.p);
    free(req.p);
    CHECK(rc == 0 && src == 0, "rpc_stream_send on an open stream");
    CHECK(WAIT_FOR(&ws, ws.msgs >= 2, 5000), "two watches created on one stream");
    put(r, "other", "other-v", 7, &err);
    CHECK(WAIT_FOR(&ws, ws.saw_value, 5000), "event of the second watch arrives");
    CHECK(rpc_stream_end(s) == 0, "rpc_stream_end");
    if (rc == 0)
        rpc_stream_close(s);

    /* rpc_defer runs on the loop thread. */
    watch_state d = {.mu = PTHREAD_MUTEX_INITIALIZER};
    CHECK(rpc_defer(r, deferred, &d) == 0, "rpc_defer queued");
    CHECK(WAIT_FOR(&d, d.msgs == 1000, 2000) && !pthread_equal(d.loop, pthread_self()),
          "deferred function ran on the loop thread");

    test_snapshot(r);

    /* Deadline: a paused member answers nothing. */
    fixture_pause(f, 0);
    t0 = now_ms();
    resp = NULL;
    rc = range(r, "foo", NULL, 1000, &resp, &rl, &err);
    long long el = now_ms() - t0;
    CHECK((rc == -ETCD_E_DEADLINE || rc == -ETCD_E_UNAVAILABLE) && el >= 900 && el < 3000,
          "paused member: rc %d after %lld ms (%s)", rc, el, err.msg);
    free(resp);
    t0 = now_ms();
    rc = put_t(r, "foo", "x", 1, 2000, &err);
    el = now_ms() - t0;
    CHECK((rc == -ETCD_E_DEADLINE || rc == -ETCD_E_UNKNOWN_OUTCOME) && el < 3000, "paused member: Put fails with %d after %lld ms (%s)", rc, el, err.msg);
    fixture_resume(f, 0);
    CHECK(range_has(r, "foo", "", &err), "resumed member answers again: %s", err.msg);
    rpc_free(r);

    /* Keepalive: with a stream open on a paused member, the connection is declared dead. */
    r = open_rpc(&ep, 1, 1000, 1000, &err);
    ws = (watch_state){.mu = PTHREAD_MUTEX_INITIALIZER};
    rc = r ? watch_open(r, "ka", &ws, &s, &err) : -1;
    CHECK(rc == 0 && WAIT_FOR(&ws, ws.msgs >= 1, 5000), "watch for keepalive test");
    fixture_pause(f, 0);
    t0 = now_ms();
    /* Pings are at least 5 s apart (etcd's minimum), plus 1 s idle and 1 s for the ACK. */
    bool closed = WAIT_FOR(&ws, ws.closes == 1, 12000);
    el = now_ms() - t0;
    CHECK(closed && ws.close_code == ETCD_E_UNAVAILABLE && el < 8500,
          "keepalive: stream closed UNAVAILABLE after %lld ms (code %d)", el, ws.close_code);
    fixture_resume(f, 0);
    if (rc == 0)
        rpc_stream_close(s);
    rpc_free(r);
}

/* ---- unreachable endpoints ---- */

static void test_unreachable(etcd_fixture *f)
{
    char bad[64];
    snprintf(bad, sizeof bad, "http://127.0.0.1:%d", closed_port());
    etcd_error err = {0};
    const char *eps1[] = {bad};
    rpc *r = open_rpc(eps1, 1, 0, 0, &err);
    long long t0 = now_ms();
    int rc = rpc_connect(r, &err);
    CHECK(rc == -ETCD_E_UNAVAILABLE && strstr(err.msg, "refused") && now_ms() - t0 < 2500,
          "closed port: %s", err.msg);
    rpc_free(r);

    const char *eps2[] = {bad, f->m[0].client_url};
    r = open_rpc(eps2, 2, 0, 0, &err);
    rc = rpc_connect(r, &err);
    CHECK(rc == 0 && strcmp(rpc_endpoint(r), f->m[0].client_url) == 0,
          "connect skips a dead endpoint: now on %s", rpc_endpoint(r));
    CHECK(range_has(r, "foo", "", &err), "call after skipping dead endpoint");

    /* Dedicated endpoint: a member's own connection, no failover. */
    pb empty = {0};
    uint8_t *resp = NULL;
    size_t rl = 0;
    rc = unary(r, "/etcdserverpb.Maintenance/Status", &empty, RPC_IDEMPOTENT, 3000,
               f->m[0].client_url, &resp, &rl, &err);
    CHECK(rc == 0 && rl > 0, "Status via dedicated endpoint: %s", rc ? err.msg : "ok");
    free(resp);
    t0 = now_ms();
    resp = NULL;
    rc = unary(r, "/etcdserverpb.Maintenance/Status", &empty, RPC_IDEMPOTENT, 3000, bad, &resp,
               &rl, &err);
    CHECK(rc == -ETCD_E_UNAVAILABLE && now_ms() - t0 < 2000,
          "dedicated dead endpoint fails fast without failover: %s", err.msg);
    free(resp);
    rpc_free(r);
}

/* ---- three members: failover ---- */

static int member_of(etcd_fixture *f, const char *url)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->m[i].client_url, url) == 0)
            return i;
    return -1;
}

static void test_failover(void)
{
    fixture_opts o = {.members = 3};
    etcd_fixture *f = fixture_start(&o);
    CHECK(f != NULL, "3-member fixture started");
    if (!f)
        return;
    const char *eps[3] = {f->m[0].client_url, f->m[1].client_url, f->m[2].client_url};
    etcd_error err = {0};
    rpc *r = open_rpc(eps, 3, 0, 0, &err);
    int rc = rpc_connect(r, &err);
    CHECK(rc == 0, "connect to 3 members: %s", rc ? err.msg : "ok");
    rc = put(r, "fo", "v1", 2, &err);
    CHECK(rc == 0, "Put on 3 members: %s", rc ? err.msg : "ok");

    watch_state ws = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_stream *s = NULL;
    int wrc = watch_open(r, "fo", &ws, &s, &err);
    CHECK(wrc == 0 && WAIT_FOR(&ws, ws.msgs >= 1, 5000), "watch on the member in use");

    int used = member_of(f, rpc_endpoint(r));
    CHECK(used >= 0, "endpoint in use is member %d", used);
    fixture_kill(f, used);
    CHECK(WAIT_FOR(&ws, ws.closes == 1, 5000) && ws.close_code == ETCD_E_UNAVAILABLE,
          "stream on the killed member gets on_close(UNAVAILABLE) (code %d)", ws.close_code);
    long long t0 = now_ms();
    CHECK(range_has(r, "fo", "v1", &err), "idempotent Range after kill succeeds (%lld ms): %s",
          now_ms() - t0, err.msg);
    int now_used = member_of(f, rpc_endpoint(r));
    CHECK(now_used >= 0 && now_used != used, "failed over from member %d to %d", used, now_used);
    rc = put(r, "fo", "v2", 2, &err);
    CHECK(rc == 0, "Put after failover: %s", rc ? err.msg : "ok");
    if (wrc == 0)
        rpc_stream_close(s);

    rpc_free(r);

    /* A paused member (connection alive, peer silent): keepalive finds it and the idempotent
     * call fails over within its deadline; a non-idempotent one in flight is UNKNOWN_OUTCOME. */
    CHECK(fixture_restart(f, used) == 0, "killed member %d restarted", used);
    r = open_rpc(eps, 3, 0, 2000, &err);
    CHECK(range_has(r, "fo", "v2", &err), "fresh client reads: %s", err.msg);
    int paused = member_of(f, rpc_endpoint(r));
    fixture_pause(f, paused);
    t0 = now_ms();
    rc = put_t(r, "fo", "v3", 2, 10000, &err);
    long long el = now_ms() - t0;
    CHECK(rc == -ETCD_E_UNKNOWN_OUTCOME && el < 10000,
          "Put in flight on a paused member → UNKNOWN_OUTCOME after %lld ms: %s", el, err.msg);
    t0 = now_ms();
    bool ok = range_has(r, "fo", "v", &err);
    el = now_ms() - t0;
    now_used = member_of(f, rpc_endpoint(r));
    CHECK(ok && now_used != paused, "Range fails over from paused member %d to %d in %lld ms: %s",
          paused, now_used, el, err.msg);
    fixture_resume(f, paused);
    rpc_free(r);
    fixture_stop(f);
}

int main(void)
{
    if (access("/usr/bin/etcd", X_OK) != 0)
        check_skip_all("no /usr/bin/etcd");
    fixture_opts o = {.members = 1};
    etcd_fixture *f = fixture_start(&o);
    CHECK(f != NULL, "single-member fixture started");
    if (f) {
        test_single(f);
        test_unreachable(f);
        fixture_stop(f);
    }
    test_failover();
    return check_done();
}

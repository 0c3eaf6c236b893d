/* auth_test.c — authentication against real etcd with auth on and 2 s simple tokens: a wrong
 * password fails at connect (AUTH_FAILED), the read-only user reads but its Put gets
 * PERMISSION, and an expired token is renewed without the caller noticing (unary calls, a new
 * watch, a one-shot keepalive). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "etcd.h"
#include "etcd_fixture.h"

static int connect_as(etcd_fixture *f, const char *user, const char *pw, etcd_client **c,
                      etcd_error *e)
{
    static char eps[512];
    static const char *list[FIXTURE_MAX_MEMBERS];
    snprintf(eps, sizeof(eps), "%s", f->endpoints);
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(eps, ",", &save); t; t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    etcd_config cfg = { .endpoints = list, .n_endpoints = n, .user = user, .password = pw };
    return etcd_client_new(&cfg, c, e);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int events_seen;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void on_events(void *arg, const etcd_header *h, const etcd_event *evs, size_t n)
{
    pthread_mutex_lock(&mu);
    events_seen += (int)n;
    pthread_mutex_unlock(&mu);
}

static void on_cancel(void *arg, int64_t rev, const etcd_error *err)
{
    DIAG("watch cancelled: %s", err ? err->msg : "");
}

/* The token lives 2 s after its last use: wait long enough for etcd to drop it. */
static void let_token_expire(void)
{
    sleep(4);
}

int main(void)
{
    if (access("/usr/bin/etcd", X_OK) != 0)
        check_skip_all("etcd not installed");
    etcd_fixture *f = fixture_start(&(fixture_opts){ .members = 1, .auth = true,
                                                     .auth_token_ttl = 2 });
    CHECK(f != NULL, "etcd with auth starts");
    if (!f)
        return check_done();
    etcd_client *c = NULL, *r = NULL, *bad = NULL;
    etcd_error e;
    int rc = connect_as(f, "root", "wrong", &bad, &e);
    CHECK(rc == -ETCD_E_AUTH_FAILED && !bad, "wrong password refused: %s (%s)",
          etcd_err_name(rc), e.msg);
    rc = connect_as(f, "nobody", "x", &bad, &e);
    CHECK(rc == -ETCD_E_AUTH_FAILED, "unknown user refused: %s", etcd_err_name(rc));
    rc = connect_as(f, "root", "rootpw", &c, &e);
    CHECK(rc == 0, "root connects (%s)", rc ? e.msg : "ok");
    rc = connect_as(f, "reader", "readerpw", &r, &e);
    CHECK(rc == 0, "reader connects (%s)", rc ? e.msg : "ok");
    if (!c || !r)
        goto out;
    rc = etcd_put(c, "/auth/k", 7, "v", 1, NULL, NULL, &e);
    CHECK(rc == 0, "root puts");
    etcd_range_req q = { .key = "/auth/k", .key_len = 7 };
    etcd_range_resp rr;
    rc = etcd_range(r, &q, &rr, &e);
    CHECK(rc == 0 && rr.n_kvs == 1, "reader reads");
    if (!rc)
        etcd_range_resp_free(&rr);
    rc = etcd_put(r, "/auth/k", 7, "w", 1, NULL, NULL, &e);
    CHECK(rc == -ETCD_E_PERMISSION, "reader's put: PERMISSION (%s)", e.msg);
    rc = etcd_delete(r, "/auth/k", 7, NULL, 0, false, NULL, &e);
    CHECK(rc == -ETCD_E_PERMISSION, "reader's delete: PERMISSION");

    let_token_expire();
    rc = etcd_put(c, "/auth/k", 7, "after", 5, NULL, NULL, &e);
    CHECK(rc == 0, "put after token expiry succeeds transparently (%s)", rc ? e.msg : "ok");
    let_token_expire();
    rc = etcd_range(r, &q, &rr, &e);
    CHECK(rc == 0 && rr.n_kvs == 1 && rr.kvs[0].value_len == 5, "reader's range after expiry");
    if (!rc)
        etcd_range_resp_free(&rr);

    let_token_expire();
    etcd_watch_req wq = { .key = "/auth/k", .key_len = 7 };
    etcd_watch_cbs cbs = { on_events, on_cancel };
    etcd_watch *w = NULL;
    rc = etcd_watch_start(c, &wq, &cbs, NULL, &w, &e);
    CHECK(rc == 0, "watch started after token expiry (%s)", rc ? e.msg : "ok");
    etcd_put(c, "/auth/k", 7, "x", 1, NULL, NULL, &e);
    int64_t end = now_ms() + 5000;
    int seen = 0;
    while (now_ms() < end && !seen) {
        pthread_mutex_lock(&mu);
        seen = events_seen;
        pthread_mutex_unlock(&mu);
        usleep(10000);
    }
    CHECK(seen == 1, "the watch delivers");
    etcd_watch_stop(w);

    int64_t lease = 0, ttl = 0;
    rc = etcd_lease_grant(c, 60, 0, &lease, NULL, &e);
    let_token_expire();
    rc = etcd_lease_keepalive_once(c, lease, &ttl, &e);
    CHECK(rc == 0 && ttl == 60, "keepalive_once after expiry (%s)", rc ? e.msg : "ok");
out:
    etcd_client_free(c);
    etcd_client_free(r);
    fixture_stop(f);
    return check_done();
}

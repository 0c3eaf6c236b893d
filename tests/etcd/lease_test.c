/* lease_test.c — leases against real etcd: grant (own and chosen id), TimeToLive with keys,
 * Leases, one-shot keepalive, a long-running keepalive keeping a short lease alive, expiry of
 * a lease left alone, revoke, and on_lost once a kept-alive lease is revoked. */
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
    etcd_config cfg = { .endpoints = list, .n_endpoints = n };
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

static int64_t ttl_of(etcd_client *c, int64_t id)
{
    etcd_lease_ttl t;
    etcd_error e;
    if (etcd_lease_timetolive(c, id, false, &t, &e))
        return -100;
    int64_t v = t.ttl;
    etcd_lease_ttl_free(&t);
    return v;
}

static bool key_exists(etcd_client *c, const char *k)
{
    etcd_range_req q = { .key = k, .key_len = strlen(k), .count_only = true };
    etcd_range_resp r;
    etcd_error e;
    if (etcd_range(c, &q, &r, &e))
        return false;
    bool ok = r.count == 1;
    etcd_range_resp_free(&r);
    return ok;
}

static pthread_mutex_t lost_mu = PTHREAD_MUTEX_INITIALIZER;
static int lost_calls;
static int64_t lost_id;

static void on_lost(void *arg, int64_t id)
{
    pthread_mutex_lock(&lost_mu);
    lost_calls++;
    lost_id = id;
    pthread_mutex_unlock(&lost_mu);
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
    if (!c)
        goto out;
    etcd_error e;
    int64_t id = 0, ttl = 0;
    int rc = etcd_lease_grant(c, 30, 0, &id, &ttl, &e);
    CHECK(rc == 0 && id != 0 && ttl == 30, "grant ttl 30 -> id %llx", (unsigned long long)id);
    int64_t id2 = 0;
    rc = etcd_lease_grant(c, 30, 0x1234, &id2, NULL, &e);
    CHECK(rc == 0 && id2 == 0x1234, "grant with a chosen id");
    rc = etcd_lease_grant(c, 30, 0x1234, &id2, NULL, &e);
    CHECK(rc != 0, "granting an existing id fails (%s: %s)", etcd_err_name(rc), e.msg);

    etcd_put_opts po = { .lease = id };
    etcd_put(c, "/lease/a", 8, "1", 1, &po, NULL, &e);
    etcd_put(c, "/lease/b", 8, "2", 1, &po, NULL, &e);
    etcd_lease_ttl t;
    rc = etcd_lease_timetolive(c, id, true, &t, &e);
    int keys_ok = rc == 0 && t.n_keys == 2;
    for (size_t i = 0; keys_ok && i < 2; i++)   /* etcd lists them in no particular order */
        keys_ok = t.key_lens[i] == 8 && (!memcmp(t.keys[i], "/lease/a", 8) ||
                                         !memcmp(t.keys[i], "/lease/b", 8));
    CHECK(keys_ok && t.id == id && t.granted_ttl == 30 && t.ttl > 0 && t.ttl <= 30 &&
              memcmp(t.keys[0], t.keys[1], 8) != 0, "timetolive with keys");
    if (!rc)
        etcd_lease_ttl_free(&t);
    int64_t *ids;
    size_t n;
    rc = etcd_lease_leases(c, &ids, &n, &e);
    int found = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        found += ids[i] == id || ids[i] == 0x1234;
    CHECK(rc == 0 && found == 2, "leases lists both (%zu leases)", n);
    if (!rc)
        free(ids);
    int64_t kttl = 0;
    rc = etcd_lease_keepalive_once(c, id, &kttl, &e);
    CHECK(rc == 0 && kttl == 30, "keepalive_once renews to 30 (%lld)", (long long)kttl);

    rc = etcd_lease_revoke(c, id, &e);
    CHECK(rc == 0 && !key_exists(c, "/lease/a") && !key_exists(c, "/lease/b"),
          "revoke deletes the attached keys");
    CHECK(ttl_of(c, id) == -1, "revoked lease: ttl -1");
    rc = etcd_lease_keepalive_once(c, id, &kttl, &e);
    CHECK(rc == 0 && kttl == 0, "keepalive_once on a revoked lease: ttl 0 (rc %d)", rc);
    rc = etcd_lease_revoke(c, id, &e);
    CHECK(rc == -ETCD_E_NOT_FOUND, "revoking again: NOT_FOUND (%s)", e.msg);
    etcd_keepalive *k = NULL;
    rc = etcd_lease_keepalive_start(c, id, on_lost, NULL, &k, &e);
    CHECK(rc == -ETCD_E_NOT_FOUND && !k, "keepalive_start on a gone lease: NOT_FOUND");

    /* a 2 s lease kept alive for 5 s, and one left alone expires */
    int64_t kept = 0, alone = 0;
    etcd_lease_grant(c, 2, 0, &kept, NULL, &e);
    etcd_lease_grant(c, 2, 0, &alone, NULL, &e);
    po.lease = kept;
    etcd_put(c, "/lease/kept", 11, "k", 1, &po, NULL, &e);
    po.lease = alone;
    etcd_put(c, "/lease/alone", 12, "a", 1, &po, NULL, &e);
    rc = etcd_lease_keepalive_start(c, kept, on_lost, NULL, &k, &e);
    CHECK(rc == 0 && k, "keepalive_start");
    int64_t end = now_ms() + 5000, min_ttl = 100;
    bool alone_gone_at = false;
    while (now_ms() < end) {
        int64_t v = ttl_of(c, kept);
        if (v < min_ttl)
            min_ttl = v;
        if (ttl_of(c, alone) == -1)
            alone_gone_at = true;
        usleep(200000);
    }
    /* ttl is whole seconds left (0: under one second, still alive); -1 is expired */
    CHECK(min_ttl >= 0, "kept-alive 2 s lease never expired over 5 s (min ttl %lld)",
          (long long)min_ttl);
    CHECK(alone_gone_at && !key_exists(c, "/lease/alone") && key_exists(c, "/lease/kept"),
          "the lease left alone expired with its key; the kept one's key is there");
    pthread_mutex_lock(&lost_mu);
    CHECK(lost_calls == 0, "no on_lost while kept alive");
    pthread_mutex_unlock(&lost_mu);

    etcd_lease_revoke(c, kept, &e);
    end = now_ms() + 5000;
    int calls = 0;
    while (now_ms() < end) {
        pthread_mutex_lock(&lost_mu);
        calls = lost_calls;
        pthread_mutex_unlock(&lost_mu);
        if (calls)
            break;
        usleep(20000);
    }
    CHECK(calls == 1 && lost_id == kept, "on_lost called once after revoke");
    etcd_lease_keepalive_stop(k);

    /* stop: no refresh after it, the lease then expires */
    int64_t l3 = 0;
    etcd_lease_grant(c, 2, 0, &l3, NULL, &e);
    rc = etcd_lease_keepalive_start(c, l3, on_lost, NULL, &k, &e);
    etcd_lease_keepalive_stop(k);
    end = now_ms() + 6000;
    while (now_ms() < end && ttl_of(c, l3) != -1)
        usleep(100000);
    CHECK(rc == 0 && ttl_of(c, l3) == -1, "after keepalive_stop the lease expires");
    etcd_client_free(c);
out:
    fixture_stop(f);
    return check_done();
}

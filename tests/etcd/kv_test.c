/* kv_test.c — the KV API against a real single-member etcd: put/get, big values (1 MiB ok,
 * over the limit refused as TOO_LARGE), 10,000 keys paged, Txn compares taken both ways on each
 * target, delete with prev_kv and prefix, compaction errors, prefix_end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "etcd.h"
#include "etcd_fixture.h"

static etcd_fixture *fx;

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

static int put_s(etcd_client *c, const char *k, const char *v)
{
    etcd_error e;
    int rc = etcd_put(c, k, strlen(k), v, strlen(v), NULL, NULL, &e);
    if (rc)
        DIAG("put %s: %s", k, e.msg);
    return rc;
}

/* Value of key k, malloc'd, NULL when absent. */
static char *get_s(etcd_client *c, const char *k, etcd_kv *meta)
{
    etcd_range_req req = { .key = k, .key_len = strlen(k) };
    etcd_range_resp r;
    etcd_error e;
    if (etcd_range(c, &req, &r, &e)) {
        DIAG("get %s: %s", k, e.msg);
        return NULL;
    }
    char *v = NULL;
    if (r.n_kvs == 1) {
        v = strndup((const char *)r.kvs[0].value, r.kvs[0].value_len);
        if (meta)
            *meta = r.kvs[0];
    }
    etcd_range_resp_free(&r);
    return v;
}

static void test_basic(etcd_client *c)
{
    CHECK(put_s(c, "/kv/a", "1") == 0, "put /kv/a");
    etcd_kv m;
    char *v = get_s(c, "/kv/a", &m);
    CHECK(v && !strcmp(v, "1") && m.version == 1 && m.create_revision == m.mod_revision,
          "get /kv/a = 1, version 1");
    free(v);
    etcd_put_opts po = { .prev_kv = true };
    etcd_put_resp pr;
    etcd_error e;
    int rc = etcd_put(c, "/kv/a", 5, "22", 2, &po, &pr, &e);
    CHECK(rc == 0 && pr.has_prev && pr.prev_kv.value_len == 1 && pr.prev_kv.value[0] == '1' &&
              pr.header.revision > 0, "put with prev_kv returns the old value");
    etcd_put_resp_free(&pr);
    po = (etcd_put_opts){ .ignore_value = true };
    rc = etcd_put(c, "/kv/a", 5, NULL, 0, &po, NULL, &e);
    v = get_s(c, "/kv/a", &m);
    CHECK(rc == 0 && v && !strcmp(v, "22") && m.version == 3, "ignore_value keeps the value");
    free(v);
    v = get_s(c, "/kv/missing", NULL);
    CHECK(v == NULL, "missing key: no kvs");
    rc = etcd_put(c, "", 0, "x", 1, NULL, NULL, &e);
    CHECK(rc == -ETCD_E_INVALID_ARG, "empty key refused: %s", e.msg);
    /* binary key and value with zero bytes */
    const uint8_t bk[] = { '/', 'k', 'v', 0, 0xff, 1 }, bv[] = { 0, 1, 2, 0, 0xfe };
    rc = etcd_put(c, bk, sizeof(bk), bv, sizeof(bv), NULL, NULL, &e);
    etcd_range_req rq = { .key = bk, .key_len = sizeof(bk) };
    etcd_range_resp rr;
    int rc2 = etcd_range(c, &rq, &rr, &e);
    CHECK(rc == 0 && rc2 == 0 && rr.n_kvs == 1 && rr.kvs[0].value_len == sizeof(bv) &&
              !memcmp(rr.kvs[0].value, bv, sizeof(bv)), "binary key/value round-trip");
    if (!rc2)
        etcd_range_resp_free(&rr);
}

static void test_big_values(etcd_client *c)
{
    size_t n = 1 << 20;
    uint8_t *big = malloc(2 << 20);
    for (size_t i = 0; i < (2u << 20); i++)
        big[i] = (uint8_t)(i * 7 + (i >> 11));
    etcd_error e;
    int rc = etcd_put(c, "/kv/big", 7, big, n, NULL, NULL, &e);
    CHECK(rc == 0, "1 MiB put: %s", rc ? e.msg : "ok");
    etcd_range_req rq = { .key = "/kv/big", .key_len = 7 };
    etcd_range_resp rr;
    rc = etcd_range(c, &rq, &rr, &e);
    CHECK(rc == 0 && rr.n_kvs == 1 && rr.kvs[0].value_len == n &&
              !memcmp(rr.kvs[0].value, big, n), "1 MiB value round-trips byte for byte");
    if (!rc)
        etcd_range_resp_free(&rr);
    rc = etcd_put(c, "/kv/big2", 8, big, 2 << 20, NULL, NULL, &e);
    CHECK(rc == -ETCD_E_TOO_LARGE, "2 MiB put refused with TOO_LARGE (%s: %s)",
          etcd_err_name(rc), e.msg);
    rc = etcd_put(c, "/kv/big3", 8, big, 1600 * 1024, NULL, NULL, &e);
    CHECK(rc == -ETCD_E_TOO_LARGE, "1.6 MiB put refused by etcd's request limit (%s)", e.msg);
    /* the connection is still usable after a refused message */
    char *v = get_s(c, "/kv/a", NULL);
    CHECK(v != NULL, "client still works after the refusals");
    free(v);
    free(big);
}

#define NKEYS 10000

static void test_paging(etcd_client *c)
{
    /* 128 puts per Txn (etcd's default max-txn-ops) to load quickly. */
    char keys[128][32];
    etcd_op ops[128];
    int failed = 0;
    for (int base = 0; base < NKEYS; base += 128) {
        int n = NKEYS - base < 128 ? NKEYS - base : 128;
        for (int i = 0; i < n; i++) {
            snprintf(keys[i], sizeof(keys[i]), "/page/%06d", base + i);
            ops[i] = (etcd_op){ .type = ETCD_OP_PUT, .key = keys[i], .key_len = strlen(keys[i]),
                                .value = keys[i] + 6, .value_len = 6 };
        }
        etcd_error e;
        if (etcd_txn(c, NULL, 0, ops, n, NULL, 0, 0, NULL, &e)) {
            DIAG("txn: %s", e.msg);
            failed++;
        }
    }
    CHECK(!failed, "10,000 keys written");
    size_t end_len;
    uint8_t *end = etcd_prefix_end("/page/", 6, &end_len);
    etcd_range_req cq = { .key = "/page/", .key_len = 6, .range_end = end,
                          .range_end_len = end_len, .count_only = true };
    etcd_range_resp cr;
    etcd_error e;
    int rc = etcd_range(c, &cq, &cr, &e);
    CHECK(rc == 0 && cr.count == NKEYS && cr.n_kvs == 0, "count_only: %lld",
          rc ? -1LL : (long long)cr.count);
    int64_t rev = rc ? 0 : cr.header.revision;
    if (!rc)
        etcd_range_resp_free(&cr);

    char next[64] = "/page/";
    size_t next_len = 6;
    int seen = 0, pages = 0, in_order = 1, values_ok = 1;
    for (;;) {
        etcd_range_req q = { .key = next, .key_len = next_len, .range_end = end,
                             .range_end_len = end_len, .limit = 1000, .revision = rev };
        etcd_range_resp r;
        if ((rc = etcd_range(c, &q, &r, &e))) {
            DIAG("page: %s", e.msg);
            break;
        }
        pages++;
        for (size_t i = 0; i < r.n_kvs; i++, seen++) {
            char want[32];
            snprintf(want, sizeof(want), "/page/%06d", seen);
            if (r.kvs[i].key_len != strlen(want) || memcmp(r.kvs[i].key, want, strlen(want)))
                in_order = 0;
            if (r.kvs[i].value_len != 6 || memcmp(r.kvs[i].value, want + 6, 6))
                values_ok = 0;
        }
        bool more = r.more;
        if (r.n_kvs) {
            etcd_kv *last = &r.kvs[r.n_kvs - 1];
            memcpy(next, last->key, last->key_len);
            next[last->key_len] = 0;     /* the smallest key after last */
            next_len = last->key_len + 1;
        }
        etcd_range_resp_free(&r);
        if (!more)
            break;
    }
    CHECK(rc == 0 && seen == NKEYS && pages == 10, "paged 10,000 keys in %d pages (%d seen)",
          pages, seen);
    CHECK(in_order && values_ok, "keys in order with their values");

    etcd_range_req dq = { .key = "/page/", .key_len = 6, .range_end = end,
                          .range_end_len = end_len, .limit = 3, .keys_only = true,
                          .sort_order = ETCD_SORT_DESCEND, .sort_target = ETCD_SORT_KEY };
    etcd_range_resp dr;
    rc = etcd_range(c, &dq, &dr, &e);
    CHECK(rc == 0 && dr.n_kvs == 3 && dr.more && dr.kvs[0].value_len == 0 &&
              dr.kvs[0].key_len == 12 && !memcmp(dr.kvs[0].key, "/page/009999", 12),
          "descending keys_only limit 3");
    if (!rc)
        etcd_range_resp_free(&dr);
    free(end);
}

static bool txn_cmp(etcd_client *c, etcd_compare cmp, bool *succeeded)
{
    etcd_op get = { .type = ETCD_OP_RANGE, .key = "/tx/k", .key_len = 5 };
    etcd_txn_resp r;
    etcd_error e;
    if (etcd_txn(c, &cmp, 1, &get, 1, NULL, 0, 0, &r, &e)) {
        DIAG("txn: %s", e.msg);
        return false;
    }
    *succeeded = r.succeeded;
    bool ok = r.succeeded ? (r.n_responses == 1 && r.responses[0].type == ETCD_OP_RANGE &&
                             r.responses[0].n_kvs == 1)
                          : r.n_responses == 0;
    etcd_txn_resp_free(&r);
    return ok;
}

static void test_txn(etcd_client *c)
{
    etcd_error e;
    int64_t lease = 0;
    etcd_lease_grant(c, 60, 0, &lease, NULL, &e);
    etcd_put_opts po = { .lease = lease };
    etcd_put(c, "/tx/k", 5, "val", 3, &po, NULL, &e);
    etcd_put(c, "/tx/k", 5, "val", 3, &po, NULL, &e);
    etcd_kv m;
    free(get_s(c, "/tx/k", &m));
    struct { etcd_compare cmp; const char *what; } cases[] = {
        {{ETCD_CMP_EQUAL, ETCD_CMP_VALUE, "/tx/k", 5, .value = "val", .value_len = 3}, "value"},
        {{ETCD_CMP_EQUAL, ETCD_CMP_VERSION, "/tx/k", 5, .number = 2}, "version"},
        {{ETCD_CMP_EQUAL, ETCD_CMP_CREATE, "/tx/k", 5, .number = m.create_revision}, "create"},
        {{ETCD_CMP_EQUAL, ETCD_CMP_MOD, "/tx/k", 5, .number = m.mod_revision}, "mod"},
        {{ETCD_CMP_EQUAL, ETCD_CMP_LEASE, "/tx/k", 5, .number = lease}, "lease"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool s = false;
        bool ok = txn_cmp(c, cases[i].cmp, &s);
        CHECK(ok && s, "txn %s == taken (success branch)", cases[i].what);
        etcd_compare neg = cases[i].cmp;
        if (neg.target == ETCD_CMP_VALUE)
            neg.value = "other";
        else
            neg.number += 1;
        ok = txn_cmp(c, neg, &s);
        CHECK(ok && !s, "txn %s == with another operand fails (failure branch)", cases[i].what);
        neg.result = ETCD_CMP_NOT_EQUAL;
        ok = txn_cmp(c, neg, &s);
        CHECK(ok && s, "txn %s != another operand taken", cases[i].what);
    }
    bool s;
    etcd_compare gt = { ETCD_CMP_GREATER, ETCD_CMP_MOD, "/tx/k", 5, .number = m.mod_revision - 1 };
    CHECK(txn_cmp(c, gt, &s) && s, "mod > mod-1");
    gt.result = ETCD_CMP_LESS;
    CHECK(txn_cmp(c, gt, &s) && !s, "mod < mod-1 is false");
    /* create-if-absent: version == 0 */
    etcd_compare absent = { ETCD_CMP_EQUAL, ETCD_CMP_VERSION, "/tx/new", 7, .number = 0 };
    etcd_op put = { .type = ETCD_OP_PUT, .key = "/tx/new", .key_len = 7, .value = "n",
                    .value_len = 1 };
    etcd_op get = { .type = ETCD_OP_RANGE, .key = "/tx/new", .key_len = 7 };
    etcd_txn_resp r;
    int rc = etcd_txn(c, &absent, 1, &put, 1, &get, 1, 0, &r, &e);
    CHECK(rc == 0 && r.succeeded && r.n_responses == 1 && r.responses[0].type == ETCD_OP_PUT,
          "create-if-absent creates");
    if (!rc)
        etcd_txn_resp_free(&r);
    rc = etcd_txn(c, &absent, 1, &put, 1, &get, 1, 0, &r, &e);
    CHECK(rc == 0 && !r.succeeded && r.n_responses == 1 && r.responses[0].n_kvs == 1,
          "second create-if-absent takes the failure branch and reads");
    if (!rc)
        etcd_txn_resp_free(&r);
    /* delete inside a txn with prev_kv */
    etcd_op del = { .type = ETCD_OP_DELETE, .key = "/tx/new", .key_len = 7, .prev_kv = true };
    rc = etcd_txn(c, NULL, 0, &del, 1, NULL, 0, 0, &r, &e);
    CHECK(rc == 0 && r.succeeded && r.responses[0].type == ETCD_OP_DELETE &&
              r.responses[0].deleted == 1 && r.responses[0].n_prev_kvs == 1, "txn delete");
    if (!rc)
        etcd_txn_resp_free(&r);
    static etcd_op many[129];
    for (int i = 0; i < 129; i++)
        many[i] = (etcd_op){ .type = ETCD_OP_PUT, .key = "/tx/m", .key_len = 5, .value = "x",
                             .value_len = 1 };
    rc = etcd_txn(c, NULL, 0, many, 129, NULL, 0, 0, NULL, &e);
    CHECK(rc == -ETCD_E_TOO_MANY_OPS,
          "129 ops refused (%s: %s)", etcd_err_name(rc), e.msg);
}

static void test_delete(etcd_client *c)
{
    put_s(c, "/del/a", "1");
    put_s(c, "/del/b", "2");
    put_s(c, "/del/b/c", "3");
    put_s(c, "/dem", "x");
    etcd_delete_resp r;
    etcd_error e;
    int rc = etcd_delete(c, "/del/a", 6, NULL, 0, true, &r, &e);
    CHECK(rc == 0 && r.deleted == 1 && r.n_prev_kvs == 1 && r.prev_kvs[0].value_len == 1 &&
              r.prev_kvs[0].value[0] == '1', "delete one key with prev_kv");
    if (!rc)
        etcd_delete_resp_free(&r);
    size_t el;
    uint8_t *end = etcd_prefix_end("/del/", 5, &el);
    rc = etcd_delete(c, "/del/", 5, end, el, true, &r, &e);
    CHECK(rc == 0 && r.deleted == 2 && r.n_prev_kvs == 2, "delete prefix /del/ with prev_kv");
    if (!rc)
        etcd_delete_resp_free(&r);
    free(end);
    char *v = get_s(c, "/dem", NULL);
    CHECK(v && !strcmp(v, "x"), "key outside the prefix kept");
    free(v);
    rc = etcd_delete(c, "/del/zz", 7, NULL, 0, false, &r, &e);
    CHECK(rc == 0 && r.deleted == 0, "delete of a missing key deletes 0");
    if (!rc)
        etcd_delete_resp_free(&r);
}

static void test_compact(etcd_client *c)
{
    put_s(c, "/cmp/k", "1");
    etcd_kv m;
    free(get_s(c, "/cmp/k", &m));
    int64_t old = m.mod_revision;
    put_s(c, "/cmp/k", "2");
    free(get_s(c, "/cmp/k", &m));
    etcd_error e;
    int rc = etcd_compact(c, m.mod_revision, true, &e);
    CHECK(rc == 0, "compact to %lld", (long long)m.mod_revision);
    etcd_range_req q = { .key = "/cmp/k", .key_len = 6, .revision = old };
    etcd_range_resp r;
    rc = etcd_range(c, &q, &r, &e);
    CHECK(rc == -ETCD_E_COMPACTED, "range at a compacted revision: %s", etcd_err_name(rc));
    q.revision = m.mod_revision + 1000;
    rc = etcd_range(c, &q, &r, &e);
    CHECK(rc == -ETCD_E_FUTURE_REV, "range at a future revision: %s", etcd_err_name(rc));
    rc = etcd_compact(c, old, false, &e);
    CHECK(rc == -ETCD_E_COMPACTED, "compacting an older revision: %s", etcd_err_name(rc));
}

static void test_prefix_end(void)
{
    size_t n;
    uint8_t *e = etcd_prefix_end("abc", 3, &n);
    CHECK(n == 3 && !memcmp(e, "abd", 3), "prefix_end(abc) = abd");
    free(e);
    e = etcd_prefix_end("a\xff\xff", 3, &n);
    CHECK(n == 1 && e[0] == 'b', "prefix_end(a\\xff\\xff) = b");
    free(e);
    e = etcd_prefix_end("\xff", 1, &n);
    CHECK(n == 1 && e[0] == 0, "prefix_end(\\xff) = \\0");
    free(e);
    e = etcd_prefix_end("", 0, &n);
    CHECK(n == 1 && e[0] == 0, "prefix_end('') = \\0");
    free(e);
}

int main(void)
{
    test_prefix_end();
    fixture_opts o = { .members = 1 };
    if (access("/usr/bin/etcd", X_OK) != 0)
        check_skip_all("etcd not installed");
    fx = fixture_start(&o);
    CHECK(fx != NULL, "etcd fixture starts");
    if (!fx)
        return check_done();
    etcd_client *c = connect_fx(fx);
    CHECK(c != NULL, "client connects to %s", fx->endpoints);
    if (c) {
        test_basic(c);
        test_big_values(c);
        test_paging(c);
        test_txn(c);
        test_delete(c);
        test_compact(c);
        etcd_client_free(c);
    }
    fixture_stop(fx);
    return check_done();
}

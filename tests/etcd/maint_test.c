/* maint_test.c — cluster and maintenance calls against real etcd: MemberList, Status, alarms
 * with a real NOSPACE (small quota: fill, refused, alarm listed, compact+defrag+disarm), Defrag,
 * snapshots (to a file etcdctl accepts, two at once, closed early), and with 3 members:
 * MoveLeader and failover when the member in use is killed. */
#include <fcntl.h>
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
    etcd_config cfg = { .endpoints = list, .n_endpoints = n, .dial_timeout_ms = 1000,
                        .keepalive_time_ms = 1000, .keepalive_timeout_ms = 1000 };
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

/* Streams a snapshot into path; returns its size or -1. */
static long long snapshot_to(etcd_client *c, const char *path)
{
    etcd_snapshot *s;
    etcd_error e;
    if (etcd_snapshot_open(c, &s, &e)) {
        DIAG("snapshot open: %s", e.msg);
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char buf[10000];   /* smaller than a chunk on purpose: partial reads */
    long n;
    long long total = 0;
    while ((n = etcd_snapshot_read(s, buf, sizeof(buf), 5000, &e)) > 0) {
        if (write(fd, buf, (size_t)n) != n)
            break;
        total += n;
    }
    if (n < 0)
        DIAG("snapshot read: %s", e.msg);
    close(fd);
    etcd_snapshot_close(s);
    return n < 0 ? -1 : total;
}

static void test_single(etcd_fixture *f, etcd_client *c)
{
    struct etcd_member_list l;
    etcd_error e;
    int rc = etcd_member_list(c, &l, &e);
    CHECK(rc == 0 && l.n_members == 1 && !strcmp(l.members[0].name, f->m[0].name) &&
              l.members[0].n_client_urls == 1 &&
              !strcmp(l.members[0].client_urls[0], f->m[0].client_url) &&
              l.members[0].n_peer_urls == 1, "member list: 1 member with its name and URLs");
    uint64_t mid = rc == 0 ? l.members[0].id : 0;
    if (!rc)
        etcd_member_list_free(&l);
    etcd_status_resp st;
    rc = etcd_status(c, NULL, &st, &e);
    CHECK(rc == 0 && !strncmp(st.version, "3.", 2) && st.leader == mid &&
              st.header.member_id == mid && st.db_size > 0 && st.raft_index > 0,
          "status: version %s, leader is the member, db %lld", st.version,
          (long long)st.db_size);
    rc = etcd_status(c, f->m[0].client_url, &st, &e);
    CHECK(rc == 0 && st.leader == mid, "status of an explicit endpoint");
    struct etcd_alarm *al;
    size_t n;
    rc = etcd_alarm(c, ETCD_ALARM_GET, 0, ETCD_ALARM_NONE, &al, &n, &e);
    CHECK(rc == 0 && n == 0, "no alarms");
    rc = etcd_defragment(c, NULL, &e);
    CHECK(rc == 0, "defragment current endpoint");

    for (int i = 0; i < 200; i++) {
        char k[32], v[1024];
        snprintf(k, sizeof(k), "/snap/%d", i);
        memset(v, 'a' + i % 26, sizeof(v));
        etcd_put(c, k, strlen(k), v, sizeof(v), NULL, NULL, &e);
    }
    char path[512], path2[512];
    snprintf(path, sizeof(path), "%s/client-snap.db", f->dir);
    snprintf(path2, sizeof(path2), "%s/client-snap2.db", f->dir);
    long long size = snapshot_to(c, path);
    CHECK(size > 200 * 1024, "snapshot streamed: %lld bytes", size);
    char *out = NULL;
    rc = fixture_etcdctl(f, &out, "snapshot status '%s' -w json", path);
    CHECK(rc == 0 && out && strstr(out, "\"totalKey\""), "etcdctl snapshot status accepts it: %s",
          out ? out : "");
    free(out);

    /* two at once, read alternately */
    etcd_snapshot *a, *b;
    int ra = etcd_snapshot_open(c, &a, &e), rb = etcd_snapshot_open(c, &b, &e);
    long long ta = 0, tb = 0;
    long na = 1, nb = 1;
    char buf[8192];
    while (ra == 0 && rb == 0 && (na > 0 || nb > 0)) {
        if (na > 0 && (na = etcd_snapshot_read(a, buf, sizeof(buf), 5000, &e)) > 0)
            ta += na;
        if (nb > 0 && (nb = etcd_snapshot_read(b, buf, sizeof(buf), 5000, &e)) > 0)
            tb += nb;
    }
    CHECK(ra == 0 && rb == 0 && na == 0 && nb == 0 && ta > 200 * 1024 && tb > 200 * 1024,
          "two concurrent snapshots complete (%lld, %lld bytes)", ta, tb);
    if (!ra)
        etcd_snapshot_close(a);
    if (!rb)
        etcd_snapshot_close(b);
    /* closing early cancels; the client goes on */
    rc = etcd_snapshot_open(c, &a, &e);
    long first = rc == 0 ? etcd_snapshot_read(a, buf, 100, 5000, &e) : -1;
    if (!rc)
        etcd_snapshot_close(a);
    size = snapshot_to(c, path2);
    CHECK(first == 100 && size > 0, "snapshot closed after 100 bytes; the next one works");
}

static void test_nospace(void)
{
    etcd_fixture *f = fixture_start(&(fixture_opts){ .members = 1, .quota_bytes = 2 << 20 });
    CHECK(f != NULL, "etcd with a 2 MiB quota");
    if (!f)
        return;
    etcd_client *c = connect_fx(f);
    if (!c) {
        fixture_stop(f);
        return;
    }
    static char v[256 * 1024];
    memset(v, 'q', sizeof(v));
    etcd_error e;
    int rc = 0, i;
    for (i = 0; i < 100 && rc == 0; i++) {
        char k[32];
        snprintf(k, sizeof(k), "/fill/%d", i);
        rc = etcd_put(c, k, strlen(k), v, sizeof(v), NULL, NULL, &e);
    }
    CHECK(rc == -ETCD_E_NOSPACE, "filling stops with NOSPACE after %d puts (%s)", i, e.msg);
    rc = etcd_put(c, "/small", 6, "x", 1, NULL, NULL, &e);
    CHECK(rc == -ETCD_E_NOSPACE, "even a small put: NOSPACE while the alarm is raised");
    struct etcd_alarm *al = NULL;
    size_t n = 0;
    rc = etcd_alarm(c, ETCD_ALARM_GET, 0, ETCD_ALARM_NONE, &al, &n, &e);
    CHECK(rc == 0 && n == 1 && al[0].alarm == ETCD_ALARM_NOSPACE && al[0].member_id != 0,
          "alarm list shows NOSPACE");
    uint64_t mid = n ? al[0].member_id : 0;
    free(al);
    size_t el;
    uint8_t *end = etcd_prefix_end("/fill/", 6, &el);
    etcd_delete_resp dr;
    rc = etcd_delete(c, "/fill/", 6, end, el, false, &dr, &e);
    free(end);
    int64_t rev = rc == 0 ? dr.header.revision : 0;
    if (!rc)
        etcd_delete_resp_free(&dr);
    CHECK(rc == 0, "delete allowed under the alarm");
    rc = etcd_compact(c, rev, true, &e);
    CHECK(rc == 0, "compact");
    rc = etcd_defragment(c, NULL, &e);
    CHECK(rc == 0, "defragment");
    rc = etcd_alarm(c, ETCD_ALARM_DEACTIVATE, mid, ETCD_ALARM_NOSPACE, NULL, NULL, &e);
    CHECK(rc == 0, "disarm");
    rc = etcd_alarm(c, ETCD_ALARM_GET, 0, ETCD_ALARM_NONE, &al, &n, &e);
    CHECK(rc == 0 && n == 0, "no alarm left");
    if (rc == 0)
        free(al);
    rc = etcd_put(c, "/small", 6, "x", 1, NULL, NULL, &e);
    CHECK(rc == 0, "put works again (%s)", rc ? e.msg : "ok");
    etcd_client_free(c);
    fixture_stop(f);
}

static int member_index(etcd_fixture *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->m[i].name, name))
            return i;
    return -1;
}

static void test_three(void)
{
    etcd_fixture *f = fixture_start(&(fixture_opts){ .members = 3 });
    CHECK(f != NULL, "3-member cluster");
    if (!f)
        return;
    etcd_client *c = connect_fx(f);
    if (!c) {
        fixture_stop(f);
        return;
    }
    struct etcd_member_list l;
    etcd_error e;
    int rc = etcd_member_list(c, &l, &e);
    CHECK(rc == 0 && l.n_members == 3, "3 members listed");
    int leader = fixture_leader(f);
    int target = -1;
    uint64_t target_id = 0;
    for (size_t i = 0; rc == 0 && i < l.n_members; i++) {
        int idx = member_index(f, l.members[i].name);
        if (idx >= 0 && idx != leader) {
            target = idx;
            target_id = l.members[i].id;
            break;
        }
    }
    if (!rc)
        etcd_member_list_free(&l);
    rc = etcd_move_leader(c, target_id, &e);
    CHECK(rc == 0, "move leader from member %d to member %d (%s)", leader, target,
          rc ? e.msg : "ok");
    int64_t end = now_ms() + 10000;
    int now_leader = -1;
    while (now_ms() < end && (now_leader = fixture_leader(f)) != target)
        usleep(100000);
    CHECK(now_leader == target, "leadership moved to member %d (now %d)", target, now_leader);
    etcd_status_resp st;
    rc = etcd_status(c, f->m[target].client_url, &st, &e);
    CHECK(rc == 0 && st.leader == target_id, "status of the new leader agrees");

    /* failover: kill the member in use, the next call succeeds elsewhere */
    etcd_put(c, "/fo/k", 5, "v", 1, NULL, NULL, &e);
    const char *ep = etcd_client_endpoint(c);
    int victim = -1;
    for (int i = 0; i < f->n; i++)
        if (ep && strstr(ep, f->m[i].client_url + 7))
            victim = i;
    DIAG("client uses %s (member %d)", ep ? ep : "?", victim);
    CHECK(victim >= 0 && fixture_kill(f, victim) == 0, "killed the member in use");
    etcd_range_req q = { .key = "/fo/k", .key_len = 5 };
    etcd_range_resp r;
    int64_t t0 = now_ms();
    rc = etcd_range(c, &q, &r, &e);
    CHECK(rc == 0 && r.n_kvs == 1, "next range succeeds on another member in %lld ms (%s)",
          (long long)(now_ms() - t0), rc ? e.msg : etcd_client_endpoint(c));
    if (!rc)
        etcd_range_resp_free(&r);
    rc = etcd_put(c, "/fo/k2", 6, "v", 1, NULL, NULL, &e);
    CHECK(rc == 0, "and so does a put (%s)", rc ? e.msg : "ok");
    CHECK(strcmp(etcd_client_endpoint(c), f->m[victim < 0 ? 0 : victim].client_url) != 0,
          "endpoint changed to %s", etcd_client_endpoint(c));
    etcd_client_free(c);
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
        test_single(f, c);
        etcd_client_free(c);
    }
    fixture_stop(f);
    test_nospace();
    test_three();
    return check_done();
}

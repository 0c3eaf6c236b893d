/* cluster_test.c — tests the etcd fixture itself (tests/fixture/etcd_fixture.c): one member,
 * three members (health, leader, kill/restart, pause/resume), TLS, mTLS and auth, each checked
 * with fixture_etcdctl put/get, so client test failures are never the fixture's fault. */
#include "etcd_fixture.h"
#include "check.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static bool get_is(etcd_fixture *f, const char *key, const char *want)
{
    char *out = NULL;
    int rc = fixture_etcdctl(f, &out, "get --print-value-only '%s'", key);
    bool ok = rc == 0 && out && strcmp(out, want) == 0;
    if (!ok)
        DIAG("get %s: rc=%d out='%s' want '%s'", key, rc, out ? out : "(null)", want);
    free(out);
    return ok;
}

static bool alive(pid_t pid)
{
    return pid > 0 && kill(pid, 0) == 0;
}

static void test_single(void)
{
    etcd_fixture *f = fixture_start(&(fixture_opts){ .members = 1 });
    CHECK(f != NULL, "single member starts");
    if (!f)
        return;
    CHECK(strncmp(f->endpoints, "http://127.0.0.1:", 17) == 0, "endpoint %s", f->endpoints);
    CHECK(fixture_etcdctl(f, NULL, "put a 1") == 0, "put a=1");
    CHECK(get_is(f, "a", "1"), "get a == 1");
    CHECK(fixture_leader(f) == 0, "single member is the leader");
    char dir[256];
    snprintf(dir, sizeof dir, "%s", f->dir);
    pid_t pid = f->m[0].pid;
    fixture_stop(f);
    CHECK(!alive(pid), "member gone after stop");
    CHECK(access(dir, F_OK) != 0, "temp dir removed after stop");
}

static void test_three(void)
{
    etcd_fixture *f = fixture_start(&(fixture_opts){ .members = 3 });
    CHECK(f != NULL, "three members start");
    if (!f)
        return;
    CHECK(f->n == 3 && alive(f->m[0].pid) && alive(f->m[1].pid) && alive(f->m[2].pid),
          "three member processes alive");
    char *out = NULL;
    int rc = fixture_etcdctl(f, &out, "endpoint health --cluster");
    CHECK(rc == 0 && out && strstr(out, "unhealthy") == NULL, "all members healthy");
    free(out);
    int leader = fixture_leader(f);
    CHECK(leader >= 0 && leader < 3, "leader found (%d)", leader);
    CHECK(fixture_etcdctl(f, NULL, "put k v1") == 0, "put on the cluster");

    int victim = leader >= 0 ? leader : 0;
    CHECK(fixture_kill(f, victim) == 0 && f->m[victim].pid == 0, "kill member %d", victim);
    /* A write must succeed once the two survivors elect a leader: poll, do not sleep. */
    bool wrote = false;
    for (int i = 0; i < 50 && !wrote; i++)
        wrote = fixture_etcdctl(f, NULL, "put k v2") == 0;
    CHECK(wrote, "write succeeds with one member down");
    int other = (victim + 1) % 3;
    CHECK(fixture_restart(f, victim) == 0 && alive(f->m[victim].pid), "restart member %d",
          victim);
    CHECK(get_is(f, "k", "v2"), "restarted cluster has the write");

    CHECK(fixture_pause(f, other) == 0, "pause member %d", other);
    wrote = false;
    for (int i = 0; i < 50 && !wrote; i++)
        wrote = fixture_etcdctl(f, NULL, "put k v3") == 0;
    CHECK(wrote, "write succeeds with one member paused");
    CHECK(fixture_resume(f, other) == 0, "resume member %d", other);
    leader = -1;
    for (int i = 0; i < 50 && leader < 0; i++)
        leader = fixture_leader(f);
    CHECK(leader >= 0, "leader after resume (%d)", leader);
    CHECK(get_is(f, "k", "v3"), "get k == v3");
    fixture_stop(f);
}

static void test_tls(bool mtls)
{
    const char *what = mtls ? "mtls" : "tls";
    etcd_fixture *f = fixture_start(&(fixture_opts){ .tls = true, .client_cert_auth = mtls });
    CHECK(f != NULL, "%s member starts", what);
    if (!f)
        return;
    CHECK(strncmp(f->endpoints, "https://127.0.0.1:", 18) == 0, "%s endpoint %s", what,
          f->endpoints);
    CHECK(access(f->cacert, R_OK) == 0 && access(f->cert, R_OK) == 0 &&
          access(f->key, R_OK) == 0, "%s cert files exist", what);
    CHECK(fixture_etcdctl(f, NULL, "put t %s", what) == 0, "%s put", what);
    CHECK(get_is(f, "t", what), "%s get", what);
    /* Without a client certificate an mTLS member must refuse us. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ETCDCTL_API=3 etcdctl --endpoints=%s --cacert=%s"
             " --dial-timeout=2s --command-timeout=3s get t >/dev/null 2>&1",
             f->endpoints, f->cacert);
    int rc = system(cmd);
    if (mtls)
        CHECK(rc != 0, "mtls refuses a client without certificate");
    else
        CHECK(rc == 0, "tls accepts a client without certificate");
    fixture_stop(f);
}

static void test_auth(void)
{
    etcd_fixture *f = fixture_start(&(fixture_opts){ .auth = true, .auth_token_ttl = 60 });
    CHECK(f != NULL, "auth member starts");
    if (!f)
        return;
    CHECK(fixture_etcdctl(f, NULL, "put secret s") == 0, "root can put");
    CHECK(get_is(f, "secret", "s"), "root can get");
    char *out = NULL;
    int rc = fixture_etcdctl(f, &out, "auth status");
    CHECK(rc == 0 && out && strstr(out, "true"), "auth is enabled");
    free(out);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ETCDCTL_API=3 etcdctl --endpoints=%s --user=%%s "
             "--dial-timeout=2s --command-timeout=3s %%s >/dev/null 2>&1", f->endpoints);
    char line[1200];
    snprintf(line, sizeof line, cmd, "reader:readerpw", "get secret");
    CHECK(system(line) == 0, "reader can get");
    snprintf(line, sizeof line, cmd, "reader:readerpw", "put secret x");
    CHECK(system(line) != 0, "reader cannot put");
    snprintf(line, sizeof line, cmd, "root:wrong", "get secret");
    CHECK(system(line) != 0, "wrong password refused");
    /* Without credentials the request must be refused. */
    snprintf(cmd, sizeof cmd, "ETCDCTL_API=3 etcdctl --endpoints=%s --dial-timeout=2s"
             " --command-timeout=3s get secret 2>&1", f->endpoints);
    FILE *p = popen(cmd, "r");
    char buf[512] = "";
    size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[n] = '\0';
    rc = p ? pclose(p) : -1;
    CHECK(rc != 0 || strstr(buf, "s") == NULL, "anonymous get refused");
    fixture_stop(f);
}

static void test_tls_auth(void)
{
    etcd_fixture *f = fixture_start(&(fixture_opts){ .members = 3, .tls = true,
                                                     .client_cert_auth = true, .auth = true,
                                                     .quota_bytes = 64L << 20 });
    CHECK(f != NULL, "3 members with mtls + auth + quota start");
    if (!f)
        return;
    CHECK(fixture_etcdctl(f, NULL, "put z 9") == 0, "mtls+auth put");
    CHECK(get_is(f, "z", "9"), "mtls+auth get");
    CHECK(fixture_leader(f) >= 0, "mtls+auth leader found");
    fixture_stop(f);
}

int main(void)
{
    if (access("/usr/bin/etcd", X_OK) != 0 && system("command -v etcd >/dev/null 2>&1") != 0)
        check_skip_all("etcd not installed");
    if (system("command -v etcdctl >/dev/null 2>&1") != 0)
        check_skip_all("etcdctl not installed");
    test_single();
    test_three();
    test_tls(false);
    test_tls(true);
    test_auth();
    test_tls_auth();
    return check_done();
}

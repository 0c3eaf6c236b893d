/* tls_test.c — the transport's TLS against real etcd with client certificate auth: the right
 * CA and client certificate work (by IP and by name), a wrong CA, a missing client certificate,
 * plain HTTP/2 to the TLS port and TLS to a plain port all fail quickly with a message that
 * names the cause, and insecure_skip_verify skips verification. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "etcd_fixture.h"
#include "rpc.h"

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct tls_case {
    const char *endpoint;
    const char *cacert, *cert, *key;
    bool insecure;
} tls_case;

/* rpc_new + rpc_connect (+ one Range when connected). Returns the first error, with its
 * message in err, and the time taken in *ms. */
static int try_connect(const tls_case *tc, etcd_error *err, long long *ms)
{
    rpc_config cfg = {.endpoints = &tc->endpoint, .n_endpoints = 1, .cacert = tc->cacert,
                      .cert = tc->cert, .key = tc->key, .insecure_skip_verify = tc->insecure,
                      .dial_timeout_ms = 5000, .keepalive_time_ms = 10000,
                      .keepalive_timeout_ms = 5000};
    rpc *r = NULL;
    long long t0 = now_ms();
    memset(err, 0, sizeof *err);
    int rc = rpc_new(&cfg, &r, err);
    if (rc == 0)
        rc = rpc_connect(r, err);
    if (rc == 0) {
        static const uint8_t range_foo[] = {0x0a, 0x03, 'f', 'o', 'o'};
        rpc_call_opts o = {.method = "/etcdserverpb.KV/Range", .timeout_ms = 5000,
                           .flags = RPC_IDEMPOTENT};
        uint8_t *resp = NULL;
        size_t rl = 0;
        rc = rpc_unary(r, &o, range_foo, sizeof range_foo, &resp, &rl, err);
        free(resp);
    }
    rpc_free(r);
    *ms = now_ms() - t0;
    return rc;
}

static bool has(const char *msg, const char *word)
{
    return strcasestr(msg, word) != NULL;
}

int main(void)
{
    if (access("/usr/bin/etcd", X_OK) != 0)
        check_skip_all("no /usr/bin/etcd");
    fixture_opts o = {.members = 1, .tls = true, .client_cert_auth = true};
    etcd_fixture *f = fixture_start(&o);
    CHECK(f != NULL, "TLS fixture with client certificate auth started");
    fixture_opts po = {.members = 1};
    etcd_fixture *plain = f ? fixture_start(&po) : NULL;
    CHECK(plain != NULL, "plain fixture started");
    if (!f || !plain) {
        fixture_stop(f);
        fixture_stop(plain);
        return check_done();
    }
    const char *url = f->m[0].client_url;           /* https://127.0.0.1:P */
    const char *port = strrchr(url, ':') + 1;
    char by_name[96], http_to_tls[96], https_to_plain[96], wrong_ca[400];
    snprintf(by_name, sizeof by_name, "https://localhost:%s", port);
    snprintf(http_to_tls, sizeof http_to_tls, "http://127.0.0.1:%s", port);
    snprintf(https_to_plain, sizeof https_to_plain, "https://%s",
             strstr(plain->m[0].client_url, "://") + 3);
    snprintf(wrong_ca, sizeof wrong_ca, "%s/wrong-ca.crt", f->dir);
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && openssl ecparam -name prime256v1 -genkey -noout -out wrong-ca.key "
             "2>/dev/null && openssl req -x509 -new -key wrong-ca.key -subj '/CN=wrong CA' "
             "-days 1 -out wrong-ca.crt 2>/dev/null", f->dir);
    CHECK(system(cmd) == 0, "generated an unrelated CA");

    etcd_error err;
    long long ms;
    int rc;

    tls_case ok = {url, f->cacert, f->cert, f->key, false};
    rc = try_connect(&ok, &err, &ms);
    CHECK(rc == 0, "right CA + client cert: %s", rc ? err.msg : "ok");

    tls_case name = {by_name, f->cacert, f->cert, f->key, false};
    rc = try_connect(&name, &err, &ms);
    CHECK(rc == 0, "by host name (DNS SAN localhost): %s", rc ? err.msg : "ok");

    tls_case bare = {url + strlen("https://"), f->cacert, f->cert, f->key, false};
    rc = try_connect(&bare, &err, &ms);
    CHECK(rc == 0, "scheme-less endpoint uses TLS when TLS files are given: %s",
          rc ? err.msg : "ok");

    tls_case bad_ca = {url, wrong_ca, f->cert, f->key, false};
    rc = try_connect(&bad_ca, &err, &ms);
    CHECK(rc == -ETCD_E_TLS && has(err.msg, "verif"), "wrong CA → %d: %s", rc, err.msg);

    tls_case no_client = {url, f->cacert, NULL, NULL, false};
    rc = try_connect(&no_client, &err, &ms);
    CHECK(rc < 0 && has(err.msg, "certificate") && ms < 15000,
          "no client certificate when required → %d after %lld ms: %s", rc, ms, err.msg);

    tls_case h2c = {http_to_tls, NULL, NULL, NULL, false};
    rc = try_connect(&h2c, &err, &ms);
    CHECK(rc < 0 && has(err.msg, "TLS") && ms < 15000,
          "http:// to the TLS port → %d after %lld ms: %s", rc, ms, err.msg);

    tls_case tls_plain = {https_to_plain, f->cacert, f->cert, f->key, false};
    rc = try_connect(&tls_plain, &err, &ms);
    CHECK(rc < 0 && (has(err.msg, "not TLS") || has(err.msg, "plain")) && ms < 15000,
          "https:// to a plain port → %d after %lld ms: %s", rc, ms, err.msg);

    tls_case insecure = {url, wrong_ca, f->cert, f->key, true};
    rc = try_connect(&insecure, &err, &ms);
    CHECK(rc == 0, "insecure_skip_verify ignores the wrong CA: %s", rc ? err.msg : "ok");

    tls_case missing = {url, "/nonexistent/ca.pem", NULL, NULL, false};
    rc = try_connect(&missing, &err, &ms);
    CHECK(rc < 0 && has(err.msg, "/nonexistent/ca.pem"), "missing CA file named: %s", err.msg);

    tls_case mismatched = {url, f->cacert, f->cert, f->server_key, false};
    rc = try_connect(&mismatched, &err, &ms);
    CHECK(rc < 0 && has(err.msg, "does not match"), "key not matching the cert: %s", err.msg);

    fixture_stop(plain);
    fixture_stop(f);
    return check_done();
}

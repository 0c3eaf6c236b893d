/* status_test.c — the error vocabulary: etcd's messages and gRPC codes map to the right
 * enum etcd_err, each code has a name and the errno a filesystem returns for it. */
#include <errno.h>
#include <string.h>

#include "etcd.h"
#include "check.h"

static const struct {
    int grpc;
    const char *msg;
    int want;
} cases[] = {
    {3, "etcdserver: request is too large", ETCD_E_TOO_LARGE},
    {8, "grpc: received message larger than max (2097230 vs. 2097152)", ETCD_E_TOO_LARGE},
    {8, "etcdserver: mvcc: database space exceeded", ETCD_E_NOSPACE},
    {7, "etcdserver: permission denied", ETCD_E_PERMISSION},
    {3, "etcdserver: authentication failed, invalid user ID or password", ETCD_E_AUTH_FAILED},
    {16, "etcdserver: invalid auth token", ETCD_E_INVALID_TOKEN},
    {16, "etcdserver: auth token expired", ETCD_E_INVALID_TOKEN},
    {3, "etcdserver: too many operations in txn request", ETCD_E_TOO_MANY_OPS},
    {11, "etcdserver: mvcc: required revision has been compacted", ETCD_E_COMPACTED},
    {11, "etcdserver: mvcc: required revision is a future revision", ETCD_E_FUTURE_REV},
    {0, "", ETCD_OK},
    {5, "etcdserver: requested lease not found", ETCD_E_NOT_FOUND},
    {5, "etcdserver: member not found", ETCD_E_NOT_FOUND},
    {14, "etcdserver: no leader", ETCD_E_UNAVAILABLE},
    {14, "etcdserver: request timed out", ETCD_E_UNAVAILABLE},
    {8, "etcdserver: too many requests", ETCD_E_UNAVAILABLE},
    {9, "etcdserver: not leader", ETCD_E_INVALID_ARG},
    {3, "etcdserver: key is not provided", ETCD_E_INVALID_ARG},
    /* bare codes, no known message */
    {1, NULL, ETCD_E_CANCELLED},
    {3, NULL, ETCD_E_INVALID_ARG},
    {4, NULL, ETCD_E_DEADLINE},
    {5, NULL, ETCD_E_NOT_FOUND},
    {7, NULL, ETCD_E_PERMISSION},
    {8, "", ETCD_E_TOO_LARGE},
    {9, NULL, ETCD_E_INVALID_ARG},
    {11, NULL, ETCD_E_INVALID_ARG},
    {13, "transport: something", ETCD_E_INTERNAL},
    {14, NULL, ETCD_E_UNAVAILABLE},
    {16, NULL, ETCD_E_INVALID_TOKEN},
    {2, "some unknown failure", ETCD_E_INTERNAL},
};

static const struct { int code, err; } errnos[] = {
    {ETCD_OK, 0},
    {ETCD_E_UNAVAILABLE, EIO},       {ETCD_E_DEADLINE, EIO},
    {ETCD_E_UNKNOWN_OUTCOME, EIO},   {ETCD_E_COMPACTED, EIO},
    {ETCD_E_FUTURE_REV, EIO},        {ETCD_E_PERMISSION, EACCES},
    {ETCD_E_AUTH_FAILED, EACCES},    {ETCD_E_INVALID_TOKEN, EACCES},
    {ETCD_E_TOO_LARGE, EFBIG},       {ETCD_E_NOSPACE, ENOSPC},
    {ETCD_E_TOO_MANY_OPS, E2BIG},    {ETCD_E_INVALID_ARG, EINVAL},
    {ETCD_E_NOT_FOUND, ENOENT},      {ETCD_E_TLS, EIO},
    {ETCD_E_PROTOCOL, EIO},          {ETCD_E_CANCELLED, ECANCELED},
    {ETCD_E_NOMEM, ENOMEM},          {ETCD_E_INTERNAL, EIO},
};

int main(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = etcd_err_from_grpc(cases[i].grpc, cases[i].msg);
        CHECK(got == cases[i].want, "grpc %d \"%s\" -> %s (got %s)", cases[i].grpc,
              cases[i].msg ? cases[i].msg : "(null)", etcd_err_name(cases[i].want),
              etcd_err_name(got));
    }
    for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++) {
        CHECK(etcd_err_errno(errnos[i].code) == errnos[i].err, "%s -> errno %d",
              etcd_err_name(errnos[i].code), errnos[i].err);
        CHECK(etcd_err_errno(-errnos[i].code) == errnos[i].err, "negative %s accepted too",
              etcd_err_name(errnos[i].code));
    }
    /* every code has its own name */
    int distinct = 1;
    for (int a = 0; a < ETCD_E__COUNT; a++)
        for (int b = a + 1; b < ETCD_E__COUNT; b++)
            if (!strcmp(etcd_err_name(a), etcd_err_name(b)))
                distinct = 0;
    CHECK(distinct, "all %d codes have distinct names", ETCD_E__COUNT);
    CHECK(!strcmp(etcd_err_name(ETCD_E__COUNT + 5), "unknown error"), "out-of-range name");

    etcd_error e;
    int rc = etcd_error_set(&e, ETCD_E_NOSPACE, 8, "put %s: %d", "k", 42);
    CHECK(rc == -ETCD_E_NOSPACE, "etcd_error_set returns -code");
    CHECK(e.code == ETCD_E_NOSPACE && e.grpc_status == 8 && !strcmp(e.msg, "put k: 42"),
          "etcd_error_set fills code, status and message");
    CHECK(etcd_error_set(NULL, ETCD_E_DEADLINE, -1, "x") == -ETCD_E_DEADLINE,
          "etcd_error_set with NULL err");
    char big[600];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    etcd_error_set(&e, ETCD_E_INTERNAL, -1, "%s", big);
    CHECK(strlen(e.msg) == sizeof(e.msg) - 1, "long message truncated safely");
    return check_done();
}

/* status.c — the client's error vocabulary: names, errno mapping for the filesystem, and the
 * translation of gRPC status codes plus etcd's own error strings (rpctypes/error.go) into
 * enum etcd_err. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "etcd.h"

static const char *const err_names[ETCD_E__COUNT] = {
    [ETCD_OK] = "ok",
    [ETCD_E_UNAVAILABLE] = "unavailable",
    [ETCD_E_DEADLINE] = "deadline exceeded",
    [ETCD_E_UNKNOWN_OUTCOME] = "unknown outcome",
    [ETCD_E_COMPACTED] = "revision compacted",
    [ETCD_E_FUTURE_REV] = "future revision",
    [ETCD_E_PERMISSION] = "permission denied",
    [ETCD_E_AUTH_FAILED] = "authentication failed",
    [ETCD_E_INVALID_TOKEN] = "invalid auth token",
    [ETCD_E_TOO_LARGE] = "request too large",
    [ETCD_E_NOSPACE] = "database space exceeded",
    [ETCD_E_TOO_MANY_OPS] = "too many operations in txn",
    [ETCD_E_INVALID_ARG] = "invalid argument",
    [ETCD_E_NOT_FOUND] = "not found",
    [ETCD_E_TLS] = "tls error",
    [ETCD_E_PROTOCOL] = "protocol error",
    [ETCD_E_CANCELLED] = "cancelled",
    [ETCD_E_NOMEM] = "out of memory",
    [ETCD_E_INTERNAL] = "internal error",
};

const char *etcd_err_name(int code)
{
    if (code < 0)
        code = -code;
    if (code >= ETCD_E__COUNT || !err_names[code])
        return "unknown error";
    return err_names[code];
}

/* The errno a filesystem operation reports. A txn with too many operations is the caller
 * asking for too much in one request, hence E2BIG (argument list too long); a compacted or
 * future revision cannot be served, which to a file reader is an I/O error. */
int etcd_err_errno(int code)
{
    if (code < 0)
        code = -code;
    switch (code) {
    case ETCD_OK: return 0;
    case ETCD_E_UNAVAILABLE:
    case ETCD_E_DEADLINE:
    case ETCD_E_UNKNOWN_OUTCOME:
    case ETCD_E_COMPACTED:
    case ETCD_E_FUTURE_REV:
    case ETCD_E_TLS:
    case ETCD_E_PROTOCOL:
    case ETCD_E_INTERNAL: return EIO;
    case ETCD_E_PERMISSION:
    case ETCD_E_AUTH_FAILED:
    case ETCD_E_INVALID_TOKEN: return EACCES;
    case ETCD_E_TOO_LARGE: return EFBIG;
    case ETCD_E_NOSPACE: return ENOSPC;
    case ETCD_E_TOO_MANY_OPS: return E2BIG;
    case ETCD_E_INVALID_ARG: return EINVAL;
    case ETCD_E_NOT_FOUND: return ENOENT;
    case ETCD_E_CANCELLED: return ECANCELED;
    case ETCD_E_NOMEM: return ENOMEM;
    default: return EIO;
    }
}

int etcd_error_set(etcd_error *err, int code, int grpc_status, const char *fmt, ...)
{
    if (code < 0)
        code = -code;
    if (err) {
        err->code = code;
        err->grpc_status = grpc_status;
        err->msg[0] = '\0';
        if (fmt) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
            va_end(ap);
        }
    }
    return -code;
}

/* etcd's messages, matched as substrings: they arrive with or without the "etcdserver: "
 * prefix depending on the path (watch cancel reasons, proxies). Order matters: the more
 * specific text first. */
static const struct { const char *text; int code; } msg_map[] = {
    {"required revision has been compacted", ETCD_E_COMPACTED},
    {"required revision is a future revision", ETCD_E_FUTURE_REV},
    {"database space exceeded", ETCD_E_NOSPACE},
    {"request is too large", ETCD_E_TOO_LARGE},
    {"larger than max", ETCD_E_TOO_LARGE},            /* grpc-go's own receive limit */
    {"too many operations in txn request", ETCD_E_TOO_MANY_OPS},
    {"authentication failed, invalid user ID or password", ETCD_E_AUTH_FAILED},
    {"invalid auth token", ETCD_E_INVALID_TOKEN},
    {"auth token expired", ETCD_E_INVALID_TOKEN},
    {"revision of auth store is old", ETCD_E_INVALID_TOKEN},
    {"user name not found", ETCD_E_AUTH_FAILED},
    {"permission denied", ETCD_E_PERMISSION},
    {"requested lease not found", ETCD_E_NOT_FOUND},
    {"member not found", ETCD_E_NOT_FOUND},
    {"no leader", ETCD_E_UNAVAILABLE},
    {"leader changed", ETCD_E_UNAVAILABLE},
    {"not capable", ETCD_E_UNAVAILABLE},
    {"server stopped", ETCD_E_UNAVAILABLE},
    {"request timed out", ETCD_E_UNAVAILABLE},
    {"unhealthy cluster", ETCD_E_UNAVAILABLE},
    {"too many requests", ETCD_E_UNAVAILABLE},
};

int etcd_err_from_grpc(int grpc_status, const char *msg)
{
    if (grpc_status == 0)
        return ETCD_OK;
    if (msg) {
        for (size_t i = 0; i < sizeof(msg_map) / sizeof(msg_map[0]); i++)
            if (strstr(msg, msg_map[i].text))
                return msg_map[i].code;
    }
    switch (grpc_status) {
    case 1: return ETCD_E_CANCELLED;          /* CANCELLED */
    case 3: return ETCD_E_INVALID_ARG;        /* INVALID_ARGUMENT */
    case 4: return ETCD_E_DEADLINE;           /* DEADLINE_EXCEEDED */
    case 5: return ETCD_E_NOT_FOUND;          /* NOT_FOUND */
    case 7: return ETCD_E_PERMISSION;         /* PERMISSION_DENIED */
    case 8: return ETCD_E_TOO_LARGE;          /* RESOURCE_EXHAUSTED (message size limits) */
    case 9: return ETCD_E_INVALID_ARG;        /* FAILED_PRECONDITION */
    case 11: return ETCD_E_INVALID_ARG;       /* OUT_OF_RANGE */
    case 14: return ETCD_E_UNAVAILABLE;       /* UNAVAILABLE */
    case 16: return ETCD_E_INVALID_TOKEN;     /* UNAUTHENTICATED */
    case 12: return ETCD_E_INTERNAL;          /* UNIMPLEMENTED */
    default: return ETCD_E_INTERNAL;          /* UNKNOWN, ABORTED, INTERNAL, DATA_LOSS, ... */
    }
}

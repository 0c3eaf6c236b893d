/* etcd.h — the public etcd v3 client API used by cache/, fs/, tools and tests.
 * Knows nothing of paths or inodes. Every call is synchronous with a deadline and is safe to
 * call from any thread; streams (watch, lease keepalive, snapshot) deliver to callbacks that run
 * on the client's event-loop thread and must never block. */
#ifndef ETCDFS_ETCD_H
#define ETCDFS_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ---------------------------------------------------------------------------- */

/* One result type for every caller. 0 is success; calls return -ETCD_E_* (a negative value). */
enum etcd_err {
    ETCD_OK = 0,
    ETCD_E_UNAVAILABLE = 1,   /* no endpoint reachable / not serving / no leader */
    ETCD_E_DEADLINE,          /* the call's deadline passed */
    ETCD_E_UNKNOWN_OUTCOME,   /* connection lost after a non-idempotent request was sent */
    ETCD_E_COMPACTED,         /* "mvcc: required revision has been compacted" */
    ETCD_E_FUTURE_REV,        /* "mvcc: required revision is a future revision" */
    ETCD_E_PERMISSION,        /* "etcdserver: permission denied" */
    ETCD_E_AUTH_FAILED,       /* "authentication failed, invalid user ID or password" */
    ETCD_E_INVALID_TOKEN,     /* token invalid/expired (renewed transparently by the client) */
    ETCD_E_TOO_LARGE,         /* "etcdserver: request is too large" */
    ETCD_E_NOSPACE,           /* "etcdserver: mvcc: database space exceeded" (quota alarm) */
    ETCD_E_TOO_MANY_OPS,      /* "etcdserver: too many operations in txn request" */
    ETCD_E_INVALID_ARG,       /* other InvalidArgument / FailedPrecondition */
    ETCD_E_NOT_FOUND,         /* member / lease not found */
    ETCD_E_TLS,               /* TLS handshake or verification failed */
    ETCD_E_PROTOCOL,          /* peer spoke something other than gRPC over HTTP/2 */
    ETCD_E_CANCELLED,         /* cancelled by the caller or the client shutting down */
    ETCD_E_NOMEM,
    ETCD_E_INTERNAL,          /* anything else; message says what */
    ETCD_E__COUNT
};

typedef struct etcd_error {
    int code;          /* enum etcd_err */
    int grpc_status;   /* grpc-status as received, -1 when no status was received */
    char msg[256];     /* etcd's own message or the local cause, for logs */
} etcd_error;

const char *etcd_err_name(int code);       /* "unavailable", "permission denied", ... */
int etcd_err_errno(int code);              /* the errno a filesystem should return */
/* Fill *err (when non-NULL) and return -code. */
int etcd_error_set(etcd_error *err, int code, int grpc_status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Map a gRPC status and message (etcd's error strings) to an enum etcd_err. */
int etcd_err_from_grpc(int grpc_status, const char *msg);

/* ---- client ---------------------------------------------------------------------------- */

typedef struct etcd_config {
    const char *const *endpoints;  /* "host:port", "http://h:p" or "https://h:p" */
    size_t n_endpoints;
    const char *cacert, *cert, *key; /* PEM files; any of them set → scheme-less endpoints use TLS */
    bool insecure_skip_verify;
    const char *user, *password;   /* auth; NULL user = no auth */
    int dial_timeout_ms;           /* 0 → 5000: connect + TLS + HTTP/2 settings per endpoint */
    int call_timeout_ms;           /* 0 → 10000: default deadline of unary calls */
    int keepalive_time_ms;         /* 0 → 10000: PING after this much idle time */
    int keepalive_timeout_ms;      /* 0 → 5000: no PING ACK within this → connection dead */
} etcd_config;

typedef struct etcd_client etcd_client;

/* Starts the event loop, connects to the first reachable endpoint and authenticates (when a
 * user is given) before returning, so a bad endpoint, TLS setup or password fails here. */
int etcd_client_new(const etcd_config *cfg, etcd_client **out, etcd_error *err);
void etcd_client_free(etcd_client *c);
/* The deadline used by calls whose timeout_ms argument is 0. */
int etcd_client_call_timeout(const etcd_client *c);
/* URL of the endpoint currently in use, for logs ("http://127.0.0.1:2379"). */
const char *etcd_client_endpoint(etcd_client *c);

typedef struct etcd_header {
    uint64_t cluster_id, member_id;
    int64_t revision;
    uint64_t raft_term;
} etcd_header;

/* A key-value as etcd stores it. Pointers refer into the response that holds it. */
typedef struct etcd_kv {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t create_revision, mod_revision, version, lease;
} etcd_kv;

/* ---- KV ---------------------------------------------------------------------------------- */

enum etcd_sort_order { ETCD_SORT_NONE = 0, ETCD_SORT_ASCEND, ETCD_SORT_DESCEND };
enum etcd_sort_target { ETCD_SORT_KEY = 0, ETCD_SORT_VERSION, ETCD_SORT_CREATE, ETCD_SORT_MOD,
                        ETCD_SORT_VALUE };

typedef struct etcd_range_req {
    const void *key;
    size_t key_len;
    const void *range_end;   /* NULL: the single key. Use etcd_prefix_end() for a prefix */
    size_t range_end_len;
    int64_t limit, revision;
    bool keys_only, count_only, serializable;
    int sort_order, sort_target;
    int timeout_ms;          /* 0: client default */
} etcd_range_req;

typedef struct etcd_range_resp {
    etcd_header header;
    etcd_kv *kvs;
    size_t n_kvs;
    bool more;
    int64_t count;
    void *priv;              /* owns the memory kvs point into */
} etcd_range_resp;

/* Range is idempotent: retried on another endpoint within its deadline. Responses up to
 * 64 MiB are accepted (etcd sends big Ranges whole); callers page with limit for more. */
int etcd_range(etcd_client *c, const etcd_range_req *req, etcd_range_resp *resp, etcd_error *err);
void etcd_range_resp_free(etcd_range_resp *resp);

/* range_end for "every key with this prefix" (etcd's rule: last byte < 0xff incremented;
 * all-0xff or empty → "\0", meaning to the end of the keyspace). Returns malloc'd bytes. */
uint8_t *etcd_prefix_end(const void *prefix, size_t len, size_t *out_len);

typedef struct etcd_put_opts {
    int64_t lease;
    bool prev_kv, ignore_value, ignore_lease;
    int timeout_ms;
} etcd_put_opts;

typedef struct etcd_put_resp {
    etcd_header header;
    bool has_prev;
    etcd_kv prev_kv;
    void *priv;
} etcd_put_resp;

/* Not retried once sent (its answer may have been lost): -ETCD_E_UNKNOWN_OUTCOME then.
 * resp may be NULL. */
int etcd_put(etcd_client *c, const void *key, size_t key_len, const void *val, size_t val_len,
             const etcd_put_opts *opts, etcd_put_resp *resp, etcd_error *err);
void etcd_put_resp_free(etcd_put_resp *resp);

typedef struct etcd_delete_resp {
    etcd_header header;
    int64_t deleted;
    etcd_kv *prev_kvs;
    size_t n_prev_kvs;
    void *priv;
} etcd_delete_resp;

int etcd_delete(etcd_client *c, const void *key, size_t key_len, const void *range_end,
                size_t range_end_len, bool prev_kv, etcd_delete_resp *resp, etcd_error *err);
void etcd_delete_resp_free(etcd_delete_resp *resp);

enum etcd_cmp_result { ETCD_CMP_EQUAL = 0, ETCD_CMP_GREATER, ETCD_CMP_LESS, ETCD_CMP_NOT_EQUAL };
enum etcd_cmp_target { ETCD_CMP_VERSION = 0, ETCD_CMP_CREATE, ETCD_CMP_MOD, ETCD_CMP_VALUE,
                       ETCD_CMP_LEASE };

typedef struct etcd_compare {
    int result, target;
    const void *key;
    size_t key_len;
    const void *range_end;
    size_t range_end_len;
    int64_t number;          /* version / create_revision / mod_revision / lease */
    const void *value;       /* for ETCD_CMP_VALUE */
    size_t value_len;
} etcd_compare;

enum etcd_op_type { ETCD_OP_RANGE = 0, ETCD_OP_PUT, ETCD_OP_DELETE };

typedef struct etcd_op {
    int type;
    const void *key;
    size_t key_len;
    const void *range_end;
    size_t range_end_len;
    const void *value;       /* PUT */
    size_t value_len;
    int64_t lease;           /* PUT */
    bool prev_kv, ignore_lease; /* PUT/DELETE, PUT */
    bool keys_only;          /* RANGE */
    int64_t limit;           /* RANGE */
} etcd_op;

typedef struct etcd_op_resp {
    int type;
    /* RANGE: */
    etcd_kv *kvs;
    size_t n_kvs;
    int64_t count;
    bool more;
    /* PUT: prev_kv when asked; DELETE: deleted count and prev_kvs */
    bool has_prev;
    etcd_kv prev_kv;
    int64_t deleted;
    etcd_kv *prev_kvs;
    size_t n_prev_kvs;
} etcd_op_resp;

typedef struct etcd_txn_resp {
    etcd_header header;
    bool succeeded;
    etcd_op_resp *responses;
    size_t n_responses;
    void *priv;
} etcd_txn_resp;

/* Retried only when it contains no PUT or DELETE. */
int etcd_txn(etcd_client *c, const etcd_compare *cmp, size_t n_cmp, const etcd_op *success,
             size_t n_success, const etcd_op *failure, size_t n_failure, int timeout_ms,
             etcd_txn_resp *resp, etcd_error *err);
void etcd_txn_resp_free(etcd_txn_resp *resp);

int etcd_compact(etcd_client *c, int64_t revision, bool physical, etcd_error *err);

/* ---- Watch ------------------------------------------------------------------------------- */

enum etcd_event_type { ETCD_EVENT_PUT = 0, ETCD_EVENT_DELETE = 1 };

typedef struct etcd_event {
    int type;
    etcd_kv kv;              /* for DELETE: key and mod_revision (the deletion's revision) */
    bool has_prev;
    etcd_kv prev_kv;
} etcd_event;

typedef struct etcd_watch_req {
    const void *key;
    size_t key_len;
    const void *range_end;   /* NULL: one key; etcd_prefix_end() for a prefix */
    size_t range_end_len;
    int64_t start_revision;  /* 0: from now */
    bool prev_kv, progress_notify;
} etcd_watch_req;

typedef struct etcd_watch_cbs {
    /* Events in revision order, fragments already reassembled. n == 0: a progress
     * notification (header.revision is then a revision the watch has caught up to). */
    void (*on_events)(void *arg, const etcd_header *hdr, const etcd_event *evs, size_t n);
    /* The watch ended and will deliver nothing more: compacted (compact_revision > 0: the
     * owner must resync from a Range and start a new watch), or a permanent error
     * (permission denied, client shut down). Not called for transient disconnects. */
    void (*on_cancel)(void *arg, int64_t compact_revision, const etcd_error *err);
} etcd_watch_cbs;

typedef struct etcd_watch etcd_watch;

/* All watches of a client share one bidirectional Watch stream. When the connection breaks or
 * the endpoint changes, the client reopens the stream and re-creates each watch from the
 * revision after the last one it delivered, so no event is lost or delivered twice. Returns once
 * etcd confirmed the watch (or failed). Callbacks run on the event-loop thread, never block. */
int etcd_watch_start(etcd_client *c, const etcd_watch_req *req, const etcd_watch_cbs *cbs,
                     void *arg, etcd_watch **out, etcd_error *err);
/* Cancels and frees; no callback runs after it returns. */
void etcd_watch_stop(etcd_watch *w);

/* ---- Lease ------------------------------------------------------------------------------- */

int etcd_lease_grant(etcd_client *c, int64_t ttl, int64_t id, int64_t *out_id, int64_t *out_ttl,
                     etcd_error *err);
int etcd_lease_revoke(etcd_client *c, int64_t id, etcd_error *err);

typedef struct etcd_lease_ttl {
    int64_t id, ttl, granted_ttl;   /* ttl -1: expired or not found */
    uint8_t **keys;
    size_t *key_lens;
    size_t n_keys;
    void *priv;
} etcd_lease_ttl;

int etcd_lease_timetolive(etcd_client *c, int64_t id, bool keys, etcd_lease_ttl *out,
                          etcd_error *err);
void etcd_lease_ttl_free(etcd_lease_ttl *t);
int etcd_lease_leases(etcd_client *c, int64_t **ids, size_t *n, etcd_error *err);
/* One keepalive round trip; *ttl is the renewed TTL (0 when the lease is gone). */
int etcd_lease_keepalive_once(etcd_client *c, int64_t id, int64_t *ttl, etcd_error *err);

typedef struct etcd_keepalive etcd_keepalive;
/* Keeps the lease alive (a refresh every ttl/3) until stopped; on_lost is called (loop thread)
 * when the lease expired or was revoked. */
int etcd_lease_keepalive_start(etcd_client *c, int64_t id,
                               void (*on_lost)(void *arg, int64_t id), void *arg,
                               etcd_keepalive **out, etcd_error *err);
void etcd_lease_keepalive_stop(etcd_keepalive *k);

/* ---- Cluster and maintenance ------------------------------------------------------------- */

typedef struct etcd_member {
    uint64_t id;
    char *name;
    char **peer_urls;
    size_t n_peer_urls;
    char **client_urls;
    size_t n_client_urls;
    bool is_learner;
} etcd_member;

struct etcd_member_list {
    etcd_header header;
    etcd_member *members;
    size_t n_members;
};

/* The struct and the function share a name (as etcd's API does); always write the struct tag. */
int etcd_member_list(etcd_client *c, struct etcd_member_list *out, etcd_error *err);
void etcd_member_list_free(struct etcd_member_list *l);

typedef struct etcd_status_resp {
    etcd_header header;
    char version[32];
    int64_t db_size, db_size_in_use;
    uint64_t leader;
    int64_t raft_index, raft_term, raft_applied_index;
    bool is_learner;
    char errors[256];        /* etcd's errors joined by "; " */
} etcd_status_resp;

/* endpoint: a client URL to ask (any member, not only configured ones), NULL = current one.
 * Maintenance calls aimed at an endpoint use a separate connection to it. */
int etcd_status(etcd_client *c, const char *endpoint, etcd_status_resp *out, etcd_error *err);

enum etcd_alarm_action { ETCD_ALARM_GET = 0, ETCD_ALARM_ACTIVATE, ETCD_ALARM_DEACTIVATE };
enum etcd_alarm_type { ETCD_ALARM_NONE = 0, ETCD_ALARM_NOSPACE, ETCD_ALARM_CORRUPT };

struct etcd_alarm { uint64_t member_id; int alarm; };

int etcd_alarm(etcd_client *c, int action, uint64_t member_id, int alarm, struct etcd_alarm **alarms,
               size_t *n, etcd_error *err);
int etcd_defragment(etcd_client *c, const char *endpoint, etcd_error *err);
/* Sends MoveLeader to the current leader (found through Status of the members). */
int etcd_move_leader(etcd_client *c, uint64_t target_id, etcd_error *err);

/* A snapshot, pulled by the reader: chunks are taken from the stream only as the reader asks,
 * with HTTP/2 flow control, so a slow reader holds at most a few windows in memory and a 2 GiB
 * database streams through. Two snapshots may be open at once. */
typedef struct etcd_snapshot etcd_snapshot;
int etcd_snapshot_open(etcd_client *c, etcd_snapshot **out, etcd_error *err);
/* Copies up to len bytes; returns the count, 0 at the end of a complete snapshot, or -ETCD_E_*.
 * timeout_ms bounds the wait for the next chunk (0: client default). */
long etcd_snapshot_read(etcd_snapshot *s, void *buf, size_t len, int timeout_ms,
                        etcd_error *err);
/* Cancels the stream when it was not read to the end; frees. */
void etcd_snapshot_close(etcd_snapshot *s);

#endif

/* rpc.c — the transport: one epoll loop thread owning every socket, TLS or h2c connections
 * with an nghttp2 client session each, gRPC unary calls and streams over them, endpoint
 * selection with failover, PING keepalive. Callers on other threads talk to the loop only
 * through the task queue (mutex + eventfd) and wait for their call on a condition variable.
 *
 * Retry rules (what may be sent again, and when):
 *  - A call is sent again only within its deadline, on the next endpoint in order.
 *  - RPC_IDEMPOTENT calls are retried after any transport failure (connect refused or timed
 *    out, TLS/HTTP/2 setup failure, reset, EOF, keepalive timeout, GOAWAY) and after a
 *    grpc-status UNAVAILABLE answer ("etcdserver: no leader", "not capable"), which also moves
 *    the pool on to the next endpoint.
 *  - Other calls are retried only when the request provably never reached etcd: it was still
 *    waiting for a connection, none of its DATA was handed to the socket, the server refused
 *    the stream (REFUSED_STREAM), or a GOAWAY named a last stream id below ours. Otherwise they
 *    fail with ETCD_E_UNKNOWN_OUTCOME.
 *  - Streams are never re-sent by the transport: their owner gets on_close(UNAVAILABLE).
 *  - After a full round of endpoint failures the next attempt waits RPC_BACKOFF_MS (doubling
 *    up to RPC_BACKOFF_MAX_MS), so an unreachable cluster is not spun on.
 *  - A call with opts.endpoint uses a dedicated cached connection to that URL: no failover,
 *    it fails as soon as a connection attempt to that URL failed.
 *
 * Locks: r->mu guards the task queue, call completion (done/abandoned/result), stream "ended"
 * flags and r->stopping. It is never held while calling into nghttp2, OpenSSL or callbacks.
 * Everything else (conns, targets, streams' protocol state) belongs to the loop thread. */
#include "rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "tls.h"

#define RPC_MAX_MSG (64u << 20)
#define RPC_CONN_WINDOW (16 << 20)
#define RPC_STREAM_WINDOW (8 << 20)
#define RPC_MIN_PING_MS 5000      /* etcd's --grpc-keepalive-min-time: faster is "too_many_pings" */
#define RPC_WBUF_FILL (256 << 10) /* output gathered per write */
#define RPC_BACKOFF_MS 100
#define RPC_BACKOFF_MAX_MS 200
#define RPC_WAIT_GRACE_MS 3000    /* caller-side safety margin past the loop-enforced deadline */

/* ---- types ----------------------------------------------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t len, off, cap;
} buf;

typedef struct endpoint {
    char *url;          /* normalized "http(s)://host:port", stable for rpc_endpoint */
    char *host;         /* for getaddrinfo and certificate checks, without brackets */
    char *authority;    /* ":authority", brackets kept */
    char port[8];
    bool tls;
} endpoint;

struct conn;
struct call;

/* Where calls go: the configured endpoints with failover, or one URL (dedicated). */
typedef struct target {
    struct rpc *r;
    endpoint *eps;
    size_t n;
    size_t cur;               /* endpoint in use or being tried */
    struct conn *conn;        /* current connection (connecting or ready), or NULL */
    unsigned fails;           /* consecutive failures since a call last succeeded */
    int backoff_ms;
    uint64_t retry_at;        /* no new connection before this (backoff between rounds) */
    etcd_error last_err;
    bool dedicated;
    struct target *next;
} target;

enum conn_state { C_TCP, C_TLS, C_H2WAIT, C_READY };

typedef struct conn {
    struct rpc *r;
    target *t;
    endpoint *ep;
    int fd;
    SSL *ssl;
    int state;
    struct addrinfo *ai, *ai_cur;
    int sys_errno;
    nghttp2_session *h2;
    uint64_t dial_deadline, last_recv, ping_at, last_ping;
    buf out;
    uint32_t ev;
    bool dead, draining, got_bytes, read_wants_write;
    int32_t goaway_last;
    struct rpc_stream *streams;   /* attached streams */
    size_t nstreams, nunary;
    struct conn *next;
} conn;

struct rpc_stream {
    struct rpc *r;
    conn *c;
    int32_t id;
    struct rpc_stream *cnext, *cprev;   /* in c->streams */
    struct rpc_stream *unext, *uprev;   /* in r->ustreams (user streams only) */
    char *method, *token;
    unsigned flags;
    bool unary;
    rpc_stream_cbs cbs;
    void *arg;
    buf out;                      /* framed messages not yet given to nghttp2 */
    bool end_queued, deferred, data_sent;
    grpc_reader rd;
    int http_status, grpc_status;
    char *grpc_msg;
    bool has_local;               /* we reset it ourselves; local says why */
    etcd_error local;
    bool user_closed, ended;      /* ended: guarded by r->mu (read by senders) */
    int cb_depth;
    struct call *call;            /* unary: its call */
    uint8_t *resp;
    size_t resp_len;
    int nresp;
};

enum call_kind { CALL_UNARY, CALL_STREAM, CALL_CONNECT };

typedef struct call {
    int kind;
    char *endpoint_url;
    target *t;
    uint64_t deadline;
    int timeout_ms;
    unsigned flags;
    struct rpc_stream *s;
    unsigned fails;               /* connection failures seen while waiting */
    bool waiting, finished, retried;
    etcd_error retry_err;         /* why the last attempt was retried */
    struct call *next, *prev;     /* r->calls */
    /* result, then completion under r->mu */
    int rc;
    etcd_error err;
    pthread_cond_t cv;
    bool done, abandoned;
} call;

enum task_kind { T_CALL, T_SEND, T_END, T_CONSUME, T_CLOSE, T_DEFER, T_STOP };

typedef struct task {
    int kind;
    void *p;
    void (*fn)(void *);
    uint8_t *data;
    size_t len;
    bool *done;
    struct task *next;
} task;

struct rpc {
    target pool;
    target *dedicated;
    SSL_CTX *ssl_ctx;
    char *cacert, *cert, *key;
    bool insecure, default_tls;
    bool debug;                   /* ETCDFS_RPC_DEBUG set: connection events on stderr */
    int dial_timeout_ms, ka_time_ms, ka_timeout_ms;

    int epfd, evfd;
    pthread_t thread;
    bool thread_started;
    nghttp2_session_callbacks *h2cbs;

    pthread_mutex_t mu;
    pthread_cond_t close_cv;      /* rpc_stream_close waiters */
    task *q_head, *q_tail;
    bool stopping;

    /* loop-only */
    bool stop;
    conn *conns;
    call *calls;
    struct rpc_stream *ustreams;
};

static _Thread_local rpc *loop_owner;   /* set on the loop thread: "am I the loop?" */

/* ---- small helpers --------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int buf_append(buf *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return -ETCD_E_NOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

static void buf_free(buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Appends the 5-byte prefix and the message. */
static int buf_append_msg(buf *b, const uint8_t *msg, size_t len)
{
    uint8_t h[5];
    if (len > UINT32_MAX)
        return -ETCD_E_TOO_LARGE;
    grpc_frame_header(h, (uint32_t)len);
    int rc = buf_append(b, h, 5);
    if (rc == 0 && len)
        rc = buf_append(b, msg, len);
    return rc;
}

static void err_copy(etcd_error *dst, const etcd_error *src)
{
    if (dst)
        *dst = *src;
}

static void err_ok(etcd_error *err)
{
    if (err) {
        err->code = 0;
        err->grpc_status = -1;
        err->msg[0] = '\0';
    }
}

/* ---- endpoints ------------------------------------------------------------------------- */

static void endpoint_free(endpoint *ep)
{
    free(ep->url);
    free(ep->host);
    free(ep->authority);
}

/* "http://h:p", "https://h:p", "h:p", "[v6]:p", optional trailing path ignored. */
static int endpoint_parse(const char *in, bool default_tls, endpoint *ep, etcd_error *err)
{
    memset(ep, 0, sizeof *ep);
    const char *p = in;
    bool tls = default_tls;
    if (strncmp(p, "http://", 7) == 0) {
        tls = false;
        p += 7;
    } else if (strncmp(p, "https://", 8) == 0) {
        tls = true;
        p += 8;
    } else if (strstr(p, "://")) {
        return etcd_error_set(err, ETCD_E_INVALID_ARG, -1, "endpoint %s: unknown scheme", in);
    }
    size_t hl = strcspn(p, "/");
    char hostport[300];
    if (hl == 0 || hl >= sizeof hostport)
        return etcd_error_set(err, ETCD_E_INVALID_ARG, -1, "endpoint %s: no host", in);
    memcpy(hostport, p, hl);
    hostport[hl] = '\0';
    char host[300];
    const char *port = NULL;
    if (hostport[0] == '[') {
        char *rb = strchr(hostport, ']');
        if (!rb)
            return etcd_error_set(err, ETCD_E_INVALID_ARG, -1, "endpoint %s: bad IPv6 address", in);
        *rb = '\0';
        snprintf(host, sizeof host, "%s", hostport + 1);
        *rb = ']';
        if (rb[1] == ':')
            port = rb + 2;
    } else {
        char *colon = strrchr(hostport, ':');
        if (colon) {
            *colon = '\0';
            port = colon + 1;
        }
        snprintf(host, sizeof host, "%s", hostport);
        if (colon)
            *colon = ':';
    }
    if (!port || !*port)
        port = "2379";
    char *end;
    long pn = strtol(port, &end, 10);
    if (*end || pn <= 0 || pn > 65535 || !host[0])
        return etcd_error_set(err, ETCD_E_INVALID_ARG, -1, "endpoint %s: bad host or port", in);
    snprintf(ep->port, sizeof ep->port, "%ld", pn);
    bool v6 = strchr(host, ':') != NULL;
    char auth[320], url[340];
    snprintf(auth, sizeof auth, "%s%s%s:%ld", v6 ? "[" : "", host, v6 ? "]" : "", pn);
    snprintf(url, sizeof url, "%s://%s", tls ? "https" : "http", auth);
    ep->url = strdup(url);
    ep->host = strdup(host);
    ep->authority = strdup(auth);
    ep->tls = tls;
    if (!ep->url || !ep->host || !ep->authority) {
        endpoint_free(ep);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    return 0;
}

/* ---- task queue ------------------------------------------------------------------------ */

static int task_push(rpc *r, task *t)
{
    pthread_mutex_lock(&r->mu);
    if (r->stopping && t->kind != T_STOP) {
        pthread_mutex_unlock(&r->mu);
        return -ETCD_E_CANCELLED;
    }
    t->next = NULL;
    if (r->q_tail)
        r->q_tail->next = t;
    else
        r->q_head = t;
    r->q_tail = t;
    pthread_mutex_unlock(&r->mu);
    uint64_t one = 1;
    ssize_t n = write(r->evfd, &one, sizeof one);
    (void)n;
    return 0;
}

static task *task_new(int kind, void *p)
{
    task *t = calloc(1, sizeof *t);
    if (t) {
        t->kind = kind;
        t->p = p;
    }
    return t;
}

/* ---- calls ----------------------------------------------------------------------------- */

/* Records the result; the sweep at the end of the loop iteration wakes the caller. */
static void call_finish(call *cl, int code, int grpc_status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void call_finish(call *cl, int code, int grpc_status, const char *fmt, ...)
{
    if (cl->finished)
        return;
    cl->finished = true;
    cl->waiting = false;
    cl->rc = -code;
    cl->err.code = code;
    cl->err.grpc_status = grpc_status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cl->err.msg, sizeof cl->err.msg, fmt, ap);
    va_end(ap);
}

static void call_finish_err(call *cl, const etcd_error *e)
{
    call_finish(cl, e->code, e->grpc_status, "%s", e->msg);
}

static void stream_free(struct rpc_stream *s);
static void stream_user_close(struct rpc_stream *s);

static void call_free(call *cl)
{
    pthread_cond_destroy(&cl->cv);
    free(cl->endpoint_url);
    free(cl);
}

static void calls_sweep(rpc *r)
{
    call **pp = &r->calls;
    while (*pp) {
        call *cl = *pp;
        if (!cl->finished) {
            pp = &cl->next;
            continue;
        }
        *pp = cl->next;
        if (cl->next)
            cl->next->prev = cl->prev;
        pthread_mutex_lock(&r->mu);
        bool abandoned = cl->abandoned;
        cl->done = true;
        if (!abandoned)
            pthread_cond_signal(&cl->cv);
        pthread_mutex_unlock(&r->mu);
        if (abandoned) {
            /* The caller gave up waiting: nobody will take the result. */
            if (cl->kind == CALL_STREAM && cl->rc == 0)
                stream_user_close(cl->s);
            else if (cl->s)
                stream_free(cl->s);
            call_free(cl);
        }
    }
}

/* ---- streams --------------------------------------------------------------------------- */

static struct rpc_stream *conn_find(conn *c, int32_t id)
{
    for (struct rpc_stream *s = c->streams; s; s = s->cnext)
        if (s->id == id)
            return s;
    return NULL;
}

static void stream_attach(struct rpc_stream *s, conn *c, int32_t id)
{
    s->c = c;
    s->id = id;
    s->cprev = NULL;
    s->cnext = c->streams;
    if (c->streams)
        c->streams->cprev = s;
    c->streams = s;
    c->nstreams++;
    c->nunary += s->unary;
}

static void stream_detach(struct rpc_stream *s)
{
    conn *c = s->c;
    if (!c)
        return;
    if (s->cprev)
        s->cprev->cnext = s->cnext;
    else
        c->streams = s->cnext;
    if (s->cnext)
        s->cnext->cprev = s->cprev;
    s->cnext = s->cprev = NULL;
    c->nstreams--;
    c->nunary -= s->unary;
    s->c = NULL;
    s->id = 0;
}

/* RST_STREAM(CANCEL) if attached, then forget the HTTP/2 stream. */
static void stream_cancel(struct rpc_stream *s)
{
    conn *c = s->c;
    if (!c)
        return;
    if (!c->dead && c->h2)
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    stream_detach(s);
}

static void stream_free(struct rpc_stream *s)
{
    if (!s)
        return;
    free(s->method);
    free(s->token);
    buf_free(&s->out);
    grpc_reader_reset(&s->rd);
    free(s->grpc_msg);
    free(s->resp);
    free(s);
}

static void stream_reset_attempt(struct rpc_stream *s)
{
    s->out.off = 0;
    s->deferred = false;
    s->data_sent = false;
    grpc_reader_reset(&s->rd);
    s->http_status = 0;
    s->grpc_status = -1;
    free(s->grpc_msg);
    s->grpc_msg = NULL;
    s->has_local = false;
    free(s->resp);
    s->resp = NULL;
    s->resp_len = 0;
    s->nresp = 0;
}

static void ustream_unlink(struct rpc_stream *s)
{
    rpc *r = s->r;
    if (!s->uprev && r->ustreams != s)
        return;
    if (s->uprev)
        s->uprev->unext = s->unext;
    else
        r->ustreams = s->unext;
    if (s->unext)
        s->unext->uprev = s->uprev;
    s->unext = s->uprev = NULL;
}

static void stream_set_ended(struct rpc_stream *s)
{
    pthread_mutex_lock(&s->r->mu);
    s->ended = true;
    pthread_mutex_unlock(&s->r->mu);
}

/* A user stream is over: on_close once, unless the owner closed it first. */
static void stream_finish(struct rpc_stream *s, const etcd_error *e)
{
    if (s->ended)
        return;
    stream_set_ended(s);
    if (s->user_closed || !s->cbs.on_close)
        return;
    s->cb_depth++;
    s->cbs.on_close(s->arg, e);
    s->cb_depth--;
    if (s->user_closed && s->cb_depth == 0)
        stream_free(s);
}

/* Loop thread: the owner let go of s. Safe inside s's own callback (freed when it returns). */
static void stream_user_close(struct rpc_stream *s)
{
    stream_cancel(s);
    s->user_closed = true;
    if (!s->ended)
        stream_set_ended(s);
    ustream_unlink(s);
    if (s->cb_depth == 0)
        stream_free(s);
}

static void target_rotate(target *t, const etcd_error *e);

/* Unary: the attempt ended. lost: transport failure; unsent: provably never processed. */
static void unary_attempt_done(struct rpc_stream *s, const etcd_error *e, bool lost, bool unsent,
                               target *t, conn *c)
{
    call *cl = s->call;
    bool idem = cl->flags & RPC_IDEMPOTENT;
    bool in_time = now_ms() < cl->deadline;
    if (e->code == 0) {
        t->fails = 0;
        t->backoff_ms = RPC_BACKOFF_MS;
        cl->finished = true;
        cl->rc = 0;
        cl->err.code = 0;
        cl->err.grpc_status = 0;
        cl->err.msg[0] = '\0';
        return;
    }
    if (lost) {
        if (in_time && (idem || unsent)) {
            stream_reset_attempt(s);
            cl->waiting = true;
            cl->retried = true;
            cl->retry_err = *e;
            return;
        }
        if (!unsent && !idem) {
            call_finish(cl, ETCD_E_UNKNOWN_OUTCOME, -1,
                        "connection lost after the request was sent, outcome unknown (%s)",
                        e->msg);
            return;
        }
        call_finish_err(cl, e);
        return;
    }
    if (e->grpc_status == 14 && idem && in_time) {
        /* "no leader", "not capable": this member cannot serve; another may. */
        if (c && t->conn == c)
            target_rotate(t, e);
        stream_reset_attempt(s);
        cl->waiting = true;
        cl->retried = true;
        cl->retry_err = *e;
        return;
    }
    if (e->grpc_status != 14) {
        t->fails = 0;
        t->backoff_ms = RPC_BACKOFF_MS;
    }
    call_finish_err(cl, e);
}

/* The HTTP/2 stream closed (nghttp2 callback, or connection loss when conn_lost). */
static void stream_h2_closed(struct rpc_stream *s, uint32_t h2err, const etcd_error *conn_err)
{
    conn *c = s->c;
    target *t = c ? c->t : NULL;
    bool unsent = !s->data_sent || h2err == NGHTTP2_REFUSED_STREAM ||
                  (c && s->id > c->goaway_last);
    bool lost = false;
    etcd_error e = {0};
    e.grpc_status = -1;
    stream_detach(s);
    if (s->has_local) {
        e = s->local;
    } else if (s->grpc_status >= 0) {
        e.grpc_status = s->grpc_status;
        if (s->grpc_status != 0) {
            const char *m = s->grpc_msg ? s->grpc_msg : "";
            e.code = etcd_err_from_grpc(s->grpc_status, m);
            if (e.code == 0)
                e.code = ETCD_E_INTERNAL;
            snprintf(e.msg, sizeof e.msg, "%s", *m ? m : "grpc error without message");
        }
    } else if (s->http_status && s->http_status != 200) {
        /* The gRPC spec's mapping for responses that are not gRPC. */
        int st = 2;
        switch (s->http_status) {
        case 400: st = 13; break;
        case 401: st = 16; break;
        case 403: st = 7; break;
        case 404: st = 12; break;
        case 429: case 502: case 503: case 504: st = 14; break;
        }
        e.grpc_status = st;
        e.code = etcd_err_from_grpc(st, "");
        if (e.code == 0)
            e.code = ETCD_E_INTERNAL;
        snprintf(e.msg, sizeof e.msg, "HTTP status %d from %s", s->http_status,
                 c ? c->ep->url : "server");
    } else if (conn_err) {
        lost = true;
        e = *conn_err;
    } else if (h2err == NGHTTP2_NO_ERROR) {
        e.code = ETCD_E_PROTOCOL;
        snprintf(e.msg, sizeof e.msg, "stream ended without grpc-status");
    } else {
        lost = true;
        e.code = ETCD_E_UNAVAILABLE;
        snprintf(e.msg, sizeof e.msg, "stream reset by %s: %s", c ? c->ep->url : "server",
                 nghttp2_http2_strerror(h2err));
    }
    if (s->unary) {
        unary_attempt_done(s, &e, lost, unsent, t, c);
    } else {
        if (lost && e.code != ETCD_E_CANCELLED)
            e.code = ETCD_E_UNAVAILABLE;
        stream_finish(s, &e);
    }
}

/* ---- nghttp2 callbacks (user_data is the conn) ----------------------------------------- */

static ssize_t h2_data_read(nghttp2_session *h2, int32_t id, uint8_t *dst, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct rpc_stream *s = conn_find(ud, id);
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t avail = s->out.len - s->out.off;
    if (avail == 0) {
        if (s->end_queued) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < len ? avail : len;
    memcpy(dst, s->out.p + s->out.off, n);
    s->out.off += n;
    if (s->out.off == s->out.len) {
        if (!s->unary)   /* unary keeps its request for a retry */
            s->out.off = s->out.len = 0;
        if (s->end_queued)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

static void conn_ready(conn *c);
static void conn_drain(conn *c, const char *why);

static int h2_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    conn *c = ud;
    switch (f->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && c->state == C_H2WAIT)
            conn_ready(c);
        break;
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_at = 0;
        break;
    case NGHTTP2_GOAWAY: {
        char why[160];
        size_t dl = f->goaway.opaque_data_len < 100 ? f->goaway.opaque_data_len : 100;
        snprintf(why, sizeof why, "GOAWAY %s%s%.*s", nghttp2_http2_strerror(f->goaway.error_code),
                 dl ? ": " : "", (int)dl, dl ? (const char *)f->goaway.opaque_data : "");
        c->goaway_last = f->goaway.last_stream_id;
        conn_drain(c, why);
        break;
    }
    }
    return 0;
}

static int h2_on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct rpc_stream *s = conn_find(ud, f->hd.stream_id);
    if (!s)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        s->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        s->grpc_status = atoi((const char *)value);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        free(s->grpc_msg);
        s->grpc_msg = strndup((const char *)value, valuelen);
        if (s->grpc_msg)
            grpc_message_decode(s->grpc_msg);
    }
    return 0;
}

static void stream_deliver(void *arg, const uint8_t *m, size_t len)
{
    struct rpc_stream *s = arg;
    if (s->unary) {
        if (s->nresp++ == 0 && len) {
            s->resp = malloc(len);
            if (s->resp) {
                memcpy(s->resp, m, len);
                s->resp_len = len;
            } else if (!s->has_local) {
                s->has_local = true;
                etcd_error_set(&s->local, ETCD_E_NOMEM, -1, "out of memory for a response");
            }
        }
        return;
    }
    /* The 5-byte prefix is ours to give back; the owner returns the message bytes. */
    if ((s->flags & RPC_STREAM_MANUAL_FLOW) && s->c)
        nghttp2_session_consume_stream(s->c->h2, s->id, 5);
    if (s->user_closed || s->ended || !s->cbs.on_msg)
        return;
    s->cbs.on_msg(s->arg, m, len);
}

static int h2_on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                            size_t len, void *ud)
{
    struct rpc_stream *s = conn_find(ud, id);
    if (s && (s->flags & RPC_STREAM_MANUAL_FLOW))
        nghttp2_session_consume_connection(h2, len);
    else
        nghttp2_session_consume(h2, id, len);
    if (!s || s->has_local)
        return 0;
    s->cb_depth++;
    int rc = grpc_reader_feed(&s->rd, data, len, stream_deliver, s);
    s->cb_depth--;
    if (s->user_closed) {
        if (s->cb_depth == 0)
            stream_free(s);
        return 0;
    }
    if (rc < 0 && !s->has_local) {
        s->has_local = true;
        if (rc == -ETCD_E_TOO_LARGE)
            etcd_error_set(&s->local, ETCD_E_TOO_LARGE, -1,
                           "response message larger than %u bytes", RPC_MAX_MSG);
        else if (rc == -ETCD_E_NOMEM)
            etcd_error_set(&s->local, ETCD_E_NOMEM, -1, "out of memory for a response");
        else
            etcd_error_set(&s->local, ETCD_E_PROTOCOL, -1,
                           "compressed or malformed gRPC message from server");
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    }
    return 0;
}

static int h2_on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *ud)
{
    struct rpc_stream *s = conn_find(ud, id);
    if (s)
        stream_h2_closed(s, error_code, NULL);
    return 0;
}

static int h2_on_frame_send(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type == NGHTTP2_DATA) {
        struct rpc_stream *s = conn_find(ud, f->hd.stream_id);
        if (s)
            s->data_sent = true;
    }
    return 0;
}

static int h2_on_frame_not_send(nghttp2_session *h2, const nghttp2_frame *f, int lib_err,
                                void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    conn *c = ud;
    struct rpc_stream *s = conn_find(c, f->hd.stream_id);
    if (!s)
        return 0;
    /* The request never left: same as a refused stream. */
    etcd_error e = {.code = ETCD_E_UNAVAILABLE, .grpc_status = -1};
    snprintf(e.msg, sizeof e.msg, "%s: request not sent: %s", c->ep->url,
             nghttp2_strerror(lib_err));
    s->data_sent = false;
    stream_h2_closed(s, NGHTTP2_REFUSED_STREAM, &e);
    return 0;
}

static int h2_callbacks_new(nghttp2_session_callbacks **out)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -ETCD_E_NOMEM;
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_header_callback(cb, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, h2_on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, h2_on_frame_not_send);
    *out = cb;
    return 0;
}

/* ---- connections ----------------------------------------------------------------------- */

static void conn_set_events(conn *c, bool want_out)
{
    uint32_t ev = EPOLLIN | (want_out ? EPOLLOUT : 0);
    if (c->fd < 0 || c->dead || ev == c->ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(c->r->epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->ev = ev;
}

/* Moves t past its current endpoint after a failure; backs off after a full round. */
static void target_advance(target *t, const etcd_error *e)
{
    t->last_err = *e;
    t->fails++;
    size_t next = (t->cur + 1) % t->n;
    __atomic_store_n(&t->cur, next, __ATOMIC_RELAXED);
    if (t->fails % t->n == 0) {
        t->retry_at = now_ms() + (uint64_t)t->backoff_ms;
        t->backoff_ms = t->backoff_ms * 2 > RPC_BACKOFF_MAX_MS ? RPC_BACKOFF_MAX_MS
                                                               : t->backoff_ms * 2;
    }
}

/* The current connection cannot serve new calls: keep it for its streams, pick the next. */
static void target_rotate(target *t, const etcd_error *e)
{
    conn *c = t->conn;
    if (c) {
        c->draining = true;
        t->conn = NULL;
    }
    target_advance(t, e);
}

static void conn_drain(conn *c, const char *why)
{
    if (c->draining)
        return;
    etcd_error e = {.code = ETCD_E_UNAVAILABLE, .grpc_status = -1};
    snprintf(e.msg, sizeof e.msg, "%s: %s", c->ep->url, why);
    if (c->r->debug)
        fprintf(stderr, "rpc: draining %s\n", e.msg);
    if (c->t->conn == c)
        target_rotate(c->t, &e);
    c->draining = true;
}

/* The connection is gone: settle its streams and the calls waiting for it. Frees later. */
static void conn_fail(conn *c, const etcd_error *why)
{
    if (c->dead)
        return;
    rpc *r = c->r;
    target *t = c->t;
    etcd_error e = *why;
    if (strncmp(e.msg, c->ep->url, strlen(c->ep->url)) != 0) {
        char tmp[sizeof e.msg + 400];
        snprintf(tmp, sizeof tmp, "%s: %s", c->ep->url, why->msg);
        snprintf(e.msg, sizeof e.msg, "%.*s", (int)sizeof e.msg - 1, tmp);
    }
    c->dead = true;
    if (r->debug)
        fprintf(stderr, "rpc: closing %s (%zu streams)\n", e.msg, c->nstreams);
    if (c->fd >= 0)
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (t->conn == c) {
        t->conn = NULL;
        target_advance(t, &e);
        /* Calls waiting for this target saw one more failure. */
        for (call *cl = r->calls; cl; cl = cl->next) {
            if (!cl->waiting || cl->t != t || cl->finished)
                continue;
            cl->fails++;
            if ((cl->kind == CALL_CONNECT || t->dedicated) && cl->fails >= t->n)
                call_finish(cl, e.code, -1, "%s", e.msg);
        }
    }
    while (c->streams) {
        struct rpc_stream *s = c->streams;
        stream_h2_closed(s, NGHTTP2_INTERNAL_ERROR, &e);   /* detaches s first */
    }
}

static void conn_failf(conn *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_failf(conn *c, int code, const char *fmt, ...)
{
    etcd_error e = {.code = code, .grpc_status = -1};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    conn_fail(c, &e);
}

static void conn_destroy(conn *c)
{
    if (c->h2)
        nghttp2_session_del(c->h2);
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    if (c->ai)
        freeaddrinfo(c->ai);
    buf_free(&c->out);
    free(c);
}

static void conn_ready(conn *c)
{
    if (c->r->debug)
        fprintf(stderr, "rpc: connected to %s\n", c->ep->url);
    c->state = C_READY;
    c->last_recv = now_ms();
}

/* Gathers nghttp2's output and writes it in large chunks until the socket would block. */
static void conn_flush(conn *c)
{
    if (c->dead || !c->h2)
        return;
    for (;;) {
        if (c->out.off == c->out.len) {
            c->out.off = c->out.len = 0;
            while (c->out.len < RPC_WBUF_FILL) {
                const uint8_t *d;
                ssize_t n = nghttp2_session_mem_send(c->h2, &d);
                if (n < 0) {
                    conn_failf(c, ETCD_E_PROTOCOL, "HTTP/2: %s", nghttp2_strerror((int)n));
                    return;
                }
                if (n == 0)
                    break;
                if (buf_append(&c->out, d, (size_t)n) < 0) {
                    conn_failf(c, ETCD_E_NOMEM, "out of memory");
                    return;
                }
            }
            if (c->out.len == 0)
                break;
        }
        const uint8_t *p = c->out.p + c->out.off;
        size_t len = c->out.len - c->out.off;
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            errno = 0;
            int rc = SSL_write(c->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
            if (rc <= 0) {
                int se = SSL_get_error(c->ssl, rc);
                if (se == SSL_ERROR_WANT_WRITE || se == SSL_ERROR_WANT_READ) {
                    conn_set_events(c, se == SSL_ERROR_WANT_WRITE);
                    return;
                }
                etcd_error e;
                tls_io_error(c->ssl, se, &e);
                conn_fail(c, &e);
                return;
            }
            n = rc;
        } else {
            n = send(c->fd, p, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    conn_set_events(c, true);
                    return;
                }
                conn_failf(c, ETCD_E_UNAVAILABLE, "write: %s", strerror(errno));
                return;
            }
        }
        c->out.off += (size_t)n;
    }
    conn_set_events(c, c->read_wants_write);
    if (c->draining && c->nstreams == 0 && c->state == C_READY)
        conn_failf(c, ETCD_E_UNAVAILABLE, "connection drained");
}

/* Bytes before the server's SETTINGS that reveal the wrong protocol on the other side. */
static bool conn_diagnose_first(conn *c, const uint8_t *d, size_t n)
{
    if (c->got_bytes || c->ssl)
        return false;
    c->got_bytes = true;
    if (n >= 1 && (d[0] == 0x15 || d[0] == 0x16)) {
        conn_failf(c, ETCD_E_PROTOCOL, "endpoint speaks TLS but plain HTTP/2 was used "
                   "(use https:// or give --cacert)");
        return true;
    }
    if (n >= 5 && memcmp(d, "HTTP/", 5) == 0) {
        conn_failf(c, ETCD_E_PROTOCOL, "endpoint answered HTTP/1.x, not HTTP/2 "
                   "(not an etcd client port?)");
        return true;
    }
    return false;
}

static void conn_eof(conn *c)
{
    if (c->state == C_H2WAIT && !c->ssl && !c->got_bytes)
        conn_failf(c, ETCD_E_PROTOCOL, "connection closed before HTTP/2 settings (endpoint "
                   "speaks TLS but plain HTTP/2 was used? use https://)");
    else if (c->state == C_H2WAIT)
        conn_failf(c, ETCD_E_PROTOCOL, "connection closed before HTTP/2 settings "
                   "(not a gRPC endpoint?)");
    else
        conn_failf(c, ETCD_E_UNAVAILABLE, "connection closed by server");
}

static void conn_read(conn *c)
{
    uint8_t b[65536];
    c->read_wants_write = false;
    while (!c->dead) {
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            errno = 0;
            int rc = SSL_read(c->ssl, b, sizeof b);
            if (rc <= 0) {
                int se = SSL_get_error(c->ssl, rc);
                if (se == SSL_ERROR_WANT_READ)
                    break;
                if (se == SSL_ERROR_WANT_WRITE) {
                    c->read_wants_write = true;
                    break;
                }
                if (se == SSL_ERROR_ZERO_RETURN) {
                    conn_eof(c);
                    return;
                }
                etcd_error e;
                tls_io_error(c->ssl, se, &e);
                conn_fail(c, &e);
                return;
            }
            n = rc;
        } else {
            n = read(c->fd, b, sizeof b);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                conn_failf(c, ETCD_E_UNAVAILABLE, "read: %s", strerror(errno));
                return;
            }
            if (n == 0) {
                conn_eof(c);
                return;
            }
        }
        c->last_recv = now_ms();
        if (c->state == C_H2WAIT && conn_diagnose_first(c, b, (size_t)n))
            return;
        ssize_t rv = nghttp2_session_mem_recv(c->h2, b, (size_t)n);
        if (rv < 0) {
            conn_failf(c, ETCD_E_PROTOCOL, "HTTP/2 protocol error: %s", nghttp2_strerror((int)rv));
            return;
        }
    }
    conn_flush(c);
}

static void conn_h2_start(conn *c)
{
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        conn_failf(c, ETCD_E_NOMEM, "out of memory");
        return;
    }
    /* Window updates are ours: consumed as delivered, or as the owner reads (manual flow). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rv = nghttp2_session_client_new2(&c->h2, c->r->h2cbs, c, opt);
    nghttp2_option_del(opt);
    if (rv != 0) {
        conn_failf(c, ETCD_E_NOMEM, "nghttp2 session: %s", nghttp2_strerror(rv));
        return;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RPC_STREAM_WINDOW},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, RPC_CONN_WINDOW);
    c->state = C_H2WAIT;
    conn_flush(c);
}

static void conn_tls_step(conn *c)
{
    bool ww = false;
    etcd_error e;
    int rc = tls_handshake(c->ssl, c->ep->host, &ww, &e);
    if (rc < 0)
        conn_fail(c, &e);
    else if (rc == 0)
        conn_set_events(c, ww);
    else
        conn_h2_start(c);
}

static void conn_try_addr(conn *c);

static void conn_tcp_done(conn *c)
{
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr) {
        c->sys_errno = soerr;
        epoll_ctl(c->r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->ai_cur = c->ai_cur->ai_next;
        conn_try_addr(c);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!c->ep->tls) {
        conn_h2_start(c);
        return;
    }
    rpc *r = c->r;
    etcd_error e;
    if (!r->ssl_ctx &&
        tls_ctx_new(r->cacert, r->cert, r->key, r->insecure, &r->ssl_ctx, &e) < 0) {
        conn_fail(c, &e);
        return;
    }
    if (tls_conn_new(r->ssl_ctx, c->fd, c->ep->host, &c->ssl, &e) < 0) {
        conn_fail(c, &e);
        return;
    }
    c->state = C_TLS;
    conn_tls_step(c);
}

static void conn_try_addr(conn *c)
{
    for (; c->ai_cur; c->ai_cur = c->ai_cur->ai_next) {
        struct addrinfo *a = c->ai_cur;
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            c->sys_errno = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            c->sys_errno = errno;
            close(fd);
            continue;
        }
        c->fd = fd;
        c->ev = EPOLLIN | EPOLLOUT;
        struct epoll_event ev = {.events = c->ev, .data.ptr = c};
        if (epoll_ctl(c->r->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            c->sys_errno = errno;
            close(fd);
            c->fd = -1;
            continue;
        }
        return;
    }
    if (c->sys_errno == ECONNREFUSED)
        conn_failf(c, ETCD_E_UNAVAILABLE, "connection refused");
    else
        conn_failf(c, ETCD_E_UNAVAILABLE, "connect: %s", strerror(c->sys_errno));
}

static void conn_start(target *t)
{
    rpc *r = t->r;
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->r = r;
    c->t = t;
    c->ep = &t->eps[t->cur];
    c->fd = -1;
    c->goaway_last = INT32_MAX;
    c->state = C_TCP;
    c->dial_deadline = now_ms() + (uint64_t)r->dial_timeout_ms;
    c->next = r->conns;
    r->conns = c;
    t->conn = c;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    /* Blocking resolution on the loop: endpoints are usually IP literals or /etc/hosts names. */
    int rc = getaddrinfo(c->ep->host, c->ep->port, &hints, &c->ai);
    if (rc != 0) {
        c->ai = NULL;
        conn_failf(c, ETCD_E_UNAVAILABLE, "cannot resolve %s: %s", c->ep->host, gai_strerror(rc));
        return;
    }
    c->ai_cur = c->ai;
    c->sys_errno = EHOSTUNREACH;
    conn_try_addr(c);
}

static void conn_on_event(conn *c, uint32_t ev)
{
    if (c->dead)
        return;
    switch (c->state) {
    case C_TCP:
        conn_tcp_done(c);
        break;
    case C_TLS:
        conn_tls_step(c);
        break;
    default:
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR) || c->read_wants_write)
            conn_read(c);
        if (!c->dead && (ev & EPOLLOUT))
            conn_flush(c);
        break;
    }
}

/* ---- submitting calls ------------------------------------------------------------------ */

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

static int conn_submit(conn *c, struct rpc_stream *s, int timeout_ms)
{
    char tmo[16];
    nghttp2_nv nv[9] = {
        NV(":method", "POST"),
        NV(":scheme", c->ep->tls ? "https" : "http"),
        NV(":path", s->method),
        NV(":authority", c->ep->authority),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "etcdfs-grpc/" "1"),
    };
    size_t n = 7;
    if (timeout_ms > 0) {
        grpc_timeout_format(tmo, timeout_ms);
        nv[n++] = (nghttp2_nv)NV("grpc-timeout", tmo);
    }
    if (s->token)
        nv[n++] = (nghttp2_nv)NV("token", s->token);
    nghttp2_data_provider dp = {.source.ptr = NULL, .read_callback = h2_data_read};
    int32_t id = nghttp2_submit_request(c->h2, NULL, nv, n, &dp, NULL);
    if (id < 0)
        return id;
    s->deferred = false;
    stream_attach(s, c, id);
    return 0;
}

/* A waiting call meets a ready connection. */
static void call_start(rpc *r, call *cl, conn *c)
{
    if (cl->kind == CALL_CONNECT) {
        call_finish(cl, 0, -1, "%s", "");
        return;
    }
    struct rpc_stream *s = cl->s;
    int remaining = 0;
    if (cl->kind == CALL_UNARY) {
        uint64_t t0 = now_ms();
        remaining = cl->deadline > t0 ? (int)(cl->deadline - t0) : 1;
    }
    int rv = conn_submit(c, s, remaining);
    if (rv == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
        conn_drain(c, "stream ids exhausted");
        return;   /* stays waiting: goes out on the next connection */
    }
    if (rv < 0) {
        call_finish(cl, ETCD_E_INTERNAL, -1, "cannot submit request: %s", nghttp2_strerror(rv));
        return;
    }
    cl->waiting = false;
    /* A PING along with the call (at most one per RPC_MIN_PING_MS) finds a dead or paused
     * peer within the keepalive timeout, early enough to fail over within the deadline. */
    uint64_t now = now_ms();
    if (!c->ping_at && now >= c->last_ping + RPC_MIN_PING_MS) {
        nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
        c->ping_at = c->last_ping = now;
    }
    if (cl->kind == CALL_STREAM) {
        s->unext = r->ustreams;
        s->uprev = NULL;
        if (r->ustreams)
            r->ustreams->uprev = s;
        r->ustreams = s;
        call_finish(cl, 0, -1, "%s", "");
    }
}

static target *target_for_url(rpc *r, const char *url, etcd_error *err)
{
    endpoint ep;
    if (endpoint_parse(url, r->default_tls, &ep, err) < 0)
        return NULL;
    for (target *t = r->dedicated; t; t = t->next) {
        if (strcmp(t->eps[0].url, ep.url) == 0) {
            endpoint_free(&ep);
            return t;
        }
    }
    target *t = calloc(1, sizeof *t);
    if (t)
        t->eps = malloc(sizeof *t->eps);
    if (!t || !t->eps) {
        free(t);
        endpoint_free(&ep);
        etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
        return NULL;
    }
    t->eps[0] = ep;
    t->n = 1;
    t->r = r;
    t->dedicated = true;
    t->backoff_ms = RPC_BACKOFF_MS;
    t->next = r->dedicated;
    r->dedicated = t;
    return t;
}

static void call_accept(rpc *r, call *cl)
{
    cl->prev = NULL;
    cl->next = r->calls;
    if (r->calls)
        r->calls->prev = cl;
    r->calls = cl;
    if (cl->endpoint_url) {
        etcd_error e;
        cl->t = target_for_url(r, cl->endpoint_url, &e);
        if (!cl->t) {
            call_finish_err(cl, &e);
            return;
        }
    } else {
        cl->t = &r->pool;
    }
    cl->waiting = true;
}

/* Waiting calls go out on ready connections; targets without one start connecting. */
static void targets_service(rpc *r)
{
    uint64_t now = now_ms();
    for (call *cl = r->calls; cl; cl = cl->next) {
        if (!cl->waiting || cl->finished)
            continue;
        target *t = cl->t;
        if (t->conn && t->conn->state == C_READY && !t->conn->draining)
            call_start(r, cl, t->conn);
        else if (!t->conn && now >= t->retry_at)
            conn_start(t);
    }
}

/* ---- timers ---------------------------------------------------------------------------- */

/* Silence after which a PING goes out: keepalive_time, but no more than RPC_MIN_PING_MS while
 * unary calls wait for answers, so a paused peer is found within their deadlines. */
static uint64_t ping_idle_ms(const rpc *r, const conn *c)
{
    if (c->nunary > 0 && r->ka_time_ms > RPC_MIN_PING_MS)
        return RPC_MIN_PING_MS;
    return (uint64_t)r->ka_time_ms;
}

static void conn_timers(rpc *r, uint64_t now)
{
    for (conn *c = r->conns; c; c = c->next) {
        if (c->dead)
            continue;
        if (c->state != C_READY) {
            if (now >= c->dial_deadline) {
                static const char *const stage[] = {"TCP connect", "TLS handshake",
                                                    "HTTP/2 settings from the server"};
                conn_failf(c, ETCD_E_UNAVAILABLE, "timed out after %d ms waiting for %s%s",
                           r->dial_timeout_ms, stage[c->state],
                           c->state == C_H2WAIT && !c->ssl
                               ? " (endpoint speaks TLS but plain HTTP/2 was used?)" : "");
            }
            continue;
        }
        if (c->ping_at && now >= c->ping_at + (uint64_t)r->ka_timeout_ms) {
            conn_failf(c, ETCD_E_UNAVAILABLE, "keepalive: no PING ACK within %d ms",
                       r->ka_timeout_ms);
            continue;
        }
        /* Ping only while streams are open: etcd (grpc-go) counts pings on an idle
         * connection as abuse and answers GOAWAY "too_many_pings". */
        if (!c->ping_at && c->nstreams > 0 && now >= c->last_recv + ping_idle_ms(r, c) &&
            now >= c->last_ping + RPC_MIN_PING_MS) {
            nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
            c->ping_at = c->last_ping = now;
            conn_flush(c);
        }
        if (c->draining && c->nstreams == 0)
            conn_failf(c, ETCD_E_UNAVAILABLE, "connection drained");
    }
}

static void call_timers(rpc *r, uint64_t now)
{
    for (call *cl = r->calls; cl; cl = cl->next) {
        if (cl->finished || now < cl->deadline)
            continue;
        if (cl->s && cl->s->c)
            stream_cancel(cl->s);
        if (cl->waiting && cl->retried)
            call_finish(cl, cl->retry_err.code, cl->retry_err.grpc_status,
                        "%s (retried until the deadline)", cl->retry_err.msg);
        else if (cl->waiting && cl->fails > 0)
            call_finish(cl, cl->t->last_err.code ? cl->t->last_err.code : ETCD_E_UNAVAILABLE,
                        -1, "%s", cl->t->last_err.msg);
        else if (cl->kind == CALL_CONNECT)
            call_finish(cl, ETCD_E_UNAVAILABLE, -1, "no endpoint answered within %d ms",
                        cl->timeout_ms);
        else
            call_finish(cl, ETCD_E_DEADLINE, -1, "deadline exceeded after %d ms%s%s",
                        cl->timeout_ms, cl->t ? " on " : "",
                        cl->t ? cl->t->eps[cl->t->cur].url : "");
    }
}

static int loop_timeout(rpc *r)
{
    uint64_t now = now_ms();
    uint64_t next = now + 10000;
#define AT(x) do { uint64_t x_ = (x); if (x_ < next) next = x_; } while (0)
    for (conn *c = r->conns; c; c = c->next) {
        if (c->dead)
            continue;
        if (c->state != C_READY) {
            AT(c->dial_deadline);
        } else if (c->ping_at) {
            AT(c->ping_at + (uint64_t)r->ka_timeout_ms);
        } else if (c->nstreams > 0) {
            uint64_t a = c->last_recv + ping_idle_ms(r, c);
            uint64_t b = c->last_ping + RPC_MIN_PING_MS;
            AT(a > b ? a : b);
        }
    }
    for (call *cl = r->calls; cl; cl = cl->next) {
        if (cl->finished)
            return 0;
        AT(cl->deadline);
        if (cl->waiting && !cl->t->conn)
            AT(cl->t->retry_at);
    }
#undef AT
    return next <= now ? 0 : (int)(next - now);
}

/* ---- the loop -------------------------------------------------------------------------- */

static void stream_queue_data(struct rpc_stream *s)
{
    if (s->c && s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->c->h2, s->id);
    }
}

static void run_task(rpc *r, task *t)
{
    struct rpc_stream *s = t->p;
    switch (t->kind) {
    case T_CALL:
        call_accept(r, t->p);
        break;
    case T_SEND:
        if (!s->ended && s->c && buf_append(&s->out, t->data, t->len) == 0)
            stream_queue_data(s);
        break;
    case T_END:
        if (!s->ended && s->c) {
            s->end_queued = true;
            stream_queue_data(s);
        }
        break;
    case T_CONSUME:
        if (s->c)
            nghttp2_session_consume_stream(s->c->h2, s->id, t->len);
        break;
    case T_CLOSE:
        stream_user_close(s);
        pthread_mutex_lock(&r->mu);
        *t->done = true;
        pthread_cond_broadcast(&r->close_cv);
        pthread_mutex_unlock(&r->mu);
        break;
    case T_DEFER:
        t->fn(t->p);
        break;
    case T_STOP:
        r->stop = true;
        break;
    }
}

static void run_tasks(rpc *r)
{
    pthread_mutex_lock(&r->mu);
    task *t = r->q_head;
    r->q_head = r->q_tail = NULL;
    pthread_mutex_unlock(&r->mu);
    while (t) {
        task *next = t->next;
        run_task(r, t);
        free(t->data);
        free(t);
        t = next;
    }
}

static void conns_reap(rpc *r)
{
    conn **pp = &r->conns;
    while (*pp) {
        conn *c = *pp;
        if (c->dead) {
            *pp = c->next;
            conn_destroy(c);
        } else {
            pp = &c->next;
        }
    }
}

static void loop_shutdown(rpc *r)
{
    etcd_error e = {.code = ETCD_E_CANCELLED, .grpc_status = -1};
    snprintf(e.msg, sizeof e.msg, "client closed");
    for (call *cl = r->calls; cl; cl = cl->next) {
        if (cl->s && cl->s->c)
            stream_cancel(cl->s);
        call_finish_err(cl, &e);
    }
    for (conn *c = r->conns; c; c = c->next)
        conn_fail(c, &e);
    calls_sweep(r);
    conns_reap(r);
}

static void *loop_main(void *arg)
{
    rpc *r = arg;
    loop_owner = r;
    struct epoll_event evs[64];
    while (!r->stop) {
        int n = epoll_wait(r->epfd, evs, 64, loop_timeout(r));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t v;
                ssize_t rn = read(r->evfd, &v, sizeof v);
                (void)rn;
            } else {
                conn_on_event(evs[i].data.ptr, evs[i].events);
            }
        }
        run_tasks(r);
        uint64_t now = now_ms();
        conn_timers(r, now);
        call_timers(r, now);
        targets_service(r);
        for (conn *c = r->conns; c; c = c->next)
            if (!c->dead && c->h2)
                conn_flush(c);
        calls_sweep(r);
        conns_reap(r);
    }
    loop_shutdown(r);
    return NULL;
}

/* ---- public API ------------------------------------------------------------------------ */

void rpc_free(rpc *r)
{
    if (!r)
        return;
    if (r->thread_started) {
        task *t = task_new(T_STOP, NULL);
        pthread_mutex_lock(&r->mu);
        r->stopping = true;
        pthread_mutex_unlock(&r->mu);
        if (t)
            task_push(r, t);
        else
            __atomic_store_n(&r->stop, true, __ATOMIC_RELAXED);
        pthread_join(r->thread, NULL);
    }
    /* Tasks that raced with the stop. */
    for (task *t = r->q_head, *next; t; t = next) {
        next = t->next;
        if (t->kind == T_CLOSE)
            *t->done = true;
        free(t->data);
        free(t);
    }
    while (r->ustreams) {
        struct rpc_stream *s = r->ustreams;
        ustream_unlink(s);
        stream_free(s);
    }
    for (target *t = r->dedicated, *next; t; t = next) {
        next = t->next;
        endpoint_free(&t->eps[0]);
        free(t->eps);
        free(t);
    }
    for (size_t i = 0; i < r->pool.n; i++)
        endpoint_free(&r->pool.eps[i]);
    free(r->pool.eps);
    if (r->ssl_ctx)
        SSL_CTX_free(r->ssl_ctx);
    if (r->h2cbs)
        nghttp2_session_callbacks_del(r->h2cbs);
    if (r->epfd >= 0)
        close(r->epfd);
    if (r->evfd >= 0)
        close(r->evfd);
    pthread_cond_destroy(&r->close_cv);
    pthread_mutex_destroy(&r->mu);
    free(r->cacert);
    free(r->cert);
    free(r->key);
    free(r);
}

static char *dup_opt(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

int rpc_new(const rpc_config *cfg, rpc **out, etcd_error *err)
{
    *out = NULL;
    if (!cfg || cfg->n_endpoints == 0)
        return etcd_error_set(err, ETCD_E_INVALID_ARG, -1, "no endpoints given");
    rpc *r = calloc(1, sizeof *r);
    if (!r)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    r->epfd = r->evfd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->close_cv, &ca);
    pthread_condattr_destroy(&ca);
    r->cacert = dup_opt(cfg->cacert);
    r->cert = dup_opt(cfg->cert);
    r->key = dup_opt(cfg->key);
    r->insecure = cfg->insecure_skip_verify;
    r->debug = getenv("ETCDFS_RPC_DEBUG") != NULL;
    r->default_tls = r->cacert || r->cert || r->key;
    r->dial_timeout_ms = cfg->dial_timeout_ms > 0 ? cfg->dial_timeout_ms : 5000;
    r->ka_time_ms = cfg->keepalive_time_ms > 0 ? cfg->keepalive_time_ms : 10000;
    r->ka_timeout_ms = cfg->keepalive_timeout_ms > 0 ? cfg->keepalive_timeout_ms : 5000;
    r->pool.r = r;
    r->pool.backoff_ms = RPC_BACKOFF_MS;
    int rc = 0;
    r->pool.eps = calloc(cfg->n_endpoints, sizeof *r->pool.eps);
    if (!r->pool.eps)
        rc = etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    bool any_tls = false;
    for (size_t i = 0; rc == 0 && i < cfg->n_endpoints; i++) {
        rc = endpoint_parse(cfg->endpoints[i], r->default_tls, &r->pool.eps[i], err);
        if (rc == 0) {
            r->pool.n++;
            any_tls |= r->pool.eps[i].tls;
        }
    }
    if (rc == 0 && (any_tls || r->default_tls))
        rc = tls_ctx_new(r->cacert, r->cert, r->key, r->insecure, &r->ssl_ctx, err);
    if (rc == 0 && h2_callbacks_new(&r->h2cbs) < 0)
        rc = etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    if (rc == 0) {
        r->epfd = epoll_create1(EPOLL_CLOEXEC);
        r->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (r->epfd < 0 || r->evfd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->evfd, &ev) < 0)
            rc = etcd_error_set(err, ETCD_E_INTERNAL, -1, "epoll/eventfd: %s", strerror(errno));
    }
    if (rc == 0) {
        /* The loop takes no signals: SIGPIPE from SSL writes must not kill the process, and
         * the application's handlers run on its own threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int e = pthread_create(&r->thread, NULL, loop_main, r);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e != 0)
            rc = etcd_error_set(err, ETCD_E_INTERNAL, -1, "pthread_create: %s", strerror(e));
        else
            r->thread_started = true;
    }
    if (rc < 0) {
        rpc_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

const char *rpc_endpoint(rpc *r)
{
    return r->pool.eps[__atomic_load_n(&r->pool.cur, __ATOMIC_RELAXED)].url;
}

static call *call_new(int kind, const rpc_call_opts *o, int timeout_ms)
{
    call *cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cl->cv, &ca);
    pthread_condattr_destroy(&ca);
    cl->kind = kind;
    cl->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
    cl->deadline = now_ms() + (uint64_t)cl->timeout_ms;
    if (o) {
        cl->flags = o->flags;
        if (o->endpoint && *o->endpoint && !(cl->endpoint_url = strdup(o->endpoint))) {
            call_free(cl);
            return NULL;
        }
    }
    return cl;
}

/* Hands cl to the loop and waits for its completion. Returns 0 or -code (err filled). On
 * success the caller owns cl; on a give-up (loop wedged) the loop frees it later. */
static int call_run(rpc *r, call *cl, etcd_error *err, bool *abandoned)
{
    *abandoned = false;
    if (loop_owner == r)
        return etcd_error_set(err, ETCD_E_INTERNAL, -1, "blocking rpc call on the loop thread");
    task *t = task_new(T_CALL, cl);
    if (!t)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    if (task_push(r, t) < 0) {
        free(t);
        return etcd_error_set(err, ETCD_E_CANCELLED, -1, "client closed");
    }
    uint64_t until = cl->deadline + RPC_WAIT_GRACE_MS;
    struct timespec ts = {.tv_sec = (time_t)(until / 1000), .tv_nsec = (long)(until % 1000) * 1000000};
    pthread_mutex_lock(&r->mu);
    while (!cl->done) {
        if (pthread_cond_timedwait(&cl->cv, &r->mu, &ts) == ETIMEDOUT && !cl->done) {
            cl->abandoned = true;
            pthread_mutex_unlock(&r->mu);
            *abandoned = true;
            return etcd_error_set(err, ETCD_E_DEADLINE, -1,
                                  "deadline exceeded (transport did not answer)");
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (cl->rc < 0) {
        err_copy(err, &cl->err);
        return cl->rc;
    }
    return 0;
}

int rpc_connect(rpc *r, etcd_error *err)
{
    int tmo = r->dial_timeout_ms * (int)r->pool.n + 1000;
    call *cl = call_new(CALL_CONNECT, NULL, tmo);
    if (!cl)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    bool abandoned;
    int rc = call_run(r, cl, err, &abandoned);
    if (!abandoned)
        call_free(cl);
    if (rc == 0)
        err_ok(err);
    return rc;
}

static struct rpc_stream *stream_new(rpc *r, const rpc_call_opts *o, bool unary)
{
    struct rpc_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->r = r;
    s->unary = unary;
    s->flags = o->flags;
    s->grpc_status = -1;
    s->rd.max_len = RPC_MAX_MSG;
    s->method = strdup(o->method);
    if (o->token && *o->token)
        s->token = strdup(o->token);
    if (!s->method || (o->token && *o->token && !s->token)) {
        stream_free(s);
        return NULL;
    }
    return s;
}

int rpc_unary(rpc *r, const rpc_call_opts *o, const uint8_t *req, size_t req_len, uint8_t **resp,
              size_t *resp_len, etcd_error *err)
{
    *resp = NULL;
    *resp_len = 0;
    if (!o || !o->method)
        return etcd_error_set(err, ETCD_E_INVALID_ARG, -1, "no method");
    struct rpc_stream *s = stream_new(r, o, true);
    call *cl = call_new(CALL_UNARY, o, o->timeout_ms);
    if (!s || !cl || buf_append_msg(&s->out, req, req_len) < 0) {
        stream_free(s);
        if (cl)
            call_free(cl);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    s->end_queued = true;
    s->call = cl;
    cl->s = s;
    bool abandoned;
    int rc = call_run(r, cl, err, &abandoned);
    if (abandoned)
        return rc;
    if (rc == 0) {
        *resp = s->resp;
        *resp_len = s->resp_len;
        s->resp = NULL;
        if (err) {
            err->code = 0;
            err->grpc_status = 0;
            err->msg[0] = '\0';
        }
    }
    stream_free(s);
    call_free(cl);
    return rc;
}

int rpc_stream_open(rpc *r, const rpc_call_opts *o, const rpc_stream_cbs *cbs, void *arg,
                    const uint8_t *first, size_t first_len, rpc_stream **out, etcd_error *err)
{
    *out = NULL;
    if (!o || !o->method || !cbs)
        return etcd_error_set(err, ETCD_E_INVALID_ARG, -1, "no method or callbacks");
    struct rpc_stream *s = stream_new(r, o, false);
    call *cl = call_new(CALL_STREAM, o, o->timeout_ms);
    if (!s || !cl || (first && buf_append_msg(&s->out, first, first_len) < 0)) {
        stream_free(s);
        if (cl)
            call_free(cl);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    s->cbs = *cbs;
    s->arg = arg;
    cl->s = s;
    bool abandoned;
    int rc = call_run(r, cl, err, &abandoned);
    if (abandoned)
        return rc;
    call_free(cl);
    if (rc < 0) {
        stream_free(s);
        return rc;
    }
    err_ok(err);
    *out = s;
    return 0;
}

/* Loop thread: act now. Others: queue unless the stream already ended. */
static int stream_task(struct rpc_stream *s, int kind, uint8_t *data, size_t len)
{
    rpc *r = s->r;
    if (loop_owner == r) {
        task t = {.kind = kind, .p = s, .data = data, .len = len};
        if ((kind == T_SEND || kind == T_END) && s->ended) {
            free(data);
            return -ETCD_E_CANCELLED;
        }
        run_task(r, &t);
        free(data);
        return 0;
    }
    task *t = task_new(kind, s);
    if (!t) {
        free(data);
        return -ETCD_E_NOMEM;
    }
    t->data = data;
    t->len = len;
    pthread_mutex_lock(&r->mu);
    bool ended = s->ended;
    pthread_mutex_unlock(&r->mu);
    if ((ended && kind != T_CONSUME) || task_push(r, t) < 0) {
        free(data);
        free(t);
        return -ETCD_E_CANCELLED;
    }
    return 0;
}

int rpc_stream_send(rpc_stream *s, const uint8_t *msg, size_t len)
{
    if (len > UINT32_MAX)
        return -ETCD_E_TOO_LARGE;
    uint8_t *d = malloc(len + 5);
    if (!d)
        return -ETCD_E_NOMEM;
    grpc_frame_header(d, (uint32_t)len);
    if (len)
        memcpy(d + 5, msg, len);
    return stream_task(s, T_SEND, d, len + 5);
}

int rpc_stream_end(rpc_stream *s)
{
    return stream_task(s, T_END, NULL, 0);
}

void rpc_stream_consume(rpc_stream *s, size_t n)
{
    if (n)
        stream_task(s, T_CONSUME, NULL, n);
}

void rpc_stream_close(rpc_stream *s)
{
    if (!s)
        return;
    rpc *r = s->r;
    if (loop_owner == r) {
        stream_user_close(s);
        return;
    }
    bool done = false;
    task *t = task_new(T_CLOSE, s);
    if (!t) {
        /* Cannot queue: the loop still owns s, so leak it rather than race. */
        return;
    }
    t->done = &done;
    if (task_push(r, t) < 0) {
        free(t);
        return;
    }
    pthread_mutex_lock(&r->mu);
    while (!done)
        pthread_cond_wait(&r->close_cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

int rpc_defer(rpc *r, void (*fn)(void *arg), void *arg)
{
    task *t = task_new(T_DEFER, arg);
    if (!t)
        return -ETCD_E_NOMEM;
    t->fn = fn;
    if (task_push(r, t) < 0) {
        free(t);
        return -ETCD_E_CANCELLED;
    }
    return 0;
}

/* ---- test-only: HTTP/2 fuzzing entry point (tests/fuzz/h2_fuzz.c) ------------------------
 * Compiled only with -DETCDFS_FUZZ_HOOKS (tests/fuzz/run.sh); owned by the security work.
 * Feeds `data` as server bytes, `chunk` bytes at a time, into one client session carrying a
 * unary call and two user streams (one with manual flow control), through the real nghttp2
 * callbacks above; our own output is discarded. Everything is torn down before returning. */
#ifdef ETCDFS_FUZZ_HOOKS
int rpc_fuzz_h2(const uint8_t *data, size_t len, size_t chunk,
                void (*on_msg)(void *arg, const uint8_t *msg, size_t len));

static void fuzz_on_close(void *arg, const etcd_error *e)
{
    (void)arg;
    (void)e;
}

int rpc_fuzz_h2(const uint8_t *data, size_t len, size_t chunk,
                void (*on_msg)(void *arg, const uint8_t *msg, size_t len))
{
    rpc *r = calloc(1, sizeof *r);
    conn *c = calloc(1, sizeof *c);
    endpoint ep = {.url = "http://fuzz:2379", .host = "fuzz", .authority = "fuzz:2379",
                   .port = "2379"};
    nghttp2_option *opt = NULL;
    if (!r || !c || h2_callbacks_new(&r->h2cbs) < 0 || nghttp2_option_new(&opt) != 0)
        abort();
    r->epfd = r->evfd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->close_cv, NULL);
    r->pool = (target){.r = r, .eps = &ep, .n = 1, .backoff_ms = RPC_BACKOFF_MS, .conn = c};
    *c = (conn){.r = r, .t = &r->pool, .ep = &ep, .fd = -1, .state = C_H2WAIT};
    r->conns = c;
    loop_owner = r;
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (nghttp2_session_client_new2(&c->h2, r->h2cbs, c, opt) != 0)
        abort();
    nghttp2_option_del(opt);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RPC_STREAM_WINDOW}};
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, RPC_CONN_WINDOW);

    rpc_call_opts o = {.method = "/etcdserverpb.KV/Range", .token = "tok", .flags = RPC_IDEMPOTENT};
    rpc_stream_cbs cbs = {.on_msg = on_msg, .on_close = fuzz_on_close};
    call *cl = call_new(CALL_UNARY, &o, 10000);
    struct rpc_stream *s[3] = {stream_new(r, &o, true), stream_new(r, &o, false),
                               stream_new(r, &o, false)};
    if (!cl || !s[0] || !s[1] || !s[2] || buf_append_msg(&s[0]->out, (const uint8_t *)"x", 1))
        abort();
    s[0]->end_queued = true;
    s[0]->call = cl;
    cl->s = s[0];
    cl->t = &r->pool;
    s[2]->flags |= RPC_STREAM_MANUAL_FLOW;
    for (int i = 0; i < 3; i++) {
        if (i) {
            s[i]->cbs = cbs;
            s[i]->arg = s[i];
            s[i]->unext = r->ustreams;
            if (r->ustreams)
                r->ustreams->uprev = s[i];
            r->ustreams = s[i];
        }
        if (conn_submit(c, s[i], i ? 0 : 10000) < 0)
            abort();
    }
    for (size_t off = 0; !c->dead;) {
        const uint8_t *d;
        ssize_t n;
        while (!c->dead && (n = nghttp2_session_mem_send(c->h2, &d)) != 0)
            if (n < 0)
                conn_failf(c, ETCD_E_PROTOCOL, "HTTP/2: %s", nghttp2_strerror((int)n));
        if (off >= len || c->dead)
            break;
        size_t k = chunk && chunk < len - off ? chunk : len - off;
        ssize_t rv = nghttp2_session_mem_recv(c->h2, data + off, k);
        if (rv < 0)
            conn_failf(c, ETCD_E_PROTOCOL, "HTTP/2 protocol error: %s", nghttp2_strerror((int)rv));
        off += k;
    }
    int rc = cl->finished ? cl->rc : 1;
    etcd_error e = {.code = ETCD_E_CANCELLED, .grpc_status = -1};
    conn_fail(c, &e);
    while (r->ustreams) {
        struct rpc_stream *u = r->ustreams;
        stream_user_close(u);   /* unlinks and frees */
    }
    stream_free(s[0]);
    call_free(cl);
    conn_destroy(c);
    loop_owner = NULL;
    nghttp2_session_callbacks_del(r->h2cbs);
    pthread_cond_destroy(&r->close_cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return rc;
}
#endif

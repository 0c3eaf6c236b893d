/* maint.c — Cluster and Maintenance calls: MemberList, Status, Alarm, Defragment, MoveLeader
 * (sent to the leader found through Status), and the pulled snapshot stream, whose chunks are
 * returned to HTTP/2 flow control only as the reader consumes them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAINT_METHOD(name) "/etcdserverpb.Maintenance/" name
#define DEFRAG_MIN_TIMEOUT_MS 60000   /* defragmenting a big db takes a while */

static char *xstrdup(const char *s, bool *oom)
{
    char *d = strdup(s ? s : "");
    if (!d)
        *oom = true;
    return d;
}

static char **strv_dup(char **v, size_t n, bool *oom)
{
    if (n == 0)
        return NULL;
    char **d = calloc(n, sizeof(*d));
    if (!d) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = xstrdup(v[i], oom);
    return d;
}

int etcd_member_list(etcd_client *c, struct etcd_member_list *out, etcd_error *err)
{
    memset(out, 0, sizeof(*out));
    Etcdserverpb__MemberListRequest r = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, "/etcdserverpb.Cluster/MemberList", &r.base,
                         &etcdserverpb__member_list_response__descriptor, &m, 0, RPC_IDEMPOTENT,
                         NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__MemberListResponse *l = (Etcdserverpb__MemberListResponse *)m;
    bool oom = false;
    client_header(&out->header, l->header);
    if (l->n_members) {
        out->members = calloc(l->n_members, sizeof(*out->members));
        if (!out->members)
            oom = true;
        else
            out->n_members = l->n_members;
    }
    for (size_t i = 0; i < out->n_members; i++) {
        const Etcdserverpb__Member *src = l->members[i];
        etcd_member *d = &out->members[i];
        d->id = src->id;
        d->name = xstrdup(src->name, &oom);
        d->peer_urls = strv_dup(src->peerurls, src->n_peerurls, &oom);
        d->n_peer_urls = d->peer_urls ? src->n_peerurls : 0;
        d->client_urls = strv_dup(src->clienturls, src->n_clienturls, &oom);
        d->n_client_urls = d->client_urls ? src->n_clienturls : 0;
        d->is_learner = src->islearner;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (oom) {
        etcd_member_list_free(out);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    return 0;
}

void etcd_member_list_free(struct etcd_member_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_members; i++) {
        etcd_member *m = &l->members[i];
        free(m->name);
        for (size_t j = 0; j < m->n_peer_urls; j++)
            free(m->peer_urls[j]);
        free(m->peer_urls);
        for (size_t j = 0; j < m->n_client_urls; j++)
            free(m->client_urls[j]);
        free(m->client_urls);
    }
    free(l->members);
    memset(l, 0, sizeof(*l));
}

int etcd_status(etcd_client *c, const char *endpoint, etcd_status_resp *out, etcd_error *err)
{
    memset(out, 0, sizeof(*out));
    Etcdserverpb__StatusRequest r = ETCDSERVERPB__STATUS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, MAINT_METHOD("Status"), &r.base,
                         &etcdserverpb__status_response__descriptor, &m, 0, RPC_IDEMPOTENT,
                         endpoint, err);
    if (rc)
        return rc;
    Etcdserverpb__StatusResponse *s = (Etcdserverpb__StatusResponse *)m;
    client_header(&out->header, s->header);
    snprintf(out->version, sizeof(out->version), "%s", s->version ? s->version : "");
    out->db_size = s->dbsize;
    out->db_size_in_use = s->dbsizeinuse;
    out->leader = s->leader;
    out->raft_index = (int64_t)s->raftindex;
    out->raft_term = (int64_t)s->raftterm;
    out->raft_applied_index = (int64_t)s->raftappliedindex;
    out->is_learner = s->islearner;
    size_t off = 0;
    for (size_t i = 0; i < s->n_errors && off < sizeof(out->errors) - 1; i++) {
        int w = snprintf(out->errors + off, sizeof(out->errors) - off, "%s%s", i ? "; " : "",
                         s->errors[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int etcd_alarm(etcd_client *c, int action, uint64_t member_id, int alarm,
               struct etcd_alarm **alarms,
               size_t *n, etcd_error *err)
{
    if (alarms)
        *alarms = NULL;
    if (n)
        *n = 0;
    Etcdserverpb__AlarmRequest r = ETCDSERVERPB__ALARM_REQUEST__INIT;
    r.action = (Etcdserverpb__AlarmRequest__AlarmAction)action;
    r.memberid = member_id;
    r.alarm = (Etcdserverpb__AlarmType)alarm;
    ProtobufCMessage *m = NULL;
    /* GET and DEACTIVATE can be repeated harmlessly; ACTIVATE too (alarms are a set). */
    int rc = client_call(c, MAINT_METHOD("Alarm"), &r.base,
                         &etcdserverpb__alarm_response__descriptor, &m, 0, RPC_IDEMPOTENT, NULL,
                         err);
    if (rc)
        return rc;
    Etcdserverpb__AlarmResponse *a = (Etcdserverpb__AlarmResponse *)m;
    if (alarms && a->n_alarms) {
        *alarms = calloc(a->n_alarms, sizeof(**alarms));
        if (!*alarms) {
            protobuf_c_message_free_unpacked(m, NULL);
            return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
        }
        for (size_t i = 0; i < a->n_alarms; i++) {
            (*alarms)[i].member_id = a->alarms[i]->memberid;
            (*alarms)[i].alarm = a->alarms[i]->alarm;
        }
        if (n)
            *n = a->n_alarms;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int etcd_defragment(etcd_client *c, const char *endpoint, etcd_error *err)
{
    Etcdserverpb__DefragmentRequest r = ETCDSERVERPB__DEFRAGMENT_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int t = c->call_timeout_ms > DEFRAG_MIN_TIMEOUT_MS ? c->call_timeout_ms
                                                       : DEFRAG_MIN_TIMEOUT_MS;
    int rc = client_call(c, MAINT_METHOD("Defragment"), &r.base,
                         &etcdserverpb__defragment_response__descriptor, &m, t, RPC_IDEMPOTENT,
                         endpoint, err);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* The client URL of the current leader, found by asking members their Status. */
static int find_leader_url(etcd_client *c, char *url, size_t url_len, etcd_error *err)
{
    struct etcd_member_list l;
    int rc = etcd_member_list(c, &l, err);
    if (rc)
        return rc;
    uint64_t leader = 0;
    rc = etcd_error_set(err, ETCD_E_UNAVAILABLE, -1, "no member reports a leader");
    for (size_t i = 0; i < l.n_members && !leader; i++) {
        for (size_t j = 0; j < l.members[i].n_client_urls && !leader; j++) {
            etcd_status_resp st;
            if (etcd_status(c, l.members[i].client_urls[j], &st, NULL) == 0)
                leader = st.leader;
        }
    }
    for (size_t i = 0; i < l.n_members && leader; i++) {
        if (l.members[i].id == leader && l.members[i].n_client_urls > 0) {
            snprintf(url, url_len, "%s", l.members[i].client_urls[0]);
            rc = 0;
            break;
        }
    }
    if (leader && rc)
        rc = etcd_error_set(err, ETCD_E_UNAVAILABLE, -1, "leader %llx has no client URL",
                            (unsigned long long)leader);
    etcd_member_list_free(&l);
    return rc;
}

int etcd_move_leader(etcd_client *c, uint64_t target_id, etcd_error *err)
{
    char url[256];
    int rc = find_leader_url(c, url, sizeof(url), err);
    if (rc)
        return rc;
    Etcdserverpb__MoveLeaderRequest r = ETCDSERVERPB__MOVE_LEADER_REQUEST__INIT;
    r.targetid = target_id;
    ProtobufCMessage *m = NULL;
    rc = client_call(c, MAINT_METHOD("MoveLeader"), &r.base,
                     &etcdserverpb__move_leader_response__descriptor, &m, 0, 0, url, err);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* ---- snapshot ---- */

typedef struct snap_chunk {
    Etcdserverpb__SnapshotResponse *r;
    size_t off;                 /* bytes of r->blob already read */
    size_t wire;                /* flow-control bytes to give back once read */
    struct snap_chunk *next;
} snap_chunk;

struct etcd_snapshot {
    etcd_client *c;
    rpc_stream *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    snap_chunk *head, *tail;
    bool closed, saw_last;
    etcd_error err;
};

static void snap_on_msg(void *arg, const uint8_t *msg, size_t len)
{
    etcd_snapshot *sn = arg;
    Etcdserverpb__SnapshotResponse *r = etcdserverpb__snapshot_response__unpack(NULL, len, msg);
    snap_chunk *ch = r ? calloc(1, sizeof(*ch)) : NULL;
    pthread_mutex_lock(&sn->mu);
    if (!ch) {
        if (r)
            etcdserverpb__snapshot_response__free_unpacked(r, NULL);
        if (!sn->closed && !sn->err.code)
            etcd_error_set(&sn->err, r ? ETCD_E_NOMEM : ETCD_E_PROTOCOL, -1,
                           "cannot decode snapshot chunk");
    } else {
        ch->r = r;
        ch->wire = len;         /* the transport gives back the 5-byte prefix itself */
        if (r->remaining_bytes == 0)
            sn->saw_last = true;
        if (sn->tail)
            sn->tail->next = ch;
        else
            sn->head = ch;
        sn->tail = ch;
    }
    pthread_cond_broadcast(&sn->cv);
    pthread_mutex_unlock(&sn->mu);
}

static void snap_on_close(void *arg, const etcd_error *err)
{
    etcd_snapshot *sn = arg;
    pthread_mutex_lock(&sn->mu);
    sn->closed = true;
    if (err && err->code && !sn->err.code)
        sn->err = *err;
    pthread_cond_broadcast(&sn->cv);
    pthread_mutex_unlock(&sn->mu);
}

int etcd_snapshot_open(etcd_client *c, etcd_snapshot **out, etcd_error *err)
{
    static const rpc_stream_cbs cbs = { snap_on_msg, snap_on_close };
    *out = NULL;
    etcd_snapshot *sn = calloc(1, sizeof(*sn));
    if (!sn)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    sn->c = c;
    pthread_mutex_init(&sn->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sn->cv, &ca);
    pthread_condattr_destroy(&ca);
    Etcdserverpb__SnapshotRequest r = ETCDSERVERPB__SNAPSHOT_REQUEST__INIT;
    size_t len;
    uint8_t *buf = client_pack(&r.base, &len);
    int rc = buf ? client_stream_open(c, MAINT_METHOD("Snapshot"), &cbs, sn, buf, len, 0,
                                      RPC_STREAM_MANUAL_FLOW, &sn->s, err)
                 : etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    free(buf);
    if (rc == 0 && sn->s)
        rpc_stream_end(sn->s);  /* server streaming: our side is done */
    if (rc) {
        pthread_mutex_destroy(&sn->mu);
        pthread_cond_destroy(&sn->cv);
        free(sn);
        return rc;
    }
    *out = sn;
    return 0;
}

long etcd_snapshot_read(etcd_snapshot *sn, void *buf, size_t len, int timeout_ms,
                        etcd_error *err)
{
    int64_t deadline = client_now_ms() + (timeout_ms > 0 ? timeout_ms : sn->c->call_timeout_ms);
    struct timespec ts = { deadline / 1000, (deadline % 1000) * 1000000 };
    size_t got = 0, give_back = 0;
    long rc = 0;
    pthread_mutex_lock(&sn->mu);
    while (!sn->head && !sn->closed && !sn->err.code) {
        if (pthread_cond_timedwait(&sn->cv, &sn->mu, &ts) == ETIMEDOUT) {
            rc = etcd_error_set(err, ETCD_E_DEADLINE, -1, "no snapshot data in time");
            break;
        }
    }
    while (rc == 0 && sn->head && got < len) {
        snap_chunk *ch = sn->head;
        size_t avail = ch->r->blob.len - ch->off;
        size_t n = avail < len - got ? avail : len - got;
        memcpy((uint8_t *)buf + got, ch->r->blob.data + ch->off, n);
        ch->off += n;
        got += n;
        if (ch->off == ch->r->blob.len) {
            sn->head = ch->next;
            if (!sn->head)
                sn->tail = NULL;
            give_back += ch->wire;
            etcdserverpb__snapshot_response__free_unpacked(ch->r, NULL);
            free(ch);
        }
    }
    if (rc == 0 && got == 0) {
        if (sn->err.code) {
            rc = -sn->err.code;
            if (err)
                *err = sn->err;
        } else if (sn->closed && !sn->saw_last) {
            rc = etcd_error_set(err, ETCD_E_PROTOCOL, -1, "snapshot stream ended early");
        }
    }
    pthread_mutex_unlock(&sn->mu);
    if (give_back)
        rpc_stream_consume(sn->s, give_back);
    return rc ? rc : (long)got;
}

void etcd_snapshot_close(etcd_snapshot *sn)
{
    if (!sn)
        return;
    rpc_stream_close(sn->s);    /* cancels when unfinished; no callback after it */
    for (snap_chunk *ch = sn->head, *n; ch; ch = n) {
        n = ch->next;
        etcdserverpb__snapshot_response__free_unpacked(ch->r, NULL);
        free(ch);
    }
    pthread_mutex_destroy(&sn->mu);
    pthread_cond_destroy(&sn->cv);
    free(sn);
}

/* kv.c — Range, Put, DeleteRange, Txn and Compact. Responses keep the unpacked protobuf in
 * priv; the etcd_kv arrays handed to callers point into it, so values are never copied. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define KV_METHOD(name) "/etcdserverpb.KV/" name

uint8_t *etcd_prefix_end(const void *prefix, size_t len, size_t *out_len)
{
    const uint8_t *p = prefix;
    size_t n = len;
    while (n > 0 && p[n - 1] == 0xff)
        n--;
    if (n == 0) {
        /* Empty or all-0xff prefix: "\0" means "to the end of the keyspace". */
        uint8_t *z = malloc(1);
        if (z)
            z[0] = 0;
        *out_len = z ? 1 : 0;
        return z;
    }
    uint8_t *end = malloc(n);
    if (!end) {
        *out_len = 0;
        return NULL;
    }
    memcpy(end, p, n);
    end[n - 1]++;
    *out_len = n;
    return end;
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = { n, (uint8_t *)p };
    return b;
}

/* Converts a repeated KeyValue into an etcd_kv array (NULL for none; *oom on failure). */
static etcd_kv *kv_array(Mvccpb__KeyValue **kvs, size_t n, bool *oom)
{
    if (n == 0)
        return NULL;
    etcd_kv *a = calloc(n, sizeof(*a));
    if (!a) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        client_kv(&a[i], kvs[i]);
    return a;
}

static void range_req_fill(Etcdserverpb__RangeRequest *r, const etcd_range_req *req)
{
    r->key = bin(req->key, req->key_len);
    if (req->range_end)
        r->range_end = bin(req->range_end, req->range_end_len);
    r->limit = req->limit;
    r->revision = req->revision;
    r->keys_only = req->keys_only;
    r->count_only = req->count_only;
    r->serializable = req->serializable;
    r->sort_order = (Etcdserverpb__RangeRequest__SortOrder)req->sort_order;
    r->sort_target = (Etcdserverpb__RangeRequest__SortTarget)req->sort_target;
}

int etcd_range(etcd_client *c, const etcd_range_req *req, etcd_range_resp *resp, etcd_error *err)
{
    memset(resp, 0, sizeof(*resp));
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    range_req_fill(&r, req);
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, KV_METHOD("Range"), &r.base, &etcdserverpb__range_response__descriptor,
                         &m, req->timeout_ms, RPC_IDEMPOTENT, NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__RangeResponse *rr = (Etcdserverpb__RangeResponse *)m;
    bool oom = false;
    client_header(&resp->header, rr->header);
    resp->kvs = kv_array(rr->kvs, rr->n_kvs, &oom);
    resp->n_kvs = oom ? 0 : rr->n_kvs;
    resp->more = rr->more;
    resp->count = rr->count;
    resp->priv = m;
    if (oom) {
        etcd_range_resp_free(resp);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    return 0;
}

void etcd_range_resp_free(etcd_range_resp *resp)
{
    if (!resp)
        return;
    free(resp->kvs);
    if (resp->priv)
        protobuf_c_message_free_unpacked(resp->priv, NULL);
    memset(resp, 0, sizeof(*resp));
}

int etcd_put(etcd_client *c, const void *key, size_t key_len, const void *val, size_t val_len,
             const etcd_put_opts *opts, etcd_put_resp *resp, etcd_error *err)
{
    if (resp)
        memset(resp, 0, sizeof(*resp));
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = bin(key, key_len);
    r.value = bin(val, val_len);
    int timeout = 0;
    if (opts) {
        r.lease = opts->lease;
        r.prev_kv = opts->prev_kv;
        r.ignore_value = opts->ignore_value;
        r.ignore_lease = opts->ignore_lease;
        timeout = opts->timeout_ms;
    }
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, KV_METHOD("Put"), &r.base, &etcdserverpb__put_response__descriptor,
                         &m, timeout, 0, NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__PutResponse *pr = (Etcdserverpb__PutResponse *)m;
    if (!resp) {
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    client_header(&resp->header, pr->header);
    resp->has_prev = pr->prev_kv != NULL;
    client_kv(&resp->prev_kv, pr->prev_kv);
    resp->priv = m;
    return 0;
}

void etcd_put_resp_free(etcd_put_resp *resp)
{
    if (!resp)
        return;
    if (resp->priv)
        protobuf_c_message_free_unpacked(resp->priv, NULL);
    memset(resp, 0, sizeof(*resp));
}

int etcd_delete(etcd_client *c, const void *key, size_t key_len, const void *range_end,
                size_t range_end_len, bool prev_kv, etcd_delete_resp *resp, etcd_error *err)
{
    if (resp)
        memset(resp, 0, sizeof(*resp));
    Etcdserverpb__DeleteRangeRequest r = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    r.key = bin(key, key_len);
    if (range_end)
        r.range_end = bin(range_end, range_end_len);
    r.prev_kv = prev_kv;
    ProtobufCMessage *m = NULL;
    int rc = client_call(c, KV_METHOD("DeleteRange"), &r.base,
                         &etcdserverpb__delete_range_response__descriptor, &m, 0, 0, NULL, err);
    if (rc)
        return rc;
    if (!resp) {
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    Etcdserverpb__DeleteRangeResponse *dr = (Etcdserverpb__DeleteRangeResponse *)m;
    bool oom = false;
    client_header(&resp->header, dr->header);
    resp->deleted = dr->deleted;
    resp->prev_kvs = kv_array(dr->prev_kvs, dr->n_prev_kvs, &oom);
    resp->n_prev_kvs = oom ? 0 : dr->n_prev_kvs;
    resp->priv = m;
    if (oom) {
        etcd_delete_resp_free(resp);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    return 0;
}

void etcd_delete_resp_free(etcd_delete_resp *resp)
{
    if (!resp)
        return;
    free(resp->prev_kvs);
    if (resp->priv)
        protobuf_c_message_free_unpacked(resp->priv, NULL);
    memset(resp, 0, sizeof(*resp));
}

/* ---- Txn ---- */

/* Request side of a txn, built in one allocation per list so cleanup is trivial. */
typedef struct txn_ops {
    Etcdserverpb__RequestOp *ops;
    Etcdserverpb__RequestOp **ptrs;
    Etcdserverpb__RangeRequest *ranges;
    Etcdserverpb__PutRequest *puts;
    Etcdserverpb__DeleteRangeRequest *dels;
} txn_ops;

static void txn_ops_free(txn_ops *t)
{
    free(t->ops);
    free(t->ptrs);
    free(t->ranges);
    free(t->puts);
    free(t->dels);
}

static int txn_ops_build(txn_ops *t, const etcd_op *ops, size_t n, bool *writes)
{
    memset(t, 0, sizeof(*t));
    if (n == 0)
        return 0;
    t->ops = calloc(n, sizeof(*t->ops));
    t->ptrs = calloc(n, sizeof(*t->ptrs));
    t->ranges = calloc(n, sizeof(*t->ranges));
    t->puts = calloc(n, sizeof(*t->puts));
    t->dels = calloc(n, sizeof(*t->dels));
    if (!t->ops || !t->ptrs || !t->ranges || !t->puts || !t->dels)
        return -ETCD_E_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const etcd_op *o = &ops[i];
        Etcdserverpb__RequestOp *ro = &t->ops[i];
        etcdserverpb__request_op__init(ro);
        t->ptrs[i] = ro;
        switch (o->type) {
        case ETCD_OP_RANGE: {
            Etcdserverpb__RangeRequest *r = &t->ranges[i];
            etcdserverpb__range_request__init(r);
            r->key = bin(o->key, o->key_len);
            if (o->range_end)
                r->range_end = bin(o->range_end, o->range_end_len);
            r->keys_only = o->keys_only;
            r->limit = o->limit;
            ro->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
            ro->request_range = r;
            break;
        }
        case ETCD_OP_PUT: {
            Etcdserverpb__PutRequest *p = &t->puts[i];
            etcdserverpb__put_request__init(p);
            p->key = bin(o->key, o->key_len);
            p->value = bin(o->value, o->value_len);
            p->lease = o->lease;
            p->prev_kv = o->prev_kv;
            p->ignore_lease = o->ignore_lease;
            ro->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
            ro->request_put = p;
            *writes = true;
            break;
        }
        case ETCD_OP_DELETE: {
            Etcdserverpb__DeleteRangeRequest *d = &t->dels[i];
            etcdserverpb__delete_range_request__init(d);
            d->key = bin(o->key, o->key_len);
            if (o->range_end)
                d->range_end = bin(o->range_end, o->range_end_len);
            d->prev_kv = o->prev_kv;
            ro->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
            ro->request_delete_range = d;
            *writes = true;
            break;
        }
        default:
            return -ETCD_E_INVALID_ARG;
        }
    }
    return 0;
}

static int txn_cmp_build(Etcdserverpb__Compare *cs, Etcdserverpb__Compare **ptrs,
                         const etcd_compare *cmp, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        Etcdserverpb__Compare *x = &cs[i];
        etcdserverpb__compare__init(x);
        ptrs[i] = x;
        x->result = (Etcdserverpb__Compare__CompareResult)cmp[i].result;
        x->target = (Etcdserverpb__Compare__CompareTarget)cmp[i].target;
        x->key = bin(cmp[i].key, cmp[i].key_len);
        if (cmp[i].range_end)
            x->range_end = bin(cmp[i].range_end, cmp[i].range_end_len);
        /* The oneof must be set even for a zero number: etcd tells "version == 0" (key absent)
         * from an unset target by it. */
        switch (cmp[i].target) {
        case ETCD_CMP_VERSION:
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
            x->version = cmp[i].number;
            break;
        case ETCD_CMP_CREATE:
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
            x->create_revision = cmp[i].number;
            break;
        case ETCD_CMP_MOD:
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
            x->mod_revision = cmp[i].number;
            break;
        case ETCD_CMP_VALUE:
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
            x->value = bin(cmp[i].value, cmp[i].value_len);
            break;
        case ETCD_CMP_LEASE:
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
            x->lease = cmp[i].number;
            break;
        default:
            return -ETCD_E_INVALID_ARG;
        }
    }
    return 0;
}

/* Fills one etcd_op_resp; the kv arrays it allocates are freed by etcd_txn_resp_free. */
static int txn_op_resp(etcd_op_resp *o, const Etcdserverpb__ResponseOp *ro)
{
    bool oom = false;
    switch (ro->response_case) {
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE: {
        const Etcdserverpb__RangeResponse *r = ro->response_range;
        o->type = ETCD_OP_RANGE;
        o->kvs = kv_array(r->kvs, r->n_kvs, &oom);
        o->n_kvs = oom ? 0 : r->n_kvs;
        o->count = r->count;
        o->more = r->more;
        break;
    }
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
        o->type = ETCD_OP_PUT;
        o->has_prev = ro->response_put->prev_kv != NULL;
        client_kv(&o->prev_kv, ro->response_put->prev_kv);
        break;
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE: {
        const Etcdserverpb__DeleteRangeResponse *d = ro->response_delete_range;
        o->type = ETCD_OP_DELETE;
        o->deleted = d->deleted;
        o->prev_kvs = kv_array(d->prev_kvs, d->n_prev_kvs, &oom);
        o->n_prev_kvs = oom ? 0 : d->n_prev_kvs;
        break;
    }
    default:
        o->type = -1;     /* nested txn: never sent by us */
        break;
    }
    return oom ? -ETCD_E_NOMEM : 0;
}

int etcd_txn(etcd_client *c, const etcd_compare *cmp, size_t n_cmp, const etcd_op *success,
             size_t n_success, const etcd_op *failure, size_t n_failure, int timeout_ms,
             etcd_txn_resp *resp, etcd_error *err)
{
    if (resp)
        memset(resp, 0, sizeof(*resp));
    Etcdserverpb__TxnRequest r = ETCDSERVERPB__TXN_REQUEST__INIT;
    Etcdserverpb__Compare *cs = n_cmp ? calloc(n_cmp, sizeof(*cs)) : NULL;
    Etcdserverpb__Compare **cps = n_cmp ? calloc(n_cmp, sizeof(*cps)) : NULL;
    txn_ops s, f;
    bool writes = false;
    int rc = 0;
    if (n_cmp && (!cs || !cps))
        rc = -ETCD_E_NOMEM;
    int rs = txn_ops_build(&s, success, n_success, &writes);
    int rf = txn_ops_build(&f, failure, n_failure, &writes);
    if (!rc)
        rc = rs ? rs : rf;
    if (!rc)
        rc = txn_cmp_build(cs, cps, cmp, n_cmp);
    ProtobufCMessage *m = NULL;
    if (rc) {
        etcd_error_set(err, -rc, -1, "%s", rc == -ETCD_E_NOMEM ? "out of memory"
                                                             : "bad txn operation or compare");
    } else {
        r.n_compare = n_cmp;
        r.compare = cps;
        r.n_success = n_success;
        r.success = s.ptrs;
        r.n_failure = n_failure;
        r.failure = f.ptrs;
        rc = client_call(c, KV_METHOD("Txn"), &r.base, &etcdserverpb__txn_response__descriptor,
                         &m, timeout_ms, writes ? 0 : RPC_IDEMPOTENT, NULL, err);
    }
    free(cs);
    free(cps);
    txn_ops_free(&s);
    txn_ops_free(&f);
    if (rc)
        return rc;
    Etcdserverpb__TxnResponse *tr = (Etcdserverpb__TxnResponse *)m;
    if (!resp) {
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    client_header(&resp->header, tr->header);
    resp->succeeded = tr->succeeded;
    resp->priv = m;
    if (tr->n_responses) {
        resp->responses = calloc(tr->n_responses, sizeof(*resp->responses));
        if (!resp->responses) {
            etcd_txn_resp_free(resp);
            return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
        }
        resp->n_responses = tr->n_responses;
        for (size_t i = 0; i < tr->n_responses; i++) {
            if (txn_op_resp(&resp->responses[i], tr->responses[i])) {
                etcd_txn_resp_free(resp);
                return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
            }
        }
    }
    return 0;
}

void etcd_txn_resp_free(etcd_txn_resp *resp)
{
    if (!resp)
        return;
    for (size_t i = 0; i < resp->n_responses; i++) {
        free(resp->responses[i].kvs);
        free(resp->responses[i].prev_kvs);
    }
    free(resp->responses);
    if (resp->priv)
        protobuf_c_message_free_unpacked(resp->priv, NULL);
    memset(resp, 0, sizeof(*resp));
}

int etcd_compact(etcd_client *c, int64_t revision, bool physical, etcd_error *err)
{
    Etcdserverpb__CompactionRequest r = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    r.revision = revision;
    r.physical = physical;
    ProtobufCMessage *m = NULL;
    /* Compacting twice to the same revision fails with "compacted", but the first one did
     * the job, so it is idempotent in effect; still, the caller sees the error: no retry. */
    int rc = client_call(c, KV_METHOD("Compact"), &r.base,
                         &etcdserverpb__compaction_response__descriptor, &m, 0, 0, NULL, err);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

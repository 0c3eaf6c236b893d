/* proto_test.c — client/proto (kv.proto, rpc.proto) against etcd's wire format: messages we
 * send pack to known bytes (field numbers, packed repeated enums, oneof with a zero value),
 * messages etcd sends decode from known bytes, and everything round-trips. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "internal.h"
#include "kv.pb-c.h"
#include "rpc.pb-c.h"

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = 0;
    unsigned v;
    while (*hex) {
        while (*hex == ' ')
            hex++;
        if (!*hex || sscanf(hex, "%2x", &v) != 1)
            break;
        out[n++] = (uint8_t)v;
        hex += 2;
    }
    return n;
}

/* Packs m and compares with the expected hex; prints the bytes on mismatch. */
static int packs_to(const ProtobufCMessage *m, const char *hex)
{
    uint8_t want[512], got[512];
    size_t wn = unhex(hex, want);
    size_t gn = protobuf_c_message_get_packed_size(m);
    if (gn > sizeof(got))
        return 0;
    protobuf_c_message_pack(m, got);
    if (gn == wn && !memcmp(got, want, gn))
        return 1;
    printf("#   got:");
    for (size_t i = 0; i < gn; i++)
        printf(" %02x", got[i]);
    printf("\n#  want: %s\n", hex);
    return 0;
}

static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const char *hex)
{
    uint8_t buf[512];
    size_t n = unhex(hex, buf);
    return protobuf_c_message_unpack(d, NULL, n, buf);
}

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = { strlen(s), (uint8_t *)s };
    return b;
}

static int bin_eq(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && !memcmp(b.data, s, b.len);
}

static void test_kv_requests(void)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = bin("foo");
    CHECK(packs_to(&r.base, "0a 03 66 6f 6f"), "RangeRequest{key:foo}");
    r.key = bin("a");
    r.range_end = bin("b");
    r.limit = 10;
    r.revision = 5;
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD;
    r.serializable = r.keys_only = r.count_only = 1;
    CHECK(packs_to(&r.base, "0a 01 61 12 01 62 18 0a 20 05 28 02 30 03 38 01 40 01 48 01"),
          "RangeRequest: all fields 1-9");

    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = bin("k");
    p.value = bin("v");
    p.lease = 1;
    p.prev_kv = p.ignore_value = p.ignore_lease = 1;
    CHECK(packs_to(&p.base, "0a 01 6b 12 01 76 18 01 20 01 28 01 30 01"), "PutRequest");

    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key = bin("k");
    d.range_end = bin("l");
    d.prev_kv = 1;
    CHECK(packs_to(&d.base, "0a 01 6b 12 01 6c 18 01"), "DeleteRangeRequest");

    Etcdserverpb__Compare c = ETCDSERVERPB__COMPARE__INIT;
    c.key = bin("k");
    c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
    c.version = 0;
    CHECK(packs_to(&c.base, "1a 01 6b 20 00"), "Compare version==0: oneof sent though zero");
    c.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL;
    c.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c.value = bin("v");
    c.range_end = bin("z");
    CHECK(packs_to(&c.base, "08 03 10 03 1a 01 6b 3a 01 76 82 04 01 7a"),
          "Compare value with range_end = field 64");
    Etcdserverpb__Compare c2 = ETCDSERVERPB__COMPARE__INIT;
    c2.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE;
    c2.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER;
    c2.key = bin("k");
    c2.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
    c2.lease = 7;
    CHECK(packs_to(&c2.base, "08 01 10 04 1a 01 6b 40 07"), "Compare lease");
    c2.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    c2.mod_revision = 9;
    c2.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    CHECK(packs_to(&c2.base, "08 01 10 02 1a 01 6b 30 09"), "Compare mod_revision");
    c2.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    c2.create_revision = 4;
    c2.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
    CHECK(packs_to(&c2.base, "08 01 10 01 1a 01 6b 28 04"), "Compare create_revision");

    /* Txn{compare:[version(k)==0], success:[put k=v], failure:[range k]} */
    Etcdserverpb__Compare cv = ETCDSERVERPB__COMPARE__INIT;
    cv.key = bin("k");
    cv.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
    Etcdserverpb__Compare *cps[] = { &cv };
    Etcdserverpb__PutRequest tp = ETCDSERVERPB__PUT_REQUEST__INIT;
    tp.key = bin("k");
    tp.value = bin("v");
    Etcdserverpb__RequestOp so = ETCDSERVERPB__REQUEST_OP__INIT;
    so.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    so.request_put = &tp;
    Etcdserverpb__RangeRequest tr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    tr.key = bin("k");
    Etcdserverpb__RequestOp fo = ETCDSERVERPB__REQUEST_OP__INIT;
    fo.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    fo.request_range = &tr;
    Etcdserverpb__RequestOp *sops[] = { &so }, *fops[] = { &fo };
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.n_compare = 1;
    t.compare = cps;
    t.n_success = 1;
    t.success = sops;
    t.n_failure = 1;
    t.failure = fops;
    CHECK(packs_to(&t.base, "0a 05 1a 01 6b 20 00 12 08 12 06 0a 01 6b 12 01 76 1a 05 0a 03 0a 01 6b"),
          "TxnRequest nested ops");

    Etcdserverpb__CompactionRequest cr = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    cr.revision = 100;
    cr.physical = 1;
    CHECK(packs_to(&cr.base, "08 64 10 01"), "CompactionRequest");
}

static void test_watch(void)
{
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = bin("a");
    cr.start_revision = 7;
    cr.progress_notify = cr.prev_kv = cr.fragment = 1;
    Etcdserverpb__WatchRequest w = ETCDSERVERPB__WATCH_REQUEST__INIT;
    w.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    w.create_request = &cr;
    CHECK(packs_to(&w.base, "0a 0b 0a 01 61 18 07 20 01 30 01 40 01"), "WatchRequest create");
    Etcdserverpb__WatchCreateRequest__FilterType f[] = {
        ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT,
        ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE };
    Etcdserverpb__WatchCreateRequest cf = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cf.n_filters = 2;
    cf.filters = f;
    cf.watch_id = 3;
    cf.range_end = bin("b");
    CHECK(packs_to(&cf.base, "12 01 62 2a 02 00 01 38 03"), "filters packed (proto3), watch_id = field 7");

    Etcdserverpb__WatchCancelRequest cc = ETCDSERVERPB__WATCH_CANCEL_REQUEST__INIT;
    cc.watch_id = 3;
    Etcdserverpb__WatchRequest wc = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wc.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST;
    wc.cancel_request = &cc;
    CHECK(packs_to(&wc.base, "12 02 08 03"), "WatchRequest cancel");
    Etcdserverpb__WatchProgressRequest pr = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
    Etcdserverpb__WatchRequest wp = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wp.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
    wp.progress_request = &pr;
    CHECK(packs_to(&wp.base, "1a 00"), "WatchRequest progress");

    Etcdserverpb__WatchResponse *r = (Etcdserverpb__WatchResponse *)decode(
        &etcdserverpb__watch_response__descriptor,
        "0a 02 18 09 10 02 18 01 20 01 28 05 32 01 78 38 01 5a 09 08 01 12 05 0a 01 6b 18 09");
    CHECK(r != NULL, "WatchResponse decodes");
    if (r) {
        CHECK(r->header && r->header->revision == 9, "header.revision");
        CHECK(r->watch_id == 2 && r->created && r->canceled && r->compact_revision == 5,
              "watch_id, created, canceled, compact_revision");
        CHECK(!strcmp(r->cancel_reason, "x") && r->fragment, "cancel_reason, fragment");
        CHECK(r->n_events == 1 && r->events[0]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE &&
                  r->events[0]->kv && bin_eq(r->events[0]->kv->key, "k") &&
                  r->events[0]->kv->mod_revision == 9 && !r->events[0]->prev_kv,
              "events = field 11: DELETE k @9");
        etcdserverpb__watch_response__free_unpacked(r, NULL);
    }
}

static void test_kv_responses(void)
{
    Etcdserverpb__RangeResponse *r = (Etcdserverpb__RangeResponse *)decode(
        &etcdserverpb__range_response__descriptor,
        "0a 02 18 05 12 0e 0a 01 6b 10 02 18 03 20 01 2a 01 76 30 06 18 01 20 02");
    CHECK(r && r->header->revision == 5 && r->n_kvs == 1 && r->more && r->count == 2,
          "RangeResponse header/kvs/more/count");
    if (r) {
        Mvccpb__KeyValue *kv = r->kvs[0];
        CHECK(bin_eq(kv->key, "k") && kv->create_revision == 2 && kv->mod_revision == 3 &&
                  kv->version == 1 && bin_eq(kv->value, "v") && kv->lease == 6,
              "KeyValue fields 1-6");
        etcdserverpb__range_response__free_unpacked(r, NULL);
    }
    Etcdserverpb__TxnResponse *t = (Etcdserverpb__TxnResponse *)decode(
        &etcdserverpb__txn_response__descriptor, "10 01 1a 02 12 00 1a 04 1a 02 10 03");
    CHECK(t && t->succeeded && t->n_responses == 2 &&
              t->responses[0]->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT &&
              t->responses[1]->response_case ==
                  ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE &&
              t->responses[1]->response_delete_range->deleted == 3,
          "TxnResponse with put and delete responses");
    if (t)
        etcdserverpb__txn_response__free_unpacked(t, NULL);
    Etcdserverpb__DeleteRangeResponse *d = (Etcdserverpb__DeleteRangeResponse *)decode(
        &etcdserverpb__delete_range_response__descriptor, "10 01 1a 03 0a 01 6b");
    CHECK(d && d->deleted == 1 && d->n_prev_kvs == 1 && bin_eq(d->prev_kvs[0]->key, "k"),
          "DeleteRangeResponse prev_kvs = field 3");
    if (d)
        etcdserverpb__delete_range_response__free_unpacked(d, NULL);
    Etcdserverpb__PutResponse *p = (Etcdserverpb__PutResponse *)decode(
        &etcdserverpb__put_response__descriptor, "12 03 0a 01 6b");
    CHECK(p && p->prev_kv && bin_eq(p->prev_kv->key, "k"), "PutResponse prev_kv = field 2");
    if (p)
        etcdserverpb__put_response__free_unpacked(p, NULL);
}

static void test_lease_auth_maint(void)
{
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    g.ttl = 5;
    g.id = 0x10;
    CHECK(packs_to(&g.base, "08 05 10 10"), "LeaseGrantRequest TTL=1 ID=2");
    Etcdserverpb__LeaseKeepAliveRequest k = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    k.id = 300;
    CHECK(packs_to(&k.base, "08 ac 02"), "LeaseKeepAliveRequest");
    Etcdserverpb__LeaseTimeToLiveRequest tl = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    tl.id = 1;
    tl.keys = 1;
    CHECK(packs_to(&tl.base, "08 01 10 01"), "LeaseTimeToLiveRequest");
    Etcdserverpb__LeaseTimeToLiveResponse *tr = (Etcdserverpb__LeaseTimeToLiveResponse *)decode(
        &etcdserverpb__lease_time_to_live_response__descriptor,
        "10 01 18 05 20 0a 2a 01 61 2a 01 62");
    CHECK(tr && tr->id == 1 && tr->ttl == 5 && tr->grantedttl == 10 && tr->n_keys == 2 &&
              bin_eq(tr->keys[1], "b"), "LeaseTimeToLiveResponse");
    if (tr)
        etcdserverpb__lease_time_to_live_response__free_unpacked(tr, NULL);
    Etcdserverpb__LeaseGrantResponse *gr = (Etcdserverpb__LeaseGrantResponse *)decode(
        &etcdserverpb__lease_grant_response__descriptor, "10 07 18 05 22 01 65");
    CHECK(gr && gr->id == 7 && gr->ttl == 5 && !strcmp(gr->error, "e"), "LeaseGrantResponse");
    if (gr)
        etcdserverpb__lease_grant_response__free_unpacked(gr, NULL);
    Etcdserverpb__LeaseLeasesResponse *ll = (Etcdserverpb__LeaseLeasesResponse *)decode(
        &etcdserverpb__lease_leases_response__descriptor, "12 02 08 07 12 02 08 08");
    CHECK(ll && ll->n_leases == 2 && ll->leases[1]->id == 8, "LeaseLeasesResponse");
    if (ll)
        etcdserverpb__lease_leases_response__free_unpacked(ll, NULL);

    Etcdserverpb__AuthenticateRequest a = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
    a.name = "u";
    a.password = "p";
    CHECK(packs_to(&a.base, "0a 01 75 12 01 70"), "AuthenticateRequest");
    Etcdserverpb__AuthenticateResponse *ar = (Etcdserverpb__AuthenticateResponse *)decode(
        &etcdserverpb__authenticate_response__descriptor, "0a 00 12 02 74 6b");
    CHECK(ar && !strcmp(ar->token, "tk"), "AuthenticateResponse token = field 2");
    if (ar)
        etcdserverpb__authenticate_response__free_unpacked(ar, NULL);

    Etcdserverpb__AlarmRequest al = ETCDSERVERPB__ALARM_REQUEST__INIT;
    al.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE;
    al.memberid = 1;
    al.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
    CHECK(packs_to(&al.base, "08 02 10 01 18 01"), "AlarmRequest");
    Etcdserverpb__AlarmResponse *alr = (Etcdserverpb__AlarmResponse *)decode(
        &etcdserverpb__alarm_response__descriptor, "12 04 08 09 10 01");
    CHECK(alr && alr->n_alarms == 1 && alr->alarms[0]->memberid == 9 &&
              alr->alarms[0]->alarm == ETCDSERVERPB__ALARM_TYPE__NOSPACE, "AlarmResponse");
    if (alr)
        etcdserverpb__alarm_response__free_unpacked(alr, NULL);

    Etcdserverpb__MoveLeaderRequest ml = ETCDSERVERPB__MOVE_LEADER_REQUEST__INIT;
    ml.targetid = 0x1234;
    CHECK(packs_to(&ml.base, "08 b4 24"), "MoveLeaderRequest");

    Etcdserverpb__StatusResponse *s = (Etcdserverpb__StatusResponse *)decode(
        &etcdserverpb__status_response__descriptor,
        "12 06 33 2e 34 2e 32 33 18 80 20 20 07 28 08 30 02 38 08 42 01 65 48 0a 50 01");
    CHECK(s && !strcmp(s->version, "3.4.23") && s->dbsize == 4096 && s->leader == 7 &&
              s->raftindex == 8 && s->raftterm == 2 && s->raftappliedindex == 8 &&
              s->n_errors == 1 && s->dbsizeinuse == 10 && s->islearner,
          "StatusResponse fields 2-10");
    if (s)
        etcdserverpb__status_response__free_unpacked(s, NULL);

    Etcdserverpb__MemberListResponse *m = (Etcdserverpb__MemberListResponse *)decode(
        &etcdserverpb__member_list_response__descriptor,
        "12 0d 08 01 12 01 6d 1a 01 70 22 01 63 28 01");
    CHECK(m && m->n_members == 1 && m->members[0]->id == 1 &&
              !strcmp(m->members[0]->name, "m") && m->members[0]->n_peerurls == 1 &&
              !strcmp(m->members[0]->clienturls[0], "c") && m->members[0]->islearner,
          "MemberListResponse / Member");
    if (m)
        etcdserverpb__member_list_response__free_unpacked(m, NULL);

    Etcdserverpb__SnapshotResponse *sn = (Etcdserverpb__SnapshotResponse *)decode(
        &etcdserverpb__snapshot_response__descriptor, "10 03 1a 02 61 62");
    CHECK(sn && sn->remaining_bytes == 3 && bin_eq(sn->blob, "ab"), "SnapshotResponse");
    if (sn)
        etcdserverpb__snapshot_response__free_unpacked(sn, NULL);
}

/* A big value survives pack/unpack intact. */
static void test_roundtrip_big(void)
{
    static uint8_t val[1 << 20];
    for (size_t i = 0; i < sizeof(val); i++)
        val[i] = (uint8_t)(i * 131 + 7);
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    kv.key.data = (uint8_t *)"big";
    kv.key.len = 3;
    kv.value.data = val;
    kv.value.len = sizeof(val);
    kv.mod_revision = 1LL << 40;
    Mvccpb__KeyValue *kvs[] = { &kv };
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.n_kvs = 1;
    r.kvs = kvs;
    r.count = 1;
    size_t n = protobuf_c_message_get_packed_size(&r.base);
    uint8_t *buf = malloc(n);
    protobuf_c_message_pack(&r.base, buf);
    Etcdserverpb__RangeResponse *u = etcdserverpb__range_response__unpack(NULL, n, buf);
    CHECK(u && u->n_kvs == 1 && u->kvs[0]->value.len == sizeof(val) &&
              !memcmp(u->kvs[0]->value.data, val, sizeof(val)) &&
              u->kvs[0]->mod_revision == 1LL << 40,
          "1 MiB value round-trips");
    if (u)
        etcdserverpb__range_response__free_unpacked(u, NULL);
    free(buf);
}

/* A TxnResponse holding `depth` levels of ResponseOp.response_txn (field 3 → field 4). */
static uint8_t *nested_txn(int depth, size_t *len)
{
    uint8_t *b = NULL;
    size_t n = 0;
    for (int i = 0; i < depth; i++) {
        /* ResponseOp{response_txn(4) = b}, then TxnResponse{responses(3) = that}. */
        for (int field = 4; field >= 3; field--) {
            uint8_t hdr[11];
            size_t h = 0, v = n;
            hdr[h++] = (uint8_t)(field << 3 | 2);
            do {
                hdr[h++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
                v >>= 7;
            } while (v);
            uint8_t *nb = malloc(h + n);
            memcpy(nb, hdr, h);
            if (n)
                memcpy(nb + h, b, n);
            free(b);
            b = nb;
            n += h;
        }
    }
    *len = n;
    return b;
}

static void test_nesting_guard(void)
{
    const ProtobufCMessageDescriptor *d = &etcdserverpb__txn_response__descriptor;
    size_t n;
    uint8_t *b = nested_txn(10, &n);
    CHECK(client_pb_depth_ok(d, b, n), "a TxnResponse nested 10 deep is accepted");
    Etcdserverpb__TxnResponse *u = etcdserverpb__txn_response__unpack(NULL, n, b);
    CHECK(u && u->n_responses == 1 && u->responses[0]->response_txn,
          "... and it really is nested Txn responses");
    if (u)
        etcdserverpb__txn_response__free_unpacked(u, NULL);
    free(b);
    b = nested_txn(40, &n);
    CHECK(!client_pb_depth_ok(d, b, n), "a TxnResponse nested 40 deep is refused before unpacking");
    free(b);
    b = nested_txn(2000, &n);
    CHECK(!client_pb_depth_ok(d, b, n),
          "a TxnResponse nested 2,000 deep (the fuzzer found 100,000) is refused");
    free(b);
    const uint8_t junk[] = { 0x1a, 0xff, 0xff, 0x03 };
    CHECK(client_pb_depth_ok(d, junk, sizeof(junk)), "malformed input is left to the unpacker");
}

int main(void)
{
    test_nesting_guard();
    test_kv_requests();
    test_watch();
    test_kv_responses();
    test_lease_auth_maint();
    test_roundtrip_big();
    return check_done();
}

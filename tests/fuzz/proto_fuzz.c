/* proto_fuzz.c — libFuzzer target for the protobuf decoding of every response the client reads
 * from etcd (protobuf-c unpack with our generated descriptors), then the client's own
 * conversion helpers (client_header, client_kv) over every header and key-value found, a walk
 * over every decoded field, and a pack → unpack → pack round trip that must be stable.
 * The first input byte picks the response type. Built and run by tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define FUZZ_ASSERT(c) do { if (!(c)) __builtin_trap(); } while (0)

static const ProtobufCMessageDescriptor *const types[] = {
    &etcdserverpb__range_response__descriptor,
    &etcdserverpb__put_response__descriptor,
    &etcdserverpb__delete_range_response__descriptor,
    &etcdserverpb__txn_response__descriptor,
    &etcdserverpb__compaction_response__descriptor,
    &etcdserverpb__watch_response__descriptor,
    &etcdserverpb__lease_grant_response__descriptor,
    &etcdserverpb__lease_revoke_response__descriptor,
    &etcdserverpb__lease_keep_alive_response__descriptor,
    &etcdserverpb__lease_time_to_live_response__descriptor,
    &etcdserverpb__lease_leases_response__descriptor,
    &etcdserverpb__member_list_response__descriptor,
    &etcdserverpb__status_response__descriptor,
    &etcdserverpb__alarm_response__descriptor,
    &etcdserverpb__defragment_response__descriptor,
    &etcdserverpb__snapshot_response__descriptor,
    &etcdserverpb__move_leader_response__descriptor,
    &etcdserverpb__authenticate_response__descriptor,
};
#define N_TYPES (sizeof types / sizeof types[0])

static volatile uint64_t sink;   /* keeps the reads below from being optimized away */
static bool has_unknown;         /* some message kept unknown fields (re-emitted verbatim) */

static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        sink += b[i];
}

static void walk(const ProtobufCMessage *m, int depth);

/* Reads one field value the way a consumer would (ASan/UBSan catch bad pointers/lengths). */
static void walk_value(const ProtobufCFieldDescriptor *f, const void *v, int depth)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        if (s)
            touch(s, strlen(s) + 1);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = v;
        FUZZ_ASSERT(b->len == 0 || b->data);
        touch(b->data, b->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)v;
        if (sub)
            walk(sub, depth + 1);
        break;
    }
    default:
        break;   /* scalars live inside the message itself */
    }
}

static size_t value_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 8;
    }
}

static void walk(const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    FUZZ_ASSERT(d && d->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
    if (m->n_unknown_fields)
        has_unknown = true;
    if (d == &etcdserverpb__response_header__descriptor) {
        etcd_header h;
        client_header(&h, (const Etcdserverpb__ResponseHeader *)m);
        sink += (uint64_t)h.revision;
    } else if (d == &mvccpb__key_value__descriptor) {
        etcd_kv kv;
        client_kv(&kv, (const Mvccpb__KeyValue *)m);
        FUZZ_ASSERT(kv.key_len == 0 || kv.key);
        FUZZ_ASSERT(kv.value_len == 0 || kv.value);
        touch(kv.key, kv.key_len);
        touch(kv.value, kv.value_len);
    }
    const uint8_t *base = (const uint8_t *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const uint8_t *arr = *(const uint8_t *const *)(base + f->offset);
            FUZZ_ASSERT(n == 0 || arr);
            for (size_t k = 0; k < n; k++)
                walk_value(f, arr + k * value_size(f), depth);
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which != f->id)
                continue;
        }
        walk_value(f, base + f->offset, depth);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = types[data[0] % N_TYPES];
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
    if (!m)
        return 0;                       /* rejected: fine, as long as nothing broke */
    has_unknown = false;
    walk(m, 0);

    /* Round trip: what we decoded packs to bytes that decode to the same packed bytes. */
    size_t len1 = 0, len2 = 0;
    uint8_t *p1 = client_pack(m, &len1);
    FUZZ_ASSERT(p1);
    /* Unknown fields are kept as protobuf-c read them (even field number 0, which a strict
     * decoder would refuse), so only messages without any are required to be stable. */
    ProtobufCMessage *m2 = protobuf_c_message_unpack(d, NULL, len1, p1);
    FUZZ_ASSERT(m2 || has_unknown);
    if (m2) {
        uint8_t *p2 = client_pack(m2, &len2);
        FUZZ_ASSERT(p2);
        FUZZ_ASSERT(has_unknown || (len1 == len2 && memcmp(p1, p2, len1) == 0));
        free(p2);
        protobuf_c_message_free_unpacked(m2, NULL);
    }
    free(p1);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

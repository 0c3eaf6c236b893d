/* values.c — the value store: refcounted immutable blobs hung on file nodes, bounded by the
 * byte budget with least-recently-used eviction, and the fetch of a value that is not held
 * (one Range of the key, made with no lock held). */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* glibc's defaults make a bounded value store unbounded in practice: values freed by eviction
 * stay in the heap (the mmap threshold grows to 32 MiB after the first big value is freed) and
 * every FUSE worker thread gets its own arena holding its own freed fetches. Measured on 50,000
 * keys / 240 MiB with value_cache=64M: RSS 215 MiB after one grep -r with the defaults, 117 MiB
 * with these. Values of 64 KiB and more are then their own mappings, returned on free. Set once,
 * before main(), for the process that links the cache (the daemon and its tests). */
__attribute__((constructor)) static void values_malloc_tune(void)
{
    mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    mallopt(M_ARENA_MAX, 2);
}

cache_value *values_new(const void *data, size_t len, int64_t mod_rev)
{
    cache_value *v = malloc(sizeof(*v) + len + 1);
    if (!v)
        return NULL;
    v->len = len;
    v->mod_revision = mod_rev;
    v->refs = 1;
    if (len)
        memcpy(v->data, data, len);
    v->data[len] = 0;
    return v;
}

cache_value *cache_value_get(cache_value *v)
{
    if (v)
        __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
    return v;
}

void cache_value_put(cache_value *v)
{
    if (v && __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(v);
}

static size_t cost(const cache_value *v)
{
    return sizeof(*v) + v->len;
}

static void lru_unlink(cache *c, node *n)
{
    if (n->lru_prev)
        n->lru_prev->lru_next = n->lru_next;
    else if (c->lru_head == n)
        c->lru_head = n->lru_next;
    if (n->lru_next)
        n->lru_next->lru_prev = n->lru_prev;
    else if (c->lru_tail == n)
        c->lru_tail = n->lru_prev;
    n->lru_prev = n->lru_next = NULL;
}

static void lru_push_head(cache *c, node *n)
{
    n->lru_prev = NULL;
    n->lru_next = c->lru_head;
    if (c->lru_head)
        c->lru_head->lru_prev = n;
    c->lru_head = n;
    if (!c->lru_tail)
        c->lru_tail = n;
}

void values_drop_locked(cache *c, node *n)
{
    if (!n->val)
        return;
    c->val_bytes -= cost(n->val);
    lru_unlink(c, n);
    cache_value_put(n->val);
    n->val = NULL;
}

void values_touch_locked(cache *c, node *n)
{
    if (n->val && c->lru_head != n) {
        lru_unlink(c, n);
        lru_push_head(c, n);
    }
}

/* Takes over the caller's reference to v. Without may_evict (initial load) a value that does
 * not fit is simply not kept; otherwise older values make room. A value larger than the whole
 * budget is never kept (readers get it, the store does not). */
void values_install_locked(cache *c, node *n, cache_value *v, bool may_evict)
{
    values_drop_locked(c, n);
    if (!v)
        return;
    size_t need = cost(v);
    if (need > c->budget || (!may_evict && c->val_bytes + need > c->budget)) {
        cache_value_put(v);
        return;
    }
    while (c->val_bytes + need > c->budget && c->lru_tail)
        values_drop_locked(c, c->lru_tail);
    n->val = v;
    c->val_bytes += need;
    lru_push_head(c, n);
}

int values_fetch(cache *c, const uint8_t *key, size_t len, int64_t revision, cache_value **out,
                 int64_t *lease)
{
    etcd_range_req req = { .key = key, .key_len = len, .revision = revision };
    etcd_range_resp resp = {0};
    etcd_error err = {0};
    *out = NULL;
    int rc = etcd_range(c->cfg.client, &req, &resp, &err);
    if (rc < 0)
        return cache_err("read", rc, &err);
    if (resp.n_kvs) {
        etcd_kv *kv = &resp.kvs[0];
        *out = values_new(kv->value, kv->value_len, kv->mod_revision);
        if (lease)
            *lease = kv->lease;
        if (!*out)
            rc = -ENOMEM;
    }
    etcd_range_resp_free(&resp);
    return rc;
}

size_t cache_test_value_bytes(cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t b = c->val_bytes;
    pthread_mutex_unlock(&c->lock);
    return b;
}

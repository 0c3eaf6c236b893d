/* cache_test.c — the cache against a real etcd: paged load, names, values, remote changes
 * through the watch, local writes (read-your-writes, silent echo), twins, value eviction,
 * resync after compaction, O_EXCL and conflict checks, renames. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../cache/cache.h"
#include "../../cache/internal.h"
#include "check.h"
#include "etcd_fixture.h"

#define PFX "/t"

static etcd_fixture *fx;
static etcd_client *cli;

/* ---- listener: records every event --------------------------------------------------------- */

typedef struct rec {
    int type;
    uint64_t ino, parent;
    char name[300];
    bool is_dir, remote;
    int64_t rev;
} rec;

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static rec recs[100000];
static size_t n_recs;

static void listener(void *arg, const cache_event *ev)
{
    (void)arg;
    pthread_mutex_lock(&rec_lock);
    if (n_recs < sizeof(recs) / sizeof(recs[0])) {
        rec *r = &recs[n_recs++];
        r->type = ev->type;
        r->ino = ev->ino;
        r->parent = ev->parent;
        snprintf(r->name, sizeof(r->name), "%s", ev->name);
        r->is_dir = ev->is_dir;
        r->remote = ev->remote;
        r->rev = ev->mod_revision;
    }
    pthread_mutex_unlock(&rec_lock);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits (≤ 2 s) for an event; ino/parent 0 and name NULL match anything. */
static bool wait_event(int type, uint64_t parent, const char *name, int remote, uint64_t ino)
{
    double end = now_s() + 2.0;
    do {
        pthread_mutex_lock(&rec_lock);
        for (size_t i = 0; i < n_recs; i++) {
            rec *r = &recs[i];
            if (r->type == type && (!parent || r->parent == parent) &&
                (!name || strcmp(r->name, name) == 0) && (remote < 0 || r->remote == remote) &&
                (!ino || r->ino == ino)) {
                pthread_mutex_unlock(&rec_lock);
                return true;
            }
        }
        pthread_mutex_unlock(&rec_lock);
        usleep(5000);
    } while (now_s() < end);
    return false;
}

static void clear_events(void)
{
    pthread_mutex_lock(&rec_lock);
    n_recs = 0;
    pthread_mutex_unlock(&rec_lock);
}

static size_t count_events(int type, uint64_t ino, int remote)
{
    size_t k = 0;
    pthread_mutex_lock(&rec_lock);
    for (size_t i = 0; i < n_recs; i++)
        if (recs[i].type == type && recs[i].ino == ino && (remote < 0 || recs[i].remote == remote))
            k++;
    pthread_mutex_unlock(&rec_lock);
    return k;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static int put(const char *key, const char *val, int64_t *rev)
{
    etcd_put_resp r = {0};
    etcd_error err = {0};
    int rc = etcd_put(cli, key, strlen(key), val, strlen(val), NULL, &r, &err);
    if (rc == 0) {
        if (rev)
            *rev = r.header.revision;
        etcd_put_resp_free(&r);
    } else {
        DIAG("put %s: %s", key, err.msg);
    }
    return rc;
}

static int del(const char *key, int64_t *rev)
{
    etcd_delete_resp r = {0};
    etcd_error err = {0};
    int rc = etcd_delete(cli, key, strlen(key), NULL, 0, false, &r, &err);
    if (rc == 0) {
        if (rev)
            *rev = r.header.revision;
        etcd_delete_resp_free(&r);
    }
    return rc;
}

/* The value of a key in etcd, malloc'd, or NULL when absent. */
static char *get(const char *key)
{
    etcd_range_req req = { .key = key, .key_len = strlen(key) };
    etcd_range_resp r = {0};
    etcd_error err = {0};
    if (etcd_range(cli, &req, &r, &err) < 0)
        return NULL;
    char *v = NULL;
    if (r.n_kvs) {
        v = malloc(r.kvs[0].value_len + 1);
        memcpy(v, r.kvs[0].value, r.kvs[0].value_len);
        v[r.kvs[0].value_len] = 0;
    }
    etcd_range_resp_free(&r);
    return v;
}

/* Looks a path up ("a/b/c"), dropping the references again; 0 = not found. */
static uint64_t walk(cache *c, const char *path, cache_attr *out)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", path);
    uint64_t ino = CACHE_ROOT_INO;
    cache_attr a = { .ino = ino, .is_dir = true };
    for (char *s, *p = strtok_r(buf, "/", &s); p; p = strtok_r(NULL, "/", &s)) {
        if (cache_lookup(c, ino, p, &a) < 0)
            return 0;
        cache_forget(c, a.ino, 1);
        ino = a.ino;
    }
    if (out)
        *out = a;
    return ino;
}

/* Waits (≤ 2 s) until path exists (want=true) or not. */
static bool wait_path(cache *c, const char *path, bool want)
{
    double end = now_s() + 2.0;
    do {
        if ((walk(c, path, NULL) != 0) == want)
            return true;
        usleep(5000);
    } while (now_s() < end);
    return false;
}

static bool value_is(cache *c, uint64_t ino, const char *want)
{
    cache_value *v = NULL;
    int rc = cache_read(c, ino, &v);
    bool ok = rc == 0 && v->len == strlen(want) && memcmp(v->data, want, v->len) == 0;
    if (!ok)
        DIAG("read ino %llu: rc %d value '%.*s' want '%s'", (unsigned long long)ino, rc,
             v ? (int)v->len : 0, v ? (const char *)v->data : "", want);
    cache_value_put(v);
    return ok;
}

static bool wait_value(cache *c, const char *path, const char *want)
{
    double end = now_s() + 2.0;
    do {
        uint64_t ino = walk(c, path, NULL);
        cache_value *v = NULL;
        if (ino && cache_read(c, ino, &v) == 0) {
            bool ok = v->len == strlen(want) && memcmp(v->data, want, v->len) == 0;
            cache_value_put(v);
            if (ok)
                return true;
        }
        usleep(5000);
    } while (now_s() < end);
    return false;
}

static bool wait_revision(cache *c, int64_t rev)
{
    double end = now_s() + 2.0;
    while (cache_revision(c) < rev && now_s() < end)
        usleep(2000);
    return cache_revision(c) >= rev;
}

static cache *open_cache(size_t budget, bool conflict_fail)
{
    cache_config cfg = { .client = cli, .prefix = (const uint8_t *)PFX, .prefix_len = strlen(PFX),
                         .value_budget = budget, .page_keys = 100,
                         .conflict_fail = conflict_fail };
    cache *c = NULL;
    etcd_error err = {0};
    int rc = cache_open(&cfg, &c, &err);
    if (rc < 0)
        DIAG("cache_open: %d %s", rc, err.msg);
    return c;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void populate(void)
{
    /* 5,000 keys: 50 directories of 100, in Txns of 100 puts */
    char keys[100][32], vals[100][32];
    etcd_op ops[100];
    int bad = 0;
    for (int d = 0; d < 50; d++) {
        for (int k = 0; k < 100; k++) {
            snprintf(keys[k], sizeof(keys[k]), PFX "/d%02d/k%03d", d, k);
            snprintf(vals[k], sizeof(vals[k]), "v-%d-%d", d, k);
            ops[k] = (etcd_op){ .type = ETCD_OP_PUT, .key = keys[k], .key_len = strlen(keys[k]),
                                .value = vals[k], .value_len = strlen(vals[k]) };
        }
        etcd_txn_resp r = {0};
        etcd_error err = {0};
        if (etcd_txn(cli, NULL, 0, ops, 100, NULL, 0, 0, &r, &err) < 0) {
            DIAG("txn: %s", err.msg);
            bad++;
        } else {
            etcd_txn_resp_free(&r);
        }
    }
    CHECK(bad == 0, "5,000 keys written");
}

static void test_load(cache *c)
{
    cache_dirent *e = NULL;
    size_t n = 0;
    CHECK(cache_revision(c) > 0, "revision after load: %lld", (long long)cache_revision(c));
    int rc = cache_readdir(c, CACHE_ROOT_INO, &e, &n);
    bool sorted = true;
    for (size_t i = 1; i < n; i++)
        sorted = sorted && strcmp(e[i - 1].name, e[i].name) < 0;
    CHECK(rc == 0 && n == 50 && sorted && e[0].attr.is_dir && strcmp(e[0].name, "d00") == 0,
          "root lists 50 sorted directories (n=%zu)", n);
    CHECK(n && e[0].attr.nlink == 2, "a leaf directory has nlink 2");
    cache_dirents_free(e, n);
    int found = 0, right = 0;
    for (int d = 0; d < 50; d++) {
        for (int k = 0; k < 100; k++) {
            char p[64], v[32];
            snprintf(p, sizeof(p), "d%02d/k%03d", d, k);
            snprintf(v, sizeof(v), "v-%d-%d", d, k);
            cache_attr a;
            uint64_t ino = walk(c, p, &a);
            if (ino && !a.is_dir && a.size == strlen(v) && a.mod_revision > 0) {
                found++;
                if ((k % 10 == 0) && value_is(c, ino, v))
                    right++;
            }
        }
    }
    CHECK(found == 5000, "every key reachable by lookup (%d)", found);
    CHECK(right == 500, "values read back (%d/500)", right);
    uint64_t d7 = walk(c, "d07", NULL);
    rc = cache_readdir(c, d7, &e, &n);
    CHECK(rc == 0 && n == 100 && strcmp(e[99].name, "k099") == 0 && e[5].attr.size == 5,
          "readdir of a 100-entry directory");
    cache_dirents_free(e, n);
    cache_attr a;
    CHECK(cache_lookup(c, CACHE_ROOT_INO, "nope", &a) == -ENOENT, "lookup of a missing name");
    CHECK(cache_readdir(c, walk(c, "d07/k001", NULL), &e, &n) == -ENOTDIR, "readdir of a file");
    uint8_t *key = NULL;
    size_t klen = 0;
    rc = cache_key(c, walk(c, "d07/k001", NULL), &key, &klen);
    CHECK(rc == 0 && klen == strlen(PFX "/d07/k001") && memcmp(key, PFX "/d07/k001", klen) == 0,
          "cache_key gives the full key");
    free(key);
}

static void test_remote(cache *c)
{
    clear_events();
    uint64_t d3 = walk(c, "d03", NULL);
    put(PFX "/d03/new", "fresh", NULL);
    CHECK(wait_event(CACHE_EV_CREATED, d3, "new", 1, 0), "remote put: CREATED remote event");
    CHECK(wait_value(c, "d03/new", "fresh"), "remote put reaches the tree");
    uint64_t ino = walk(c, "d03/k005", NULL);
    put(PFX "/d03/k005", "changed", NULL);
    CHECK(wait_event(CACHE_EV_MODIFIED, 0, NULL, 1, ino), "remote modify: MODIFIED remote");
    CHECK(wait_value(c, "d03/k005", "changed"), "remote modify: new value read");
    del(PFX "/d03/k006", NULL);
    CHECK(wait_event(CACHE_EV_DELETED, d3, "k006", 1, 0) && walk(c, "d03/k006", NULL) == 0,
          "remote delete: DELETED and gone");
    put(PFX "/brand/new/deep", "x", NULL);
    CHECK(wait_event(CACHE_EV_CREATED, CACHE_ROOT_INO, "brand", 1, 0) &&
          wait_value(c, "brand/new/deep", "x"), "remote new prefix: directories appear");
    uint64_t brand = walk(c, "brand", NULL);
    del(PFX "/brand/new/deep", NULL);
    CHECK(wait_event(CACHE_EV_DELETED, CACHE_ROOT_INO, "brand", 1, brand) &&
          walk(c, "brand", NULL) == 0, "last key gone: implicit directories vanish");
    put(PFX "/x%y\n", "esc", NULL);
    CHECK(wait_value(c, "x%25y%0A", "esc"), "an escaped key is reachable by its name");
}

static void test_local(cache *c)
{
    clear_events();
    uint64_t d1 = walk(c, "d01", NULL);
    cache_attr a, b;
    int rc = cache_create(c, d1, "mine", 0, &a);
    CHECK(rc == 0 && !a.is_dir && a.size == 0 && a.mod_revision == 0, "create: a local file");
    CHECK(get(PFX "/d01/mine") == NULL, "create alone writes nothing to etcd");
    CHECK(value_is(c, a.ino, ""), "a local file reads empty");
    rc = cache_write(c, a.ino, "hello", 5, 0, &b);
    char *v = get(PFX "/d01/mine");
    CHECK(rc == 0 && v && strcmp(v, "hello") == 0, "first write puts the key");
    free(v);
    CHECK(b.mod_revision > 0 && b.version == 1 && b.size == 5 && b.ino == a.ino,
          "attributes after the write (rev %lld)", (long long)b.mod_revision);
    CHECK(value_is(c, a.ino, "hello"), "read-your-writes");
    rc = cache_write(c, a.ino, "hello again", 11, 0, &b);
    CHECK(rc == 0 && b.version == 2 && value_is(c, a.ino, "hello again"), "second write");
    CHECK(wait_revision(c, b.mod_revision), "the watch reaches the write's revision");
    usleep(50000);
    CHECK(count_events(CACHE_EV_MODIFIED, a.ino, 1) == 0 && count_events(CACHE_EV_CREATED, a.ino, 1) == 0,
          "the echo of a local write is silent");
    CHECK(count_events(CACHE_EV_MODIFIED, a.ino, 0) == 2, "local writes reported remote=false");
    cache_getattr(c, a.ino, &b);
    CHECK(b.version == 2 && b.create_revision > 0, "echo leaves exact metadata");

    /* lease kept by a write */
    int64_t lease = 0, ttl = 0;
    etcd_error err = {0};
    etcd_lease_grant(cli, 60, 0, &lease, &ttl, &err);
    etcd_put_opts po = { .lease = lease };
    etcd_put(cli, PFX "/d01/leased", strlen(PFX "/d01/leased"), "l", 1, &po, NULL, &err);
    CHECK(wait_path(c, "d01/leased", true), "leased key appears");
    uint64_t li = walk(c, "d01/leased", &a);
    rc = cache_write(c, li, "l2", 2, 0, &b);
    CHECK(rc == 0 && b.lease == lease, "a write keeps the key's lease");
    etcd_range_req rq = { .key = PFX "/d01/leased", .key_len = strlen(PFX "/d01/leased") };
    etcd_range_resp rr = {0};
    etcd_range(cli, &rq, &rr, &err);
    CHECK(rr.n_kvs == 1 && rr.kvs[0].lease == lease, "lease kept in etcd");
    etcd_range_resp_free(&rr);

    /* unlink */
    rc = cache_unlink(c, d1, "mine");
    CHECK(rc == 0 && get(PFX "/d01/mine") == NULL && walk(c, "d01/mine", NULL) == 0,
          "unlink deletes the key");
    CHECK(cache_unlink(c, d1, "mine") == -ENOENT, "unlink twice: ENOENT");
    cache_create(c, d1, "tmp", 0, &a);
    CHECK(cache_unlink(c, d1, "tmp") == 0 && walk(c, "d01/tmp", NULL) == 0,
          "unlink of a never-saved file");
    CHECK(cache_unlink(c, CACHE_ROOT_INO, "d01") == -EISDIR, "unlink of a directory: EISDIR");

    /* deleted but still open (looked up): last value readable */
    uint64_t k9 = walk(c, "d01/k009", NULL);
    cache_ref(c, k9, 1);
    cache_unlink(c, d1, "k009");
    CHECK(value_is(c, k9, "v-1-9") && cache_getattr(c, k9, &a) == 0 && a.nlink == 0,
          "an unlinked file still held keeps its value");
    cache_forget(c, k9, 1);
    CHECK(cache_getattr(c, k9, &a) == -ENOENT, "forget frees it");

    /* mkdir / rmdir, and a local removal keeps the directory */
    rc = cache_mkdir(c, CACHE_ROOT_INO, "made", &a);
    CHECK(rc == 0 && a.is_dir && get(PFX "/made") == NULL, "mkdir: in memory");
    CHECK(cache_mkdir(c, CACHE_ROOT_INO, "made", &a) == -EEXIST, "mkdir twice: EEXIST");
    uint64_t made = a.ino;
    cache_create(c, made, "f", 0, &b);
    cache_write(c, b.ino, "1", 1, 0, &b);
    CHECK(cache_rmdir(c, CACHE_ROOT_INO, "made") == -ENOTEMPTY, "rmdir non-empty: ENOTEMPTY");
    cache_unlink(c, made, "f");
    usleep(100000);
    CHECK(walk(c, "made", NULL) == made, "the directory stays after its last file is removed");
    CHECK(cache_rmdir(c, CACHE_ROOT_INO, "made") == 0 && walk(c, "made", NULL) == 0, "rmdir");
    CHECK(cache_create(c, CACHE_ROOT_INO, "d02", 0, &a) == -EISDIR, "create over a dir: EISDIR");
    CHECK(cache_create(c, CACHE_ROOT_INO, "bad/name", 0, &a) == -EINVAL ||
          cache_create(c, CACHE_ROOT_INO, "bad/name", 0, &a) == -EINVAL,
          "create of a non-canonical name: EINVAL");
    char longname[300];
    memset(longname, 'a', 299);
    longname[299] = 0;
    CHECK(cache_create(c, CACHE_ROOT_INO, longname, 0, &a) == -ENAMETOOLONG, "ENAMETOOLONG");
}

static int keys_with(const char *prefix)
{
    size_t el;
    uint8_t *end = etcd_prefix_end(prefix, strlen(prefix), &el);
    etcd_range_req req = { .key = prefix, .key_len = strlen(prefix), .range_end = end,
                           .range_end_len = el, .count_only = true };
    etcd_range_resp r = {0};
    etcd_error err = {0};
    int n = etcd_range(cli, &req, &r, &err) == 0 ? (int)r.count : -1;
    etcd_range_resp_free(&r);
    free(end);
    return n;
}

static void test_twins(cache *c)
{
    clear_events();
    put(PFX "/tw", "file", NULL);
    CHECK(wait_value(c, "tw", "file"), "file tw");
    uint64_t f = walk(c, "tw", NULL);
    put(PFX "/tw/child", "c", NULL);
    CHECK(wait_value(c, "tw/child", "c"), "tw becomes a directory too");
    cache_attr a;
    uint64_t t = walk(c, "tw%=", &a);
    CHECK(t == f && !a.is_dir && value_is(c, t, "file"), "file shown as tw%%= with its ino");
    CHECK(wait_event(CACHE_EV_DELETED, CACHE_ROOT_INO, "tw", -1, f) &&
          wait_event(CACHE_EV_CREATED, CACHE_ROOT_INO, "tw%=", -1, f), "twin rename events");
    cache_dirent *e;
    size_t n;
    cache_readdir(c, CACHE_ROOT_INO, &e, &n);
    int both = 0;
    for (size_t i = 0; i < n; i++)
        both += (!strcmp(e[i].name, "tw") && e[i].attr.is_dir) ||
                (!strcmp(e[i].name, "tw%=") && !e[i].attr.is_dir);
    cache_dirents_free(e, n);
    CHECK(both == 2, "readdir lists both");
    clear_events();
    del(PFX "/tw/child", NULL);
    CHECK(wait_event(CACHE_EV_CREATED, CACHE_ROOT_INO, "tw", -1, f), "dir gone: file named tw again");
    CHECK(walk(c, "tw", &a) == f && !a.is_dir, "same ino");
    /* twin made through the mount */
    cache_attr d;
    int rc = cache_mkdir(c, CACHE_ROOT_INO, "tw", &d);
    CHECK(rc == -EEXIST, "mkdir over a file: EEXIST");
    put(PFX "/tw/x", "1", NULL);
    CHECK(wait_path(c, "tw/x", true), "dir again");
    uint64_t twd = walk(c, "tw", NULL);
    rc = cache_create(c, CACHE_ROOT_INO, "tw%=", 0, &a);
    CHECK(rc == 0 && a.ino == f, "create of tw%%= opens the twin");
    rc = cache_write(c, f, "twin!", 5, 0, &a);
    char *v = get(PFX "/tw");
    CHECK(rc == 0 && v && !strcmp(v, "twin!"), "write through the twin name puts /tw");
    free(v);
    cache_create(c, twd, "y", 0, &a);
    rc = cache_create(c, CACHE_ROOT_INO, "zz%=", 0, &a);
    CHECK(rc == -EINVAL, "x%%= without a directory x: EINVAL");
    del(PFX "/tw", NULL);
    del(PFX "/tw/x", NULL);

    /* renames from and to twin names */
    uint64_t r = CACHE_ROOT_INO;
    put(PFX "/tr", "F", NULL);
    put(PFX "/tr/x", "X", NULL);
    CHECK(wait_path(c, "tr%=", true) && wait_path(c, "tr/x", true), "twin pair tr");
    uint64_t trf = walk(c, "tr%=", NULL);
    rc = cache_rename(c, r, "tr%=", r, "trf", 0);
    v = get(PFX "/trf");
    char *gone = get(PFX "/tr");
    CHECK(rc == 0 && v && !strcmp(v, "F") && !gone && walk(c, "trf", NULL) == trf &&
          walk(c, "tr/x", NULL) && walk(c, "tr%=", NULL) == 0, "rename of a twin file");
    free(v);
    free(gone);
    rc = cache_rename(c, r, "trf", r, "tr%=", 0);
    v = get(PFX "/tr");
    CHECK(rc == 0 && v && !strcmp(v, "F") && walk(c, "tr%=", NULL) == trf,
          "rename onto a twin name puts the directory's own key");
    free(v);
    rc = cache_rename(c, r, "tr", r, "tr2", 0);
    CHECK(rc == 0 && walk(c, "tr", NULL) == trf && walk(c, "tr2/x", NULL) &&
          keys_with(PFX "/tr2/") == 1, "directory leaves: its twin file is named tr again");
    del(PFX "/tr", NULL);
    del(PFX "/tr2/x", NULL);
}

static void test_excl_conflict(cache *c)
{
    uint64_t d2 = walk(c, "d02", NULL);
    cache_attr a;
    CHECK(cache_create(c, d2, "k001", CACHE_W_EXCL, &a) == -EEXIST, "excl create of a key: EEXIST");
    int rc = cache_create(c, d2, "ex", CACHE_W_EXCL, &a);
    CHECK(rc == 0, "excl create of a new name");
    put(PFX "/d02/ex", "theirs", NULL);
    CHECK(wait_event(CACHE_EV_MODIFIED, 0, NULL, 1, a.ino), "someone else creates the key");
    rc = cache_write(c, a.ino, "mine", 4, 0, NULL);
    char *v = get(PFX "/d02/ex");
    CHECK(rc == -EEXIST && v && !strcmp(v, "theirs"), "first write of the excl file: EEXIST");
    free(v);
    rc = cache_write(c, a.ino, "later", 5, 0, NULL);
    v = get(PFX "/d02/ex");
    CHECK(rc == 0 && v && !strcmp(v, "later"), "a later write of that file works");
    free(v);
    rc = cache_create(c, d2, "ex2", CACHE_W_EXCL, &a);
    rc = rc ? rc : cache_write(c, a.ino, "ok", 2, 0, NULL);
    CHECK(rc == 0, "excl create + write of a free key");

    cache *cf = open_cache(0, true);
    uint64_t ino = walk(cf, "d02/k002", &a);
    int64_t seen = a.mod_revision;
    put(PFX "/d02/k002", "remote", NULL);
    rc = cache_write(cf, ino, "local", 5, seen, NULL);
    v = get(PFX "/d02/k002");
    CHECK(rc == -EBUSY && v && !strcmp(v, "remote"), "conflict_fail: changed key → EBUSY");
    free(v);
    CHECK(wait_value(cf, "d02/k002", "remote"), "conflict: cache shows the remote value");
    walk(cf, "d02/k002", &a);
    rc = cache_write(cf, ino, "local", 5, a.mod_revision, NULL);
    CHECK(rc == 0, "conflict_fail: unchanged key → written");
    cache_close(cf);
}

static void test_eviction(void)
{
    cache *c = open_cache(2048, false);
    CHECK(c != NULL, "cache with a 2 KiB value budget");
    if (!c)
        return;
    CHECK(cache_test_value_bytes(c) <= 2048, "load respects the budget (%zu)",
          cache_test_value_bytes(c));
    int right = 0;
    for (int d = 10; d < 20; d++) {
        for (int k = 0; k < 100; k++) {
            char p[32], v[32];
            snprintf(p, sizeof(p), "d%02d/k%03d", d, k);
            snprintf(v, sizeof(v), "v-%d-%d", d, k);
            right += value_is(c, walk(c, p, NULL), v);
        }
    }
    CHECK(right == 1000, "1000 values refetched correctly (%d)", right);
    CHECK(cache_test_value_bytes(c) <= 2048, "store stays in budget (%zu)",
          cache_test_value_bytes(c));
    cache_close(c);
}

/* 10,000 keys in one directory arriving through the watch, readdir cost, a bulk delete. */
static void test_big(cache *c)
{
    char keys[100][32];
    etcd_op ops[100];
    double t0 = now_s();
    for (int t = 0; t < 100; t++) {
        for (int k = 0; k < 100; k++) {
            snprintf(keys[k], sizeof(keys[k]), PFX "/big/f%05d", t * 100 + k);
            ops[k] = (etcd_op){ .type = ETCD_OP_PUT, .key = keys[k], .key_len = strlen(keys[k]),
                                .value = "x", .value_len = 1 };
        }
        etcd_txn_resp r = {0};
        etcd_error err = {0};
        if (etcd_txn(cli, NULL, 0, ops, 100, NULL, 0, 0, &r, &err) == 0)
            etcd_txn_resp_free(&r);
    }
    CHECK(wait_path(c, "big/f09999", true), "10,000 remote keys arrive (%.2f s)", now_s() - t0);
    uint64_t big = walk(c, "big", NULL);
    cache_dirent *e = NULL;
    size_t n = 0;
    t0 = now_s();
    int rc = cache_readdir(c, big, &e, &n);
    double t1 = now_s() - t0;
    bool sorted = true;
    for (size_t i = 1; i < n; i++)
        sorted = sorted && strcmp(e[i - 1].name, e[i].name) < 0;
    cache_dirents_free(e, n);
    t0 = now_s();
    cache_readdir(c, big, &e, &n);
    double t2 = now_s() - t0;
    cache_dirents_free(e, n);
    CHECK(rc == 0 && n == 10000 && sorted, "readdir of 10,000 entries sorted (%.1f ms, again %.1f ms)",
          t1 * 1e3, t2 * 1e3);
    clear_events();
    t0 = now_s();
    size_t el;
    uint8_t *end = etcd_prefix_end(PFX "/big/", 7, &el);
    etcd_delete_resp dr = {0};
    etcd_error err = {0};
    etcd_delete(cli, PFX "/big/", 7, end, el, false, &dr, &err);
    etcd_delete_resp_free(&dr);
    free(end);
    CHECK(wait_event(CACHE_EV_DELETED, CACHE_ROOT_INO, "big", 1, big) && walk(c, "big", NULL) == 0,
          "bulk delete of 10,000 keys applied (%.2f s)", now_s() - t0);
    size_t qmax = 0;
    cache_test_stats(c, NULL, &qmax);
    DIAG("watch queue high-water mark so far: %zu batches", qmax);
}

static void test_errors(cache *c)
{
    uint64_t ino = walk(c, "d08/k000", NULL);
    size_t len = 2 << 20;
    char *big = malloc(len);
    memset(big, 'z', len);
    int rc = cache_write(c, ino, big, len, 0, NULL);
    free(big);
    CHECK(rc == -EFBIG, "a value over etcd's request limit: EFBIG (%d)", rc);
    CHECK(value_is(c, ino, "v-8-0"), "the old value stays");
}

/* Every key in etcd is reachable with its value and revision; every file in the tree is a key
 * (local, unsaved files excepted). */
static int count_files(cache *c, uint64_t dir)
{
    cache_dirent *e = NULL;
    size_t n = 0;
    int k = 0;
    if (cache_readdir(c, dir, &e, &n) < 0)
        return -100000;
    for (size_t i = 0; i < n; i++)
        k += e[i].attr.is_dir ? count_files(c, e[i].attr.ino) : e[i].attr.mod_revision > 0;
    cache_dirents_free(e, n);
    return k;
}

static bool tree_matches_etcd(cache *c, int64_t *at)
{
    size_t el;
    uint8_t *end = etcd_prefix_end(PFX, strlen(PFX), &el);
    etcd_range_req req = { .key = PFX, .key_len = strlen(PFX), .range_end = end,
                           .range_end_len = el };
    etcd_range_resp r = {0};
    etcd_error err = {0};
    int rc = etcd_range(cli, &req, &r, &err);
    free(end);
    if (rc < 0)
        return false;
    *at = r.header.revision;
    if (!wait_revision(c, r.header.revision - 0) && cache_revision(c) < r.header.revision)
        DIAG("cache revision %lld < %lld (fine if the last changes were elsewhere)",
             (long long)cache_revision(c), (long long)r.header.revision);
    int bad = 0;
    for (size_t i = 0; i < r.n_kvs && bad < 5; i++) {
        etcd_kv *kv = &r.kvs[i];
        keypath_names p = {0};
        keypath_split(kv->key + strlen(PFX), kv->key_len - strlen(PFX), &p);
        uint64_t ino = CACHE_ROOT_INO;
        cache_attr a = {0};
        for (size_t j = 0; j < p.n && ino; j++) {
            if (cache_lookup(c, ino, p.names[j], &a) < 0) {
                /* a twin: the file is name%= beside the directory */
                char tw[300];
                snprintf(tw, sizeof(tw), "%s%%=", p.names[j]);
                if (j + 1 != p.n || cache_lookup(c, ino, tw, &a) < 0) {
                    ino = 0;
                    break;
                }
            } else if (j + 1 == p.n && a.is_dir) {
                cache_forget(c, a.ino, 1);
                char tw[300];
                snprintf(tw, sizeof(tw), "%s%%=", p.names[j]);
                if (cache_lookup(c, ino, tw, &a) < 0) {
                    ino = 0;
                    break;
                }
            }
            cache_forget(c, a.ino, 1);
            ino = a.ino;
        }
        keypath_names_free(&p);
        cache_value *v = NULL;
        if (!ino || a.mod_revision != kv->mod_revision || cache_read(c, ino, &v) < 0 ||
            v->len != kv->value_len || memcmp(v->data, kv->value, v->len) != 0) {
            DIAG("mismatch on %.*s (ino %llu rev %lld vs %lld)", (int)kv->key_len, kv->key,
                 (unsigned long long)ino, (long long)a.mod_revision, (long long)kv->mod_revision);
            bad++;
        }
        cache_value_put(v);
    }
    int files = count_files(c, CACHE_ROOT_INO);
    if (files != (int)r.n_kvs) {
        DIAG("tree has %d saved files, etcd %zu keys", files, r.n_kvs);
        bad++;
    }
    etcd_range_resp_free(&r);
    return bad == 0;
}

typedef struct worker {
    cache *c;
    int id, errors;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    cache *c = w->c;
    char dn[32];
    snprintf(dn, sizeof(dn), "w%d", w->id);
    cache_attr d, a;
    if (cache_mkdir(c, CACHE_ROOT_INO, dn, &d) < 0) {
        w->errors++;
        return NULL;
    }
    for (int i = 0; i < 40; i++) {
        char n1[32], n2[32], val[32];
        snprintf(n1, sizeof(n1), "f%d", i);
        snprintf(n2, sizeof(n2), "g%d", i);
        snprintf(val, sizeof(val), "%d-%d", w->id, i);
        if (cache_create(c, d.ino, n1, 0, &a) < 0 || cache_write(c, a.ino, val, strlen(val), 0, NULL) < 0)
            w->errors++;
        cache_forget(c, a.ino, 1);
        if (i % 3 == 0 && cache_rename(c, d.ino, n1, d.ino, n2, 0) < 0)
            w->errors++;
        if (i % 5 == 0 && cache_unlink(c, d.ino, i % 3 == 0 ? n2 : n1) < 0)
            w->errors++;
        if (i % 7 == 0) {
            char k[64];
            snprintf(k, sizeof(k), PFX "/w%d/r%d", w->id, i);
            put(k, "remote", NULL);
        }
    }
    return NULL;
}

static void test_stress(cache *c)
{
    worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){ .c = c, .id = i };
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < 30; i++) {
        char k[64], v[16];
        snprintf(k, sizeof(k), PFX "/d09/k%03d", i);
        snprintf(v, sizeof(v), "s%d", i);
        put(k, v, NULL);
    }
    int errors = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        errors += w[i].errors;
    }
    CHECK(errors == 0, "4 threads of create/write/rename/unlink with remote puts (%d errors)",
          errors);
    int64_t at;
    CHECK(tree_matches_etcd(c, &at), "tree equals etcd afterwards (at %lld)", (long long)at);
}

static void test_resync(cache *c)
{
    clear_events();
    uint64_t before;
    cache_test_stats(c, &before, NULL);
    cache_test_watch(c, false);
    int64_t rev = 0;
    uint64_t gone = walk(c, "d04/k001", NULL), mod = walk(c, "d04/k002", NULL);
    put(PFX "/d04/k002", "resynced", NULL);
    del(PFX "/d04/k001", NULL);
    put(PFX "/d04/born", "b", &rev);
    usleep(100000);
    CHECK(walk(c, "d04/born", NULL) == 0, "watch stopped: change not seen");
    etcd_error err = {0};
    CHECK(etcd_compact(cli, rev, false, &err) == 0, "compact at %lld", (long long)rev);
    cache_test_watch(c, true);      /* from an old revision: etcd cancels it as compacted */
    uint64_t after = before;
    double end = now_s() + 3;
    while (after == before && now_s() < end) {
        usleep(5000);
        cache_test_stats(c, &after, NULL);
    }
    CHECK(after == before + 1, "compaction → one resync");
    CHECK(wait_value(c, "d04/born", "b") && wait_value(c, "d04/k002", "resynced") &&
          walk(c, "d04/k001", NULL) == 0, "resync applied create, modify, delete");
    CHECK(wait_event(CACHE_EV_DELETED, 0, "k001", 1, gone) &&
          wait_event(CACHE_EV_MODIFIED, 0, NULL, 1, mod) &&
          wait_event(CACHE_EV_CREATED, 0, "born", 1, 0), "resync reported the differences");
    CHECK(cache_revision(c) >= rev, "revision after resync");
    put(PFX "/d04/after", "a", NULL);
    CHECK(wait_value(c, "d04/after", "a"), "the new watch delivers");
    int64_t at;
    CHECK(tree_matches_etcd(c, &at), "tree equals etcd after the resync");
}

static void test_rename(cache *c)
{
    clear_events();
    uint64_t d5 = walk(c, "d05", NULL), root = CACHE_ROOT_INO;
    uint64_t k0 = walk(c, "d05/k000", NULL);
    int rc = cache_rename(c, d5, "k000", d5, "renamed", 0);
    char *v = get(PFX "/d05/renamed"), *old = get(PFX "/d05/k000");
    CHECK(rc == 0 && v && !strcmp(v, "v-5-0") && !old, "file rename: one Txn moved the key");
    free(v);
    free(old);
    cache_attr a;
    CHECK(walk(c, "d05/renamed", &a) == k0 && walk(c, "d05/k000", NULL) == 0 &&
          value_is(c, k0, "v-5-0") && a.version == 1, "same ino under the new name");
    cache_mkdir(c, root, "newd", &a);
    rc = cache_rename(c, d5, "k001", a.ino, "moved", 0);
    v = get(PFX "/newd/moved");
    CHECK(rc == 0 && v && !strcmp(v, "v-5-1"), "rename into an in-memory directory");
    free(v);
    uint64_t k2 = walk(c, "d05/k002", NULL);
    rc = cache_rename(c, d5, "k002", d5, "k003", 0);
    v = get(PFX "/d05/k003");
    CHECK(rc == 0 && v && !strcmp(v, "v-5-2") && !get(PFX "/d05/k002") &&
          walk(c, "d05/k003", NULL) == k2, "rename over an existing file replaces it");
    free(v);
    CHECK(cache_rename(c, d5, "k004", d5, "k005", RENAME_NOREPLACE) == -EEXIST, "NOREPLACE: EEXIST");
    CHECK(cache_rename(c, d5, "k004", d5, "k005", RENAME_EXCHANGE) == -EINVAL, "EXCHANGE: EINVAL");
    CHECK(cache_rename(c, d5, "k004", root, "d06", 0) == -EISDIR, "file onto dir: EISDIR");
    CHECK(cache_rename(c, root, "d06", d5, "k004", 0) == -ENOTDIR, "dir onto file: ENOTDIR");
    CHECK(cache_rename(c, root, "d06", root, "d07", 0) == -ENOTEMPTY, "dir onto non-empty: ENOTEMPTY");
    CHECK(cache_rename(c, root, "d06", root, "d06x", 0) == -EXDEV, "100-key dir: EXDEV");
    CHECK(cache_rename(c, root, "d06", walk(c, "d06", NULL), "in", 0) == -EINVAL,
          "dir into itself: EINVAL");
    CHECK(cache_rename(c, d5, "nope", d5, "x", 0) == -ENOENT, "missing source: ENOENT");

    put(PFX "/small/a", "A", NULL);
    put(PFX "/small/sub/b", "B", NULL);
    put(PFX "/small/sub/c", "C", NULL);
    CHECK(wait_path(c, "small/sub/c", true), "small tree present");
    uint64_t sm = walk(c, "small", NULL), b = walk(c, "small/sub/b", NULL);
    rc = cache_rename(c, root, "small", root, "small2", 0);
    CHECK(rc == 0 && keys_with(PFX "/small/") == 0 && keys_with(PFX "/small2/") == 3,
          "directory rename: one Txn moved 3 keys");
    CHECK(walk(c, "small2", NULL) == sm && walk(c, "small2/sub/b", NULL) == b &&
          value_is(c, b, "B") && walk(c, "small", NULL) == 0, "inos kept, old name gone");
    uint8_t *key;
    size_t kl;
    cache_key(c, b, &key, &kl);
    CHECK(kl == strlen(PFX "/small2/sub/b") && !memcmp(key, PFX "/small2/sub/b", kl),
          "keys below follow the directory");
    free(key);
    cache_mkdir(c, root, "emptyd", &a);
    rc = cache_rename(c, root, "small2", root, "emptyd", 0);
    CHECK(rc == 0 && keys_with(PFX "/emptyd/") == 3 && walk(c, "emptyd/a", NULL),
          "directory rename over an empty directory");

    cache_attr l;
    cache_create(c, d5, "loc", 0, &l);
    rc = cache_rename(c, d5, "loc", d5, "loc2", 0);
    CHECK(rc == 0 && walk(c, "d05/loc2", NULL) == l.ino && !get(PFX "/d05/loc2"),
          "local file: moved in memory");
    rc = cache_rename(c, d5, "loc2", d5, "k007", 0);
    CHECK(rc == 0 && !get(PFX "/d05/k007") && walk(c, "d05/k007", NULL) == l.ino,
          "local file over a saved one: target key deleted");
    cache_write(c, l.ino, "w", 1, 0, NULL);
    v = get(PFX "/d05/k007");
    CHECK(v && !strcmp(v, "w"), "then its write puts the new key");
    free(v);

    int64_t lease = 0, ttl = 0;
    etcd_error err = {0};
    etcd_lease_grant(cli, 60, 0, &lease, &ttl, &err);
    etcd_put_opts po = { .lease = lease };
    etcd_put(cli, PFX "/d05/lz", strlen(PFX "/d05/lz"), "L", 1, &po, NULL, &err);
    CHECK(wait_path(c, "d05/lz", true), "leased key present");
    rc = cache_rename(c, d5, "lz", d5, "lz2", 0);
    etcd_range_req rq = { .key = PFX "/d05/lz2", .key_len = strlen(PFX "/d05/lz2") };
    etcd_range_resp rr = {0};
    etcd_range(cli, &rq, &rr, &err);
    CHECK(rc == 0 && rr.n_kvs == 1 && rr.kvs[0].lease == lease, "rename keeps the lease");
    int64_t rev = rr.header.revision;
    etcd_range_resp_free(&rr);

    /* the source changed behind the cache's back: the retry uses etcd's state */
    cache_test_watch(c, false);
    uint64_t k8 = walk(c, "d05/k008", NULL);
    put(PFX "/d05/k008", "newer", NULL);
    rc = cache_rename(c, d5, "k008", d5, "k008b", 0);
    v = get(PFX "/d05/k008b");
    CHECK(rc == 0 && v && !strcmp(v, "newer"), "rename of a stale source copies etcd's value");
    free(v);
    cache_test_watch(c, true);
    CHECK(value_is(c, k8, "newer") || wait_value(c, "d05/k008b", "newer"), "cache agrees");

    CHECK(wait_revision(c, rev), "watch caught up");
    usleep(100000);
    CHECK(count_events(CACHE_EV_CREATED, k0, 1) == 0 && count_events(CACHE_EV_DELETED, k0, 1) == 0 &&
          count_events(CACHE_EV_CREATED, b, 1) == 1 /* its remote put */, "rename echoes are silent");
}

int main(void)
{
    if (access("/usr/bin/etcd", X_OK) != 0)
        check_skip_all("no /usr/bin/etcd");
    fixture_opts fo = { .members = 1 };
    fx = fixture_start(&fo);
    CHECK(fx != NULL, "etcd started");
    if (!fx)
        return check_done();
    const char *ep[] = { fx->m[0].client_url };
    etcd_config ec = { .endpoints = ep, .n_endpoints = 1 };
    etcd_error err = {0};
    int rc = etcd_client_new(&ec, &cli, &err);
    CHECK(rc == 0, "client: %s", err.msg);
    if (rc == 0) {
        populate();
        cache *c = open_cache(0, false);
        CHECK(c != NULL, "cache_open (5,000 keys, pages of 100)");
        if (c) {
            cache_set_listener(c, listener, NULL);
            test_load(c);
            test_remote(c);
            test_local(c);
            test_twins(c);
            test_excl_conflict(c);
            test_eviction();
            test_rename(c);
            test_big(c);
            test_errors(c);
            test_stress(c);
            test_resync(c);
            size_t qmax = 0;
            cache_test_stats(c, NULL, &qmax);
            DIAG("watch queue high-water mark: %zu batches", qmax);
            cache_close(c);
        }
        etcd_client_free(cli);
    }
    fixture_stop(fx);
    return check_done();
}

/* internal.h — the cache's private structures: nodes, the hash indexes, the value store, the
 * sync queues, and the functions the cache's modules share (docs/CACHE.md has the design).
 *
 * THREADS
 *   - callers (FUSE workers, tests): every cache_* call; etcd requests are made with no lock held.
 *   - client loop thread: watch callbacks (sync_on_events / sync_on_cancel) only copy events
 *     into c->q (under c->qlock) and signal; they never take c->lock and never block.
 *   - sync thread (sync.c): pops the queue, applies events in order under c->lock, runs
 *     resyncs, and delivers the outbox to the listener with no lock held.
 * LOCK ORDER: c->lock (tree, inode table, values, outbox, tombstones) → c->qlock (incoming
 *   queue, flags, sync wake-up). Never take c->lock while holding c->qlock. Functions named
 *   *_locked expect c->lock held. cache_value refcounts are atomic (no lock). */
#ifndef ETCDFS_CACHE_INTERNAL_H
#define ETCDFS_CACHE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cache.h"
#include "keypath.h"

#define CACHE_TXN_MAX_OPS 128       /* etcd's default --max-txn-ops */
#define CACHE_TWIN_SUFFIX "%="
#define CACHE_OUTBOX_HELD_MAX 65536 /* events kept while no listener is set yet */

/* ---- generic hash map: (tag, bytes) → entry, chained ------------------------------------- */

typedef struct hent {
    struct hent *next;
    uint64_t hash, tag;
    void *val;
    int64_t num;
    size_t len;
    uint8_t key[];
} hent;

typedef struct hmap {
    hent **b;
    size_t nb, n;
} hmap;

void hmap_free(hmap *m);
hent *hmap_get(const hmap *m, uint64_t tag, const void *key, size_t len);
/* Inserts (or finds) the entry; NULL on ENOMEM. */
hent *hmap_put(hmap *m, uint64_t tag, const void *key, size_t len, void *val);
void hmap_del(hmap *m, uint64_t tag, const void *key, size_t len);
/* Calls fn for every entry; entries for which it returns true are removed. */
void hmap_sweep(hmap *m, bool (*fn)(hent *e, void *arg), void *arg);

/* ---- nodes ------------------------------------------------------------------------------- */

typedef struct node node;
struct node {
    uint64_t ino;
    uint64_t nlookup;
    node *parent;              /* NULL: root or unlinked */
    char *name;                /* display name in parent (a file twin ends in "%=") */
    bool is_dir, in_tree;
    /* dirs */
    bool explicit_dir;         /* mkdir'ed or kept by a local removal: stays until rmdir */
    node **kids;
    size_t n_kids, cap_kids, n_subdirs;
    bool sorted;
    /* files */
    bool local;                /* created here, not in etcd yet */
    bool excl;                 /* created with CACHE_W_EXCL and not saved yet */
    bool twin;                 /* name has the "%=" suffix */
    uint8_t *key;              /* full key (prefix included) */
    size_t key_len;
    int64_t create_rev, mod_rev, version, lease;
    int64_t del_rev;           /* revision of the delete that unlinked it (events only) */
    uint64_t size;
    uint64_t seen_gen;         /* resync mark */
    uint64_t mark;             /* rename plan mark */
    cache_value *val;          /* NULL: not loaded (fetched on read) */
    node *lru_prev, *lru_next;
    struct timespec mtime, ctime;
};

/* An event waiting for the listener (own copies of name and key). */
typedef struct outev {
    struct outev *next;
    cache_event ev;
} outev;

/* A watch response copied off the client loop. */
typedef struct qbatch {
    struct qbatch *next;
    int64_t revision;
    size_t n;
    etcd_event *evs;           /* keys and values point into the same allocation block */
} qbatch;

struct cache {
    cache_config cfg;
    uint8_t *prefix, *prefix_end;
    size_t prefix_len, prefix_end_len;

    pthread_mutex_t lock;
    node *root;
    hmap names;                /* (parent ino, display name) → node */
    hmap inos;                 /* (ino) → node, including unlinked nodes still looked up */
    hmap keys;                 /* (full key) → file node in the tree */
    hmap tombs;                /* (full key) → revision of a local delete not yet caught up */
    int64_t tomb_max;          /* highest revision in tombs: all purged once caught up */
    hmap inflight;             /* (full key) → number of local requests in flight on it */
    pthread_cond_t inflight_cond;  /* (with c->lock) an in-flight request was applied */
    uint64_t next_ino;
    int64_t revision;
    uint64_t gen, mark_seq;
    /* value store */
    size_t val_bytes, budget;
    node *lru_head, *lru_tail; /* head = most recently used */
    /* outbox */
    outev *out_head, *out_tail;
    size_t out_n;
    cache_event_fn listener;
    void *listener_arg;
    bool listener_set, quiet;

    /* sync */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    qbatch *q_head, *q_tail;
    size_t q_len, q_max;       /* queue length now / high-water mark (for measuring) */
    bool stop, need_resync, out_pending;
    pthread_t thread;
    bool thread_started;
    etcd_watch *watch;
    uint64_t resyncs;
    bool rewind;               /* (c->lock) this resync found etcd at an older revision than
                                * the cache (restored from a snapshot): replace, don't merge */
    int test_watch_req;        /* test hook: 1 stop the watch, 2 start it again */
};

/* tree.c */
node *tree_node_new_locked(cache *c, bool is_dir);
void tree_node_free_locked(cache *c, node *n);
node *tree_by_ino_locked(cache *c, uint64_t ino);
node *tree_child_locked(cache *c, node *dir, const char *name);
node *tree_find_file_locked(cache *c, node *dir, const char *base);
int tree_attach_locked(cache *c, node *dir, node *n, const char *base);
void tree_detach_locked(cache *c, node *n, bool remote);
void tree_remove_locked(cache *c, node *n, bool remote, bool keep_parent);
void tree_maybe_free_locked(cache *c, node *n);
void tree_fill_attr_locked(const node *n, cache_attr *a);
void tree_sort_locked(node *dir);
node *tree_file_for_key_locked(cache *c, const uint8_t *key, size_t len, bool create);
int tree_path_key_locked(cache *c, node *dir, const char *base, node *stop,
                         const char *const *tail, size_t n_tail, uint8_t **key, size_t *len);
int tree_check_name(const char *name, bool at_root, bool allow_twin, char *base);
bool tree_is_twin_name(const char *name);
void tree_set_key_locked(cache *c, node *n, uint8_t *key, size_t len);
void tree_now(struct timespec *ts);

/* values.c */
cache_value *values_new(const void *data, size_t len, int64_t mod_rev);
void values_install_locked(cache *c, node *n, cache_value *v, bool may_evict);
void values_drop_locked(cache *c, node *n);
void values_touch_locked(cache *c, node *n);
/* Fetches a key's value outside the lock (revision 0 = latest); *out NULL when absent. */
int values_fetch(cache *c, const uint8_t *key, size_t len, int64_t revision, cache_value **out,
                 int64_t *lease);

/* sync.c */
int sync_load(cache *c, bool initial, etcd_error *err);
int sync_watch_start(cache *c, etcd_error *err);
int sync_thread_start(cache *c);
void sync_thread_stop(cache *c);
void sync_emit_locked(cache *c, int type, node *n, node *parent, const char *name,
                      bool remote);
void sync_kick(cache *c);
void sync_queue_free(cache *c);
void sync_tomb_locked(cache *c, const uint8_t *key, size_t len, int64_t rev);
/* A local request on key is about to be sent / was answered and applied (or failed). The sync
 * thread holds back an event on such a key until then, so the echo finds the local state. */
void sync_inflight_add_locked(cache *c, const uint8_t *key, size_t len);
void sync_inflight_done_locked(cache *c, const uint8_t *key, size_t len);
/* Test hook: schedule a resync as if the watch had been compacted. */
void cache_test_force_resync(cache *c);
/* Test hook: stop the watch (on=false) or start it again from revision + 1 (on=true), on the
 * sync thread; returns once done. */
void cache_test_watch(cache *c, bool on);
/* Test hook: how many resyncs ran, the queue's high-water mark. */
void cache_test_stats(cache *c, uint64_t *resyncs, size_t *q_max);
/* Test hook: bytes of values held. */
size_t cache_test_value_bytes(cache *c);

/* cache.c */
int cache_err(const char *what, int rc, const etcd_error *err);

#endif

/* cache.h — the watch-driven cache of the mounted keyspace, and the only owner of "which keys
 * exist, at which revision". fs/ asks it for names, attributes and values and sends every write
 * through it; it never calls FUSE. Inode numbers are its own: ROOT is 1 (FUSE_ROOT_ID), stable for
 * a node's life, never reused while the kernel may hold them (lookup counts). */
#ifndef ETCDFS_CACHE_H
#define ETCDFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../client/etcd.h"

#define CACHE_ROOT_INO 1ULL

typedef struct cache cache;

typedef struct cache_config {
    etcd_client *client;
    const uint8_t *prefix;      /* mount root = this key prefix ("" = whole keyspace) */
    size_t prefix_len;
    size_t value_budget;        /* bytes of values kept in memory; 0 → 512 MiB */
    size_t page_keys;           /* initial load page size in keys; 0 → 1000 */
    int write_timeout_ms;       /* 0 → client default */
    bool conflict_fail;         /* writes compare on the mod_revision read (else overwrite) */
} cache_config;

/* Paged Range of the prefix at one revision, then one Watch from the next revision. Returns
 * only once the whole prefix is loaded and the watch is confirmed. */
int cache_open(const cache_config *cfg, cache **out, etcd_error *err);
void cache_close(cache *c);

/* Revision the cache reflects (every event up to it applied). */
int64_t cache_revision(cache *c);

typedef struct cache_attr {
    uint64_t ino;
    bool is_dir;
    uint64_t size;                        /* value length; dirs: 0 */
    uint32_t nlink;                       /* files 1; dirs 2 + subdirs */
    int64_t create_revision, mod_revision, version, lease; /* 0 for dirs and unsaved files */
    struct timespec mtime, ctime;         /* when the mount learnt of the last change */
} cache_attr;

/* ---- names ------------------------------------------------------------------------------ */

/* On success takes one lookup reference on the child (given back by cache_forget). Reserved
 * names (".cluster" at the root) are fs/'s business: the cache sees them as escaped keys.
 * -ENOENT, -ENAMETOOLONG, -EINVAL (a name that is not canonical under the escape). */
int cache_lookup(cache *c, uint64_t parent, const char *name, cache_attr *out);
/* Takes n more references (readdirplus entries, create replies). */
void cache_ref(cache *c, uint64_t ino, uint64_t n);
void cache_forget(cache *c, uint64_t ino, uint64_t nlookup);
int cache_getattr(cache *c, uint64_t ino, cache_attr *out);

typedef struct cache_dirent {
    char *name;
    cache_attr attr;
} cache_dirent;

/* A snapshot of a directory's entries (without "." and ".."), sorted by name, stable between
 * calls as long as nothing changes. Free with cache_dirents_free. -ENOTDIR, -ENOENT. */
int cache_readdir(cache *c, uint64_t dir, cache_dirent **ents, size_t *n);
void cache_dirents_free(cache_dirent *ents, size_t n);

/* The key a node stands for (for logs, xattrs, .cluster/events); malloc'd, caller frees. */
int cache_key(cache *c, uint64_t ino, uint8_t **key, size_t *key_len);

/* ---- values ----------------------------------------------------------------------------- */

/* Refcounted immutable bytes, shared between the cache and open files without copying. */
typedef struct cache_value {
    size_t len;
    int64_t mod_revision;
    /* private: */
    int refs;
    uint8_t data[];
} cache_value;

/* The current value (fetched from etcd when evicted from the store or never loaded). Caller
 * releases with cache_value_put. -EISDIR, -ENOENT, or a client error's errno. */
int cache_read(cache *c, uint64_t ino, cache_value **out);
cache_value *cache_value_get(cache_value *v);
void cache_value_put(cache_value *v);

/* ---- writes (each one etcd request; the local state changes only once etcd acknowledged) -- */

enum cache_write_flags {
    CACHE_W_EXCL = 1 << 0,      /* create: key must not exist (Txn create_revision == 0) */
};

/* A new file: a local node that becomes a key at its first cache_write. Used by create/mknod.
 * -EEXIST when excl and the name exists; -EISDIR when a directory has that name. Takes one
 * lookup reference. */
int cache_create(cache *c, uint64_t parent, const char *name, unsigned flags, cache_attr *out);

/* Put the whole value of a file: one Put (ignore_lease: a key keeps its lease), or a Txn when
 * the file was created with CACHE_W_EXCL (create_revision == 0) or expect_mod_rev > 0 and the
 * mount runs with conflict_fail (mod_revision == expect_mod_rev; -EBUSY if it changed).
 * Afterwards reads through the mount see this value or a newer one. */
int cache_write(cache *c, uint64_t ino, const void *data, size_t len, int64_t expect_mod_rev,
                cache_attr *out);

/* Directory that lives in memory until a key exists under it. -EEXIST. Takes a reference. */
int cache_mkdir(cache *c, uint64_t parent, const char *name, cache_attr *out);
/* Deletes the key (Delete). A local, never-saved file just disappears. -EISDIR, -ENOENT. */
int cache_unlink(cache *c, uint64_t parent, const char *name);
/* -ENOTEMPTY when any key or node is under it. */
int cache_rmdir(cache *c, uint64_t parent, const char *name);
/* File: one Txn (compare mod_revision of the source, put target with its value, delete source).
 * Directory: one Txn over every key below when it fits 128 ops, else -EXDEV.
 * flags: RENAME_NOREPLACE / RENAME_EXCHANGE (-EINVAL for exchange). */
int cache_rename(cache *c, uint64_t parent, const char *name, uint64_t newparent,
                 const char *newname, unsigned flags);
/* Extra cache_rename flags for fs/scratch.c (files that live only in memory); neither sends
 * anything to etcd. ADOPT: a local (unsaved) file takes the place of the target, and of its
 * key with the key's revision, lease and value when the target is saved (the caller has just
 * written the new value to the target). DETACH: the file becomes a local file under the new
 * name; its key stays in etcd as it is, but the cache forgets it until an event or a resync
 * brings it back (the caller writes the old name again next); with newname NULL the file
 * leaves the tree the same way (an unlink that leaves the key in etcd). */
enum cache_rename_flags {
    CACHE_RENAME_ADOPT = 1u << 16,
    CACHE_RENAME_DETACH = 1u << 17,
};

/* etcd's database size (Status of the member in use) for statfs; quota from the option. */
int cache_db_size(cache *c, int64_t *db_size);

/* ---- changes, for the kernel and for inotify ---------------------------------------------- */

enum cache_event_type {
    CACHE_EV_MODIFIED,   /* a file's value changed (ino) */
    CACHE_EV_CREATED,    /* a new entry (parent, name, ino, is_dir) */
    CACHE_EV_DELETED,    /* an entry went away (parent, name, ino, is_dir) */
};

typedef struct cache_event {
    int type;
    uint64_t ino, parent;
    const char *name;        /* entry name in parent (escaped form, as the mount shows it) */
    bool is_dir;
    bool remote;             /* made by another client (not acknowledged to this mount) */
    int64_t mod_revision;
    const uint8_t *key;      /* files: the key; dirs: NULL */
    size_t key_len;
} cache_event;

/* Called on the cache's sync thread after each change is applied, with no cache lock held;
 * may block briefly (queue), never call back into FUSE. Set before cache_open's watch starts
 * delivering (set it right after cache_open; events before that are not lost: they queue). */
typedef void (*cache_event_fn)(void *arg, const cache_event *ev);
void cache_set_listener(cache *c, cache_event_fn fn, void *arg);

#endif

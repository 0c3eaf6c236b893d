/* cache.c — the cache's life (open: load + watch + sync thread; close) and its read side:
 * lookup counts, getattr, readdir snapshots, keys, values (fetched when not held, guarded
 * against an older reply replacing newer state), revision and database size. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Logs a client error and turns it into the errno a file system returns. */
int cache_err(const char *what, int rc, const etcd_error *err)
{
    int code = rc < 0 ? -rc : rc;
    fprintf(stderr, "etcdfs: cache: %s failed: %s: %s\n", what, etcd_err_name(code),
            err && err->msg[0] ? err->msg : "-");
    return -etcd_err_errno(code);
}

static void cache_free(cache *c)
{
    sync_queue_free(c);
    /* every node, linked or not, is in the inode table */
    for (size_t i = 0; i < c->inos.nb; i++) {
        for (hent *e = c->inos.b[i]; e; e = e->next) {
            node *n = e->val;
            if (n->val)
                cache_value_put(n->val);
            free(n->name);
            free(n->key);
            free(n->kids);
            free(n);
        }
    }
    hmap_free(&c->inos);
    hmap_free(&c->names);
    hmap_free(&c->keys);
    hmap_free(&c->tombs);
    hmap_free(&c->inflight);
    free(c->prefix);
    free(c->prefix_end);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->qlock);
    pthread_cond_destroy(&c->qcond);
    pthread_cond_destroy(&c->inflight_cond);
    free(c);
}

static int cache_init(const cache_config *cfg, cache *c)
{
    c->cfg = *cfg;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->qlock, NULL);
    pthread_cond_init(&c->qcond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->inflight_cond, &ca);
    pthread_condattr_destroy(&ca);
    if (!c->cfg.value_budget)
        c->cfg.value_budget = 512u << 20;
    if (!c->cfg.page_keys)
        c->cfg.page_keys = 1000;
    c->budget = c->cfg.value_budget;
    c->prefix_len = cfg->prefix_len;
    c->prefix = malloc(cfg->prefix_len + 1);
    if (!c->prefix)
        return -ENOMEM;
    if (cfg->prefix_len)
        memcpy(c->prefix, cfg->prefix, cfg->prefix_len);
    c->cfg.prefix = c->prefix;
    c->prefix_end = etcd_prefix_end(cfg->prefix, cfg->prefix_len, &c->prefix_end_len);
    if (!c->prefix_end)
        return -ENOMEM;
    c->next_ino = CACHE_ROOT_INO;
    c->root = tree_node_new_locked(c, true);
    if (!c->root || !(c->root->name = strdup("")))
        return -ENOMEM;
    c->root->in_tree = true;
    return 0;
}

int cache_open(const cache_config *cfg, cache **out, etcd_error *err)
{
    *out = NULL;
    cache *c = calloc(1, sizeof(*c));
    if (!c)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    if (cache_init(cfg, c) < 0) {
        cache_free(c);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    int rc = sync_load(c, true, err);
    if (rc == 0)
        rc = sync_watch_start(c, err);
    if (rc == 0 && sync_thread_start(c) < 0)
        rc = etcd_error_set(err, ETCD_E_INTERNAL, -1, "cannot start the cache sync thread");
    if (rc < 0) {
        if (c->watch)
            etcd_watch_stop(c->watch);
        cache_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void cache_close(cache *c)
{
    if (!c)
        return;
    sync_thread_stop(c);
    if (c->watch)
        etcd_watch_stop(c->watch);
    c->watch = NULL;
    cache_free(c);
}

int64_t cache_revision(cache *c)
{
    pthread_mutex_lock(&c->lock);
    int64_t r = c->revision;
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* ---- names --------------------------------------------------------------------------------- */

static bool name_canonical(const char *name, bool at_root)
{
    char base[KEYPATH_NAME_MAX + 1];
    return tree_check_name(name, at_root, true, base) >= 0;
}

int cache_lookup(cache *c, uint64_t parent, const char *name, cache_attr *out)
{
    if (strlen(name) > KEYPATH_NAME_MAX)
        return -ENAMETOOLONG;
    pthread_mutex_lock(&c->lock);
    node *p = tree_by_ino_locked(c, parent);
    int rc = 0;
    if (!p)
        rc = -ENOENT;
    else if (!p->is_dir)
        rc = -ENOTDIR;
    else {
        node *n = tree_child_locked(c, p, name);
        if (n) {
            n->nlookup++;
            tree_fill_attr_locked(n, out);
        } else {
            rc = name_canonical(name, p == c->root) ? -ENOENT : -EINVAL;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void cache_ref(cache *c, uint64_t ino, uint64_t n)
{
    pthread_mutex_lock(&c->lock);
    node *nd = tree_by_ino_locked(c, ino);
    if (nd)
        nd->nlookup += n;
    pthread_mutex_unlock(&c->lock);
}

void cache_forget(cache *c, uint64_t ino, uint64_t nlookup)
{
    pthread_mutex_lock(&c->lock);
    node *n = tree_by_ino_locked(c, ino);
    if (n) {
        n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
        tree_maybe_free_locked(c, n);
    }
    pthread_mutex_unlock(&c->lock);
}

int cache_getattr(cache *c, uint64_t ino, cache_attr *out)
{
    pthread_mutex_lock(&c->lock);
    node *n = tree_by_ino_locked(c, ino);
    if (n)
        tree_fill_attr_locked(n, out);
    pthread_mutex_unlock(&c->lock);
    return n ? 0 : -ENOENT;
}

int cache_readdir(cache *c, uint64_t dir, cache_dirent **ents, size_t *n)
{
    *ents = NULL;
    *n = 0;
    pthread_mutex_lock(&c->lock);
    node *d = tree_by_ino_locked(c, dir);
    int rc = !d ? -ENOENT : !d->is_dir ? -ENOTDIR : 0;
    if (rc == 0 && d->n_kids) {
        tree_sort_locked(d);
        cache_dirent *e = calloc(d->n_kids, sizeof(*e));
        size_t i = 0;
        for (; e && i < d->n_kids; i++) {
            if (!(e[i].name = strdup(d->kids[i]->name)))
                break;
            tree_fill_attr_locked(d->kids[i], &e[i].attr);
        }
        if (!e || i < d->n_kids) {
            cache_dirents_free(e, i);
            rc = -ENOMEM;
        } else {
            *ents = e;
            *n = i;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void cache_dirents_free(cache_dirent *ents, size_t n)
{
    for (size_t i = 0; ents && i < n; i++)
        free(ents[i].name);
    free(ents);
}

int cache_key(cache *c, uint64_t ino, uint8_t **key, size_t *key_len)
{
    pthread_mutex_lock(&c->lock);
    node *n = tree_by_ino_locked(c, ino);
    int rc = 0;
    if (!n) {
        rc = -ENOENT;
    } else if (!n->is_dir) {
        *key = malloc(n->key_len + 1);
        if (*key) {
            memcpy(*key, n->key, n->key_len);
            (*key)[n->key_len] = 0;
            *key_len = n->key_len;
        } else {
            rc = -ENOMEM;
        }
    } else if (n == c->root) {
        *key = malloc(c->prefix_len + 1);
        if (*key) {
            memcpy(*key, c->prefix, c->prefix_len);
            (*key)[c->prefix_len] = 0;
            *key_len = c->prefix_len;
        } else {
            rc = -ENOMEM;
        }
    } else if (!n->in_tree) {
        rc = -ENOENT;
    } else {
        /* a directory: the key of its path, i.e. the prefix its keys share */
        rc = tree_path_key_locked(c, n->parent, n->name, NULL, NULL, 0, key, key_len);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* ---- values -------------------------------------------------------------------------------- */

/* The value held or, for a local file, an empty one. 1: *out set; 0: must be fetched. */
static int read_held_locked(cache *c, node *n, cache_value **out)
{
    if (n->local) {
        *out = values_new(NULL, 0, 0);
        return *out ? 1 : -ENOMEM;
    }
    if (n->val) {
        *out = cache_value_get(n->val);
        values_touch_locked(c, n);
        return 1;
    }
    return 0;
}

/* A fetched value v (or NULL: key absent at that revision). Installed only when it is the
 * revision the node holds; a newer one is returned as is (the watch brings the node there). */
static int read_settle_locked(cache *c, node *n, cache_value *v, cache_value **out)
{
    int rc = read_held_locked(c, n, out);
    if (rc != 0) {
        cache_value_put(v);
        return rc;
    }
    if (v && v->mod_revision == n->mod_rev) {
        values_install_locked(c, n, cache_value_get(v), true);
        *out = v;
        return 1;
    }
    if (v && v->mod_revision > n->mod_rev && n->in_tree) {
        *out = v;
        return 1;
    }
    cache_value_put(v);
    return 0;
}

int cache_read(cache *c, uint64_t ino, cache_value **out)
{
    *out = NULL;
    for (int attempt = 0; attempt < 3; attempt++) {
        pthread_mutex_lock(&c->lock);
        node *n = tree_by_ino_locked(c, ino);
        int rc = !n ? -ENOENT : n->is_dir ? -EISDIR : read_held_locked(c, n, out);
        if (rc != 0) {
            pthread_mutex_unlock(&c->lock);
            return rc < 0 ? rc : 0;
        }
        size_t len = n->key_len;
        uint8_t *key = malloc(len + 1);
        if (!key) {
            pthread_mutex_unlock(&c->lock);
            return -ENOMEM;
        }
        memcpy(key, n->key, len);
        /* A node no longer in the tree (or a latest read that disagreed) is read at its own
         * revision: an open, deleted file keeps showing its last value. */
        int64_t rev = (n->in_tree && attempt == 0) ? 0 : n->mod_rev;
        pthread_mutex_unlock(&c->lock);

        cache_value *v = NULL;
        rc = values_fetch(c, key, len, rev, &v, NULL);
        free(key);
        if (rc < 0)
            return rc;
        pthread_mutex_lock(&c->lock);
        n = tree_by_ino_locked(c, ino);
        rc = n ? read_settle_locked(c, n, v, out) : (v ? (*out = v, 1) : -ENOENT);
        pthread_mutex_unlock(&c->lock);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    fprintf(stderr, "etcdfs: cache: read of ino %llu: value keeps changing or vanished\n",
            (unsigned long long)ino);
    return -EIO;
}

int cache_db_size(cache *c, int64_t *db_size)
{
    etcd_status_resp st;
    etcd_error err = {0};
    memset(&st, 0, sizeof(st));
    int rc = etcd_status(c->cfg.client, NULL, &st, &err);
    if (rc < 0)
        return cache_err("status", rc, &err);
    *db_size = st.db_size;
    return 0;
}

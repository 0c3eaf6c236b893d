/* write.c — changes made through the mount: create (a local node until its first write),
 * write (one Txn per whole value), unlink (Delete), mkdir/rmdir (directories in memory).
 * The tree changes only after etcd acknowledged, at the response's revision, so reads see
 * the write at once and its watch echo is a no-op. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The directory ino as a live directory, or an errno. */
static int dir_locked(cache *c, uint64_t ino, node **out)
{
    node *p = tree_by_ino_locked(c, ino);
    if (!p || (!p->in_tree && p != c->root))
        return -ENOENT;
    if (!p->is_dir)
        return -ENOTDIR;
    *out = p;
    return 0;
}

static int create_locked(cache *c, uint64_t parent, const char *name, unsigned flags,
                         cache_attr *out)
{
    node *p, *n;
    char base[KEYPATH_NAME_MAX + 1];
    int rc = dir_locked(c, parent, &p);
    if (rc < 0)
        return rc;
    int twin = tree_check_name(name, p == c->root, true, base);
    if (twin < 0)
        return twin;
    if ((n = tree_child_locked(c, p, name))) {
        if (n->is_dir)
            return -EISDIR;
        if (flags & CACHE_W_EXCL)
            return -EEXIST;
        n->nlookup++;
        tree_fill_attr_locked(n, out);
        return 0;
    }
    node *d = tree_child_locked(c, p, base);
    if (twin && (!d || !d->is_dir))
        return -EINVAL;     /* "x%=" names the value of a directory x only */
    uint8_t *key;
    size_t klen;
    if (tree_path_key_locked(c, p, base, NULL, NULL, 0, &key, &klen) < 0)
        return -EINVAL;
    if (!(n = tree_node_new_locked(c, false))) {
        free(key);
        return -ENOMEM;
    }
    n->key = key;
    n->key_len = klen;
    n->local = true;
    n->excl = (flags & CACHE_W_EXCL) != 0;
    if ((rc = tree_attach_locked(c, p, n, base)) < 0) {
        tree_node_free_locked(c, n);
        return rc;
    }
    sync_emit_locked(c, CACHE_EV_CREATED, n, p, n->name, false);
    n->nlookup++;
    tree_fill_attr_locked(n, out);
    return 0;
}

int cache_create(cache *c, uint64_t parent, const char *name, unsigned flags, cache_attr *out)
{
    pthread_mutex_lock(&c->lock);
    int rc = create_locked(c, parent, name, flags, out);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* ---- write --------------------------------------------------------------------------------- */

enum write_mode { W_EXISTING, W_NEW, W_EXCL, W_CONFLICT };

/* Applies an acknowledged write at revision rev (unless something newer is already there). */
static void write_apply_locked(cache *c, node *n, cache_value *v, bool existed, int64_t rev)
{
    if (rev <= n->mod_rev) {
        cache_value_put(v);
        return;
    }
    n->create_rev = existed && n->create_rev ? n->create_rev : rev;
    n->version = existed ? n->version + 1 : 1;
    if (!existed)
        n->lease = 0;
    n->mod_rev = rev;
    n->local = n->excl = false;
    n->size = v->len;
    tree_now(&n->mtime);
    n->ctime = n->mtime;
    v->mod_revision = rev;
    values_install_locked(c, n, v, true);
    sync_emit_locked(c, CACHE_EV_MODIFIED, n, n->parent, n->name, false);
}

/* One Txn with one branch, so the value travels once. An existing key keeps its lease
 * (ignore_lease), but etcd refuses ignore_lease on a missing key: W_EXISTING compares
 * version > 0, W_NEW version == 0, and the caller flips the guess when it was wrong. */
static int write_txn(cache *c, const uint8_t *key, size_t klen, const cache_value *v, int mode,
                     int64_t expect, etcd_txn_resp *resp, etcd_error *err)
{
    etcd_compare cmp = { .key = key, .key_len = klen, .result = ETCD_CMP_EQUAL };
    etcd_op put = { .type = ETCD_OP_PUT, .key = key, .key_len = klen, .value = v->data,
                    .value_len = v->len, .ignore_lease = true };
    if (mode == W_EXCL) {
        cmp.target = ETCD_CMP_CREATE;
        put.ignore_lease = false;
    } else if (mode == W_CONFLICT) {
        cmp.target = ETCD_CMP_MOD;
        cmp.number = expect;
    } else if (mode == W_NEW) {
        cmp.target = ETCD_CMP_VERSION;
        put.ignore_lease = false;
    } else {
        cmp.target = ETCD_CMP_VERSION;
        cmp.result = ETCD_CMP_GREATER;
    }
    return etcd_txn(c->cfg.client, &cmp, 1, &put, 1, NULL, 0, c->cfg.write_timeout_ms, resp,
                    err);
}

/* Sends the write; 0 with *rev and *existed, or an errno. */
static int write_send(cache *c, const uint8_t *key, size_t klen, const cache_value *v, int mode,
                      int64_t expect, int64_t *rev, bool *existed)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        etcd_txn_resp resp = {0};
        etcd_error err = {0};
        int rc = write_txn(c, key, klen, v, mode, expect, &resp, &err);
        if (rc < 0)
            return cache_err("write", rc, &err);
        bool ok = resp.succeeded;
        *rev = resp.header.revision;
        etcd_txn_resp_free(&resp);
        if (ok) {
            *existed = mode == W_EXISTING || mode == W_CONFLICT;
            return 0;
        }
        if (mode == W_EXCL)
            return -EEXIST;
        if (mode == W_CONFLICT) {
            fprintf(stderr, "etcdfs: cache: write of %.*s refused: changed since revision %lld\n",
                    (int)klen, (const char *)key, (long long)expect);
            return -EBUSY;
        }
        mode = mode == W_EXISTING ? W_NEW : W_EXISTING;  /* created/deleted meanwhile */
    }
    fprintf(stderr, "etcdfs: cache: write of %.*s: key keeps appearing and vanishing\n",
            (int)klen, (const char *)key);
    return -EIO;
}

/* Unlinked but still open: like any file system, the data goes nowhere. */
static void write_orphan_locked(node *n, cache *c, cache_value *v, cache_attr *out)
{
    values_install_locked(c, n, v, true);
    n->size = v->len;
    tree_now(&n->mtime);
    n->ctime = n->mtime;
    if (out)
        tree_fill_attr_locked(n, out);
}

int cache_write(cache *c, uint64_t ino, const void *data, size_t len, int64_t expect_mod_rev,
                cache_attr *out)
{
    cache_value *v = values_new(data, len, 0);     /* copied before taking the lock */
    if (!v)
        return -ENOMEM;
    pthread_mutex_lock(&c->lock);
    node *n = tree_by_ino_locked(c, ino);
    int rc = !n ? -ENOENT : n->is_dir ? -EISDIR : 0;
    if (rc == 0 && !n->in_tree) {
        write_orphan_locked(n, c, v, out);
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    uint8_t *key = NULL;
    size_t klen = 0;
    int mode = W_EXISTING;
    if (rc == 0) {
        klen = n->key_len;
        if ((key = malloc(klen + 1))) {
            memcpy(key, n->key, klen);
            sync_inflight_add_locked(c, key, klen);
        } else {
            rc = -ENOMEM;
        }
        mode = n->excl ? W_EXCL : (c->cfg.conflict_fail && expect_mod_rev > 0) ? W_CONFLICT
             : n->local ? W_NEW : W_EXISTING;
    }
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) {
        cache_value_put(v);
        return rc;
    }
    int64_t rev = 0;
    bool existed = false;
    rc = write_send(c, key, klen, v, mode, expect_mod_rev, &rev, &existed);
    pthread_mutex_lock(&c->lock);
    if (rc == -EEXIST && (n = tree_by_ino_locked(c, ino)))
        n->excl = false;    /* the O_EXCL create failed once; later opens write normally */
    n = rc == 0 ? tree_by_ino_locked(c, ino) : NULL;
    if (n) {
        write_apply_locked(c, n, v, existed, rev);
        if (out)
            tree_fill_attr_locked(n, out);
    } else {
        cache_value_put(v);
    }
    sync_inflight_done_locked(c, key, klen);
    pthread_mutex_unlock(&c->lock);
    free(key);
    return rc;
}

/* ---- unlink, mkdir, rmdir ------------------------------------------------------------------ */

int cache_unlink(cache *c, uint64_t parent, const char *name)
{
    pthread_mutex_lock(&c->lock);
    node *p, *n = NULL;
    int rc = dir_locked(c, parent, &p);
    if (rc == 0 && !(n = tree_child_locked(c, p, name)))
        rc = -ENOENT;
    if (rc == 0 && n->is_dir)
        rc = -EISDIR;
    if (rc == 0 && n->local) {
        tree_remove_locked(c, n, false, true);      /* never saved: nothing to tell etcd */
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    uint8_t *key = NULL;
    size_t klen = 0;
    uint64_t ino = n ? n->ino : 0;
    if (rc == 0) {
        klen = n->key_len;
        if ((key = malloc(klen + 1))) {
            memcpy(key, n->key, klen);
            sync_inflight_add_locked(c, key, klen);
        } else {
            rc = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (rc < 0)
        return rc;
    etcd_delete_resp resp = {0};
    etcd_error err = {0};
    rc = etcd_delete(c->cfg.client, key, klen, NULL, 0, false, &resp, &err);
    if (rc < 0) {
        pthread_mutex_lock(&c->lock);
        sync_inflight_done_locked(c, key, klen);
        pthread_mutex_unlock(&c->lock);
        free(key);
        return cache_err("delete", rc, &err);
    }
    int64_t rev = resp.header.revision;
    etcd_delete_resp_free(&resp);
    pthread_mutex_lock(&c->lock);
    sync_inflight_done_locked(c, key, klen);
    sync_tomb_locked(c, key, klen, rev);    /* an older queued PUT must not bring it back */
    n = tree_by_ino_locked(c, ino);
    if (n && n->in_tree && n->mod_rev < rev) {
        n->del_rev = rev;
        tree_remove_locked(c, n, false, true);
    }
    pthread_mutex_unlock(&c->lock);
    free(key);
    return 0;
}

int cache_mkdir(cache *c, uint64_t parent, const char *name, cache_attr *out)
{
    char base[KEYPATH_NAME_MAX + 1];
    pthread_mutex_lock(&c->lock);
    node *p, *d = NULL;
    int rc = dir_locked(c, parent, &p);
    if (rc == 0)
        rc = tree_check_name(name, p == c->root, false, base);
    if (rc == 0 && tree_child_locked(c, p, name))
        rc = -EEXIST;
    if (rc == 0 && !(d = tree_node_new_locked(c, true)))
        rc = -ENOMEM;
    if (rc == 0) {
        d->explicit_dir = true;
        if ((rc = tree_attach_locked(c, p, d, base)) < 0) {
            tree_node_free_locked(c, d);
        } else {
            sync_emit_locked(c, CACHE_EV_CREATED, d, p, d->name, false);
            d->nlookup++;
            tree_fill_attr_locked(d, out);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cache_rmdir(cache *c, uint64_t parent, const char *name)
{
    pthread_mutex_lock(&c->lock);
    node *p, *d = NULL;
    int rc = dir_locked(c, parent, &p);
    if (rc == 0 && !(d = tree_child_locked(c, p, name)))
        rc = -ENOENT;
    if (rc == 0 && !d->is_dir)
        rc = -ENOTDIR;
    if (rc == 0 && d->n_kids)
        rc = -ENOTEMPTY;
    if (rc == 0)
        tree_remove_locked(c, d, false, true);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

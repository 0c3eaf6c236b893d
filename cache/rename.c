/* rename.c — rename through the mount. A file is one Txn (compare the source's mod_revision,
 * put the target with its value and lease, delete the source); a directory is one Txn over
 * every key below it when that fits CACHE_TXN_MAX_OPS, else -EXDEV (mv then copies). Nodes keep
 * their inos; local (unsaved) files and empty directories simply move in memory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* One key that moves: its node, old and new key, the revision compared and the value put. */
typedef struct move {
    uint64_t ino;
    uint8_t *old_key, *new_key;
    size_t old_len, new_len;
    int64_t mod_rev, lease;
    cache_value *val;
} move;

typedef struct plan {
    uint64_t src, dst;          /* source node; target node replaced (0: none) */
    uint64_t src_parent, dst_parent;
    char base[KEYPATH_NAME_MAX + 1];  /* target base name (without a twin suffix) */
    move *m;
    size_t n, cap;
    uint64_t mark;
} plan;

static void plan_free(plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->m[i].old_key);
        free(p->m[i].new_key);
        cache_value_put(p->m[i].val);
    }
    free(p->m);
}

/* ---- checks ----------------------------------------------------------------------------------- */

static int live_dir_locked(cache *c, uint64_t ino, node **out)
{
    node *d = tree_by_ino_locked(c, ino);
    if (!d || (!d->in_tree && d != c->root))
        return -ENOENT;
    if (!d->is_dir)
        return -ENOTDIR;
    *out = d;
    return 0;
}

static bool is_below(const node *d, const node *top)
{
    for (; d; d = d->parent)
        if (d == top)
            return true;
    return false;
}

/* POSIX checks of rename(2); fills the plan's nodes. 1: nothing to do. */
static int check_locked(cache *c, plan *p, uint64_t parent, const char *name, uint64_t newparent,
                        const char *newname, unsigned flags)
{
    node *sp, *dp, *src, *dst;
    int rc = live_dir_locked(c, parent, &sp);
    if (rc == 0)
        rc = live_dir_locked(c, newparent, &dp);
    if (rc < 0)
        return rc;
    if (!(src = tree_child_locked(c, sp, name)))
        return -ENOENT;
    int twin = tree_check_name(newname, dp == c->root, !src->is_dir, p->base);
    if (twin < 0)
        return twin;
    dst = tree_child_locked(c, dp, newname);
    if (dst == src)
        return 1;
    if (dst && (flags & RENAME_NOREPLACE))
        return -EEXIST;
    if (dst && !src->is_dir && dst->is_dir)
        return -EISDIR;
    if (dst && src->is_dir && !dst->is_dir)
        return -ENOTDIR;
    if (dst && dst->is_dir && dst->n_kids)
        return -ENOTEMPTY;
    node *d = tree_child_locked(c, dp, p->base);
    if (!dst && twin && (!d || !d->is_dir))
        return -EINVAL;
    if (src->is_dir && is_below(dp, src))
        return -EINVAL;     /* into itself */
    p->src = src->ino;
    p->dst = dst ? dst->ino : 0;
    p->src_parent = sp->ino;
    p->dst_parent = dp->ino;
    return 0;
}

/* ---- planning --------------------------------------------------------------------------------- */

static const char *base_of(const node *n, char *buf)
{
    size_t l = strlen(n->name);
    memcpy(buf, n->name, l + 1);
    if (n->twin && l >= 2)
        buf[l - 2] = 0;
    return buf;
}

/* New key of file f when top (the renamed node) goes to dst_parent/base. */
static int new_key_locked(cache *c, plan *p, node *top, node *f, uint8_t **key, size_t *len)
{
    size_t depth = 0;
    for (node *n = f; n != top; n = n->parent)
        depth++;
    char (*bufs)[KEYPATH_NAME_MAX + 1] = malloc((depth + 1) * sizeof(*bufs));
    const char **tail = malloc((depth + 1) * sizeof(*tail));
    int rc = -ENOMEM;
    if (bufs && tail) {
        size_t i = depth;
        for (node *n = f; n != top; n = n->parent) {
            i--;
            tail[i] = base_of(n, bufs[i]);
        }
        node *dp = tree_by_ino_locked(c, p->dst_parent);
        rc = tree_path_key_locked(c, dp, p->base, NULL, tail, depth, key, len);
    }
    free(bufs);
    free(tail);
    return rc;
}

static int plan_add_locked(cache *c, plan *p, node *top, node *f)
{
    f->mark = p->mark;
    if (f->local)
        return 0;           /* moves in memory only */
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        move *m = realloc(p->m, cap * sizeof(*m));
        if (!m)
            return -ENOMEM;
        p->m = m;
        p->cap = cap;
    }
    move *m = &p->m[p->n];
    memset(m, 0, sizeof(*m));
    m->ino = f->ino;
    m->mod_rev = f->mod_rev;
    m->lease = f->lease;
    m->old_len = f->key_len;
    if (!(m->old_key = malloc(f->key_len + 1)))
        return -ENOMEM;
    memcpy(m->old_key, f->key, f->key_len);
    p->n++;
    return new_key_locked(c, p, top, f, &m->new_key, &m->new_len);
}

static int plan_walk_locked(cache *c, plan *p, node *top, node *n)
{
    if (!n->is_dir)
        return plan_add_locked(c, p, top, n);
    for (size_t i = 0; i < n->n_kids; i++) {
        int rc = plan_walk_locked(c, p, top, n->kids[i]);
        if (rc < 0)
            return rc;
        if (3 * p->n > CACHE_TXN_MAX_OPS)
            return -EXDEV;
    }
    return 0;
}

/* Values of the moving keys (fetched when not held); the compare uses the revision of the
 * value actually copied. */
static int plan_values(cache *c, plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        move *m = &p->m[i];
        if (m->val)
            continue;
        int rc = cache_read(c, m->ino, &m->val);
        if (rc < 0)
            return rc;
        if (m->val->mod_revision > 0)
            m->mod_rev = m->val->mod_revision;
    }
    return 0;
}

/* After a failed compare: the current value, revision and lease of each source from etcd. */
static int plan_refresh(cache *c, plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        move *m = &p->m[i];
        cache_value_put(m->val);
        m->val = NULL;
        int rc = values_fetch(c, m->old_key, m->old_len, 0, &m->val, &m->lease);
        if (rc < 0)
            return rc;
        if (!m->val)
            return -ENOENT;
        m->mod_rev = m->val->mod_revision;
    }
    return 0;
}

static int plan_txn(cache *c, plan *p, int64_t *rev, bool *ok, etcd_error *err)
{
    size_t n = p->n;
    etcd_compare *cmp = calloc(n ? n : 1, sizeof(*cmp));
    etcd_op *ops = calloc(2 * n + 1, sizeof(*ops));
    if (!cmp || !ops) {
        free(cmp);
        free(ops);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        move *m = &p->m[i];
        cmp[i] = (etcd_compare){ .result = ETCD_CMP_EQUAL, .target = ETCD_CMP_MOD,
                                 .key = m->old_key, .key_len = m->old_len, .number = m->mod_rev };
        ops[i] = (etcd_op){ .type = ETCD_OP_PUT, .key = m->new_key, .key_len = m->new_len,
                            .value = m->val->data, .value_len = m->val->len, .lease = m->lease };
        ops[n + i] = (etcd_op){ .type = ETCD_OP_DELETE, .key = m->old_key,
                                .key_len = m->old_len };
    }
    etcd_txn_resp resp = {0};
    int rc = etcd_txn(c->cfg.client, cmp, n, ops, 2 * n, NULL, 0, c->cfg.write_timeout_ms,
                      &resp, err);
    if (rc == 0) {
        *rev = resp.header.revision;
        *ok = resp.succeeded;
        etcd_txn_resp_free(&resp);
    }
    free(cmp);
    free(ops);
    return rc;
}

/* ---- applying ------------------------------------------------------------------------------- */

static move *find_move(plan *p, uint64_t ino)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->m[i].ino == ino)
            return &p->m[i];
    return NULL;
}

/* A key that arrived below a renamed directory after the plan was made did not move in etcd:
 * put it back where etcd has it. */
static void restore_stray_locked(cache *c, node *n)
{
    node old = *n;
    uint8_t *key = malloc(n->key_len + 1);
    if (!key)
        return;
    memcpy(key, n->key, n->key_len);
    tree_remove_locked(c, n, true, true);
    node *nn = tree_file_for_key_locked(c, key, old.key_len, true);
    if (nn) {
        nn->create_rev = old.create_rev;
        nn->mod_rev = old.mod_rev;
        nn->version = old.version;
        nn->lease = old.lease;
        nn->size = old.size;
        nn->local = false;
        sync_emit_locked(c, CACHE_EV_CREATED, nn, nn->parent, nn->name, true);
    }
    free(key);
}

/* Re-keys every file below n (its path changed); keys that did not move in etcd (arrived after
 * the plan) go back to where etcd has them. */
static void rekey_locked(cache *c, plan *p, node *n, int64_t rev)
{
    if (n->is_dir) {
        for (size_t i = n->n_kids; i-- > 0;)
            rekey_locked(c, p, n->kids[i], rev);
        return;
    }
    char buf[KEYPATH_NAME_MAX + 1];
    uint8_t *key;
    size_t len;
    move *m = find_move(p, n->ino);
    if (n->mark != p->mark && !n->local) {
        restore_stray_locked(c, n);
        return;
    }
    if (tree_path_key_locked(c, n->parent, base_of(n, buf), NULL, NULL, 0, &key, &len) < 0)
        return;
    tree_set_key_locked(c, n, key, len);
    if (!m)
        return;
    n->create_rev = n->mod_rev = rev;
    n->version = 1;
    n->lease = m->lease;
    tree_now(&n->ctime);
    values_install_locked(c, n, values_new(m->val->data, m->val->len, rev), true);
    sync_tomb_locked(c, m->old_key, m->old_len, rev);
}

static void apply_locked(cache *c, plan *p, int64_t rev)
{
    node *src = tree_by_ino_locked(c, p->src), *dp = tree_by_ino_locked(c, p->dst_parent);
    node *dst = p->dst ? tree_by_ino_locked(c, p->dst) : NULL;
    if (!src || !src->in_tree || !dp || (!dp->in_tree && dp != c->root))
        return;     /* changed under us: the watch echo places the keys */
    if (dst && dst->in_tree && dst != src)
        tree_remove_locked(c, dst, false, true);
    node *sp = src->parent;
    sync_emit_locked(c, CACHE_EV_DELETED, src, sp, src->name, false);
    tree_detach_locked(c, src, false);
    if (sp != c->root)
        sp->explicit_dir = true;    /* a local change keeps the directory the user works in */
    if (tree_attach_locked(c, dp, src, p->base) < 0) {
        tree_maybe_free_locked(c, src);
        return;
    }
    sync_emit_locked(c, CACHE_EV_CREATED, src, dp, src->name, false);
    rekey_locked(c, p, src, rev);
}

static int plan_build_locked(cache *c, plan *p)
{
    node *src = tree_by_ino_locked(c, p->src);
    p->mark = ++c->mark_seq;
    int rc = plan_walk_locked(c, p, src, src);
    if (rc == 0 && !src->is_dir && p->n == 0 && p->dst) {
        /* a local file over a saved one: the saved key is deleted */
        node *dst = tree_by_ino_locked(c, p->dst);
        if (!dst->is_dir && !dst->local) {
            rc = plan_add_locked(c, p, dst, dst);
            if (p->n)
                p->m[0].ino = 0;    /* not a move: only its old key matters */
        }
    }
    return rc;
}

static int local_over_saved(cache *c, plan *p)
{
    move *m = &p->m[0];
    etcd_delete_resp r = {0};
    etcd_error err = {0};
    int rc = etcd_delete(c->cfg.client, m->old_key, m->old_len, NULL, 0, false, &r, &err);
    if (rc < 0)
        return cache_err("rename (delete of the target)", rc, &err);
    int64_t rev = r.header.revision;
    etcd_delete_resp_free(&r);
    pthread_mutex_lock(&c->lock);
    sync_tomb_locked(c, m->old_key, m->old_len, rev);
    apply_locked(c, p, rev);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static int rename_txn(cache *c, plan *p)
{
    etcd_error err = {0};
    int rc = plan_values(c, p);
    for (int attempt = 0; rc == 0 && attempt < 2; attempt++) {
        int64_t rev = 0;
        bool ok = false;
        rc = plan_txn(c, p, &rev, &ok, &err);
        if (rc < 0)
            return cache_err("rename", rc, &err);
        if (ok) {
            pthread_mutex_lock(&c->lock);
            apply_locked(c, p, rev);
            pthread_mutex_unlock(&c->lock);
            return 0;
        }
        if (attempt == 0)
            rc = plan_refresh(c, p);   /* a source changed: retry once with etcd's state */
    }
    if (rc < 0)
        return rc;
    fprintf(stderr, "etcdfs: cache: rename %.*s: sources keep changing (gave up)\n",
            (int)p->m[0].old_len, (const char *)p->m[0].old_key);
    return -EIO;
}

/* Registers (or releases) every key the request touches as in flight. */
static void inflight(cache *c, plan *p, bool add)
{
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < p->n; i++) {
        move *m = &p->m[i];
        if (add) {
            sync_inflight_add_locked(c, m->old_key, m->old_len);
            sync_inflight_add_locked(c, m->new_key, m->new_len);
        } else {
            sync_inflight_done_locked(c, m->old_key, m->old_len);
            sync_inflight_done_locked(c, m->new_key, m->new_len);
        }
    }
    pthread_mutex_unlock(&c->lock);
}

/* CACHE_RENAME_ADOPT / CACHE_RENAME_DETACH: the move happens in memory only (see cache.h). */
static int rename_local(cache *c, uint64_t parent, const char *name, uint64_t newparent,
                        const char *newname, unsigned flags)
{
    plan p = {0};
    pthread_mutex_lock(&c->lock);
    if (!newname) {     /* DETACH without a new name: the file leaves the tree, its key stays */
        node *d, *n = NULL;
        int rc = live_dir_locked(c, parent, &d);
        if (rc == 0 && !(n = tree_child_locked(c, d, name)))
            rc = -ENOENT;
        if (rc == 0 && n->is_dir)
            rc = -EISDIR;
        if (rc == 0) {
            n->local = true;
            n->excl = false;
            values_drop_locked(c, n);
            tree_remove_locked(c, n, false, true);
        }
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    int rc = check_locked(c, &p, parent, name, newparent, newname, flags & RENAME_NOREPLACE);
    node *src = rc == 0 ? tree_by_ino_locked(c, p.src) : NULL;
    node *dst = rc == 0 && p.dst ? tree_by_ino_locked(c, p.dst) : NULL;
    if (rc == 0 && (src->is_dir || (dst && dst->is_dir) ||
                    ((flags & CACHE_RENAME_ADOPT) && !src->local)))
        rc = -EINVAL;
    if (rc == 0) {
        node was = dst ? *dst : (node){0};     /* dst may be freed by apply_locked */
        cache_value *val = dst && dst->val ? cache_value_get(dst->val) : NULL;
        bool adopt = (flags & CACHE_RENAME_ADOPT) && dst && !dst->local;
        if (flags & CACHE_RENAME_DETACH) {
            src->local = true;
            src->excl = false;
            src->create_rev = src->mod_rev = src->version = src->lease = 0;
            values_drop_locked(c, src);
        }
        p.mark = ++c->mark_seq;
        src->mark = p.mark;
        apply_locked(c, &p, 0);
        if (adopt && src->in_tree) {
            src->local = src->excl = false;
            src->create_rev = was.create_rev;
            src->mod_rev = was.mod_rev;
            src->version = was.version;
            src->lease = was.lease;
            src->size = was.size;
            src->mtime = was.mtime;
            src->ctime = was.ctime;
            values_install_locked(c, src, val, true);
            val = NULL;
            sync_emit_locked(c, CACHE_EV_MODIFIED, src, src->parent, src->name, false);
        }
        cache_value_put(val);
    }
    pthread_mutex_unlock(&c->lock);
    return rc == 1 ? 0 : rc;
}

int cache_rename(cache *c, uint64_t parent, const char *name, uint64_t newparent,
                 const char *newname, unsigned flags)
{
    if (flags & (CACHE_RENAME_ADOPT | CACHE_RENAME_DETACH))
        return rename_local(c, parent, name, newparent, newname, flags);
    if (flags & RENAME_EXCHANGE)
        return -EINVAL;
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return -EINVAL;
    plan p = {0};
    pthread_mutex_lock(&c->lock);
    int rc = check_locked(c, &p, parent, name, newparent, newname, flags);
    if (rc == 0)
        rc = plan_build_locked(c, &p);
    bool local_only = rc == 0 && p.n == 0;
    if (local_only)
        apply_locked(c, &p, 0);
    pthread_mutex_unlock(&c->lock);
    if (rc != 0 || local_only) {
        plan_free(&p);
        return rc == 1 ? 0 : rc;
    }
    inflight(c, &p, true);
    if (p.m[0].ino == 0)
        rc = local_over_saved(c, &p);
    else
        rc = rename_txn(c, &p);
    inflight(c, &p, false);
    plan_free(&p);
    return rc;
}

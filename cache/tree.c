/* tree.c — the cache's namespace: nodes, the three hash indexes (names, inodes, keys), sorted
 * children for readdir, twins ("a" directory + "a%=" file for keys "/a" and "/a/b"), implicit
 * directories that vanish with their last key, and path → key through keypath. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- hash map ------------------------------------------------------------------------------ */

static uint64_t hmap_hash(uint64_t tag, const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ULL ^ (tag * 0x9E3779B97F4A7C15ULL);
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 29);
}

void hmap_free(hmap *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (hent *e = m->b[i], *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    }
    free(m->b);
    memset(m, 0, sizeof(*m));
}

hent *hmap_get(const hmap *m, uint64_t tag, const void *key, size_t len)
{
    if (!m->nb)
        return NULL;
    uint64_t h = hmap_hash(tag, key, len);
    for (hent *e = m->b[h & (m->nb - 1)]; e; e = e->next) {
        if (e->hash == h && e->tag == tag && e->len == len && (!len || memcmp(e->key, key, len) == 0))
            return e;
    }
    return NULL;
}

static int hmap_grow(hmap *m)
{
    size_t nb = m->nb ? m->nb * 2 : 64;
    hent **b = calloc(nb, sizeof(*b));
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < m->nb; i++) {
        for (hent *e = m->b[i], *nx; e; e = nx) {
            nx = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return 0;
}

hent *hmap_put(hmap *m, uint64_t tag, const void *key, size_t len, void *val)
{
    hent *e = hmap_get(m, tag, key, len);
    if (e) {
        e->val = val;
        return e;
    }
    if (m->n >= m->nb && hmap_grow(m) < 0)
        return NULL;
    e = malloc(sizeof(*e) + len);
    if (!e)
        return NULL;
    e->hash = hmap_hash(tag, key, len);
    e->tag = tag;
    e->val = val;
    e->num = 0;
    e->len = len;
    if (len)
        memcpy(e->key, key, len);
    e->next = m->b[e->hash & (m->nb - 1)];
    m->b[e->hash & (m->nb - 1)] = e;
    m->n++;
    return e;
}

void hmap_del(hmap *m, uint64_t tag, const void *key, size_t len)
{
    if (!m->nb)
        return;
    uint64_t h = hmap_hash(tag, key, len);
    for (hent **pp = &m->b[h & (m->nb - 1)]; *pp; pp = &(*pp)->next) {
        hent *e = *pp;
        if (e->hash == h && e->tag == tag && e->len == len && (!len || memcmp(e->key, key, len) == 0)) {
            *pp = e->next;
            free(e);
            m->n--;
            return;
        }
    }
}

void hmap_sweep(hmap *m, bool (*fn)(hent *e, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (hent **pp = &m->b[i]; *pp;) {
            hent *e = *pp;
            if (fn(e, arg)) {
                *pp = e->next;
                free(e);
                m->n--;
            } else {
                pp = &e->next;
            }
        }
    }
}

/* ---- nodes --------------------------------------------------------------------------------- */

void tree_now(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME, ts);
}

node *tree_node_new_locked(cache *c, bool is_dir)
{
    node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->ino = c->next_ino++;     /* monotonic: an ino is never reused */
    n->is_dir = is_dir;
    n->sorted = true;
    tree_now(&n->mtime);
    n->ctime = n->mtime;
    if (!hmap_put(&c->inos, n->ino, NULL, 0, n)) {
        free(n);
        return NULL;
    }
    return n;
}

void tree_node_free_locked(cache *c, node *n)
{
    values_drop_locked(c, n);
    hmap_del(&c->inos, n->ino, NULL, 0);
    free(n->name);
    free(n->key);
    free(n->kids);
    free(n);
}

void tree_maybe_free_locked(cache *c, node *n)
{
    if (n && n != c->root && !n->in_tree && n->nlookup == 0 && n->n_kids == 0)
        tree_node_free_locked(c, n);
}

node *tree_by_ino_locked(cache *c, uint64_t ino)
{
    hent *e = hmap_get(&c->inos, ino, NULL, 0);
    return e ? e->val : NULL;
}

node *tree_child_locked(cache *c, node *dir, const char *name)
{
    hent *e = hmap_get(&c->names, dir->ino, name, strlen(name));
    return e ? e->val : NULL;
}

/* The file whose base name is base: "base" itself, or its twin "base%=" beside a directory. */
node *tree_find_file_locked(cache *c, node *dir, const char *base)
{
    node *n = tree_child_locked(c, dir, base);
    if (n && !n->is_dir)
        return n;
    if (!n)
        return NULL;
    char tw[KEYPATH_NAME_MAX + 3];
    snprintf(tw, sizeof(tw), "%s%s", base, CACHE_TWIN_SUFFIX);
    return tree_child_locked(c, dir, tw);
}

bool tree_is_twin_name(const char *name)
{
    size_t l = strlen(name);
    return l > 2 && strcmp(name + l - 2, CACHE_TWIN_SUFFIX) == 0;
}

/* Validates a name given by fs/ for a new entry; base receives it without the twin suffix.
 * Returns 1 for a twin name, 0 for a plain one, or -EINVAL / -ENAMETOOLONG. */
int tree_check_name(const char *name, bool at_root, bool allow_twin, char *base)
{
    size_t l = strlen(name);
    if (l == 0)
        return -EINVAL;
    if (l > KEYPATH_NAME_MAX)
        return -ENAMETOOLONG;
    memcpy(base, name, l + 1);
    int twin = 0;
    if (tree_is_twin_name(name)) {
        if (!allow_twin)
            return -EINVAL;
        base[l - 2] = 0;
        twin = 1;
    }
    return keypath_name_valid(base, at_root) ? twin : -EINVAL;
}

/* ---- children ------------------------------------------------------------------------------ */

static int kid_cmp(const void *a, const void *b)
{
    return strcmp((*(node *const *)a)->name, (*(node *const *)b)->name);
}

void tree_sort_locked(node *dir)
{
    if (!dir->sorted) {
        qsort(dir->kids, dir->n_kids, sizeof(node *), kid_cmp);
        dir->sorted = true;
    }
}

static int kids_add(node *dir, node *n)
{
    if (dir->n_kids == dir->cap_kids) {
        size_t cap = dir->cap_kids ? dir->cap_kids * 2 : 8;
        node **k = realloc(dir->kids, cap * sizeof(*k));
        if (!k)
            return -ENOMEM;
        dir->kids = k;
        dir->cap_kids = cap;
    }
    /* Loads arrive in key order, so appending usually keeps the array sorted. */
    if (dir->n_kids && strcmp(dir->kids[dir->n_kids - 1]->name, n->name) > 0)
        dir->sorted = false;
    dir->kids[dir->n_kids++] = n;
    return 0;
}

static void kids_del(node *dir, node *n)
{
    size_t i = 0;
    if (dir->sorted) {
        size_t lo = 0, hi = dir->n_kids;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (strcmp(dir->kids[mid]->name, n->name) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        i = lo;
    }
    if (i >= dir->n_kids || dir->kids[i] != n) {
        for (i = 0; i < dir->n_kids && dir->kids[i] != n; i++)
            ;
    }
    if (i == dir->n_kids)
        return;
    memmove(&dir->kids[i], &dir->kids[i + 1], (dir->n_kids - i - 1) * sizeof(node *));
    dir->n_kids--;
}

/* Renames a child in place (twin suffix added or removed), telling the listener. */
static int rename_in_place(cache *c, node *n, const char *name, bool twin)
{
    char *nm = strdup(name);
    if (!nm)
        return -ENOMEM;
    node *dir = n->parent;
    sync_emit_locked(c, CACHE_EV_DELETED, n, dir, n->name, true);
    hmap_del(&c->names, dir->ino, n->name, strlen(n->name));
    free(n->name);
    n->name = nm;
    n->twin = twin;
    hmap_put(&c->names, dir->ino, nm, strlen(nm), n);
    dir->sorted = false;
    sync_emit_locked(c, CACHE_EV_CREATED, n, dir, n->name, true);
    return 0;
}

static int insert(cache *c, node *dir, node *n, const char *name, bool twin)
{
    char *nm = strdup(name);
    if (!nm)
        return -ENOMEM;
    free(n->name);
    n->name = nm;
    n->twin = twin;
    if (kids_add(dir, n) < 0 || !hmap_put(&c->names, dir->ino, nm, strlen(nm), n)) {
        if (dir->n_kids && dir->kids[dir->n_kids - 1] == n)
            dir->n_kids--;
        return -ENOMEM;
    }
    if (!n->is_dir && n->key)
        hmap_put(&c->keys, 0, n->key, n->key_len, n);
    n->parent = dir;
    n->in_tree = true;
    if (n->is_dir)
        dir->n_subdirs++;
    return 0;
}

/* Puts n into dir under base name. A file beside a directory of the same name becomes the twin
 * "base%="; a directory arriving beside a file renames that file to its twin. -EEXIST. */
int tree_attach_locked(cache *c, node *dir, node *n, const char *base)
{
    char tw[KEYPATH_NAME_MAX + 3];
    snprintf(tw, sizeof(tw), "%s%s", base, CACHE_TWIN_SUFFIX);
    node *old = tree_child_locked(c, dir, base);
    if (n->is_dir) {
        if (old && old->is_dir)
            return -EEXIST;
        if (old) {
            int rc = rename_in_place(c, old, tw, true);
            if (rc < 0)
                return rc;
        }
        return insert(c, dir, n, base, false);
    }
    if (old && !old->is_dir)
        return -EEXIST;
    if (old) {
        if (tree_child_locked(c, dir, tw))
            return -EEXIST;
        return insert(c, dir, n, tw, true);
    }
    return insert(c, dir, n, base, false);
}

/* Takes n out of its directory (n stays in the inode table). A directory leaving gives its
 * twin file back its plain name. */
void tree_detach_locked(cache *c, node *n, bool remote)
{
    node *dir = n->parent;
    if (!dir)
        return;
    kids_del(dir, n);
    hmap_del(&c->names, dir->ino, n->name, strlen(n->name));
    if (!n->is_dir && n->key) {
        hent *e = hmap_get(&c->keys, 0, n->key, n->key_len);
        if (e && e->val == n)
            hmap_del(&c->keys, 0, n->key, n->key_len);
    }
    if (n->is_dir)
        dir->n_subdirs--;
    n->parent = NULL;
    n->in_tree = false;
    if (n->is_dir) {
        char tw[KEYPATH_NAME_MAX + 3];
        snprintf(tw, sizeof(tw), "%s%s", n->name, CACHE_TWIN_SUFFIX);
        node *t = tree_child_locked(c, dir, tw);
        if (t)
            rename_in_place(c, t, n->name, false);
    }
}

/* Removes n from the tree and tells the listener. The parent chain of implicit directories left
 * empty disappears too, unless keep_parent (a local removal: like any file system, the
 * directory the user works in stays until rmdir). */
void tree_remove_locked(cache *c, node *n, bool remote, bool keep_parent)
{
    node *p = n->parent;
    if (!p)
        return;
    sync_emit_locked(c, CACHE_EV_DELETED, n, p, n->name, remote);
    tree_detach_locked(c, n, remote);
    tree_maybe_free_locked(c, n);
    if (keep_parent) {
        if (p != c->root)
            p->explicit_dir = true;
        return;
    }
    while (p != c->root && p->n_kids == 0 && !p->explicit_dir && p->parent) {
        node *pp = p->parent;
        sync_emit_locked(c, CACHE_EV_DELETED, p, pp, p->name, remote);
        tree_detach_locked(c, p, remote);
        tree_maybe_free_locked(c, p);
        p = pp;
    }
}

void tree_set_key_locked(cache *c, node *n, uint8_t *key, size_t len)
{
    if (n->key && n->in_tree) {
        hent *e = hmap_get(&c->keys, 0, n->key, n->key_len);
        if (e && e->val == n)
            hmap_del(&c->keys, 0, n->key, n->key_len);
    }
    free(n->key);
    n->key = key;
    n->key_len = len;
    if (n->in_tree)
        hmap_put(&c->keys, 0, key, len, n);
}

void tree_fill_attr_locked(const node *n, cache_attr *a)
{
    memset(a, 0, sizeof(*a));
    a->ino = n->ino;
    a->is_dir = n->is_dir;
    if (n->is_dir) {
        a->nlink = 2 + (uint32_t)n->n_subdirs;
    } else {
        a->nlink = n->in_tree ? 1 : 0;
        a->size = n->size;
        a->create_revision = n->create_rev;
        a->mod_revision = n->mod_rev;
        a->version = n->version;
        a->lease = n->lease;
    }
    a->mtime = n->mtime;
    a->ctime = n->ctime;
}

/* ---- keys ---------------------------------------------------------------------------------- */

/* The file node of a full key; with create, the node (and the implicit directories above it)
 * is made, and CREATED events are queued for the directories (the caller announces the file). */
node *tree_file_for_key_locked(cache *c, const uint8_t *key, size_t len, bool create)
{
    hent *e = hmap_get(&c->keys, 0, key, len);
    if (e || !create)
        return e ? e->val : NULL;
    if (len < c->prefix_len || memcmp(key, c->prefix, c->prefix_len) != 0)
        return NULL;
    keypath_names p = {0};
    if (keypath_split(key + c->prefix_len, len - c->prefix_len, &p) < 0 || p.n == 0)
        return NULL;
    node *dir = c->root, *f = NULL;
    for (size_t i = 0; i + 1 < p.n; i++) {
        node *d = tree_child_locked(c, dir, p.names[i]);
        if (!d || !d->is_dir) {
            d = tree_node_new_locked(c, true);
            if (!d || tree_attach_locked(c, dir, d, p.names[i]) < 0) {
                if (d)
                    tree_node_free_locked(c, d);
                goto out;
            }
            sync_emit_locked(c, CACHE_EV_CREATED, d, dir, d->name, true);
        }
        dir = d;
    }
    f = tree_node_new_locked(c, false);
    if (!f)
        goto out;
    f->key = malloc(len ? len : 1);
    if (!f->key || (memcpy(f->key, key, len), f->key_len = len,
                    tree_attach_locked(c, dir, f, p.names[p.n - 1]) < 0)) {
        tree_node_free_locked(c, f);
        f = NULL;
    }
out:
    if (!f) {
        while (dir != c->root && dir->n_kids == 0 && !dir->explicit_dir && dir->parent) {
            node *pp = dir->parent;
            sync_emit_locked(c, CACHE_EV_DELETED, dir, pp, dir->name, true);
            tree_detach_locked(c, dir, true);
            tree_maybe_free_locked(c, dir);
            dir = pp;
        }
    }
    keypath_names_free(&p);
    return f;
}

/* Full key of the path dir/base/tail...: names from the root through keypath_join, prefixed. */
int tree_path_key_locked(cache *c, node *dir, const char *base, node *stop,
                         const char *const *tail, size_t n_tail, uint8_t **key, size_t *len)
{
    (void)stop;
    size_t depth = 0;
    for (node *d = dir; d && d != c->root; d = d->parent)
        depth++;
    size_t n = depth + 1 + n_tail;
    const char **names = malloc(n * sizeof(*names));
    if (!names)
        return -ENOMEM;
    size_t i = depth;
    for (node *d = dir; d && d != c->root; d = d->parent)
        names[--i] = d->name;
    names[depth] = base;
    for (size_t j = 0; j < n_tail; j++)
        names[depth + 1 + j] = tail[j];
    uint8_t *rel = NULL;
    size_t rlen = 0;
    int rc = keypath_join(names, n, &rel, &rlen);
    free(names);
    if (rc < 0)
        return rc;
    uint8_t *k = malloc(c->prefix_len + rlen + 1);
    if (!k) {
        free(rel);
        return -ENOMEM;
    }
    memcpy(k, c->prefix, c->prefix_len);
    memcpy(k + c->prefix_len, rel, rlen);
    free(rel);
    *key = k;
    *len = c->prefix_len + rlen;
    return 0;
}

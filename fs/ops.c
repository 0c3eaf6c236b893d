/* ops.c — the FUSE low-level operations: translates each request into cache calls and the
 * cache's answers into attributes, entries and errnos. Owns the rules of the mount's surface:
 * modes and owners, ".cluster" reserved at the root, read-only, what is refused (links,
 * special files), xattrs, statfs. Open files live in handle.c. */
#include "ops.h"
#include "scratch.h"
#include "echo.h"
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define RESERVED_NAME ".cluster"
/* .cluster's generated files change under the kernel: short attribute timeout. */
#define CLUSTER_ATTR_TIMEOUT 1.0

#ifdef ETCDFS_CLUSTER
#include "cluster.h"
#else
/* Built without fs/cluster.c: ".cluster" is only a reserved name. */
typedef struct cluster_file cluster_file;
typedef struct cluster_dirent { const char *name; struct stat st; } cluster_dirent;
static bool cluster_is_ino(uint64_t ino) { return false; }
static int cluster_lookup(uint64_t p, const char *n, struct stat *st) { return -ENOENT; }
static int cluster_getattr(uint64_t ino, struct stat *st) { return -ENOENT; }
static int cluster_readdir(uint64_t ino, const cluster_dirent **e, size_t *n) { return -ENOENT; }
static int cluster_open(uint64_t ino, int flags, cluster_file **out) { return -ENOENT; }
static long cluster_read(cluster_file *f, char *b, size_t s, off_t o) { return -EBADF; }
static long cluster_write(cluster_file *f, const char *b, size_t s, off_t o) { return -EBADF; }
static void cluster_release(cluster_file *f) { }
static bool cluster_direct_io(uint64_t ino) { return false; }
static events_reader *cluster_events(cluster_file *f) { return NULL; }
#endif

static fs_state *st_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* ".cluster" at the root, or any name inside it: never a key, never changed by name ops. */
static bool reserved(uint64_t parent, const char *name)
{
    return (parent == CACHE_ROOT_INO && strcmp(name, RESERVED_NAME) == 0) ||
           cluster_is_ino(parent);
}

const char *fs_key_str(fs_state *st, uint64_t ino, char *buf, size_t len)
{
    uint8_t *key;
    size_t klen;
    if (len == 0)
        return buf;
    if (cache_key(st->cache, ino, &key, &klen) < 0) {
        snprintf(buf, len, "inode %llu", (unsigned long long)ino);
        return buf;
    }
    size_t o = 0;
    for (size_t i = 0; i < klen && o + 5 < len; i++) {
        if (key[i] >= 0x20 && key[i] < 0x7f && key[i] != '\\')
            buf[o++] = (char)key[i];
        else
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", key[i]);
    }
    buf[o] = '\0';
    free(key);
    return buf;
}

static void fill_stat(fs_state *st, const cache_attr *a, struct stat *s)
{
    memset(s, 0, sizeof(*s));
    s->st_ino = a->ino;
    s->st_mode = a->is_dir ? (S_IFDIR | st->dir_mode) : (S_IFREG | st->file_mode);
    s->st_nlink = a->nlink ? a->nlink : (a->is_dir ? 2 : 1);
    s->st_uid = st->uid;
    s->st_gid = st->gid;
    uint64_t size = a->size;
    s->st_mtim = a->mtime;
    if (!a->is_dir) {
        scratch_attr(a->ino, &size, &s->st_mtim);   /* scratch files: bytes in memory */
        handle_ino_size(a->ino, &size);     /* an open write buffer is the truth for now */
    }
    s->st_size = (off_t)size;
    s->st_blksize = 4096;
    s->st_blocks = (blkcnt_t)((size + 511) / 512);
    s->st_ctim = a->ctime;
    s->st_atim = s->st_mtim;
}

static void fill_entry(fs_state *st, const cache_attr *a, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = a->ino;
    e->generation = 1;
    e->attr_timeout = FS_TIMEOUT;
    e->entry_timeout = FS_TIMEOUT;
    fill_stat(st, a, &e->attr);
}

/* Replies with an entry; when the kernel did not get it, gives the reference back. */
static void reply_entry(fuse_req_t req, fs_state *st, const cache_attr *a)
{
    struct fuse_entry_param e;
    fill_entry(st, a, &e);
    if (fuse_reply_entry(req, &e) < 0)
        cache_forget(st->cache, a->ino, 1);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static bool no_opendir;

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    fs_state *st = userdata;
    /* Whole-value writes at close need O_TRUNC at open (not a truncate to 0 first, which
     * would Put an empty value), and no writeback cache (write-through stays simple). */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    /* "auto" beats always-plus for find (names only: no kernel inode per entry), measured. */
    if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO)
        conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    /* opendir answers ENOSYS: the kernel then sends no OPENDIR/RELEASEDIR (half of what
     * `find` costs) and caches listings itself; readdir works without a handle. */
    no_opendir = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
    /* No locks: etcd has its own; the kernel does local POSIX locks without us. */
    conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
    conn->time_gran = 1;
    notify_activate();
    if (st->on_init)
        st->on_init(st);
}

/* ---- names ---------------------------------------------------------------------------- */

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (echo_lookup(req, parent, name))     /* the inotify echo's own */
        return;
    fs_state *st = st_of(req);
    cache_attr a;
    fs_dbg("lookup %llu/%s", (unsigned long long)parent, name);
    if (reserved(parent, name) || cluster_is_ino(parent)) {
        struct fuse_entry_param e;
        memset(&e, 0, sizeof(e));
        int r = cluster_lookup(parent, name, &e.attr);
        if (r < 0) {
            fuse_reply_err(req, -r);        /* no negative entry: .cluster is not a key */
            return;
        }
        e.ino = e.attr.st_ino;
        e.generation = 1;
        e.entry_timeout = FS_TIMEOUT;
        e.attr_timeout = S_ISDIR(e.attr.st_mode) ? FS_TIMEOUT : CLUSTER_ATTR_TIMEOUT;
        fuse_reply_entry(req, &e);
        return;
    }
    int r = cache_lookup(st->cache, parent, name, &a);
    if (r == -ENOENT || r == -EINVAL) {
        /* A negative entry the kernel may keep: notify.c drops it when the name appears. */
        struct fuse_entry_param e;
        memset(&e, 0, sizeof(e));
        e.entry_timeout = FS_TIMEOUT;
        fuse_reply_entry(req, &e);
        return;
    }
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    reply_entry(req, st, &a);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    if (!cluster_is_ino(ino))
        cache_forget(st_of(req)->cache, ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    fs_state *st = st_of(req);
    for (size_t i = 0; i < count; i++)
        if (!cluster_is_ino(forgets[i].ino))
            cache_forget(st->cache, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_state *st = st_of(req);
    cache_attr a;
    struct stat s;
    fs_dbg("getattr %llu", (unsigned long long)ino);
    if (cluster_is_ino(ino)) {
        int r = cluster_getattr(ino, &s);
        if (r < 0)
            fuse_reply_err(req, -r);
        else
            fuse_reply_attr(req, &s, S_ISDIR(s.st_mode) ? FS_TIMEOUT : CLUSTER_ATTR_TIMEOUT);
        return;
    }
    int r = cache_getattr(st->cache, ino, &a);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    fill_stat(st, &a, &s);
    fuse_reply_attr(req, &s, FS_TIMEOUT);
}

/* truncate(2) without an open write handle: read, resize, save (one Put). */
static int truncate_value(fs_state *st, uint64_t ino, uint64_t size)
{
    if (size > FS_MAX_VALUE)
        return -EFBIG;
    if (scratch_is(ino))
        return scratch_truncate(ino, size);
    cache_value *v;
    int r = cache_read(st->cache, ino, &v);
    if (r < 0)
        return r;
    if (v->len == size) {
        cache_value_put(v);
        return 0;
    }
    uint8_t *buf = calloc(1, size ? (size_t)size : 1);
    if (!buf) {
        cache_value_put(v);
        return -ENOMEM;
    }
    memcpy(buf, v->data, v->len < size ? v->len : (size_t)size);
    int64_t rev = v->mod_revision;
    cache_value_put(v);
    cache_attr a;
    r = cache_write(st->cache, ino, buf, (size_t)size, rev, &a);
    free(buf);
    if (r < 0) {
        char key[512];
        fs_log(LOG_ERR, "truncate of %s failed: %s", fs_key_str(st, ino, key, sizeof(key)),
               strerror(-r));
    }
    return r;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    fs_state *st = st_of(req);
    cache_attr a;
    if (cluster_is_ino(ino)) {
        /* Writable .cluster files act on write(); a truncate or chmod changes nothing. */
        if (st->read_only) {
            fuse_reply_err(req, EROFS);
            return;
        }
        op_getattr(req, ino, fi);
        return;
    }
    int r = cache_getattr(st->cache, ino, &a);
    if (r == 0 && st->read_only)
        r = -EROFS;
    if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
        uint64_t size = (uint64_t)attr->st_size;
        char key[512];
        fs_dbg("truncate %s to %llu", fs_key_str(st, ino, key, sizeof(key)),
               (unsigned long long)size);
        if (a.is_dir)
            r = -EISDIR;
        else if (fi && fi->fh)
            r = handle_truncate((fs_handle *)(uintptr_t)fi->fh, size);
        else if ((r = handle_truncate_ino(ino, size)) == -ENOENT)
            r = truncate_value(st, ino, size);
        if (r == 0)
            r = cache_getattr(st->cache, ino, &a);
    }
    /* mode, owner and times are not stored: accepted so that editors and cp -p work. */
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    struct stat s;
    fill_stat(st, &a, &s);
    fuse_reply_attr(req, &s, FS_TIMEOUT);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    if (echo_mkdir(req, parent, name))
        return;
    fs_state *st = st_of(req);
    cache_attr a;
    fs_dbg("mkdir %llu/%s", (unsigned long long)parent, name);
    int r = st->read_only ? -EROFS : reserved(parent, name) ? -EPERM
            : cache_mkdir(st->cache, parent, name, &a);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        reply_entry(req, st, &a);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (echo_unlink(req, parent, name))
        return;
    fs_state *st = st_of(req);
    fs_dbg("unlink %llu/%s", (unsigned long long)parent, name);
    int r = st->read_only ? -EROFS : reserved(parent, name) ? -EPERM
            : scratch_unlink(st, fuse_req_ctx(req)->pid, parent, name);
    if (r == 1)
        r = cache_unlink(st->cache, parent, name);
    if (r < 0 && r != -ENOENT && r != -EISDIR)
        fs_log(LOG_ERR, "unlink of %s failed: %s", name, strerror(-r));
    fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (echo_unlink(req, parent, name))
        return;
    fs_state *st = st_of(req);
    fs_dbg("rmdir %llu/%s", (unsigned long long)parent, name);
    int r = st->read_only ? -EROFS : reserved(parent, name) ? -EPERM
            : cache_rmdir(st->cache, parent, name);
    fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    fs_state *st = st_of(req);
    fs_dbg("rename %llu/%s -> %llu/%s", (unsigned long long)parent, name,
           (unsigned long long)newparent, newname);
    int r = st->read_only ? -EROFS
            : (reserved(parent, name) || reserved(newparent, newname)) ? -EPERM
            : scratch_rename(st, fuse_req_ctx(req)->pid, parent, name, newparent, newname,
                             flags);
    if (r == 1)
        r = cache_rename(st->cache, parent, name, newparent, newname, flags);
    if (r < 0 && r != -ENOENT && r != -EEXIST && r != -ENOTEMPTY && r != -EXDEV &&
        r != -EINVAL && r != -EISDIR && r != -ENOTDIR)
        fs_log(LOG_ERR, "rename of %s to %s failed: %s", name, newname, strerror(-r));
    fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    /* etcd has no links; refused before anything reaches etcd. */
    fuse_reply_err(req, st_of(req)->read_only ? EROFS : EPERM);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    fuse_reply_err(req, st_of(req)->read_only ? EROFS : EPERM);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    fuse_reply_err(req, EINVAL);
}

/* ---- files ---------------------------------------------------------------------------- */

static void reply_open(fuse_req_t req, struct fuse_file_info *fi, fs_handle *h)
{
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->keep_cache = 1;             /* notify.c invalidates on change */
    fi->direct_io = handle_direct_io(h);
    /* A read handle has nothing to save: close(2) then costs no FLUSH round trip (grep -r
     * opens every file once). */
    fi->noflush = !handle_writable(h);
    if (fuse_reply_open(req, fi) < 0)
        handle_release(h);
}

static void open_cluster(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    cluster_file *f = NULL;
    int r = cluster_open(ino, fi->flags, &f);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)f;
    fi->direct_io = cluster_direct_io(ino);     /* generated text: size unknown beforehand */
    fi->keep_cache = 0;
    if (fuse_reply_open(req, fi) < 0)
        cluster_release(f);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (echo_open(req, ino, fi))
        return;
    fs_state *st = st_of(req);
    int acc = fi->flags & O_ACCMODE;
    if (cluster_is_ino(ino)) {
        open_cluster(req, ino, fi);
        return;
    }
    fs_handle *h = NULL;
    cache_attr a;
    int r = cache_getattr(st->cache, ino, &a);
    char key[512];
    fs_dbg("open %s flags 0%o", fs_key_str(st, ino, key, sizeof(key)), fi->flags);
    if (r == 0 && a.is_dir)
        r = -EISDIR;
    if (r == 0 && acc != O_RDONLY && st->read_only)
        r = -EROFS;
    if (r == 0) {
        if (acc == O_RDONLY) {
            scratch_note_read(fuse_req_ctx(req)->pid, ino, a.mod_revision);
            r = handle_open_read(st, ino, &h);
        } else {
            scratch_base_rev(fuse_req_ctx(req)->pid, &a);
            r = handle_open_write(st, ino, &a, (fi->flags & O_TRUNC) != 0, false, &h);
        }
    }
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    reply_open(req, fi, h);
}

/* create and mknod(S_IFREG): a local node that becomes a key at its first save. */
static int make_file(fs_state *st, uint64_t parent, const char *name, bool excl, cache_attr *a)
{
    if (st->read_only)
        return -EROFS;
    if (reserved(parent, name))
        return -EPERM;
    return cache_create(st->cache, parent, name, excl ? CACHE_W_EXCL : 0, a);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    if (echo_create(req, parent, name, fi))
        return;
    fs_state *st = st_of(req);
    cache_attr a;
    fs_handle *h = NULL;
    fs_dbg("create %llu/%s flags 0%o", (unsigned long long)parent, name, fi->flags);
    /* O_EXCL is checked against the mount's names; a held-back key is rewritten. */
    int r = make_file(st, parent, name,
                      (fi->flags & O_EXCL) != 0 && !scratch_ghost(parent, name), &a);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    /* Without O_EXCL an existing key may come back: then this is an open of it. */
    bool is_new = a.mod_revision == 0;
    scratch_created(st, fuse_req_ctx(req)->pid, parent, name, &a);
    r = handle_open_write(st, a.ino, &a, (fi->flags & O_TRUNC) != 0, is_new, &h);
    if (r < 0) {
        cache_forget(st->cache, a.ino, 1);
        fuse_reply_err(req, -r);
        return;
    }
    struct fuse_entry_param e;
    fill_entry(st, &a, &e);
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->keep_cache = 1;
    if (fuse_reply_create(req, &e, fi) < 0) {
        cache_forget(st->cache, a.ino, 1);
        handle_release(h);
    }
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     dev_t rdev)
{
    fs_state *st = st_of(req);
    cache_attr a;
    if (!S_ISREG(mode)) {
        fuse_reply_err(req, st->read_only ? EROFS : EPERM);   /* no fifos, devices, sockets */
        return;
    }
    int r = make_file(st, parent, name, true, &a);
    if (r == 0 && !scratch_created(st, fuse_req_ctx(req)->pid, parent, name, &a)) {
        /* No handle will save it: the key exists from now on, empty. */
        r = cache_write(st->cache, a.ino, "", 0, 0, &a);
        if (r < 0)
            cache_forget(st->cache, a.ino, 1);
    }
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        reply_entry(req, st, &a);
}

static void read_cluster(fuse_req_t req, cluster_file *f, size_t size, off_t off)
{
    if (cluster_events(f)) {         /* .cluster/events blocks until a change */
        events_read(cluster_events(f), req, size);
        return;
    }
    char *buf = malloc(size ? size : 1);
    long n = buf ? cluster_read(f, buf, size, off) : -ENOMEM;
    if (n < 0)
        fuse_reply_err(req, (int)-n);
    else
        fuse_reply_buf(req, buf, (size_t)n);
    free(buf);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    fs_dbg("read %llu %zu@%lld", (unsigned long long)ino, size, (long long)off);
    if (cluster_is_ino(ino))
        read_cluster(req, (cluster_file *)(uintptr_t)fi->fh, size, off);
    else
        handle_read((fs_handle *)(uintptr_t)fi->fh, req, size, off);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    if (echo_write(req, size, fi))
        return;
    long r = cluster_is_ino(ino)
        ? cluster_write((cluster_file *)(uintptr_t)fi->fh, buf, size, off)
        : handle_write((fs_handle *)(uintptr_t)fi->fh, buf, size, off);
    if (r < 0)
        fuse_reply_err(req, (int)-r);
    else
        fuse_reply_write(req, (size_t)r);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (echo_flush(req, fi))
        return;
    fs_dbg("flush %llu", (unsigned long long)ino);
    int r = cluster_is_ino(ino) ? 0
            : handle_flush((fs_handle *)(uintptr_t)fi->fh, fuse_req_ctx(req)->pid);
    fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    int r = cluster_is_ino(ino) ? 0 : handle_commit((fs_handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (echo_release(req, fi))
        return;
    fs_dbg("release %llu", (unsigned long long)ino);
    if (cluster_is_ino(ino))
        cluster_release((cluster_file *)(uintptr_t)fi->fh);
    else
        handle_release((fs_handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* ---- directories ---------------------------------------------------------------------- */

typedef struct dir_handle {
    pthread_mutex_t mu;
    cache_dirent *ents;             /* cache directories: snapshot taken at offset 0 */
    size_t n;
    bool loaded;
    bool cluster;                   /* the .cluster directory (static entries) */
    bool with_cluster;              /* the root: ".cluster" listed first */
} dir_handle;

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_state *st = st_of(req);
    cache_attr a;
    struct stat cs;
    bool cluster = cluster_is_ino(ino);
    fs_dbg("opendir %llu", (unsigned long long)ino);
    if (no_opendir) {
        fuse_reply_err(req, ENOSYS);
        return;
    }
    int r = cluster ? cluster_getattr(ino, &cs) : cache_getattr(st->cache, ino, &a);
    if (r == 0 && (cluster ? !S_ISDIR(cs.st_mode) : !a.is_dir))
        r = -ENOTDIR;
    dir_handle *d = r == 0 ? calloc(1, sizeof(*d)) : NULL;
    if (r == 0 && !d)
        r = -ENOMEM;
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->cluster = cluster;
    d->with_cluster = ino == CACHE_ROOT_INO && cluster_lookup(ino, RESERVED_NAME, &cs) == 0;
    fi->fh = (uint64_t)(uintptr_t)d;
    fi->cache_readdir = !cluster;   /* notify.c invalidates a directory on change */
    fi->keep_cache = !cluster;
    if (fuse_reply_open(req, fi) < 0) {
        pthread_mutex_destroy(&d->mu);
        free(d);
    }
}

/* Takes the cache's snapshot of the directory (at offset 0, or the first call). */
static int dir_load(fs_state *st, dir_handle *d, fuse_ino_t ino, off_t off)
{
    if (d->cluster || (d->loaded && off != 0))
        return 0;
    if (d->loaded)
        cache_dirents_free(d->ents, d->n);
    d->ents = NULL;
    d->n = 0;
    d->loaded = false;
    int r = cache_readdir(st->cache, ino, &d->ents, &d->n);
    if (r == 0)
        d->loaded = true;
    return r;
}

/* Without OPENDIR (no_opendir) a listing has no handle: the snapshot taken at offset 0 is
 * kept here for the calls that continue it, while no cache event happened since (a changed
 * directory is listed again, as a new opendir would). Small: listings are read through. */
#define DSNAP_SLOTS 8
static pthread_mutex_t dsnap_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dsnap {
    uint64_t ino, gen;
    cache_dirent *ents;
    size_t n;
    bool used;
} dsnap[DSNAP_SLOTS];
static unsigned dsnap_next;

/* Fills the stack handle d for ino, with dsnap_mu held (the caller unlocks). */
static int dsnap_view(fs_state *st, fuse_ino_t ino, off_t off, dir_handle *d)
{
    memset(d, 0, sizeof(*d));
    d->cluster = cluster_is_ino(ino);
    struct stat cs;
    d->with_cluster = ino == CACHE_ROOT_INO && cluster_lookup(ino, RESERVED_NAME, &cs) == 0;
    pthread_mutex_lock(&dsnap_mu);
    if (d->cluster)
        return 0;
    uint64_t gen = notify_generation();     /* before the snapshot: see notify_generation */
    struct dsnap *s = NULL;
    for (size_t i = 0; i < DSNAP_SLOTS && !s; i++)
        if (dsnap[i].used && dsnap[i].ino == ino)
            s = &dsnap[i];
    if (!s || off == 0 || s->gen != gen) {
        if (!s)
            s = &dsnap[dsnap_next++ % DSNAP_SLOTS];
        if (s->used)
            cache_dirents_free(s->ents, s->n);
        s->used = false;
        int r = cache_readdir(st->cache, ino, &s->ents, &s->n);
        if (r < 0)
            return r;
        s->ino = ino;
        s->gen = gen;
        s->used = true;
    }
    d->ents = s->ents;
    d->n = s->n;
    d->loaded = true;
    return 0;
}

/* Entry i of the listing ("." and ".." first). False past the end. */
static bool dir_entry(fs_state *st, dir_handle *d, fuse_ino_t ino, size_t i, const char **name,
                      struct fuse_entry_param *e, bool *counted)
{
    memset(e, 0, sizeof(*e));
    *counted = false;
    if (i < 2) {
        /* Only a name and a type: the kernel resolves these itself. */
        *name = i == 0 ? "." : "..";
        e->attr.st_ino = i == 0 ? ino : FUSE_ROOT_ID;
        e->attr.st_mode = S_IFDIR;
        return true;
    }
    i -= 2;
    if (d->cluster) {
        const cluster_dirent *ents;
        size_t n;
        if (cluster_readdir(ino, &ents, &n) < 0 || i >= n)
            return false;
        *name = ents[i].name;
        e->attr = ents[i].st;
    } else if (d->with_cluster && i == 0) {
        *name = RESERVED_NAME;
        cluster_lookup(ino, RESERVED_NAME, &e->attr);
    } else {
        i -= d->with_cluster ? 1 : 0;
        if (i >= d->n)
            return false;
        *name = d->ents[i].name;
        fill_entry(st, &d->ents[i].attr, e);
        *counted = true;
        return true;
    }
    e->ino = e->attr.st_ino;
    e->generation = 1;
    e->entry_timeout = FS_TIMEOUT;
    e->attr_timeout = CLUSTER_ATTR_TIMEOUT;
    return true;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi, bool plus)
{
    fs_state *st = st_of(req);
    dir_handle *d = (dir_handle *)(uintptr_t)fi->fh;
    dir_handle view;                /* no_opendir: no handle, a view of a kept snapshot */
    pthread_mutex_t *mu = d ? &d->mu : &dsnap_mu;
    fs_dbg("readdir%s %llu %zu@%lld", plus ? "plus" : "", (unsigned long long)ino, size,
           (long long)off);
    int r;
    if (d) {
        pthread_mutex_lock(mu);
        r = dir_load(st, d, ino, off);
    } else {
        r = dsnap_view(st, ino, off, &view);
        d = &view;
    }
    char *buf = r == 0 ? malloc(size) : NULL;
    if (r == 0 && !buf)
        r = -ENOMEM;
    if (r < 0) {
        pthread_mutex_unlock(mu);
        fuse_reply_err(req, -r);
        return;
    }
    size_t pos = 0;
    const char *name;
    struct fuse_entry_param e;
    bool counted;
    for (size_t i = (size_t)off; dir_entry(st, d, ino, i, &name, &e, &counted); i++) {
        size_t len = plus
            ? fuse_add_direntry_plus(req, buf + pos, size - pos, name, &e, (off_t)i + 1)
            : fuse_add_direntry(req, buf + pos, size - pos, name, &e.attr, (off_t)i + 1);
        if (len > size - pos)
            break;
        /* readdirplus entries of the cache count as lookups for the kernel. */
        if (plus && counted)
            cache_ref(st->cache, e.ino, 1);
        pos += len;
    }
    pthread_mutex_unlock(mu);
    fuse_reply_buf(req, buf, pos);
    free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    do_readdir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    dir_handle *d = (dir_handle *)(uintptr_t)fi->fh;
    if (!d) {
        fuse_reply_err(req, 0);
        return;
    }
    if (d->loaded)
        cache_dirents_free(d->ents, d->n);
    pthread_mutex_destroy(&d->mu);
    free(d);
    fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);     /* every directory change is already in etcd */
}

/* ---- xattrs and statfs ---------------------------------------------------------------- */

#define XATTR_PREFIX "user.etcd."
static const char *const xattr_names[] = { "create_revision", "mod_revision", "version",
                                           "lease" };
#define N_XATTRS (sizeof(xattr_names) / sizeof(xattr_names[0]))

static void reply_xattr_data(fuse_req_t req, size_t size, const char *data, size_t len)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, data, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    fs_state *st = st_of(req);
    cache_attr a;
    if (cluster_is_ino(ino)) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    int r = cache_getattr(st->cache, ino, &a);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    int64_t vals[N_XATTRS] = { a.create_revision, a.mod_revision, a.version, a.lease };
    size_t plen = strlen(XATTR_PREFIX);
    if (!a.is_dir && strncmp(name, XATTR_PREFIX, plen) == 0) {
        for (size_t i = 0; i < N_XATTRS; i++) {
            if (strcmp(name + plen, xattr_names[i]) == 0) {
                char buf[32];
                int n = snprintf(buf, sizeof(buf), "%lld", (long long)vals[i]);
                reply_xattr_data(req, size, buf, (size_t)n);
                return;
            }
        }
    }
    fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    fs_state *st = st_of(req);
    cache_attr a;
    if (cluster_is_ino(ino)) {
        reply_xattr_data(req, size, "", 0);
        return;
    }
    int r = cache_getattr(st->cache, ino, &a);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    char buf[256];
    size_t len = 0;
    if (!a.is_dir)
        for (size_t i = 0; i < N_XATTRS; i++)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", XATTR_PREFIX,
                                    xattr_names[i]) + 1;
    reply_xattr_data(req, size, buf, len);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    fuse_reply_err(req, st_of(req)->read_only ? EROFS : ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    fuse_reply_err(req, st_of(req)->read_only ? EROFS : ENOTSUP);
}

/* Number of keys under the mount (one count-only Range; df is not a hot path). */
static int64_t count_keys(fs_state *st)
{
    etcd_range_req rq;
    etcd_range_resp rs;
    etcd_error err;
    size_t end_len;
    memset(&rq, 0, sizeof(rq));
    static const uint8_t zero = 0;
    uint8_t *end = NULL;
    if (st->prefix_len) {
        end = etcd_prefix_end(st->prefix, st->prefix_len, &end_len);
        rq.key = st->prefix;
        rq.key_len = st->prefix_len;
        rq.range_end = end;
        rq.range_end_len = end_len;
    } else {
        rq.key = &zero;
        rq.key_len = 1;
        rq.range_end = &zero;
        rq.range_end_len = 1;
    }
    rq.count_only = true;
    rq.serializable = true;
    int64_t n = -1;
    if (etcd_range(st->client, &rq, &rs, &err) == 0) {
        n = rs.count;
        etcd_range_resp_free(&rs);
    }
    free(end);
    return n;
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    fs_state *st = st_of(req);
    struct statvfs s;
    int64_t db = 0;
    memset(&s, 0, sizeof(s));
    if (cache_db_size(st->cache, &db) < 0)
        db = 0;
    uint64_t quota = st->quota;
    uint64_t used = db > 0 ? (uint64_t)db : 0;
    s.f_bsize = 4096;
    s.f_frsize = 4096;
    s.f_blocks = quota / 4096;
    s.f_bfree = used < quota ? (quota - used) / 4096 : 0;
    s.f_bavail = s.f_bfree;
    int64_t keys = count_keys(st);
    s.f_files = keys > 0 ? (fsfilcnt_t)keys : 0;
    s.f_ffree = 0;
    s.f_favail = 0;
    s.f_namemax = 255;
    fuse_reply_statfs(req, &s);
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
};

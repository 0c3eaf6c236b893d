/* handle.c — open files. A read handle serves one snapshot of the value; a write handle edits a
 * private copy and saves it whole (one cache_write, i.e. one Put) at flush/fsync when dirty.
 * Also the per-inode registry of write handles, so attributes show the size being written. */
#include "ops.h"
#include "scratch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fs_handle {
    fs_state *st;
    uint64_t ino;
    bool writable;
    pthread_mutex_t mu;             /* serialises read/write/flush on this handle */
    cache_value *snap;              /* read handles (swapped only under mu) */
    bool snap_from_cache;           /* snap is a key's value (not a scratch file's) */
    bool served;                    /* a read was answered from snap */
    uint8_t *buf;                   /* write handles */
    size_t len, cap;
    bool dirty;
    bool commit_failed;             /* the last save failed: release does not retry it */
    int64_t base_rev;               /* mod_revision the buffer was read at */
    uint64_t seq;                   /* last modification, to pick the newest buffer */
    fs_handle *next;                /* registry chain */
};

/* ---- registry of write handles by inode ----------------------------------------------- */

#define REG_BUCKETS 1024
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static fs_handle *reg[REG_BUCKETS];
static uint64_t reg_seq;

static fs_handle **reg_bucket(uint64_t ino)
{
    return &reg[(ino * 0x9E3779B97F4A7C15ULL) >> 54 & (REG_BUCKETS - 1)];
}

static void reg_add(fs_handle *h)
{
    pthread_mutex_lock(&reg_mu);
    fs_handle **b = reg_bucket(h->ino);
    h->seq = __atomic_add_fetch(&reg_seq, 1, __ATOMIC_RELAXED);
    h->next = *b;
    *b = h;
    pthread_mutex_unlock(&reg_mu);
}

static void reg_del(fs_handle *h)
{
    pthread_mutex_lock(&reg_mu);
    for (fs_handle **p = reg_bucket(h->ino); *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

/* Called with h->mu held after a change of h's length. Lock-free: the lock order is reg_mu
 * before h->mu (handle_truncate_ino), never the other way. */
static void reg_touch(fs_handle *h)
{
    __atomic_store_n(&h->seq, __atomic_add_fetch(&reg_seq, 1, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
}

bool handle_ino_size(uint64_t ino, uint64_t *size)
{
    bool found = false;
    uint64_t best = 0;
    pthread_mutex_lock(&reg_mu);
    for (fs_handle *h = *reg_bucket(ino); h; h = h->next) {
        uint64_t seq = __atomic_load_n(&h->seq, __ATOMIC_RELAXED);
        if (h->ino == ino && (!found || seq > best)) {
            /* len is read without h->mu: a torn value is impossible for size_t on the
             * platforms we build for, and the kernel only uses it as a hint while writing. */
            *size = __atomic_load_n(&h->len, __ATOMIC_RELAXED);
            best = seq;
            found = true;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    return found;
}

/* ---- buffers -------------------------------------------------------------------------- */

static int reserve(fs_handle *h, size_t need)
{
    if (need <= h->cap)
        return 0;
    if (need > FS_MAX_VALUE)
        return -EFBIG;
    size_t cap = h->cap ? h->cap : 4096;
    while (cap < need)
        cap *= 2;
    uint8_t *n = realloc(h->buf, cap);
    if (!n)
        return -ENOMEM;
    h->buf = n;
    h->cap = cap;
    return 0;
}

static void set_len(fs_handle *h, size_t len)
{
    if (len > h->len)
        memset(h->buf + h->len, 0, len - h->len);
    __atomic_store_n(&h->len, len, __ATOMIC_RELAXED);
}

static fs_handle *handle_new(fs_state *st, uint64_t ino, bool writable)
{
    fs_handle *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->st = st;
    h->ino = ino;
    h->writable = writable;
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

static void handle_free(fs_handle *h)
{
    if (h->snap)
        cache_value_put(h->snap);
    free(h->buf);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

int handle_open_read(fs_state *st, uint64_t ino, fs_handle **out)
{
    fs_handle *h = handle_new(st, ino, false);
    if (!h)
        return -ENOMEM;
    int r = scratch_snapshot(ino, &h->snap);
    if (r == -ENOENT) {
        r = cache_read(st->cache, ino, &h->snap);
        h->snap_from_cache = r == 0;
    }
    if (r < 0) {
        handle_free(h);
        return r;
    }
    *out = h;
    return 0;
}

int handle_open_write(fs_state *st, uint64_t ino, const cache_attr *a, bool trunc, bool is_new,
                      fs_handle **out)
{
    fs_handle *h = handle_new(st, ino, true);
    if (!h)
        return -ENOMEM;
    h->base_rev = a->mod_revision;
    if (is_new) {
        h->dirty = true;                    /* touch: the key appears at close */
    } else if (trunc) {
        h->dirty = a->size > 0;             /* "> f" empties f even if nothing is written */
    } else {
        cache_value *v;
        int r = scratch_snapshot(ino, &v);
        if (r == -ENOENT)
            r = cache_read(st->cache, ino, &v);
        if (r == 0) {
            r = reserve(h, v->len);
            if (r == 0) {
                memcpy(h->buf, v->data, v->len);
                h->len = v->len;
                /* a: what the opener read (scratch_base_rev), else the value's revision */
                h->base_rev = a->mod_revision ? a->mod_revision : v->mod_revision;
            }
            cache_value_put(v);
        }
        if (r < 0) {
            handle_free(h);
            return r;
        }
    }
    reg_add(h);
    *out = h;
    return 0;
}

bool handle_writable(const fs_handle *h)
{
    return h->writable;
}

/* A read served from an older snapshot may land in the page cache after the notifier already
 * invalidated it for a newer value (the reply fills pages as it is written): with keep_cache
 * those stale pages would outlive every later open. So once the reply is in, if the key moved
 * on meanwhile, invalidate again. Checked after the reply, so either this check or the
 * notifier's own invalidation comes after the pages were filled. */
static void drop_stale_pages(cache *c, uint64_t ino, int64_t served_rev)
{
    cache_attr a;
    if (cache_getattr(c, ino, &a) == 0 && a.mod_revision != served_rev) {
        cache_event ev = { .type = CACHE_EV_MODIFIED, .ino = ino, .remote = true };
        notify_cache_event(NULL, &ev);
    }
}

/* The value a read handle serves: its snapshot, except that the first read, when the key changed
 * between open and that read, takes the current value. The kernel's file size follows the newest
 * value (attributes are refreshed after an invalidation), so a read served from the older
 * snapshot would be cut or padded to the new length. Once a read was answered the handle keeps
 * its snapshot (values read in several requests are opened with direct_io, so the kernel does
 * not clip them to a newer size). Returns a reference. */
static cache_value *read_value(fs_handle *h, off_t off)
{
    pthread_mutex_lock(&h->mu);
    cache_attr a;
    cache_value *nv;
    if (!h->served && off == 0 && h->snap_from_cache &&
        cache_getattr(h->st->cache, h->ino, &a) == 0 && a.mod_revision != h->snap->mod_revision &&
        cache_read(h->st->cache, h->ino, &nv) == 0) {
        cache_value_put(h->snap);
        h->snap = nv;
    }
    h->served = true;
    cache_value *v = cache_value_get(h->snap);
    pthread_mutex_unlock(&h->mu);
    return v;
}

int64_t fs_loaded_revision;

bool handle_direct_io(const fs_handle *h)
{
    cache_attr a;
    if (h->writable || h->snap->len <= FS_DIRECT_IO_MIN ||
        cache_getattr(h->st->cache, h->ino, &a) < 0)
        return false;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return a.mod_revision > fs_loaded_revision && now.tv_sec - a.mtime.tv_sec < FS_HOT_SECONDS;
}

void handle_read(fs_handle *h, fuse_req_t req, size_t size, off_t off)
{
    if (!h->writable) {
        cache_value *v = read_value(h, off);
        /* Once replied, the kernel may release (and free) h at any moment. */
        cache *c = h->st->cache;
        uint64_t ino = h->ino;
        int64_t served_rev = v->mod_revision;
        if (off < 0 || (uint64_t)off >= v->len)
            fuse_reply_buf(req, NULL, 0);
        else
            fuse_reply_buf(req, (const char *)v->data + off,
                           size < v->len - (size_t)off ? size : v->len - (size_t)off);
        cache_value_put(v);
        drop_stale_pages(c, ino, served_rev);
        return;
    }
    pthread_mutex_lock(&h->mu);
    if (off < 0 || (uint64_t)off >= h->len)
        fuse_reply_buf(req, NULL, 0);
    else
        fuse_reply_buf(req, (const char *)h->buf + off,
                       size < h->len - (size_t)off ? size : h->len - (size_t)off);
    pthread_mutex_unlock(&h->mu);
}

long handle_write(fs_handle *h, const char *buf, size_t size, off_t off)
{
    if (!h->writable)
        return -EBADF;
    if (off < 0 || (uint64_t)off + size > FS_MAX_VALUE)
        return -EFBIG;
    pthread_mutex_lock(&h->mu);
    size_t end = (size_t)off + size;
    int r = reserve(h, end);
    if (r == 0) {
        if (end > h->len)
            set_len(h, end);
        memcpy(h->buf + off, buf, size);
        h->dirty = true;
        reg_touch(h);
    }
    pthread_mutex_unlock(&h->mu);
    return r < 0 ? r : (long)size;
}

static int truncate_locked(fs_handle *h, uint64_t size)
{
    if (size > FS_MAX_VALUE)
        return -EFBIG;
    int r = reserve(h, (size_t)size);
    if (r < 0)
        return r;
    if (size != h->len) {
        set_len(h, (size_t)size);
        h->dirty = true;
    }
    reg_touch(h);
    return 0;
}

int handle_truncate(fs_handle *h, uint64_t size)
{
    if (!h->writable)
        return -EBADF;
    pthread_mutex_lock(&h->mu);
    int r = truncate_locked(h, size);
    pthread_mutex_unlock(&h->mu);
    return r;
}

int handle_truncate_ino(uint64_t ino, uint64_t size)
{
    /* The newest write handle; reg_mu is held throughout so that a concurrent release (which
     * unregisters under reg_mu before freeing) cannot free it under us. */
    fs_handle *best = NULL;
    pthread_mutex_lock(&reg_mu);
    for (fs_handle *h = *reg_bucket(ino); h; h = h->next)
        if (h->ino == ino && (!best || __atomic_load_n(&h->seq, __ATOMIC_RELAXED) >
                                        __atomic_load_n(&best->seq, __ATOMIC_RELAXED)))
            best = h;
    int r = -ENOENT;
    if (best) {
        pthread_mutex_lock(&best->mu);
        r = truncate_locked(best, size);
        pthread_mutex_unlock(&best->mu);
    }
    pthread_mutex_unlock(&reg_mu);
    return r;
}

int handle_commit(fs_handle *h)
{
    if (!h->writable)
        return 0;
    pthread_mutex_lock(&h->mu);
    int r = 0;
    if (h->dirty) {
        cache_attr a = { .mod_revision = h->base_rev };
        char key[512];
        r = scratch_store(h->ino, h->buf, h->len);      /* scratch: memory only */
        if (r == -ENOENT) {
            fs_dbg("save %s (%zu bytes)", fs_key_str(h->st, h->ino, key, sizeof(key)), h->len);
            r = cache_write(h->st->cache, h->ino, h->buf, h->len, h->base_rev, &a);
        }
        if (r == 0) {
            h->dirty = false;
            h->commit_failed = false;
            h->base_rev = a.mod_revision;   /* a later save compares with our own write */
        } else {
            h->commit_failed = true;
            fs_log(LOG_ERR, "write of %s failed: %s", fs_key_str(h->st, h->ino, key, sizeof(key)),
                   strerror(-r));
        }
    }
    pthread_mutex_unlock(&h->mu);
    return r;
}

/* Reads /proc/PID/fdinfo/FD: open flags, mount id and inode. */
static bool read_fdinfo(const char *path, unsigned *flags, int *mnt_id, uint64_t *ino)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char line[128];
    int have = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long v;
        if (sscanf(line, "flags: %o", flags) == 1)
            have |= 1;
        else if (sscanf(line, "mnt_id: %d", mnt_id) == 1)
            have |= 2;
        else if (sscanf(line, "ino: %llu", &v) == 1) {
            *ino = v;
            have |= 4;
        }
    }
    fclose(f);
    return have == 7;
}

/* Whether pid has a writable fd on ino of this mount (the fd being closed is already gone
 * from its table when the kernel sends FLUSH). Unknown → false: then we save, as usual. */
static bool pid_has_other_writer(fs_state *st, pid_t pid, uint64_t ino)
{
    if (pid <= 0 || st->mnt_id < 0)
        return false;
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/fdinfo", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[sizeof(dir) + sizeof(e->d_name) + 1];
        unsigned flags = 0;
        int mnt = -1;
        uint64_t fino = 0;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (read_fdinfo(path, &flags, &mnt, &fino) && mnt == st->mnt_id && fino == ino &&
            (flags & O_ACCMODE) != O_RDONLY)
            found = true;
    }
    closedir(d);
    return found;
}

int handle_flush(fs_handle *h, pid_t pid)
{
    if (!h->writable)
        return 0;
    pthread_mutex_lock(&h->mu);
    bool dirty = h->dirty;
    pthread_mutex_unlock(&h->mu);
    if (dirty && pid_has_other_writer(h->st, pid, h->ino)) {
        fs_dbg("flush of inode %llu deferred: pid %d still has it open for writing",
               (unsigned long long)h->ino, (int)pid);
        return 0;
    }
    return handle_commit(h);
}

/* The kernel took the size of our buffer; when etcd did not take the buffer, the size must be
 * asked again (through the notifier: never from a FUSE worker). */
static void reinvalidate(fs_handle *h)
{
    cache_event ev = { .type = CACHE_EV_MODIFIED, .ino = h->ino };
    notify_cache_event(NULL, &ev);
}

void handle_release(fs_handle *h)
{
    if (h->writable) {
        /* A flush normally saved already; this catches writes that came after it (mmap). */
        if (h->dirty && !h->commit_failed)
            handle_commit(h);
        reg_del(h);
        if (h->dirty)
            reinvalidate(h);
    }
    handle_free(h);
}

void handle_commit_all(void)
{
    /* At unmount no request runs any more. A file still open for writing was never closed:
     * its buffer may be half of what its writer meant (cp killed mid-copy, a SIGTERM during a
     * write), and etcd must never hold a partial value. So it is not saved: its writer sees
     * the failure (ENOTCONN) and etcd keeps the old value. */
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < REG_BUCKETS; i++)
        for (fs_handle *h = reg[i]; h; h = h->next)
            if (h->dirty && !h->commit_failed) {
                char key[512];
                fs_log(LOG_WARNING, "%s: still open for writing at unmount: not saved, etcd "
                       "keeps its value", fs_key_str(h->st, h->ino, key, sizeof(key)));
            }
    pthread_mutex_unlock(&reg_mu);
}

/* echo.c — makes remote changes visible to inotify: a dedicated thread replays each remote cache
 * event as the real syscall on our own mount (write / O_CREAT / mkdir / unlink / rmdir), and
 * the hooks below answer those requests (recognised by the caller's thread id) from the cache,
 * with nothing sent to etcd. Owns the bounded, coalescing replay queue and the tombstones that
 * let an already-deleted entry be looked up and unlinked once more. */
#include "echo.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FULL_WAIT_MS 50          /* how long the cache's thread may wait on a full queue */
#define SET_BUCKETS 4096
#define STOP_WAIT_MS 1000

typedef struct eev {
    int type;
    uint64_t ino, parent;
    bool is_dir;
    char *name, *path;
    struct eev *next;            /* queue */
    struct eev *tnext;           /* tombstone chain (DELETED events still to replay) */
} eev;

typedef struct pending {         /* an inode with a MODIFIED in the queue */
    uint64_t ino;
    struct pending *next;
} pending;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t more, space;
    eev *head, *tail;
    size_t n;
    pending *mods[SET_BUCKETS];
    eev *tombs[SET_BUCKETS];
    eev *cur;                    /* the event being replayed right now */
    bool active, stop, started;
    unsigned long dropped;
    pid_t tid;                   /* the echo thread's id: FUSE requests carry it as pid */
    pthread_t thread;
    fs_state *st;
    char *mnt;
} q = { .mu = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER,
        .space = PTHREAD_COND_INITIALIZER };

/* The fh of every open made by the echo: release/flush may come with pid 0. */
static char echo_fh_tag;
#define ECHO_FH ((uint64_t)(uintptr_t)&echo_fh_tag)

/* ---- tables (q.mu held) ----------------------------------------------------------------- */

static size_t ino_bucket(uint64_t ino)
{
    return (ino * 0x9E3779B97F4A7C15ULL) >> 52 & (SET_BUCKETS - 1);
}

static size_t name_bucket(uint64_t parent, const char *name)
{
    uint64_t h = 1469598103934665603ULL ^ parent;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    return ino_bucket(h);
}

static pending **mod_slot(uint64_t ino)
{
    pending **p = &q.mods[ino_bucket(ino)];
    while (*p && (*p)->ino != ino)
        p = &(*p)->next;
    return p;
}

static void mod_del(uint64_t ino)
{
    pending **p = mod_slot(ino);
    if (*p) {
        pending *n = *p;
        *p = n->next;
        free(n);
    }
}

static void tomb_add(eev *e)
{
    eev **p = &q.tombs[name_bucket(e->parent, e->name)];
    while (*p)                   /* oldest first: the replay meets them in queue order */
        p = &(*p)->tnext;
    *p = e;
}

static void tomb_del(eev *e)
{
    for (eev **p = &q.tombs[name_bucket(e->parent, e->name)]; *p; p = &(*p)->tnext) {
        if (*p == e) {
            *p = e->tnext;
            return;
        }
    }
}

static eev *tomb_find(uint64_t parent, const char *name)
{
    for (eev *t = q.tombs[name_bucket(parent, name)]; t; t = t->tnext)
        if (t->parent == parent && strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static void eev_free(eev *e)
{
    free(e->name);
    free(e->path);
    free(e);
}

/* ---- the listener side ------------------------------------------------------------------ */

static bool wait_for_space(void)
{
    if (q.n < ECHO_QUEUE_MAX)
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += FULL_WAIT_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    while (q.n >= ECHO_QUEUE_MAX && !q.stop)
        if (pthread_cond_timedwait(&q.space, &q.mu, &ts) == ETIMEDOUT)
            break;
    if (q.n < ECHO_QUEUE_MAX && !q.stop)
        return true;
    if (q.dropped++ % 1000 == 0)
        fs_log(LOG_WARNING, "inotify echo queue full: some remote changes raise no inotify "
               "event");
    return false;
}

bool echo_cache_event(const cache_event *ev, const char *path)
{
    bool queued = false;
    if (!path || !ev->name)
        return false;
    pthread_mutex_lock(&q.mu);
    if (!q.active || q.stop)
        goto out;
    if (ev->type == CACHE_EV_MODIFIED && *mod_slot(ev->ino))
        goto out;                /* already queued: the replay writes the newest value */
    if (!wait_for_space())
        goto out;
    eev *e = calloc(1, sizeof(*e));
    pending *m = ev->type == CACHE_EV_MODIFIED ? calloc(1, sizeof(*m)) : NULL;
    if (!e || !(e->name = strdup(ev->name)) || !(e->path = strdup(path)) ||
        (ev->type == CACHE_EV_MODIFIED && !m)) {
        if (e)
            eev_free(e);
        free(m);
        goto out;
    }
    e->type = ev->type;
    e->ino = ev->ino;
    e->parent = ev->parent;
    e->is_dir = ev->is_dir;
    if (m) {
        m->ino = ev->ino;
        *mod_slot(ev->ino) = m;
    }
    if (e->type == CACHE_EV_DELETED)
        tomb_add(e);
    if (q.tail)
        q.tail->next = e;
    else
        q.head = e;
    q.tail = e;
    q.n++;
    queued = true;
    pthread_cond_signal(&q.more);
out:
    pthread_mutex_unlock(&q.mu);
    return queued;
}

/* ---- replay (the echo thread) ----------------------------------------------------------- */

static void inval_entry(const eev *e)
{
    fuse_lowlevel_notify_inval_entry(q.st->se, e->parent, e->name, strlen(e->name));
}

/* The value now (the newest one, whatever the queue coalesced), at least one byte so that
 * write(2) raises IN_MODIFY. */
static void write_value(int fd, uint64_t ino)
{
    cache_value *v = NULL;
    const char *data = "\n";
    size_t len = 1;
    if (cache_read(q.st->cache, ino, &v) == 0 && v->len > 0) {
        data = (const char *)v->data;
        len = v->len;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (v)
        cache_value_put(v);
}

static int open_new(const eev *e, const char *full)
{
    int fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        /* someone looked the new name up before us: forget the dentry, then create */
        inval_entry(e);
        fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST)
            fd = open(full, O_WRONLY | O_CLOEXEC);    /* at least IN_MODIFY */
    }
    return fd;
}

/* mkdir/unlink/rmdir, retried once after dropping a stale dentry. */
static int entry_op(const eev *e, const char *full)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int r = e->type == CACHE_EV_CREATED ? mkdir(full, 0700)
                : e->is_dir ? rmdir(full) : unlink(full);
        if (r == 0)
            return 0;
        int err = errno;
        bool stale = e->type == CACHE_EV_CREATED ? err == EEXIST : err == ENOENT;
        if (!stale || attempt)
            return -err;
        inval_entry(e);
    }
    return 0;
}

static void replay(const eev *e)
{
    char full[PATH_MAX];
    if ((size_t)snprintf(full, sizeof(full), "%s%s", q.mnt, e->path) >= sizeof(full)) {
        fs_dbg("echo: path too long for %s", e->name);
        return;
    }
    int r = 0;
    if (!e->is_dir && e->type != CACHE_EV_DELETED) {
        int fd = e->type == CACHE_EV_CREATED ? open_new(e, full)
                                             : open(full, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            r = -errno;
        } else {
            write_value(fd, e->ino);
            close(fd);
        }
    } else {
        r = entry_op(e, full);
    }
    if (r < 0 && e->type == CACHE_EV_DELETED) {
        /* the notifier left this delete to us: the kernel must forget the entry anyway */
        if (fuse_lowlevel_notify_delete(q.st->se, e->parent, e->ino, e->name,
                                        strlen(e->name)) < 0)
            inval_entry(e);
    }
    if (r < 0)
        fs_dbg("echo: %s %s: %s", e->type == CACHE_EV_DELETED ? "delete" :
               e->type == CACHE_EV_CREATED ? "create" : "modify", e->path, strerror(-r));
}

static void sleep_ms(int ms)
{
    struct timespec d = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&d, &d) < 0 && errno == EINTR)
        ;
}

/* The directory the echo created last, and when: watchers (inotifywait -r) add their watch on
 * a new directory only once they read its IN_CREATE, and miss whatever is created in it before.
 * So the first replay inside it waits until ECHO_DIR_SETTLE_MS after the mkdir. */
static uint64_t new_dir;
static struct timespec new_dir_at;

static void settle(const eev *e)
{
    if (!new_dir || e->parent != new_dir)
        return;
    new_dir = 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - new_dir_at.tv_sec) * 1000 +
              (now.tv_nsec - new_dir_at.tv_nsec) / 1000000;
    if (ms < ECHO_DIR_SETTLE_MS)
        sleep_ms((int)(ECHO_DIR_SETTLE_MS - ms));
}

static void *echo_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&q.mu);
    q.tid = (pid_t)syscall(SYS_gettid);
    for (;;) {
        while ((!q.head || !q.active) && !q.stop)
            pthread_cond_wait(&q.more, &q.mu);
        if (q.stop)
            break;
        eev *e = q.head;
        q.head = e->next;
        if (!q.head)
            q.tail = NULL;
        q.n--;
        if (e->type == CACHE_EV_MODIFIED)
            mod_del(e->ino);
        q.cur = e;
        pthread_cond_signal(&q.space);
        pthread_mutex_unlock(&q.mu);

        settle(e);
        replay(e);

        pthread_mutex_lock(&q.mu);
        q.cur = NULL;
        if (e->type == CACHE_EV_DELETED)
            tomb_del(e);
        if (e->type == CACHE_EV_CREATED && e->is_dir) {
            new_dir = e->ino;
            clock_gettime(CLOCK_MONOTONIC, &new_dir_at);
        }
        eev_free(e);
    }
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

int echo_start(fs_state *st, const char *mountpoint)
{
    q.st = st;
    q.mnt = strdup(mountpoint);
    if (!q.mnt)
        return -ENOMEM;
    size_t l = strlen(q.mnt);
    if (l && q.mnt[l - 1] == '/')
        q.mnt[l - 1] = '\0';     /* event paths begin with '/' */
    q.stop = false;
    int r = pthread_create(&q.thread, NULL, echo_main, NULL);
    if (r) {
        free(q.mnt);
        q.mnt = NULL;
        return -r;
    }
    q.started = true;
    return 0;
}

void echo_activate(void)
{
    pthread_mutex_lock(&q.mu);
    q.active = q.started;
    pthread_cond_broadcast(&q.more);
    pthread_mutex_unlock(&q.mu);
}

void echo_stop(void)
{
    if (!q.started)
        return;
    pthread_mutex_lock(&q.mu);
    q.stop = true;
    q.active = false;
    pthread_cond_broadcast(&q.more);
    pthread_cond_broadcast(&q.space);
    pthread_mutex_unlock(&q.mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += STOP_WAIT_MS / 1000;
    if (pthread_timedjoin_np(q.thread, NULL, &ts) != 0) {
        /* blocked in a syscall on the mount no one serves any more: it returns (ENOTCONN)
         * when the session closes, sees stop and exits without touching anything else */
        fs_log(LOG_WARNING, "inotify echo thread did not stop; abandoned");
        pthread_detach(q.thread);
        q.started = false;
        return;
    }
    q.started = false;
    pthread_mutex_lock(&q.mu);
    while (q.head) {
        eev *e = q.head;
        q.head = e->next;
        eev_free(e);
    }
    q.tail = NULL;
    q.n = 0;
    for (size_t i = 0; i < SET_BUCKETS; i++) {
        q.tombs[i] = NULL;
        while (q.mods[i])
            mod_del(q.mods[i]->ino);
    }
    pthread_mutex_unlock(&q.mu);
    free(q.mnt);
    q.mnt = NULL;
}

/* ---- ops.c hooks -------------------------------------------------------------------------- */

static bool is_echo(fuse_req_t req)
{
    pid_t tid = __atomic_load_n(&q.tid, __ATOMIC_RELAXED);
    return tid > 0 && fuse_req_ctx(req)->pid == tid;
}

/* Attributes of an entry being replayed: the cache's, or (a node it already forgot) made up
 * from the event, so the kernel can create or delete the name once more. */
static void entry_of(uint64_t ino, bool is_dir, double timeout, struct fuse_entry_param *e)
{
    fs_state *st = q.st;
    cache_attr a;
    memset(e, 0, sizeof(*e));
    if (cache_getattr(st->cache, ino, &a) < 0 || a.is_dir != is_dir) {
        memset(&a, 0, sizeof(a));
        a.ino = ino;
        a.is_dir = is_dir;
        a.nlink = is_dir ? 2 : 1;
        clock_gettime(CLOCK_REALTIME, &a.mtime);
        a.ctime = a.mtime;
    }
    e->ino = ino;
    e->generation = 1;
    e->attr_timeout = timeout;
    e->entry_timeout = timeout;
    struct stat *s = &e->attr;
    s->st_ino = ino;
    s->st_mode = is_dir ? (S_IFDIR | st->dir_mode) : (S_IFREG | st->file_mode);
    s->st_nlink = a.nlink ? a.nlink : 1;
    s->st_uid = st->uid;
    s->st_gid = st->gid;
    s->st_size = (off_t)a.size;
    s->st_blksize = 4096;
    s->st_blocks = (blkcnt_t)((a.size + 511) / 512);
    s->st_mtim = a.mtime;
    s->st_ctim = a.ctime;
    s->st_atim = a.mtime;
}

/* The entry the echo thread is creating right now, if (parent, name) is it. */
static bool creating(uint64_t parent, const char *name, bool is_dir, uint64_t *ino)
{
    pthread_mutex_lock(&q.mu);
    eev *c = q.cur;
    bool yes = c && c->type == CACHE_EV_CREATED && c->is_dir == is_dir &&
               c->parent == parent && strcmp(c->name, name) == 0;
    if (yes)
        *ino = c->ino;
    pthread_mutex_unlock(&q.mu);
    return yes;
}

bool echo_lookup(fuse_req_t req, uint64_t parent, const char *name)
{
    if (!is_echo(req))
        return false;
    pthread_mutex_lock(&q.mu);
    eev *c = q.cur;
    if (c && c->type == CACHE_EV_CREATED && c->parent == parent && strcmp(c->name, name) == 0) {
        /* absent, so that the replayed create/mkdir really creates (IN_CREATE) */
        pthread_mutex_unlock(&q.mu);
        fuse_reply_err(req, ENOENT);
        return true;
    }
    eev *t = tomb_find(parent, name);
    uint64_t ino = t ? t->ino : 0;
    bool is_dir = t && t->is_dir;
    pthread_mutex_unlock(&q.mu);
    if (!t)
        return false;            /* an ordinary lookup on the way */
    struct fuse_entry_param e;
    entry_of(ino, is_dir, 0.0, &e);
    cache_ref(q.st->cache, ino, 1);     /* no-op for a node the cache already freed */
    if (fuse_reply_entry(req, &e) < 0)
        cache_forget(q.st->cache, ino, 1);
    return true;
}

bool echo_create(fuse_req_t req, uint64_t parent, const char *name, struct fuse_file_info *fi)
{
    if (!is_echo(req))
        return false;
    uint64_t ino;
    if (!creating(parent, name, false, &ino)) {
        fuse_reply_err(req, EIO);       /* the echo creates nothing else, and never in etcd */
        return true;
    }
    struct fuse_entry_param e;
    entry_of(ino, false, FS_TIMEOUT, &e);
    cache_ref(q.st->cache, ino, 1);
    fi->fh = ECHO_FH;
    fi->direct_io = 1;
    if (fuse_reply_create(req, &e, fi) < 0)
        cache_forget(q.st->cache, ino, 1);
    return true;
}

bool echo_mkdir(fuse_req_t req, uint64_t parent, const char *name)
{
    if (!is_echo(req))
        return false;
    uint64_t ino;
    if (!creating(parent, name, true, &ino)) {
        fuse_reply_err(req, EIO);
        return true;
    }
    struct fuse_entry_param e;
    entry_of(ino, true, FS_TIMEOUT, &e);
    cache_ref(q.st->cache, ino, 1);
    if (fuse_reply_entry(req, &e) < 0)
        cache_forget(q.st->cache, ino, 1);
    return true;
}

bool echo_unlink(fuse_req_t req, uint64_t parent, const char *name)
{
    if (!is_echo(req))
        return false;
    pthread_mutex_lock(&q.mu);
    bool known = tomb_find(parent, name) != NULL;
    pthread_mutex_unlock(&q.mu);
    fuse_reply_err(req, known ? 0 : EIO);
    return true;
}

bool echo_open(fuse_req_t req, uint64_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    if (!is_echo(req) || (fi->flags & O_ACCMODE) == O_RDONLY)
        return false;
    fi->fh = ECHO_FH;
    fi->direct_io = 1;          /* the data goes nowhere; the page cache stays the cache's */
    fi->keep_cache = 0;
    fuse_reply_open(req, fi);
    return true;
}

bool echo_write(fuse_req_t req, size_t size, struct fuse_file_info *fi)
{
    if (!fi || fi->fh != ECHO_FH)
        return false;
    fuse_reply_write(req, size);
    return true;
}

bool echo_flush(fuse_req_t req, struct fuse_file_info *fi)
{
    if (!fi || fi->fh != ECHO_FH)
        return false;
    fuse_reply_err(req, 0);
    return true;
}

bool echo_release(fuse_req_t req, struct fuse_file_info *fi)
{
    return echo_flush(req, fi);
}

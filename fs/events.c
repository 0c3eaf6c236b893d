/* events.c — MNT/.cluster/events (one line per file change, streamed to every open reader, each
 * with its own bounded backlog) and the naming of cache events as mount paths, shared with the
 * inotify echo (echo.c). Runs on the cache's sync thread (events_cache_event) and on FUSE
 * workers (open/read/release); a slow reader only ever loses its own backlog. */
#include "events.h"
#include "echo.h"

#include "../cache/keypath.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_SLICE_MS 100      /* a blocked read re-checks interrupts and shutdown this often */
#define DIRMAP_MAX 65536       /* learned directory paths; beyond: forgotten, re-learned */
#define DIRMAP_BUCKETS 8192

/* ---- readers ---------------------------------------------------------------------------- */

struct events_reader {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    char *buf;                 /* queued bytes: buf[head .. head+len) */
    size_t head, len, cap;
    size_t lines;
    bool overflowed;           /* OVERFLOW queued: the backlog was dropped */
    bool interrupted;          /* the blocked read's FUSE_INTERRUPT arrived */
    bool closed;
    int waiting;               /* reads blocked in events_read */
    events_reader *next;
};

static struct {
    pthread_mutex_t mu;        /* the reader list; taken before a reader's mu */
    events_reader *readers;
    int n_readers;
    bool shutdown;
    fs_state *st;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER };

void events_init(fs_state *st)
{
    g.st = st;
}

/* Called with r->mu held. Overflow keeps the mount going: the reader loses its backlog and
 * learns so from one OVERFLOW line, then continues with new events. */
static void reader_push(events_reader *r, const char *line, size_t n)
{
    if (r->lines >= EVENTS_MAX_LINES || r->len + n > EVENTS_MAX_BYTES) {
        if (!r->overflowed)
            fs_log(LOG_WARNING, ".cluster/events: a reader fell %zu lines behind; its backlog "
                   "was dropped (OVERFLOW)", r->lines);
        r->head = r->len = r->lines = 0;
        r->overflowed = true;
        line = "OVERFLOW\n";
        n = strlen(line);
    } else {
        r->overflowed = false;
    }
    if (r->head && r->head + r->len + n > r->cap) {
        memmove(r->buf, r->buf + r->head, r->len);
        r->head = 0;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n)
            cap *= 2;
        char *b = realloc(r->buf, cap);
        if (!b)
            return;            /* the line is lost for this reader only */
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->head + r->len, line, n);
    r->len += n;
    r->lines++;
    pthread_cond_broadcast(&r->cond);
}

static void broadcast_line(const char *line, size_t n)
{
    pthread_mutex_lock(&g.mu);
    for (events_reader *r = g.readers; r; r = r->next) {
        pthread_mutex_lock(&r->mu);
        if (!r->closed)
            reader_push(r, line, n);
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&g.mu);
}

int events_open(events_reader **out)
{
    events_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&g.mu);
    if (g.n_readers >= EVENTS_MAX_READERS) {
        pthread_mutex_unlock(&g.mu);
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->mu);
        free(r);
        fs_log(LOG_WARNING, ".cluster/events: more than %d readers refused",
               EVENTS_MAX_READERS);
        return -EMFILE;
    }
    r->next = g.readers;
    g.readers = r;
    g.n_readers++;
    pthread_mutex_unlock(&g.mu);
    *out = r;
    return 0;
}

static void on_interrupt(fuse_req_t req, void *data)
{
    (void)req;
    events_reader *r = data;
    pthread_mutex_lock(&r->mu);
    r->interrupted = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

static bool stopping(void)
{
    return __atomic_load_n(&g.shutdown, __ATOMIC_ACQUIRE) ||
           (g.st && g.st->se && fuse_session_exited(g.st->se));
}

void events_read(events_reader *r, fuse_req_t req, size_t size)
{
    /* Registered outside r->mu: libfuse calls on_interrupt with the request's lock held. */
    fuse_req_interrupt_func(req, on_interrupt, r);
    pthread_mutex_lock(&r->mu);
    r->waiting++;
    while (r->len == 0 && !r->closed && !r->interrupted && !stopping()) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += WAIT_SLICE_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&r->cond, &r->mu, &ts);
        if (fuse_req_interrupted(req))
            r->interrupted = true;
    }
    size_t n = r->len < size ? r->len : size;
    char *out = n ? malloc(n) : NULL;
    if (n && !out)
        n = 0;
    if (n) {
        memcpy(out, r->buf + r->head, n);
        /* count whole lines handed out, so the line limit tracks what is still queued */
        for (size_t i = 0; i < n; i++)
            if (out[i] == '\n' && r->lines)
                r->lines--;
        r->head += n;
        r->len -= n;
        if (!r->len)
            r->head = 0;
    }
    bool intr = r->interrupted && n == 0;
    r->interrupted = false;
    r->waiting--;
    pthread_mutex_unlock(&r->mu);
    fuse_req_interrupt_func(req, NULL, NULL);
    if (intr)
        fuse_reply_err(req, EINTR);
    else
        fuse_reply_buf(req, out, n);
    free(out);
}

void events_release(events_reader *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&g.mu);
    for (events_reader **p = &g.readers; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            g.n_readers--;
            break;
        }
    }
    pthread_mutex_unlock(&g.mu);
    /* The kernel releases only once no read is in flight; a read still waiting here would be
     * a libfuse reordering: wake it and wait until it has left. */
    pthread_mutex_lock(&r->mu);
    r->closed = true;
    pthread_cond_broadcast(&r->cond);
    while (r->waiting) {
        pthread_mutex_unlock(&r->mu);
        struct timespec d = { 0, 1000000 };
        nanosleep(&d, NULL);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r->buf);
    free(r);
}

void events_shutdown(void)
{
    __atomic_store_n(&g.shutdown, true, __ATOMIC_RELEASE);
    pthread_mutex_lock(&g.mu);
    for (events_reader *r = g.readers; r; r = r->next) {
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&g.mu);
}

/* ---- naming events: directory ino → mount path ------------------------------------------- *
 * cache.h has no parent walk, and by the time an event is delivered its node (and, for an
 * emptied prefix, its parents) may be gone. So paths come from what events themselves carry:
 * a file's key names every directory above it (keypath_split, exactly as the cache placed
 * it); a directory event names its entry under a parent whose path we learnt from an earlier
 * event (files below it, or its own creation), else from cache_key while it still exists.
 * Only the sync thread touches this map. */

typedef struct dent {
    uint64_t ino;
    char *path;                /* "" for the root, else "/a/b" */
    struct dent *next;
} dent;

static dent *dirmap[DIRMAP_BUCKETS];
static size_t dirmap_n;

static dent **dm_slot(uint64_t ino)
{
    dent **p = &dirmap[(ino * 0x9E3779B97F4A7C15ULL) >> 51 & (DIRMAP_BUCKETS - 1)];
    while (*p && (*p)->ino != ino)
        p = &(*p)->next;
    return p;
}

static void dm_clear(void)
{
    for (size_t i = 0; i < DIRMAP_BUCKETS; i++) {
        while (dirmap[i]) {
            dent *d = dirmap[i];
            dirmap[i] = d->next;
            free(d->path);
            free(d);
        }
    }
    dirmap_n = 0;
}

static void dm_put(uint64_t ino, const char *path, size_t len)
{
    if (ino == CACHE_ROOT_INO)
        return;
    dent **p = dm_slot(ino);
    if (*p && strlen((*p)->path) == len && memcmp((*p)->path, path, len) == 0)
        return;
    char *s = strndup(path, len);
    if (!s)
        return;
    if (*p) {
        free((*p)->path);
        (*p)->path = s;
        return;
    }
    if (dirmap_n >= DIRMAP_MAX) {
        dm_clear();
        p = dm_slot(ino);
    }
    dent *d = calloc(1, sizeof(*d));
    if (!d) {
        free(s);
        return;
    }
    d->ino = ino;
    d->path = s;
    *p = d;
    dirmap_n++;
}

static void dm_del(uint64_t ino)
{
    dent **p = dm_slot(ino);
    if (*p) {
        dent *d = *p;
        *p = d->next;
        free(d->path);
        free(d);
        dirmap_n--;
    }
}

/* A directory that moved or went away locally: what we knew below it is stale. */
static void dm_del_below(const char *path)
{
    size_t len = strlen(path);
    for (size_t i = 0; i < DIRMAP_BUCKETS; i++) {
        for (dent **p = &dirmap[i]; *p;) {
            if (strncmp((*p)->path, path, len) == 0 && (*p)->path[len] == '/') {
                dent *d = *p;
                *p = d->next;
                free(d->path);
                free(d);
                dirmap_n--;
            } else {
                p = &(*p)->next;
            }
        }
    }
}

/* names[0..n) as "/n0/n1/..." ("" for n == 0). */
static char *join_names(char *const *names, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(names[i]) + 1;
    char *s = malloc(len);
    if (!s)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        s[o++] = '/';
        size_t l = strlen(names[i]);
        memcpy(s + o, names[i], l);
        o += l;
    }
    s[o] = '\0';
    return s;
}

/* Path of a directory inode, or NULL. */
static char *dir_path(uint64_t ino)
{
    if (ino == CACHE_ROOT_INO)
        return strdup("");
    dent *d = *dm_slot(ino);
    if (d)
        return strdup(d->path);
    uint8_t *key;
    size_t klen;
    if (!g.st || cache_key(g.st->cache, ino, &key, &klen) < 0)
        return NULL;
    char *path = NULL;
    keypath_names kn = { 0 };
    if (klen > g.st->prefix_len &&
        keypath_split(key + g.st->prefix_len, klen - g.st->prefix_len, &kn) == 0) {
        path = join_names(kn.names, kn.n);
        keypath_names_free(&kn);
    }
    free(key);
    if (path)
        dm_put(ino, path, strlen(path));
    return path;
}

static char *concat(const char *dir, const char *name)
{
    char *s = NULL;
    if (dir && asprintf(&s, "%s/%s", dir, name) < 0)
        s = NULL;
    return s;
}

/* A file's path from its key, when the key still says where it is: every remote event, and
 * local ones except a rename's CREATED (its key is still the old one). */
static char *file_path_from_key(const cache_event *ev)
{
    if (!ev->key || (ev->type == CACHE_EV_CREATED && !ev->remote))
        return NULL;
    size_t plen = g.st->prefix_len;
    if (ev->key_len <= plen)
        return NULL;
    keypath_names kn = { 0 };
    if (keypath_split(ev->key + plen, ev->key_len - plen, &kn) < 0 || kn.n == 0)
        return NULL;
    char *path = NULL;
    const char *last = kn.names[kn.n - 1];
    size_t ll = strlen(last);
    /* the file may be the twin "last%=" beside a directory "last" */
    if (strncmp(ev->name, last, ll) == 0 &&
        (ev->name[ll] == '\0' || strcmp(ev->name + ll, "%=") == 0)) {
        char *dir = join_names(kn.names, kn.n - 1);
        if (dir) {
            dm_put(ev->parent, dir, strlen(dir));
            path = concat(dir, ev->name);
            free(dir);
        }
    }
    keypath_names_free(&kn);
    return path;
}

char *events_path(const cache_event *ev)
{
    if (!g.st || !ev->name || !ev->name[0])
        return NULL;
    if (!ev->is_dir) {
        char *p = file_path_from_key(ev);
        if (p)
            return p;
        char *dir = dir_path(ev->parent);
        p = concat(dir, ev->name);
        free(dir);
        return p;
    }
    char *path = NULL;
    if (ev->type == CACHE_EV_DELETED) {
        /* the directory itself is gone; its last known path also names its parent */
        dent *d = *dm_slot(ev->ino);
        if (d) {
            path = strdup(d->path);
            char *slash = path ? strrchr(path, '/') : NULL;
            if (slash)
                dm_put(ev->parent, path, (size_t)(slash - path));
        }
    }
    if (!path) {
        char *dir = dir_path(ev->parent);
        path = concat(dir, ev->name);
        free(dir);
    }
    if (!path)
        return NULL;
    if (ev->type == CACHE_EV_DELETED) {
        if (!ev->remote)
            dm_del_below(path);
        dm_del(ev->ino);
    } else {
        dm_put(ev->ino, path, strlen(path));
    }
    return path;
}

/* ---- the stream --------------------------------------------------------------------------- */

/* A file changing its name in place (the "%=" twin when a directory of the same name appears
 * or goes): the key did not change, so the stream says nothing. */
static uint64_t moved_ino;

static bool key_unchanged(const cache_event *ev)
{
    uint8_t *key;
    size_t klen;
    if (!ev->key || cache_key(g.st->cache, ev->ino, &key, &klen) < 0)
        return false;
    bool same = klen == ev->key_len && memcmp(key, ev->key, klen) == 0;
    free(key);
    return same;
}

static void stream_event(const cache_event *ev, const char *path)
{
    if (ev->is_dir || !path)
        return;
    int64_t rev = ev->mod_revision;
    cache_attr a;
    bool alive = cache_getattr(g.st->cache, ev->ino, &a) == 0 && a.nlink > 0;
    const char *what = ev->type == CACHE_EV_DELETED ? "DELETE" : "PUT";
    if (ev->type == CACHE_EV_DELETED && alive && key_unchanged(ev)) {
        moved_ino = ev->ino;
        return;
    }
    if (ev->type == CACHE_EV_CREATED && moved_ino == ev->ino) {
        moved_ino = 0;
        return;
    }
    if (!ev->remote && alive && a.mod_revision > rev)
        rev = a.mod_revision;       /* a local rename: its events predate the new revision */
    if (rev == 0)
        return;                     /* a local file not in etcd yet */
    char *line = NULL;
    int n = asprintf(&line, "%s %s %" PRId64 "\n", what, path, rev);
    if (n > 0)
        broadcast_line(line, (size_t)n);
    free(line);
}

bool events_cache_event(const cache_event *ev)
{
    if (!g.st)
        return false;
    char *path = events_path(ev);
    pthread_mutex_lock(&g.mu);
    bool listening = g.readers != NULL;
    pthread_mutex_unlock(&g.mu);
    if (listening)
        stream_event(ev, path);
    bool echoed = ev->remote && echo_cache_event(ev, path);
    free(path);
    return echoed && ev->type == CACHE_EV_DELETED;
}

/* notify.c — tells the kernel what changed, so it can keep long attribute/entry/page caches:
 * the cache's listener only enqueues (bounded queue, repeated MODIFIED of one inode coalesced);
 * a thread of our own calls fuse_lowlevel_notify_*, never a FUSE worker and never under a cache
 * lock, since the kernel may wait on a directory lock held by a request we are serving. */
#include "ops.h"
#include "echo.h"
#include "events.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE_MAX 65536
#define SET_BUCKETS 4096
#define FULL_WAIT_MS 50     /* how long the cache's thread may be held up by a full queue */

typedef struct nev {
    int type;
    uint64_t ino, parent;
    bool is_dir;
    bool echoed;                /* a remote delete the inotify echo replays */
    char *name;
    struct nev *next;
} nev;

typedef struct pending {    /* an inode with a MODIFIED in the queue */
    uint64_t ino;
    struct pending *next;
} pending;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t more, space;
    nev *head, *tail;
    size_t n;
    pending *set[SET_BUCKETS];
    bool active, stop, started;
    unsigned long dropped;
    pthread_t thread;
    fs_state *st;
} q = { .mu = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER,
        .space = PTHREAD_COND_INITIALIZER };

static pending **set_slot(uint64_t ino)
{
    pending **p = &q.set[(ino * 0x9E3779B97F4A7C15ULL) >> 52 & (SET_BUCKETS - 1)];
    while (*p && (*p)->ino != ino)
        p = &(*p)->next;
    return p;
}

/* Called with q.mu held. */
static bool set_add(uint64_t ino)
{
    pending **p = set_slot(ino);
    if (*p)
        return false;
    pending *n = calloc(1, sizeof(*n));
    if (!n)
        return true;            /* no coalescing then, but the event is kept */
    n->ino = ino;
    *p = n;
    return true;
}

static void set_del(uint64_t ino)
{
    pending **p = set_slot(ino);
    if (*p) {
        pending *n = *p;
        *p = n->next;
        free(n);
    }
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_nsec += (long)ms * 1000000L;
    ts->tv_sec += ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}

static uint64_t generation;

uint64_t notify_generation(void)
{
    return __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
}

void notify_cache_event(void *arg, const cache_event *ev)
{
    /* The cache applied ev before telling us: a snapshot taken after reading the old
     * generation may already hold ev, never the other way. */
    __atomic_add_fetch(&generation, 1, __ATOMIC_ACQ_REL);
    /* .cluster/events and the inotify echo (echo.c); true: the echo removes the entry */
    bool echoed = events_cache_event(ev);
    (void)arg;
    pthread_mutex_lock(&q.mu);
    if (!q.active || q.stop)
        goto out;               /* the kernel knows nothing yet, or we are going away */
    if (ev->type == CACHE_EV_MODIFIED && !set_add(ev->ino))
        goto out;               /* already queued */
    if (q.n >= QUEUE_MAX) {
        struct timespec ts;
        deadline_after(&ts, FULL_WAIT_MS);
        while (q.n >= QUEUE_MAX && !q.stop)
            if (pthread_cond_timedwait(&q.space, &q.mu, &ts) == ETIMEDOUT)
                break;
        if (q.n >= QUEUE_MAX || q.stop) {
            if (q.dropped++ % 1000 == 0)
                fs_log(LOG_WARNING, "notify queue full: kernel caches may be stale until "
                       "their timeout");
            if (ev->type == CACHE_EV_MODIFIED)
                set_del(ev->ino);
            goto out;
        }
    }
    nev *n = calloc(1, sizeof(*n));
    if (!n || (ev->name && !(n->name = strdup(ev->name)))) {
        free(n);
        if (ev->type == CACHE_EV_MODIFIED)
            set_del(ev->ino);
        goto out;
    }
    n->type = ev->type;
    n->ino = ev->ino;
    n->parent = ev->parent;
    n->is_dir = ev->is_dir;
    n->echoed = echoed;
    if (q.tail)
        q.tail->next = n;
    else
        q.head = n;
    q.tail = n;
    q.n++;
    pthread_cond_signal(&q.more);
out:
    pthread_mutex_unlock(&q.mu);
}

static void deliver(struct fuse_session *se, const nev *e)
{
    int r;
    switch (e->type) {
    case CACHE_EV_MODIFIED:
        fs_dbg("notify: inval inode %llu", (unsigned long long)e->ino);
        fuse_lowlevel_notify_inval_inode(se, e->ino, 0, 0);
        break;
    case CACHE_EV_CREATED:
        /* A negative dentry for the name may be cached. */
        fs_dbg("notify: created %llu/%s", (unsigned long long)e->parent, e->name);
        fuse_lowlevel_notify_inval_entry(se, e->parent, e->name, strlen(e->name));
        fuse_lowlevel_notify_inval_inode(se, e->parent, 0, 0);   /* cached readdir, nlink */
        break;
    case CACHE_EV_DELETED:
        fs_dbg("notify: deleted %llu/%s", (unsigned long long)e->parent, e->name);
        /* echoed: the echo's unlink/rmdir tells the kernel (notify_delete would mark a
         * watched directory dead before the echo could rmdir it: no IN_DELETE) */
        r = e->echoed ? -1
            : fuse_lowlevel_notify_delete(se, e->parent, e->ino, e->name, strlen(e->name));
        if (r < 0)
            fuse_lowlevel_notify_inval_entry(se, e->parent, e->name, strlen(e->name));
        fuse_lowlevel_notify_inval_inode(se, e->parent, 0, 0);
        break;
    }
}

static void *notify_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&q.mu);
    for (;;) {
        while (!q.head && !q.stop)
            pthread_cond_wait(&q.more, &q.mu);
        if (q.stop)
            break;
        nev *e = q.head;
        q.head = e->next;
        if (!q.head)
            q.tail = NULL;
        q.n--;
        if (e->type == CACHE_EV_MODIFIED)
            set_del(e->ino);
        pthread_cond_signal(&q.space);
        pthread_mutex_unlock(&q.mu);
        deliver(q.st->se, e);
        free(e->name);
        free(e);
        pthread_mutex_lock(&q.mu);
    }
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

int notify_start(fs_state *st)
{
    q.st = st;
    q.stop = false;
    int r = pthread_create(&q.thread, NULL, notify_main, NULL);
    if (r)
        return -r;
    q.started = true;
    return 0;
}

void notify_activate(void)
{
    pthread_mutex_lock(&q.mu);
    q.active = true;
    pthread_mutex_unlock(&q.mu);
    echo_activate();
}

void notify_stop(void)
{
    pthread_mutex_lock(&q.mu);
    q.stop = true;
    q.active = false;
    pthread_cond_broadcast(&q.more);
    pthread_cond_broadcast(&q.space);
    pthread_mutex_unlock(&q.mu);
    if (q.started)
        pthread_join(q.thread, NULL);
    q.started = false;
    pthread_mutex_lock(&q.mu);
    while (q.head) {
        nev *e = q.head;
        q.head = e->next;
        free(e->name);
        free(e);
    }
    q.tail = NULL;
    q.n = 0;
    for (size_t i = 0; i < SET_BUCKETS; i++)
        while (q.set[i])
            set_del(q.set[i]->ino);
    pthread_mutex_unlock(&q.mu);
}

/* scratch.c — scratch files (swap, backup, probe and temporary files of editors and tools):
 * the rule that recognises them, their contents in memory, and the renames that turn a
 * scratch file into the one Put of a save (sed -i, rsync) or a saved file into a scratch
 * backup without touching etcd (vim with backupcopy=no). Scratch nodes are local nodes of the
 * cache that are never written; their bytes live here, keyed by inode. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* FNM_EXTMATCH */
#endif
#include "scratch.h"

#include "ops.h"

#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* ---- the rule ------------------------------------------------------------------------- */

typedef struct pattern {
    char *glob;
    char **progs;               /* NULL: any program */
    size_t n_progs;
} pattern;

typedef struct rule {
    pattern *p;
    size_t n;
} rule;

static pthread_rwlock_t rule_lock = PTHREAD_RWLOCK_INITIALIZER;
static rule scratch_rule, excl_rule;
static bool rule_set;

static void rule_free(rule *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->p[i].glob);
        for (size_t j = 0; j < r->p[i].n_progs; j++)
            free(r->p[i].progs[j]);
        free(r->p[i].progs);
    }
    free(r->p);
    memset(r, 0, sizeof(*r));
}

/* "GLOB[@prog/prog]" */
static int pattern_parse(char *item, bool allow_progs, pattern *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char shown[128];
    snprintf(shown, sizeof(shown), "%s", item);
    char *at = strchr(item, '@');
    if (at && !allow_progs) {
        snprintf(err, errlen, "scratch_excl: '%s': no @program here", item);
        return -EINVAL;
    }
    if (at)
        *at = '\0';
    if (!*item || !(out->glob = strdup(item)))
        goto bad;
    for (char *save = NULL, *p = at ? strtok_r(at + 1, "/", &save) : NULL; p;
         p = strtok_r(NULL, "/", &save)) {
        char **np = realloc(out->progs, (out->n_progs + 1) * sizeof(*np));
        if (!np)
            goto bad;
        out->progs = np;
        if (!(np[out->n_progs] = strdup(p)))
            goto bad;
        out->n_progs++;
    }
    if (at && out->n_progs == 0)
        goto bad;
    return 0;
bad:
    snprintf(err, errlen, "scratch: bad pattern '%s'", shown);
    free(out->glob);
    for (size_t j = 0; j < out->n_progs; j++)
        free(out->progs[j]);
    free(out->progs);
    memset(out, 0, sizeof(*out));
    return -EINVAL;
}

/* ':' or ';' separate the items (',' separates -o options). */
static int rule_parse(const char *s, bool allow_progs, rule *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    char *copy = strdup(s ? s : "");
    if (!copy)
        return -ENOMEM;
    int rc = 0;
    for (char *save = NULL, *item = strtok_r(copy, ":;", &save); item && rc == 0;
         item = strtok_r(NULL, ":;", &save)) {
        pattern *np = realloc(r->p, (r->n + 1) * sizeof(*np));
        if (!np) {
            rc = -ENOMEM;
            break;
        }
        r->p = np;
        if ((rc = pattern_parse(item, allow_progs, &r->p[r->n], err, errlen)) == 0)
            r->n++;
    }
    free(copy);
    if (rc < 0)
        rule_free(r);
    return rc;
}

int scratch_configure(const char *rule_s, const char *excl_s, char *err, size_t errlen)
{
    rule r, x;
    int rc = rule_parse(rule_s ? rule_s : SCRATCH_DEFAULT, true, &r, err, errlen);
    if (rc < 0)
        return rc;
    if ((rc = rule_parse(excl_s, false, &x, err, errlen)) < 0) {
        rule_free(&r);
        return rc;
    }
    pthread_rwlock_wrlock(&rule_lock);
    rule_free(&scratch_rule);
    rule_free(&excl_rule);
    scratch_rule = r;
    excl_rule = x;
    rule_set = true;
    pthread_rwlock_unlock(&rule_lock);
    return 0;
}

/* The program that made the request (/proc/PID/comm); "" when unknown. */
static void comm_of(pid_t pid, char *buf, size_t len)
{
    buf[0] = '\0';
    if (pid <= 0)
        return;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    if (!fgets(buf, (int)len, f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

static bool pattern_match(const pattern *p, const char *name, pid_t pid, char *comm,
                          size_t comm_len)
{
    if (fnmatch(p->glob, name, FNM_EXTMATCH) != 0)
        return false;
    if (!p->progs)
        return true;
    if (!comm[0])
        comm_of(pid, comm, comm_len);
    for (size_t i = 0; i < p->n_progs; i++)
        if (strcmp(p->progs[i], comm) == 0)
            return true;
    return false;
}

bool scratch_name(const char *name, pid_t pid)
{
    char comm[32] = "";
    if (!rule_set)
        scratch_configure(NULL, NULL, comm, sizeof(comm));
    bool hit = false;
    pthread_rwlock_rdlock(&rule_lock);
    for (size_t i = 0; i < excl_rule.n; i++)
        if (fnmatch(excl_rule.p[i].glob, name, FNM_EXTMATCH) == 0)
            goto out;
    for (size_t i = 0; i < scratch_rule.n && !hit; i++)
        hit = pattern_match(&scratch_rule.p[i], name, pid, comm, sizeof(comm));
out:
    pthread_rwlock_unlock(&rule_lock);
    return hit;
}

/* ---- registry: scratch inodes and their contents -------------------------------------- */

typedef struct entry {
    uint64_t ino;
    cache_value *val;           /* never NULL */
    struct timespec mtime;
    struct entry *next;
} entry;

#define BUCKETS 256
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static entry *reg[BUCKETS];

static entry **slot(uint64_t ino)
{
    entry **e = &reg[(ino * 0x9E3779B97F4A7C15ULL) >> 56];
    while (*e && (*e)->ino != ino)
        e = &(*e)->next;
    return e;
}

/* A cache_value of our own (the layout is public; refs start at 1, freed by free()). */
static cache_value *value_new(const void *data, size_t len)
{
    cache_value *v = malloc(sizeof(*v) + (len ? len : 1));
    if (!v)
        return NULL;
    v->len = len;
    v->mod_revision = 0;
    v->refs = 1;
    if (len)
        memcpy(v->data, data, len);
    return v;
}

/* Registers ino with a copy of data (replacing any content it had). */
static int reg_put(uint64_t ino, const void *data, size_t len)
{
    cache_value *v = value_new(data, len);
    if (!v)
        return -ENOMEM;
    pthread_mutex_lock(&reg_mu);
    entry **e = slot(ino);
    if (!*e && (*e = calloc(1, sizeof(**e))))
        (*e)->ino = ino;
    int rc = -ENOMEM;
    if (*e) {
        cache_value_put((*e)->val);
        (*e)->val = v;
        clock_gettime(CLOCK_REALTIME, &(*e)->mtime);
        v = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&reg_mu);
    cache_value_put(v);
    return rc;
}

static void reg_drop(uint64_t ino)
{
    pthread_mutex_lock(&reg_mu);
    entry **e = slot(ino), *x = *e;
    if (x) {
        *e = x->next;
        cache_value_put(x->val);
        free(x);
    }
    pthread_mutex_unlock(&reg_mu);
}

bool scratch_is(uint64_t ino)
{
    pthread_mutex_lock(&reg_mu);
    bool hit = *slot(ino) != NULL;
    pthread_mutex_unlock(&reg_mu);
    return hit;
}

int scratch_snapshot(uint64_t ino, cache_value **out)
{
    pthread_mutex_lock(&reg_mu);
    entry *e = *slot(ino);
    if (e)
        *out = cache_value_get(e->val);
    pthread_mutex_unlock(&reg_mu);
    return e ? 0 : -ENOENT;
}

int scratch_store(uint64_t ino, const void *data, size_t len)
{
    return scratch_is(ino) ? reg_put(ino, data, len) : -ENOENT;
}

int scratch_truncate(uint64_t ino, uint64_t size)
{
    if (size > FS_MAX_VALUE)
        return -EFBIG;
    cache_value *v;
    int rc = scratch_snapshot(ino, &v);
    if (rc < 0)
        return rc;
    uint8_t *buf = calloc(1, size ? (size_t)size : 1);
    if (buf) {
        memcpy(buf, v->data, v->len < size ? v->len : (size_t)size);
        rc = reg_put(ino, buf, (size_t)size);
    }
    free(buf);
    cache_value_put(v);
    return buf ? rc : -ENOMEM;
}

bool scratch_attr(uint64_t ino, uint64_t *size, struct timespec *mtime)
{
    pthread_mutex_lock(&reg_mu);
    entry *e = *slot(ino);
    if (e) {
        *size = e->val->len;
        *mtime = e->mtime;
    }
    pthread_mutex_unlock(&reg_mu);
    return e != NULL;
}

/* ---- what each process read, and the keys a rename to a scratch name left behind ------- */

/* Small rings: an editor reads, then saves within one session; older entries fall out. */
#define READS 256
#define GHOSTS 64
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { pid_t pid; uint64_t ino; int64_t rev; } reads[READS];
static size_t reads_next;
/* A name whose key was left in etcd while the mount shows it gone: renamed to a scratch name
 * (vim), or unlinked by a program that writes the name again at once (install). key: the
 * delete still owed if the program ends without writing the name again. */
typedef struct ghost {
    uint64_t parent;
    char *name;
    int64_t rev;
    uint8_t *key;
    size_t key_len;
    pid_t pid;
    fs_state *st;
} ghost;
static ghost ghosts[GHOSTS];
static size_t ghosts_next;
static pthread_cond_t reaper_cond = PTHREAD_COND_INITIALIZER;
static bool reaper_started;
/* Programs whose unlink of a saved file is held back until they create the name again. */
static const char *const defer_unlink_progs[] = { "install", "ginstall" };

void scratch_note_read(pid_t pid, uint64_t ino, int64_t rev)
{
    if (pid <= 0 || rev <= 0)
        return;
    pthread_mutex_lock(&seen_mu);
    size_t i;
    for (i = 0; i < READS && !(reads[i].pid == pid && reads[i].ino == ino); i++)
        ;
    if (i == READS)
        i = reads_next++ % READS;
    reads[i].pid = pid;
    reads[i].ino = ino;
    reads[i].rev = rev;
    pthread_mutex_unlock(&seen_mu);
}

/* The revision pid read ino at, and forgets it (the write open consumes it). 0: none. */
static int64_t take_read(pid_t pid, uint64_t ino)
{
    int64_t rev = 0;
    pthread_mutex_lock(&seen_mu);
    for (size_t i = 0; i < READS; i++) {
        if (reads[i].pid == pid && reads[i].ino == ino && pid > 0) {
            rev = reads[i].rev;
            reads[i].pid = 0;
            reads[i].ino = 0;
        }
    }
    pthread_mutex_unlock(&seen_mu);
    return rev;
}

void scratch_base_rev(pid_t pid, cache_attr *a)
{
    int64_t rev = take_read(pid, a->ino);
    if (rev > 0 && a->mod_revision > 0)
        a->mod_revision = rev;
}

/* The owed delete of a ghost (called without seen_mu). */
static void ghost_delete(fs_state *st, uint8_t *key, size_t key_len)
{
    etcd_delete_resp resp = {0};
    etcd_error err = {0};
    char buf[256];
    size_t n = key_len < sizeof(buf) - 1 ? key_len : sizeof(buf) - 1;
    memcpy(buf, key, n);
    buf[n] = '\0';
    if (etcd_delete(st->client, key, key_len, NULL, 0, false, &resp, &err) < 0)
        fs_log(LOG_ERR, "delete of %s (unlinked earlier) failed: %s", buf, err.msg);
    else
        fs_dbg("scratch: %s deleted: its program ended without writing it again", buf);
    etcd_delete_resp_free(&resp);
    free(key);
}

/* Called with seen_mu held: empties slot i, handing back an owed delete. */
static void ghost_clear(size_t i, uint8_t **key, size_t *key_len, fs_state **st)
{
    *key = ghosts[i].key;
    *key_len = ghosts[i].key_len;
    *st = ghosts[i].st;
    free(ghosts[i].name);
    memset(&ghosts[i], 0, sizeof(ghosts[i]));
}

/* Deletes the keys owed by programs that have ended; polls every 100 ms while any is owed. */
static void *reaper(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&seen_mu);
    for (;;) {
        bool owed = false;
        for (size_t i = 0; i < GHOSTS; i++) {
            if (!ghosts[i].key)
                continue;
            if (kill(ghosts[i].pid, 0) == 0 || errno != ESRCH) {
                owed = true;
                continue;
            }
            uint8_t *key;
            size_t len;
            fs_state *st;
            ghost_clear(i, &key, &len, &st);
            pthread_mutex_unlock(&seen_mu);
            ghost_delete(st, key, len);
            pthread_mutex_lock(&seen_mu);
        }
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        if (owed) {
            t.tv_nsec += 100 * 1000 * 1000;
            if (t.tv_nsec >= 1000000000) {
                t.tv_sec++;
                t.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&reaper_cond, &seen_mu, &t);
        } else {
            pthread_cond_wait(&reaper_cond, &seen_mu);
        }
    }
    return NULL;
}

static void ghost_set(fs_state *st, uint64_t parent, const char *name, int64_t rev,
                      uint8_t *key, size_t key_len, pid_t pid)
{
    char *nm = strdup(name);
    uint8_t *okey = NULL;
    size_t olen = 0;
    fs_state *ost = NULL;
    if (!nm) {
        if (key)
            ghost_delete(st, key, key_len);
        return;
    }
    pthread_mutex_lock(&seen_mu);
    size_t i = ghosts_next++ % GHOSTS;
    ghost_clear(i, &okey, &olen, &ost);
    ghosts[i] = (ghost){ .parent = parent, .name = nm, .rev = rev, .key = key,
                         .key_len = key_len, .pid = pid, .st = st };
    if (key && !reaper_started) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        reaper_started = pthread_create(&t, &at, reaper, NULL) == 0;
        pthread_attr_destroy(&at);
    }
    pthread_cond_signal(&reaper_cond);
    pthread_mutex_unlock(&seen_mu);
    if (okey)
        ghost_delete(ost, okey, olen);      /* pushed out of the ring: settle it now */
}

/* The ghost of parent/name: its revision (0: none); *owed tells whether it still owed a
 * delete (the name's key exists in etcd). */
static int64_t ghost_take(uint64_t parent, const char *name, bool *owed)
{
    int64_t rev = 0;
    *owed = false;
    pthread_mutex_lock(&seen_mu);
    for (size_t i = 0; i < GHOSTS; i++) {
        if (ghosts[i].name && ghosts[i].parent == parent && strcmp(ghosts[i].name, name) == 0) {
            uint8_t *key;
            size_t len;
            fs_state *st;
            rev = ghosts[i].rev;
            *owed = ghosts[i].key != NULL;
            ghost_clear(i, &key, &len, &st);
            free(key);
        }
    }
    pthread_mutex_unlock(&seen_mu);
    return rev;
}

bool scratch_ghost(uint64_t parent, const char *name)
{
    bool hit = false;
    pthread_mutex_lock(&seen_mu);
    for (size_t i = 0; i < GHOSTS && !hit; i++)
        hit = ghosts[i].name && ghosts[i].parent == parent && strcmp(ghosts[i].name, name) == 0;
    pthread_mutex_unlock(&seen_mu);
    return hit;
}

/* ---- ops.c hooks ---------------------------------------------------------------------- */

bool scratch_created(fs_state *st, pid_t pid, uint64_t parent, const char *name, cache_attr *a)
{
    (void)st;
    if (a->is_dir)
        return false;
    if (a->mod_revision == 0 && scratch_name(name, pid)) {
        if (scratch_is(a->ino))
            return true;
        if (reg_put(a->ino, "", 0) == 0) {
            fs_dbg("scratch: %s (inode %llu) lives in memory only", name,
                   (unsigned long long)a->ino);
            return true;
        }
    }
    /* vim (backupcopy=no) writes the file again after renaming it to its backup: the save
     * compares with what the editor read (-o conflict=fail). */
    bool owed;
    int64_t rev = a->mod_revision == 0 ? ghost_take(parent, name, &owed) : 0;
    if (rev > 0)
        a->mod_revision = rev;
    return false;
}

/* The file parent/name (a lookup reference is taken and given back). */
static int child(fs_state *st, uint64_t parent, const char *name, cache_attr *a)
{
    int rc = cache_lookup(st->cache, parent, name, a);
    if (rc == 0)
        cache_forget(st->cache, a->ino, 1);
    return rc;
}

int scratch_unlink(fs_state *st, pid_t pid, uint64_t parent, const char *name)
{
    cache_attr a;
    if (child(st, parent, name, &a) < 0 || a.is_dir)
        return 1;
    if (scratch_is(a.ino)) {
        reg_drop(a.ino);
        return 1;           /* a local node: the cache forgets it without asking etcd */
    }
    char comm[32];
    bool defer = false;
    if (a.mod_revision > 0) {
        comm_of(pid, comm, sizeof(comm));
        for (size_t i = 0; i < sizeof(defer_unlink_progs) / sizeof(*defer_unlink_progs); i++)
            defer = defer || strcmp(comm, defer_unlink_progs[i]) == 0;
    }
    uint8_t *key;
    size_t key_len;
    if (!defer || cache_key(st->cache, a.ino, &key, &key_len) < 0)
        return 1;
    int rc = cache_rename(st->cache, parent, name, parent, NULL, CACHE_RENAME_DETACH);
    if (rc < 0) {
        free(key);
        return rc;
    }
    fs_dbg("scratch: unlink of %s by %s held back until it writes the name again", name, comm);
    ghost_set(st, parent, name, take_read(pid, a.ino) ?: a.mod_revision, key, key_len, pid);
    return 0;
}

/* A scratch file renamed over a real name: that is the save, one Put of its bytes. */
static int scratch_to_real(fs_state *st, const cache_attr *src, const cache_attr *dst,
                           bool dst_exists, uint64_t parent, const char *name,
                           uint64_t newparent, const char *newname, unsigned flags)
{
    cache_value *v;
    int rc = scratch_snapshot(src->ino, &v);
    if (rc < 0)
        return rc;
    cache_attr out;
    char key[512];
    if (dst_exists && dst->mod_revision > 0) {
        /* The target key takes the bytes (keeping its lease), then the scratch node takes the
         * target's place in memory: the kernel's dentry moves to the source inode. */
        rc = cache_write(st->cache, dst->ino, v->data, v->len, dst->mod_revision, &out);
        if (rc == 0)
            rc = cache_rename(st->cache, parent, name, newparent, newname,
                              flags | CACHE_RENAME_ADOPT);
    } else {
        rc = cache_rename(st->cache, parent, name, newparent, newname, flags);
        if (rc == 0) {
            rc = cache_write(st->cache, src->ino, v->data, v->len, 0, &out);
            if (rc < 0)     /* put it back where it was: a local file moves in memory */
                cache_rename(st->cache, newparent, newname, parent, name, 0);
        }
    }
    if (rc == 0) {
        reg_drop(src->ino);
        fs_dbg("scratch: %s renamed over %s: saved %zu bytes", name,
               fs_key_str(st, src->ino, key, sizeof(key)), v->len);
    } else if (rc != -EEXIST && rc != -ENOENT) {
        fs_log(LOG_ERR, "save of %s (rename of %s) failed: %s", newname, name, strerror(-rc));
    }
    cache_value_put(v);
    return rc;
}

/* A saved file renamed to a scratch name (vim's backup): its bytes are copied to memory and
 * the key stays as it is in etcd, until the editor writes the name again. */
static int real_to_scratch(fs_state *st, pid_t pid, const cache_attr *src, uint64_t parent,
                           const char *name, uint64_t newparent, const char *newname,
                           unsigned flags)
{
    cache_value *v;
    int rc = cache_read(st->cache, src->ino, &v);
    if (rc < 0)
        return rc;
    int64_t read_rev = take_read(pid, src->ino);
    rc = cache_rename(st->cache, parent, name, newparent, newname,
                      flags | CACHE_RENAME_DETACH);
    if (rc == 0) {
        rc = reg_put(src->ino, v->data, v->len);
        ghost_set(st, parent, name, read_rev > 0 ? read_rev : src->mod_revision, NULL, 0, 0);
        fs_dbg("scratch: %s kept in memory as %s; its key is left as it is", name, newname);
    }
    cache_value_put(v);
    return rc;
}

int scratch_rename(fs_state *st, pid_t pid, uint64_t parent, const char *name,
                   uint64_t newparent, const char *newname, unsigned flags)
{
    cache_attr src, dst;
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return 1;
    if (child(st, parent, name, &src) < 0 || src.is_dir)
        return 1;
    int rc = child(st, newparent, newname, &dst);
    bool dst_exists = rc == 0;
    if (dst_exists && dst.is_dir)
        return 1;
    if (dst_exists && (flags & RENAME_NOREPLACE))
        return -EEXIST;
    bool dst_scratch = dst_exists ? scratch_is(dst.ino) || (dst.mod_revision == 0 &&
                                                            scratch_name(newname, pid))
                                  : scratch_name(newname, pid);
    if (scratch_is(src.ino)) {
        if (dst_scratch) {
            /* scratch over scratch: the cache moves a local node in memory */
            rc = cache_rename(st->cache, parent, name, newparent, newname, flags);
            if (rc == 0 && dst_exists && dst.ino != src.ino)
                reg_drop(dst.ino);
            return rc;
        }
        return scratch_to_real(st, &src, &dst, dst_exists, parent, name, newparent, newname,
                               flags);
    }
    if (!dst_scratch)
        return 1;
    if (src.mod_revision == 0) {
        /* An unsaved file going to a scratch name: it simply stays unsaved. */
        rc = cache_rename(st->cache, parent, name, newparent, newname, flags);
        if (rc == 0 && !scratch_is(src.ino))
            rc = reg_put(src.ino, "", 0);
        if (dst_exists && rc == 0)
            reg_drop(dst.ino);
        return rc;
    }
    rc = real_to_scratch(st, pid, &src, parent, name, newparent, newname, flags);
    if (rc == 0 && dst_exists && dst.ino != src.ino)
        reg_drop(dst.ino);
    return rc;
}

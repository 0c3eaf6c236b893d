/* model.c — the driver of tests/fuse/model.sh: seeded random file operations through a mount
 * (syscalls) and etcdctl puts/deletes, interleaved, each also applied to an in-memory model of
 * docs/SEMANTICS.md (keys → values, directories implied by keys or made by mkdir); errnos, the
 * mount's tree and etcd's keys must all agree with the model. Prints "ok - …", "not ok - …" and
 * "# …" lines for model.sh.  Usage: model MNT ENDPOINTS TMPDIR  (env MODEL_OPS, MODEL_SEED) */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TWIN "%="
#define MAX_TXN_KEYS 42     /* a directory rename is one Txn: 3 operations per key, 128 at most */
#define LOG_KEEP 40

/* ---- small helpers -------------------------------------------------------------------------- */

static void die(const char *what)
{
    printf("not ok - driver: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("malloc");
    return p;
}

static char *xstrdup(const char *s) { char *p = strdup(s); if (!p) die("strdup"); return p; }

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        die("vasprintf");
    va_end(ap);
    return s;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct strv { char **v; size_t n, cap; } strv;

static void sv_push(strv *s, char *str)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 32;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v)
            die("realloc");
    }
    s->v[s->n++] = str;
}

static void sv_free(strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void sv_sort_uniq(strv *s)
{
    size_t j = 0;
    qsort(s->v, s->n, sizeof(*s->v), cmp_str);
    for (size_t i = 0; i < s->n; i++) {
        if (j && strcmp(s->v[j - 1], s->v[i]) == 0)
            free(s->v[i]);
        else
            s->v[j++] = s->v[i];
    }
    s->n = j;
}

static char *sv_join(const strv *s)
{
    size_t len = 1;
    for (size_t i = 0; i < s->n; i++)
        len += strlen(s->v[i]) + 1;
    char *out = xmalloc(len), *p = out;
    for (size_t i = 0; i < s->n; i++)
        p = stpcpy(stpcpy(p, s->v[i]), "\n");
    *p = 0;
    return out;
}

/* Printable bytes as they are, others (and '\') as \xNN: one line per value. */
static char *esc(const unsigned char *b, size_t n)
{
    char *out = xmalloc(4 * n + 1), *p = out;
    for (size_t i = 0; i < n; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\')
            *p++ = (char)b[i];
        else
            p += sprintf(p, "\\x%02x", b[i]);
    }
    *p = 0;
    return out;
}

static const char *errname(int e)
{
    static char buf[16];
    switch (e) {
    case 0: return "success";
    case ENOENT: return "ENOENT";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EEXIST: return "EEXIST";
    case ENOTEMPTY: return "ENOTEMPTY";
    case EINVAL: return "EINVAL";
    case EXDEV: return "EXDEV";
    case EIO: return "EIO";
    case EBUSY: return "EBUSY";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSPC: return "ENOSPC";
    case EFBIG: return "EFBIG";
    case ENOTCONN: return "ENOTCONN";
    }
    snprintf(buf, sizeof(buf), "errno %d", e);
    return buf;
}

/* ---- random numbers (xorshift64*: the same seed gives the same run on every machine) -------- */

static uint64_t rng_state;
static uint64_t rnd64(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
static unsigned rnd(unsigned n) { return (unsigned)(rnd64() >> 33) % n; }

/* ---- the model ----------------------------------------------------------------------------- */
/* Paths are "/a/b" (the root is ""); a view path may end in the twin suffix "%=". Keys are the
 * plain paths. Explicit directories: made by mkdir, or kept by a removal through the mount. */

typedef struct kv { char *key; unsigned char *val; size_t len; } kv;
static kv *kvs;
static size_t nkv, capkv;
static strv xdirs;

static long kv_find(const char *key)
{
    for (size_t i = 0; i < nkv; i++)
        if (strcmp(kvs[i].key, key) == 0)
            return (long)i;
    return -1;
}

static void kv_set(const char *key, const unsigned char *val, size_t len)
{
    long i = kv_find(key);
    if (i < 0) {
        if (nkv == capkv) {
            capkv = capkv ? 2 * capkv : 64;
            kvs = realloc(kvs, capkv * sizeof(*kvs));
            if (!kvs)
                die("realloc");
        }
        i = (long)nkv++;
        kvs[i].key = xstrdup(key);
        kvs[i].val = NULL;
    }
    unsigned char *v = xmalloc(len);
    memcpy(v, val, len);
    free(kvs[i].val);
    kvs[i].val = v;
    kvs[i].len = len;
}

static void kv_del(const char *key)
{
    long i = kv_find(key);
    if (i < 0)
        return;
    free(kvs[i].key);
    free(kvs[i].val);
    kvs[i] = kvs[--nkv];
}

static bool xd_has(const char *p)
{
    for (size_t i = 0; i < xdirs.n; i++)
        if (strcmp(xdirs.v[i], p) == 0)
            return true;
    return false;
}

static void xd_add(const char *p)
{
    if (*p && !xd_has(p))
        sv_push(&xdirs, xstrdup(p));
}

static void xd_del(const char *p)
{
    for (size_t i = 0; i < xdirs.n; i++)
        if (strcmp(xdirs.v[i], p) == 0) {
            free(xdirs.v[i]);
            xdirs.v[i] = xdirs.v[--xdirs.n];
            return;
        }
}

/* s is strictly below directory d ("" is the root). */
static bool below(const char *s, const char *d)
{
    size_t n = strlen(d);
    return strncmp(s, d, n) == 0 && s[n] == '/';
}

static bool model_is_dir(const char *p)
{
    if (!*p || xd_has(p))
        return true;
    for (size_t i = 0; i < nkv; i++)
        if (below(kvs[i].key, p))
            return true;
    for (size_t i = 0; i < xdirs.n; i++)
        if (below(xdirs.v[i], p))
            return true;
    return false;
}

static size_t keys_below(const char *d)
{
    size_t n = 0;
    for (size_t i = 0; i < nkv; i++)
        n += below(kvs[i].key, d);
    return n;
}

static bool dir_empty(const char *d)
{
    if (keys_below(d))
        return false;
    for (size_t i = 0; i < xdirs.n; i++)
        if (below(xdirs.v[i], d))
            return false;
    return true;
}

static char *parent_of(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? strndup(p, (size_t)(s - p)) : xstrdup("");
}

static bool is_twin_name(const char *p)
{
    size_t n = strlen(p);
    return n > 2 && strcmp(p + n - 2, TWIN) == 0;
}

enum { K_NONE, K_DIR, K_FILE };

/* What a view path is; for files *key (malloc'd) is the key. */
static int vkind(const char *vp, char **key)
{
    if (key)
        *key = NULL;
    if (is_twin_name(vp)) {
        char *base = strndup(vp, strlen(vp) - 2);
        if (model_is_dir(base) && kv_find(base) >= 0) {
            if (key)
                *key = base;
            else
                free(base);
            return K_FILE;
        }
        free(base);
        return K_NONE;
    }
    if (model_is_dir(vp))
        return K_DIR;
    if (kv_find(vp) >= 0) {
        if (key)
            *key = xstrdup(vp);
        return K_FILE;
    }
    return K_NONE;
}

/* The errno of walking to vp's parent: every directory on the way must be one. */
static int resolve_parent(const char *vp)
{
    char *p = xstrdup(vp);
    int rc = 0;
    for (char *s = strchr(p + 1, '/'); s && !rc; s = strchr(s + 1, '/')) {
        *s = 0;
        int k = vkind(p, NULL);
        rc = k == K_DIR ? 0 : k == K_FILE ? ENOTDIR : ENOENT;
        *s = '/';
    }
    free(p);
    return rc;
}

static void add_dir_prefixes(strv *dirs, const char *p, bool self)
{
    for (const char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/'))
        sv_push(dirs, strndup(p, (size_t)(s - p)));
    if (self)
        sv_push(dirs, xstrdup(p));
}

/* The tree the mount must show: "D path" and "F path value" lines, sorted. */
static void model_view(strv *out, strv *files, strv *dirs_out)
{
    strv dirs = {0};
    for (size_t i = 0; i < nkv; i++)
        add_dir_prefixes(&dirs, kvs[i].key, false);
    for (size_t i = 0; i < xdirs.n; i++)
        add_dir_prefixes(&dirs, xdirs.v[i], true);
    sv_sort_uniq(&dirs);
    for (size_t i = 0; i < dirs.n; i++) {
        if (out)
            sv_push(out, fmt("D %s", dirs.v[i]));
        if (dirs_out)
            sv_push(dirs_out, xstrdup(dirs.v[i]));
    }
    for (size_t i = 0; i < nkv; i++) {
        bool tw = bsearch(&kvs[i].key, dirs.v, dirs.n, sizeof(char *), cmp_str) != NULL;
        char *vp = fmt("%s%s", kvs[i].key, tw ? TWIN : "");
        if (out) {
            char *e = esc(kvs[i].val, kvs[i].len);
            sv_push(out, fmt("F %s %s", vp, e));
            free(e);
        }
        if (files)
            sv_push(files, vp);
        else
            free(vp);
    }
    sv_free(&dirs);
    if (out)
        qsort(out->v, out->n, sizeof(char *), cmp_str);
}

static void model_keys(strv *out)
{
    for (size_t i = 0; i < nkv; i++) {
        char *e = esc(kvs[i].val, kvs[i].len);
        sv_push(out, fmt("K %s %s", kvs[i].key, e));
        free(e);
    }
    qsort(out->v, out->n, sizeof(char *), cmp_str);
}

/* ---- the mount and etcd as they are ----------------------------------------------------------- */

static const char *mnt, *endpoints, *tmpdir;
static bool dry;   /* MODEL_DRY=1: local operations on any directory, to check the model itself */

static int read_all(const char *path, unsigned char **buf, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno;
    size_t cap = 4096, n = 0;
    unsigned char *b = xmalloc(cap);
    for (;;) {
        if (n == cap && !(b = realloc(b, cap *= 2)))
            die("realloc");
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0) {
            int e = errno;
            close(fd);
            free(b);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = n;
    return 0;
}

static void walk(const char *rel, strv *out)
{
    char *path = fmt("%s%s", mnt, rel);
    DIR *d = opendir(path);
    if (!d) {
        sv_push(out, fmt("! opendir %s: %s", *rel ? rel : "/", errname(errno)));
        free(path);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (!*rel && !strcmp(de->d_name, ".cluster"))
            continue;       /* the cluster's own directory (fs/cluster.c), not a key */
        char *child = fmt("%s/%s", rel, de->d_name), *cp = fmt("%s%s", mnt, child);
        struct stat st;
        unsigned char *b;
        size_t n;
        int e;
        if (lstat(cp, &st) < 0) {
            sv_push(out, fmt("! stat %s: %s", child, errname(errno)));
        } else if (S_ISDIR(st.st_mode)) {
            sv_push(out, fmt("D %s", child));
            walk(child, out);
        } else if (!S_ISREG(st.st_mode)) {
            sv_push(out, fmt("? %s mode %o", child, st.st_mode));
        } else if ((e = read_all(cp, &b, &n))) {
            sv_push(out, fmt("! read %s: %s", child, errname(e)));
        } else {
            char *v = esc(b, n);
            sv_push(out, fmt("F %s %s", child, v));
            if ((size_t)st.st_size != n)
                sv_push(out, fmt("! st_size of %s is %lld, read %zu bytes", child,
                                 (long long)st.st_size, n));
            free(v);
            free(b);
        }
        free(child);
        free(cp);
    }
    closedir(d);
    free(path);
}

static void mount_view(strv *out)
{
    walk("", out);
    qsort(out->v, out->n, sizeof(char *), cmp_str);
}

static size_t unhex(const char *s, unsigned char *out)
{
    size_t n = 0;
    while (s[0] == '\\' && s[1] == 'x' && s[2] && s[3]) {
        char h[3] = {s[2], s[3], 0};
        out[n++] = (unsigned char)strtoul(h, NULL, 16);
        s += 4;
    }
    return n;
}

/* etcd's keys as "K key value" lines; with load, also into the model. */
static int etcd_keys(strv *out, bool load)
{
    char *cmd = fmt("ETCDCTL_API=3 etcdctl --endpoints=%s --command-timeout=10s get '' --prefix "
                    "--hex", endpoints);
    FILE *f = popen(cmd, "r");
    free(cmd);
    if (!f)
        return -1;
    char *line = NULL, *key = NULL;
    size_t cap = 0;
    ssize_t r;
    while ((r = getline(&line, &cap, f)) >= 0) {
        if (r && line[r - 1] == '\n')
            line[--r] = 0;
        unsigned char *b = xmalloc((size_t)r + 1);
        size_t n = unhex(line, b);
        if (!key) {
            b[n] = 0;
            key = (char *)b;    /* our keys never hold NUL */
            continue;
        }
        if (load)
            kv_set(key, b, n);
        char *v = esc(b, n);
        sv_push(out, fmt("K %s %s", key, v));
        free(v);
        free(b);
        free(key);
        key = NULL;
    }
    free(line);
    free(key);
    qsort(out->v, out->n, sizeof(char *), cmp_str);
    return pclose(f) == 0 ? 0 : -1;
}

/* Runs etcdctl with these arguments; 0 when it exits 0. */
static int etcdctl(const char *a1, const char *a2, const char *a3, const char *a4)
{
    char *ep = fmt("--endpoints=%s", endpoints);
    const char *argv[] = {"etcdctl", ep, "--command-timeout=10s", a1, a2, a3, a4, NULL};
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        setenv("ETCDCTL_API", "3", 1);
        execvp("etcdctl", (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die("waitpid");
    free(ep);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* ---- reporting ------------------------------------------------------------------------------ */

static char oplog[LOG_KEEP][600];
static long opno;

static void logop(const char *f, ...)
{
    va_list ap;
    char *p = oplog[opno % LOG_KEEP];
    int n = snprintf(p, 600, "#%ld ", opno);
    va_start(ap, f);
    vsnprintf(p + n, (size_t)(600 - n), f, ap);
    va_end(ap);
}

static void show_log(void)
{
    printf("# directories the model keeps without keys (mkdir, or a removal through the mount):");
    for (size_t i = 0; i < xdirs.n; i++)
        printf(" %s", xdirs.v[i]);
    printf("\n");
    printf("# last operations (oldest first):\n");
    for (long i = opno - LOG_KEEP + 1; i <= opno; i++)
        if (i >= 1)
            printf("#   %s\n", oplog[i % LOG_KEEP]);
}

static void show_diff(const char *what, const strv *want, const strv *got)
{
    char *a = fmt("%s/model.%s", tmpdir, what), *b = fmt("%s/actual.%s", tmpdir, what);
    FILE *fa = fopen(a, "w"), *fb = fopen(b, "w");
    if (!fa || !fb)
        die("fopen");
    for (size_t i = 0; i < want->n; i++)
        fprintf(fa, "%s\n", want->v[i]);
    for (size_t i = 0; i < got->n; i++)
        fprintf(fb, "%s\n", got->v[i]);
    fclose(fa);
    fclose(fb);
    printf("# diff (-model +%s):\n", what);
    fflush(stdout);
    char *cmd = fmt("diff -u '%s' '%s' | tail -n +3 | head -n 60 | sed 's/^/#   /'", a, b);
    if (system(cmd) < 0)
        printf("#   (diff failed)\n");
    free(cmd);
    free(a);
    free(b);
}

/* ---- settling: the mount shows what the model says ----------------------------------------- */

static double timeout_mult = 1;
static double lat_remote[100000];
static size_t n_lat_remote, n_local_late, n_twin_ops;

/* Polls the mount until its tree is the model's (deadline s); prints a diff when it never is. */
static int settle(double deadline, double *took, int *tries)
{
    strv want = {0};
    model_view(&want, NULL, NULL);
    char *w = sv_join(&want);
    double t0 = now_s();
    int rc = -1;
    *tries = 0;
    for (;;) {
        strv got = {0};
        ++*tries;
        mount_view(&got);
        char *g = sv_join(&got);
        bool same = strcmp(w, g) == 0;
        free(g);
        if (same) {
            rc = 0;
        } else if (now_s() - t0 > deadline * timeout_mult) {
            show_diff("mount", &want, &got);
        } else {
            sv_free(&got);
            usleep(1000);
            continue;
        }
        sv_free(&got);
        break;
    }
    *took = now_s() - t0;
    free(w);
    sv_free(&want);
    return rc;
}

static int compare_etcd(void)
{
    if (dry)
        return 0;
    strv want = {0}, got = {0};
    model_keys(&want);
    if (etcd_keys(&got, false) < 0) {
        printf("# etcdctl get failed\n");
        sv_free(&want);
        sv_free(&got);
        return -1;
    }
    char *w = sv_join(&want), *g = sv_join(&got);
    int rc = strcmp(w, g) == 0 ? 0 : -1;
    if (rc)
        show_diff("etcd", &want, &got);
    free(w);
    free(g);
    sv_free(&want);
    sv_free(&got);
    return rc;
}

/* ---- random names and values ------------------------------------------------------------------ */

static const char *dir_names[] = {"a", "b"};
static const char *file_names[] = {"f", "g", "h"};

#define MAX_DEPTH 4     /* components: a small tree, so that names collide */

static unsigned depth(const char *p)
{
    unsigned n = 0;
    for (; *p; p++)
        n += *p == '/';
    return n;
}

static char *rand_dir(unsigned maxdepth)
{
    char *p = xstrdup("");
    unsigned d = rnd(maxdepth + 1);
    for (unsigned i = 0; i < d; i++) {
        char *q = fmt("%s/%s", p, dir_names[rnd(2)]);
        free(p);
        p = q;
    }
    return p;
}

/* A random existing entry (files: view paths, twins included); NULL when there is none. */
static char *pick(bool want_dir)
{
    strv files = {0}, dirs = {0};
    model_view(NULL, &files, &dirs);
    strv *s = want_dir ? &dirs : &files;
    char *p = s->n ? xstrdup(s->v[rnd((unsigned)s->n)]) : NULL;
    sv_free(&files);
    sv_free(&dirs);
    return p;
}

/* A directory to make a new name in: mostly one that exists (or the root), else any. */
static char *rand_parent(void)
{
    unsigned r = rnd(100);
    char *d = r < 20 ? xstrdup("") : r < 65 ? pick(true) : NULL;
    if (!d || depth(d) > MAX_DEPTH - 2) {
        free(d);
        d = rand_dir(2);
    }
    return d;
}

static char *rand_file(void)
{
    char *d = rand_parent();
    const char *n = rnd(10) == 0 ? dir_names[rnd(2)] : file_names[rnd(3)];
    char *p = fmt("%s/%s", d, n);
    free(d);
    return p;
}

static char *pick_file_or_rand(unsigned pct_existing)
{
    char *p = rnd(100) < pct_existing ? pick(false) : NULL;
    return p ? p : rand_file();
}

static char *pick_dir_or_rand(unsigned pct_existing)
{
    char *p = rnd(100) < pct_existing ? pick(true) : NULL;
    return p ? p : rand_dir(2);
}

/* A twin name "d%=" beside a directory d (existing or not: creating one without d is EINVAL). */
static char *twin_of_dir(void)
{
    if (dry)
        return rand_file();
    char *d = pick_dir_or_rand(70);
    if (!*d) {
        free(d);
        d = fmt("/%s", dir_names[rnd(2)]);
    }
    char *p = fmt("%s" TWIN, d);
    free(d);
    return p;
}

/* Values from the shell's point of view: text, newlines, sometimes empty; with binary, any byte. */
static size_t rand_value(unsigned char *b, bool binary)
{
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz0123456789 .\n";
    size_t n = rnd(5) == 0 ? 0 : 1 + rnd(24);
    for (size_t i = 0; i < n; i++)
        b[i] = binary && rnd(8) == 0 ? (unsigned char)rnd(256)
                                     : (unsigned char)alpha[rnd(sizeof(alpha) - 1)];
    return n;
}

/* ---- operations ------------------------------------------------------------------------------- */

enum op {
    L_WRITE, L_APPEND, L_TRUNC, L_READ, L_UNLINK, L_MKDIR, L_MKDIRP, L_RMDIR, L_MVFILE, L_MVDIR,
    R_PUT, R_DEL, R_DELPFX, N_OPS
};
static const char *op_names[N_OPS] = {"write", "append", "truncate", "read", "unlink", "mkdir",
    "mkdir -p", "rmdir", "mv file", "mv dir", "etcdctl put", "etcdctl del", "etcdctl del --prefix"};
static unsigned op_weight[N_OPS] = {16, 6, 4, 8, 5, 5, 3, 6, 10, 6, 16, 6, 3};
static unsigned long n_done[N_OPS], n_err[N_OPS];
static unsigned long err_seen[256];

static char *mpath(const char *vp) { return fmt("%s%s", mnt, vp); }

static void mark_parent(const char *p)
{
    char *d = parent_of(p);
    xd_add(d);
    free(d);
}

/* The key a new file at view path vp stands for, or an errno. */
static int create_key(const char *vp, char **key)
{
    int e = resolve_parent(vp);
    if (e)
        return e;
    int k = vkind(vp, key);
    if (k == K_DIR)
        return EISDIR;
    if (k == K_FILE)
        return 0;
    if (is_twin_name(vp)) {
        char *base = strndup(vp, strlen(vp) - 2);
        if (!model_is_dir(base)) {
            free(base);
            return EINVAL;
        }
        *key = base;
        return 0;
    }
    *key = xstrdup(vp);
    return 0;
}

/* Each op: computes the expected errno, does the syscalls, applies the model when both agree.
 * Returns the errno the mount gave; *want the model's. */
static int op_write(bool append, int *want)
{
    char *vp = rnd(100) < (append ? 70 : 35) ? pick_file_or_rand(100) : NULL, *key = NULL;
    if (!vp)
        vp = rnd(7) == 0 ? twin_of_dir() : rnd(8) == 0 ? pick_dir_or_rand(100) : rand_file();
    unsigned char data[64];
    size_t n = rand_value(data, true);
    char *shown = esc(data, n);
    logop("%s %s '%s'", append ? "append" : "write", vp, shown);
    free(shown);
    *want = create_key(vp, &key);
    char *p = mpath(vp);
    int got = 0, fd = open(p, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
    if (fd < 0) {
        got = errno;
    } else {
        if (write(fd, data, n) != (ssize_t)n)
            got = errno ? errno : EIO;
        if (close(fd) < 0 && !got)
            got = errno;
    }
    if (!*want && !got) {
        long i = kv_find(key);
        if (append && i >= 0) {
            unsigned char *v = xmalloc(kvs[i].len + n);
            memcpy(v, kvs[i].val, kvs[i].len);
            memcpy(v + kvs[i].len, data, n);
            kv_set(key, v, kvs[i].len + n);
            free(v);
        } else {
            kv_set(key, data, n);
        }
    }
    free(key);
    free(p);
    free(vp);
    return got;
}

static int op_truncate(int *want)
{
    char *vp = pick_file_or_rand(80), *key = NULL;
    int e = resolve_parent(vp), k = e ? K_NONE : vkind(vp, &key);
    long i = key ? kv_find(key) : -1;
    size_t len = rnd(i >= 0 ? (unsigned)kvs[i].len + 4 : 8);
    *want = e ? e : k == K_DIR ? EISDIR : k == K_NONE ? ENOENT : 0;
    logop("truncate %s %zu", vp, len);
    char *p = mpath(vp);
    int got = truncate(p, (off_t)len) < 0 ? errno : 0;
    if (!*want && !got) {
        unsigned char *v = calloc(1, len + 1);
        memcpy(v, kvs[i].val, kvs[i].len < len ? kvs[i].len : len);
        kv_set(key, v, len);
        free(v);
    }
    free(key);
    free(p);
    free(vp);
    return got;
}

static int read_mismatch;

static int op_read(int *want)
{
    char *vp = rnd(10) == 0 ? pick_dir_or_rand(100) : pick_file_or_rand(85), *key = NULL;
    int e = resolve_parent(vp), k = e ? K_NONE : vkind(vp, &key);
    *want = e ? e : k == K_DIR ? EISDIR : k == K_NONE ? ENOENT : 0;
    logop("read %s", vp);
    char *p = mpath(vp);
    unsigned char *b = NULL;
    size_t n = 0;
    int got = read_all(p, &b, &n);
    if (!*want && !got) {
        long i = kv_find(key);
        if (n != kvs[i].len || memcmp(b, kvs[i].val, n)) {
            char *ge = esc(b, n), *we = esc(kvs[i].val, kvs[i].len);
            printf("# read %s: got '%s', model has '%s'\n", vp, ge, we);
            free(ge);
            free(we);
            read_mismatch = 1;
        }
    }
    free(b);
    free(key);
    free(p);
    free(vp);
    return got;
}

static int op_unlink(int *want)
{
    char *vp = rnd(10) == 0 ? pick_dir_or_rand(100) : pick_file_or_rand(80), *key = NULL;
    int e = resolve_parent(vp), k = e ? K_NONE : vkind(vp, &key);
    *want = e ? e : k == K_DIR ? EISDIR : k == K_NONE ? ENOENT : 0;
    logop("unlink %s", vp);
    char *p = mpath(vp);
    int got = unlink(p) < 0 ? errno : 0;
    if (!*want && !got) {
        kv_del(key);
        mark_parent(vp);
    }
    free(key);
    free(p);
    free(vp);
    return got;
}

static int mkdir_expect(const char *vp)
{
    int e = resolve_parent(vp);
    return e ? e : vkind(vp, NULL) != K_NONE ? EEXIST : 0;
}

static int op_mkdir(int *want)
{
    char *d = rand_parent();
    const char *n = rnd(20) == 0 ? file_names[rnd(3)] : dir_names[rnd(2)];
    char *vp = fmt("%s/%s", d, n);
    free(d);
    logop("mkdir %s", vp);
    *want = mkdir_expect(vp);
    char *p = mpath(vp);
    int got = mkdir(p, 0755) < 0 ? errno : 0;
    if (!*want && !got)
        xd_add(vp);
    free(p);
    free(vp);
    return got;
}

/* mkdir -p, as the tool does it: mkdir each level, an existing directory is fine. */
static int op_mkdirp(int *want)
{
    char *d = rand_parent(), *tail = rand_dir(MAX_DEPTH - 1 - depth(d));
    char *vp = fmt("%s%s/%s", d, tail, dir_names[rnd(2)]);
    free(d);
    free(tail);
    logop("mkdir -p %s", vp);
    int got = 0;
    *want = 0;
    for (char *s = strchr(vp + 1, '/');; s = strchr(s + 1, '/')) {
        if (s)
            *s = 0;
        int k = vkind(vp, NULL);
        int w = k == K_DIR ? 0 : k == K_FILE ? ENOTDIR : 0;
        char *p = mpath(vp);
        int g = mkdir(p, 0755) < 0 ? errno : 0;
        struct stat st;
        if (g == EEXIST)
            g = stat(p, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
        free(p);
        if (!w && k == K_NONE && !g)
            xd_add(vp);
        if (s)
            *s = '/';
        if (w || g) {
            *want = w;
            got = g;
            break;
        }
        if (!s)
            break;
    }
    free(vp);
    return got;
}

static int op_rmdir(int *want)
{
    char *vp = rnd(10) == 0 ? pick_file_or_rand(100) : pick_dir_or_rand(85);
    if (!*vp) {     /* never the root */
        free(vp);
        vp = rand_file();
    }
    int e = resolve_parent(vp), k = e ? K_NONE : vkind(vp, NULL);
    *want = e ? e : k == K_NONE ? ENOENT : k == K_FILE ? ENOTDIR : !dir_empty(vp) ? ENOTEMPTY : 0;
    logop("rmdir %s", vp);
    char *p = mpath(vp);
    int got = rmdir(p) < 0 ? errno : 0;
    if (!*want && !got) {
        xd_del(vp);
        mark_parent(vp);
    }
    free(p);
    free(vp);
    return got;
}

/* The kernel's and the file system's checks of rename(vs, vd), in the order Linux makes them. */
static int rename_expect(const char *vs, const char *vd)
{
    int e = resolve_parent(vs);
    if (!e)
        e = resolve_parent(vd);
    if (e)
        return e;
    int ks = vkind(vs, NULL), kd = vkind(vd, NULL);
    if (ks == K_NONE)
        return ENOENT;
    char *ps = parent_of(vs), *pd = parent_of(vd);
    bool differ = strcmp(ps, pd) != 0;
    bool src_above = !strcmp(pd, vs) || below(pd, vs);
    bool dst_above = !strcmp(ps, vd) || below(ps, vd);
    free(ps);
    free(pd);
    if (differ && src_above)
        return EINVAL;
    if (differ && dst_above)
        return ENOTEMPTY;
    if (ks == K_FILE) {
        if (kd == K_DIR)
            return EISDIR;
        if (kd == K_NONE && is_twin_name(vd)) {
            char *base = strndup(vd, strlen(vd) - 2);
            bool ok = model_is_dir(base);
            free(base);
            if (!ok)
                return EINVAL;
        }
        return 0;
    }
    if (kd == K_FILE)
        return ENOTDIR;
    if (kd == K_DIR && !dir_empty(vd))
        return ENOTEMPTY;
    if (keys_below(vs) > MAX_TXN_KEYS)
        return EXDEV;
    return 0;
}

static void rename_apply_file(const char *vs, const char *vd)
{
    char *ks = NULL, *kd = NULL;
    vkind(vs, &ks);
    if (vkind(vd, &kd) == K_FILE)
        mark_parent(vd);        /* the replaced file is a removal through the mount */
    else
        create_key(vd, &kd);
    long i = kv_find(ks);
    unsigned char *v = xmalloc(kvs[i].len);
    size_t n = kvs[i].len;
    memcpy(v, kvs[i].val, n);
    kv_set(kd, v, n);
    kv_del(ks);
    mark_parent(vs);
    free(v);
    free(ks);
    free(kd);
}

static char *moved(const char *p, const char *from, const char *to)
{
    return fmt("%s%s", to, p + strlen(from));
}

static void rename_apply_dir(const char *vs, const char *vd)
{
    if (vkind(vd, NULL) == K_DIR) {     /* an empty directory replaced */
        xd_del(vd);
        mark_parent(vd);
    }
    for (size_t i = 0; i < nkv; i++)
        if (below(kvs[i].key, vs)) {
            char *k = moved(kvs[i].key, vs, vd);
            free(kvs[i].key);
            kvs[i].key = k;
        }
    for (size_t i = 0; i < xdirs.n; i++)
        if (!strcmp(xdirs.v[i], vs) || below(xdirs.v[i], vs)) {
            char *k = moved(xdirs.v[i], vs, vd);
            free(xdirs.v[i]);
            xdirs.v[i] = k;
        }
    mark_parent(vs);
}

static int op_mvfile(int *want)
{
    char *vs = pick_file_or_rand(92), *vd = NULL;
    unsigned r = rnd(100);
    if (r < 25)
        vd = pick(false);
    else if (r < 35)
        vd = pick(true);
    else if (r < 42 && vkind(vs, NULL) != K_DIR)
        vd = twin_of_dir();
    if (!vd || !*vd) {
        free(vd);
        vd = rand_file();
    }
    if (!strcmp(vs, vd)) {
        free(vs);
        free(vd);
        return -1;
    }
    logop("mv %s %s", vs, vd);
    *want = rename_expect(vs, vd);
    char *ps = mpath(vs), *pd = mpath(vd);
    int got = rename(ps, pd) < 0 ? errno : 0;
    if (!*want && !got) {
        if (vkind(vs, NULL) == K_FILE)
            rename_apply_file(vs, vd);
        else
            rename_apply_dir(vs, vd);
    }
    free(ps);
    free(pd);
    free(vs);
    free(vd);
    return got;
}

/* Components below d, at most (0 for an empty directory). */
static unsigned height(const char *d)
{
    unsigned h = 0, base = depth(d);
    for (size_t i = 0; i < nkv; i++)
        if (below(kvs[i].key, d) && depth(kvs[i].key) - base > h)
            h = depth(kvs[i].key) - base;
    for (size_t i = 0; i < xdirs.n; i++)
        if (below(xdirs.v[i], d) && depth(xdirs.v[i]) - base > h)
            h = depth(xdirs.v[i]) - base;
    return h;
}

static int op_mvdir(int *want)
{
    char *vs = pick(true), *vd = NULL;
    if (!vs || !*vs) {
        free(vs);
        return -1;
    }
    unsigned r = rnd(100);
    char *d = NULL;
    if (r < 45)
        d = rand_parent();
    else if (r < 65)
        vd = pick(true);
    else if (r < 73)
        vd = pick(false);
    else if (r < 80)
        vd = fmt("%s/%s", vs, dir_names[rnd(2)]);
    else
        d = rand_dir(2);
    if (d || !vd || !*vd) {
        free(vd);
        vd = fmt("%s/%s", d ? d : "", rnd(3) ? dir_names[rnd(2)] : file_names[rnd(3)]);
        free(d);
    }
    *want = rename_expect(vs, vd);
    if (!strcmp(vs, vd) || (!*want && depth(vd) + height(vs) > MAX_DEPTH)) {
        free(vs);       /* the same name, or a tree growing deeper: draw again */
        free(vd);
        return -1;
    }
    logop("mv %s %s", vs, vd);
    char *ps = mpath(vs), *pd = mpath(vd);
    int got = rename(ps, pd) < 0 ? errno : 0;
    if (!*want && !got) {
        if (vkind(vs, NULL) == K_FILE)
            rename_apply_file(vs, vd);
        else
            rename_apply_dir(vs, vd);
    }
    free(ps);
    free(pd);
    free(vs);
    free(vd);
    return got;
}

/* Remote operations: etcdctl must succeed; the mount catches up in settle(). */
static int op_remote(enum op op)
{
    char *key = NULL;
    int rc;
    if (op == R_PUT) {
        char *vp = rnd(100) < 40 ? pick(false) : NULL;
        if (vp)
            vkind(vp, &key);
        if (!key)
            key = rand_file();
        free(vp);
        unsigned char data[64];
        size_t n = rand_value(data, false);
        data[n] = 0;
        char *shown = esc(data, n);
        logop("etcdctl put %s '%s'", key, shown);
        free(shown);
        rc = etcdctl("put", key, (char *)data, NULL);
        if (!rc)
            kv_set(key, data, n);
    } else if (op == R_DEL) {
        char *vp = rnd(100) < 85 ? pick(false) : NULL;
        if (vp)
            vkind(vp, &key);
        if (!key)
            key = rand_file();
        free(vp);
        logop("etcdctl del %s", key);
        rc = etcdctl("del", key, NULL, NULL);
        if (!rc)
            kv_del(key);
    } else {
        char *d = pick(true);
        if (!d || !*d) {
            free(d);
            return -1;
        }
        key = fmt("%s/", d);
        free(d);
        logop("etcdctl del --prefix %s", key);
        rc = etcdctl("del", "--prefix", key, NULL);
        for (size_t i = 0; i < nkv && !rc;)
            if (!strncmp(kvs[i].key, key, strlen(key)))
                kv_del(kvs[i].key);
            else
                i++;
    }
    free(key);
    return rc < 0 ? -2 : 0;
}

static enum op choose_op(void)
{
    unsigned total = 0, r;
    for (int i = 0; i < N_OPS; i++)
        total += op_weight[i];
    r = rnd(total);
    for (int i = 0; i < N_OPS; i++) {
        if (r < op_weight[i])
            return (enum op)i;
        r -= op_weight[i];
    }
    return L_READ;
}

/* One random operation; 0, or -1 after printing a failure. */
static int step(void)
{
    enum op op;
    int want = 0, got;
    for (;;) {
        want = 0;
        op = choose_op();
        switch (op) {
        case L_WRITE: got = op_write(false, &want); break;
        case L_APPEND: got = op_write(true, &want); break;
        case L_TRUNC: got = op_truncate(&want); break;
        case L_READ: got = op_read(&want); break;
        case L_UNLINK: got = op_unlink(&want); break;
        case L_MKDIR: got = op_mkdir(&want); break;
        case L_MKDIRP: got = op_mkdirp(&want); break;
        case L_RMDIR: got = op_rmdir(&want); break;
        case L_MVFILE: got = op_mvfile(&want); break;
        case L_MVDIR: got = op_mvdir(&want); break;
        default: got = op_remote(op); break;
        }
        if (got != -1)
            break;      /* -1: nothing to do that way, draw again */
    }
    n_done[op]++;
    char *line = oplog[opno % LOG_KEEP];
    if (got == -2) {
        printf("not ok - op %ld: etcdctl failed (%s)\n", opno, line);
        return -1;
    }
    size_t l = strlen(line);
    snprintf(line + l, 600 - l, " → %s", errname(got));
    if (want != got) {
        printf("not ok - op %ld: %s: the model expects %s\n", opno, line, errname(want));
        show_log();
        return -1;
    }
    if (read_mismatch) {
        printf("not ok - op %ld: %s: read different bytes than the model holds\n", opno, line);
        show_log();
        return -1;
    }
    if (want) {
        n_err[op]++;
        err_seen[want & 255]++;
    }
    double took;
    int tries;
    if (settle(5, &took, &tries) < 0) {
        printf("not ok - op %ld: %s: the mount never showed the model's tree (%.1f s)\n", opno,
               line, took);
        show_log();
        return -1;
    }
    for (size_t i = 0; i < nkv; i++)
        if (model_is_dir(kvs[i].key)) {
            n_twin_ops++;     /* coverage: a key that is also a directory */
            break;
        }
    if (op >= R_PUT)
        lat_remote[n_lat_remote++ % 100000] = took;
    else if (tries > 1)
        n_local_late++;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void summary(void)
{
    printf("# operations (done / failing as the model expected):");
    for (int i = 0; i < N_OPS; i++)
        printf("%s %s %lu/%lu", i ? "," : "", op_names[i], n_done[i], n_err[i]);
    printf("\n# operations done while a key was also a directory (twin): %zu", n_twin_ops);
    printf("\n# expected errors seen:");
    for (int e = 1; e < 256; e++)
        if (err_seen[e])
            printf(" %s %lu", errname(e), err_seen[e]);
    printf("\n");
    if (n_lat_remote) {
        size_t n = n_lat_remote < 100000 ? n_lat_remote : 100000;
        qsort(lat_remote, n, sizeof(double), cmp_double);
        printf("# etcdctl change → mount shows it: p50 %.1f ms, max %.1f ms over %zu changes; "
               "local ops whose result showed only on a later look: %zu\n", lat_remote[n / 2] * 1e3,
               lat_remote[n - 1] * 1e3, n, n_local_late);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: model MNT ENDPOINTS TMPDIR (env MODEL_OPS, MODEL_SEED)\n");
        return 2;
    }
    mnt = argv[1];
    endpoints = argv[2];
    tmpdir = argv[3];
    setvbuf(stdout, NULL, _IOLBF, 0);
    long ops = getenv("MODEL_OPS") ? atol(getenv("MODEL_OPS")) : 2000;
    unsigned long long seed = getenv("MODEL_SEED") ? strtoull(getenv("MODEL_SEED"), NULL, 0) : 1;
    if (getenv("ETCDFS_TIMEOUT_MULT"))
        timeout_mult = atof(getenv("ETCDFS_TIMEOUT_MULT"));
    if (timeout_mult <= 0)
        timeout_mult = 1;
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    printf("# MODEL_SEED=%llu MODEL_OPS=%ld\n", seed, ops);
    dry = getenv("MODEL_DRY") && atoi(getenv("MODEL_DRY"));
    if (dry)
        op_weight[R_PUT] = op_weight[R_DEL] = op_weight[R_DELPFX] = 0;
    strv initial = {0};
    if (!dry && etcd_keys(&initial, true) < 0) {
        printf("not ok - driver: etcdctl get of the initial keys failed\n");
        return 1;
    }
    sv_free(&initial);
    printf("# %zu keys in etcd at the start\n", nkv);
    double t0 = now_s();
    long from = 1;
    int failed = 0;
    for (opno = 1; opno <= ops; opno++) {
        if (step() < 0) {
            failed = 1;
            break;
        }
        if (opno % 200 == 0 || opno == ops) {
            double took;
            int tries;
            if (settle(5, &took, &tries) < 0 || compare_etcd() < 0) {
                printf("not ok - ops %ld..%ld: mount, etcd and model agree\n", from, opno);
                show_log();
                failed = 1;
                break;
            }
            printf("ok - ops %ld..%ld: mount, etcd and model agree (%zu keys, %zu explicit dirs)\n",
                   from, opno, nkv, xdirs.n);
            from = opno + 1;
        }
    }
    summary();
    printf("# %ld operations in %.1f s (MODEL_SEED=%llu reproduces the run)\n",
           opno > ops ? ops : opno, now_s() - t0, seed);
    return failed;
}

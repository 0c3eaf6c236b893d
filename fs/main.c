/* main.c — the etcdfs program: options, mount point check, password prompt, daemonizing (fork
 * first: the client and cache own threads, which fork() would not carry over), connect + load,
 * FUSE session and mount, the worker loop, and a clean teardown. Also logging (fs_log).
 * The parent of a daemonized mount exits 0 only once the kernel has sent FUSE_INIT. */
#include "ops.h"
#include "echo.h"
#include "events.h"
#include "options.h"
#include "scratch.h"

#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "config.h"
#ifdef ETCDFS_CLUSTER
#include "cluster.h"
#endif

#define FUSE_MAX_THREADS 32
#define FUSE_IDLE_THREADS 16

bool fs_log_debug;
static bool log_syslog;
static int ready_fd = -1;          /* daemon child → waiting parent; -1 in the foreground */

void fs_log(int prio, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (log_syslog) {
        vsyslog(prio, fmt, ap);
    } else {
        char line[1024];
        vsnprintf(line, sizeof(line), fmt, ap);
        fprintf(stderr, "etcdfs: %s\n", line);
    }
    va_end(ap);
}

/* A fatal setup error: one line, to the waiting parent (which prints it) or to stderr. */
static void report_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (ready_fd >= 0) {
        dprintf(ready_fd, "etcdfs: %s\n", line);
        close(ready_fd);
        ready_fd = -1;
    } else {
        fprintf(stderr, "etcdfs: %s\n", line);
    }
}

static void on_mount_ready(fs_state *st)
{
    if (ready_fd >= 0) {
        if (write(ready_fd, "OK\n", 3) != 3)
            fs_log(LOG_WARNING, "could not tell the parent the mount is ready");
        close(ready_fd);
        ready_fd = -1;
    }
    fs_dbg("mount is ready");
}

static void print_versions(void)
{
    printf("etcdfs %s\n", ETCDFS_VERSION);
    printf("libfuse %s (API %d)\n", fuse_pkgversion(), FUSE_USE_VERSION);
    printf("nghttp2 %s\n", nghttp2_version(0)->version_str);
    printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("protobuf-c %s\n", protobuf_c_version());
}

/* Without echo, from the terminal on stdin. */
static char *prompt_password(const char *user)
{
    struct termios old, quiet;
    if (tcgetattr(STDIN_FILENO, &old) < 0)
        return NULL;
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    /* Echo off (dropping earlier type-ahead) before the prompt shows: whatever is typed once
     * the prompt is visible is neither echoed nor flushed. */
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    fprintf(stderr, "Password for %s: ", user);
    fflush(stderr);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fputc('\n', stderr);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* Parent side of daemonizing: waits for "OK" (exit 0) or the child's error line (exit 1). */
static int wait_for_child(int fd, pid_t child)
{
    char buf[2048];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len >= 3 && memcmp(buf, "OK\n", 3) == 0)
            return 0;
        if (len == sizeof(buf) - 1)
            break;
    }
    buf[len] = '\0';
    if (len > 0) {
        fputs(buf, stderr);
    } else {
        int status = 0;
        waitpid(child, &status, 0);
        if (WIFSIGNALED(status))
            fprintf(stderr, "etcdfs: mount failed: the daemon died (signal %d)\n",
                    WTERMSIG(status));
        else
            fprintf(stderr, "etcdfs: mount failed: the daemon exited (status %d)\n",
                    WEXITSTATUS(status));
    }
    return 1;
}

/* Forks; only the child returns (with ready_fd set). */
static void daemonize_early(void)
{
    int p[2];
    if (pipe(p) < 0) {
        fprintf(stderr, "etcdfs: pipe: %s\n", strerror(errno));
        exit(1);
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "etcdfs: fork: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(p[1]);
        exit(wait_for_child(p[0], pid));
    }
    close(p[0]);
    ready_fd = p[1];
    setsid();
}

/* Daemonized, the cache's and client's stderr lines go to syslog through this thread. */
static void *stderr_to_syslog(void *arg)
{
    FILE *in = fdopen((int)(intptr_t)arg, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (in && (n = getline(&line, &cap, in)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        const char *msg = strncmp(line, "etcdfs: ", 8) == 0 ? line + 8 : line;
        if (*msg)
            syslog(LOG_ERR, "%s", msg);
    }
    free(line);
    if (in)
        fclose(in);
    return NULL;
}

/* After the mount: no terminal, no cwd pinning a filesystem. Logs go to syslog, except when
 * stderr is a regular file (a log file the caller chose): that one is kept. A pipe or terminal
 * is never kept: a caller reading our output until EOF would wait for the unmount. */
static void detach_stdio(void)
{
    struct stat es;
    bool keep_stderr = fstat(STDERR_FILENO, &es) == 0 && S_ISREG(es.st_mode);
    if (!keep_stderr) {
        openlog("etcdfs", LOG_PID, LOG_DAEMON);
        log_syslog = true;
    }
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        if (!keep_stderr)
            dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    int p[2];
    pthread_t t;
    if (!keep_stderr && pipe2(p, O_CLOEXEC) == 0) {
        if (pthread_create(&t, NULL, stderr_to_syslog, (void *)(intptr_t)p[0]) == 0) {
            pthread_detach(t);
            dup2(p[1], STDERR_FILENO);
        } else {
            close(p[0]);
        }
        close(p[1]);
    }
    if (chdir("/") < 0) {
        /* cannot happen for "/"; nothing depends on the cwd afterwards */
    }
}

static char *join_endpoints(const etcdfs_opts *o)
{
    size_t len = 1;
    for (size_t i = 0; i < o->n_endpoints; i++)
        len += strlen(o->endpoints[i]) + 1;
    char *s = calloc(1, len);
    for (size_t i = 0; s && i < o->n_endpoints; i++) {
        if (i)
            strcat(s, ",");
        strcat(s, o->endpoints[i]);
    }
    return s;
}

static int connect_and_load(const etcdfs_opts *o, fs_state *st)
{
    etcd_config cfg = {
        .endpoints = (const char *const *)o->endpoints,
        .n_endpoints = o->n_endpoints,
        .cacert = o->cacert, .cert = o->cert, .key = o->key,
        .insecure_skip_verify = o->insecure_skip_verify,
        .user = o->user, .password = o->password,
        .dial_timeout_ms = o->dial_timeout_ms,
        .call_timeout_ms = o->command_timeout_ms,
        /* A mount must leave a hung member fast (its watch is the cache's life line): PING after
         * 5.5 s of silence (etcd refuses pings closer than its 5 s keepalive-min-time) and give
         * it 2.5 s, so failover happens within ~8 s instead of the library's 15 s. */
        .keepalive_time_ms = 5500,
        .keepalive_timeout_ms = 2500,
    };
    etcd_error err = { 0 };
    char *eps = join_endpoints(o);
    int r = etcd_client_new(&cfg, &st->client, &err);
    if (r < 0) {
        /* The client's message names the endpoint it failed on when there is one. */
        const char *colon = strstr(err.msg, ": ");
        const char *scheme = strstr(err.msg, "://");
        if (scheme && colon && scheme < colon)
            report_error("cannot connect to %s", err.msg);
        else
            report_error("cannot connect to %s: %s", eps ? eps : "etcd",
                         err.msg[0] ? err.msg : etcd_err_name(-r));
        free(eps);
        return r;
    }
    cache_config cc = {
        .client = st->client,
        .prefix = st->prefix,
        .prefix_len = st->prefix_len,
        .value_budget = (size_t)o->value_cache,
        .write_timeout_ms = o->command_timeout_ms,
        .conflict_fail = o->conflict_fail,
    };
    memset(&err, 0, sizeof(err));
    r = cache_open(&cc, &st->cache, &err);
    if (r < 0) {
        report_error("cannot load %s%s%s from %s: %s", o->prefix ? "prefix '" : "the keyspace",
                     o->prefix ? o->prefix : "", o->prefix ? "'" : "", eps ? eps : "etcd",
                     err.msg[0] ? err.msg : etcd_err_name(-r));
        etcd_client_free(st->client);
        st->client = NULL;
    } else {
        fs_loaded_revision = cache_revision(st->cache);
    }
    free(eps);
    return r;
}

static struct fuse_session *new_session(const etcdfs_opts *o, fs_state *st, char *argv0)
{
    char *mo = NULL;
    if (asprintf(&mo, "fsname=etcdfs,subtype=etcdfs,%s%s%s%s",
                 o->read_only ? "ro" : "noatime",
                 o->allow_other ? ",allow_other,default_permissions" : "",
                 o->fuse_opts[0] ? "," : "", o->fuse_opts) < 0)
        return NULL;
    char *args_v[] = { argv0, "-o", mo, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
    struct fuse_session *se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), st);
    fuse_opt_free_args(&args);
    free(mo);
    return se;
}

static int run_loop(struct fuse_session *se)
{
    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    if (!lc)
        return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(lc, 0);
    fuse_loop_cfg_set_max_threads(lc, FUSE_MAX_THREADS);
    fuse_loop_cfg_set_idle_threads(lc, FUSE_IDLE_THREADS);
    int r = fuse_session_loop_mt(se, lc);
    fuse_loop_cfg_destroy(lc);
    return r;
}

/* Our mount's id in /proc/self/mountinfo (the newest mount on mnt), for fdinfo's mnt_id. */
static int find_mnt_id(const char *mnt)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    int id = -1;
    while (getline(&line, &cap, f) > 0) {
        int mid;
        char path[4096];
        if (sscanf(line, "%d %*d %*s %*s %4095s", &mid, path) != 2)
            continue;
        /* mountinfo escapes space, tab, newline and backslash as \ooo */
        char *w = path;
        for (char *r = path; *r; r++) {
            if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] && r[3]) {
                *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                r += 3;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        if (strcmp(path, mnt) == 0)
            id = mid;
    }
    free(line);
    fclose(f);
    return id;
}

static int check_mountpoint(const char *path, char **abs)
{
    struct stat s;
    *abs = realpath(path, NULL);
    if (!*abs || stat(*abs, &s) < 0) {
        fprintf(stderr, "etcdfs: bad mount point '%s': %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(s.st_mode)) {
        fprintf(stderr, "etcdfs: bad mount point '%s': %s\n", path, strerror(ENOTDIR));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    etcdfs_opts o;
    char err[512];
    /* First: parsing scrubs passwords out of argv. */
    if (options_parse(argc, argv, &o, err, sizeof(err)) < 0) {
        fprintf(stderr, "etcdfs: %s\n", err);
        if (o.usage_error) {
            fputc('\n', stderr);
            options_usage(stderr);
        }
        options_free(&o);
        return 1;
    }
    if (o.help || o.version) {
        o.help ? options_usage(stdout) : print_versions();
        options_free(&o);
        return 0;
    }
    fs_log_debug = o.debug;
    if (scratch_configure(o.scratch, o.scratch_excl, err, sizeof(err)) < 0) {
        fprintf(stderr, "etcdfs: %s\n", err);
        options_free(&o);
        return 1;
    }

    char *mnt = NULL;
    if (check_mountpoint(o.mountpoint, &mnt) < 0) {
        free(mnt);
        options_free(&o);
        return 1;
    }
    if (o.user && !o.password) {
        if (isatty(STDIN_FILENO))
            o.password = prompt_password(o.user);
        if (!o.password) {
            fprintf(stderr, "etcdfs: no password for user '%s' (use --password, "
                    "--user=NAME:PASSWORD or ETCDCTL_PASSWORD)\n", o.user);
            free(mnt);
            options_free(&o);
            return 1;
        }
    }

    if (!o.foreground)
        daemonize_early();

    /* Only the main thread takes termination signals (libfuse's handlers end the loop there);
     * every thread created from here on inherits the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    fs_state st = {
        .uid = o.uid, .gid = o.gid,
        .file_mode = 0666 & ~o.umask, .dir_mode = 0777 & ~o.umask,
        .read_only = o.read_only, .debug = o.debug, .quota = o.quota, .mnt_id = -1,
        .prefix = (const uint8_t *)(o.prefix ? o.prefix : ""),
        .prefix_len = o.prefix ? strlen(o.prefix) : 0,
        .on_init = on_mount_ready,
    };
    int rc = 1;
    if (connect_and_load(&o, &st) < 0)
        goto out;
#ifdef ETCDFS_CLUSTER
    cluster_init(&(cluster_ctx){
        .client = st.client, .cache = st.cache, .uid = st.uid, .gid = st.gid,
        .file_mode = st.file_mode, .dir_mode = st.dir_mode, .read_only = st.read_only,
        .quota_bytes = (long long)st.quota,
    });
#endif
    st.se = new_session(&o, &st, argv[0]);
    if (!st.se) {
        report_error("cannot create the FUSE session (options: %s)", o.fuse_opts);
        goto out_cache;
    }
    if (fuse_set_signal_handlers(st.se) < 0 || notify_start(&st) < 0) {
        report_error("cannot set up signal handlers or the notifier thread");
        goto out_session;
    }
    events_init(&st);
    if (!o.no_inotify && echo_start(&st, mnt) < 0)
        fs_log(LOG_WARNING, "no inotify echo thread: remote changes raise no inotify events");
    cache_set_listener(st.cache, notify_cache_event, &st);
    if (fuse_session_mount(st.se, mnt) != 0) {
        report_error("cannot mount on %s (see the line above)", mnt);
        goto out_notify;
    }
    st.mnt_id = find_mnt_id(mnt);
    if (ready_fd >= 0)
        detach_stdio();
    fs_log(LOG_INFO, "mounted %s on %s (revision %lld)", etcd_client_endpoint(st.client), mnt,
           (long long)cache_revision(st.cache));
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    /* Returns after in-flight requests finished (workers are joined); a signal or an
     * unmount both end it, and both are a clean exit. */
    run_loop(st.se);
    events_shutdown();
    echo_stop();
    fs_log(LOG_INFO, "unmounting %s", mnt);
    fuse_session_unmount(st.se);
    handle_commit_all();
    rc = 0;
out_notify:
    cache_set_listener(st.cache, NULL, NULL);
    echo_stop();
    notify_stop();
out_session:
    fuse_remove_signal_handlers(st.se);
    fuse_session_destroy(st.se);
out_cache:
    if (st.cache)
        cache_close(st.cache);
    if (st.client)
        etcd_client_free(st.client);
out:
    free(mnt);
    options_free(&o);
    return rc;
}

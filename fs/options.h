/* options.h — etcdfs's command line: etcdctl-named flags, ETCDCTL_* environment variables and
 * -o mount options (so fstab lines work), parsed into one struct. Also the usage text, and the
 * scrubbing of passwords out of argv (so /proc/PID/cmdline never shows them). */
#ifndef ETCDFS_OPTIONS_H
#define ETCDFS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define OPTIONS_DEFAULT_ENDPOINT "127.0.0.1:2379"
#define OPTIONS_DEFAULT_VALUE_CACHE (512ULL << 20)
#define OPTIONS_DEFAULT_QUOTA (2ULL << 30)

typedef struct etcdfs_opts {
    char **endpoints;           /* never empty after a successful parse */
    size_t n_endpoints;
    char *cacert, *cert, *key;
    bool insecure_skip_verify;
    char *user, *password;      /* user without ":password" */
    char *prefix;               /* NULL or "": whole keyspace */
    int dial_timeout_ms, command_timeout_ms;

    char *mountpoint;
    bool foreground, debug, read_only, allow_other;
    uid_t uid;
    gid_t gid;
    mode_t umask;               /* files 0666 & ~umask, dirs 0777 & ~umask; default 077 */
    uint64_t value_cache;
    uint64_t quota;
    bool conflict_fail;
    char *scratch, *scratch_excl;   /* -o scratch= / scratch_excl= (NULL: default) */
    bool no_inotify;            /* -o noinotify: no echo of remote changes (fs/echo.c) */
    char *fuse_opts;            /* comma list for fuse_session_new ("" when none) */

    bool help, version;
    bool usage_error;           /* the error is about the command line: print the usage too */
} etcdfs_opts;

/* Reads the ETCDCTL_* environment, then argv (flags win). Password bytes in argv are
 * overwritten as soon as they are copied. On error returns -EINVAL with one line in err
 * (without the "etcdfs: " prefix). */
int options_parse(int argc, char **argv, etcdfs_opts *o, char *err, size_t errlen);
void options_free(etcdfs_opts *o);
void options_usage(FILE *f);

/* "512M", "2G", "4096", "64K" (powers of 1024). -EINVAL on garbage or overflow. */
int options_parse_size(const char *s, uint64_t *out);
/* Go-style durations as etcdctl takes them: "2s", "500ms", "1m", "1m30s"; a bare number is
 * seconds. -EINVAL on garbage. */
int options_parse_duration(const char *s, int *ms);

#endif

/* options.c — parsing of etcdfs's command line, environment and -o mount options into
 * etcdfs_opts; the usage text; the overwriting of passwords in argv.
 * Precedence: built-in defaults < ETCDCTL_* environment < flags and -o options (last wins). */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_DIAL_TIMEOUT_MS 2000      /* etcdctl's default */
#define DEFAULT_COMMAND_TIMEOUT_MS 5000   /* etcdctl's default */

static int set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static void replace_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

/* Overwrites the bytes of a secret in argv: /proc/PID/cmdline shows argv's memory. */
static void scrub(char *s)
{
    for (; s && *s && *s != ','; s++)
        *s = 'x';
}

static void free_endpoints(etcdfs_opts *o)
{
    for (size_t i = 0; i < o->n_endpoints; i++)
        free(o->endpoints[i]);
    free(o->endpoints);
    o->endpoints = NULL;
    o->n_endpoints = 0;
}

static int add_endpoint(etcdfs_opts *o, const char *s, size_t len)
{
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0)
        return 0;
    char **n = realloc(o->endpoints, (o->n_endpoints + 1) * sizeof(*n));
    if (!n)
        return -ENOMEM;
    o->endpoints = n;
    n[o->n_endpoints] = strndup(s, len);
    if (!n[o->n_endpoints])
        return -ENOMEM;
    o->n_endpoints++;
    return 0;
}

/* "a,b,c" (also '+' or ';' separated, for -o where ',' splits options) replaces the list. */
static int set_endpoints(etcdfs_opts *o, const char *list, char *err, size_t errlen)
{
    free_endpoints(o);
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",;+");
        if (add_endpoint(o, p, n) < 0)
            return set_err(err, errlen, "out of memory");
        p += n;
        if (*p)
            p++;
    }
    if (o->n_endpoints == 0)
        return set_err(err, errlen, "empty --endpoints");
    return 0;
}

/* "name:password" sets both; "name" keeps a password given separately. */
static void set_user(etcdfs_opts *o, const char *s)
{
    const char *colon = strchr(s, ':');
    free(o->user);
    if (colon) {
        o->user = strndup(s, (size_t)(colon - s));
        replace_str(&o->password, colon + 1);
    } else {
        o->user = strdup(s);
    }
}

int options_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    case '\0': break;
    default: return -EINVAL;
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (shift && (*end == 'B' || *end == 'b'))
        end++;
    if (*end)
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

int options_parse_duration(const char *s, int *ms)
{
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    double total = strtod(s, &end);
    if (*end == '\0') {
        /* A bare number is seconds. */
        if (errno || end == s || total < 0)
            return -EINVAL;
        total *= 1000;
    } else {
        total = 0;
        for (const char *p = s; *p; ) {
            if (!isdigit((unsigned char)*p) && *p != '.')
                return -EINVAL;
            errno = 0;
            double v = strtod(p, &end);
            if (errno || end == p)
                return -EINVAL;
            p = end;
            if (strncmp(p, "ms", 2) == 0) { total += v; p += 2; }
            else if (*p == 's') { total += v * 1000; p++; }
            else if (*p == 'm') { total += v * 60000; p++; }
            else if (*p == 'h') { total += v * 3600000; p++; }
            else return -EINVAL;
        }
    }
    if (total > 24.0 * 3600000)
        return -EINVAL;
    *ms = (int)total;
    return 0;
}

static int parse_uint(const char *s, int base, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -EINVAL;
    unsigned long v = strtoul(s, &end, base);
    if (errno || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int append_fuse_opt(etcdfs_opts *o, const char *opt)
{
    size_t old = o->fuse_opts ? strlen(o->fuse_opts) : 0;
    char *n = realloc(o->fuse_opts, old + strlen(opt) + 2);
    if (!n)
        return -ENOMEM;
    if (old)
        n[old++] = ',';
    strcpy(n + old, opt);
    o->fuse_opts = n;
    return 0;
}

/* Options handed to the kernel / libfuse as they are. */
static const char *const fuse_passthrough[] = {
    "rw", "default_permissions", "allow_root", "auto_unmount", "nosuid", "suid", "nodev", "dev",
    "noexec", "exec", "sync", "async", "dirsync", "noatime", "nodiratime", NULL,
};
static const char *const fuse_passthrough_value[] = { "fsname", "subtype", "max_read", NULL };
/* What mount(8) / mount.fuse3 may leave in an fstab line that means nothing here. */
static const char *const ignored[] = { "defaults", "_netdev", "nofail", "auto", "noauto", "user",
                                       "users", "nouser", NULL };

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

/* Connection settings shared by flags and -o keys (name as in etcdctl, '-' or '_'). */
static int set_conn_opt(etcdfs_opts *o, const char *name, const char *val, char *err,
                        size_t errlen, bool *handled)
{
    *handled = true;
    if (strcmp(name, "endpoints") == 0)
        return set_endpoints(o, val, err, errlen);
    if (strcmp(name, "cacert") == 0) { replace_str(&o->cacert, val); return 0; }
    if (strcmp(name, "cert") == 0) { replace_str(&o->cert, val); return 0; }
    if (strcmp(name, "key") == 0) { replace_str(&o->key, val); return 0; }
    if (strcmp(name, "user") == 0) { set_user(o, val); return 0; }
    if (strcmp(name, "password") == 0) { replace_str(&o->password, val); return 0; }
    if (strcmp(name, "prefix") == 0) { replace_str(&o->prefix, val); return 0; }
    if (strcmp(name, "dial-timeout") == 0 || strcmp(name, "dial_timeout") == 0) {
        if (options_parse_duration(val, &o->dial_timeout_ms) < 0 || o->dial_timeout_ms <= 0)
            return set_err(err, errlen, "invalid --dial-timeout '%s'", val);
        return 0;
    }
    if (strcmp(name, "command-timeout") == 0 || strcmp(name, "command_timeout") == 0) {
        if (options_parse_duration(val, &o->command_timeout_ms) < 0 ||
            o->command_timeout_ms <= 0)
            return set_err(err, errlen, "invalid --command-timeout '%s'", val);
        return 0;
    }
    *handled = false;
    return 0;
}

/* One -o token: name or name=value. */
static int parse_mount_opt(etcdfs_opts *o, char *tok, char *err, size_t errlen)
{
    char *eq = strchr(tok, '=');
    const char *val = eq ? eq + 1 : NULL;
    if (eq)
        *eq = '\0';
    const char *name = tok;
    unsigned long v;
    bool handled;

    if (val) {
        int r = set_conn_opt(o, name, val, err, errlen, &handled);
        if (handled)
            return r;
    }
    if (!val && (strcmp(name, "insecure_skip_tls_verify") == 0 ||
                 strcmp(name, "insecure-skip-tls-verify") == 0)) {
        o->insecure_skip_verify = true;
        return 0;
    }
    if (!val && strcmp(name, "ro") == 0) { o->read_only = true; return 0; }
    if (!val && strcmp(name, "rw") == 0) { o->read_only = false; return 0; }
    if (!val && strcmp(name, "allow_other") == 0) { o->allow_other = true; return 0; }
    if (!val && strcmp(name, "debug") == 0) { o->debug = true; return 0; }
    if (!val && strcmp(name, "noinotify") == 0) { o->no_inotify = true; return 0; }
    if (!val && strcmp(name, "inotify") == 0) { o->no_inotify = false; return 0; }
    if (val && strcmp(name, "uid") == 0 && parse_uint(val, 10, (uid_t)-2, &v) == 0) {
        o->uid = (uid_t)v;
        return 0;
    }
    if (val && strcmp(name, "gid") == 0 && parse_uint(val, 10, (gid_t)-2, &v) == 0) {
        o->gid = (gid_t)v;
        return 0;
    }
    if (val && strcmp(name, "umask") == 0 && parse_uint(val, 8, 0777, &v) == 0) {
        o->umask = (mode_t)v;
        return 0;
    }
    if (val && strcmp(name, "value_cache") == 0 && options_parse_size(val, &o->value_cache) == 0)
        return 0;
    if (val && strcmp(name, "quota") == 0 && options_parse_size(val, &o->quota) == 0 &&
        o->quota > 0)
        return 0;
    if (val && (strcmp(name, "scratch") == 0 || strcmp(name, "scratch_excl") == 0)) {
        char **dst = name[7] ? &o->scratch_excl : &o->scratch;
        free(*dst);
        return (*dst = strdup(val)) ? 0 : set_err(err, errlen, "out of memory");
    }
    if (val && strcmp(name, "conflict") == 0) {
        if (strcmp(val, "fail") == 0) { o->conflict_fail = true; return 0; }
        if (strcmp(val, "overwrite") == 0) { o->conflict_fail = false; return 0; }
    }
    if (!val && in_list(fuse_passthrough, name))
        return append_fuse_opt(o, name) < 0 ? set_err(err, errlen, "out of memory") : 0;
    if (val && in_list(fuse_passthrough_value, name)) {
        *eq = '=';
        return append_fuse_opt(o, tok) < 0 ? set_err(err, errlen, "out of memory") : 0;
    }
    if (!val && (in_list(ignored, name) || strncmp(name, "x-", 2) == 0))
        return 0;
    bool known = val && (strcmp(name, "uid") == 0 || strcmp(name, "gid") == 0 ||
                         strcmp(name, "umask") == 0 || strcmp(name, "value_cache") == 0 ||
                         strcmp(name, "quota") == 0 || strcmp(name, "conflict") == 0);
    if (eq)
        *eq = '=';
    o->usage_error = true;
    if (known)
        return set_err(err, errlen, "invalid value in mount option '%s'", tok);
    return set_err(err, errlen, "unknown mount option '%s'", tok);
}

/* Parses a copy of one -o argument, then scrubs the passwords in the original. A token
 * without '=' that looks like host:port right after endpoints=... continues the list, so
 * "-o endpoints=a:1,b:2,ro" works in fstab. */
static int parse_mount_opts(etcdfs_opts *o, char *arg, char *err, size_t errlen)
{
    char *copy = strdup(arg);
    if (!copy)
        return set_err(err, errlen, "out of memory");
    int r = 0;
    bool in_endpoints = false;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok && r == 0;
         tok = strtok_r(NULL, ",", &save)) {
        if (in_endpoints && !strchr(tok, '=') && strchr(tok, ':')) {
            if (add_endpoint(o, tok, strlen(tok)) < 0)
                r = set_err(err, errlen, "out of memory");
            continue;
        }
        in_endpoints = strncmp(tok, "endpoints=", 10) == 0;
        r = parse_mount_opt(o, tok, err, errlen);
    }
    free(copy);
    /* Scrub "password=..." and the password part of "user=name:password". */
    for (char *p = arg; *p; ) {
        if (strncmp(p, "password=", 9) == 0)
            scrub(p + 9);
        else if (strncmp(p, "user=", 5) == 0) {
            char *colon = strchr(p, ':'), *comma = strchr(p, ',');
            if (colon && (!comma || colon < comma))
                scrub(colon + 1);
        }
        char *comma = strchr(p, ',');
        if (!comma)
            break;
        p = comma + 1;
    }
    return r;
}

static void apply_env(etcdfs_opts *o, char *err, size_t errlen)
{
    const char *v;
    if ((v = getenv("ETCDCTL_ENDPOINTS")) && *v)
        set_endpoints(o, v, err, errlen);
    if ((v = getenv("ETCDCTL_CACERT")) && *v)
        replace_str(&o->cacert, v);
    if ((v = getenv("ETCDCTL_CERT")) && *v)
        replace_str(&o->cert, v);
    if ((v = getenv("ETCDCTL_KEY")) && *v)
        replace_str(&o->key, v);
    if ((v = getenv("ETCDCTL_USER")) && *v)
        set_user(o, v);
    if ((v = getenv("ETCDCTL_PASSWORD")) && *v)
        replace_str(&o->password, v);
    if ((v = getenv("ETCDCTL_INSECURE_SKIP_TLS_VERIFY")) && strcmp(v, "true") == 0)
        o->insecure_skip_verify = true;
    if ((v = getenv("ETCDCTL_DIAL_TIMEOUT")) && *v)
        options_parse_duration(v, &o->dial_timeout_ms);
    if ((v = getenv("ETCDCTL_COMMAND_TIMEOUT")) && *v)
        options_parse_duration(v, &o->command_timeout_ms);
}

enum { OPT_ENDPOINTS = 256, OPT_CACERT, OPT_CERT, OPT_KEY, OPT_INSECURE, OPT_USER,
       OPT_PASSWORD, OPT_PREFIX, OPT_DIAL, OPT_COMMAND };

static const struct option long_opts[] = {
    { "endpoints", required_argument, NULL, OPT_ENDPOINTS },
    { "cacert", required_argument, NULL, OPT_CACERT },
    { "cert", required_argument, NULL, OPT_CERT },
    { "key", required_argument, NULL, OPT_KEY },
    { "insecure-skip-tls-verify", no_argument, NULL, OPT_INSECURE },
    { "user", required_argument, NULL, OPT_USER },
    { "password", required_argument, NULL, OPT_PASSWORD },
    { "prefix", required_argument, NULL, OPT_PREFIX },
    { "dial-timeout", required_argument, NULL, OPT_DIAL },
    { "command-timeout", required_argument, NULL, OPT_COMMAND },
    { "foreground", no_argument, NULL, 'f' },
    { "debug", no_argument, NULL, 'd' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
};

static void set_defaults(etcdfs_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->dial_timeout_ms = DEFAULT_DIAL_TIMEOUT_MS;
    o->command_timeout_ms = DEFAULT_COMMAND_TIMEOUT_MS;
    o->uid = getuid();
    o->gid = getgid();
    o->umask = 077;
    o->value_cache = OPTIONS_DEFAULT_VALUE_CACHE;
    o->quota = OPTIONS_DEFAULT_QUOTA;
}

/* One flag from getopt_long; argv secrets scrubbed here. */
static int apply_flag(etcdfs_opts *o, int c, char *arg, char *err, size_t errlen)
{
    static const char *const names[] = {
        [OPT_ENDPOINTS - OPT_ENDPOINTS] = "endpoints", [OPT_CACERT - OPT_ENDPOINTS] = "cacert",
        [OPT_CERT - OPT_ENDPOINTS] = "cert", [OPT_KEY - OPT_ENDPOINTS] = "key",
        [OPT_USER - OPT_ENDPOINTS] = "user", [OPT_PASSWORD - OPT_ENDPOINTS] = "password",
        [OPT_PREFIX - OPT_ENDPOINTS] = "prefix", [OPT_DIAL - OPT_ENDPOINTS] = "dial-timeout",
        [OPT_COMMAND - OPT_ENDPOINTS] = "command-timeout",
    };
    bool handled;
    int r;
    switch (c) {
    case 'o': return parse_mount_opts(o, arg, err, errlen);
    case 'f': o->foreground = true; return 0;
    case 'd': o->debug = true; o->foreground = true; return 0;
    case 'h': o->help = true; return 0;
    case 'V': o->version = true; return 0;
    case OPT_INSECURE: o->insecure_skip_verify = true; return 0;
    default:
        if (c < OPT_ENDPOINTS || c > OPT_COMMAND || !names[c - OPT_ENDPOINTS])
            return -EINVAL;
        r = set_conn_opt(o, names[c - OPT_ENDPOINTS], arg, err, errlen, &handled);
        if (c == OPT_PASSWORD)
            scrub(arg);
        if (c == OPT_USER && strchr(arg, ':'))
            scrub(strchr(arg, ':') + 1);
        return r;
    }
}

int options_parse(int argc, char **argv, etcdfs_opts *o, char *err, size_t errlen)
{
    set_defaults(o);
    if (err && errlen)
        err[0] = '\0';
    apply_env(o, err, errlen);

    int c, r = 0;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:fdhV", long_opts, NULL)) != -1) {
        if (c == '?' || c == ':') {
            o->usage_error = true;
            const char *bad = argv[optind - 1];
            if (optopt && c == '?' && bad[0] == '-' && bad[1] != '-')
                return set_err(err, errlen, "unknown option '-%c'", optopt);
            if (c == ':' || (optopt && strchr("o", optopt)))
                return set_err(err, errlen, "option '%s' needs a value", bad);
            return set_err(err, errlen, "unknown option '%s'", bad);
        }
        /* Keep parsing to scrub every password even after an error. */
        int e = apply_flag(o, c, optarg, r ? NULL : err, errlen);
        if (e < 0 && r == 0)
            r = e;
    }
    if (r < 0)
        return r;
    if (o->help || o->version)
        return 0;

    int npos = argc - optind;
    if (npos == 2) {
        /* mount.fuse3 form: SOURCE MOUNTPOINT; a source other than a placeholder names the
         * endpoints. */
        const char *src = argv[optind];
        if (strcmp(src, "etcdfs") != 0 && strcmp(src, "none") != 0 &&
            (r = set_endpoints(o, src, err, errlen)) < 0)
            return r;
        optind++;
        npos = 1;
    }
    if (npos == 0) {
        o->usage_error = true;
        return set_err(err, errlen, "missing mount point");
    }
    if (npos > 1) {
        o->usage_error = true;
        return set_err(err, errlen, "too many arguments ('%s')", argv[optind + 1]);
    }
    o->mountpoint = strdup(argv[optind]);
    if (o->n_endpoints == 0 &&
        set_endpoints(o, OPTIONS_DEFAULT_ENDPOINT, err, errlen) < 0)
        return -EINVAL;
    if (o->debug)
        o->foreground = true;
    if ((o->cert && !o->key) || (!o->cert && o->key))
        return set_err(err, errlen, "--cert and --key go together");
    if (!o->fuse_opts)
        o->fuse_opts = strdup("");
    return 0;
}

void options_free(etcdfs_opts *o)
{
    free_endpoints(o);
    free(o->cacert);
    free(o->cert);
    free(o->key);
    free(o->user);
    if (o->password) {
        /* Do not leave the secret in freed heap memory. */
        memset(o->password, 0, strlen(o->password));
        free(o->password);
    }
    free(o->prefix);
    free(o->mountpoint);
    free(o->fuse_opts);
    free(o->scratch);
    free(o->scratch_excl);
    memset(o, 0, sizeof(*o));
}

void options_usage(FILE *f)
{
    fputs(
"Usage: etcdfs [options] MOUNTPOINT\n"
"       etcdfs ENDPOINTS MOUNTPOINT [-o OPT,...]      (the form mount.fuse3 and fstab use:\n"
"                                                    mount -t fuse.etcdfs ENDPOINTS MOUNTPOINT)\n"
"\n"
"Mounts an etcd v3 keyspace as a filesystem: keys are files, '/' separates directories.\n"
"Returns once the mount is ready; unmount with 'fusermount3 -u MOUNTPOINT'.\n"
"\n"
"Connection options (as etcdctl names them):\n"
"      --endpoints=a,b,c          gRPC endpoints (default " OPTIONS_DEFAULT_ENDPOINT ")\n"
"      --cacert=FILE              verify servers with this CA bundle (enables TLS)\n"
"      --cert=FILE                client certificate (enables TLS)\n"
"      --key=FILE                 client private key\n"
"      --insecure-skip-tls-verify accept any server certificate\n"
"      --user=NAME[:PASSWORD]     authenticate (prompts for the password on a terminal)\n"
"      --password=PASSWORD        password for --user (removed from the process arguments)\n"
"      --dial-timeout=DURATION    per-endpoint connect timeout (default 2s)\n"
"      --command-timeout=DURATION timeout of each etcd request (default 5s)\n"
"  Environment: ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY, ETCDCTL_USER,\n"
"  ETCDCTL_PASSWORD (flags win).\n"
"\n"
"Mount options:\n"
"      --prefix=P                 mount only the keys under P\n"
"  -o OPT[,OPT...]                mount options:\n"
"       ro                        read-only mount (writes fail with EROFS)\n"
"       allow_other               let other users in (implies default_permissions)\n"
"       uid=N, gid=N              owner of every file (default: the mounting user)\n"
"       umask=M                   octal (default 077: files 0600, dirs 0700)\n"
"       value_cache=SIZE          memory for values, K/M/G (default 512M)\n"
"       conflict=overwrite|fail   a save overwrites concurrent changes (default), or fails\n"
"                                 with EBUSY when the key changed since it was opened\n"
"       scratch=GLOB:GLOB[@prog/prog]   names of editors' scratch files, kept in memory only\n"
"                                 (see docs/EDITORS.md; \"scratch=\" turns it off)\n"
"       scratch_excl=GLOB:GLOB    names never treated as scratch\n"
"       quota=SIZE                backend quota shown by df (default 2G)\n"
"       noinotify                 remote changes raise no inotify events (default: they\n"
"                                 are replayed on the mount, see .cluster/events too)\n"
"       debug                     same as -d\n"
"       endpoints=, cacert=, cert=, key=, user=, password=, prefix=, dial_timeout=,\n"
"       command_timeout=, insecure_skip_tls_verify   as the flags above (for fstab;\n"
"                                 endpoints in -o are separated by '+' or ',')\n"
"       fsname=, subtype=, noatime, nosuid, nodev, noexec, auto_unmount, ...  for FUSE\n"
"       _netdev, nofail, auto, noauto, user, users, defaults, x-*   for mount(8), ignored\n"
"\n"
"General options:\n"
"  -f, --foreground               stay in the foreground\n"
"  -d, --debug                    log FUSE operations and keys (never values); implies -f\n"
"  -h, --help                     this text\n"
"  -V, --version                  versions of etcdfs and its libraries\n"
"\n"
"Logs go to stderr with -f, to syslog once in the background. See etcdfs(1).\n"
"Notes: chmod, chown and utimes are accepted but not stored. '.cluster' at the root is\n"
"reserved. Values larger than etcd's request limit (1.5 MiB by default) fail with EFBIG.\n",
        f);
}

/* options_test.c — fs/options.c without a mount: defaults, ETCDCTL_* environment vs flags,
 * -o keys (fstab form), argv password scrubbing, usage errors, sizes and durations. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../fs/options.h"
#include "../fixture/check.h"

#define ARGV(...) ((char *[]){ __VA_ARGS__, NULL })
#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

/* argv strings must be writable (scrubbing): copy the literals. */
static char **dup_argv(char **in, int *argc)
{
    int n = 0;
    while (in[n])
        n++;
    char **out = calloc((size_t)n + 1, sizeof(*out));
    for (int i = 0; i < n; i++)
        out[i] = strdup(in[i]);
    *argc = n;
    return out;
}

static void free_argv(char **v)
{
    for (int i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}

static int parse(char **lit, etcdfs_opts *o, char *err, char ***keep)
{
    int argc;
    char **argv = dup_argv(lit, &argc);
    int r = options_parse(argc, argv, o, err, 256);
    if (keep)
        *keep = argv;
    else
        free_argv(argv);
    return r;
}

static void test_defaults(void)
{
    etcdfs_opts o;
    char err[256];
    unsetenv("ETCDCTL_ENDPOINTS");
    int r = parse(ARGV("etcdfs", "/mnt"), &o, err, NULL);
    CHECK(r == 0, "plain mount point parses (%s)", err);
    CHECK(o.n_endpoints == 1 && strcmp(o.endpoints[0], "127.0.0.1:2379") == 0,
          "default endpoint 127.0.0.1:2379");
    CHECK(strcmp(o.mountpoint, "/mnt") == 0, "mount point kept");
    CHECK(o.umask == 077 && o.uid == getuid() && o.gid == getgid(), "private by default");
    CHECK(o.value_cache == 512ULL << 20, "value_cache defaults to 512M");
    CHECK(!o.conflict_fail && !o.read_only && !o.foreground, "overwrite, rw, daemon");
    options_free(&o);
}

static void test_env_and_flags(void)
{
    etcdfs_opts o;
    char err[256];
    setenv("ETCDCTL_ENDPOINTS", "10.0.0.1:1,10.0.0.2:2", 1);
    setenv("ETCDCTL_USER", "alice:envpw", 1);
    setenv("ETCDCTL_CACERT", "/env/ca.pem", 1);
    int r = parse(ARGV("etcdfs", "/mnt"), &o, err, NULL);
    CHECK(r == 0 && o.n_endpoints == 2 && strcmp(o.endpoints[1], "10.0.0.2:2") == 0,
          "ETCDCTL_ENDPOINTS is a comma list");
    CHECK(o.user && strcmp(o.user, "alice") == 0 && strcmp(o.password, "envpw") == 0,
          "ETCDCTL_USER name:password");
    options_free(&o);

    r = parse(ARGV("etcdfs", "--endpoints=127.0.0.1:3", "--cacert", "/flag/ca.pem",
                   "--user=bob", "/mnt"), &o, err, NULL);
    CHECK(r == 0 && o.n_endpoints == 1 && strcmp(o.endpoints[0], "127.0.0.1:3") == 0,
          "--endpoints wins over the environment");
    CHECK(strcmp(o.cacert, "/flag/ca.pem") == 0, "--cacert VALUE wins");
    CHECK(strcmp(o.user, "bob") == 0 && strcmp(o.password, "envpw") == 0,
          "--user without password keeps ETCDCTL_PASSWORD-style password from env");
    options_free(&o);
    unsetenv("ETCDCTL_ENDPOINTS");
    unsetenv("ETCDCTL_USER");
    unsetenv("ETCDCTL_CACERT");
}

static void test_scrub(void)
{
    etcdfs_opts o;
    char err[256];
    char **argv;
    int r = parse(ARGV("etcdfs", "--user=root:s3cret", "--password", "other1",
                       "-o", "ro,password=pw2,uid=5", "/mnt"), &o, err, &argv);
    CHECK(r == 0, "passwords parse (%s)", err);
    CHECK(strcmp(o.password, "pw2") == 0, "last password given wins");
    bool leaked = false;
    for (int i = 0; argv[i]; i++)
        if (strstr(argv[i], "s3cret") || strstr(argv[i], "other1") || strstr(argv[i], "pw2"))
            leaked = true;
    CHECK(!leaked, "no password left in argv");
    bool kept = false;
    for (int i = 0; argv[i]; i++)
        if (strstr(argv[i], "uid=5") && strstr(argv[i], "ro,"))
            kept = true;
    CHECK(kept, "other -o options untouched by scrubbing");
    CHECK(o.read_only && o.uid == 5, "-o ro,uid=5 applied");
    free_argv(argv);
    options_free(&o);
}

static void test_mount_opts(void)
{
    etcdfs_opts o;
    char err[256];
    int r = parse(ARGV("etcdfs", "-o",
                       "endpoints=127.0.0.1:1,127.0.0.1:2,allow_other,umask=022,"
                       "value_cache=64K,conflict=fail,quota=1G,noatime,fsname=x,debug",
                       "/mnt"), &o, err, NULL);
    CHECK(r == 0, "fstab-style -o parses (%s)", err);
    CHECK(o.n_endpoints == 2 && strcmp(o.endpoints[1], "127.0.0.1:2") == 0,
          "endpoints=a,b continues over host:port tokens");
    CHECK(o.allow_other && o.umask == 022 && o.value_cache == 65536 && o.conflict_fail &&
          o.quota == 1ULL << 30 && o.debug && o.foreground, "etcdfs -o keys applied");
    CHECK(o.fuse_opts && strstr(o.fuse_opts, "noatime") && strstr(o.fuse_opts, "fsname=x"),
          "FUSE options passed through (%s)", o.fuse_opts ? o.fuse_opts : "");
    options_free(&o);

    r = parse(ARGV("etcdfs", "127.0.0.1:7", "/mnt", "-o", "defaults,_netdev"), &o, err, NULL);
    CHECK(r == 0 && strcmp(o.endpoints[0], "127.0.0.1:7") == 0 &&
          strcmp(o.mountpoint, "/mnt") == 0, "mount.fuse3 form: SOURCE MOUNTPOINT");
    options_free(&o);
}

static void test_errors(void)
{
    etcdfs_opts o;
    char err[256];
    int r = parse(ARGV("etcdfs", "--bogus", "/mnt"), &o, err, NULL);
    CHECK(r == -EINVAL && o.usage_error && strstr(err, "--bogus"), "unknown flag: %s", err);
    options_free(&o);
    r = parse(ARGV("etcdfs", "-o", "frobnicate", "/mnt"), &o, err, NULL);
    CHECK(r == -EINVAL && o.usage_error && strstr(err, "frobnicate"), "unknown -o: %s", err);
    options_free(&o);
    r = parse(ARGV("etcdfs", "-o", "conflict=maybe", "/mnt"), &o, err, NULL);
    CHECK(r == -EINVAL, "bad conflict= value: %s", err);
    options_free(&o);
    r = parse(ARGV("etcdfs"), &o, err, NULL);
    CHECK(r == -EINVAL && o.usage_error && strstr(err, "mount point"), "missing mount point");
    options_free(&o);
    r = parse(ARGV("etcdfs", "--dial-timeout=soon", "/mnt"), &o, err, NULL);
    CHECK(r == -EINVAL, "bad duration: %s", err);
    options_free(&o);
    r = parse(ARGV("etcdfs", "--help"), &o, err, NULL);
    CHECK(r == 0 && o.help, "--help needs no mount point");
    options_free(&o);
    r = parse(ARGV("etcdfs", "-d", "/m"), &o, err, NULL);
    CHECK(r == 0 && o.debug && o.foreground, "-d implies -f");
    options_free(&o);
}

static void test_sizes(void)
{
    uint64_t v = 0;
    CHECK(options_parse_size("512M", &v) == 0 && v == 512ULL << 20, "512M");
    CHECK(options_parse_size("2G", &v) == 0 && v == 2ULL << 30, "2G");
    CHECK(options_parse_size("64k", &v) == 0 && v == 65536, "64k");
    CHECK(options_parse_size("4096", &v) == 0 && v == 4096, "4096");
    CHECK(options_parse_size("1MiB", &v) == 0 && v == 1 << 20, "1MiB");
    CHECK(options_parse_size("12Q", &v) < 0 && options_parse_size("", &v) < 0 &&
          options_parse_size("-1", &v) < 0, "garbage sizes refused");
    int ms = 0;
    CHECK(options_parse_duration("2s", &ms) == 0 && ms == 2000, "2s");
    CHECK(options_parse_duration("500ms", &ms) == 0 && ms == 500, "500ms");
    CHECK(options_parse_duration("1m30s", &ms) == 0 && ms == 90000, "1m30s");
    CHECK(options_parse_duration("3", &ms) == 0 && ms == 3000, "bare number is seconds");
    CHECK(options_parse_duration("1.5s", &ms) == 0 && ms == 1500, "1.5s");
    CHECK(options_parse_duration("x", &ms) < 0 && options_parse_duration("5d", &ms) < 0,
          "garbage durations refused");
}

int main(void)
{
    test_defaults();
    test_env_and_flags();
    test_scrub();
    test_mount_opts();
    test_errors();
    test_sizes();
    return check_done();
}

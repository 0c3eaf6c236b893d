/* ctl.c — etcdfs-ctl, a small debugging tool over the client library (client/etcd.h): get,
 * put, del, watch, members, status, snapshot and compact, printed like etcdctl's simple output.
 * It exercises the same code paths as the filesystem, so it doubles as a manual probe. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "etcd.h"

static void usage(void)
{
    fprintf(stderr,
        "usage: etcdfs-ctl [--endpoints=H:P,..] [--cacert=F --cert=F --key=F]\n"
        "                  [--insecure-skip-tls-verify] [--user=NAME[:PASSWORD]] COMMAND\n"
        "commands:\n"
        "  get KEY [--prefix] [--keys-only]   put KEY VALUE      del KEY [--prefix]\n"
        "  watch KEY [--prefix] [--rev=N]    members            status\n"
        "  snapshot FILE                     compact REV\n");
    exit(2);
}

static int fail(const char *what, int rc, const etcd_error *e)
{
    fprintf(stderr, "etcdfs-ctl: %s: %s%s%s\n", what, etcd_err_name(rc),
            e->msg[0] ? ": " : "", e->msg);
    return 1;
}

static void print_bytes(const uint8_t *p, size_t n)
{
    fwrite(p, 1, n, stdout);
    putchar('\n');
}

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], flag))
            return true;
    return false;
}

static int cmd_get(etcd_client *c, const char *key, bool prefix, bool keys_only)
{
    size_t end_len = 0;
    uint8_t *end = prefix ? etcd_prefix_end(key, strlen(key), &end_len) : NULL;
    etcd_range_req req = { .key = key, .key_len = strlen(key), .range_end = end,
                           .range_end_len = end_len, .keys_only = keys_only,
                           .sort_order = ETCD_SORT_ASCEND, .limit = 1000 };
    etcd_error e;
    int rc = 0;
    for (;;) {
        etcd_range_resp r;
        if ((rc = etcd_range(c, &req, &r, &e)))
            break;
        for (size_t i = 0; i < r.n_kvs; i++) {
            print_bytes(r.kvs[i].key, r.kvs[i].key_len);
            if (!keys_only)
                print_bytes(r.kvs[i].value, r.kvs[i].value_len);
        }
        bool more = r.more && r.n_kvs > 0 && prefix;
        if (more) {
            /* next page starts right after the last key: append a zero byte */
            etcd_kv *last = &r.kvs[r.n_kvs - 1];
            static uint8_t next[65536];
            if (last->key_len + 1 > sizeof(next)) {
                etcd_range_resp_free(&r);
                break;
            }
            memcpy(next, last->key, last->key_len);
            next[last->key_len] = 0;
            req.key = next;
            req.key_len = last->key_len + 1;
            req.revision = r.header.revision;   /* all pages at one revision */
        }
        etcd_range_resp_free(&r);
        if (!more)
            break;
    }
    free(end);
    return rc ? fail("get", rc, &e) : 0;
}

static int cmd_del(etcd_client *c, const char *key, bool prefix)
{
    size_t end_len = 0;
    uint8_t *end = prefix ? etcd_prefix_end(key, strlen(key), &end_len) : NULL;
    etcd_delete_resp r;
    etcd_error e;
    int rc = etcd_delete(c, key, strlen(key), end, end_len, false, &r, &e);
    free(end);
    if (rc)
        return fail("del", rc, &e);
    printf("%lld\n", (long long)r.deleted);
    etcd_delete_resp_free(&r);
    return 0;
}

static volatile sig_atomic_t stop_watch;
static void on_sig(int sig) { (void)sig; stop_watch = 1; }

static void on_events(void *arg, const etcd_header *h, const etcd_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        printf("%s\n", evs[i].type == ETCD_EVENT_PUT ? "PUT" : "DELETE");
        print_bytes(evs[i].kv.key, evs[i].kv.key_len);
        if (evs[i].type == ETCD_EVENT_PUT)
            print_bytes(evs[i].kv.value, evs[i].kv.value_len);
    }
    fflush(stdout);
}

static void on_cancel(void *arg, int64_t compact_rev, const etcd_error *err)
{
    fprintf(stderr, "etcdfs-ctl: watch cancelled: %s (compact revision %lld)\n",
            err ? err->msg : "", (long long)compact_rev);
    stop_watch = 1;
}

static int cmd_watch(etcd_client *c, const char *key, bool prefix, int64_t rev)
{
    size_t end_len = 0;
    uint8_t *end = prefix ? etcd_prefix_end(key, strlen(key), &end_len) : NULL;
    etcd_watch_req req = { .key = key, .key_len = strlen(key), .range_end = end,
                           .range_end_len = end_len, .start_revision = rev };
    etcd_watch_cbs cbs = { on_events, on_cancel };
    etcd_watch *w;
    etcd_error e;
    int rc = etcd_watch_start(c, &req, &cbs, NULL, &w, &e);
    free(end);
    if (rc)
        return fail("watch", rc, &e);
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    while (!stop_watch)
        usleep(100000);
    etcd_watch_stop(w);
    return 0;
}

static int cmd_members(etcd_client *c)
{
    struct etcd_member_list l;
    etcd_error e;
    int rc = etcd_member_list(c, &l, &e);
    if (rc)
        return fail("members", rc, &e);
    for (size_t i = 0; i < l.n_members; i++) {
        etcd_member *m = &l.members[i];
        printf("%llx, %s, %s, %s%s\n", (unsigned long long)m->id, m->name,
               m->n_peer_urls ? m->peer_urls[0] : "", m->n_client_urls ? m->client_urls[0] : "",
               m->is_learner ? ", learner" : "");
    }
    etcd_member_list_free(&l);
    return 0;
}

static int cmd_status(etcd_client *c)
{
    etcd_status_resp s;
    etcd_error e;
    int rc = etcd_status(c, NULL, &s, &e);
    if (rc)
        return fail("status", rc, &e);
    printf("endpoint: %s\nmember: %llx\nversion: %s\ndb size: %lld\ndb size in use: %lld\n"
           "leader: %llx\nraft term: %lld\nraft index: %lld\nrevision: %lld\n",
           etcd_client_endpoint(c), (unsigned long long)s.header.member_id, s.version,
           (long long)s.db_size, (long long)s.db_size_in_use, (unsigned long long)s.leader,
           (long long)s.raft_term, (long long)s.raft_index, (long long)s.header.revision);
    if (s.errors[0])
        printf("errors: %s\n", s.errors);
    return 0;
}

static int cmd_snapshot(etcd_client *c, const char *file)
{
    etcd_snapshot *s;
    etcd_error e;
    int rc = etcd_snapshot_open(c, &s, &e);
    if (rc)
        return fail("snapshot", rc, &e);
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(file);
        etcd_snapshot_close(s);
        return 1;
    }
    static char buf[1 << 16];
    long n;
    long long total = 0;
    while ((n = etcd_snapshot_read(s, buf, sizeof(buf), 0, &e)) > 0) {
        if (write(fd, buf, (size_t)n) != n) {
            perror(file);
            n = 0;
            rc = 1;
            break;
        }
        total += n;
    }
    etcd_snapshot_close(s);
    if (close(fd) != 0)
        rc = 1;
    if (n < 0) {
        unlink(file);
        return fail("snapshot", (int)n, &e);
    }
    if (!rc)
        printf("snapshot saved to %s (%lld bytes)\n", file, total);
    return rc;
}

int main(int argc, char **argv)
{
    const char *endpoints = "127.0.0.1:2379";
    etcd_config cfg = {0};
    char *user = NULL;
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *a = argv[i];
        if (!strncmp(a, "--endpoints=", 12))
            endpoints = a + 12;
        else if (!strncmp(a, "--cacert=", 9))
            cfg.cacert = a + 9;
        else if (!strncmp(a, "--cert=", 7))
            cfg.cert = a + 7;
        else if (!strncmp(a, "--key=", 6))
            cfg.key = a + 6;
        else if (!strcmp(a, "--insecure-skip-tls-verify"))
            cfg.insecure_skip_verify = true;
        else if (!strncmp(a, "--user=", 7))
            user = strdup(a + 7);
        else
            usage();
    }
    if (i >= argc)
        usage();
    const char *cmd = argv[i++];
    int nargs = argc - i;
    char **args = argv + i;

    char *eps = strdup(endpoints);
    const char *list[16];
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(eps, ",", &save); t && n < 16;
         t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    cfg.endpoints = list;
    cfg.n_endpoints = n;
    if (user) {
        char *colon = strchr(user, ':');
        if (colon) {
            *colon = 0;
            cfg.password = colon + 1;
        } else {
            cfg.password = getpass("Password: ");
        }
        cfg.user = user;
    }
    etcd_client *c;
    etcd_error e;
    int rc = etcd_client_new(&cfg, &c, &e);
    if (rc) {
        fail("connect", rc, &e);
        return 1;
    }
    int ret;
    if (!strcmp(cmd, "get") && nargs >= 1)
        ret = cmd_get(c, args[0], has_flag(nargs, args, "--prefix"),
                      has_flag(nargs, args, "--keys-only"));
    else if (!strcmp(cmd, "put") && nargs == 2) {
        ret = (rc = etcd_put(c, args[0], strlen(args[0]), args[1], strlen(args[1]), NULL, NULL,
                             &e)) ? fail("put", rc, &e) : (puts("OK"), 0);
    } else if (!strcmp(cmd, "del") && nargs >= 1)
        ret = cmd_del(c, args[0], has_flag(nargs, args, "--prefix"));
    else if (!strcmp(cmd, "watch") && nargs >= 1) {
        int64_t rev = 0;
        for (int k = 1; k < nargs; k++)
            if (!strncmp(args[k], "--rev=", 6))
                rev = strtoll(args[k] + 6, NULL, 10);
        ret = cmd_watch(c, args[0], has_flag(nargs, args, "--prefix"), rev);
    } else if (!strcmp(cmd, "members"))
        ret = cmd_members(c);
    else if (!strcmp(cmd, "status"))
        ret = cmd_status(c);
    else if (!strcmp(cmd, "snapshot") && nargs == 1)
        ret = cmd_snapshot(c, args[0]);
    else if (!strcmp(cmd, "compact") && nargs == 1) {
        ret = (rc = etcd_compact(c, strtoll(args[0], NULL, 10), true, &e))
                  ? fail("compact", rc, &e) : (puts("compacted"), 0);
    } else {
        etcd_client_free(c);
        usage();
        ret = 2;
    }
    etcd_client_free(c);
    free(eps);
    free(user);
    return ret;
}

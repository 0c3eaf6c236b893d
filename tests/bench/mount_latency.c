/* mount_latency.c — how long a remote change takes to show through the mount: Put a key through
 * etcd's HTTP/JSON gateway (no client library, so the ack time is exact), then read the file until
 * it holds the new value. Prints p50/p99/max of (visible - acked) in milliseconds.
 * Built by tests/bench/mount-bench.sh with plain cc; not part of the meson build. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void b64(const char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

/* One Put over a fresh connection ("Connection: close": the response ends at EOF). Returns 0
 * when etcd answered 200 with a header revision. */
static int http_put(const struct sockaddr_in *sa, const char *key, const char *val)
{
    char kb[1024], vb[1024], body[2300], req[2600], resp[4096];
    b64(key, strlen(key), kb);
    b64(val, strlen(val), vb);
    int bl = snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"%s\"}", kb, vb);
    int rl = snprintf(req, sizeof req, "POST /v3/kv/put HTTP/1.1\r\nHost: %s:%d\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n%s", inet_ntoa(sa->sin_addr),
                      ntohs(sa->sin_port), bl, body);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0 ||
        write(fd, req, (size_t)rl) != rl) {
        int e = errno;
        close(fd);
        return -e;
    }
    size_t got = 0;
    ssize_t n;
    while (got < sizeof resp - 1 && (n = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)n;
    close(fd);
    resp[got] = 0;
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0 || !strstr(resp, "\"revision\"")) {
        fprintf(stderr, "mount_latency: put failed: %.200s\n", resp);
        return -EIO;
    }
    return 0;
}

/* 1 when the file holds exactly want, 0 when not (yet), -errno when it cannot be read. */
static int file_is(const char *path, const char *want, size_t wl)
{
    char buf[1024];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0)
        return -errno;
    return (size_t)n == wl && memcmp(buf, want, wl) == 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Polls every 50 µs until the value shows or timeout_ms passes; returns the time it showed. */
static double wait_visible(const char *path, const char *val, double timeout_ms)
{
    double t0 = now_ms();
    struct timespec nap = { 0, 50000 };
    for (;;) {
        int r = file_is(path, val, strlen(val));
        double t = now_ms();
        if (r == 1)
            return t;
        if (r < 0 || t - t0 > timeout_ms)
            return -1;
        nanosleep(&nap, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: mount_latency HOST PORT KEY FILE COUNT\n"
                        "  e.g. mount_latency 127.0.0.1 2379 /registry/bench/lat "
                        "mnt/registry/bench/lat 200\n");
        return 2;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "mount_latency: bad address %s\n", argv[1]);
        return 2;
    }
    const char *key = argv[3], *path = argv[4];
    int count = atoi(argv[5]), timeouts = 0, n = 0;
    double *lat = calloc((size_t)count + 1, sizeof *lat), put_sum = 0;
    char val[64];
    snprintf(val, sizeof val, "warmup-%d\n", (int)getpid());
    if (http_put(&sa, key, val) < 0 || wait_visible(path, val, 10000) < 0) {
        fprintf(stderr, "mount_latency: %s never showed the first value\n", path);
        return 1;
    }
    for (int i = 0; i < count && timeouts < 3; i++) {
        snprintf(val, sizeof val, "sample-%d-%d\n", i, (int)getpid());
        double t0 = now_ms();
        if (http_put(&sa, key, val) < 0)
            return 1;
        double acked = now_ms();
        put_sum += acked - t0;
        double seen = wait_visible(path, val, 5000);
        if (seen < 0) {
            char buf[128] = "";
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            ssize_t r = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
            if (fd >= 0)
                close(fd);
            buf[r > 0 ? r : 0] = 0;
            fprintf(stderr, "mount_latency: change %d not visible after 5 s: file holds '%.*s',"
                    " expected '%.*s'\n", i, (int)strcspn(buf, "\n"), buf,
                    (int)strcspn(val, "\n"), val);
            timeouts++;
            continue;
        }
        lat[n++] = seen - acked;
    }
    if (n == 0) {
        fprintf(stderr, "mount_latency: no change became visible within 5 s\n");
        return 1;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    printf("n=%d timeouts=%d put_ms=%.3f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", n, timeouts,
           put_sum / (n + timeouts), lat[n / 2], lat[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1],
           lat[n - 1]);
    free(lat);
    return timeouts ? 1 : 0;
}

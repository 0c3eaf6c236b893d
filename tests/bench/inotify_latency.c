/* inotify_latency.c — remote put → inotify event latency on an etcdfs mount. Puts a key N times
 * through etcd's HTTP/JSON gateway (another client, not the mount) and times, for each put, the
 * moment inotify reports IN_MODIFY on the file in the mount. Prints the distribution (ms).
 *   inotify_latency HOST PORT KEY WATCH_DIR FILE_NAME COUNT
 * Built by tests/bench/inotify-bench.sh with cc; no dependencies. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void b64(const char *in, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

static int connect_to(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, host, &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Reads one HTTP response (headers + Content-Length body) once the socket is readable. */
static int read_response(int fd, char *buf, size_t cap, size_t *have)
{
    ssize_t n = read(fd, buf + *have, cap - 1 - *have);
    if (n <= 0)
        return -1;
    *have += (size_t)n;
    buf[*have] = 0;
    char *body = strstr(buf, "\r\n\r\n");
    char *cl = strcasestr(buf, "Content-Length:");
    if (!body || !cl)
        return 0;
    size_t len = strtoul(cl + 15, NULL, 10);
    if (*have < (size_t)(body + 4 - buf) + len)
        return 0;
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "put failed: %s\n", buf);
        exit(1);
    }
    return 1;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT KEY WATCH_DIR FILE_NAME COUNT\n", argv[0]);
        return 2;
    }
    int count = atoi(argv[6]);
    const char *name = argv[5];
    int in = inotify_init1(IN_NONBLOCK);
    if (in < 0 || inotify_add_watch(in, argv[4], IN_MODIFY) < 0) {
        perror("inotify");
        return 1;
    }
    int s = connect_to(argv[1], atoi(argv[2]));
    double *lat = calloc((size_t)count, sizeof(double));
    char key64[1024], val[64], val64[128], req[2048], buf[65536];
    b64(argv[3], key64);
    for (int i = 0; i < count; i++) {
        snprintf(val, sizeof(val), "value %d", i);
        b64(val, val64);
        char body[1400];
        int bl = snprintf(body, sizeof(body), "{\"key\":\"%s\",\"value\":\"%s\"}", key64, val64);
        int rl = snprintf(req, sizeof(req), "POST /v3/kv/put HTTP/1.1\r\nHost: %s\r\n"
                          "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                          argv[1], bl, body);
        double t0 = now_ms(), t_ev = -1;
        if (write(s, req, (size_t)rl) != rl) {
            perror("write");
            return 1;
        }
        size_t have = 0;
        int got_resp = 0;
        while (t_ev < 0 || !got_resp) {
            struct pollfd p[2] = { { in, POLLIN, 0 }, { s, POLLIN, 0 } };
            if (poll(p, 2, 5000) <= 0) {
                fprintf(stderr, "put %d: no inotify event within 5 s\n", i);
                return 1;
            }
            if (p[0].revents & POLLIN) {
                char eb[4096] __attribute__((aligned(8)));
                ssize_t n = read(in, eb, sizeof(eb));
                for (char *e = eb; n > 0 && e < eb + n;) {
                    struct inotify_event *ie = (struct inotify_event *)e;
                    if (t_ev < 0 && ie->len && strcmp(ie->name, name) == 0)
                        t_ev = now_ms();
                    e += sizeof(*ie) + ie->len;
                }
            }
            if ((p[1].revents & (POLLIN | POLLHUP)) && !got_resp) {
                int r = read_response(s, buf, sizeof(buf), &have);
                if (r < 0) {
                    fprintf(stderr, "connection closed\n");
                    return 1;
                }
                got_resp = r;
            }
        }
        lat[i] = t_ev - t0;
        /* let the echo's own close settle so the next put is timed alone */
        struct timespec d = { 0, 5 * 1000000L };
        nanosleep(&d, NULL);
        char eb[4096];
        while (read(in, eb, sizeof(eb)) > 0)
            ;
    }
    qsort(lat, (size_t)count, sizeof(double), cmp);
    double sum = 0;
    for (int i = 0; i < count; i++)
        sum += lat[i];
    printf("remote put -> IN_MODIFY latency over %d puts (ms): min %.2f  p50 %.2f  p90 %.2f  "
           "p99 %.2f  max %.2f  mean %.2f\n", count, lat[0], lat[count / 2],
           lat[count * 9 / 10], lat[count * 99 / 100], lat[count - 1], sum / count);
    int fail = lat[count / 2] > 10.0 || lat[count * 99 / 100] > 100.0;
    printf("target p50 <= 10 ms, p99 <= 100 ms: %s\n", fail ? "MISSED" : "met");
    free(lat);
    return fail ? 3 : 0;
}

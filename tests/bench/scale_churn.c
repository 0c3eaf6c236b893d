/* scale_churn.c — the churn half of scale.sh: sustained remote Puts at a fixed rate through the
 * project's client (lease renewals and events of a big cluster), a probe measuring put-ack →
 * visible-in-the-mount latency, and verifiers reading churned files through the mount that
 * check each value's self-checksum (a torn or mixed value fails it). Compiled by scale.sh.
 * usage: scale_churn ENDPOINT MNT RATE SECONDS NODES   (MNT "-": puts only, no mount checks)
 * prints one line: key=value pairs (n_puts, rate, lat p50/p99/max, reads, torn, errors). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "etcd.h"

#define PUT_THREADS 8
#define N_EVENTS 2000           /* event keys cycled (created once, then updated) */
#define MAX_LAT 100000

static const char *mnt;
static etcd_client *cli;
static double rate, seconds, t_start;
static size_t nodes;
static atomic_int stop;
static atomic_ullong n_puts, put_errs, reads, torn, read_errs;
static double lat[MAX_LAT];
static size_t n_lat, lat_timeouts;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
    double d = t - now();
    if (d <= 0)
        return;
    struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };
    nanosleep(&ts, NULL);
}

static uint32_t fnv32(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

/* {"seq":N,"len":L,"pad":"...."}#XXXXXXXX — the checksum covers everything before '#'. */
static size_t make_value(char *buf, size_t want, uint64_t seq)
{
    int n = snprintf(buf, 64, "{\"seq\":%llu,\"len\":%zu,\"pad\":\"", (unsigned long long)seq, want);
    size_t len = (size_t)n;
    for (; len < want - 12; len++)
        buf[len] = (char)('a' + (seq + len) % 26);
    len += (size_t)sprintf(buf + len, "\"}");
    uint32_t h = fnv32(buf, len);
    len += (size_t)sprintf(buf + len, "#%08x", h);
    return len;
}

/* 0 ok, 1 torn. A key not churned yet still holds gen-registry's JSON (no "#sum" tail); a
 * mix of it and a churn value would show part of either's marker. */
static int check_value(char *buf, size_t len)
{
    buf[len] = 0;
    if (strncmp(buf, "{\"seq\":", 7) != 0)
        return strstr(buf, "\"pad\":\"") || strstr(buf, "\"}#") || memchr(buf, 0, len);
    if (len < 10 || buf[len - 9] != '#')
        return 1;
    unsigned h;
    if (sscanf(buf + len - 8, "%8x", &h) != 1)
        return 1;
    return fnv32(buf, len - 9) != h;
}

static void key_for(char *k, size_t cap, uint64_t i)
{
    if (i % 10 < 7)         /* 70%: node lease renewals (existing keys) */
        snprintf(k, cap, "/registry/leases/kube-node-lease/k8s-worker-%03llu",
                 (unsigned long long)((i * 7919) % nodes));
    else                    /* 30%: events, a bounded set */
        snprintf(k, cap, "/registry/events/churn/ev-%04llu",
                 (unsigned long long)((i * 104729) % N_EVENTS));
}

static size_t size_for(uint64_t i)
{
    /* mostly lease-sized, some spanning several pages so a torn read would show */
    switch (i % 16) {
    case 0: return 12000;
    case 1: case 2: return 5000;
    default: return 500 + (size_t)(i % 700);
    }
}

static void *putter(void *arg)
{
    long id = (long)arg;
    char key[128], *val = malloc(16384);
    double per = PUT_THREADS / rate;
    for (uint64_t k = 0;; k++) {
        double due = t_start + (double)k * per + (double)id * (1.0 / rate);
        if (due > t_start + seconds || atomic_load(&stop))
            break;
        sleep_until(due);
        uint64_t i = k * PUT_THREADS + (uint64_t)id;
        key_for(key, sizeof key, i);
        size_t len = make_value(val, size_for(i), i);
        etcd_error err = {0};
        if (etcd_put(cli, key, strlen(key), val, len, NULL, NULL, &err) < 0)
            atomic_fetch_add(&put_errs, 1);
        else
            atomic_fetch_add(&n_puts, 1);
    }
    free(val);
    return NULL;
}

static ssize_t read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t off = 0;
    for (;;) {
        ssize_t r = read(fd, buf + off, cap - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            close(fd);
            return r < 0 ? -1 : (ssize_t)off;
        }
        off += (size_t)r;
        if (off == cap) {
            close(fd);
            return (ssize_t)off;
        }
    }
}

static void *verifier(void *arg)
{
    uint64_t i = (uint64_t)(long)arg * 1000003;
    char key[128], path[512], *buf = malloc(65536);
    while (!atomic_load(&stop)) {
        key_for(key, sizeof key, i++);
        snprintf(path, sizeof path, "%s%s", mnt, key);
        ssize_t n = read_file(path, buf, 65535);
        if (n < 0) {
            if (errno != ENOENT)          /* an event key not created yet */
                atomic_fetch_add(&read_errs, 1);
            continue;
        }
        atomic_fetch_add(&reads, 1);
        if (check_value(buf, (size_t)n)) {
            if (atomic_fetch_add(&torn, 1) < 3) {
                /* a churn value names its own length: tells "new size, old bytes" apart */
                unsigned long long seq = 0;
                size_t claimed = 0;
                sscanf(buf, "{\"seq\":%llu,\"len\":%zu", &seq, &claimed);
                fprintf(stderr, "scale_churn: TORN value in %s: read %zd bytes, content says "
                        "seq %llu len %zu\n", path, n, seq, claimed);
            }
        }
    }
    free(buf);
    return NULL;
}

/* Every 100 ms: put the probe key, then poll the file until it shows the new value. */
static void *prober(void *arg)
{
    (void)arg;
    const char *key = "/registry/bench/probe";
    char path[512], want[64], got[64];
    snprintf(path, sizeof path, "%s%s", mnt, key);
    for (uint64_t s = 1; now() < t_start + seconds && n_lat < MAX_LAT; s++) {
        sleep_until(t_start + (double)s * 0.1);
        int wl = snprintf(want, sizeof want, "probe %llu", (unsigned long long)s);
        etcd_error err = {0};
        if (etcd_put(cli, key, strlen(key), want, (size_t)wl, NULL, NULL, &err) < 0)
            continue;
        double t0 = now(), t1;
        for (;;) {
            ssize_t n = read_file(path, got, sizeof got);
            t1 = now();
            if (n == wl && memcmp(got, want, (size_t)wl) == 0)
                break;
            if (t1 - t0 > 5) {
                lat_timeouts++;
                break;
            }
            struct timespec ts = { 0, 500000 };
            nanosleep(&ts, NULL);
        }
        lat[n_lat++] = (t1 - t0) * 1000;
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: scale_churn ENDPOINT MNT RATE SECONDS NODES\n");
        return 2;
    }
    const char *ep[1] = { argv[1] };
    mnt = argv[2];
    rate = atof(argv[3]);
    seconds = atof(argv[4]);
    nodes = strtoul(argv[5], NULL, 10);
    if (rate <= 0 || seconds <= 0 || nodes == 0)
        return 2;
    etcd_config cfg = { .endpoints = ep, .n_endpoints = 1 };
    etcd_error err = {0};
    if (etcd_client_new(&cfg, &cli, &err) < 0) {
        fprintf(stderr, "scale_churn: connect %s: %s\n", argv[1], err.msg);
        return 1;
    }
    etcd_put(cli, "/registry/bench/probe", 21, "probe 0", 7, NULL, NULL, &err);
    pthread_t pt[PUT_THREADS], vt[2], pr;
    t_start = now() + 0.05;
    for (long i = 0; i < PUT_THREADS; i++)
        pthread_create(&pt[i], NULL, putter, (void *)i);
    bool checks = strcmp(mnt, "-") != 0;
    for (long i = 0; checks && i < 2; i++)
        pthread_create(&vt[i], NULL, verifier, (void *)i);
    if (checks)
        pthread_create(&pr, NULL, prober, NULL);
    for (int i = 0; i < PUT_THREADS; i++)
        pthread_join(pt[i], NULL);
    double elapsed = now() - t_start;
    if (checks)
        pthread_join(pr, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; checks && i < 2; i++)
        pthread_join(vt[i], NULL);
    qsort(lat, n_lat, sizeof *lat, cmp_d);
    double p50 = n_lat ? lat[n_lat / 2] : -1, p99 = n_lat ? lat[(n_lat * 99) / 100] : -1;
    double mx = n_lat ? lat[n_lat - 1] : -1;
    printf("puts=%llu put_errors=%llu rate=%.0f probes=%zu lat_p50_ms=%.2f lat_p99_ms=%.2f "
           "lat_max_ms=%.2f lat_timeouts=%zu reads=%llu torn=%llu read_errors=%llu\n",
           (unsigned long long)n_puts, (unsigned long long)put_errs, (double)n_puts / elapsed, n_lat,
           p50, p99, mx, lat_timeouts, (unsigned long long)reads, (unsigned long long)torn,
           (unsigned long long)read_errs);
    etcd_client_free(cli);
    return torn ? 3 : 0;
}

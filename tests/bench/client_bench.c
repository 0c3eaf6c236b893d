/* client_bench.c — latency and throughput of the client library's Range and Put (1 KiB
 * values) with C calls in flight (C threads, each issuing synchronous calls back to back).
 * Prints one line: "mode inflight ops seconds p50_us p99_us ops_per_s". Driven by
 * client-bench.sh, which sets up etcd and prints the comparison table. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etcd.h"

typedef struct worker {
    etcd_client *c;
    int put, id, ops;
    double *lat_us;
    int errors;
} worker;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    worker *w = arg;
    static const char val[1024] = { 'v' };
    char key[64];
    etcd_error e;
    for (int i = 0; i < w->ops; i++) {
        snprintf(key, sizeof(key), "/bench/%d/%d", w->id, i % 100);
        double t0 = now_s();
        int rc;
        if (w->put) {
            rc = etcd_put(w->c, key, strlen(key), val, sizeof(val), NULL, NULL, &e);
        } else {
            etcd_range_req q = { .key = key, .key_len = strlen(key) };
            etcd_range_resp r;
            rc = etcd_range(w->c, &q, &r, &e);
            if (!rc)
                etcd_range_resp_free(&r);
        }
        w->lat_us[i] = (now_s() - t0) * 1e6;
        if (rc)
            w->errors++;
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
    if (argc != 5) {
        fprintf(stderr, "usage: client_bench ENDPOINT range|put INFLIGHT OPS\n");
        return 2;
    }
    const char *ep = argv[1];
    int put = !strcmp(argv[2], "put");
    int conc = atoi(argv[3]), total = atoi(argv[4]);
    if (conc < 1 || total < conc)
        return 2;
    etcd_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    etcd_client *c;
    etcd_error e;
    if (etcd_client_new(&cfg, &c, &e)) {
        fprintf(stderr, "connect: %s\n", e.msg);
        return 1;
    }
    /* keys exist for the range run */
    static const char val[1024] = { 'v' };
    for (int t = 0; t < conc && !put; t++)
        for (int i = 0; i < 100 && i < total / conc; i++) {
            char key[64];
            snprintf(key, sizeof(key), "/bench/%d/%d", t, i);
            etcd_put(c, key, strlen(key), val, sizeof(val), NULL, NULL, &e);
        }
    int per = total / conc;
    double *lat = calloc((size_t)per * conc, sizeof(*lat));
    worker *ws = calloc(conc, sizeof(*ws));
    pthread_t *th = calloc(conc, sizeof(*th));
    double t0 = now_s();
    for (int t = 0; t < conc; t++) {
        ws[t] = (worker){ .c = c, .put = put, .id = t, .ops = per, .lat_us = lat + (size_t)t * per };
        pthread_create(&th[t], NULL, run, &ws[t]);
    }
    int errors = 0;
    for (int t = 0; t < conc; t++) {
        pthread_join(th[t], NULL);
        errors += ws[t].errors;
    }
    double secs = now_s() - t0;
    size_t n = (size_t)per * conc;
    qsort(lat, n, sizeof(*lat), cmp_d);
    printf("%s %d %zu %.3f %.0f %.0f %.0f\n", put ? "put" : "range", conc, n, secs,
           lat[n / 2], lat[(size_t)(n * 0.99)], n / secs);
    if (errors)
        fprintf(stderr, "%d errors\n", errors);
    free(lat);
    free(ws);
    free(th);
    etcd_client_free(c);
    return errors ? 1 : 0;
}

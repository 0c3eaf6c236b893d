/* gen-registry.c — a deterministic generator of a Kubernetes-shaped /registry: the same seed
 * always gives the same keys and values. Writes them to etcd through client/etcd.h with many Puts
 * in flight, and optionally as plain files (--out) for tmpfs comparisons in the benchmarks. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "../client/etcd.h"

#define GEN_MAX_KEYS (1u << 23)     /* pod/replicaset suffixes are bijections on 2^23 values */
#define GEN_MAX_JOBS 64

/* ---- deterministic randomness ---------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    /* splitmix64 finalizer: a bijection on 64 bits, so distinct inputs give distinct outputs */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

typedef struct rng { uint64_t s; } rng;

static uint64_t rng_next(rng *r) { r->s += 0x9e3779b97f4a7c15ULL; return mix64(r->s); }
static uint32_t rng_below(rng *r, uint32_t n) { return n ? (uint32_t)(rng_next(r) % n) : 0; }
static double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) / (double)(1ULL << 53); }

/* A bijection on [0, 2^bits): xorshift and odd multiplication are both invertible mod 2^bits,
 * so suffixes derived from distinct counters never collide. */
static uint64_t perm_bits(uint64_t x, unsigned bits, uint64_t seed)
{
    uint64_t mask = bits >= 64 ? ~0ULL : (1ULL << bits) - 1;
    x = (x ^ seed) & mask;
    for (int i = 0; i < 3; i++) {
        x = (x * 0x9e3779b97f4a7c15ULL) & mask;
        x ^= x >> (bits / 2 + 1);
        x = (x + (seed >> (8 * i))) & mask;
    }
    return x;
}

/* ---- string builder ---------------------------------------------------------------------- */

typedef struct sb { char *p; size_t len, cap; } sb;

static void sb_reserve(sb *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        fprintf(stderr, "gen-registry: out of memory\n");
        exit(1);
    }
    b->p = p;
    b->cap = cap;
}

__attribute__((format(printf, 2, 3)))
static void sb_printf(sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sb_puts(sb *b, const char *s)
{
    size_t n = strlen(s);
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

/* ---- vocabulary -------------------------------------------------------------------------- */

static const char *const words[] = {
    "nginx", "redis", "postgres", "api", "web", "frontend", "backend", "auth", "payments",
    "search", "orders", "catalog", "cart", "checkout", "billing", "metrics", "logging",
    "grafana", "prometheus", "kafka", "zookeeper", "mongo", "mysql", "rabbitmq", "elastic",
    "kibana", "ingress", "gateway", "worker", "scheduler", "notifier", "mailer", "cache",
    "uploader", "thumbnailer", "reports", "analytics", "inventory", "shipping", "users",
    "profile", "session", "recommend", "ads", "feed", "chat", "video", "audio", "storage",
    "backup", "cron", "batch", "etl", "trainer", "serving", "vault", "consul", "coredns",
    "cert-manager", "external-dns", "istio", "loki", "tempo", "jaeger",
};
#define N_WORDS (sizeof words / sizeof words[0])
static const char *const envs[] = { "prod", "staging", "dev", "qa", "canary" };
#define N_ENVS (sizeof envs / sizeof envs[0])
static const char *const reasons[] = {
    "Scheduled", "Pulling", "Pulled", "Created", "Started", "Killing", "BackOff", "Unhealthy",
    "SuccessfulCreate", "ScalingReplicaSet", "FailedScheduling", "NodeReady", "RegisteredNode",
};
#define N_REASONS (sizeof reasons / sizeof reasons[0])
static const char *const apiservices[] = {
    "v1.", "v1.apps", "v1.batch", "v1.authentication.k8s.io", "v1.authorization.k8s.io",
    "v1.autoscaling", "v2.autoscaling", "v1.certificates.k8s.io", "v1.coordination.k8s.io",
    "v1.discovery.k8s.io", "v1.events.k8s.io", "v1.networking.k8s.io", "v1.node.k8s.io",
    "v1.policy", "v1.rbac.authorization.k8s.io", "v1.scheduling.k8s.io", "v1.storage.k8s.io",
    "v1.admissionregistration.k8s.io", "v1.apiextensions.k8s.io", "v1beta3.flowcontrol.apiserver.k8s.io",
};
#define N_APISERVICES (sizeof apiservices / sizeof apiservices[0])

/* ---- the key list ------------------------------------------------------------------------ */

enum kind {
    K_APISERVICE, K_RANGE, K_NAMESPACE, K_MINION, K_LEASE, K_DEPLOYMENT, K_REPLICASET, K_POD,
    K_SERVICE, K_ENDPOINTS, K_CONFIGMAP, K_SECRET, K_SERVICEACCOUNT, K_EVENT, K_BIG, K__COUNT
};

typedef struct item {
    char *key;
    const char *name;     /* last component, points into key */
    int32_t ns;           /* namespace index, -1 for cluster-scoped */
    int32_t ref;          /* related item (owner, node, involved object), -1 when none */
    uint32_t size;        /* target value size */
    uint8_t kind;
    uint8_t app;          /* index in words[]: the "app" label, shared along owner chains */
} item;

typedef struct registry {
    item *items;
    size_t n, cap;        /* cap is the requested total: adding stops there */
    char **ns_names;
    size_t n_ns;
    size_t first_node;    /* index of the first K_MINION item */
    size_t n_nodes;
    size_t want_nodes;    /* --nodes: 0 = 1 per 100 keys, at most 500 */
    uint64_t seed;
    const char *prefix;
} registry;

static bool reg_full(const registry *g) { return g->n >= g->cap; }

/* Adds one key; returns its index or -1 when the requested count is reached. */
__attribute__((format(printf, 5, 6)))
static int32_t reg_add(registry *g, int kind, int32_t ns, int32_t ref, const char *fmt, ...)
{
    if (reg_full(g))
        return -1;
    sb b = {0};
    sb_puts(&b, g->prefix);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    sb_reserve(&b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b.p + b.len, b.cap - b.len, fmt, ap);
    va_end(ap);
    b.len += (size_t)n;
    item *it = &g->items[g->n];
    it->key = b.p;
    it->name = strrchr(b.p, '/') + 1;
    it->kind = (uint8_t)kind;
    it->ns = ns;
    it->ref = ref;
    return (int32_t)g->n++;
}

/* Namespaces are skewed like real clusters: a few big ones, a long tail of small ones. */
static int32_t pick_ns(registry *g, rng *r)
{
    double u = rng_unit(r);
    return (int32_t)((double)g->n_ns * u * u);
}

static const char *ns_name(const registry *g, int32_t ns) { return g->ns_names[ns]; }

static void gen_namespaces(registry *g, size_t want)
{
    static const char *const builtin[] = { "default", "kube-system", "kube-public",
                                           "kube-node-lease" };
    g->ns_names = calloc(want, sizeof *g->ns_names);
    for (size_t i = 0; i < want; i++) {
        char buf[96];
        if (i < 4) {
            snprintf(buf, sizeof buf, "%s", builtin[i]);
        } else {
            size_t j = i - 4;
            if (j < N_WORDS * N_ENVS)
                snprintf(buf, sizeof buf, "%s-%s", words[j % N_WORDS], envs[j / N_WORDS]);
            else
                snprintf(buf, sizeof buf, "%s-%zu", words[j % N_WORDS], j);
        }
        g->ns_names[i] = strdup(buf);
        g->n_ns = i + 1;
        reg_add(g, K_NAMESPACE, -1, -1, "/namespaces/%s", buf);
    }
}

static void gen_cluster_scoped(registry *g, size_t n_nodes)
{
    for (size_t i = 0; i < N_APISERVICES; i++)
        reg_add(g, K_APISERVICE, -1, -1, "/apiregistration.k8s.io/apiservices/%s",
                apiservices[i]);
    reg_add(g, K_RANGE, -1, -1, "/ranges/serviceips");
    reg_add(g, K_RANGE, -1, -1, "/ranges/servicenodeports");
    g->first_node = g->n;
    for (size_t i = 0; i < n_nodes && !reg_full(g); i++) {
        reg_add(g, K_MINION, -1, -1, "/minions/k8s-worker-%03zu", i);
        g->n_nodes++;
    }
    for (size_t i = 0; i < g->n_nodes; i++)
        reg_add(g, K_LEASE, g->n_ns > 3 ? 3 : -1, (int32_t)(g->first_node + i),
                "/leases/kube-node-lease/k8s-worker-%03zu", i);
}

static void pod_suffix(char out[6], uint64_t j, uint64_t seed)
{
    static const char alnum[] = "bcdfghjklmnpqrstvwxz2456789";   /* Kubernetes' own alphabet */
    uint64_t v = perm_bits(j, 23, seed);
    for (int i = 0; i < 5; i++) {
        out[i] = alnum[v % 27];
        v /= 27;
    }
    out[5] = 0;
}

/* Per-kind counts of the namespaced objects, from fixed shares of what is left. */
typedef struct plan { size_t deploy, rs, pods, svc, cm, secrets, sa, events; } plan;

static plan make_plan(size_t rem)
{
    plan p;
    p.deploy = rem * 6 / 100;
    p.rs = rem * 10 / 100;
    p.svc = rem * 5 / 100;            /* and as many endpoints */
    p.cm = rem * 9 / 100;
    p.secrets = rem * 9 / 100;
    p.sa = rem * 6 / 100;
    p.events = rem * 20 / 100;
    size_t used = p.deploy + p.rs + 2 * p.svc + p.cm + p.secrets + p.sa + p.events;
    p.pods = rem - used;
    return p;
}

static void gen_workloads(registry *g, const plan *p, rng *r)
{
    size_t d0 = g->n;
    for (size_t i = 0; i < p->deploy; i++) {
        int32_t ns = pick_ns(g, r);
        uint32_t app = rng_below(r, N_WORDS);
        int32_t d = reg_add(g, K_DEPLOYMENT, ns, -1, "/deployments/%s/%s-%zu", ns_name(g, ns),
                            words[app], i);
        if (d >= 0)
            g->items[d].app = (uint8_t)app;
    }
    size_t nd = g->n - d0, r0 = g->n;
    for (size_t i = 0; i < p->rs; i++) {
        int32_t owner = nd ? (int32_t)(d0 + i % nd) : -1;
        int32_t ns = owner >= 0 ? g->items[owner].ns : pick_ns(g, r);
        const char *base = owner >= 0 ? g->items[owner].name : words[i % N_WORDS];
        int32_t x = reg_add(g, K_REPLICASET, ns, owner, "/replicasets/%s/%s-%010" PRIx64,
                            ns_name(g, ns), base, perm_bits(i, 40, g->seed));
        if (x >= 0)
            g->items[x].app = owner >= 0 ? g->items[owner].app : (uint8_t)(i % N_WORDS);
    }
    size_t nrs = g->n - r0;
    for (size_t i = 0; i < p->pods; i++) {
        int32_t owner = nrs ? (int32_t)(r0 + i % nrs) : -1;
        int32_t ns = owner >= 0 ? g->items[owner].ns : pick_ns(g, r);
        const char *base = owner >= 0 ? g->items[owner].name : words[i % N_WORDS];
        char suf[6];
        pod_suffix(suf, i, g->seed);
        int32_t node = g->n_nodes ? (int32_t)(g->first_node + rng_below(r, (uint32_t)g->n_nodes))
                                  : -1;
        int32_t x = reg_add(g, K_POD, ns, node, "/pods/%s/%s-%s", ns_name(g, ns), base, suf);
        if (x >= 0)
            g->items[x].app = owner >= 0 ? g->items[owner].app : (uint8_t)(i % N_WORDS);
    }
}

static void gen_services(registry *g, const plan *p, rng *r)
{
    size_t s0 = g->n;
    for (size_t i = 0; i < p->svc; i++) {
        int32_t ns = i == 0 ? 0 : pick_ns(g, r), x;
        uint32_t app = rng_below(r, N_WORDS);
        if (i == 0)
            x = reg_add(g, K_SERVICE, 0, -1, "/services/specs/default/kubernetes");
        else
            x = reg_add(g, K_SERVICE, ns, -1, "/services/specs/%s/%s-svc-%zu", ns_name(g, ns),
                        words[app], i);
        if (x >= 0)
            g->items[x].app = (uint8_t)app;
    }
    size_t ns_ = g->n - s0;
    for (size_t i = 0; i < ns_; i++) {
        const item *s = &g->items[s0 + i];
        int32_t x = reg_add(g, K_ENDPOINTS, s->ns, (int32_t)(s0 + i),
                            "/services/endpoints/%s/%s", ns_name(g, s->ns), s->name);
        if (x >= 0)
            g->items[x].app = g->items[s0 + i].app;
    }
}

/* The first object of each of these kinds in every namespace is the one Kubernetes itself
 * creates there (kube-root-ca.crt, the default service account and its token). */
static void gen_config(registry *g, const plan *p, rng *r)
{
    for (size_t i = 0; i < p->cm; i++) {
        int32_t ns = i < g->n_ns ? (int32_t)i : pick_ns(g, r);
        if (i < g->n_ns)
            reg_add(g, K_CONFIGMAP, ns, -1, "/configmaps/%s/kube-root-ca.crt", ns_name(g, ns));
        else
            reg_add(g, K_CONFIGMAP, ns, -1, "/configmaps/%s/%s-config-%zu", ns_name(g, ns),
                    words[rng_below(r, N_WORDS)], i);
    }
    for (size_t i = 0; i < p->sa; i++) {
        int32_t ns = i < g->n_ns ? (int32_t)i : pick_ns(g, r);
        if (i < g->n_ns)
            reg_add(g, K_SERVICEACCOUNT, ns, -1, "/serviceaccounts/%s/default", ns_name(g, ns));
        else
            reg_add(g, K_SERVICEACCOUNT, ns, -1, "/serviceaccounts/%s/%s-sa-%zu",
                    ns_name(g, ns), words[rng_below(r, N_WORDS)], i);
    }
    for (size_t i = 0; i < p->secrets; i++) {
        int32_t ns = i < g->n_ns ? (int32_t)i : pick_ns(g, r);
        char suf[6];
        pod_suffix(suf, i, g->seed ^ 0x5ec7e7);
        if (i < g->n_ns)
            reg_add(g, K_SECRET, ns, -1, "/secrets/%s/default-token-%s", ns_name(g, ns), suf);
        else
            reg_add(g, K_SECRET, ns, -1, "/secrets/%s/%s-%s-%zu", ns_name(g, ns),
                    words[rng_below(r, N_WORDS)], i % 3 ? "secret" : "tls", i);
    }
}

static void gen_events(registry *g, const plan *p, rng *r, size_t pods0, size_t npods)
{
    for (size_t i = 0; i < p->events; i++) {
        int32_t obj = npods ? (int32_t)(pods0 + rng_below(r, (uint32_t)npods)) : -1;
        int32_t ns = obj >= 0 ? g->items[obj].ns : pick_ns(g, r);
        const char *on = obj >= 0 ? g->items[obj].name : words[i % N_WORDS];
        reg_add(g, K_EVENT, ns, obj, "/events/%s/%s.%016" PRIx64, ns_name(g, ns), on,
                perm_bits(i, 64, g->seed));
    }
}

static size_t clamp(size_t v, size_t lo, size_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Target value size: 0.5-12 KiB, heavy towards small (mean ~3.5 KB), per-kind adjusted. */
static uint32_t value_size(int kind, rng *r)
{
    double u = rng_unit(r);
    switch (kind) {
    case K_LEASE: return 480 + rng_below(r, 200);
    case K_NAMESPACE: return 520 + rng_below(r, 600);
    case K_RANGE: case K_APISERVICE: return 600 + rng_below(r, 900);
    case K_MINION: return 6000 + rng_below(r, 6000);
    case K_EVENT: return 900 + rng_below(r, 900);
    case K_BIG: return 1000000 + rng_below(r, 40000);
    default: return 1024 + (uint32_t)(11264.0 * u * u * u);
    }
}

static int registry_build(registry *g, size_t n_keys, size_t n_big)
{
    g->cap = n_keys + n_big;
    g->items = calloc(g->cap ? g->cap : 1, sizeof *g->items);
    if (!g->items)
        return -ENOMEM;
    rng r = { g->seed };
    size_t n_ns = clamp(n_keys / 40, 4, 400), n_nodes = clamp(n_keys / 100, 1, 500);
    if (g->want_nodes)     /* a big cluster: one minion and one lease per node, in 2 wide dirs */
        n_nodes = g->want_nodes < n_keys / 2 ? g->want_nodes : n_keys / 2;
    size_t big_cap = g->cap;
    g->cap = n_keys;                      /* the big values come on top of --keys */
    gen_namespaces(g, n_ns < n_keys ? n_ns : n_keys);
    gen_cluster_scoped(g, n_nodes);
    size_t fixed = g->n;
    plan p = make_plan(n_keys > fixed ? n_keys - fixed : 0);
    gen_workloads(g, &p, &r);
    size_t pods0 = g->n - p.pods;
    gen_services(g, &p, &r);
    gen_config(g, &p, &r);
    gen_events(g, &p, &r, pods0, p.pods);
    g->cap = big_cap;
    for (size_t i = 0; i < n_big; i++) {
        int32_t ns = (int32_t)(i % g->n_ns);
        reg_add(g, K_BIG, ns, -1, "/configmaps/%s/big-bundle-%zu", ns_name(g, ns), i);
    }
    for (size_t i = 0; i < g->n; i++)
        g->items[i].size = value_size(g->items[i].kind, &r);
    return 0;
}

/* ---- values ------------------------------------------------------------------------------ */

static void put_uid(sb *b, rng *r)
{
    uint64_t a = rng_next(r), c = rng_next(r);
    sb_printf(b, "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
              a >> 32, (a >> 16) & 0xffff, a & 0xfff, (uint64_t)(0x8000 | (c >> 48 & 0x3fff)),
              (uint64_t)(c & 0xffffffffffffULL));
}

static void put_time(sb *b, rng *r)
{
    time_t t = 1704067200 + (time_t)rng_below(r, 3600u * 24 * 365);   /* during 2024 */
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[32];
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    sb_puts(b, s);
}

static const char *kind_name(int k)
{
    static const char *const n[K__COUNT] = {
        "APIService", "RangeAllocation", "Namespace", "Node", "Lease", "Deployment",
        "ReplicaSet", "Pod", "Service", "Endpoints", "ConfigMap", "Secret", "ServiceAccount",
        "Event", "ConfigMap" };
    return n[k];
}

static const char *api_version(int k)
{
    switch (k) {
    case K_APISERVICE: return "apiregistration.k8s.io/v1";
    case K_LEASE: return "coordination.k8s.io/v1";
    case K_DEPLOYMENT: case K_REPLICASET: return "apps/v1";
    default: return "v1";
    }
}

static void put_meta(sb *b, const registry *g, const item *it, size_t idx, rng *r,
                     const char *app)
{
    sb_printf(b, "{\"kind\":\"%s\",\"apiVersion\":\"%s\",\"metadata\":{\"name\":\"%s\",",
              kind_name(it->kind), api_version(it->kind), it->name);
    if (it->ns >= 0 && it->kind != K_NAMESPACE)
        sb_printf(b, "\"namespace\":\"%s\",", ns_name(g, it->ns));
    sb_puts(b, "\"uid\":\"");
    put_uid(b, r);
    sb_printf(b, "\",\"resourceVersion\":\"%zu\",\"creationTimestamp\":\"", 1000 + idx * 7);
    put_time(b, r);
    sb_printf(b, "\",\"labels\":{\"app\":\"%s\",\"tier\":\"%s\"}", app,
              rng_below(r, 2) ? "backend" : "frontend");
    if (it->ref >= 0 && (it->kind == K_REPLICASET || it->kind == K_POD)) {
        const item *o = &g->items[it->ref];
        if (it->kind == K_REPLICASET)
            sb_printf(b, ",\"ownerReferences\":[{\"apiVersion\":\"apps/v1\",\"kind\":"
                      "\"Deployment\",\"name\":\"%s\",\"controller\":true}]", o->name);
    }
}

/* The part of each object after metadata, with the filler slot inside (tail goes after it). */
static void put_body(sb *b, sb *tail, const registry *g, const item *it, rng *r,
                     const char *app, int *filler_style)
{
    const char *node = it->ref >= 0 && it->kind == K_POD ? g->items[it->ref].name : "";
    *filler_style = 0;                  /* annotations */
    switch (it->kind) {
    case K_CONFIGMAP: case K_BIG:
        sb_puts(b, "},\"data\":{");
        sb_puts(tail, "}}\n");
        *filler_style = 1;
        return;
    case K_SECRET:
        sb_puts(b, "},\"type\":\"Opaque\",\"data\":{");
        sb_puts(tail, "}}\n");
        *filler_style = 2;
        return;
    default:
        break;
    }
    sb_puts(b, ",\"annotations\":{");
    sb_puts(tail, "}},");
    switch (it->kind) {
    case K_POD:
        sb_printf(tail, "\"spec\":{\"nodeName\":\"%s\",\"containers\":[{\"name\":\"%s\","
                  "\"image\":\"registry.example.com/%s:v1.%u.%u\",\"ports\":[{\"containerPort\":"
                  "%u,\"protocol\":\"TCP\"}],\"resources\":{\"requests\":{\"cpu\":\"%um\","
                  "\"memory\":\"%uMi\"}}}],\"restartPolicy\":\"Always\"},\"status\":{\"phase\":"
                  "\"Running\",\"podIP\":\"10.244.%u.%u\"}}\n", node, app, app,
                  rng_below(r, 30), rng_below(r, 10), 8000 + rng_below(r, 1000),
                  100 * (1 + rng_below(r, 8)), 64 << rng_below(r, 5), rng_below(r, 256),
                  rng_below(r, 256));
        break;
    case K_EVENT:
        sb_printf(tail, "\"involvedObject\":{\"kind\":\"Pod\",\"name\":\"%s\"},\"reason\":"
                  "\"%s\",\"message\":\"%s %s\",\"source\":{\"component\":\"kubelet\"},"
                  "\"count\":%u,\"type\":\"Normal\"}\n",
                  it->ref >= 0 ? g->items[it->ref].name : it->name,
                  reasons[rng_below(r, N_REASONS)], "container", app, 1 + rng_below(r, 20));
        break;
    case K_LEASE:
        sb_printf(tail, "\"spec\":{\"holderIdentity\":\"%s\",\"leaseDurationSeconds\":40,"
                  "\"renewTime\":\"2024-06-01T12:00:%02u.000000Z\"}}\n", it->name,
                  rng_below(r, 60));
        break;
    case K_MINION:
        sb_printf(tail, "\"spec\":{\"podCIDR\":\"10.244.%u.0/24\"},\"status\":{\"capacity\":"
                  "{\"cpu\":\"%u\",\"memory\":\"%uGi\",\"pods\":\"110\"},\"addresses\":[{\"type\":"
                  "\"InternalIP\",\"address\":\"10.0.%u.%u\"},{\"type\":\"Hostname\",\"address\":"
                  "\"%s\"}],\"nodeInfo\":{\"kubeletVersion\":\"v1.29.%u\",\"osImage\":"
                  "\"Debian GNU/Linux 12 (bookworm)\"}}}\n", rng_below(r, 256),
                  4 << rng_below(r, 4), 16 << rng_below(r, 4), rng_below(r, 256),
                  rng_below(r, 256), it->name, rng_below(r, 10));
        break;
    case K_SERVICE:
        sb_printf(tail, "\"spec\":{\"clusterIP\":\"10.96.%u.%u\",\"ports\":[{\"port\":%u,"
                  "\"targetPort\":%u,\"protocol\":\"TCP\"}],\"selector\":{\"app\":\"%s\"},"
                  "\"type\":\"ClusterIP\"}}\n", rng_below(r, 256), rng_below(r, 256),
                  80 + rng_below(r, 9000), 8000 + rng_below(r, 1000), app);
        break;
    case K_ENDPOINTS:
        sb_printf(tail, "\"subsets\":[{\"addresses\":[{\"ip\":\"10.244.%u.%u\"}],\"ports\":"
                  "[{\"port\":%u,\"protocol\":\"TCP\"}]}]}\n", rng_below(r, 256),
                  rng_below(r, 256), 8000 + rng_below(r, 1000));
        break;
    case K_DEPLOYMENT: case K_REPLICASET:
        sb_printf(tail, "\"spec\":{\"replicas\":%u,\"selector\":{\"matchLabels\":{\"app\":"
                  "\"%s\"}},\"template\":{\"spec\":{\"containers\":[{\"name\":\"%s\",\"image\":"
                  "\"registry.example.com/%s:v1.%u\"}]}}},\"status\":{\"readyReplicas\":%u}}\n",
                  1 + rng_below(r, 5), app, app, app, rng_below(r, 30), rng_below(r, 5));
        break;
    case K_SERVICEACCOUNT:
        sb_printf(tail, "\"automountServiceAccountToken\":true}\n");
        break;
    case K_NAMESPACE:
        sb_puts(tail, "\"spec\":{\"finalizers\":[\"kubernetes\"]},\"status\":{\"phase\":"
                "\"Active\"}}\n");
        break;
    case K_RANGE:
        sb_printf(tail, "\"range\":\"%s\",\"data\":\"AAAAAAAAAAAAAAA=\"}\n",
                  strstr(it->name, "node") ? "30000-32767" : "10.96.0.0/12");
        break;
    default:   /* K_APISERVICE */
        sb_printf(tail, "\"spec\":{\"service\":null,\"group\":\"%s\",\"version\":\"v1\","
                  "\"groupPriorityMinimum\":%u,\"versionPriority\":15},\"status\":{"
                  "\"conditions\":[{\"type\":\"Available\",\"status\":\"True\",\"reason\":"
                  "\"Local\"}]}}\n", strchr(it->name, '.') + 1, 17000 + rng_below(r, 1000));
        break;
    }
}

static void put_filler_entry(sb *b, int style, size_t i, rng *r)
{
    if (style == 2) {                  /* secret data: base64 text */
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        sb_printf(b, "\"%s.%zu\":\"", words[rng_below(r, N_WORDS)], i);
        unsigned n = 4 * (10 + rng_below(r, 40));
        sb_reserve(b, n);
        for (unsigned k = 0; k < n; k++)
            b->p[b->len++] = b64[rng_below(r, 64)];
        b->p[b->len] = 0;
        sb_puts(b, "\"");
        return;
    }
    if (style == 1)
        sb_printf(b, "\"%s-%zu.properties\":\"", words[rng_below(r, N_WORDS)], i);
    else
        sb_printf(b, "\"%s.example.com/%s-%zu\":\"", words[rng_below(r, N_WORDS)],
                  words[rng_below(r, N_WORDS)], i);
    unsigned nw = 4 + rng_below(r, 16);
    for (unsigned k = 0; k < nw; k++)
        sb_printf(b, style == 1 ? "%s.%s=%u\\n" : "%s-%s=%u ", words[rng_below(r, N_WORDS)],
                  envs[rng_below(r, N_ENVS)], rng_below(r, 1000));
    sb_puts(b, "\"");
}

/* Deterministic per item: seeded from (seed, index), independent of the thread that runs it. */
static void build_value(const registry *g, size_t idx, sb *b, sb *tail)
{
    const item *it = &g->items[idx];
    rng r = { mix64(g->seed ^ mix64(idx + 1)) };
    b->len = tail->len = 0;
    uint32_t pick = rng_below(&r, N_WORDS);
    bool chained = it->kind >= K_DEPLOYMENT && it->kind <= K_ENDPOINTS;
    const char *app = words[chained ? it->app : pick];
    int style;
    put_meta(b, g, it, idx, &r, app);
    put_body(b, tail, g, it, &r, app, &style);
    for (size_t i = 0; b->len + tail->len < it->size; i++) {
        if (i)
            sb_puts(b, ",");
        put_filler_entry(b, style, i, &r);
    }
    sb_reserve(b, tail->len);
    memcpy(b->p + b->len, tail->p, tail->len + 1);
    b->len += tail->len;
}

/* ---- output ------------------------------------------------------------------------------ */

static int mkdir_p(char *path)
{
    for (char *s = path + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        int rc = mkdir(path, 0755);
        *s = '/';
        if (rc < 0 && errno != EEXIST)
            return -errno;
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Directories first, sequentially, so the writer threads only create files. */
static int out_prepare(const registry *g, const char *dir)
{
    char last[PATH_MAX] = "";
    for (size_t i = 0; i < g->n; i++) {
        char path[PATH_MAX];
        const item *it = &g->items[i];
        int n = snprintf(path, sizeof path, "%s%s", dir, it->key);
        if (n < 0 || (size_t)n >= sizeof path)
            return -ENAMETOOLONG;
        *strrchr(path, '/') = 0;
        if (strcmp(path, last) == 0)
            continue;
        int rc = mkdir_p(path);
        if (rc < 0) {
            fprintf(stderr, "gen-registry: mkdir %s: %s\n", path, strerror(-rc));
            return rc;
        }
        snprintf(last, sizeof last, "%s", path);
    }
    return 0;
}

static int out_write(const char *dir, const char *key, const char *val, size_t len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s%s", dir, key);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, val + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        off += (size_t)w;
    }
    return close(fd) < 0 ? -errno : 0;
}

/* ---- writers ----------------------------------------------------------------------------- */

typedef struct run {
    const registry *g;
    etcd_client *client;     /* NULL: files only */
    const char *out_dir;
    atomic_size_t next;
    atomic_ullong value_bytes, key_bytes;
    atomic_int failed;
    pthread_mutex_t err_lock;
    char err_msg[512];
} run;

static void run_fail(run *ru, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_fail(run *ru, const char *fmt, ...)
{
    pthread_mutex_lock(&ru->err_lock);
    if (!atomic_load(&ru->failed)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ru->err_msg, sizeof ru->err_msg, fmt, ap);
        va_end(ap);
        atomic_store(&ru->failed, 1);
    }
    pthread_mutex_unlock(&ru->err_lock);
}

/* A Put of the same key and value is safe to repeat, so transient failures are retried. */
static int put_retry(etcd_client *c, const item *it, const sb *v, etcd_error *err)
{
    int rc = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        rc = etcd_put(c, it->key, strlen(it->key), v->p, v->len, NULL, NULL, err);
        if (rc == 0 || (-rc != ETCD_E_UNAVAILABLE && -rc != ETCD_E_DEADLINE &&
                        -rc != ETCD_E_UNKNOWN_OUTCOME))
            return rc;
        struct timespec ts = { 0, 100000000L * (attempt + 1) };
        nanosleep(&ts, NULL);
    }
    return rc;
}

static void *writer(void *arg)
{
    run *ru = arg;
    sb v = {0}, tail = {0};
    for (;;) {
        size_t i = atomic_fetch_add(&ru->next, 1);
        if (i >= ru->g->n || atomic_load(&ru->failed))
            break;
        const item *it = &ru->g->items[i];
        build_value(ru->g, i, &v, &tail);
        if (ru->client) {
            etcd_error err = {0};
            int rc = put_retry(ru->client, it, &v, &err);
            if (rc < 0) {
                run_fail(ru, "put %s: %s (%s)", it->key, etcd_err_name(-rc), err.msg);
                break;
            }
        }
        if (ru->out_dir) {
            int rc = out_write(ru->out_dir, it->key, v.p, v.len);
            if (rc < 0) {
                run_fail(ru, "write %s%s: %s", ru->out_dir, it->key, strerror(-rc));
                break;
            }
        }
        atomic_fetch_add(&ru->value_bytes, v.len);
        atomic_fetch_add(&ru->key_bytes, strlen(it->key));
    }
    free(v.p);
    free(tail.p);
    return NULL;
}

/* ---- command line ------------------------------------------------------------------------ */

typedef struct opts {
    const char *endpoints, *cacert, *cert, *key, *user, *password, *prefix, *out;
    size_t keys, big, nodes;
    uint64_t seed;
    int jobs;
    bool clean, list;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: gen-registry --endpoints=URL[,URL...] [options]\n"
        "Writes a deterministic, Kubernetes-shaped keyspace (pods, events, leases, nodes,\n"
        "services, configmaps, secrets, ...) with JSON values of 0.5-12 KiB (mean ~3.5 KB).\n"
        "  --endpoints=URLS     etcd client URLs, comma-separated (omit with --out: files only)\n"
        "  --cacert/--cert/--key=FILE  TLS files (PEM)\n"
        "  --user=NAME --password=PW   etcd auth\n"
        "  --keys=N             number of keys (default 10000)\n"
        "  --big=K              K more keys with values near 1 MiB\n"
        "  --nodes=N            N nodes (minions and leases: two N-entry directories;\n"
        "                       default 1 per 100 keys, at most 500)\n"
        "  --seed=S             generator seed (default 1)\n"
        "  --prefix=P           key prefix (default /registry)\n"
        "  --out=DIR            also write each key K as the file DIR/K\n"
        "  --jobs=J             Puts in flight (default 32)\n"
        "  --clean              delete every key under P/ first\n"
        "  --list               print the keys, write nothing\n");
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -EINVAL;
    *out = (size_t)v;
    return 0;
}

static int parse_opts(int argc, char **argv, opts *o)
{
    static const struct option lo[] = {
        { "endpoints", required_argument, NULL, 'e' }, { "cacert", required_argument, NULL, 'C' },
        { "cert", required_argument, NULL, 'c' }, { "key", required_argument, NULL, 'k' },
        { "user", required_argument, NULL, 'u' }, { "password", required_argument, NULL, 'p' },
        { "keys", required_argument, NULL, 'n' }, { "big", required_argument, NULL, 'b' },
        { "nodes", required_argument, NULL, 'N' },
        { "seed", required_argument, NULL, 's' }, { "prefix", required_argument, NULL, 'P' },
        { "out", required_argument, NULL, 'o' }, { "jobs", required_argument, NULL, 'j' },
        { "clean", no_argument, NULL, 'x' }, { "list", no_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' }, { 0 } };
    *o = (opts){ .prefix = "/registry", .keys = 10000, .seed = 1, .jobs = 32 };
    int ch;
    size_t v;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'e': o->endpoints = optarg; break;
        case 'C': o->cacert = optarg; break;
        case 'c': o->cert = optarg; break;
        case 'k': o->key = optarg; break;
        case 'u': o->user = optarg; break;
        case 'p': o->password = optarg; break;
        case 'P': o->prefix = optarg; break;
        case 'o': o->out = optarg; break;
        case 'x': o->clean = true; break;
        case 'l': o->list = true; break;
        case 'n': if (parse_size(optarg, &o->keys) < 0) goto bad; break;
        case 'b': if (parse_size(optarg, &o->big) < 0) goto bad; break;
        case 'N': if (parse_size(optarg, &o->nodes) < 0) goto bad; break;
        case 's': if (parse_size(optarg, &v) < 0) goto bad; o->seed = v; break;
        case 'j':
            if (parse_size(optarg, &v) < 0 || v < 1 || v > GEN_MAX_JOBS) goto bad;
            o->jobs = (int)v;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -EINVAL;
        }
    }
    size_t pl = strlen(o->prefix);
    while (pl > 0 && o->prefix[pl - 1] == '/')     /* "/registry/" means "/registry" */
        pl--;
    static char prefix_buf[4096];       /* lives as long as the process: nothing to free */
    if (pl >= sizeof(prefix_buf)) {
        fprintf(stderr, "gen-registry: --prefix is too long\n");
        return -EINVAL;
    }
    memcpy(prefix_buf, o->prefix, pl);
    prefix_buf[pl] = '\0';
    o->prefix = prefix_buf;
    if (optind < argc) {
        fprintf(stderr, "gen-registry: unexpected argument '%s'\n", argv[optind]);
        return -EINVAL;
    }
    if (!o->endpoints && !o->out && !o->list) {
        fprintf(stderr, "gen-registry: --endpoints (or --out) is required\n");
        return -EINVAL;
    }
    if (o->keys + o->big > GEN_MAX_KEYS) {
        fprintf(stderr, "gen-registry: at most %u keys\n", GEN_MAX_KEYS);
        return -EINVAL;
    }
    return 0;
bad:
    fprintf(stderr, "gen-registry: bad value '%s'\n", optarg);
    return -EINVAL;
}

/* ---- main -------------------------------------------------------------------------------- */

/* *list holds the endpoint strings: freed by the caller after the client. */
static int connect_client(const opts *o, etcd_client **out, char **list_out)
{
    static char *eps[16];
    size_t n = 0;
    char *list = strdup(o->endpoints), *save = NULL;
    *list_out = list;
    for (char *t = strtok_r(list, ",", &save); t && n < 16; t = strtok_r(NULL, ",", &save))
        eps[n++] = t;
    etcd_config cfg = { .endpoints = (const char *const *)eps, .n_endpoints = n,
                        .cacert = o->cacert, .cert = o->cert, .key = o->key,
                        .user = o->user, .password = o->password, .call_timeout_ms = 30000 };
    etcd_error err = {0};
    int rc = etcd_client_new(&cfg, out, &err);
    if (rc < 0)
        fprintf(stderr, "gen-registry: cannot connect to %s: %s (%s)\n", o->endpoints,
                etcd_err_name(-rc), err.msg);
    return rc;
}

static int clean_prefix(etcd_client *c, const char *prefix)
{
    size_t plen = strlen(prefix), elen;
    char *p = malloc(plen + 2);
    memcpy(p, prefix, plen);
    p[plen] = '/';
    uint8_t *end = etcd_prefix_end(p, plen + 1, &elen);
    etcd_error err = {0};
    etcd_delete_resp resp = {0};
    int rc = etcd_delete(c, p, plen + 1, end, elen, false, &resp, &err);
    if (rc < 0)
        fprintf(stderr, "gen-registry: delete %s/: %s (%s)\n", prefix, etcd_err_name(-rc),
                err.msg);
    else
        etcd_delete_resp_free(&resp);
    free(p);
    free(end);
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_all(registry *g, const opts *o, etcd_client *c)
{
    run ru = { .g = g, .client = c, .out_dir = o->out };
    pthread_mutex_init(&ru.err_lock, NULL);
    pthread_t th[GEN_MAX_JOBS];
    int started = 0;
    double t0 = now_s();
    for (int i = 0; i < o->jobs; i++) {
        if (pthread_create(&th[i], NULL, writer, &ru) != 0)
            break;
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    if (started == 0 || atomic_load(&ru.failed)) {
        fprintf(stderr, "gen-registry: %s\n", started ? ru.err_msg : "cannot start threads");
        return 1;
    }
    unsigned long long vb = atomic_load(&ru.value_bytes), kb = atomic_load(&ru.key_bytes);
    printf("gen-registry: wrote %zu keys, %llu value bytes (%.1f MiB, %llu key bytes) in %.2f s"
           " (%.0f keys/s) to %s%s%s\n", g->n, vb, (double)vb / 1048576.0, kb, dt,
           dt > 0 ? (double)g->n / dt : 0.0, c ? etcd_client_endpoint(c) : "",
           c && o->out ? " and " : "", o->out ? o->out : "");
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse_opts(argc, argv, &o) < 0)
        return 2;
    registry g = { .seed = o.seed, .prefix = o.prefix, .want_nodes = o.nodes };
    if (registry_build(&g, o.keys, o.big) < 0) {
        fprintf(stderr, "gen-registry: out of memory\n");
        return 1;
    }
    if (o.list) {
        for (size_t i = 0; i < g.n; i++)
            printf("%s\n", g.items[i].key);
        return 0;
    }
    if (o.out && out_prepare(&g, o.out) < 0)
        return 1;
    etcd_client *c = NULL;
    char *ep_list = NULL;
    if (o.endpoints) {
        if (connect_client(&o, &c, &ep_list) < 0)
            return 1;
        if (o.clean && clean_prefix(c, o.prefix) < 0) {
            etcd_client_free(c);
            return 1;
        }
    }
    int rc = write_all(&g, &o, c);
    if (c)
        etcd_client_free(c);
    free(ep_list);
    for (size_t i = 0; i < g.n; i++)
        free(g.items[i].key);
    for (size_t i = 0; i < g.n_ns; i++)
        free(g.ns_names[i]);
    free(g.items);
    free(g.ns_names);
    return rc;
}

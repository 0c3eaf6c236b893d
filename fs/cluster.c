/* cluster.c — MNT/.cluster/: etcdctl's admin commands as files (members, status, health,
 * leader, snapshot, alarms, revision, compact, defrag). Text is rendered at open into a buffer
 * owned by the open file, in etcdctl's own formats; writes act at once; snapshot streams. */
#include "cluster.h"
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLUSTER_LEADER_WAIT_MS 5000   /* how long a moved leadership may take to be seen */

enum cluster_kind {
    CK_DIR, CK_MEMBERS, CK_MEMBERS_JSON, CK_STATUS, CK_STATUS_JSON, CK_HEALTH, CK_LEADER,
    CK_SNAPSHOT, CK_ALARMS, CK_REVISION, CK_COMPACT, CK_DEFRAG, CK_EVENTS, CK__COUNT
};

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

struct cluster_file {
    int kind;
    pthread_mutex_t lock;     /* one reader at a time on a handle (snapshot position) */
    char *text;
    size_t len;
    etcd_snapshot *snap;
    events_reader *events;    /* .cluster/events */
    off_t pos;                /* snapshot: bytes handed out so far */
    bool eof;
};

typedef int (*render_fn)(sbuf *b);
typedef int (*write_fn)(const char *arg);

static int render_members(sbuf *b);
static int render_members_json(sbuf *b);
static int render_status(sbuf *b);
static int render_status_json(sbuf *b);
static int render_health(sbuf *b);
static int render_leader(sbuf *b);
static int render_alarms(sbuf *b);
static int render_revision(sbuf *b);
static int write_leader(const char *arg);
static int write_alarms(const char *arg);
static int write_compact(const char *arg);
static int write_defrag(const char *arg);

static const struct {
    const char *name;
    render_fn render;     /* NULL: empty text (or the snapshot stream) */
    write_fn write;       /* NULL: read-only */
} cluster_files[CK__COUNT] = {
    [CK_DIR] = { CLUSTER_NAME, NULL, NULL },
    [CK_MEMBERS] = { "members", render_members, NULL },
    [CK_MEMBERS_JSON] = { "members.json", render_members_json, NULL },
    [CK_STATUS] = { "status", render_status, NULL },
    [CK_STATUS_JSON] = { "status.json", render_status_json, NULL },
    [CK_HEALTH] = { "health", render_health, NULL },
    [CK_LEADER] = { "leader", render_leader, write_leader },
    [CK_SNAPSHOT] = { "snapshot", NULL, NULL },
    [CK_ALARMS] = { "alarms", render_alarms, write_alarms },
    [CK_REVISION] = { "revision", render_revision, NULL },
    [CK_COMPACT] = { "compact", NULL, write_compact },
    [CK_DEFRAG] = { "defrag", NULL, write_defrag },
    [CK_EVENTS] = { "events", NULL, NULL },   /* fs/events.c */
};

static cluster_ctx g_ctx;
static cluster_dirent g_ents[CK__COUNT - 1];
static struct stat g_dir_st;

/* ---- text buffer ------------------------------------------------------------------------ */

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3)))
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        sb_add(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_add(b, big, (size_t)n);
    free(big);
}

/* A JSON string as Go's encoding/json writes it (HTML-safe escapes included). */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        default:
            if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&')
                sb_printf(b, "\\u%04x", *p);
            else
                sb_add(b, (const char *)p, 1);
        }
    }
    sb_puts(b, "\"");
}

/* malloc'd printf, NULL when out of memory. */
__attribute__((format(printf, 1, 2)))
static char *xprintf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

/* ---- etcdctl's formatting helpers -------------------------------------------------------- */

/* go-humanize's Bytes: SI units, one decimal below 10 ("20 kB", "1.0 MB", "9 B"). */
static void human_bytes(uint64_t s, char *out, size_t len)
{
    static const char *const sizes[] = { "B", "kB", "MB", "GB", "TB", "PB", "EB" };
    if (s < 10) {
        snprintf(out, len, "%" PRIu64 " B", s);
        return;
    }
    int e = (int)floor(log((double)s) / log(1000.0));
    if (e > 6)
        e = 6;
    double val = floor((double)s / pow(1000.0, e) * 10 + 0.5) / 10;
    snprintf(out, len, val < 10 ? "%.1f %s" : "%.0f %s", val, sizes[e]);
}

/* "<int>.<frac>" of v / 10^prec with trailing zeros dropped, as Go's Duration.String does. */
static void go_frac(sbuf *b, uint64_t v, int prec)
{
    uint64_t div = 1;
    for (int i = 0; i < prec; i++)
        div *= 10;
    uint64_t frac = v % div;
    sb_printf(b, "%" PRIu64, v / div);
    if (frac) {
        char digits[24];
        snprintf(digits, sizeof digits, "%0*" PRIu64, prec, frac);
        size_t n = strlen(digits);
        while (n > 0 && digits[n - 1] == '0')
            n--;
        sb_puts(b, ".");
        sb_add(b, digits, n);
    }
}

/* Go's time.Duration.String ("2.117193ms", "13.5µs", "1.2s", "1m3.5s"). */
static void go_duration(sbuf *b, uint64_t ns)
{
    if (ns == 0)
        sb_puts(b, "0s");
    else if (ns < 1000)
        sb_printf(b, "%" PRIu64 "ns", ns);
    else if (ns < 1000000) {
        go_frac(b, ns, 3);
        sb_puts(b, "µs");
    } else if (ns < 1000000000) {
        go_frac(b, ns, 6);
        sb_puts(b, "ms");
    } else {
        uint64_t min = ns / 60000000000ULL;
        if (min >= 60)
            sb_printf(b, "%" PRIu64 "h", min / 60);
        if (min)
            sb_printf(b, "%" PRIu64 "m", min % 60);
        go_frac(b, ns % 60000000000ULL, 9);
        sb_puts(b, "s");
    }
}

static const char *alarm_name(int a)
{
    switch (a) {
    case ETCD_ALARM_NONE: return "NONE";
    case ETCD_ALARM_NOSPACE: return "NOSPACE";
    case ETCD_ALARM_CORRUPT: return "CORRUPT";
    default: return "UNKNOWN";
    }
}

/* Like tablewriter as etcdctl sets it up: headers upper-case and centred, cells right-aligned,
 * +---+ borders. cells is rows*ncols strings, row-major. (No wrapping of long cells: one row
 * per line keeps the file greppable.) */
static void render_table(sbuf *b, size_t ncols, const char *const *hdr, char **cells,
                         size_t nrows)
{
    size_t w[16] = { 0 };
    if (ncols > 16)
        return;   /* our tables have at most 10 columns */
    for (size_t c = 0; c < ncols; c++) {
        w[c] = strlen(hdr[c]);
        for (size_t r = 0; r < nrows; r++) {
            size_t l = strlen(cells[r * ncols + c]);
            if (l > w[c])
                w[c] = l;
        }
    }
    sbuf line = { 0 };
    sb_puts(&line, "+");
    for (size_t c = 0; c < ncols; c++) {
        for (size_t i = 0; i < w[c] + 2; i++)
            sb_puts(&line, "-");
        sb_puts(&line, "+");
    }
    sb_puts(&line, "\n");
    if (line.oom) {
        free(line.p);
        b->oom = true;
        return;
    }

    sb_puts(b, line.p);
    sb_puts(b, "|");
    for (size_t c = 0; c < ncols; c++) {
        size_t gap = w[c] - strlen(hdr[c]);
        sb_printf(b, " %*s%s%*s |", (int)(gap / 2), "", hdr[c], (int)(gap - gap / 2), "");
    }
    sb_puts(b, "\n");
    sb_puts(b, line.p);
    for (size_t r = 0; r < nrows; r++) {
        sb_puts(b, "|");
        for (size_t c = 0; c < ncols; c++)
            sb_printf(b, " %*s |", (int)w[c], cells[r * ncols + c]);
        sb_puts(b, "\n");
    }
    sb_puts(b, line.p);
    free(line.p);
}

static void free_cells(char **cells, size_t n)
{
    if (!cells)
        return;
    for (size_t i = 0; i < n; i++)
        free(cells[i]);
    free(cells);
}

static char *join_urls(char **urls, size_t n, const char *sep)
{
    sbuf b = { 0 };
    sb_puts(&b, "");
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_puts(&b, sep);
        sb_puts(&b, urls[i]);
    }
    return b.oom ? (free(b.p), NULL) : b.p;
}

/* Logs an etcd failure once and turns it into a negative errno. */
static int cluster_fail(const char *what, int rc, const etcd_error *err)
{
    fprintf(stderr, "etcdfs: .cluster/%s: %s: %s\n", what, etcd_err_name(-rc),
            err->msg[0] ? err->msg : "(no detail)");
    return -etcd_err_errno(-rc);
}

/* ---- members ------------------------------------------------------------------------------ */

static int get_members(const char *what, struct etcd_member_list *ml)
{
    etcd_error err = { 0 };
    memset(ml, 0, sizeof *ml);
    int rc = etcd_member_list(g_ctx.client, ml, &err);
    return rc < 0 ? cluster_fail(what, rc, &err) : 0;
}

static int render_members(sbuf *b)
{
    static const char *const hdr[] = { "ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS",
                                       "IS LEARNER" };
    struct etcd_member_list ml;
    int rc = get_members("members", &ml);
    if (rc < 0)
        return rc;
    size_t n = ml.n_members * 6;
    char **cells = calloc(n ? n : 1, sizeof *cells);
    if (!cells) {
        etcd_member_list_free(&ml);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ml.n_members; i++) {
        const etcd_member *m = &ml.members[i];
        const char *name = m->name ? m->name : "";
        char **row = &cells[i * 6];
        row[0] = xprintf("%" PRIx64, m->id);
        row[1] = strdup(name[0] ? "started" : "unstarted");
        row[2] = strdup(name);
        row[3] = join_urls(m->peer_urls, m->n_peer_urls, ",");
        row[4] = join_urls(m->client_urls, m->n_client_urls, ",");
        row[5] = strdup(m->is_learner ? "true" : "false");
        for (int c = 0; c < 6; c++)
            if (!row[c])
                rc = -ENOMEM;
    }
    if (rc == 0)
        render_table(b, 6, hdr, cells, ml.n_members);
    free_cells(cells, n);
    etcd_member_list_free(&ml);
    return rc;
}

/* gogoproto's JSON of a ResponseHeader: zero fields omitted. */
static void json_header(sbuf *b, const etcd_header *h)
{
    const char *sep = "";
    sb_puts(b, "\"header\":{");
    if (h->cluster_id) {
        sb_printf(b, "%s\"cluster_id\":%" PRIu64, sep, h->cluster_id);
        sep = ",";
    }
    if (h->member_id) {
        sb_printf(b, "%s\"member_id\":%" PRIu64, sep, h->member_id);
        sep = ",";
    }
    if (h->revision) {
        sb_printf(b, "%s\"revision\":%" PRId64, sep, h->revision);
        sep = ",";
    }
    if (h->raft_term)
        sb_printf(b, "%s\"raft_term\":%" PRIu64, sep, h->raft_term);
    sb_puts(b, "}");
}

static void json_str_array(sbuf *b, const char *field, char **v, size_t n)
{
    if (n == 0)
        return;
    sb_printf(b, ",\"%s\":[", field);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_puts(b, ",");
        sb_json_str(b, v[i]);
    }
    sb_puts(b, "]");
}

static int render_members_json(sbuf *b)
{
    struct etcd_member_list ml;
    int rc = get_members("members.json", &ml);
    if (rc < 0)
        return rc;
    sb_puts(b, "{");
    json_header(b, &ml.header);
    sb_puts(b, ",\"members\":[");
    for (size_t i = 0; i < ml.n_members; i++) {
        const etcd_member *m = &ml.members[i];
        sb_printf(b, "%s{\"ID\":%" PRIu64, i ? "," : "", m->id);
        if (m->name && m->name[0]) {
            sb_puts(b, ",\"name\":");
            sb_json_str(b, m->name);
        }
        json_str_array(b, "peerURLs", m->peer_urls, m->n_peer_urls);
        json_str_array(b, "clientURLs", m->client_urls, m->n_client_urls);
        if (m->is_learner)
            sb_puts(b, ",\"isLearner\":true");
        sb_puts(b, "}");
    }
    sb_puts(b, "]}\n");
    etcd_member_list_free(&ml);
    return 0;
}

/* ---- status and health: one Status per member client URL, in parallel --------------------- */

typedef struct ep_probe {
    const char *url;          /* NULL: a member without client URLs (unstarted) */
    uint64_t member_id;
    int rc;
    etcd_error err;
    etcd_status_resp st;
    uint64_t took_ns;
} ep_probe;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *probe_run(void *arg)
{
    ep_probe *p = arg;
    uint64_t t0 = now_ns();
    p->rc = etcd_status(g_ctx.client, p->url, &p->st, &p->err);
    p->took_ns = now_ns() - t0;
    return NULL;
}

/* Probes every client URL of every member at once (an unreachable member costs one dial
 * timeout, not one per member). *out is malloc'd; ml stays owned by the caller. */
static int probe_members(const struct etcd_member_list *ml, ep_probe **out, size_t *n_out)
{
    size_t n = 0;
    for (size_t i = 0; i < ml->n_members; i++)
        n += ml->members[i].n_client_urls ? ml->members[i].n_client_urls : 1;
    ep_probe *p = calloc(n ? n : 1, sizeof *p);
    pthread_t *th = calloc(n ? n : 1, sizeof *th);
    bool *started = calloc(n ? n : 1, sizeof *started);
    if (!p || !th || !started) {
        free(p);
        free(th);
        free(started);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < ml->n_members; i++) {
        const etcd_member *m = &ml->members[i];
        for (size_t j = 0; j < (m->n_client_urls ? m->n_client_urls : 1); j++, k++) {
            p[k].member_id = m->id;
            p[k].url = m->n_client_urls ? m->client_urls[j] : NULL;
            if (!p[k].url) {
                p[k].rc = -ETCD_E_UNAVAILABLE;
                snprintf(p[k].err.msg, sizeof p[k].err.msg, "member not started");
                continue;
            }
            started[k] = pthread_create(&th[k], NULL, probe_run, &p[k]) == 0;
            if (!started[k])
                probe_run(&p[k]);
        }
    }
    for (k = 0; k < n; k++)
        if (started[k])
            pthread_join(th[k], NULL);
    free(th);
    free(started);
    *out = p;
    *n_out = n;
    return 0;
}

/* One row of `endpoint status -w table`; an unreachable member keeps its URL and ID and says
 * why in ERRORS. Returns false when out of memory. */
static bool status_row(const ep_probe *p, char **row)
{
    const etcd_status_resp *s = &p->st;
    bool ok = p->rc == 0;
    char size[32] = "";
    if (ok)
        human_bytes((uint64_t)s->db_size, size, sizeof size);
    row[0] = strdup(p->url ? p->url : "");
    row[1] = xprintf("%" PRIx64, ok ? s->header.member_id : p->member_id);
    row[2] = strdup(ok ? s->version : "");
    row[3] = strdup(size);
    row[4] = strdup(!ok ? "" : s->leader == s->header.member_id ? "true" : "false");
    row[5] = strdup(!ok ? "" : s->is_learner ? "true" : "false");
    row[6] = ok ? xprintf("%" PRId64, s->raft_term) : strdup("");
    row[7] = ok ? xprintf("%" PRId64, s->raft_index) : strdup("");
    row[8] = ok ? xprintf("%" PRId64, s->raft_applied_index) : strdup("");
    if (ok) {
        /* etcdctl joins the errors with ", "; the client hands them joined with "; " */
        sbuf e = { 0 };
        sb_puts(&e, "");
        for (const char *q = s->errors; *q; q++)
            sb_add(&e, q[0] == ';' && q[1] == ' ' ? "," : q, 1);
        row[9] = e.oom ? (free(e.p), NULL) : e.p;
    } else {
        row[9] = xprintf("%s: %s", etcd_err_name(-p->rc), p->err.msg);
    }
    for (int c = 0; c < 10; c++)
        if (!row[c])
            return false;
    return true;
}

static int render_status(sbuf *b)
{
    static const char *const hdr[] = { "ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER",
                                       "IS LEARNER", "RAFT TERM", "RAFT INDEX",
                                       "RAFT APPLIED INDEX", "ERRORS" };
    struct etcd_member_list ml;
    ep_probe *p = NULL;
    size_t n = 0;
    int rc = get_members("status", &ml);
    if (rc < 0)
        return rc;
    rc = probe_members(&ml, &p, &n);
    char **cells = rc == 0 ? calloc(n * 10 + 1, sizeof *cells) : NULL;
    if (rc == 0 && !cells)
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!status_row(&p[i], &cells[i * 10]))
            rc = -ENOMEM;
    if (rc == 0)
        render_table(b, 10, hdr, cells, n);
    free_cells(cells, cells ? n * 10 : 0);
    free(p);
    etcd_member_list_free(&ml);
    return rc;
}

static void json_status(sbuf *b, const etcd_status_resp *s)
{
    sb_puts(b, "{");
    json_header(b, &s->header);
    if (s->version[0]) {
        sb_puts(b, ",\"version\":");
        sb_json_str(b, s->version);
    }
    if (s->db_size)
        sb_printf(b, ",\"dbSize\":%" PRId64, s->db_size);
    if (s->leader)
        sb_printf(b, ",\"leader\":%" PRIu64, s->leader);
    if (s->raft_index)
        sb_printf(b, ",\"raftIndex\":%" PRId64, s->raft_index);
    if (s->raft_term)
        sb_printf(b, ",\"raftTerm\":%" PRId64, s->raft_term);
    if (s->raft_applied_index)
        sb_printf(b, ",\"raftAppliedIndex\":%" PRId64, s->raft_applied_index);
    if (s->errors[0]) {
        sb_puts(b, ",\"errors\":[");
        char tmp[sizeof s->errors];
        snprintf(tmp, sizeof tmp, "%s", s->errors);
        char *save = NULL, *first = tmp;
        /* split back the "; "-joined list */
        for (char *tok = tmp; tok; tok = save) {
            save = strstr(tok, "; ");
            if (save) {
                *save = '\0';
                save += 2;
            }
            if (tok != first)
                sb_puts(b, ",");
            sb_json_str(b, tok);
        }
        sb_puts(b, "]");
    }
    if (s->db_size_in_use)
        sb_printf(b, ",\"dbSizeInUse\":%" PRId64, s->db_size_in_use);
    if (s->is_learner)
        sb_puts(b, ",\"isLearner\":true");
    sb_puts(b, "}");
}

/* etcdctl's `endpoint status -w json --cluster` shape; an unreachable member gets
 * "Status":null and an "Error" (etcdctl would leave it out). */
static int render_status_json(sbuf *b)
{
    struct etcd_member_list ml;
    ep_probe *p = NULL;
    size_t n = 0;
    int rc = get_members("status.json", &ml);
    if (rc < 0)
        return rc;
    rc = probe_members(&ml, &p, &n);
    if (rc == 0) {
        sb_puts(b, "[");
        for (size_t i = 0; i < n; i++) {
            sb_puts(b, i ? ",{\"Endpoint\":" : "{\"Endpoint\":");
            sb_json_str(b, p[i].url ? p[i].url : "");
            sb_puts(b, ",\"Status\":");
            if (p[i].rc == 0) {
                json_status(b, &p[i].st);
            } else {
                char msg[320];
                snprintf(msg, sizeof msg, "%s: %s", etcd_err_name(-p[i].rc), p[i].err.msg);
                sb_printf(b, "null,\"ID\":%" PRIu64 ",\"Error\":", p[i].member_id);
                sb_json_str(b, msg);
            }
            sb_puts(b, "}");
        }
        sb_puts(b, "]\n");
    }
    free(p);
    etcd_member_list_free(&ml);
    return rc;
}

/* `etcdctl endpoint health --cluster`'s lines. The check is Status of that very member: it
 * answers and knows a leader (a Range would go to whichever member the client uses). */
static int render_health(sbuf *b)
{
    struct etcd_member_list ml;
    ep_probe *p = NULL;
    size_t n = 0;
    int rc = get_members("health", &ml);
    if (rc < 0)
        return rc;
    rc = probe_members(&ml, &p, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *url = p[i].url ? p[i].url : "(unstarted member)";
        if (p[i].rc == 0 && p[i].st.leader != 0) {
            sb_printf(b, "%s is healthy: successfully committed proposal: took = ", url);
            go_duration(b, p[i].took_ns);
            sb_puts(b, "\n");
        } else if (p[i].rc == 0) {
            sb_printf(b, "%s is unhealthy: failed to commit proposal: etcdserver: no leader\n",
                      url);
        } else {
            sb_printf(b, "%s is unhealthy: failed to commit proposal: %s: %s\n", url,
                      etcd_err_name(-p[i].rc), p[i].err.msg);
        }
    }
    free(p);
    etcd_member_list_free(&ml);
    return rc;
}

/* ---- leader ------------------------------------------------------------------------------ */

static int current_leader(const char *what, uint64_t *leader)
{
    etcd_status_resp st;
    etcd_error err = { 0 };
    int rc = etcd_status(g_ctx.client, NULL, &st, &err);
    if (rc < 0)
        return cluster_fail(what, rc, &err);
    *leader = st.leader;
    return 0;
}

static const etcd_member *find_member_id(const struct etcd_member_list *ml, uint64_t id)
{
    for (size_t i = 0; i < ml->n_members; i++)
        if (ml->members[i].id == id)
            return &ml->members[i];
    return NULL;
}

static int render_leader(sbuf *b)
{
    struct etcd_member_list ml;
    uint64_t leader = 0;
    int rc = current_leader("leader", &leader);
    if (rc < 0)
        return rc;
    if (leader == 0) {
        fprintf(stderr, "etcdfs: .cluster/leader: the cluster has no leader\n");
        return -EIO;
    }
    rc = get_members("leader", &ml);
    if (rc < 0)
        return rc;
    const etcd_member *m = find_member_id(&ml, leader);
    sb_printf(b, "%" PRIx64 " %s\n", leader, m && m->name ? m->name : "");
    etcd_member_list_free(&ml);
    return 0;
}

/* A member named by hex ID (as `members` shows it, "0x" allowed) or by name. */
static const etcd_member *resolve_member(const struct etcd_member_list *ml, const char *arg)
{
    const char *hex = strncmp(arg, "0x", 2) == 0 ? arg + 2 : arg;
    size_t len = strlen(hex);
    if (len > 0 && len <= 16 && strspn(hex, "0123456789abcdefABCDEF") == len) {
        const etcd_member *m = find_member_id(ml, strtoull(hex, NULL, 16));
        if (m)
            return m;
    }
    for (size_t i = 0; i < ml->n_members; i++)
        if (ml->members[i].name && strcmp(ml->members[i].name, arg) == 0)
            return &ml->members[i];
    return NULL;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int write_leader(const char *arg)
{
    struct etcd_member_list ml;
    int rc = get_members("leader", &ml);
    if (rc < 0)
        return rc;
    const etcd_member *m = resolve_member(&ml, arg);
    uint64_t target = m ? m->id : 0;
    if (!m) {
        fprintf(stderr, "etcdfs: .cluster/leader: no member has the ID or name \"%s\"\n", arg);
        rc = -EINVAL;
    } else if (m->is_learner) {
        fprintf(stderr, "etcdfs: .cluster/leader: member %" PRIx64 " (%s) is a learner and "
                "cannot lead\n", m->id, m->name ? m->name : "");
        rc = -EINVAL;
    }
    etcd_member_list_free(&ml);
    if (rc < 0)
        return rc;

    uint64_t leader = 0;
    rc = current_leader("leader", &leader);
    if (rc < 0 || leader == target)
        return rc;
    etcd_error err = { 0 };
    rc = etcd_move_leader(g_ctx.client, target, &err);
    if (rc < 0)
        return cluster_fail("leader", rc, &err);
    /* MoveLeader returns once the target leads; the member we read status from may learn it a
     * heartbeat later. Wait for it so a read right after the write names the new leader. */
    uint64_t deadline = now_ns() + CLUSTER_LEADER_WAIT_MS * 1000000ULL;
    while (now_ns() < deadline) {
        if (current_leader("leader", &leader) == 0 && leader == target)
            return 0;
        sleep_ms(20);
    }
    return 0;
}

/* ---- alarms ------------------------------------------------------------------------------ */

static int render_alarms(sbuf *b)
{
    struct etcd_alarm *a = NULL;
    size_t n = 0;
    etcd_error err = { 0 };
    int rc = etcd_alarm(g_ctx.client, ETCD_ALARM_GET, 0, ETCD_ALARM_NONE, &a, &n, &err);
    if (rc < 0)
        return cluster_fail("alarms", rc, &err);
    /* `etcdctl alarm list` prints each AlarmMember's proto text form */
    for (size_t i = 0; i < n; i++)
        sb_printf(b, "memberID:%" PRIu64 " alarm:%s \n", a[i].member_id,
                  alarm_name(a[i].alarm));
    free(a);
    return 0;
}

/* `etcdctl alarm disarm`: deactivate every active alarm, one by one. */
static int write_alarms(const char *arg)
{
    if (strcmp(arg, "disarm") != 0) {
        fprintf(stderr, "etcdfs: .cluster/alarms: write \"disarm\" (got \"%s\")\n", arg);
        return -EINVAL;
    }
    struct etcd_alarm *a = NULL;
    size_t n = 0;
    etcd_error err = { 0 };
    int rc = etcd_alarm(g_ctx.client, ETCD_ALARM_GET, 0, ETCD_ALARM_NONE, &a, &n, &err);
    if (rc < 0)
        return cluster_fail("alarms", rc, &err);
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct etcd_alarm *left = NULL;
        size_t n_left = 0;
        rc = etcd_alarm(g_ctx.client, ETCD_ALARM_DEACTIVATE, a[i].member_id, a[i].alarm,
                        &left, &n_left, &err);
        free(left);
        if (rc < 0)
            rc = cluster_fail("alarms", rc, &err);
        else
            fprintf(stderr, "etcdfs: .cluster/alarms: disarmed %s of member %" PRIx64 "\n",
                    alarm_name(a[i].alarm), a[i].member_id);
    }
    free(a);
    return rc;
}

/* ---- revision, compact, defrag ----------------------------------------------------------- */

/* A linearizable (quorum) Range's header: the cluster's revision, not one member's. When auth
 * forbids the probe key, Status's header still says the revision of the member in use. */
static int render_revision(sbuf *b)
{
    etcd_range_req req = { .key = "health", .key_len = 6, .count_only = true };
    etcd_range_resp resp;
    etcd_error err = { 0 };
    memset(&resp, 0, sizeof resp);
    int rc = etcd_range(g_ctx.client, &req, &resp, &err);
    if (rc == 0) {
        sb_printf(b, "%" PRId64 "\n", resp.header.revision);
        etcd_range_resp_free(&resp);
        return 0;
    }
    if (rc != -ETCD_E_PERMISSION)
        return cluster_fail("revision", rc, &err);
    etcd_status_resp st;
    rc = etcd_status(g_ctx.client, NULL, &st, &err);
    if (rc < 0)
        return cluster_fail("revision", rc, &err);
    sb_printf(b, "%" PRId64 "\n", st.header.revision);
    return 0;
}

static int write_compact(const char *arg)
{
    char *end = NULL;
    errno = 0;
    long long rev = strtoll(arg, &end, 10);
    if (!arg[0] || *end || errno || rev <= 0) {
        fprintf(stderr, "etcdfs: .cluster/compact: \"%s\" is not a revision\n", arg);
        return -EINVAL;
    }
    etcd_error err = { 0 };
    /* physical: return once the old revisions are really gone, so a defrag that follows
     * frees their space */
    int rc = etcd_compact(g_ctx.client, rev, true, &err);
    if (rc == -ETCD_E_COMPACTED || rc == -ETCD_E_FUTURE_REV) {
        fprintf(stderr, "etcdfs: .cluster/compact: revision %lld: %s\n", rev, err.msg);
        return -EINVAL;
    }
    if (rc < 0)
        return cluster_fail("compact", rc, &err);
    fprintf(stderr, "etcdfs: .cluster/compact: compacted to revision %lld\n", rev);
    return 0;
}

static int defrag_one(const char *url)
{
    etcd_error err = { 0 };
    int rc = etcd_defragment(g_ctx.client, url, &err);
    if (rc < 0) {
        fprintf(stderr, "etcdfs: .cluster/defrag: %s: %s: %s\n", url, etcd_err_name(-rc),
                err.msg);
        return -etcd_err_errno(-rc);
    }
    fprintf(stderr, "etcdfs: .cluster/defrag: defragmented %s\n", url);
    return 0;
}

/* "all": every member, one after the other (a defrag blocks its member); a client URL, or a
 * member's hex ID or name: that member. */
static int write_defrag(const char *arg)
{
    struct etcd_member_list ml;
    int rc = get_members("defrag", &ml);
    if (rc < 0)
        return rc;
    if (strcmp(arg, "all") == 0) {
        for (size_t i = 0; i < ml.n_members; i++) {
            if (ml.members[i].n_client_urls == 0)
                continue;
            int r = defrag_one(ml.members[i].client_urls[0]);
            if (r < 0 && rc == 0)
                rc = r;
        }
        etcd_member_list_free(&ml);
        return rc;
    }
    const char *url = NULL;
    for (size_t i = 0; i < ml.n_members && !url; i++)
        for (size_t j = 0; j < ml.members[i].n_client_urls; j++)
            if (strcmp(ml.members[i].client_urls[j], arg) == 0)
                url = ml.members[i].client_urls[j];
    const etcd_member *m = url ? NULL : resolve_member(&ml, arg);
    if (m && m->n_client_urls)
        url = m->client_urls[0];
    if (url) {
        rc = defrag_one(url);
    } else {
        fprintf(stderr, "etcdfs: .cluster/defrag: \"%s\" is not \"all\" nor a member's client "
                "URL, ID or name\n", arg);
        rc = -EINVAL;
    }
    etcd_member_list_free(&ml);
    return rc;
}

/* ---- inodes, attributes, directory ------------------------------------------------------- */

static void fill_stat(int kind, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = CLUSTER_INO_BASE + (uint64_t)kind;
    st->st_uid = g_ctx.uid;
    st->st_gid = g_ctx.gid;
    st->st_blksize = 4096;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    st->st_atim = st->st_mtim = st->st_ctim = now;
    if (kind == CK_DIR) {
        st->st_mode = S_IFDIR | (g_ctx.dir_mode & 07777);
        st->st_nlink = 2;
    } else {
        mode_t perm = cluster_files[kind].write ? 0600 : 0400;
        st->st_mode = S_IFREG | (perm & g_ctx.file_mode);
        st->st_nlink = 1;
        /* contents exist only once opened: size unknown, reads go direct (direct_io) */
        st->st_size = 0;
    }
}

void cluster_init(const cluster_ctx *ctx)
{
    g_ctx = *ctx;
    fill_stat(CK_DIR, &g_dir_st);
    for (int k = 1; k < CK__COUNT; k++) {
        g_ents[k - 1].name = cluster_files[k].name;
        fill_stat(k, &g_ents[k - 1].st);
    }
}

bool cluster_is_ino(uint64_t ino)
{
    return ino >= CLUSTER_INO_BASE && ino < CLUSTER_INO_BASE + CK__COUNT;
}

int cluster_lookup(uint64_t parent, const char *name, struct stat *st)
{
    if (parent == CACHE_ROOT_INO && strcmp(name, CLUSTER_NAME) == 0)
        return cluster_getattr(CLUSTER_INO_BASE + CK_DIR, st);
    if (parent != CLUSTER_INO_BASE + CK_DIR)
        return -ENOENT;
    for (int k = 1; k < CK__COUNT; k++)
        if (strcmp(name, cluster_files[k].name) == 0)
            return cluster_getattr(CLUSTER_INO_BASE + (uint64_t)k, st);
    return -ENOENT;
}

int cluster_getattr(uint64_t ino, struct stat *st)
{
    if (!cluster_is_ino(ino))
        return -ENOENT;
    fill_stat((int)(ino - CLUSTER_INO_BASE), st);
    return 0;
}

int cluster_readdir(uint64_t ino, const cluster_dirent **ents, size_t *n)
{
    if (!cluster_is_ino(ino))
        return -ENOENT;
    if (ino != CLUSTER_INO_BASE + CK_DIR)
        return -ENOTDIR;
    *ents = g_ents;
    *n = CK__COUNT - 1;
    return 0;
}

bool cluster_direct_io(uint64_t ino)
{
    return cluster_is_ino(ino) && ino != CLUSTER_INO_BASE + CK_DIR;
}

/* ---- open files -------------------------------------------------------------------------- */

int cluster_open(uint64_t ino, int flags, cluster_file **out)
{
    if (!cluster_is_ino(ino))
        return -ENOENT;
    int kind = (int)(ino - CLUSTER_INO_BASE);
    if (kind == CK_DIR)
        return -EISDIR;
    int acc = flags & O_ACCMODE;
    if (acc != O_RDONLY) {
        if (g_ctx.read_only)
            return -EROFS;
        if (!cluster_files[kind].write)
            return -EACCES;
    }
    cluster_file *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->kind = kind;
    pthread_mutex_init(&f->lock, NULL);

    int rc = 0;
    if (kind == CK_EVENTS) {
        rc = events_open(&f->events);
    } else if (kind == CK_SNAPSHOT) {
        etcd_error err = { 0 };
        rc = etcd_snapshot_open(g_ctx.client, &f->snap, &err);
        if (rc < 0)
            rc = cluster_fail("snapshot", rc, &err);
    } else if (acc != O_WRONLY && cluster_files[kind].render) {
        sbuf b = { 0 };
        rc = cluster_files[kind].render(&b);
        if (rc == 0 && b.oom)
            rc = -ENOMEM;
        f->text = b.p;
        f->len = b.len;
        if (rc < 0)
            free(b.p);
    }
    if (rc < 0) {
        pthread_mutex_destroy(&f->lock);
        free(f);
        return rc;
    }
    *out = f;
    return 0;
}

/* Snapshot bytes, pulled from the stream: fills buf (short only at the end). */
static long snapshot_read_locked(cluster_file *f, char *buf, size_t size, off_t off)
{
    if (off < f->pos) {
        fprintf(stderr, "etcdfs: .cluster/snapshot: only sequential reads (offset %lld after "
                "%lld)\n", (long long)off, (long long)f->pos);
        return -EINVAL;
    }
    char skip[4096];
    size_t got = 0;
    while (!f->eof && (off > f->pos || got < size)) {
        bool skipping = off > f->pos;
        size_t want = skipping ? (size_t)(off - f->pos) : size - got;
        if (skipping && want > sizeof skip)
            want = sizeof skip;
        etcd_error err = { 0 };
        long n = etcd_snapshot_read(f->snap, skipping ? skip : buf + got, want, 0, &err);
        if (n < 0)
            return cluster_fail("snapshot", (int)n, &err);
        if (n == 0)
            f->eof = true;
        f->pos += n;
        if (!skipping)
            got += (size_t)n;
    }
    return (long)got;
}

struct events_reader *cluster_events(cluster_file *f)
{
    return f ? f->events : NULL;
}

long cluster_read(cluster_file *f, char *buf, size_t size, off_t off)
{
    if (off < 0)
        return -EINVAL;
    pthread_mutex_lock(&f->lock);
    long rc;
    if (f->snap) {
        rc = snapshot_read_locked(f, buf, size, off);
    } else if ((size_t)off >= f->len) {
        rc = 0;
    } else {
        size_t n = f->len - (size_t)off < size ? f->len - (size_t)off : size;
        memcpy(buf, f->text + off, n);
        rc = (long)n;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

long cluster_write(cluster_file *f, const char *buf, size_t size, off_t off)
{
    write_fn fn = cluster_files[f->kind].write;
    if (!fn)
        return -EBADF;
    size_t n = size;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    if (n == 0 || n > 1024 || memchr(buf, '\0', n)) {
        fprintf(stderr, "etcdfs: .cluster/%s: empty or unreadable argument\n",
                cluster_files[f->kind].name);
        return -EINVAL;
    }
    char arg[1025];
    memcpy(arg, buf, n);
    arg[n] = '\0';
    int rc = fn(arg);
    return rc < 0 ? rc : (long)size;
}

void cluster_release(cluster_file *f)
{
    if (!f)
        return;
    events_release(f->events);
    if (f->snap)
        etcd_snapshot_close(f->snap);   /* cancels a stream not read to the end */
    free(f->text);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* keypath.c — the reversible key <-> path mapping of keypath.h: per-component escaping, the root
 * markers ("%^", "%2Ecluster"), chunking of long components into "%-" names, and the canonical
 * check (join decodes, re-encodes and demands the very same names back). */
#include "keypath.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A non-final chunk leaves room for its "%-" marker. */
#define KEYPATH_CHUNK_MAX (KEYPATH_NAME_MAX - 2)
/* The longest encoding unit is a 4-byte UTF-8 sequence, so a maximal chunk is never shorter. */
#define KEYPATH_CHUNK_MIN (KEYPATH_CHUNK_MAX - 3)

static const char keypath_hex[] = "0123456789ABCDEF";

/* ---- growable byte buffer (may start on caller storage, then moves to the heap) ---------- */

typedef struct kp_buf {
    char *p;
    size_t len, cap;
    bool heap;
} kp_buf;

static int kp_buf_reserve(kp_buf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = b->heap ? realloc(b->p, cap) : malloc(cap);
    if (!p)
        return -ENOMEM;
    if (!b->heap && b->len)
        memcpy(p, b->p, b->len);
    b->p = p;
    b->cap = cap;
    b->heap = true;
    return 0;
}

static int kp_buf_put(kp_buf *b, const void *s, size_t n)
{
    int rc = kp_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int kp_buf_putc(kp_buf *b, char c)
{
    return kp_buf_put(b, &c, 1);
}

static void kp_buf_free(kp_buf *b)
{
    if (b->heap)
        free(b->p);
    *b = (kp_buf){0};
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence starting at s (1 for ASCII), 0 if none starts there.
 * Overlong forms, surrogates and code points above U+10FFFF are invalid (RFC 3629 table). */
static size_t kp_utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;          /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F;          /* surrogates U+D800..U+DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;          /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F;          /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* ASCII bytes that would be unusable or ambiguous in a name: NUL, controls, DEL, the escape. */
static bool kp_ascii_escaped(uint8_t c)
{
    return c < 0x20 || c == 0x7f || c == '%';
}

/* Byte-level escaping of a component's content (no whole-name rules). */
static int kp_encode_bytes(kp_buf *e, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l = kp_utf8_len(s + i, n - i);
        int rc;
        if (l > 1 || (l == 1 && !kp_ascii_escaped(s[i]))) {
            rc = kp_buf_put(e, s + i, l);
        } else {
            char esc[3] = {'%', keypath_hex[s[i] >> 4], keypath_hex[s[i] & 15]};
            rc = kp_buf_put(e, esc, 3);
            l = 1;
        }
        if (rc)
            return rc;
        i += l;
    }
    return 0;
}

/* The whole encoded component E (before chunking). prefixed: the first component of a key that
 * does not begin with '/'; its "%^" already makes the name safe, so no whole-name rule applies. */
static int kp_encode_component(kp_buf *e, const uint8_t *s, size_t n, bool at_root,
                               bool prefixed)
{
    if (prefixed) {
        int rc = kp_buf_put(e, "%^", 2);
        return rc ? rc : kp_encode_bytes(e, s, n);
    }
    if (n == 0)
        return kp_buf_put(e, "%", 1);
    if (n == 1 && s[0] == '.')
        return kp_buf_put(e, "%2E", 3);
    if (n == 2 && s[0] == '.' && s[1] == '.')
        return kp_buf_put(e, "%2E%2E", 6);
    if (at_root && n == 8 && memcmp(s, ".cluster", 8) == 0)
        return kp_buf_put(e, "%2Ecluster", 10);
    return kp_encode_bytes(e, s, n);
}

/* Length of the encoding unit at e[pos] of a chunkable E: "%^" (only at 0), "%XX", or one
 * literal UTF-8 sequence (literal bytes of E are valid UTF-8, so the lead byte tells). */
static size_t kp_unit_len(const char *e, size_t pos)
{
    uint8_t c = (uint8_t)e[pos];
    if (c == '%')
        return pos == 0 && e[1] == '^' ? 2 : 3;
    if (c < 0x80)
        return 1;
    if (c < 0xE0)
        return 2;
    return c < 0xF0 ? 3 : 4;
}

static int kp_names_push(keypath_names *out, const char *s, size_t n, bool cont)
{
    /* keypath_names has no capacity field: the array holds 4, 8, 16... (grow at those n). */
    if (out->n == 0 || (out->n >= 4 && (out->n & (out->n - 1)) == 0)) {
        size_t cap = out->n ? out->n * 2 : 4;
        char **v = realloc(out->names, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        out->names = v;
    }
    char *name = malloc(n + (cont ? 2 : 0) + 1);
    if (!name)
        return -ENOMEM;
    memcpy(name, s, n);
    if (cont)
        memcpy(name + n, "%-", 2);
    name[n + (cont ? 2 : 0)] = '\0';
    out->names[out->n++] = name;
    return 0;
}

/* E → names: while the rest does not fit in one name, cut the longest prefix of whole units
 * that fits in a chunk. Being greedy makes the cut points a function of E (canonical). */
static int kp_emit_chunks(keypath_names *out, const char *e, size_t len)
{
    size_t pos = 0;
    while (len - pos > KEYPATH_NAME_MAX) {
        size_t take = 0, u;
        while (take + (u = kp_unit_len(e, pos + take)) <= KEYPATH_CHUNK_MAX)
            take += u;
        int rc = kp_names_push(out, e + pos, take, true);
        if (rc)
            return rc;
        pos += take;
    }
    return kp_names_push(out, e + pos, len - pos, false);
}

int keypath_split(const uint8_t *key, size_t len, keypath_names *out)
{
    if (!out)
        return -EINVAL;
    out->names = NULL;
    out->n = 0;
    if (!key || len == 0)
        return -EINVAL;

    bool prefixed = key[0] != '/';
    size_t i = prefixed ? 0 : 1;
    kp_buf e = {0};
    int rc = 0;
    for (bool first = true;; first = false) {
        const uint8_t *slash = memchr(key + i, '/', len - i);
        size_t end = slash ? (size_t)(slash - key) : len;
        e.len = 0;
        rc = kp_encode_component(&e, key + i, end - i, first, prefixed && first);
        if (!rc)
            rc = kp_emit_chunks(out, e.p, e.len);
        if (rc || !slash)
            break;
        i = end + 1;
    }
    kp_buf_free(&e);
    if (rc)
        keypath_names_free(out);
    return rc;
}

void keypath_names_free(keypath_names *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->names[i]);
    free(p->names);
    p->names = NULL;
    p->n = 0;
}

/* ---- decoding ---------------------------------------------------------------------------- */

static int kp_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Undo the byte escapes of a component's content. Deliberately lenient (lowercase hex,
 * needless escapes): canonicality is decided by re-encoding, which catches all of those. */
static int kp_decode_bytes(kp_buf *k, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc;
        if (s[i] == '%') {
            int hi = i + 2 < n ? kp_hexval(s[i + 1]) : -1;
            int lo = hi >= 0 ? kp_hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -EINVAL;
            rc = kp_buf_putc(k, (char)(hi << 4 | lo));
            i += 2;
        } else {
            rc = kp_buf_putc(k, s[i]);
        }
        if (rc)
            return rc;
    }
    return 0;
}

bool keypath_name_is_continuation(const char *name)
{
    size_t l = name ? strlen(name) : 0;
    return l >= 2 && name[l - 2] == '%' && name[l - 1] == '-';
}

/* Gather the names of one component (continuations, then a final name) into body. */
static int kp_gather_component(const char *const *names, size_t n, size_t *i, kp_buf *body)
{
    body->len = 0;
    for (;;) {
        if (*i >= n)
            return -EINVAL;                 /* the last name was a continuation */
        const char *nm = names[(*i)++];
        size_t l = nm ? strnlen(nm, KEYPATH_NAME_MAX + 1) : 0;
        if (l == 0 || l > KEYPATH_NAME_MAX || memchr(nm, '/', l))
            return -EINVAL;
        bool cont = l >= 2 && nm[l - 2] == '%' && nm[l - 1] == '-';
        int rc = kp_buf_put(body, nm, cont ? l - 2 : l);
        if (rc || !cont)
            return rc;
    }
}

/* Decode names into a key without judging canonicality (see keypath_join). */
static int kp_decode_names(const char *const *names, size_t n, kp_buf *k)
{
    kp_buf body = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        bool first = i == 0;
        rc = kp_gather_component(names, n, &i, &body);
        if (rc)
            break;
        const char *b = body.p;
        size_t bl = body.len;
        if (first && bl >= 2 && b[0] == '%' && b[1] == '^') {
            b += 2;
            bl -= 2;
        } else {
            rc = kp_buf_putc(k, '/');
        }
        if (!rc && !(bl == 1 && b[0] == '%'))    /* "%" alone: the empty component */
            rc = kp_decode_bytes(k, b, bl);
    }
    kp_buf_free(&body);
    return rc;
}

int keypath_join(const char *const *names, size_t n, uint8_t **key, size_t *len)
{
    if (!names || n == 0 || !key || !len)
        return -EINVAL;

    kp_buf k = {0};
    int rc = kp_decode_names(names, n, &k);
    if (rc) {
        kp_buf_free(&k);
        return rc;
    }
    /* Canonical means: exactly what split would give for this key. Comparing against a fresh
     * split makes every path name one key and every key one path, by construction. */
    keypath_names re;
    rc = keypath_split((const uint8_t *)k.p, k.len, &re);
    if (rc == 0) {
        if (re.n != n)
            rc = -EINVAL;
        for (size_t i = 0; i < n && !rc; i++)
            if (strcmp(re.names[i], names[i]) != 0)
                rc = -EINVAL;
        keypath_names_free(&re);
    }
    if (rc) {
        kp_buf_free(&k);
        return rc;
    }
    *key = (uint8_t *)k.p;
    *len = k.len;
    return 0;
}

/* Local check of one name: what can be decided without its neighbours. A continuation's
 * maximality and UTF-8 across chunk boundaries are only fully checked by keypath_join. */
bool keypath_name_valid(const char *name, bool at_root)
{
    size_t l = name ? strnlen(name, KEYPATH_NAME_MAX + 1) : 0;
    if (l == 0 || l > KEYPATH_NAME_MAX || memchr(name, '/', l))
        return false;

    bool cont = l >= 2 && name[l - 2] == '%' && name[l - 1] == '-';
    size_t bl = cont ? l - 2 : l;
    bool prefixed = bl >= 2 && name[0] == '%' && name[1] == '^';
    if (prefixed && !at_root)
        return false;
    if (cont && (bl < KEYPATH_CHUNK_MIN || bl > KEYPATH_CHUNK_MAX))
        return false;

    const char *c = prefixed ? name + 2 : name;
    size_t cl = prefixed ? bl - 2 : bl;
    char dstore[KEYPATH_NAME_MAX + 1], estore[3 * KEYPATH_NAME_MAX + 8];
    dstore[0] = '\0';      /* the empty component leaves it untouched */
    kp_buf d = {dstore, 0, sizeof dstore, false};
    kp_buf e = {estore, 0, sizeof estore, false};
    bool ok = false;
    if (!prefixed && cl == 1 && c[0] == '%')
        ok = true;                              /* empty component, decodes to nothing */
    else if (kp_decode_bytes(&d, c, cl) == 0)
        ok = !(prefixed && d.len == 0);         /* a non-'/' key's first component is never empty */
    if (ok)
        ok = kp_encode_component(&e, (const uint8_t *)d.p, d.len, at_root, prefixed) == 0 &&
             e.len == bl && memcmp(e.p, name, bl) == 0;
    kp_buf_free(&d);
    kp_buf_free(&e);
    return ok;
}

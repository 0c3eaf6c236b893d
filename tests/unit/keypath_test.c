/* keypath_test.c — unit tests of cache/keypath.c: a table of examples for every escape rule
 * (both directions), a table of non-canonical names that must be refused, and seeded random
 * properties (round trip, name limits, join/name_valid agreement). KEYPATH_SEED overrides. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "keypath.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* "a/b/c" → names; names never contain '/', so a path string is an unambiguous notation. */
static size_t path_names(const char *path, char ***out)
{
    size_t n = 1;
    for (const char *p = path; *p; p++)
        n += *p == '/';
    char **v = calloc(n, sizeof *v);
    const char *s = path;
    for (size_t i = 0; i < n; i++) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        v[i] = strndup(s, l);
        s += l + 1;
    }
    *out = v;
    return n;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* split, rendered as "a/b/c"; NULL when split fails. */
static char *split_path(const uint8_t *key, size_t len)
{
    keypath_names kn;
    if (keypath_split(key, len, &kn) != 0)
        return NULL;
    size_t total = 1;
    for (size_t i = 0; i < kn.n; i++)
        total += strlen(kn.names[i]) + 1;
    char *s = calloc(1, total);
    for (size_t i = 0; i < kn.n; i++) {
        if (i)
            strcat(s, "/");
        strcat(s, kn.names[i]);
    }
    keypath_names_free(&kn);
    return s;
}

static int join_path(const char *path, uint8_t **key, size_t *len)
{
    char **v;
    size_t n = path_names(path, &v);
    int rc = keypath_join((const char *const *)v, n, key, len);
    free_strv(v, n);
    return rc;
}

/* Printable rendering of key bytes for diagnostics. */
static const char *show(const uint8_t *k, size_t n)
{
    static char buf[4 * 800 + 16];
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof buf - 8; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, k[i] >= 0x20 && k[i] < 0x7f ? "%c" : "\\x%02x",
                              k[i]);
    buf[o] = '\0';
    return buf;
}

static char *rep(const char *unit, size_t times)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * times + 1);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * times] = '\0';
    return s;
}

/* Concatenate a NULL-terminated list of strings into a new one. */
static char *cat(const char *first, ...)
{
    va_list ap;
    size_t total = 1;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        total += strlen(s);
    va_end(ap);
    char *r = calloc(1, total);
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        strcat(r, s);
    va_end(ap);
    return r;
}

/* One example, both directions: split(key) == path and join(path) == key. */
static void example(const uint8_t *key, size_t len, const char *path, const char *what)
{
    char *got = split_path(key, len);
    CHECK(got && strcmp(got, path) == 0, "split %s: %s", what, path);
    if (!got || strcmp(got, path) != 0)
        DIAG("key \"%s\" gave %s", show(key, len), got ? got : "(error)");
    free(got);
    uint8_t *k = NULL;
    size_t kl = 0;
    int rc = join_path(path, &k, &kl);
    CHECK(rc == 0 && kl == len && memcmp(k, key, len) == 0, "join %s", what);
    if (rc == 0 && !(kl == len && memcmp(k, key, len) == 0))
        DIAG("got key \"%s\"", show(k, kl));
    free(k);
}

#define EX(lit, path) example((const uint8_t *)(lit), sizeof(lit) - 1, path, #lit)

/* ---- examples ---------------------------------------------------------------------------- */

static void test_examples(void)
{
    /* natural keys stay natural; Kubernetes keys are never escaped */
    EX("/registry/pods/default/nginx-7c5b4f-x2x9q", "registry/pods/default/nginx-7c5b4f-x2x9q");
    EX("/registry/apiregistration.k8s.io/apiservices/v1.apps",
       "registry/apiregistration.k8s.io/apiservices/v1.apps");
    EX("/a b/c=d/e:f~g", "a b/c=d/e:f~g");
    /* keys not beginning with '/' */
    EX("compact_rev_key", "%^compact_rev_key");
    EX("foo/bar", "%^foo/bar");
    EX("a//b", "%^a/%/b");
    EX("a/", "%^a/%");
    EX("%x", "%^%25x");
    /* empty components */
    EX("/", "%");
    EX("//", "%/%");
    EX("/a//b", "a/%/b");
    EX("/a/", "a/%");
    EX("//a", "%/a");
    /* byte escapes */
    EX("/a\0b", "a%00b");
    EX("/\0", "%00");
    EX("/100%", "100%25");
    EX("/%25", "%2525");
    EX("/a%-", "a%25-");
    EX("/a%=", "a%25=");
    EX("/%^", "%25^");
    EX("/%", "%25");
    EX("/a\x01\x1f\x7f", "a%01%1F%7F");
    EX("/tab\there\nnl", "tab%09here%0Anl");
    EX("/\x20~", " ~");
    /* dot names */
    EX("/.", "%2E");
    EX("/..", "%2E%2E");
    EX("/a/./b", "a/%2E/b");
    EX("/a/..", "a/%2E%2E");
    EX("/...", "...");
    EX("/.hidden", ".hidden");
    EX("/a/.b", "a/.b");
    EX("/.a.", ".a.");
    /* the reserved root name */
    EX("/.cluster", "%2Ecluster");
    EX("/.cluster/members", "%2Ecluster/members");
    EX("/a/.cluster", "a/.cluster");
    EX("/.clusters", ".clusters");
    EX("/.cluste", ".cluste");
    EX("/.Cluster", ".Cluster");
    /* a "%^" name is never a dangerous name: no whole-name rule applies after it */
    EX(".cluster", "%^.cluster");
    EX(".", "%^.");
    EX("..", "%^..");
    EX("./x", "%^./x");
    /* valid UTF-8 is literal */
    EX("/h\xc3\xa9llo", "h\xc3\xa9llo");
    EX("/\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac");
    EX("/\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");
    EX("/\xc2\x80", "\xc2\x80");                  /* U+0080 (a C1 control, but valid) */
    EX("/\xed\x9f\xbf", "\xed\x9f\xbf");          /* U+D7FF */
    EX("/\xee\x80\x80", "\xee\x80\x80");          /* U+E000 */
    EX("/\xef\xbf\xbf", "\xef\xbf\xbf");          /* U+FFFF */
    EX("/\xf0\x90\x80\x80", "\xf0\x90\x80\x80");  /* U+10000 */
    EX("/\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf");  /* U+10FFFF */
    /* invalid UTF-8: each offending byte escaped */
    EX("/\xff", "%FF");
    EX("/\x80", "%80");
    EX("/\xc0\x80", "%C0%80");                    /* overlong NUL */
    EX("/\xc1\xbf", "%C1%BF");
    EX("/\xe0\x80\x80", "%E0%80%80");             /* overlong 3-byte */
    EX("/\xe0\x9f\xbf", "%E0%9F%BF");
    EX("/\xf0\x80\x80\x80", "%F0%80%80%80");      /* overlong 4-byte */
    EX("/\xf0\x8f\xbf\xbf", "%F0%8F%BF%BF");
    EX("/\xed\xa0\x80", "%ED%A0%80");             /* surrogate */
    EX("/\xed\xbf\xbf", "%ED%BF%BF");
    EX("/\xf4\x90\x80\x80", "%F4%90%80%80");      /* above U+10FFFF */
    EX("/\xf5\x80\x80\x80", "%F5%80%80%80");
    EX("/\xe2\x82", "%E2%82");                    /* truncated */
    EX("/\xe2\x82x", "%E2%82x");
    EX("/\xe2\x82\xe2\x82\xac", "%E2%82\xe2\x82\xac");
    EX("/\xc3\xa9\xa9", "\xc3\xa9%A9");
    EX("/\xf0\x9f\x98", "%F0%9F%98");
    EX("/a\xfe/b", "a%FE/b");
}

/* Long components: greedy chunks of <= 253 encoded bytes + "%-", never splitting a unit. */
static void long_example(const char *key, const char *path, const char *what)
{
    example((const uint8_t *)key, strlen(key), path, what);
}

static void test_long(void)
{
    char *a253 = rep("a", 253), *a251 = rep("a", 251), *k, *p, *x, *y, *z;

    k = cat("/", x = rep("a", 255), NULL);
    long_example(k, x, "255 bytes: one name");
    free(k), free(x);

    k = cat("/", x = rep("a", 256), NULL);
    long_example(k, p = cat(a253, "%-/aaa", NULL), "256 bytes: two names");
    free(k), free(x), free(p);

    k = cat("/", x = rep("a", 300), "/b", NULL);
    long_example(k, p = cat(a253, "%-/", y = rep("a", 47), "/b", NULL), "300 bytes then /b");
    free(k), free(x), free(p), free(y);

    k = cat("/", x = rep("a", 800), NULL);
    long_example(k, p = cat(a253, "%-/", a253, "%-/", a253, "%-/", y = rep("a", 41), NULL),
                 "800 bytes: four names");
    free(k), free(x), free(p), free(y);

    /* 253 + 255: the remainder just fits */
    k = cat("/", x = rep("a", 508), NULL);
    long_example(k, p = cat(a253, "%-/", y = rep("a", 255), NULL), "508 bytes: 253 + 255");
    free(k), free(x), free(p), free(y);

    /* escapes are never split: 84 triples = 252 bytes */
    k = cat("/", x = rep("\x01", 100), NULL);
    long_example(k, p = cat(y = rep("%01", 84), "%-/", z = rep("%01", 16), NULL), "escapes");
    free(k), free(x), free(p), free(y), free(z);

    /* one byte then triples: exactly 253 */
    k = cat("/b", x = rep("%", 100), NULL);
    long_example(k, p = cat("b", y = rep("%25", 84), "%-/", z = rep("%25", 16), NULL),
                 "1 + triples = 253");
    free(k), free(x), free(p), free(y), free(z);

    /* UTF-8 never split: 2 + 83*3 = 251, the next sequence would make 254 */
    k = cat("/aa", x = rep("\xe2\x82\xac", 100), NULL);
    long_example(k, p = cat("aa", y = rep("\xe2\x82\xac", 83), "%-/", z = rep("\xe2\x82\xac", 17),
                            NULL), "3-byte UTF-8");
    free(k), free(x), free(p), free(y), free(z);

    k = cat("/", x = rep("\xf0\x9f\x98\x80", 70), NULL);
    long_example(k, p = cat(y = rep("\xf0\x9f\x98\x80", 63), "%-/", z = rep("\xf0\x9f\x98\x80", 7),
                            NULL), "4-byte UTF-8");
    free(k), free(x), free(p), free(y), free(z);

    k = cat("/a", x = rep("\xf0\x9f\x98\x80", 70), NULL);
    long_example(k, p = cat("a", y = rep("\xf0\x9f\x98\x80", 63), "%-/", z = rep("\xf0\x9f\x98\x80", 7),
                            NULL), "4-byte UTF-8 after 1 byte: 253");
    free(k), free(x), free(p), free(y), free(z);

    /* "%^" counts toward the first chunk */
    long_example(a253, p = cat("%^", a253, NULL), "prefixed 2 + 253 = 255: one name");
    free(p);
    k = rep("a", 254);
    long_example(k, p = cat("%^", a251, "%-/aaa", NULL), "prefixed 256: two names");
    free(k), free(p);
    k = cat(x = rep("a", 300), "/b", NULL);
    long_example(k, p = cat("%^", a251, "%-/", y = rep("a", 49), "/b", NULL), "prefixed 300");
    free(k), free(x), free(p), free(y);

    /* a long ".cluster"-like or dot component is just bytes */
    k = cat("/.", x = rep(".", 299), NULL);
    long_example(k, p = cat(y = rep(".", 253), "%-/", z = rep(".", 47), NULL), "300 dots");
    free(k), free(x), free(p), free(y), free(z);
    free(a253), free(a251);
}

/* ---- rejection of non-canonical paths ---------------------------------------------------- */

static void reject(const char *path, const char *why)
{
    uint8_t *k = NULL;
    size_t kl = 0;
    int rc = join_path(path, &k, &kl);
    CHECK(rc == -EINVAL, "join refuses %s", why);
    if (rc == 0)
        DIAG("path \"%s\" accepted as key \"%s\"", path, show(k, kl));
    free(k);
}

static void test_reject(void)
{
    reject("%2e", "lowercase hex");
    reject("a%e9", "lowercase hex in a name");
    reject("%41", "escape of a plain byte");
    reject("a%7E", "escape of '~'");
    reject("%C3%A9", "escape of valid UTF-8");
    reject("%2F", "escape of '/'");
    reject("a%2Fb", "escape of '/' mid-name");
    reject("a%", "'%' at the end");
    reject("a%4", "'%' with one hex digit");
    reject("a%G1", "'%' with a non-hex digit");
    reject("%%", "\"%%\"");
    reject("a%-b", "\"%-\" inside a name");
    reject("a%=", "a twin suffix");
    reject("%=", "a bare twin suffix");
    reject("a/%^b", "\"%^\" not first");
    reject("a%^b", "\"%^\" inside the first name");
    reject("%^", "\"%^\" alone");
    reject("%^%", "\"%^%\"");
    reject("%^%2E", "\"%^%2E\": a prefixed name needs no dot escape");
    reject("%^%2Ecluster", "\"%^%2Ecluster\"");
    reject(".", "a literal '.'");
    reject("..", "a literal '..'");
    reject("a/.", "a literal '.' below the root");
    reject("a/../b", "a literal '..' below the root");
    reject(".cluster", "a literal .cluster at the root");
    reject(".cluster/x", "a literal .cluster directory at the root");
    reject("a/%2Ecluster", "%2Ecluster below the root");
    reject("%2Ea", "%2E not a whole name");
    reject("a%2E", "%2E at the end of a name");
    reject("%2E.", "\"%2E.\"");
    reject(".%2E", "\".%2E\"");
    reject("%2E%2E%2E", "three escaped dots");
    reject("\xff", "invalid UTF-8 literally");
    reject("\xc0\x80", "overlong literally");
    reject("\xed\xa0\x80", "surrogate literally");
    reject("\xf4\x90\x80\x80", "beyond U+10FFFF literally");
    reject("\xe2\x82", "truncated UTF-8 literally");
    reject("a\x01" "b", "a literal control byte");
    reject("a\x7f", "a literal DEL");
    reject("a/", "an empty name");
    reject("/a", "an empty first name");
    reject("", "the empty path");
    reject("a%-", "a continuation last");
    reject("a/b%-", "a continuation last, below the root");
    reject("%-", "a bare continuation marker");

    char *p, *x, *y;
    reject(p = cat(x = rep("a", 100), "%-/b", NULL), "a short continuation chunk");
    free(p), free(x);
    reject(p = cat(x = rep("a", 252), "%-/", y = rep("a", 50), NULL),
           "a continuation chunk one byte short of maximal");
    free(p), free(x), free(y);
    reject(p = cat(x = rep("a", 253), "%-/aa", NULL), "chunks of a component that fits in one name");
    free(p), free(x);
    reject(p = cat(x = rep("a", 250), "%-/%01", y = rep("a", 10), NULL),
           "a chunk that stopped before a triple that fit");
    free(p), free(x), free(y);
    reject(p = cat(x = rep("a", 253), "%-/%", NULL), "\"%\" as a final chunk");
    free(p), free(x);
    reject(p = cat(x = rep("a", 253), "%-/%^a", NULL), "\"%^\" in a continuation's tail");
    free(p), free(x);
    reject(p = rep("a", 256), "a 256-byte name");
    free(p);
    /* an escaped UTF-8 sequence split across chunks would be literal in the whole component */
    reject(p = cat(x = rep("a", 247), "%E2%82%-/%AC", y = rep("a", 10), NULL),
           "UTF-8 escaped across a chunk boundary");
    free(p), free(x), free(y);

    /* direct API misuse */
    uint8_t *k = NULL;
    size_t kl;
    const char *slash[] = {"a/b"};
    CHECK(keypath_join(slash, 1, &k, &kl) == -EINVAL, "join refuses a name containing '/'");
    const char *nul[] = {NULL};
    CHECK(keypath_join(nul, 1, &k, &kl) == -EINVAL, "join refuses a NULL name");
    CHECK(keypath_join(slash, 0, &k, &kl) == -EINVAL, "join refuses zero names");
    keypath_names kn;
    CHECK(keypath_split((const uint8_t *)"", 0, &kn) == -EINVAL && kn.n == 0,
          "split refuses the empty key");
}

/* ---- keypath_name_valid / keypath_name_is_continuation ----------------------------------- */

static void test_name_valid(void)
{
    static const struct { const char *name; bool root, nonroot; } t[] = {
        {"a", true, true},           {"%", true, true},            {"%2E", true, true},
        {"%2E%2E", true, true},      {"%2Ecluster", true, false},  {".cluster", false, true},
        {".", false, false},         {"..", false, false},         {".hidden", true, true},
        {"%^a", true, false},        {"%^.", true, false},         {"%^.cluster", true, false},
        {"%^%2E", false, false},     {"%^", false, false},         {"a%=", false, false},
        {"%%=", false, false},       {"%2e", false, false},        {"%41", false, false},
        {"%25", true, true},         {"a%00b", true, true},        {"%FF", true, true},
        {"\xff", false, false},      {"\xc3\xa9", true, true},     {"%C3%A9", false, false},
        {"a/b", false, false},       {"", false, false},           {"a%-", false, false},
        {"%2Ea", false, false},      {"a\x01", false, false},      {"%E2%82", true, true},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        CHECK(keypath_name_valid(t[i].name, true) == t[i].root, "name_valid(\"%s\", root) = %d",
              t[i].name, t[i].root);
        CHECK(keypath_name_valid(t[i].name, false) == t[i].nonroot,
              "name_valid(\"%s\", below root) = %d", t[i].name, t[i].nonroot);
    }
    CHECK(!keypath_name_valid(NULL, true), "name_valid(NULL) is false");

    char *p, *x;
    p = cat(x = rep("a", 253), "%-", NULL);
    CHECK(keypath_name_valid(p, true) && keypath_name_valid(p, false), "a 253-byte chunk is valid");
    CHECK(keypath_name_is_continuation(p), "a chunk is a continuation");
    free(p), free(x);
    p = cat(x = rep("a", 100), "%-", NULL);
    CHECK(!keypath_name_valid(p, false), "a 100-byte chunk is not maximal");
    free(p), free(x);
    p = cat("%^", x = rep("a", 251), "%-", NULL);
    CHECK(keypath_name_valid(p, true) && !keypath_name_valid(p, false), "a prefixed chunk: root only");
    free(p), free(x);
    p = cat(x = rep("a", 254), "%-", NULL);
    CHECK(!keypath_name_valid(p, false), "a 256-byte chunk is invalid");
    free(p), free(x);
    p = rep("a", 255);
    CHECK(keypath_name_valid(p, false), "a 255-byte name is valid");
    free(p);
    p = rep("a", 256);
    CHECK(!keypath_name_valid(p, false), "a 256-byte name is invalid");
    free(p);
    CHECK(!keypath_name_is_continuation("a") && !keypath_name_is_continuation("a%25-") &&
          !keypath_name_is_continuation("") && !keypath_name_is_continuation(NULL),
          "is_continuation only for the \"%%-\" marker");
}

/* ---- random properties ------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)   /* splitmix64: tiny, good enough, reproducible everywhere */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static size_t rnd(size_t n) { return (size_t)(rng() % n); }

/* Append one biased random piece to k (at most 8 bytes). */
static size_t random_piece(uint8_t *k, int alphabet)
{
    static const char *const words[] = {".", "..", ".cluster", "%^", "%-", "%=", "%2E", "%25",
                                        "registry", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    int r = (int)rnd(100);
    if (alphabet == 1 && r < 70)          /* slash and dot heavy: many tiny components */
        return k[0] = "/./%"[rnd(4)], 1;
    if (alphabet == 2 && r < 70)          /* raw bytes of every kind */
        return k[0] = (uint8_t)rnd(256), 1;
    if (r < 12)
        return k[0] = '/', 1;
    if (r < 18)
        return k[0] = '%', 1;
    if (r < 24)
        return k[0] = '.', 1;
    if (r < 28)
        return k[0] = 0, 1;
    if (r < 34)
        return k[0] = (uint8_t)(0x80 + rnd(128)), 1;
    if (r < 38)
        return k[0] = (uint8_t)rnd(0x20), 1;
    if (r < 50) {                         /* a valid multi-byte sequence */
        static const uint8_t seq[][4] = {{0xc3, 0xa9}, {0xe6, 0x97, 0xa5}, {0xf0, 0x9f, 0x98, 0x80},
                                         {0xed, 0x9f, 0xbf}, {0xf4, 0x8f, 0xbf, 0xbf}, {0xc2, 0x80}};
        static const size_t seql[] = {2, 3, 4, 3, 4, 2};
        size_t i = rnd(6);
        memcpy(k, seq[i], seql[i]);
        return seql[i];
    }
    if (r < 58) {
        const char *w = words[rnd(sizeof words / sizeof words[0])];
        memcpy(k, w, strlen(w));
        return strlen(w);
    }
    return k[0] = (uint8_t)("abcxyz-_:=~ 0123456789ABC"[rnd(25)]), 1;
}

static size_t random_key(uint8_t *k, size_t max)
{
    size_t want = rnd(2) ? 1 + rnd(700) : 1 + rnd(24);   /* half short: many corner cases */
    int alphabet = (int)rnd(4);
    size_t n = 0;
    if (rnd(3))
        k[n++] = '/';
    if (alphabet == 3) {                  /* one long run of one unit: exercises chunking */
        uint8_t u[8];
        size_t ul = random_piece(u, 0);
        while (n + ul <= want && n + ul <= max)
            memcpy(k + n, u, ul), n += ul;
    }
    while (n < want) {
        uint8_t p[8];
        size_t pl = random_piece(p, alphabet);
        if (n + pl > max)
            break;
        memcpy(k + n, p, pl);
        n += pl;
    }
    return n ? n : (k[0] = 'x', 1);
}

/* Every name split produces: 1..255 bytes, no '/', valid at its position, and the
 * continuation marker exactly where the component goes on. */
static bool names_sane(const keypath_names *kn)
{
    for (size_t i = 0; i < kn->n; i++) {
        size_t l = strlen(kn->names[i]);
        if (l == 0 || l > KEYPATH_NAME_MAX || strchr(kn->names[i], '/'))
            return false;
        if (!keypath_name_valid(kn->names[i], i == 0))
            return false;
    }
    return kn->n > 0 && !keypath_name_is_continuation(kn->names[kn->n - 1]);
}

static void test_roundtrip(uint64_t seed, size_t iterations)
{
    static uint8_t key[760];
    size_t bad_split = 0, bad_names = 0, bad_round = 0, chunked = 0, names_total = 0;
    size_t bytes_total = 0;
    rng_state = seed;
    for (size_t it = 0; it < iterations; it++) {
        size_t len = random_key(key, 700);
        keypath_names kn;
        if (keypath_split(key, len, &kn) != 0) {
            if (bad_split++ < 3)
                DIAG("split failed on \"%s\"", show(key, len));
            continue;
        }
        names_total += kn.n;
        for (size_t i = 0; i < kn.n; i++)
            chunked += keypath_name_is_continuation(kn.names[i]);
        if (!names_sane(&kn) && bad_names++ < 3)
            DIAG("bad names for \"%s\"", show(key, len));
        /* The joined length equals the key length only if no name hid a NUL or lost bytes;
         * a round trip for every key also makes split injective. */
        uint8_t *back = NULL;
        size_t bl = 0;
        int rc = keypath_join((const char *const *)kn.names, kn.n, &back, &bl);
        if ((rc != 0 || bl != len || memcmp(back, key, len) != 0) && bad_round++ < 3)
            DIAG("round trip failed (rc %d) for \"%s\"", rc, show(key, len));
        bytes_total += len;
        free(back);
        keypath_names_free(&kn);
    }
    CHECK(bad_split == 0, "split accepts %zu random keys (seed %" PRIu64 ")", iterations, seed);
    CHECK(bad_names == 0, "all names 1..255 bytes, no '/', valid in place, last not a chunk");
    CHECK(bad_round == 0, "join(split(K)) == K for all (so split is injective)");
    CHECK(chunked > 1000, "the random keys exercised chunking (%zu chunks)", chunked);
    DIAG("%zu keys, %zu bytes, %zu names", iterations, bytes_total, names_total);
}

/* A random name: a mutation of a real one, or soup of escape-ish pieces. */
static char *random_name(void)
{
    static const char *const bits[] = {"%", "%2E", "%2e", "%-", "%^", "%=", ".", "..", ".cluster",
                                       "%25", "%41", "%FF", "%E2", "%82", "%AC", "\xe2\x82\xac",
                                       "\xe2", "\xff", "a", "b", "%00", "%0", "\x01"};
    char buf[600];
    size_t n = 0;
    int r = (int)rnd(10);
    if (r < 6) {                                     /* a real name, maybe mutated */
        uint8_t key[300];
        size_t kl = random_key(key, 280);
        keypath_names kn;
        if (keypath_split(key, kl, &kn) != 0)
            return strdup("x");
        char *s = strdup(kn.names[rnd(kn.n)]);
        keypath_names_free(&kn);
        size_t l = strlen(s);
        if (r < 3 && l > 0) {
            s[rnd(l)] = "%aA2E-^=.\xff/"[rnd(11)];   /* '/' is also a fine mutation */
        }
        return s;
    }
    size_t want = r == 9 ? 240 + rnd(20) : 1 + rnd(12);
    while (n < want && n < sizeof buf - 16) {
        const char *b = bits[rnd(sizeof bits / sizeof bits[0])];
        memcpy(buf + n, b, strlen(b));
        n += strlen(b);
    }
    if (r == 9 && rnd(2))
        memcpy(buf + n, "%-", 2), n += 2;
    buf[n] = '\0';
    return strdup(buf);
}

static void test_join_fuzz(uint64_t seed, size_t iterations)
{
    size_t accepted = 0, bad_back = 0, bad_valid = 0;
    rng_state = seed ^ 0x5bd1e995;
    for (size_t it = 0; it < iterations; it++) {
        size_t n = 1 + rnd(4);
        char *names[4];
        for (size_t i = 0; i < n; i++)
            names[i] = random_name();
        uint8_t *key = NULL;
        size_t kl = 0;
        if (keypath_join((const char *const *)names, n, &key, &kl) == 0) {
            accepted++;
            char *p = split_path(key, kl);
            size_t off = 0;
            bool same = p != NULL;
            for (size_t i = 0; i < n && same; i++) {
                size_t l = strlen(names[i]);
                same = strncmp(p + off, names[i], l) == 0 &&
                       p[off + l] == (i + 1 < n ? '/' : '\0');
                off += l + 1;
            }
            if (!same && bad_back++ < 3)
                DIAG("split(join(N)) != N for first name \"%s\"", names[0]);
            /* an accepted path has only names that are valid on their own */
            for (size_t i = 0; i < n; i++)
                if (!keypath_name_valid(names[i], i == 0) && bad_valid++ < 3)
                    DIAG("join accepted \"%s\" which name_valid refuses", names[i]);
            free(p);
            free(key);
        }
        for (size_t i = 0; i < n; i++)
            free(names[i]);
    }
    CHECK(bad_back == 0, "split(join(N)) == N whenever join accepts (%zu of %zu accepted)",
          accepted, iterations);
    CHECK(bad_valid == 0, "join never accepts a name that name_valid refuses");
    CHECK(accepted > iterations / 50, "the fuzz produced enough valid paths");
}

int main(void)
{
    uint64_t seed = 20240611;
    const char *env = getenv("KEYPATH_SEED");
    if (env && *env)
        seed = strtoull(env, NULL, 0);
    DIAG("KEYPATH_SEED=%" PRIu64, seed);

    test_examples();
    test_long();
    test_reject();
    test_name_valid();
    test_roundtrip(seed, 200000);
    test_join_fuzz(seed, 200000);
    return check_done();
}

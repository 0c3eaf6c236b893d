/* keypath_fuzz.c — libFuzzer target for cache/keypath.c. The input is used twice: as a key
 * (split must succeed, names must be sane, join must give the key back) and as a '/'-separated
 * path (join must not crash; when it accepts, split must give back exactly those names).
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icache \
 *            tests/fuzz/keypath_fuzz.c cache/keypath.c -o keypath_fuzz
 * Run:   ./keypath_fuzz -max_total_time=60 -max_len=2048 [corpus_dir] */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keypath.h"

#define FUZZ_ASSERT(c) do { if (!(c)) __builtin_trap(); } while (0)

static void fuzz_key(const uint8_t *data, size_t size)
{
    keypath_names kn;
    int rc = keypath_split(data, size, &kn);
    FUZZ_ASSERT(size == 0 ? rc != 0 : rc == 0);
    if (rc)
        return;
    FUZZ_ASSERT(kn.n > 0 && !keypath_name_is_continuation(kn.names[kn.n - 1]));
    for (size_t i = 0; i < kn.n; i++) {
        size_t l = strlen(kn.names[i]);
        FUZZ_ASSERT(l >= 1 && l <= KEYPATH_NAME_MAX && !memchr(kn.names[i], '/', l));
        FUZZ_ASSERT(keypath_name_valid(kn.names[i], i == 0));
    }
    uint8_t *key = NULL;
    size_t len = 0;
    FUZZ_ASSERT(keypath_join((const char *const *)kn.names, kn.n, &key, &len) == 0);
    FUZZ_ASSERT(len == size && memcmp(key, data, size) == 0);
    free(key);
    keypath_names_free(&kn);
}

static void fuzz_path(const uint8_t *data, size_t size)
{
    if (size == 0 || memchr(data, 0, size))
        return;                        /* names are C strings: no NUL can reach join */
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    size_t n = 1;
    for (size_t i = 0; i < size; i++)
        n += copy[i] == '/';
    char **names = malloc(n * sizeof *names);
    char *s = copy;
    for (size_t i = 0; i < n; i++) {
        names[i] = s;
        char *e = strchr(s, '/');
        if (e) {
            *e = '\0';
            s = e + 1;
        }
    }
    uint8_t *key = NULL;
    size_t len = 0;
    if (keypath_join((const char *const *)names, n, &key, &len) == 0) {
        keypath_names kn;
        FUZZ_ASSERT(keypath_split(key, len, &kn) == 0 && kn.n == n);
        for (size_t i = 0; i < n; i++) {
            FUZZ_ASSERT(strcmp(kn.names[i], names[i]) == 0);
            FUZZ_ASSERT(keypath_name_valid(names[i], i == 0));
        }
        keypath_names_free(&kn);
        free(key);
    }
    free(names);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_key(data, size);
    fuzz_path(data, size);
    return 0;
}

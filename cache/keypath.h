/* keypath.h — the one reversible mapping between etcd keys (arbitrary bytes, relative to the
 * mount prefix) and paths of file names. Natural keys stay natural: "/registry/pods/a" is
 * registry/pods/a. The escape character is '%'; every name the mapping produces is canonical and
 * every canonical path names exactly one key (docs/KEYPATH.md):
 *   %XX     one byte (uppercase hex): NUL, '%', control bytes 0x01-0x1f and 0x7f, bytes that are
 *           not part of valid UTF-8
 *   %       (the whole name) an empty component: "/a//b" → a/%/b, "/a/" → a/%
 *   %2E     a component "." ; "%2E%2E" for ".."
 *   %2Ecluster  at the root only: a real key component ".cluster" (the name is reserved)
 *   X%-     a component longer than fits in one name (255 bytes) continues in the child
 *           directory: the name is a chunk of the encoded component followed by "%-"
 *   %^X     at the root only: the first component of a key that does not begin with '/'
 *           ("compact_rev_key" → %^compact_rev_key)
 *   X%=     (added by the cache, not here) the value of a key that is also a directory. */
#ifndef ETCDFS_KEYPATH_H
#define ETCDFS_KEYPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYPATH_NAME_MAX 255

typedef struct keypath_names {
    char **names;    /* each NUL-terminated, 1..255 bytes, no '/' */
    size_t n;
} keypath_names;

/* Key (relative to the prefix) → names from the mount root. The last name is the file.
 * -EINVAL for an empty key. */
int keypath_split(const uint8_t *key, size_t len, keypath_names *out);
void keypath_names_free(keypath_names *p);

/* Names from the mount root → key. -EINVAL when any name is not canonical, "%^" is not first,
 * or the last name is a continuation ("X%-"). *key is malloc'd. */
int keypath_join(const char *const *names, size_t n, uint8_t **key, size_t *len);

/* Whether a single name is canonical at that position (at_root: first level). */
bool keypath_name_valid(const char *name, bool at_root);
/* Whether a name is a continuation chunk (ends in the "%-" marker). */
bool keypath_name_is_continuation(const char *name);

#endif

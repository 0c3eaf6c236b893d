/* cluster.h — MNT/.cluster/: the cluster itself as files (members, status, health, leader,
 * snapshot, alarms, revision, compact, defrag). Not keys: inodes live in their own range, so
 * fs/ops.c sends every request on such an inode (and the lookup of ".cluster" at the root) here.
 * Contents are generated at open, so one open sees one consistent text. */
#ifndef ETCDFS_CLUSTER_H
#define ETCDFS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../cache/cache.h"
#include "../client/etcd.h"

#define CLUSTER_INO_BASE (1ULL << 62)
#define CLUSTER_NAME ".cluster"

typedef struct cluster_ctx {
    etcd_client *client;
    cache *cache;
    uid_t uid;
    gid_t gid;
    mode_t file_mode, dir_mode;   /* already umasked: 0600/0700 by default */
    bool read_only;
    long long quota_bytes;
} cluster_ctx;

void cluster_init(const cluster_ctx *ctx);
bool cluster_is_ino(uint64_t ino);

/* parent is CACHE_ROOT_INO (name must be ".cluster") or the .cluster directory. -ENOENT. */
int cluster_lookup(uint64_t parent, const char *name, struct stat *st);
int cluster_getattr(uint64_t ino, struct stat *st);

typedef struct cluster_dirent {
    const char *name;
    struct stat st;
} cluster_dirent;
/* Entries of the .cluster directory (static table; no free). */
int cluster_readdir(uint64_t ino, const cluster_dirent **ents, size_t *n);

typedef struct cluster_file cluster_file;
/* .cluster/events is a stream (fs/events.c): ops.c reads it through its reader, which
 * blocks until a change and needs the request (interrupts). NULL for other files. */
struct events_reader *cluster_events(cluster_file *f);
/* O_WRONLY/O_RDWR only on writable files (leader, alarms, compact, defrag): else -EACCES;
 * -EROFS on a read-only mount. Reading files render their text here (one etcd round of calls);
 * snapshot opens a stream. */
int cluster_open(uint64_t ino, int flags, cluster_file **out);
/* Returns bytes read (0 at end) or -errno. Offsets: text files any; snapshot sequential only
 * (-ESPIPE? no: -EINVAL for a backwards seek). */
long cluster_read(cluster_file *f, char *buf, size_t size, off_t off);
/* Acts on each write() (a trailing newline is ignored): leader ← member hex ID or name
 * (MoveLeader); alarms ← "disarm"; compact ← revision; defrag ← anything. Returns size or -errno
 * (-EINVAL for garbage, unknown member, learner; with a log line). */
long cluster_write(cluster_file *f, const char *buf, size_t size, off_t off);
void cluster_release(cluster_file *f);
/* Whether reads must bypass the page cache (direct_io): every file whose size is unknown. */
bool cluster_direct_io(uint64_t ino);

#endif

/* echo.h — inotify for changes made by other etcd clients. The kernel raises no inotify event
 * for fuse_lowlevel_notify_*, so a thread of ours replays each remote change as the real
 * syscall on our own mount (write, create, mkdir, unlink, rmdir), and ops.c answers those
 * requests from the cache without sending anything to etcd (echo_* hooks below). */
#ifndef ETCDFS_FS_ECHO_H
#define ETCDFS_FS_ECHO_H

#include "ops.h"

#define ECHO_QUEUE_MAX 65536
#define ECHO_DIR_SETTLE_MS 100   /* after a new directory: time for `inotifywait -r` to watch it */

/* mountpoint: absolute path of the mount. Starts the echo thread (idle until echo_activate). */
int echo_start(fs_state *st, const char *mountpoint);
/* The mount answers (FUSE_INIT): replaying may begin. */
void echo_activate(void);
/* Before the FUSE session goes away. Bounded: a replay stuck on the dying mount is abandoned. */
void echo_stop(void);

/* From events_cache_event (sync thread, no lock): queues a remote event; path is the entry's
 * mount path (NULL: it cannot be named, nothing is replayed). Only enqueues. Returns whether
 * it was queued (a queued delete is also carried to the kernel by the echo, whatever happens). */
bool echo_cache_event(const cache_event *ev, const char *path);

/* ---- ops.c hooks: each returns true when the request is the echo's own and was answered ---- */
bool echo_lookup(fuse_req_t req, uint64_t parent, const char *name);
bool echo_create(fuse_req_t req, uint64_t parent, const char *name, struct fuse_file_info *fi);
bool echo_mkdir(fuse_req_t req, uint64_t parent, const char *name);
bool echo_unlink(fuse_req_t req, uint64_t parent, const char *name);   /* unlink and rmdir */
bool echo_open(fuse_req_t req, uint64_t ino, struct fuse_file_info *fi);
/* On an echo handle (pid may be 0 for flush/release: the handle tells). */
bool echo_write(fuse_req_t req, size_t size, struct fuse_file_info *fi);
bool echo_flush(fuse_req_t req, struct fuse_file_info *fi);
bool echo_release(fuse_req_t req, struct fuse_file_info *fi);
/* Any other modifying request from the echo thread: refused (nothing reaches etcd). */
bool echo_refuse(fuse_req_t req);

#endif

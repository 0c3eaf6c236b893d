/* ops.h — what fs/'s files share: the mount's state, the FUSE low-level operation table
 * (ops.c), open file handles (handle.c), the kernel notifier (notify.c) and logging (main.c).
 * Inode numbers are the cache's own (FUSE_ROOT_ID == CACHE_ROOT_INO). */
#ifndef ETCDFS_FS_OPS_H
#define ETCDFS_FS_OPS_H

#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>

#include "../cache/cache.h"
#include "../client/etcd.h"

/* Remote changes are pushed to the kernel by notify.c, so the kernel may trust what it has. */
#define FS_TIMEOUT 3600.0
/* Writes beyond this are refused before they reach etcd (which refuses far smaller ones). */
#define FS_MAX_VALUE (64u << 20)

typedef struct fs_state {
    cache *cache;
    etcd_client *client;
    struct fuse_session *se;
    uid_t uid;
    gid_t gid;
    mode_t file_mode, dir_mode;     /* permission bits, umask applied */
    bool read_only;
    bool debug;
    uint64_t quota;
    int mnt_id;                     /* our mount's id (/proc/self/mountinfo), -1 unknown */
    const uint8_t *prefix;          /* for statfs's key count */
    size_t prefix_len;
    void (*on_init)(struct fs_state *st);   /* main.c: the mount answers (FUSE_INIT) */
} fs_state;

extern const struct fuse_lowlevel_ops fs_ops;

/* ---- logging (main.c): stderr in the foreground, syslog once daemonized ---------------- */
extern bool fs_log_debug;
void fs_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define fs_dbg(...) do { if (fs_log_debug) fs_log(LOG_DEBUG, __VA_ARGS__); } while (0)

/* The key of an inode, printable (non-printing bytes as \xNN), for log lines; never a value.
 * Returns buf. */
const char *fs_key_str(fs_state *st, uint64_t ino, char *buf, size_t len);

/* ---- open files (handle.c) ------------------------------------------------------------- */
typedef struct fs_handle fs_handle;

/* Read: a snapshot of the whole value, served until release. */
int handle_open_read(fs_state *st, uint64_t ino, fs_handle **out);
/* Write: a private buffer with the current value (empty when trunc or is_new). Dirty from the
 * start when it must be saved even if nothing is written: a new file, or a truncated
 * non-empty one. */
int handle_open_write(fs_state *st, uint64_t ino, const cache_attr *a, bool trunc, bool is_new,
                      fs_handle **out);
bool handle_writable(const fs_handle *h);
/* Values that change are served to readers with direct_io when longer than one page: page-cache
 * reads come as page-sized requests and are cut to the kernel's file size, which follows the
 * newest value, so a change landing between two of them would clip or pad the old value. A
 * direct read costs a READ request each time, so only keys changed since the mount loaded, in
 * the last FS_HOT_SECONDS, pay it; the rest of the keyspace keeps the page cache. */
#define FS_DIRECT_IO_MIN 4096
#define FS_HOT_SECONDS 60
extern int64_t fs_loaded_revision;   /* the cache's revision once the mount had loaded */
bool handle_direct_io(const fs_handle *h);
/* Replies to req itself (the data lives under the handle's lock). */
void handle_read(fs_handle *h, fuse_req_t req, size_t size, off_t off);
/* Returns bytes written or -errno. */
long handle_write(fs_handle *h, const char *buf, size_t size, off_t off);
int handle_truncate(fs_handle *h, uint64_t size);
/* fsync: one cache_write of the buffer when dirty. -errno from the write. */
int handle_commit(fs_handle *h);
/* flush (each close(2)): as handle_commit, unless process pid still holds another writable fd
 * on the file: the shell's `echo x >f` opens, dup2()s and closes the first fd before writing,
 * and saving then would Put an empty value first. The last close saves. */
int handle_flush(fs_handle *h, pid_t pid);
/* Saves what a failed or skipped flush left dirty, then frees. */
void handle_release(fs_handle *h);
/* At unmount: saves every buffer still dirty (files the kernel never released). */
void handle_commit_all(void);
/* Size of the newest open write buffer of ino (the kernel must see what was written). */
bool handle_ino_size(uint64_t ino, uint64_t *size);
/* truncate(2) on a path while a write handle is open: applies to that buffer. -ENOENT if
 * there is none. */
int handle_truncate_ino(uint64_t ino, uint64_t size);

/* ---- kernel notifications (notify.c) --------------------------------------------------- */
/* Starts the notifier thread; cache events are dropped until notify_activate. */
int notify_start(fs_state *st);
void notify_activate(void);
/* The cache listener (registered with cache_set_listener). Only enqueues. */
void notify_cache_event(void *arg, const cache_event *ev);
/* Stops and joins the thread; later events are dropped. */
void notify_stop(void);
/* Bumped by every cache event (before it is queued): a listing taken after reading a value of
 * it is current until the value changes (ops.c reuses directory snapshots on that rule). */
uint64_t notify_generation(void);

#endif

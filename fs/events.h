/* events.h — MNT/.cluster/events: every change of a file as one line ("PUT <path> <rev>",
 * "DELETE <path> <rev>"), streamed to each open reader from the moment it opened (tail -f).
 * Also the one entry point for cache events besides the kernel notifier: it names each event
 * (mount path) once and hands remote ones to the inotify echo (echo.c). */
#ifndef ETCDFS_FS_EVENTS_H
#define ETCDFS_FS_EVENTS_H

#include "ops.h"

#define EVENTS_MAX_READERS 16          /* each blocked read holds a FUSE worker */
#define EVENTS_MAX_LINES 65536         /* per reader backlog; beyond: "OVERFLOW" */
#define EVENTS_MAX_BYTES (4u << 20)

typedef struct events_reader events_reader;

/* Before the listener is registered. */
void events_init(fs_state *st);
/* Wakes every blocked reader for good (unmount, signal): reads then return end of file. */
void events_shutdown(void);

/* The cache listener's second half (called from notify_cache_event, sync thread, no lock
 * held): formats the line for every reader and passes remote events on to echo.c. Returns
 * true when the echo took a DELETED event: it will remove the entry from the kernel itself
 * (the notifier must then only invalidate: fuse_lowlevel_notify_delete marks a directory
 * S_DEAD, and the echo's rmdir of that watched directory could no longer happen). */
bool events_cache_event(const cache_event *ev);

/* -EMFILE beyond EVENTS_MAX_READERS. */
int events_open(events_reader **out);
/* Replies to req itself: blocks (interruptibly) until at least one byte is queued, then
 * returns up to size bytes. End of file only after events_shutdown. */
void events_read(events_reader *r, fuse_req_t req, size_t size);
void events_release(events_reader *r);

/* The mount path of an event ("/a/b%2Fc", relative to the mount root), malloc'd; NULL when
 * it cannot be named. Keeps the directory names it learns (sync thread only). */
char *events_path(const cache_event *ev);

#endif

/* scratch.h — scratch files: editor swap files, backups, probes and the temporaries of
 * `sed -i` and rsync, which work as files for their program but live only in the mount's
 * memory (never a key), so that one save is one Put. The rule deciding what is scratch, the
 * registry of scratch inodes and their contents, and the hooks ops.c/handle.c call.
 * docs/EDITORS.md describes the rule and the -o scratch= / -o scratch_excl= options. */
#ifndef ETCDFS_FS_SCRATCH_H
#define ETCDFS_FS_SCRATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "../cache/cache.h"

struct fs_state;

/* The default rule, as -o scratch= takes it: ':'-separated fnmatch globs (extglob), each
 * optionally restricted to names created by given programs ("GLOB@prog/prog"). */
#define SCRATCH_DEFAULT \
    ".*.sw?:.*.sw??:*~:+([0-9])@vim/vi/nvim/view/ex/rvim/rview/vimdiff/gvim/vim.basic/" \
    "vim.tiny/vim.nox/vim.gtk/vim.gtk3:sed??????@sed:.*.??????@rsync"

/* Replaces the rule (NULL: the default; "": nothing is scratch) and the exclusions (globs
 * never scratch; NULL or "": none). -EINVAL with a message in err. */
int scratch_configure(const char *rule, const char *excl, char *err, size_t errlen);

/* Whether a new file called name, made by process pid, is scratch. */
bool scratch_name(const char *name, pid_t pid);
bool scratch_is(uint64_t ino);

/* ---- handle.c: contents of scratch files -------------------------------------------- */
/* The content (never NULL on success; release with cache_value_put). -ENOENT: not scratch. */
int scratch_snapshot(uint64_t ino, cache_value **out);
/* Replaces the content (a save of a scratch file). -ENOENT: not scratch. */
int scratch_store(uint64_t ino, const void *data, size_t len);
int scratch_truncate(uint64_t ino, uint64_t size);

/* ---- ops.c hooks ---------------------------------------------------------------------- */
/* Size and mtime of a scratch file (the cache knows it only as an empty local node). */
bool scratch_attr(uint64_t ino, uint64_t *size, struct timespec *mtime);
/* After cache_create of parent/name by pid: registers the node when the name is scratch
 * (returns true), and gives a re-created file the revision its previous self was read at
 * (a->mod_revision, for -o conflict=fail). */
bool scratch_created(struct fs_state *st, pid_t pid, uint64_t parent, const char *name,
                     cache_attr *a);
/* A read open by pid of ino at revision rev: a later write open by the same process compares
 * with it (the editor read the file then). */
void scratch_note_read(pid_t pid, uint64_t ino, int64_t rev);
/* A write open by pid: the revision its process read the file at (or a->mod_revision). */
void scratch_base_rev(pid_t pid, cache_attr *a);
/* unlink by pid: done here (0 or -errno: `install` unlinks and writes the name again, which
 * becomes one Put); 1: do the ordinary cache_unlink. */
int scratch_unlink(struct fs_state *st, pid_t pid, uint64_t parent, const char *name);
/* Whether parent/name was unlinked or renamed away with its key left in etcd: a create of it
 * (even O_EXCL) rewrites that key. */
bool scratch_ghost(uint64_t parent, const char *name);
/* rename involving a scratch file: done here (0 or -errno); 1: an ordinary rename. */
int scratch_rename(struct fs_state *st, pid_t pid, uint64_t parent, const char *name,
                   uint64_t newparent, const char *newname, unsigned flags);

#endif

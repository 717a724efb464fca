/* snapshot_file.h: the VM state file of a snapshot directory: tagged sections, checksummed. */
#ifndef VMSTACK_SNAPSHOT_FILE_H
#define VMSTACK_SNAPSHOT_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A snapshot is a directory:
 *
 *   DIR/state    this file: the machine's configuration and the state of every vCPU,
 *                interrupt controller and device (docs/snapshot.md lists the sections)
 *   DIR/memory   guest RAM, byte for byte, as a sparse file (untouched pages are holes)
 *
 * The state file, all integers little-endian:
 *
 *   magic    "VMSTACK-STATE\0\0\0"  16 bytes
 *   version  u32   SNAP_VERSION; any other version is refused (no guessing at layouts)
 *   count    u32   number of sections
 *   then `count` sections, each:
 *     tag      char[16]  NUL-padded name ("vcpu.regs", "virtio-blk")
 *     instance u32       which one (vCPU number, device index)
 *     length   u32       bytes of data that follow
 *     data
 *   crc32    u32   zlib crc32 of everything before it
 *
 * A section's data is a fixed-layout struct of fixed-width fields defined next to the
 * code that owns it; a reader insists on the exact length it expects, so a layout
 * change must bump SNAP_VERSION. Readers check every length and count before using it:
 * the file comes from disk and is as untrusted as an image file.
 */

#define SNAP_MAGIC      "VMSTACK-STATE\0\0\0"
#define SNAP_VERSION    1
#define SNAP_TAG_LEN    16
#define SNAP_MAX_FILE   (64u << 20) /* a state file is kilobytes; more means garbage */
#define SNAP_STATE_NAME "state"
#define SNAP_MEM_NAME   "memory"

struct snap_writer;
struct snap_reader;

/* An empty in-memory state; NULL without memory. */
struct snap_writer *snap_writer_new(void);
void snap_writer_free(struct snap_writer *w);
/* Appends a section (tag at most 15 characters). Returns 0 or -ENOMEM / -EINVAL. */
int snap_put(struct snap_writer *w, const char *tag, uint32_t instance, const void *data,
             size_t len);
/* Writes DIR/state (through a temporary file, fsync, rename). Returns 0 or -errno with
 * a one-line message in err. */
int snap_writer_commit(struct snap_writer *w, const char *dir, char *err, size_t errlen);

/* Reads and checks DIR/state (magic, version, checksum, every section's bounds). NULL
 * with a one-line message in err naming the file and what is wrong. */
struct snap_reader *snap_reader_open(const char *dir, char *err, size_t errlen);
/* The same checks on a buffer (tests, fuzzing); `what` names it in errors. */
struct snap_reader *snap_reader_parse(const void *buf, size_t len, const char *what, char *err,
                                      size_t errlen);
void snap_reader_free(struct snap_reader *r);
/* A section's data and length, or NULL if the file has no such section. */
const void *snap_get(const struct snap_reader *r, const char *tag, uint32_t instance, size_t *len);
/* snap_get() insisting on exactly `len` bytes: copies into out and returns 0, or -ENOENT
 * (absent) / -EINVAL (other length) with a line in err naming the section. */
int snap_get_exact(const struct snap_reader *r, const char *tag, uint32_t instance, void *out,
                   size_t len, char *err, size_t errlen);
/* What the reader was opened on (for messages). */
const char *snap_reader_name(const struct snap_reader *r);

#endif

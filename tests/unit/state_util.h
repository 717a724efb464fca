/* state_util.h: device snapshot test helpers: a writer read back, a section tampered with. */
#ifndef VMSTACK_TEST_STATE_UTIL_H
#define VMSTACK_TEST_STATE_UTIL_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapshot_file.h"
#include "test.h"
#include "util.h"

/* What w holds, committed to a temporary directory and read back (the files removed). */
static inline struct snap_reader *st_reopen(struct snap_writer *w)
{
	char dir[] = "/tmp/vmstack-devstate-XXXXXX", path[64], err[256] = "";
	struct snap_reader *r = NULL;

	if (!mkdtemp(dir)) {
		CHECK(!"mkdtemp");
		return NULL;
	}
	if (snap_writer_commit(w, dir, err, sizeof(err)) == 0)
		r = snap_reader_open(dir, err, sizeof(err));
	if (!r)
		fprintf(stderr, "st_reopen: %s\n", err);
	CHECK(r != NULL);
	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_STATE_NAME);
	unlink(path);
	rmdir(dir);
	return r;
}

/* A section of a state, by tag and instance. */
struct st_sect {
	const char *tag;
	uint32_t inst;
};

#define ST_DROP (-1L) /* st_edit newlen: leave the section out */
#define ST_SAME (-2L) /* st_edit newlen: keep its length */

/*
 * A state with the sections `list` of r, the one named (tag, inst) edited: `len` bytes
 * at `off` replaced by `bytes` (len may be 0), then cut or zero-extended to newlen.
 */
static inline struct snap_reader *st_edit(const struct snap_reader *r, const struct st_sect *list,
                                          unsigned n, const char *tag, uint32_t inst, size_t off,
                                          const void *bytes, size_t len, long newlen)
{
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *out;

	CHECK(w != NULL);
	if (!w)
		return NULL;
	for (unsigned i = 0; i < n; i++) {
		size_t slen, cap;
		const void *p = snap_get(r, list[i].tag, list[i].inst, &slen);
		uint8_t *copy;

		CHECK(p != NULL);
		if (!p)
			continue;
		if (strcmp(list[i].tag, tag) != 0 || list[i].inst != inst) {
			CHECK_EQ(snap_put(w, list[i].tag, list[i].inst, p, slen), 0);
			continue;
		}
		if (newlen == ST_DROP)
			continue;
		cap = newlen >= 0 ? (size_t)newlen : slen;
		copy = calloc(1, MAX(cap, slen) + 1);
		memcpy(copy, p, slen);
		CHECK(off + len <= slen);
		if (len && off + len <= slen)
			memcpy(copy + off, bytes, len);
		CHECK_EQ(snap_put(w, tag, inst, copy, cap), 0);
		free(copy);
	}
	out = st_reopen(w);
	snap_writer_free(w);
	return out;
}

/* The same with a single byte, or a little-endian field of 2, 4 or 8 bytes. */
static inline struct snap_reader *st_poke(const struct snap_reader *r, const struct st_sect *list,
                                          unsigned n, const char *tag, uint32_t inst, size_t off,
                                          uint64_t val, size_t width)
{
	uint8_t b[8];

	for (size_t i = 0; i < width && i < 8; i++)
		b[i] = (uint8_t)(val >> (8 * i));
	return st_edit(r, list, n, tag, inst, off, b, width, ST_SAME);
}

#endif

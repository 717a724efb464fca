/* snapshot_file.c: writes and checks the state file of a snapshot (format in the header). */
#include "snapshot_file.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "util.h"

#define HDR_LEN  (16 + 4 + 4)
#define SECT_HDR (SNAP_TAG_LEN + 4 + 4)

struct snap_writer {
	uint8_t *buf;
	size_t len, cap;
	uint32_t count;
};

struct snap_section {
	char tag[SNAP_TAG_LEN];
	uint32_t instance;
	uint32_t len;
	const uint8_t *data;
};

struct snap_reader {
	char *name;
	uint8_t *buf;
	struct snap_section *s;
	uint32_t count;
};

struct snap_writer *snap_writer_new(void)
{
	struct snap_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->cap = 4096;
	w->buf = malloc(w->cap);
	if (!w->buf) {
		free(w);
		return NULL;
	}
	memcpy(w->buf, SNAP_MAGIC, 16);
	put_le32(w->buf + 16, SNAP_VERSION);
	w->len = HDR_LEN;
	return w;
}

void snap_writer_free(struct snap_writer *w)
{
	if (!w)
		return;
	free(w->buf);
	free(w);
}

static int reserve(struct snap_writer *w, size_t more)
{
	size_t cap = w->cap;
	uint8_t *nb;

	if (more > SNAP_MAX_FILE || w->len + more > SNAP_MAX_FILE)
		return -EFBIG;
	while (cap < w->len + more)
		cap *= 2;
	if (cap == w->cap)
		return 0;
	nb = realloc(w->buf, cap);
	if (!nb)
		return -ENOMEM;
	w->buf = nb;
	w->cap = cap;
	return 0;
}

int snap_put(struct snap_writer *w, const char *tag, uint32_t instance, const void *data,
             size_t len)
{
	size_t tlen = strlen(tag);
	int r;

	if (!tlen || tlen >= SNAP_TAG_LEN)
		return -EINVAL;
	r = reserve(w, SECT_HDR + len + 4);
	if (r < 0)
		return r;
	memset(w->buf + w->len, 0, SNAP_TAG_LEN);
	memcpy(w->buf + w->len, tag, tlen);
	put_le32(w->buf + w->len + SNAP_TAG_LEN, instance);
	put_le32(w->buf + w->len + SNAP_TAG_LEN + 4, (uint32_t)len);
	if (len)
		memcpy(w->buf + w->len + SECT_HDR, data, len);
	w->len += SECT_HDR + len;
	w->count++;
	return 0;
}

int snap_writer_commit(struct snap_writer *w, const char *dir, char *err, size_t errlen)
{
	char path[4096], tmp[4096];
	uint32_t crc;
	int fd, r;

	if (snprintf(path, sizeof(path), "%s/%s", dir, SNAP_STATE_NAME) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, SNAP_STATE_NAME) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	r = reserve(w, 4);
	if (r < 0) {
		snprintf(err, errlen, "%s: state too large: %s", path, strerror(-r));
		return r;
	}
	put_le32(w->buf + 20, w->count);
	crc = (uint32_t)crc32(0, w->buf, (uInt)w->len);
	put_le32(w->buf + w->len, crc);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return r;
	}
	r = pwrite_all(fd, w->buf, w->len + 4, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	}
	return r;
}

struct snap_reader *snap_reader_parse(const void *data, size_t len, const char *what, char *err,
                                      size_t errlen)
{
	struct snap_reader *r;
	const uint8_t *b = data;
	size_t pos = HDR_LEN, end;
	uint32_t version, count, crc;

	if (len < HDR_LEN + 4 || memcmp(b, SNAP_MAGIC, 16) != 0) {
		snprintf(err, errlen, "%s: not a vmstack snapshot state file", what);
		return NULL;
	}
	version = get_le32(b + 16);
	if (version != SNAP_VERSION) {
		snprintf(err, errlen,
		         "%s: snapshot format version %u, this vmstack-vm reads version %u — "
		         "restore it with the vmstack-vm that saved it",
		         what, version, SNAP_VERSION);
		return NULL;
	}
	end = len - 4;
	crc = (uint32_t)crc32(0, b, (uInt)end);
	if (crc != get_le32(b + end)) {
		snprintf(err, errlen, "%s: checksum mismatch — the file is corrupt or truncated",
		         what);
		return NULL;
	}
	count = get_le32(b + 20);
	if (count > end / SECT_HDR) {
		snprintf(err, errlen, "%s: %u sections cannot fit in %zu bytes", what, count, len);
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (r)
		r->s = calloc(count ? count : 1, sizeof(*r->s));
	if (r)
		r->buf = malloc(len);
	if (r)
		r->name = strdup(what);
	if (!r || !r->s || !r->buf || !r->name) {
		snap_reader_free(r);
		snprintf(err, errlen, "%s: out of memory", what);
		return NULL;
	}
	memcpy(r->buf, b, len);
	for (uint32_t i = 0; i < count; i++) {
		struct snap_section *s = &r->s[i];
		uint32_t slen;

		if (end - pos < SECT_HDR)
			goto bad;
		memcpy(s->tag, r->buf + pos, SNAP_TAG_LEN);
		if (s->tag[SNAP_TAG_LEN - 1] != '\0' || s->tag[0] == '\0')
			goto bad;
		s->instance = get_le32(r->buf + pos + SNAP_TAG_LEN);
		slen = get_le32(r->buf + pos + SNAP_TAG_LEN + 4);
		pos += SECT_HDR;
		if (slen > end - pos)
			goto bad;
		s->len = slen;
		s->data = r->buf + pos;
		pos += slen;
		r->count++;
	}
	if (pos != end)
		goto bad;
	return r;
bad:
	snprintf(err, errlen, "%s: section %u of %u is malformed (offset %zu)", what, r->count + 1,
	         count, pos);
	snap_reader_free(r);
	return NULL;
}

struct snap_reader *snap_reader_open(const char *dir, char *err, size_t errlen)
{
	char path[4096];
	struct snap_reader *r;
	const uint8_t *buf;
	size_t len;
	int ret;

	if (snprintf(path, sizeof(path), "%s/%s", dir, SNAP_STATE_NAME) >= (int)sizeof(path)) {
		snprintf(err, errlen, "%s: path too long", dir);
		return NULL;
	}
	ret = map_file(path, &buf, &len);
	if (ret == -ENOENT) {
		snprintf(err, errlen, "%s: no such file — is %s a snapshot directory?", path, dir);
		return NULL;
	}
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		return NULL;
	}
	if (len > SNAP_MAX_FILE) {
		snprintf(err, errlen, "%s: %zu bytes is too large for a snapshot state file", path,
		         len);
		unmap_file(buf, len);
		return NULL;
	}
	r = snap_reader_parse(buf, len, path, err, errlen);
	unmap_file(buf, len);
	return r;
}

void snap_reader_free(struct snap_reader *r)
{
	if (!r)
		return;
	free(r->name);
	free(r->buf);
	free(r->s);
	free(r);
}

const void *snap_get(const struct snap_reader *r, const char *tag, uint32_t instance, size_t *len)
{
	for (uint32_t i = 0; i < r->count; i++) {
		if (r->s[i].instance == instance && strncmp(r->s[i].tag, tag, SNAP_TAG_LEN) == 0) {
			*len = r->s[i].len;
			return r->s[i].data;
		}
	}
	*len = 0;
	return NULL;
}

int snap_get_exact(const struct snap_reader *r, const char *tag, uint32_t instance, void *out,
                   size_t len, char *err, size_t errlen)
{
	size_t have;
	const void *p = snap_get(r, tag, instance, &have);

	if (!p) {
		snprintf(err, errlen, "%s: section %s %u is missing", r->name, tag, instance);
		return -ENOENT;
	}
	if (have != len) {
		snprintf(err, errlen, "%s: section %s %u has %zu bytes, expected %zu", r->name, tag,
		         instance, have, len);
		return -EINVAL;
	}
	memcpy(out, p, len);
	return 0;
}

const char *snap_reader_name(const struct snap_reader *r)
{
	return r->name;
}

/* qcow2_io.c: qcow2 guest I/O, the reading side: cluster lookup, reads (incl. compressed
 * and backing), block status and the monitor's map_io. Writes are in qcow2_write.c. */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "log.h"
#include "qcow2_internal.h"
#include "util.h"

/* ---- iovec helpers ---- */

int qcow2_iovc_take(struct iovc *c, uint64_t n, struct iovec *out)
{
	int k = 0;

	while (n && c->i < c->cnt) {
		size_t t = MIN(c->iov[c->i].iov_len - c->pos, n);

		if (t)
			out[k++] = (struct iovec){(uint8_t *)c->iov[c->i].iov_base + c->pos, t};
		c->pos += t;
		n -= t;
		if (c->pos == c->iov[c->i].iov_len) {
			c->i++;
			c->pos = 0;
		}
	}
	return k;
}

static void iov_fill(const struct iovec *iov, int cnt, const uint8_t *src)
{
	for (int i = 0; i < cnt; i++) {
		if (src) {
			memcpy(iov[i].iov_base, src, iov[i].iov_len);
			src += iov[i].iov_len;
		} else {
			memset(iov[i].iov_base, 0, iov[i].iov_len);
		}
	}
}

/* Full vectored I/O; reads past the end of the file read zeros. iov is consumed. */
int qcow2_io_full(int fd, struct iovec *iov, int cnt, uint64_t off, bool write)
{
	while (cnt > 0) {
		ssize_t r = write ? pwritev(fd, iov, MIN(cnt, IOV_MAX), (off_t)off)
		                  : preadv(fd, iov, MIN(cnt, IOV_MAX), (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0) {
			if (write)
				return -EIO;
			iov_fill(iov, cnt, NULL);
			return 0;
		}
		off += (uint64_t)r;
		while (cnt > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

/* ---- lookup ---- */

/* L2 table offset for L1 index i: 0 if none, -EIO if the entry is bad. */
int64_t qcow2_l1_entry(struct qcow2 *q, uint64_t i, bool *copied)
{
	uint64_t e, off;

	if (i >= q->l1_size)
		return 0;
	e = be64toh(q->l1[i]);
	off = e & QCOW2_L1E_OFFSET_MASK;
	if (copied)
		*copied = e & QCOW2_OFLAG_COPIED;
	if (e & ~(QCOW2_L1E_OFFSET_MASK | QCOW2_OFLAG_COPIED))
		return qcow2_corrupt(q, "L1 table", i, e);
	if (!off)
		return 0;
	if ((off & (q->cluster_size - 1)) || off > q->file_end - q->cluster_size)
		return qcow2_corrupt(q, "L1 table", i, e);
	return (int64_t)off;
}

void qcow2_compressed_desc(const struct qcow2 *q, uint64_t e, uint64_t *coff, uint64_t *csize)
{
	unsigned x = 62 - (q->cluster_bits - 8);
	uint64_t nb = ((e >> x) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;

	*coff = e & ((1ull << x) - 1);
	*csize = nb * 512 - (*coff & 511);
}

/* Kind and host offset of an L2 entry; -EIO if it is bad (logged when log is set). */
int qcow2_classify(struct qcow2 *q, uint64_t e, uint64_t idx, bool log, enum q2_kind *kind,
                   uint64_t *host)
{
	uint64_t off;

	if (e & QCOW2_OFLAG_COMPRESSED) {
		uint64_t csize;

		qcow2_compressed_desc(q, e, &off, &csize);
		if ((e & QCOW2_OFLAG_COPIED) || off < q->cluster_size || off > q->file_end ||
		    csize > q->file_end - off)
			goto bad;
		*kind = Q2_COMPRESSED;
		*host = off;
		return 0;
	}
	off = e & QCOW2_L2E_OFFSET_MASK;
	if ((e & ~(QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO)) ||
	    (off & (q->cluster_size - 1)) || (off && off > q->file_end - q->cluster_size))
		goto bad;
	*host = off;
	if (e & QCOW2_OFLAG_ZERO)
		*kind = Q2_ZERO;
	else
		*kind = off ? Q2_NORMAL : Q2_UNALLOC;
	return 0;
bad:
	return log ? qcow2_corrupt(q, "L2 table", idx, e) : -EIO;
}

/*
 * What [off, off+len) is in this image, as far as it is uniform: len is cut at the end of
 * the L2 table's range, at a change of kind, at a discontinuity of NORMAL host offsets or
 * of their COPIED flag, and after one compressed cluster.
 */
int qcow2_lookup(struct qcow2 *q, uint64_t off, uint64_t len, struct q2_map *m)
{
	unsigned cb = q->cluster_bits;
	uint64_t cs = q->cluster_size, l1i = off >> (cb + q->l2_bits);
	uint64_t tend = (l1i + 1) << (cb + q->l2_bits), limit = MIN(len, tend - off), *tab;
	uint64_t j = (off >> cb) & (q->l2_entries - 1), host;
	int64_t l2off = qcow2_l1_entry(q, l1i, NULL);
	enum q2_kind k;
	int ret;

	*m = (struct q2_map){.kind = Q2_UNALLOC, .bytes = limit};
	if (l2off <= 0)
		return (int)l2off;
	ret = qcow2_cache_get(q, q->l2_cache, (uint64_t)l2off, true, &tab);
	if (ret < 0)
		return ret;
	m->l2e = be64toh(tab[j]);
	ret = qcow2_classify(q, m->l2e, j, true, &m->kind, &host);
	if (ret < 0)
		return ret;
	m->copied = m->l2e & QCOW2_OFLAG_COPIED;
	m->host = m->kind == Q2_NORMAL ? host + (off & (cs - 1)) : host;
	m->bytes = MIN(limit, cs - (off & (cs - 1)));
	if (m->kind == Q2_COMPRESSED)
		return 0;
	while (m->bytes < limit) {
		uint64_t e = be64toh(tab[++j]);

		if (qcow2_classify(q, e, j, false, &k, &host) < 0 || k != m->kind)
			break;
		if (k == Q2_NORMAL &&
		    (host != m->host + m->bytes || !!(e & QCOW2_OFLAG_COPIED) != m->copied))
			break;
		m->bytes += MIN(cs, limit - m->bytes);
	}
	return 0;
}

/* ---- reads ---- */

static int decompress(struct qcow2 *q, uint64_t e)
{
	uint64_t coff, csize, cs = q->cluster_size;
	int ret;

	if (q->dbuf_desc == e && q->dbuf)
		return 0;
	qcow2_compressed_desc(q, e, &coff, &csize);
	if (!q->cbuf && posix_memalign((void **)&q->cbuf, 4096, 2 * cs))
		return -ENOMEM;
	if (!q->dbuf && posix_memalign((void **)&q->dbuf, 4096, cs))
		return -ENOMEM;
	q->dbuf_desc = 0;
	{
		struct iovec v = {q->cbuf, csize};

		ret = qcow2_io_full(img_fd(q->img), &v, 1, coff, false);
		if (ret < 0)
			return ret;
	}
	if (q->compression_type == 0) {
		z_stream s = {0};

		if (inflateInit2(&s, -12) != Z_OK)
			return -ENOMEM;
		s.next_in = q->cbuf;
		s.avail_in = (uInt)csize;
		s.next_out = q->dbuf;
		s.avail_out = (uInt)cs;
		ret = inflate(&s, Z_FINISH);
		inflateEnd(&s);
		ret = (ret == Z_STREAM_END || ret == Z_BUF_ERROR) && s.avail_out == 0 ? 0 : -EIO;
	} else {
		ZSTD_inBuffer in = {q->cbuf, csize, 0};
		ZSTD_outBuffer out = {q->dbuf, cs, 0};

		if (!q->zstd_dctx && !(q->zstd_dctx = ZSTD_createDCtx()))
			return -ENOMEM;
		ZSTD_DCtx_reset(q->zstd_dctx, ZSTD_reset_session_only);
		ret = 0;
		while (out.pos < out.size) {
			size_t in_pos = in.pos, out_pos = out.pos;
			size_t z = ZSTD_decompressStream(q->zstd_dctx, &out, &in);

			if (ZSTD_isError(z) || (in.pos <= in_pos && out.pos <= out_pos)) {
				ret = -EIO;
				break;
			}
		}
	}
	if (ret < 0) {
		log_ratelimited(
		    &q->corrupt_rl, LOG_ERR,
		    "%s: compressed cluster at 0x%llx (%llu bytes) does not decompress — "
		    "the image is corrupt; run `vmstack img check`",
		    img_path(q->img), (unsigned long long)coff, (unsigned long long)csize);
		return ret;
	}
	q->dbuf_desc = e;
	return 0;
}

/* Reads guest range [off, off+n) from the backing file into iov; zeros past its end. */
static int read_backing(struct qcow2 *q, struct iovec *iov, int cnt, uint64_t off, uint64_t n)
{
	struct img *b = img_backing(q->img);
	uint64_t bsize = b ? img_size(b) : 0, part = off < bsize ? MIN(n, bsize - off) : 0;
	struct iovc c = {iov, cnt, 0, 0};
	struct iovec *tmp;
	int k, ret = 0;

	if (!part) {
		iov_fill(iov, cnt, NULL);
		return 0;
	}
	tmp = malloc(sizeof(*tmp) * (size_t)cnt);
	if (!tmp)
		return -ENOMEM;
	k = qcow2_iovc_take(&c, part, tmp);
	ret = img_preadv(b, tmp, k, off);
	if (ret == 0 && part < n) {
		k = qcow2_iovc_take(&c, n - part, tmp);
		iov_fill(tmp, k, NULL);
	}
	free(tmp);
	return ret;
}

/* Reads the current content of the guest cluster at goff (entry e) into buf. */
int qcow2_read_cluster(struct qcow2 *q, uint64_t goff, uint64_t e, uint8_t *buf)
{
	uint64_t cs = q->cluster_size, host;
	struct iovec v = {buf, cs};
	enum q2_kind k;
	int ret = qcow2_classify(q, e, 0, false, &k, &host);

	if (ret < 0)
		return ret;
	switch (k) {
	case Q2_UNALLOC:
		return read_backing(q, &v, 1, goff, cs);
	case Q2_ZERO:
		memset(buf, 0, cs);
		return 0;
	case Q2_NORMAL:
		return qcow2_io_full(img_fd(q->img), &v, 1, host, false);
	case Q2_COMPRESSED:
		ret = decompress(q, e);
		if (ret == 0)
			memcpy(buf, q->dbuf, cs);
		return ret;
	}
	return -EIO;
}

struct iovec *qcow2_iov_scratch(struct iovec *stack, size_t nstack, int cnt)
{
	if ((size_t)cnt + 2 <= nstack)
		return stack;
	return malloc(sizeof(*stack) * ((size_t)cnt + 2));
}

int qcow2_preadv(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct qcow2 *q = im->q;
	struct iovec stack[34], *out = qcow2_iov_scratch(stack, ARRAY_SIZE(stack), iovcnt);
	struct iovc c = {iov, iovcnt, 0, 0};
	uint64_t total = 0, done = 0;
	int ret = 0;

	if (!out)
		return -ENOMEM;
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	pthread_mutex_lock(&q->lock);
	while (done < total) {
		struct q2_map m;
		int k;

		ret = qcow2_lookup(q, off + done, total - done, &m);
		if (ret < 0)
			break;
		k = qcow2_iovc_take(&c, m.bytes, out);
		switch (m.kind) {
		case Q2_NORMAL:
			ret = qcow2_io_full(im->fd, out, k, m.host, false);
			break;
		case Q2_ZERO:
			iov_fill(out, k, NULL);
			break;
		case Q2_UNALLOC:
			ret = read_backing(q, out, k, off + done, m.bytes);
			break;
		case Q2_COMPRESSED:
			ret = decompress(q, m.l2e);
			if (ret == 0)
				iov_fill(out, k, q->dbuf + ((off + done) & (q->cluster_size - 1)));
			break;
		}
		if (ret < 0)
			break;
		done += m.bytes;
	}
	pthread_mutex_unlock(&q->lock);
	if (out != stack)
		free(out);
	return ret;
}

/* ---- status, map_io ---- */

int qcow2_block_status(struct img *im, uint64_t off, uint64_t len, struct img_extent *ext)
{
	struct qcow2 *q = im->q;
	struct q2_map m, n;
	int ret;

	pthread_mutex_lock(&q->lock);
	ret = qcow2_lookup(q, off, len, &m);
	if (ret < 0)
		goto out;
	*ext = (struct img_extent){.len = m.bytes};
	switch (m.kind) {
	case Q2_NORMAL:
		ext->kind = IMG_EXT_DATA;
		ext->host_off = m.host;
		break;
	case Q2_COMPRESSED:
		ext->kind = IMG_EXT_DATA;
		ext->compressed = true;
		goto out;
	case Q2_ZERO:
		ext->kind = IMG_EXT_ZERO;
		break;
	case Q2_UNALLOC:
		ext->kind = IMG_EXT_UNALLOC;
		break;
	}
	/* Extend across L2 tables while uniform. */
	while (ext->len < len) {
		if (qcow2_lookup(q, off + ext->len, len - ext->len, &n) < 0 || n.kind != m.kind)
			break;
		if (m.kind == Q2_NORMAL && n.host != ext->host_off + ext->len)
			break;
		ext->len += n.bytes;
	}
out:
	pthread_mutex_unlock(&q->lock);
	return ret;
}

int64_t qcow2_map_io(struct img *im, uint64_t off, uint64_t len, bool write, uint64_t *host_off)
{
	struct qcow2 *q;
	struct q2_map m;
	uint64_t done;
	int ret;

	if (!im || img_format(im) != IMG_FMT_QCOW2 || !len)
		return -EINVAL;
	q = im->q;
	if (off >= q->size || len > q->size - off)
		return -EINVAL;
	if (write && img_readonly(im))
		return -EROFS;
	pthread_mutex_lock(&q->lock);
	ret = qcow2_lookup(q, off, len, &m);
	if (ret < 0 || m.kind != Q2_NORMAL || (write && !m.copied)) {
		pthread_mutex_unlock(&q->lock);
		return ret < 0 ? ret : 0;
	}
	*host_off = m.host;
	done = m.bytes;
	/* Continue into the following L2 tables while the run goes on. */
	while (done < len) {
		struct q2_map n;

		if (qcow2_lookup(q, off + done, len - done, &n) < 0 || n.kind != Q2_NORMAL ||
		    n.host != m.host + done || (write && !n.copied))
			break;
		done += n.bytes;
	}
	pthread_mutex_unlock(&q->lock);
	return (int64_t)done;
}

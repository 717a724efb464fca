/* qcow2_io.c: qcow2 guest I/O: cluster lookup, reads (incl. compressed and backing),
 * allocating writes, write-zeroes, discard, block status and the monitor's map_io. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
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

/*
 * Crash consistency (kill -9 or power loss must leave at worst leaked clusters):
 *  1. refcount updates are written through (qcow2_refcount.c);
 *  2. a new data cluster is written in full (guest data plus the copy-on-write fill from
 *     the backing file or the old cluster) before its L2 entry is put in the cache;
 *  3. L2 tables are dirty in the cache only; one goes to the file after an fdatasync that
 *     covers every data and refcount write its entries depend on (q->need_sync);
 *  4. a new or copied L2 table is written and synced before the L1 entry pointing to it;
 *  5. references dropped by an L2 change (copy-on-write away from a shared or compressed
 *     cluster) are decremented only at flush, after the tables are on disk.
 * Discard only punches holes in clusters that stay allocated (their L2 entries keep
 * pointing at them), and write-zeroes keeps allocated clusters allocated ("zero
 * allocated"): a cluster handed out by qcow2_map_io() is never reused while we run.
 */

#define Q2_MAX_FREES 4096 /* queued frees that force a flush */

enum q2_kind { Q2_UNALLOC, Q2_ZERO, Q2_NORMAL, Q2_COMPRESSED };

struct q2_map {
	enum q2_kind kind;
	uint64_t bytes; /* from off, uniform, within one L2 table's range */
	uint64_t host;  /* NORMAL: host offset of off; ZERO: preallocated cluster or 0 */
	bool copied;
	uint64_t l2e; /* the entry of off's cluster */
};

/* Zeros for COW fill and write-zeroes; never written. */
static const uint8_t zero_buf[2 * MiB];

static int zero_in_place(struct qcow2 *q, uint64_t host, uint64_t len, bool may_unmap);

/* ---- iovec helpers ---- */

struct iovc {
	const struct iovec *iov;
	int cnt, i;
	size_t pos;
};

static int iovc_take(struct iovc *c, uint64_t n, struct iovec *out)
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
static int io_full(int fd, struct iovec *iov, int cnt, uint64_t off, bool write)
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
static int64_t l1_entry(struct qcow2 *q, uint64_t i, bool *copied)
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

static void compressed_desc(const struct qcow2 *q, uint64_t e, uint64_t *coff, uint64_t *csize)
{
	unsigned x = 62 - (q->cluster_bits - 8);
	uint64_t nb = ((e >> x) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;

	*coff = e & ((1ull << x) - 1);
	*csize = nb * 512 - (*coff & 511);
}

/* Kind and host offset of an L2 entry; -EIO if it is bad (logged when log is set). */
static int classify(struct qcow2 *q, uint64_t e, uint64_t idx, bool log, enum q2_kind *kind,
                    uint64_t *host)
{
	uint64_t off;

	if (e & QCOW2_OFLAG_COMPRESSED) {
		uint64_t csize;

		compressed_desc(q, e, &off, &csize);
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
static int lookup(struct qcow2 *q, uint64_t off, uint64_t len, struct q2_map *m)
{
	unsigned cb = q->cluster_bits;
	uint64_t cs = q->cluster_size, l1i = off >> (cb + q->l2_bits);
	uint64_t tend = (l1i + 1) << (cb + q->l2_bits), limit = MIN(len, tend - off), *tab;
	uint64_t j = (off >> cb) & (q->l2_entries - 1), host;
	int64_t l2off = l1_entry(q, l1i, NULL);
	enum q2_kind k;
	int ret;

	*m = (struct q2_map){.kind = Q2_UNALLOC, .bytes = limit};
	if (l2off <= 0)
		return (int)l2off;
	ret = qcow2_cache_get(q, q->l2_cache, (uint64_t)l2off, true, &tab);
	if (ret < 0)
		return ret;
	m->l2e = be64toh(tab[j]);
	ret = classify(q, m->l2e, j, true, &m->kind, &host);
	if (ret < 0)
		return ret;
	m->copied = m->l2e & QCOW2_OFLAG_COPIED;
	m->host = m->kind == Q2_NORMAL ? host + (off & (cs - 1)) : host;
	m->bytes = MIN(limit, cs - (off & (cs - 1)));
	if (m->kind == Q2_COMPRESSED)
		return 0;
	while (m->bytes < limit) {
		uint64_t e = be64toh(tab[++j]);

		if (classify(q, e, j, false, &k, &host) < 0 || k != m->kind)
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
	compressed_desc(q, e, &coff, &csize);
	if (!q->cbuf && posix_memalign((void **)&q->cbuf, 4096, 2 * cs))
		return -ENOMEM;
	if (!q->dbuf && posix_memalign((void **)&q->dbuf, 4096, cs))
		return -ENOMEM;
	q->dbuf_desc = 0;
	{
		struct iovec v = {q->cbuf, csize};

		ret = io_full(img_fd(q->img), &v, 1, coff, false);
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
	k = iovc_take(&c, part, tmp);
	ret = img_preadv(b, tmp, k, off);
	if (ret == 0 && part < n) {
		k = iovc_take(&c, n - part, tmp);
		iov_fill(tmp, k, NULL);
	}
	free(tmp);
	return ret;
}

/* Reads the current content of the guest cluster at goff (entry e) into buf. */
static int read_cluster(struct qcow2 *q, uint64_t goff, uint64_t e, uint8_t *buf)
{
	uint64_t cs = q->cluster_size, host;
	struct iovec v = {buf, cs};
	enum q2_kind k;
	int ret = classify(q, e, 0, false, &k, &host);

	if (ret < 0)
		return ret;
	switch (k) {
	case Q2_UNALLOC:
		return read_backing(q, &v, 1, goff, cs);
	case Q2_ZERO:
		memset(buf, 0, cs);
		return 0;
	case Q2_NORMAL:
		return io_full(img_fd(q->img), &v, 1, host, false);
	case Q2_COMPRESSED:
		ret = decompress(q, e);
		if (ret == 0)
			memcpy(buf, q->dbuf, cs);
		return ret;
	}
	return -EIO;
}

static struct iovec *iov_scratch(struct iovec *stack, size_t nstack, int cnt)
{
	if ((size_t)cnt + 2 <= nstack)
		return stack;
	return malloc(sizeof(*stack) * ((size_t)cnt + 2));
}

int qcow2_preadv(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct qcow2 *q = im->q;
	struct iovec stack[34], *out = iov_scratch(stack, ARRAY_SIZE(stack), iovcnt);
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

		ret = lookup(q, off + done, total - done, &m);
		if (ret < 0)
			break;
		k = iovc_take(&c, m.bytes, out);
		switch (m.kind) {
		case Q2_NORMAL:
			ret = io_full(im->fd, out, k, m.host, false);
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

/* ---- writes ---- */

/* The L2 table for L1 index l1i, ready to be modified: allocated if absent, copied if
 * shared (crash rule 4). Returns its host offset. */
static int64_t l2_for_write(struct qcow2 *q, uint64_t l1i, uint64_t **tab)
{
	bool copied;
	int64_t old = l1_entry(q, l1i, &copied), off;
	int ret;

	if (old < 0)
		return old;
	if (old > 0 && copied) {
		ret = qcow2_cache_get(q, q->l2_cache, (uint64_t)old, true, tab);
		return ret < 0 ? ret : old;
	}
	if (old > 0) {
		ret = qcow2_cache_get(q, q->l2_cache, (uint64_t)old, true, tab);
		if (ret < 0)
			return ret;
	}
	off = qcow2_alloc_clusters(q, q->cluster_size);
	if (off < 0)
		return off;
	if (old > 0) {
		/* alloc touched only the refcount cache: *tab is still the old table */
		ret = qcow2_meta_write(q, (uint64_t)off, *tab, q->cluster_size);
	} else {
		ret = qcow2_cache_get(q, q->l2_cache, (uint64_t)off, false, tab);
		if (ret < 0)
			return ret;
		memset(*tab, 0, q->cluster_size);
		ret = qcow2_meta_write(q, (uint64_t)off, *tab, q->cluster_size);
	}
	if (ret == 0)
		ret = qcow2_sync(q);
	if (ret < 0) {
		if (old == 0)
			qcow2_cache_forget(q->l2_cache, (uint64_t)off);
		return ret;
	}
	if (old > 0)
		qcow2_cache_rename(q->l2_cache, *tab, (uint64_t)off);
	q->l1[l1i] = htobe64((uint64_t)off | QCOW2_OFLAG_COPIED);
	ret = qcow2_meta_write(q, q->l1_offset + l1i * 8, &q->l1[l1i], 8);
	if (ret < 0)
		return ret;
	if (old > 0) {
		ret = qcow2_free_later(q, (uint64_t)old, q->cluster_size);
		if (ret < 0)
			return ret;
	}
	return off;
}

/* Queues the release of the host clusters an old L2 entry held (rule 5). */
static int release_entry(struct qcow2 *q, uint64_t e)
{
	enum q2_kind k;
	uint64_t host, csize;

	if (classify(q, e, 0, false, &k, &host) < 0)
		return 0; /* a bad entry holds nothing we may free */
	if (k == Q2_COMPRESSED) {
		compressed_desc(q, e, &host, &csize);
		return qcow2_free_later(q, host, csize);
	}
	if (host && (k == Q2_NORMAL || k == Q2_ZERO))
		return qcow2_free_later(q, host, q->cluster_size);
	return 0;
}

/* A cluster is written in place (NORMAL with COPIED), reused in place (ZERO with a
 * preallocated COPIED cluster), or needs a new one. */
enum q2_wclass { W_INPLACE, W_REUSE, W_NEW, W_BAD };

static enum q2_wclass wclass(struct qcow2 *q, uint64_t e, uint64_t *host)
{
	enum q2_kind k;

	if (classify(q, e, 0, false, &k, host) < 0)
		return W_BAD;
	if (k == Q2_NORMAL && (e & QCOW2_OFLAG_COPIED))
		return W_INPLACE;
	if (k == Q2_ZERO && *host && (e & QCOW2_OFLAG_COPIED))
		return W_REUSE;
	return W_NEW;
}

/*
 * Writes guest [off, off+len) (not in place: see wclass) into new (or reused) clusters:
 * allocates a contiguous run for as many following clusters of the same L2 table as need
 * it, writes data plus fill in one pwritev, then points the L2 entries at it. Returns the
 * number of guest bytes written.
 */
static int64_t write_alloc(struct qcow2 *q, struct iovc *c, uint64_t off, uint64_t len)
{
	unsigned cb = q->cluster_bits;
	uint64_t cs = q->cluster_size, l1i = off >> (cb + q->l2_bits);
	uint64_t tend = (l1i + 1) << (cb + q->l2_bits), wend = MIN(off + len, tend);
	uint64_t gstart = off & ~(cs - 1), j0 = (off >> cb) & (q->l2_entries - 1), *tab, h0, h;
	uint64_t k = 1, nmax = (ALIGN_UP(wend, cs) - gstart) >> cb, head, tail, n = 0, e0, elast;
	struct iovec stack[34], *out = iov_scratch(stack, ARRAY_SIZE(stack), c->cnt);
	uint8_t *hbuf = NULL, *tbuf = NULL;
	enum q2_wclass cls;
	int64_t l2off, host;
	int nio = 0, ret = 0;

	if (!out)
		return -ENOMEM;
	l2off = l2_for_write(q, l1i, &tab);
	if (l2off < 0) {
		ret = (int)l2off;
		goto out;
	}
	e0 = be64toh(tab[j0]);
	cls = wclass(q, e0, &h0);
	if (cls == W_BAD) {
		ret = qcow2_corrupt(q, "L2 table", j0, e0);
		goto out;
	}
	while (k < nmax) {
		uint64_t e = be64toh(tab[j0 + k]);
		enum q2_wclass c2 = wclass(q, e, &h);

		if (c2 != cls || (cls == W_REUSE && h != h0 + k * cs))
			break;
		k++;
	}
	elast = be64toh(tab[j0 + k - 1]);
	if (cls == W_REUSE) {
		host = (int64_t)h0;
	} else {
		host = qcow2_alloc_clusters(q, k * cs);
		if (host < 0) {
			ret = (int)host;
			goto out;
		}
	}
	head = off - gstart;
	wend = MIN(wend, gstart + k * cs);
	n = wend - off;
	tail = gstart + k * cs - wend;
	/* Fill: the old content of the first and last cluster around the guest data. */
	if (head || tail) {
		bool two = tail && !(head && k == 1);

		if ((head && posix_memalign((void **)&hbuf, 4096, cs)) ||
		    (two && posix_memalign((void **)&tbuf, 4096, cs))) {
			ret = -ENOMEM;
			goto out;
		}
		if (cls == W_REUSE) {
			if (hbuf)
				memset(hbuf, 0, cs);
			if (tbuf)
				memset(tbuf, 0, cs);
		} else {
			if (hbuf)
				ret = read_cluster(q, gstart, e0, hbuf);
			if (ret == 0 && tbuf)
				ret = read_cluster(q, gstart + (k - 1) * cs, elast, tbuf);
			if (ret < 0)
				goto out;
		}
	}
	if (head)
		out[nio++] = (struct iovec){hbuf, head};
	nio += iovc_take(c, n, out + nio);
	if (tail)
		out[nio++] = (struct iovec){(tbuf ? tbuf : hbuf) + cs - tail, tail};
	ret = io_full(img_fd(q->img), out, nio, (uint64_t)host, true);
	if (ret < 0) {
		log_err("%s: cannot write at 0x%llx: %s", img_path(q->img),
		        (unsigned long long)host, strerror(-ret));
		goto out;
	}
	q->need_sync = true;
	/* Only the refcount cache was used since l2_for_write: tab is still valid. */
	for (uint64_t i = 0; i < k; i++) {
		uint64_t old = be64toh(tab[j0 + i]);

		if (cls != W_REUSE) {
			ret = release_entry(q, old);
			if (ret < 0)
				goto out;
		}
		tab[j0 + i] = htobe64(((uint64_t)host + i * cs) | QCOW2_OFLAG_COPIED);
	}
	qcow2_cache_mark_dirty(q->l2_cache, tab);
	ret = 0;
out:
	free(hbuf);
	free(tbuf);
	if (out != stack)
		free(out);
	return ret < 0 ? ret : (int64_t)n;
}

/*
 * Allocates, in one go, the missing L2 tables of a write spanning several tables: one
 * contiguous run, zeroed, one fdatasync, then the L1 entries (rule 4 with one sync per
 * request instead of one per table — it matters for small clusters).
 */
static int alloc_l2_tables(struct qcow2 *q, uint64_t off, uint64_t len)
{
	unsigned tbits = q->cluster_bits + q->l2_bits;
	uint64_t first = off >> tbits, last = (off + len - 1) >> tbits, nb = 0, k = 0;
	int64_t host;
	int ret;

	for (uint64_t i = first; i <= last && i < q->l1_size; i++)
		if (!q->l1[i])
			nb++;
	if (nb < 2)
		return 0; /* l2_for_write does the single case */
	host = qcow2_alloc_clusters(q, nb << q->cluster_bits);
	if (host < 0)
		return (int)host;
	ret = zero_in_place(q, (uint64_t)host, nb << q->cluster_bits, false);
	if (ret == 0)
		ret = qcow2_sync(q);
	if (ret < 0)
		return ret;
	for (uint64_t i = first; i <= last && i < q->l1_size; i++) {
		if (q->l1[i])
			continue;
		q->l1[i] =
		    htobe64(((uint64_t)host + (k++ << q->cluster_bits)) | QCOW2_OFLAG_COPIED);
		qcow2_cache_forget(q->l2_cache, be64toh(q->l1[i]) & QCOW2_L1E_OFFSET_MASK);
	}
	return qcow2_meta_write(q, q->l1_offset + first * 8, &q->l1[first],
	                        (MIN(last, q->l1_size - 1) - first + 1) * 8);
}

static int pwritev_locked(struct qcow2 *q, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct iovec stack[34], *out = iov_scratch(stack, ARRAY_SIZE(stack), iovcnt);
	struct iovc c = {iov, iovcnt, 0, 0};
	uint64_t total = 0, done = 0;
	int ret = 0;

	if (!out)
		return -ENOMEM;
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (total && ((off ^ (off + total - 1)) >> (q->cluster_bits + q->l2_bits)))
		ret = alloc_l2_tables(q, off, total);
	while (done < total && ret == 0) {
		struct q2_map m;

		ret = lookup(q, off + done, total - done, &m);
		if (ret < 0)
			break;
		if (m.kind == Q2_NORMAL && m.copied) {
			int k = iovc_take(&c, m.bytes, out);

			ret = io_full(img_fd(q->img), out, k, m.host, true);
			if (ret < 0)
				break;
			done += m.bytes;
		} else {
			int64_t n = write_alloc(q, &c, off + done, total - done);

			if (n < 0) {
				ret = (int)n;
				break;
			}
			done += (uint64_t)n;
		}
	}
	if (ret == 0 && q->nb_frees > Q2_MAX_FREES)
		ret = qcow2_flush_caches(q);
	if (out != stack)
		free(out);
	return ret;
}

int qcow2_pwritev(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct qcow2 *q = im->q;
	int ret;

	pthread_mutex_lock(&q->lock);
	ret = pwritev_locked(q, iov, iovcnt, off);
	pthread_mutex_unlock(&q->lock);
	return ret;
}

/* ---- write zeroes, discard ---- */

static int write_zero_data(struct qcow2 *q, uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t n = MIN(len, sizeof(zero_buf));
		struct iovec v = {(void *)zero_buf, n};
		int ret = pwritev_locked(q, &v, 1, off);

		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

static int punch(struct qcow2 *q, uint64_t host, uint64_t len)
{
	if (fallocate(img_fd(q->img), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)host,
	              (off_t)len) == 0)
		return 0;
	return -errno;
}

static int zero_in_place(struct qcow2 *q, uint64_t host, uint64_t len, bool may_unmap)
{
	while (len) {
		uint64_t n = MIN(len, sizeof(zero_buf));
		struct iovec v = {(void *)zero_buf, n};
		int ret;

		if (may_unmap && punch(q, host, n) == 0)
			ret = 0;
		else
			ret = io_full(img_fd(q->img), &v, 1, host, true);
		if (ret < 0)
			return ret;
		host += n;
		len -= n;
	}
	return 0;
}

/* Whole clusters [off, off + nb clusters), all in one L2 table. */
static int zero_clusters(struct qcow2 *q, uint64_t off, uint64_t nb, bool may_unmap)
{
	unsigned cb = q->cluster_bits;
	uint64_t cs = q->cluster_size, l1i = off >> (cb + q->l2_bits);
	uint64_t j0 = (off >> cb) & (q->l2_entries - 1), *tab;
	bool v3 = q->version >= 3, has_backing = q->backing_file != NULL, dirty = false;
	int64_t l2off = l1_entry(q, l1i, NULL);
	int ret;

	if (l2off < 0)
		return (int)l2off;
	if (!has_backing && l2off == 0)
		return 0; /* unallocated without backing already reads zeros */
	if (!v3 && has_backing)
		return write_zero_data(q, off, nb << cb);
	l2off = l2_for_write(q, l1i, &tab);
	if (l2off < 0)
		return (int)l2off;
	for (uint64_t i = 0; i < nb; i++) {
		uint64_t e = be64toh(tab[j0 + i]), host, ne;
		enum q2_kind k;

		ret = classify(q, e, j0 + i, true, &k, &host);
		if (ret < 0)
			return ret;
		if (k == Q2_NORMAL && (e & QCOW2_OFLAG_COPIED)) {
			/* Keep it allocated (map_io safety); v3 flags it zero. */
			if (v3) {
				if (may_unmap)
					punch(q, host, cs);
				ne = host | QCOW2_OFLAG_ZERO | QCOW2_OFLAG_COPIED;
			} else {
				ret = zero_in_place(q, host, cs, may_unmap);
				if (ret < 0)
					return ret;
				continue;
			}
		} else if (k == Q2_ZERO && (!host || (e & QCOW2_OFLAG_COPIED))) {
			continue;
		} else if (k == Q2_UNALLOC && (!v3 || !has_backing)) {
			continue;
		} else {
			/* Shared, compressed, or unallocated over a backing file: plain zero
			 * (v3) or unallocated (v2 without backing). */
			ret = release_entry(q, e);
			if (ret < 0)
				return ret;
			ne = v3 ? QCOW2_OFLAG_ZERO : 0;
		}
		/* tab stays valid: release_entry touches no cache */
		tab[j0 + i] = htobe64(ne);
		dirty = true;
	}
	if (dirty)
		qcow2_cache_mark_dirty(q->l2_cache, tab);
	return 0;
}

int qcow2_write_zeroes(struct img *im, uint64_t off, uint64_t len, bool may_unmap)
{
	struct qcow2 *q = im->q;
	uint64_t cs = q->cluster_size, end = off + len;
	/* Whole clusters end here; a partial last cluster at the end of the disk is whole. */
	uint64_t zend = end == q->size ? ALIGN_UP(end, cs) : ALIGN_DOWN(end, cs);
	unsigned tbits = q->cluster_bits + q->l2_bits;
	int ret = 0;

	pthread_mutex_lock(&q->lock);
	while (off < end && ret == 0) {
		uint64_t stop;

		if ((off & (cs - 1)) || off >= zend) {
			uint64_t n = MIN(end, ALIGN_DOWN(off, cs) + cs) - off;

			ret = write_zero_data(q, off, n);
			off += n;
			continue;
		}
		stop = MIN(zend, ((off >> tbits) + 1) << tbits);
		ret = zero_clusters(q, off, (stop - off) >> q->cluster_bits, may_unmap);
		off = MIN(stop, end);
	}
	if (ret == 0 && q->nb_frees > Q2_MAX_FREES)
		ret = qcow2_flush_caches(q);
	pthread_mutex_unlock(&q->lock);
	return ret;
}

int qcow2_discard(struct img *im, uint64_t off, uint64_t len)
{
	struct qcow2 *q = im->q;
	uint64_t cs = q->cluster_size;
	uint64_t end = off + len == q->size ? off + len : ALIGN_DOWN(off + len, cs);
	int ret = 0;

	/* Whole clusters only; data clusters we own get a hole punched and stay allocated
	 * (their L2 entries unchanged), so nothing is ever freed under a map_io user. */
	off = ALIGN_UP(off, cs);
	pthread_mutex_lock(&q->lock);
	while (off < end) {
		struct q2_map m;

		ret = lookup(q, off, end - off, &m);
		if (ret < 0)
			break;
		if (m.kind == Q2_NORMAL && m.copied)
			punch(q, m.host, ALIGN_UP(m.bytes, cs));
		off += m.bytes;
	}
	pthread_mutex_unlock(&q->lock);
	return ret;
}

/* ---- status, map_io ---- */

int qcow2_block_status(struct img *im, uint64_t off, uint64_t len, struct img_extent *ext)
{
	struct qcow2 *q = im->q;
	struct q2_map m, n;
	int ret;

	pthread_mutex_lock(&q->lock);
	ret = lookup(q, off, len, &m);
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
		if (lookup(q, off + ext->len, len - ext->len, &n) < 0 || n.kind != m.kind)
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
	ret = lookup(q, off, len, &m);
	if (ret < 0 || m.kind != Q2_NORMAL || (write && !m.copied)) {
		pthread_mutex_unlock(&q->lock);
		return ret < 0 ? ret : 0;
	}
	*host_off = m.host;
	done = m.bytes;
	/* Continue into the following L2 tables while the run goes on. */
	while (done < len) {
		struct q2_map n;

		if (lookup(q, off + done, len - done, &n) < 0 || n.kind != Q2_NORMAL ||
		    n.host != m.host + done || (write && !n.copied))
			break;
		done += n.bytes;
	}
	pthread_mutex_unlock(&q->lock);
	return (int64_t)done;
}

/* ---- preallocation (create) ---- */

int qcow2_preallocate(struct qcow2 *q, bool full)
{
	unsigned cb = q->cluster_bits;
	uint64_t nclusters = (q->size + q->cluster_size - 1) >> cb, c = 0;
	int ret;

	/* Tables first, so that the data clusters form one contiguous run. */
	if (q->size) {
		ret = alloc_l2_tables(q, 0, q->size);
		if (ret < 0)
			return ret;
	}
	while (c < nclusters) {
		uint64_t l1i = c >> q->l2_bits, j = c & (q->l2_entries - 1), *tab;
		uint64_t n = MIN(nclusters - c, q->l2_entries - j);
		int64_t l2off = l2_for_write(q, l1i, &tab), host;

		if (l2off < 0)
			return (int)l2off;
		host = qcow2_alloc_clusters(q, n << cb);
		if (host < 0)
			return (int)host;
		if (full) {
			if (fallocate(img_fd(q->img), 0, host, (off_t)(n << cb)) < 0) {
				ret = zero_in_place(q, (uint64_t)host, n << cb, false);
				if (ret < 0)
					return ret;
			}
		} else if (ftruncate(img_fd(q->img), (off_t)q->file_end) < 0) {
			return -errno;
		}
		q->need_sync = true;
		for (uint64_t i = 0; i < n; i++)
			tab[j + i] = htobe64(((uint64_t)host + (i << cb)) | QCOW2_OFLAG_COPIED);
		qcow2_cache_mark_dirty(q->l2_cache, tab);
		c += n;
	}
	return qcow2_flush_caches(q);
}

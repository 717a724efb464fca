/* qcow2_write.c: qcow2 guest writes: allocating (copy-on-write) writes, write-zeroes,
 * discard and preallocation, on top of qcow2_io.c's cluster lookup. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

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

/* Zeros for COW fill and write-zeroes; never written. */
static const uint8_t zero_buf[2 * MiB];

static int zero_in_place(struct qcow2 *q, uint64_t host, uint64_t len, bool may_unmap);

/* ---- writes ---- */

/* The L2 table for L1 index l1i, ready to be modified: allocated if absent, copied if
 * shared (crash rule 4). Returns its host offset. */
static int64_t l2_for_write(struct qcow2 *q, uint64_t l1i, uint64_t **tab)
{
	bool copied;
	int64_t old = qcow2_l1_entry(q, l1i, &copied), off;
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

	if (qcow2_classify(q, e, 0, false, &k, &host) < 0)
		return 0; /* a bad entry holds nothing we may free */
	if (k == Q2_COMPRESSED) {
		qcow2_compressed_desc(q, e, &host, &csize);
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

	if (qcow2_classify(q, e, 0, false, &k, host) < 0)
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
	struct iovec stack[34], *out = qcow2_iov_scratch(stack, ARRAY_SIZE(stack), c->cnt);
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
				ret = qcow2_read_cluster(q, gstart, e0, hbuf);
			if (ret == 0 && tbuf)
				ret = qcow2_read_cluster(q, gstart + (k - 1) * cs, elast, tbuf);
			if (ret < 0)
				goto out;
		}
	}
	if (head)
		out[nio++] = (struct iovec){hbuf, head};
	nio += qcow2_iovc_take(c, n, out + nio);
	if (tail)
		out[nio++] = (struct iovec){(tbuf ? tbuf : hbuf) + cs - tail, tail};
	ret = qcow2_io_full(img_fd(q->img), out, nio, (uint64_t)host, true);
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
	struct iovec stack[34], *out = qcow2_iov_scratch(stack, ARRAY_SIZE(stack), iovcnt);
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

		ret = qcow2_lookup(q, off + done, total - done, &m);
		if (ret < 0)
			break;
		if (m.kind == Q2_NORMAL && m.copied) {
			int k = qcow2_iovc_take(&c, m.bytes, out);

			ret = qcow2_io_full(img_fd(q->img), out, k, m.host, true);
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
			ret = qcow2_io_full(img_fd(q->img), &v, 1, host, true);
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
	int64_t l2off = qcow2_l1_entry(q, l1i, NULL);
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

		ret = qcow2_classify(q, e, j0 + i, true, &k, &host);
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

		ret = qcow2_lookup(q, off, end - off, &m);
		if (ret < 0)
			break;
		if (m.kind == Q2_NORMAL && m.copied)
			punch(q, m.host, ALIGN_UP(m.bytes, cs));
		off += m.bytes;
	}
	pthread_mutex_unlock(&q->lock);
	return ret;
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

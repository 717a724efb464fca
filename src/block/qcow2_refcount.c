/* qcow2_refcount.c: the qcow2 table cache, refcounts, and host cluster allocation. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2_internal.h"
#include "util.h"

/*
 * Refcount blocks are written through: every update goes to the file at once, so the
 * refcount cache never holds dirty data and a crash can only leave clusters counted but
 * unreferenced (leaks). A new refcount block reaches the file (and an fdatasync) before
 * the refcount table entry that points to it; a new refcount table is written and synced
 * before the header switches to it, and the old one is freed only after that.
 *
 * L2 tables may be dirty in the cache: their new entries point at clusters whose data and
 * refcounts were written before, and q->need_sync says an fdatasync must come first (the
 * "cache dependency" of QEMU's qcow2).
 */

struct qcow2_cache_slot {
	uint64_t off; /* host offset of the table; 0 = empty */
	uint64_t used;
	bool dirty;
};

struct qcow2_cache {
	unsigned n;
	size_t tsize;
	uint64_t clock;
	unsigned last; /* slot of the last hit: the common case is a run in one table */
	uint8_t *mem;
	struct qcow2_cache_slot *s;
};

struct qcow2_cache *qcow2_cache_new(unsigned nb_tables, size_t table_size)
{
	struct qcow2_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->n = nb_tables;
	c->tsize = table_size;
	c->s = calloc(nb_tables, sizeof(*c->s));
	if (!c->s || posix_memalign((void **)&c->mem, 4096, (size_t)nb_tables * table_size)) {
		free(c->s);
		free(c);
		return NULL;
	}
	return c;
}

void qcow2_cache_free(struct qcow2_cache *c)
{
	if (!c)
		return;
	free(c->mem);
	free(c->s);
	free(c);
}

static uint64_t *slot_table(struct qcow2_cache *c, unsigned i)
{
	return (uint64_t *)(c->mem + (size_t)i * c->tsize);
}

static unsigned table_slot(const struct qcow2_cache *c, const uint64_t *table)
{
	return (unsigned)(((const uint8_t *)table - c->mem) / c->tsize);
}

static int write_slot(struct qcow2 *q, struct qcow2_cache *c, unsigned i)
{
	int ret;

	if (q->need_sync) {
		ret = qcow2_sync(q);
		if (ret < 0)
			return ret;
	}
	ret = qcow2_meta_write(q, c->s[i].off, slot_table(c, i), c->tsize);
	if (ret < 0)
		return ret;
	c->s[i].dirty = false;
	return 0;
}

int qcow2_cache_get(struct qcow2 *q, struct qcow2_cache *c, uint64_t off, bool load,
                    uint64_t **table)
{
	unsigned victim = 0;
	int ret;

	if (c->s[c->last].off == off && off) {
		c->s[c->last].used = ++c->clock;
		*table = slot_table(c, c->last);
		return 0;
	}
	for (unsigned i = 0; i < c->n; i++) {
		if (c->s[i].off == off) {
			c->s[i].used = ++c->clock;
			c->last = i;
			*table = slot_table(c, i);
			return 0;
		}
		if (c->s[i].used < c->s[victim].used)
			victim = i;
	}
	if (c->s[victim].dirty) {
		ret = write_slot(q, c, victim);
		if (ret < 0)
			return ret;
	}
	c->s[victim].off = 0;
	c->s[victim].used = 0;
	if (load) {
		ret = qcow2_meta_read(q, off, slot_table(c, victim), c->tsize);
		if (ret < 0)
			return ret;
	}
	c->s[victim] = (struct qcow2_cache_slot){.off = off, .used = ++c->clock};
	c->last = victim;
	*table = slot_table(c, victim);
	return 0;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, const uint64_t *table)
{
	c->s[table_slot(c, table)].dirty = true;
}

void qcow2_cache_rename(struct qcow2_cache *c, const uint64_t *table, uint64_t new_off)
{
	qcow2_cache_forget(c, new_off);
	c->s[table_slot(c, table)].off = new_off;
}

void qcow2_cache_forget(struct qcow2_cache *c, uint64_t off)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->s[i].off == off)
			c->s[i] = (struct qcow2_cache_slot){0};
}

bool qcow2_cache_dirty(const struct qcow2_cache *c)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->s[i].dirty)
			return true;
	return false;
}

int qcow2_cache_writeback(struct qcow2 *q, struct qcow2_cache *c)
{
	for (unsigned i = 0; i < c->n; i++) {
		if (c->s[i].dirty) {
			int ret = write_slot(q, c, i);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

static void cache_clear(struct qcow2_cache *c)
{
	memset(c->s, 0, c->n * sizeof(*c->s));
	c->last = 0;
}

int qcow2_flush_caches(struct qcow2 *q)
{
	int ret;

	if (img_readonly(q->img))
		return 0;
	ret = qcow2_cache_writeback(q, q->l2_cache);
	if (ret < 0)
		return ret;
	if (q->nb_frees) {
		/* The tables (and L1 entries) that dropped these references — written now or
		 * at an earlier eviction — must be stable before the refcounts drop. */
		ret = qcow2_sync(q);
		if (ret < 0)
			return ret;
		ret = qcow2_process_frees(q);
		if (ret < 0)
			return ret;
	}
	return qcow2_sync(q);
}

void qcow2_drop_caches(struct qcow2 *q)
{
	cache_clear(q->l2_cache);
	cache_clear(q->rc_cache);
}

/* ---- refcount entries ---- */

uint64_t qcow2_rc_entry_get(const void *blk, unsigned order, uint64_t i)
{
	const uint8_t *p = blk;

	switch (order) {
	case 6:
		return be64toh(((const uint64_t *)blk)[i]);
	case 5:
		return be32toh(((const uint32_t *)blk)[i]);
	case 4:
		return be16toh(((const uint16_t *)blk)[i]);
	case 3:
		return p[i];
	default: {
		unsigned bits = 1u << order, per = 8 / bits;

		return (p[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
	}
	}
}

void qcow2_rc_entry_set(void *blk, unsigned order, uint64_t i, uint64_t v)
{
	uint8_t *p = blk;

	switch (order) {
	case 6:
		((uint64_t *)blk)[i] = htobe64(v);
		break;
	case 5:
		((uint32_t *)blk)[i] = htobe32((uint32_t)v);
		break;
	case 4:
		((uint16_t *)blk)[i] = htobe16((uint16_t)v);
		break;
	case 3:
		p[i] = (uint8_t)v;
		break;
	default: {
		unsigned bits = 1u << order, per = 8 / bits, sh = (unsigned)(i % per) * bits;
		uint8_t mask = (uint8_t)(((1u << bits) - 1) << sh);

		p[i / per] = (uint8_t)((p[i / per] & ~mask) | ((v << sh) & mask));
		break;
	}
	}
}

static uint64_t reft_entries(const struct qcow2 *q)
{
	return (uint64_t)q->reft_clusters << (q->cluster_bits - 3);
}

/* Host offset of refcount block b, 0 if absent; -EIO if the entry is bad. */
static int64_t rc_block_off(struct qcow2 *q, uint64_t b)
{
	uint64_t e, off;

	if (b >= reft_entries(q))
		return 0;
	e = be64toh(q->reft[b]);
	off = e & QCOW2_REFT_OFFSET_MASK;
	if (!off && !e)
		return 0;
	if ((e & ~QCOW2_REFT_OFFSET_MASK) || (off & (q->cluster_size - 1)) || !off ||
	    off > q->file_end - q->cluster_size)
		return qcow2_corrupt(q, "refcount table", b, e);
	return (int64_t)off;
}

int qcow2_refcount_get(struct qcow2 *q, uint64_t c, uint64_t *rc)
{
	uint64_t b = c / q->rc_entries, *blk;
	int64_t off = rc_block_off(q, b);
	int ret;

	*rc = 0;
	if (off <= 0)
		return (int)off;
	ret = qcow2_cache_get(q, q->rc_cache, (uint64_t)off, true, &blk);
	if (ret < 0)
		return ret;
	*rc = qcow2_rc_entry_get(blk, q->refcount_order, c % q->rc_entries);
	return 0;
}

/*
 * First run of n free clusters (refcount 0) from q->free_hint. Works a refcount block at a
 * time: an absent block, or one past the table, means all its clusters are free.
 */
static int find_free(struct qcow2 *q, uint64_t n, uint64_t *start)
{
	uint64_t limit = (QCOW2_L2E_OFFSET_MASK >> q->cluster_bits) + 1;
	uint64_t c = q->free_hint, run = 0, first = 0, first_free = UINT64_MAX;

	while (c < limit) {
		uint64_t b = c / q->rc_entries, end = (b + 1) * q->rc_entries, *blk = NULL;
		int64_t boff = rc_block_off(q, b);

		if (boff < 0)
			return (int)boff;
		if (boff > 0) {
			int ret = qcow2_cache_get(q, q->rc_cache, (uint64_t)boff, true, &blk);

			if (ret < 0)
				return ret;
		}
		for (; c < end && c < limit; c++) {
			if (blk && qcow2_rc_entry_get(blk, q->refcount_order, c % q->rc_entries)) {
				run = 0;
				continue;
			}
			if (first_free == UINT64_MAX)
				first_free = c;
			if (!run++)
				first = c;
			if (run == n) {
				q->free_hint = first_free == first ? first + n : first_free;
				*start = first;
				return 0;
			}
		}
	}
	return -ENOSPC;
}

static void note_end(struct qcow2 *q, uint64_t end)
{
	if (end > q->file_end)
		q->file_end = end;
}

static int write_reft_entry(struct qcow2 *q, uint64_t b)
{
	return qcow2_meta_write(q, q->reft_offset + b * 8, &q->reft[b], 8);
}

static int grow_reft(struct qcow2 *q, uint64_t need);

/* Writes a zeroed refcount block for index b at host cluster x, counting the clusters
 * listed in [lo, hi) that fall in its range (including, possibly, itself). */
static int write_new_block(struct qcow2 *q, uint64_t b, uint64_t x, uint64_t lo, uint64_t hi)
{
	uint64_t first = b * q->rc_entries, last = first + q->rc_entries;
	uint8_t *buf;
	int ret;

	if (posix_memalign((void **)&buf, 4096, q->cluster_size))
		return -ENOMEM;
	memset(buf, 0, q->cluster_size);
	for (uint64_t c = MAX(lo, first); c < MIN(hi, last); c++)
		qcow2_rc_entry_set(buf, q->refcount_order, c - first, 1);
	note_end(q, (x + 1) << q->cluster_bits);
	ret = qcow2_meta_write(q, x << q->cluster_bits, buf, q->cluster_size);
	free(buf);
	return ret;
}

/* Makes refcount block b exist (allocating it, and growing the table, as needed). */
static int ensure_block(struct qcow2 *q, uint64_t b, unsigned depth)
{
	for (;;) {
		uint64_t x, kx;
		int64_t off;
		int ret;

		if (depth > 8)
			return -EIO; /* cannot happen on a sane table; never loop */
		if (b >= reft_entries(q)) {
			ret = grow_reft(q, b);
			if (ret < 0)
				return ret;
			continue;
		}
		off = rc_block_off(q, b);
		if (off != 0)
			return off < 0 ? (int)off : 0;
		ret = find_free(q, 1, &x);
		if (ret < 0)
			return ret;
		kx = x / q->rc_entries;
		if (kx == b) {
			/* The new block lies in the range it covers: it counts itself. */
			ret = write_new_block(q, b, x, x, x + 1);
		} else {
			off = rc_block_off(q, kx);
			if (off < 0)
				return (int)off;
			if (off == 0 || kx >= reft_entries(q)) {
				ret = ensure_block(q, kx, depth + 1);
				if (ret < 0)
					return ret;
				continue;
			}
			ret = qcow2_refcount_update(q, x << q->cluster_bits, q->cluster_size, 1);
			if (ret == 0)
				ret = write_new_block(q, b, x, 0, 0);
		}
		if (ret == 0)
			ret = qcow2_sync(q);
		if (ret < 0)
			return ret;
		q->reft[b] = htobe64(x << q->cluster_bits);
		ret = write_reft_entry(q, b);
		if (ret < 0)
			return ret;
		return 0;
	}
}

/*
 * The refcount table must cover block index `need`: a bigger table goes at the end of the
 * file, followed by new refcount blocks for every block index the table and those blocks
 * themselves fall in (and for `need`), all counting each other. Written and synced before
 * the header points to it; then the old table is freed.
 */
static int grow_reft(struct qcow2 *q, uint64_t need)
{
	uint64_t cs = q->cluster_size, old_n = reft_entries(q), t = q->file_end >> q->cluster_bits;
	uint64_t new_n = MAX(need + 1, old_n + old_n / 2), n_tab, m, *reft, *idx = NULL;
	uint64_t old_off = q->reft_offset, old_clusters = q->reft_clusters;
	int ret;

	for (;;) {
		uint64_t end, m2 = 0, busy = UINT64_MAX;

		n_tab = ALIGN_UP(new_n * 8, cs) / cs;
		new_n = n_tab * cs / 8;
		if (n_tab * cs > QCOW2_MAX_REFT_BYTES) {
			log_err("%s: the refcount table would exceed %u MiB — the image is too "
			        "large for its cluster size",
			        img_path(q->img), QCOW2_MAX_REFT_BYTES >> 20);
			return -EFBIG;
		}
		/* Count the block indices that must be new, to a fixed point. */
		m = 0;
		for (;;) {
			end = t + n_tab + m;
			m2 = 0;
			for (uint64_t b = t / q->rc_entries; b <= (end - 1) / q->rc_entries; b++)
				if (b >= old_n || !q->reft[b])
					m2++;
			if (need >= old_n || !q->reft[need])
				if (need < t / q->rc_entries || need > (end - 1) / q->rc_entries)
					m2++;
			if (m2 == m)
				break;
			m = m2;
		}
		/* Clusters past the end of the file may still be counted (leaked by a crash
		 * before their data was written): move past any such one. */
		for (uint64_t c = t; c < end && c < old_n * q->rc_entries; c++) {
			uint64_t rc;

			ret = qcow2_refcount_get(q, c, &rc);
			if (ret < 0)
				return ret;
			if (rc)
				busy = c;
		}
		if (busy != UINT64_MAX) {
			t = busy + 1;
			continue;
		}
		if ((end - 1) / q->rc_entries < new_n && need < new_n)
			break;
		new_n = MAX((end - 1) / q->rc_entries, need) + 1;
	}
	reft = calloc(n_tab, cs);
	idx = calloc(m + 1, sizeof(*idx));
	if (!reft || !idx) {
		free(reft);
		free(idx);
		return -ENOMEM;
	}
	memcpy(reft, q->reft, old_n * 8);
	/* Existing blocks that cover part of the new range count it first. */
	for (uint64_t c = t; c < t + n_tab + m; c++) {
		uint64_t b = c / q->rc_entries;

		if (b < old_n && q->reft[b]) {
			ret = qcow2_refcount_update(q, c << q->cluster_bits, cs, 1);
			if (ret < 0)
				goto out;
		}
	}
	{
		uint64_t k = 0, end = t + n_tab + m;

		for (uint64_t b = t / q->rc_entries; b <= (end - 1) / q->rc_entries; b++)
			if (b >= old_n || !q->reft[b])
				idx[k++] = b;
		if ((need >= old_n || !q->reft[need]) &&
		    (need < t / q->rc_entries || need > (end - 1) / q->rc_entries))
			idx[k++] = need;
		for (uint64_t i = 0; i < k; i++) {
			uint64_t x = t + n_tab + i;

			ret = write_new_block(q, idx[i], x, t, end);
			if (ret < 0)
				goto out;
			reft[idx[i]] = htobe64(x << q->cluster_bits);
		}
		note_end(q, end << q->cluster_bits);
	}
	ret = qcow2_meta_write(q, t << q->cluster_bits, reft, n_tab * cs);
	if (ret == 0)
		ret = qcow2_sync(q);
	if (ret < 0)
		goto out;
	free(q->reft);
	q->reft = reft;
	reft = NULL;
	q->reft_offset = t << q->cluster_bits;
	q->reft_clusters = (uint32_t)n_tab;
	ret = qcow2_write_header(q);
	if (ret < 0)
		goto out;
	ret = qcow2_refcount_update(q, old_off, old_clusters * cs, -1);
out:
	free(reft);
	free(idx);
	return ret;
}

int qcow2_refcount_update(struct qcow2 *q, uint64_t off, uint64_t len, int64_t delta)
{
	uint64_t c, last;

	if (!len || !delta)
		return 0;
	if (off + len < off)
		return -EINVAL;
	c = off >> q->cluster_bits;
	last = (off + len - 1) >> q->cluster_bits;
	while (c <= last) {
		uint64_t b = c / q->rc_entries, first_i = c % q->rc_entries, *blk;
		uint64_t n = MIN(last - c + 1, q->rc_entries - first_i);
		uint64_t bytes_lo, bytes_hi;
		int64_t boff;
		int ret;

		if (delta > 0) {
			ret = ensure_block(q, b, 0);
			if (ret < 0)
				return ret;
		}
		boff = rc_block_off(q, b);
		if (boff < 0)
			return (int)boff;
		if (boff == 0) {
			log_err("%s: freeing cluster %llu which has no refcount — the image is "
			        "corrupt; run `vmstack img check`",
			        img_path(q->img), (unsigned long long)c);
			return -EIO;
		}
		ret = qcow2_cache_get(q, q->rc_cache, (uint64_t)boff, true, &blk);
		if (ret < 0)
			return ret;
		for (uint64_t i = first_i; i < first_i + n; i++) {
			uint64_t v = qcow2_rc_entry_get(blk, q->refcount_order, i);

			if (delta < 0 && v < (uint64_t)-delta) {
				log_err(
				    "%s: refcount of cluster %llu would drop below 0 — the image "
				    "is corrupt; run `vmstack img check`",
				    img_path(q->img), (unsigned long long)(b * q->rc_entries + i));
				return -EIO;
			}
			if (delta > 0 && q->max_refcount - v < (uint64_t)delta)
				return -ERANGE;
		}
		for (uint64_t i = first_i; i < first_i + n; i++) {
			uint64_t v =
			    qcow2_rc_entry_get(blk, q->refcount_order, i) + (uint64_t)delta;

			qcow2_rc_entry_set(blk, q->refcount_order, i, v);
			if (v == 0) {
				uint64_t hc = b * q->rc_entries + i;

				if (hc < q->free_hint)
					q->free_hint = hc;
				qcow2_cache_forget(q->l2_cache, hc << q->cluster_bits);
				if ((hc << q->cluster_bits) != (uint64_t)boff)
					qcow2_cache_forget(q->rc_cache, hc << q->cluster_bits);
			}
		}
		/* Write through the 8-byte-aligned bytes that changed. */
		bytes_lo = ALIGN_DOWN((first_i << q->refcount_order) / 8, 8);
		bytes_hi = ALIGN_UP((((first_i + n) << q->refcount_order) + 7) / 8, 8);
		ret = qcow2_meta_write(q, (uint64_t)boff + bytes_lo, (uint8_t *)blk + bytes_lo,
		                       bytes_hi - bytes_lo);
		if (ret < 0)
			return ret;
		q->need_sync = true;
		c += n;
	}
	return 0;
}

/*
 * Makes refcount blocks [bfirst, blast] exist. Several missing blocks inside the table
 * are made in one go (one contiguous run, one fdatasync, then their table entries), which
 * matters for long writes with small clusters; anything else goes one block at a time.
 */
static int ensure_blocks(struct qcow2 *q, uint64_t bfirst, uint64_t blast)
{
	uint64_t nb = 0, x0, *list, cs = q->cluster_size;
	uint8_t *buf;
	int ret;

	if (blast >= reft_entries(q))
		return ensure_block(q, blast, 0);
	for (uint64_t b = bfirst; b <= blast; b++) {
		int64_t off = rc_block_off(q, b);

		if (off < 0)
			return (int)off;
		nb += off == 0;
	}
	if (nb == 0)
		return 0;
	list = malloc(nb * sizeof(*list));
	if (!list)
		return -ENOMEM;
	nb = 0;
	for (uint64_t b = bfirst; b <= blast; b++)
		if (!q->reft[b])
			list[nb++] = b;
	if (nb == 1)
		goto single;
	ret = find_free(q, nb, &x0);
	if (ret < 0)
		goto out;
	for (uint64_t i = 0; i < nb; i++) {
		uint64_t kx = (x0 + i) / q->rc_entries;

		if ((kx < bfirst || kx > blast) && (kx >= reft_entries(q) || !q->reft[kx])) {
			q->free_hint = MIN(q->free_hint, x0);
			goto single;
		}
	}
	buf = calloc(nb, cs);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < nb && ret == 0; i++) {
		uint64_t x = x0 + i, kx = x / q->rc_entries, j = 0;

		while (j < nb && list[j] != kx)
			j++;
		if (j < nb)
			qcow2_rc_entry_set(buf + j * cs, q->refcount_order, x % q->rc_entries, 1);
		else
			ret = qcow2_refcount_update(q, x << q->cluster_bits, cs, 1);
	}
	note_end(q, (x0 + nb) << q->cluster_bits);
	if (ret == 0)
		ret = qcow2_meta_write(q, x0 << q->cluster_bits, buf, nb * cs);
	free(buf);
	if (ret == 0)
		ret = qcow2_sync(q);
	if (ret < 0)
		goto out;
	for (uint64_t j = 0; j < nb; j++)
		q->reft[list[j]] = htobe64((x0 + j) << q->cluster_bits);
	ret = qcow2_meta_write(q, q->reft_offset + bfirst * 8, &q->reft[bfirst],
	                       (blast - bfirst + 1) * 8);
	goto out;
single:
	ret = ensure_block(q, list[0], 0);
out:
	free(list);
	return ret;
}

int64_t qcow2_alloc_clusters(struct qcow2 *q, uint64_t len)
{
	uint64_t n = (len + q->cluster_size - 1) >> q->cluster_bits, start;

	if (!n)
		return -EINVAL;
	for (unsigned tries = 0; tries < 64; tries++) {
		bool changed = false;
		int ret = find_free(q, n, &start);

		if (ret < 0)
			return ret;
		/* Make the refcount blocks first: they may take clusters of this run. */
		for (uint64_t b = start / q->rc_entries; b <= (start + n - 1) / q->rc_entries;
		     b++) {
			int64_t off = b < reft_entries(q) ? rc_block_off(q, b) : 0;

			if (off < 0)
				return off;
			if (off == 0) {
				/* Small blocks (small clusters): make up to 64 MiB worth ahead,
				 * so a long sequential write syncs once per many blocks. */
				uint64_t last = (start + n - 1) / q->rc_entries;
				uint64_t ahead = MIN(
				    15, (64 * MiB) / ((uint64_t)q->rc_entries << q->cluster_bits));

				if (last + ahead < reft_entries(q))
					last += ahead;
				ret = ensure_blocks(q, b, last);
				if (ret < 0)
					return ret;
				changed = true;
				break;
			}
		}
		if (changed) {
			q->free_hint = MIN(q->free_hint, start);
			continue;
		}
		ret = qcow2_refcount_update(q, start << q->cluster_bits, n << q->cluster_bits, 1);
		if (ret < 0)
			return ret;
		note_end(q, (start + n) << q->cluster_bits);
		return (int64_t)(start << q->cluster_bits);
	}
	return -EIO;
}

int qcow2_free_later(struct qcow2 *q, uint64_t off, uint64_t len)
{
	if (q->nb_frees == q->frees_cap) {
		size_t cap = q->frees_cap ? q->frees_cap * 2 : 64;
		struct qcow2_free *f = realloc(q->frees, cap * sizeof(*f));

		if (!f)
			return -ENOMEM;
		q->frees = f;
		q->frees_cap = cap;
	}
	/* Merge with the previous range when contiguous (a sequential COW). */
	if (q->nb_frees && q->frees[q->nb_frees - 1].off + q->frees[q->nb_frees - 1].len == off &&
	    !(off & (q->cluster_size - 1)) && !(len & (q->cluster_size - 1))) {
		q->frees[q->nb_frees - 1].len += len;
		return 0;
	}
	q->frees[q->nb_frees++] = (struct qcow2_free){off, len};
	return 0;
}

int qcow2_process_frees(struct qcow2 *q)
{
	int first_err = 0;

	for (size_t i = 0; i < q->nb_frees; i++) {
		int ret = qcow2_refcount_update(q, q->frees[i].off, q->frees[i].len, -1);

		if (ret < 0 && !first_err)
			first_err = ret; /* at worst a leak: go on with the others */
	}
	q->nb_frees = 0;
	return first_err;
}

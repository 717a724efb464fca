/* msix.c: MSI-X table, masking and pending bits over KVM GSI routes and irqfds. */
#include "msix.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "hv.h"
#include "log.h"
#include "pci.h"
#include "snapshot_file.h"
#include "util.h"

#define VEC_CTRL_MASKED 1u

int msix_init(struct msix *x, struct pci_dev *d, struct hv *hv, unsigned nvec, unsigned bar,
              uint32_t table_off, uint32_t pba_off)
{
	uint8_t cap[MSIX_CAP_LEN] = {PCI_CAP_ID_MSIX}, wm[MSIX_CAP_LEN] = {0};

	if (nvec == 0 || nvec > MSIX_MAX_VEC || (table_off & 7) || (pba_off & 7))
		return -EINVAL;
	memset(x, 0, sizeof(*x));
	x->dev = d;
	x->hv = hv;
	x->nvec = nvec;
	pthread_mutex_init(&x->lock, NULL);
	for (unsigned i = 0; i < nvec; i++)
		x->vec[i].fd = x->vec[i].gsi = -1;
	for (unsigned i = 0; i < nvec; i++) {
		struct msix_vec *v = &x->vec[i];
		v->ctrl = VEC_CTRL_MASKED;
		v->gsi = hv ? hv_msi_route_alloc(hv) : -1;
		v->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (v->fd < 0) {
			int e = errno;
			msix_destroy(x);
			return -e;
		}
		if (v->gsi >= 0 && hv_irqfd(hv, v->fd, v->gsi, true) < 0) {
			hv_msi_route_free(hv, v->gsi);
			v->gsi = -1;
		}
	}
	put_le16(&cap[2], (uint16_t)(nvec - 1));
	put_le32(&cap[4], table_off | bar);
	put_le32(&cap[8], pba_off | bar);
	put_le16(&wm[2], MSIX_CTRL_ENABLE | MSIX_CTRL_FUNC_MASK);
	x->cap = pci_add_cap(d, cap, sizeof(cap), wm);
	if (!x->cap) {
		msix_destroy(x);
		return -ENOSPC;
	}
	return 0;
}

void msix_destroy(struct msix *x)
{
	for (unsigned i = 0; i < x->nvec; i++) {
		struct msix_vec *v = &x->vec[i];
		if (v->gsi >= 0) {
			hv_irqfd(x->hv, v->fd, v->gsi, false);
			hv_msi_route_free(x->hv, v->gsi);
		}
		if (v->fd >= 0)
			close(v->fd);
		v->fd = -1;
		v->gsi = -1;
	}
	x->nvec = 0;
	pthread_mutex_destroy(&x->lock);
}

static bool vec_masked(const struct msix *x, const struct msix_vec *v)
{
	return !x->enabled || x->func_masked || (v->ctrl & VEC_CTRL_MASKED);
}

static uint64_t vec_addr(const struct msix_vec *v)
{
	return (uint64_t)v->addr_hi << 32 | v->addr_lo;
}

static void watch(struct msix *x, unsigned i)
{
	if (x->watch)
		x->watch(x->watch_opaque, i);
}

static void fire(struct msix *x, struct msix_vec *v)
{
	uint64_t one = 1;

	if (!v->routed && v->gsi >= 0) {
		v->routed = hv_msi_route_set(x->hv, v->gsi, vec_addr(v), v->data, true) == 0;
		if (v->routed)
			watch(x, (unsigned)(v - x->vec));
	}
	/* Without KVM (unit tests) the eventfd alone records the interrupt. */
	if (v->routed || !x->hv) {
		if (write(v->fd, &one, sizeof(one)) < 0) {
			/* counter saturated: an interrupt is pending anyway */
		}
	} else if (x->hv) {
		hv_signal_msi(x->hv, vec_addr(v), v->data);
	}
}

/* Called with the lock held after anything that may unmask vectors. */
static void deliver_pending(struct msix *x)
{
	for (unsigned i = 0; i < x->nvec; i++) {
		struct msix_vec *v = &x->vec[i];
		if (v->pending && !vec_masked(x, v)) {
			v->pending = false;
			fire(x, v);
		}
	}
}

void msix_table_read(struct msix *x, uint64_t off, void *data, unsigned len)
{
	uint32_t val = ~0u;
	unsigned i = (unsigned)(off / MSIX_ENTRY_LEN);

	/* PCI 3.0: dword (and qword) accesses, naturally aligned. */
	memset(data, 0xff, len);
	if ((len != 4 && len != 8) || (off & (len - 1)) || i >= x->nvec)
		return;
	pthread_mutex_lock(&x->lock);
	for (unsigned k = 0; k < len / 4; k++) {
		struct msix_vec *v = &x->vec[i];
		switch ((off + 4 * k) % MSIX_ENTRY_LEN) {
		case 0:
			val = v->addr_lo;
			break;
		case 4:
			val = v->addr_hi;
			break;
		case 8:
			val = v->data;
			break;
		default:
			val = v->ctrl;
			break;
		}
		memcpy((uint8_t *)data + 4 * k, &val, 4);
	}
	pthread_mutex_unlock(&x->lock);
}

static void write_dword(struct msix *x, struct msix_vec *v, unsigned field, uint32_t val)
{
	bool was_masked = vec_masked(x, v);

	switch (field) {
	case 0:
		v->addr_lo = val & ~3u;
		break;
	case 4:
		v->addr_hi = val;
		break;
	case 8:
		v->data = val;
		break;
	default:
		v->ctrl = (v->ctrl & ~VEC_CTRL_MASKED) | (val & VEC_CTRL_MASKED);
		break;
	}
	if (field != 12)
		v->routed = false; /* re-installed at the next interrupt */
	if (was_masked && !vec_masked(x, v) && v->gsi >= 0 && !v->routed)
		v->routed = hv_msi_route_set(x->hv, v->gsi, vec_addr(v), v->data, true) == 0;
	watch(x, (unsigned)(v - x->vec));
}

void msix_table_write(struct msix *x, uint64_t off, const void *data, unsigned len)
{
	unsigned i = (unsigned)(off / MSIX_ENTRY_LEN);

	if ((len != 4 && len != 8) || (off & (len - 1)) || i >= x->nvec)
		return;
	pthread_mutex_lock(&x->lock);
	for (unsigned k = 0; k < len / 4; k++) {
		uint32_t val;
		memcpy(&val, (const uint8_t *)data + 4 * k, 4);
		write_dword(x, &x->vec[i], (unsigned)((off + 4 * k) % MSIX_ENTRY_LEN), val);
	}
	deliver_pending(x);
	pthread_mutex_unlock(&x->lock);
}

void msix_pba_read(struct msix *x, uint64_t off, void *data, unsigned len)
{
	uint64_t bits = 0;

	memset(data, 0, len);
	if ((len != 4 && len != 8) || (off & (len - 1)))
		return;
	pthread_mutex_lock(&x->lock);
	for (unsigned b = 0; b < 8 * len; b++) {
		unsigned i = (unsigned)(off * 8) + b;
		if (i < x->nvec && x->vec[i].pending)
			bits |= 1ull << b;
	}
	pthread_mutex_unlock(&x->lock);
	memcpy(data, &bits, len);
}

void msix_cfg_written(struct msix *x, unsigned off, unsigned len)
{
	uint16_t ctrl;

	if (off + len <= x->cap + 2 || off >= x->cap + 4)
		return;
	ctrl = get_le16(&x->dev->cfg[x->cap + 2]);
	pthread_mutex_lock(&x->lock);
	x->enabled = ctrl & MSIX_CTRL_ENABLE;
	x->func_masked = ctrl & MSIX_CTRL_FUNC_MASK;
	for (unsigned i = 0; i < x->nvec; i++)
		watch(x, i);
	deliver_pending(x);
	pthread_mutex_unlock(&x->lock);
}

bool msix_enabled(struct msix *x)
{
	bool e;

	pthread_mutex_lock(&x->lock);
	e = x->enabled;
	pthread_mutex_unlock(&x->lock);
	return e;
}

/* Raises v under the lock; with only_if_enabled, does nothing while MSI-X is off. */
static bool notify(struct msix *x, unsigned v, bool only_if_enabled)
{
	bool enabled;

	pthread_mutex_lock(&x->lock);
	enabled = x->enabled;
	if ((enabled || !only_if_enabled) && v < x->nvec) {
		if (vec_masked(x, &x->vec[v]))
			x->vec[v].pending = true;
		else
			fire(x, &x->vec[v]);
	}
	pthread_mutex_unlock(&x->lock);
	return enabled;
}

void msix_notify(struct msix *x, unsigned v)
{
	notify(x, v, false);
}

bool msix_notify_if_enabled(struct msix *x, unsigned v)
{
	return notify(x, v, true);
}

void msix_set_watch(struct msix *x, msix_watch_fn *fn, void *opaque)
{
	pthread_mutex_lock(&x->lock);
	x->watch = fn;
	x->watch_opaque = opaque;
	pthread_mutex_unlock(&x->lock);
}

int msix_direct_fd_locked(struct msix *x, unsigned v)
{
	if (v >= x->nvec || vec_masked(x, &x->vec[v]))
		return -1;
	/* Without KVM (unit tests) the eventfd is the interrupt, as in fire(). */
	return x->vec[v].routed || !x->hv ? x->vec[v].fd : -1;
}

void msix_lock(struct msix *x)
{
	pthread_mutex_lock(&x->lock);
}

void msix_unlock(struct msix *x)
{
	pthread_mutex_unlock(&x->lock);
}

/* --- snapshot --- */

/* Section "msix": MSIX_MAX_VEC entries whatever nvec is; those from nvec on are zero. */
struct msix_state {
	uint16_t nvec;
	uint8_t enabled, func_masked;
	uint32_t pad;
	uint64_t pending; /* bit v: vector v pending */
	struct {
		uint32_t addr_lo, addr_hi, data, ctrl;
	} vec[MSIX_MAX_VEC];
};
_Static_assert(sizeof(struct msix_state) == 16 + 16 * MSIX_MAX_VEC, "msix_state layout");
_Static_assert(MSIX_MAX_VEC <= 64, "pending bits fit a u64");

#define MSIX_TAG "msix"

int msix_save(struct msix *x, struct snap_writer *w, uint32_t inst)
{
	struct msix_state st;

	memset(&st, 0, sizeof(st));
	pthread_mutex_lock(&x->lock);
	st.nvec = (uint16_t)x->nvec;
	st.enabled = x->enabled;
	st.func_masked = x->func_masked;
	for (unsigned i = 0; i < x->nvec; i++) {
		const struct msix_vec *v = &x->vec[i];
		st.vec[i].addr_lo = v->addr_lo;
		st.vec[i].addr_hi = v->addr_hi;
		st.vec[i].data = v->data;
		st.vec[i].ctrl = v->ctrl;
		if (v->pending)
			st.pending |= 1ull << i;
	}
	pthread_mutex_unlock(&x->lock);
	return snap_put(w, MSIX_TAG, inst, &st, sizeof(st));
}

/* Checks st against x (whose function's config space is already restored). */
static int msix_state_check(const struct msix *x, const struct msix_state *st, const char *rn,
                            uint32_t inst, char *err, size_t errlen)
{
	uint16_t ctrl = get_le16(&x->dev->cfg[x->cap + 2]);

	if (st->nvec != x->nvec) {
		snprintf(err, errlen,
		         "%s: section %s %u: not the same device: %u vectors, this one "
		         "has %u",
		         rn, MSIX_TAG, inst, st->nvec, x->nvec);
		return -EINVAL;
	}
	if (st->enabled > 1 || st->func_masked > 1 || st->enabled != !!(ctrl & MSIX_CTRL_ENABLE) ||
	    st->func_masked != !!(ctrl & MSIX_CTRL_FUNC_MASK)) {
		snprintf(err, errlen,
		         "%s: section %s %u: enable %u / function mask %u disagree with Message "
		         "Control 0x%04x (restore the pci section first)",
		         rn, MSIX_TAG, inst, st->enabled, st->func_masked, ctrl);
		return -EINVAL;
	}
	if (x->nvec < 64 && (st->pending >> x->nvec)) {
		snprintf(err, errlen, "%s: section %s %u: pending bits 0x%llx name a vector >= %u",
		         rn, MSIX_TAG, inst, (unsigned long long)st->pending, x->nvec);
		return -EINVAL;
	}
	for (unsigned i = 0; i < MSIX_MAX_VEC; i++) {
		const char *why = NULL;

		if (i >= x->nvec) {
			if (st->vec[i].addr_lo || st->vec[i].addr_hi || st->vec[i].data ||
			    st->vec[i].ctrl)
				why = "is set but beyond the table";
		} else if (st->vec[i].addr_lo & 3) {
			why = "has a misaligned address";
		} else if (st->vec[i].ctrl & ~VEC_CTRL_MASKED) {
			why = "has reserved vector control bits set";
		}
		if (why) {
			snprintf(err, errlen, "%s: section %s %u: vector %u %s", rn, MSIX_TAG, inst,
			         i, why);
			return -EINVAL;
		}
	}
	return 0;
}

int msix_load(struct msix *x, const struct snap_reader *r, uint32_t inst, char *err, size_t errlen)
{
	struct msix_state st;
	int ret = snap_get_exact(r, MSIX_TAG, inst, &st, sizeof(st), err, errlen);

	if (ret < 0)
		return ret;
	ret = msix_state_check(x, &st, snap_reader_name(r), inst, err, errlen);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&x->lock);
	x->enabled = st.enabled;
	x->func_masked = st.func_masked;
	for (unsigned i = 0; i < x->nvec; i++) {
		struct msix_vec *v = &x->vec[i];
		/* As the guest programs a vector: address and data while masked, then the
		 * control word, whose unmasking installs the route (write_dword()). */
		write_dword(x, v, 12, VEC_CTRL_MASKED);
		write_dword(x, v, 0, st.vec[i].addr_lo);
		write_dword(x, v, 4, st.vec[i].addr_hi);
		write_dword(x, v, 8, st.vec[i].data);
		write_dword(x, v, 12, st.vec[i].ctrl);
		v->pending = (st.pending >> i) & 1;
	}
	deliver_pending(x);
	pthread_mutex_unlock(&x->lock);
	return 0;
}

/* virtio_pci_state.c: snapshot of the virtio-pci transport: quiescing, saving, loading. */
#include "virtio_pci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest_mem.h"
#include "iothread.h"
#include "snapshot_file.h"
#include "util.h"

/* Section "virtio-pci": the transport registers (4.1.4.3) and the ISR. */
struct virtio_pci_state {
	uint64_t host_features; /* must be what the fresh device offers */
	uint64_t driver_features;
	uint32_t dfselect, gfselect;
	uint32_t config_generation;
	uint16_t queue_select;
	uint16_t msix_config;
	uint16_t nqueues; /* must be the fresh device's */
	uint8_t status;   /* without NEEDS_RESET, which is needs_reset */
	uint8_t needs_reset;
	uint8_t isr;
	uint8_t pad[3];
};
_Static_assert(sizeof(struct virtio_pci_state) == 40, "virtio_pci_state layout");

/*
 * Section "virtio-pci.q", instance inst * 256 + queue: the queue registers, and while the
 * queue is live (enabled and DRIVER_OK) where the device is in its rings (struct virtq);
 * all zero otherwise. Ring contents are guest RAM, saved with it.
 */
struct virtio_pci_queue_state {
	uint64_t desc, driver, device;
	uint16_t size, msix_vector;
	uint8_t enabled;
	uint8_t broken;         /* ring found corrupt, or bad addresses at DRIVER_OK */
	uint8_t notify_enabled; /* kicks wanted */
	uint8_t pad0;
	uint16_t last_avail, avail_idx, used_idx;
	uint16_t pad1;
	uint32_t unsignalled; /* used elements pushed since the last interrupt decision */
	uint32_t pad2;
};
_Static_assert(sizeof(struct virtio_pci_queue_state) == 48, "virtio_pci_queue_state layout");
_Static_assert(VIRTIO_PCI_MAX_QUEUES <= 1024 && MSIX_MAX_VEC <= 256,
               "queue sections: fewer than 256 queues (nqueues + 1 <= MSIX_MAX_VEC)");

#define VPCI_TAG             "virtio-pci"
#define VPCI_Q_TAG           "virtio-pci.q"
#define VPCI_MAX_INST        (1u << 24)
#define VPCI_Q_INST(inst, i) ((inst)*256u + (i))

/* --- quiescing --- */

static void do_quiesce(void *opaque)
{
	struct virtio_dev *d = opaque;

	if (d->ops->quiesce)
		d->ops->quiesce(d);
}

/*
 * Paused first, then the quiesce op as a call (which a paused loop still runs, on its own
 * thread): the other way round, a kick or completion that arrived meanwhile could start
 * new requests between the op and the pause.
 */
void virtio_pci_quiesce(struct virtio_dev *d)
{
	iothread_pause(d->io);
	iothread_call(d->io, do_quiesce, d);
}

static void do_unquiesce(void *opaque)
{
	struct virtio_dev *d = opaque;

	d->ops->unquiesce(d);
}

void virtio_pci_unquiesce(struct virtio_dev *d)
{
	iothread_resume(d->io);
	if (d->ops->unquiesce)
		iothread_call(d->io, do_unquiesce, d);
}

/* --- saving --- */

struct queue_ctx {
	struct virtio_dev *d;
	struct virtio_pci_queue_state *qs;
	int bad_queue; /* load: the queue whose rings could not be set up, or -1 */
};

/* On the iothread (or in its stead while it is paused): the positions in the rings. */
static void collect_queues(void *opaque)
{
	struct queue_ctx *c = opaque;

	for (unsigned i = 0; i < c->d->nqueues; i++) {
		const struct virtq *vq = &c->d->q[i].vq;
		struct virtio_pci_queue_state *s = &c->qs[i];

		s->broken = vq->broken;
		s->notify_enabled = vq->notify_enabled;
		s->last_avail = vq->last_avail;
		s->avail_idx = vq->avail_idx;
		s->used_idx = vq->used_idx;
		s->unsignalled = vq->unsignalled;
	}
}

int virtio_pci_save(struct virtio_dev *d, struct snap_writer *w, uint32_t inst)
{
	struct virtio_pci_state st;
	struct queue_ctx c = {.d = d};
	int r;

	if (inst >= VPCI_MAX_INST)
		return -EINVAL;
	c.qs = calloc(d->nqueues, sizeof(*c.qs));
	if (!c.qs)
		return -ENOMEM;
	memset(&st, 0, sizeof(st));
	pthread_mutex_lock(&d->lock);
	st.host_features = d->host_features;
	st.driver_features = d->driver_features;
	st.dfselect = d->dfselect;
	st.gfselect = d->gfselect;
	st.config_generation = atomic_load(&d->config_generation);
	st.queue_select = d->queue_select;
	st.msix_config = atomic_load(&d->msix_config);
	st.nqueues = (uint16_t)d->nqueues;
	st.status = d->status;
	st.needs_reset = atomic_load(&d->needs_reset);
	for (unsigned i = 0; i < d->nqueues; i++) {
		const struct virtio_queue *q = &d->q[i];
		struct virtio_pci_queue_state *s = &c.qs[i];

		s->desc = q->desc;
		s->driver = q->driver;
		s->device = q->device;
		s->size = q->size;
		s->msix_vector = q->msix_vector;
		s->enabled = q->enabled;
	}
	iothread_call(d->io, collect_queues, &c);
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_lock(&d->isr_lock);
	st.isr = d->isr;
	pthread_mutex_unlock(&d->isr_lock);

	r = snap_put(w, VPCI_TAG, inst, &st, sizeof(st));
	for (unsigned i = 0; i < d->nqueues && r == 0; i++)
		r = snap_put(w, VPCI_Q_TAG, VPCI_Q_INST(inst, i), &c.qs[i], sizeof(c.qs[i]));
	if (r == 0)
		r = pci_dev_save(&d->pci, w, inst);
	if (r == 0)
		r = msix_save(&d->msix, w, inst);
	free(c.qs);
	return r;
}

/* --- loading: checks --- */

static int check_transport(const struct virtio_dev *d, const struct virtio_pci_state *st,
                           const char *rn, uint32_t inst, char *err, size_t errlen)
{
	const uint64_t ver1 = 1ull << VIRTIO_F_VERSION_1;
	const char *pre = "";
	char why[160];

	why[0] = '\0';
	if (st->nqueues != d->nqueues) {
		pre = "not the same device: ";
		snprintf(why, sizeof(why), "%u queues, %s has %u", st->nqueues, d->name,
		         d->nqueues);
	} else if (st->host_features != d->host_features) {
		pre = "not the same device: ";
		snprintf(why, sizeof(why), "features 0x%llx offered, %s offers 0x%llx",
		         (unsigned long long)st->host_features, d->name,
		         (unsigned long long)d->host_features);
	} else if (st->status & VIRTIO_STATUS_NEEDS_RESET) {
		snprintf(why, sizeof(why), "status 0x%x has NEEDS_RESET (kept in needs_reset)",
		         st->status);
	} else if ((st->status & VIRTIO_STATUS_DRIVER_OK) &&
	           !(st->status & VIRTIO_STATUS_FEATURES_OK)) {
		snprintf(why, sizeof(why), "status 0x%x has DRIVER_OK without FEATURES_OK",
		         st->status);
	} else if ((st->status & VIRTIO_STATUS_FEATURES_OK) &&
	           (!(st->driver_features & ver1) || (st->driver_features & ~st->host_features))) {
		snprintf(
		    why, sizeof(why), "driver features 0x%llx were never accepted (offered 0x%llx)",
		    (unsigned long long)st->driver_features, (unsigned long long)st->host_features);
	} else if (st->msix_config >= d->msix.nvec && st->msix_config != VIRTIO_MSI_NO_VECTOR) {
		snprintf(why, sizeof(why), "msix_config vector %u >= %u", st->msix_config,
		         d->msix.nvec);
	} else if (st->needs_reset > 1) {
		snprintf(why, sizeof(why), "needs_reset %u is not 0 or 1", st->needs_reset);
	} else if (st->isr & ~3u) {
		snprintf(why, sizeof(why), "ISR 0x%x has bits other than 0 and 1", st->isr);
	}
	if (!why[0])
		return 0;
	snprintf(err, errlen, "%s: section %s %u: %s%s", rn, VPCI_TAG, inst, pre, why);
	return -EINVAL;
}

static int check_queue(const struct virtio_dev *d, const struct virtio_queue *q,
                       const struct virtio_pci_queue_state *s, bool driver_ok, const char *rn,
                       uint32_t inst, char *err, size_t errlen)
{
	char why[160];

	why[0] = '\0';
	if (s->size > q->max_size)
		snprintf(why, sizeof(why), "queue size %u > %u", s->size, q->max_size);
	else if (s->size == 0 || (s->size & (s->size - 1)))
		snprintf(why, sizeof(why), "queue size %u is not a power of two", s->size);
	else if (s->msix_vector >= d->msix.nvec && s->msix_vector != VIRTIO_MSI_NO_VECTOR)
		snprintf(why, sizeof(why), "vector %u >= %u", s->msix_vector, d->msix.nvec);
	else if (s->enabled > 1 || s->broken > 1 || s->notify_enabled > 1)
		snprintf(why, sizeof(why), "enabled %u / broken %u / notify_enabled %u not 0 or 1",
		         s->enabled, s->broken, s->notify_enabled);
	else if (!(s->enabled && driver_ok) && (s->broken || s->notify_enabled || s->last_avail ||
	                                        s->avail_idx || s->used_idx || s->unsignalled))
		snprintf(why, sizeof(why), "queue is not live but has ring positions");
	else if (s->enabled && driver_ok && !s->broken &&
	         (uint16_t)(s->avail_idx - s->last_avail) > s->size)
		snprintf(why, sizeof(why), "avail idx %u is more than %u ahead of last_avail %u",
		         s->avail_idx, s->size, s->last_avail);
	else if (s->enabled && driver_ok && !s->broken && s->last_avail != s->used_idx)
		snprintf(why, sizeof(why), "%u requests in flight (the device was not quiesced)",
		         (uint16_t)(s->last_avail - s->used_idx));
	if (!why[0])
		return 0;
	snprintf(err, errlen, "%s: section %s %u/%u: %s", rn, VPCI_Q_TAG, inst, q->index, why);
	return -EINVAL;
}

/* --- loading: the queues go live --- */

/* The words of the used ring virtq_init() sets, as guest RAM had them before. */
struct used_words {
	uint16_t *flags, *idx, *avail_event;
	uint16_t v_flags, v_idx, v_avail_event;
};

static bool used_words_read(const struct virtio_queue *q, struct used_words *u)
{
	uint8_t *p = gm_ptr(q->dev->mem, q->device, 6 + 8ull * q->size);

	if (!p || q->device % 4)
		return false;
	u->flags = (uint16_t *)p;
	u->idx = (uint16_t *)(p + 2);
	u->avail_event = (uint16_t *)(p + 4 + 8ull * q->size);
	u->v_flags = __atomic_load_n(u->flags, __ATOMIC_RELAXED);
	u->v_idx = __atomic_load_n(u->idx, __ATOMIC_RELAXED);
	u->v_avail_event = __atomic_load_n(u->avail_event, __ATOMIC_RELAXED);
	return true;
}

static void used_words_put_back(const struct used_words *u)
{
	__atomic_store_n(u->flags, u->v_flags, __ATOMIC_RELAXED);
	__atomic_store_n(u->avail_event, u->v_avail_event, __ATOMIC_RELAXED);
	__atomic_store_n(u->idx, u->v_idx, __ATOMIC_RELEASE);
}

/*
 * On the iothread: what do_start() does at DRIVER_OK, except that each queue carries on
 * from the saved positions and guest RAM is left as the snapshot has it (virtq_init()
 * zeroes the used ring's flags, idx and avail_event: they are put back).
 */
static void do_restore(void *opaque)
{
	struct queue_ctx *c = opaque;
	struct virtio_dev *d = c->d;

	for (unsigned i = 0; i < d->nqueues; i++) {
		struct virtio_queue *q = &d->q[i];
		const struct virtio_pci_queue_state *s = &c->qs[i];
		struct used_words u;

		if (!q->enabled)
			continue;
		if (!used_words_read(q, &u) || virtio_queue_start(q) < 0) {
			memset(&q->vq, 0, sizeof(q->vq));
			if (!s->broken) {
				c->bad_queue = (int)i;
				break;
			}
			q->vq.broken = true; /* as do_start() left it */
			continue;
		}
		used_words_put_back(&u);
		q->vq.last_avail = s->last_avail;
		q->vq.avail_idx = s->avail_idx;
		q->vq.used_idx = s->used_idx;
		q->vq.unsignalled = s->unsignalled;
		q->vq.notify_enabled = s->notify_enabled;
		q->vq.broken = s->broken;
	}
	if (c->bad_queue >= 0) {
		for (unsigned i = 0; i < d->nqueues; i++)
			memset(&d->q[i].vq, 0, sizeof(d->q[i].vq));
		return;
	}
	virtio_pci_run(d);
}

int virtio_pci_load(struct virtio_dev *d, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen)
{
	const char *rn = snap_reader_name(r);
	struct virtio_pci_state st;
	struct queue_ctx c = {.d = d, .bad_queue = -1};
	bool driver_ok;
	int ret;

	if (inst >= VPCI_MAX_INST) {
		snprintf(err, errlen, "%s: %s: instance %u too large for its queue sections", rn,
		         d->name, inst);
		return -EINVAL;
	}
	ret = snap_get_exact(r, VPCI_TAG, inst, &st, sizeof(st), err, errlen);
	if (ret < 0)
		return ret;
	ret = check_transport(d, &st, rn, inst, err, errlen);
	if (ret < 0)
		return ret;
	driver_ok = st.status & VIRTIO_STATUS_DRIVER_OK;
	c.qs = calloc(d->nqueues, sizeof(*c.qs));
	if (!c.qs) {
		snprintf(err, errlen, "%s: out of memory", d->name);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < d->nqueues && ret == 0; i++) {
		ret = snap_get_exact(r, VPCI_Q_TAG, VPCI_Q_INST(inst, i), &c.qs[i], sizeof(c.qs[i]),
		                     err, errlen);
		if (ret == 0)
			ret = check_queue(d, &d->q[i], &c.qs[i], driver_ok, rn, inst, err, errlen);
	}
	/* The PCI function first: MSI-X checks its state against the restored config. */
	if (ret == 0)
		ret = pci_dev_load(&d->pci, r, inst, err, errlen);
	if (ret == 0)
		ret = msix_load(&d->msix, r, inst, err, errlen);
	if (ret < 0) {
		free(c.qs);
		return ret;
	}

	pthread_mutex_lock(&d->lock);
	d->driver_features = st.driver_features;
	d->dfselect = st.dfselect;
	d->gfselect = st.gfselect;
	d->queue_select = st.queue_select;
	d->status = st.status;
	atomic_store(&d->msix_config, st.msix_config);
	atomic_store(&d->config_generation, st.config_generation);
	atomic_store(&d->needs_reset, st.needs_reset);
	for (unsigned i = 0; i < d->nqueues; i++) {
		struct virtio_queue *q = &d->q[i];
		const struct virtio_pci_queue_state *s = &c.qs[i];

		q->size = s->size;
		q->msix_vector = s->msix_vector;
		q->enabled = s->enabled;
		q->desc = s->desc;
		q->driver = s->driver;
		q->device = s->device;
	}
	/* Before the queues run: their first interrupts may add ISR bits. */
	pthread_mutex_lock(&d->isr_lock);
	d->isr = st.isr;
	pci_set_intx(&d->pci, st.isr != 0); /* the virtio INTx line is "ISR not zero" */
	pthread_mutex_unlock(&d->isr_lock);
	if (driver_ok)
		iothread_call(d->io, do_restore, &c);
	pthread_mutex_unlock(&d->lock);

	if (c.bad_queue >= 0) {
		const struct virtio_pci_queue_state *s = &c.qs[c.bad_queue];
		snprintf(err, errlen,
		         "%s: section %s %u/%d: rings of size %u at desc 0x%llx, driver 0x%llx, "
		         "device 0x%llx are not in guest RAM or misaligned",
		         rn, VPCI_Q_TAG, inst, c.bad_queue, s->size, (unsigned long long)s->desc,
		         (unsigned long long)s->driver, (unsigned long long)s->device);
		ret = -EINVAL;
	}
	free(c.qs);
	return ret;
}

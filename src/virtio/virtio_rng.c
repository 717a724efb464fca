/* virtio_rng.c: one request queue; every writable buffer is filled from the host's CSPRNG. */
#include "virtio_rng.h"

#include <errno.h>
#include <sys/random.h>

#include "util.h"

/* A request may ask for up to 4 GiB; hand out at most this much per request. */
#define RNG_MAX_PER_REQ (64 * 1024)

static void rng_notify(struct virtio_dev *d, unsigned qi)
{
	struct virtio_rng *rng = container_of(d, struct virtio_rng, vdev);
	struct virtio_queue *q = &d->q[qi];
	struct virtq_req req;
	int r;

	for (;;) {
		virtq_disable_notify(&q->vq);
		while ((r = virtq_pop(&q->vq, &req)) != 0) {
			uint32_t done = 0;
			if (r < 0) {
				if (q->vq.broken)
					break;
				continue; /* a bad chain: already returned empty */
			}
			for (unsigned i = 0; i < req.nin && done < RNG_MAX_PER_REQ; i++) {
				size_t want = MIN(req.in[i].len, RNG_MAX_PER_REQ - done);
				ssize_t n = getrandom(req.in[i].addr, want, GRND_NONBLOCK);
				if (n <= 0)
					break;
				done += (uint32_t)n;
				if ((size_t)n < want)
					break;
			}
			rng->bytes += done;
			virtq_push(&q->vq, req.head, done);
		}
		if (q->vq.broken) {
			virtio_set_needs_reset(d);
			break;
		}
		if (!virtq_enable_notify(&q->vq))
			break;
	}
	virtio_queue_interrupt(q);
}

static const struct virtio_dev_ops rng_ops = {.queue_notify = rng_notify};

int virtio_rng_create(struct virtio_rng *rng, struct hv *hv, const struct guest_mem *mem,
                      struct pci_bus *bus, char *err, size_t errlen)
{
	struct virtio_pci_params p = {
	    .name = "virtio-rng",
	    .device_id = VIRTIO_ID_RNG,
	    .pci_class = 0x00ff00,
	    .nqueues = 1,
	    .queue_size = 64,
	    .ops = &rng_ops,
	};

	rng->bytes = 0;
	return virtio_pci_init(&rng->vdev, &p, hv, mem, bus, err, errlen);
}

void virtio_rng_destroy(struct virtio_rng *rng)
{
	virtio_pci_destroy(&rng->vdev);
}

int virtio_rng_save(struct virtio_rng *rng, struct snap_writer *w, uint32_t inst)
{
	return virtio_pci_save(&rng->vdev, w, VIRTIO_PCI_STATE_INST(VIRTIO_ID_RNG, inst));
}

int virtio_rng_load(struct virtio_rng *rng, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen)
{
	return virtio_pci_load(&rng->vdev, r, VIRTIO_PCI_STATE_INST(VIRTIO_ID_RNG, inst), err,
	                       errlen);
}

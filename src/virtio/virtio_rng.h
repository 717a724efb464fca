/* virtio_rng.h: virtio entropy device (virtio 1.2 section 5.4), fed by getrandom(). */
#ifndef VMSTACK_VIRTIO_RNG_H
#define VMSTACK_VIRTIO_RNG_H

#include "virtio_pci.h"

struct virtio_rng {
	struct virtio_dev vdev;
	uint64_t bytes; /* given to the guest */
};

int virtio_rng_create(struct virtio_rng *rng, struct hv *hv, const struct guest_mem *mem,
                      struct pci_bus *bus, char *err, size_t errlen);
void virtio_rng_destroy(struct virtio_rng *rng);

/*
 * Snapshot: the transport's sections (virtio_pci.h) with instance
 * VIRTIO_PCI_STATE_INST(VIRTIO_ID_RNG, inst); `bytes` is a statistic and not saved.
 */
int virtio_rng_save(struct virtio_rng *rng, struct snap_writer *w, uint32_t inst);
int virtio_rng_load(struct virtio_rng *rng, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen);

#endif

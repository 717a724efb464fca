/* virtio_blk.h: virtio block device (virtio 1.2 section 5.2) on a struct blk backend. */
#ifndef VMSTACK_VIRTIO_BLK_H
#define VMSTACK_VIRTIO_BLK_H

#include <stdatomic.h>

#include "block.h"
#include "config.h"
#include "virtio_pci.h"

struct vblk_queue;

struct virtio_blk_stats {
	atomic_uint_fast64_t reads, writes, flushes, discards, read_bytes, write_bytes, errors;
};

struct virtio_blk {
	struct virtio_dev vdev;
	char name[24];
	struct blk *blk;
	bool readonly;
	uint64_t capacity; /* 512-byte sectors */
	char serial[VIRTIO_BLK_SERIAL_LEN];
	unsigned nqueues;
	struct vblk_queue *queues;
	struct virtio_blk_stats stats;
};

/* A disk named `virtio-blk<index>` on an open image (the device does not close it). */
int virtio_blk_create(struct virtio_blk *vb, unsigned index, const struct disk_config *dc,
                      struct hv *hv, const struct guest_mem *mem, struct pci_bus *bus, char *err,
                      size_t errlen);
void virtio_blk_destroy(struct virtio_blk *vb);

#endif

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
	int quiesce_err; /* the flush of the last quiesce failed: -errno */
};

/* A disk named `virtio-blk<index>` on an open image (the device does not close it). */
int virtio_blk_create(struct virtio_blk *vb, unsigned index, const struct disk_config *dc,
                      struct hv *hv, const struct guest_mem *mem, struct pci_bus *bus, char *err,
                      size_t errlen);
void virtio_blk_destroy(struct virtio_blk *vb);

/*
 * Snapshot: the transport's sections (virtio_pci.h) with instance
 * VIRTIO_PCI_STATE_INST(VIRTIO_ID_BLOCK, inst); nothing of its own, since quiescing
 * (virtio_pci_quiesce(&vb->vdev)) leaves no request in flight and the image flushed.
 * Save returns the flush's error if that failed (the image may lack recent writes).
 */
int virtio_blk_save(struct virtio_blk *vb, struct snap_writer *w, uint32_t inst);
int virtio_blk_load(struct virtio_blk *vb, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen);

#endif

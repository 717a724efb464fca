/* virtio_console.h: a virtio console port (virtio 1.2 section 5.3), the guest's /dev/hvc0. */
#ifndef VMSTACK_VIRTIO_CONSOLE_H
#define VMSTACK_VIRTIO_CONSOLE_H

#include <stdatomic.h>

#include "virtio_pci.h"

struct virtio_console {
	struct virtio_dev vdev;
	int in_fd, out_fd; /* host side: in_fd -1 for output only (a file) */
	bool in_blocked;   /* no guest buffers: in_fd not watched */
	bool watching;
	atomic_uint_fast64_t rx_bytes, tx_bytes;
};

/* A single-port console: guest output goes to out_fd, host input is read from in_fd. */
int virtio_console_create(struct virtio_console *vc, int in_fd, int out_fd, struct hv *hv,
                          const struct guest_mem *mem, struct pci_bus *bus, char *err,
                          size_t errlen);
void virtio_console_destroy(struct virtio_console *vc);

/*
 * Snapshot: the transport's sections (virtio_pci.h) with instance
 * VIRTIO_PCI_STATE_INST(VIRTIO_ID_CONSOLE, inst). Nothing of its own: the one port is
 * always open, its config constant, and whether in_fd is watched follows from the queues.
 */
int virtio_console_save(struct virtio_console *vc, struct snap_writer *w, uint32_t inst);
int virtio_console_load(struct virtio_console *vc, const struct snap_reader *r, uint32_t inst,
                        char *err, size_t errlen);

#endif

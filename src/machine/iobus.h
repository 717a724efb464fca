/* iobus.h: port-I/O and MMIO dispatch from vCPU exits to the device that owns an address. */
#ifndef VMSTACK_IOBUS_H
#define VMSTACK_IOBUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct io_region;

/*
 * A device's handlers. `off` is relative to the region's base; `len` is 1, 2, 4 or 8.
 * read() must fill all `len` bytes of `data` (little-endian). Handlers run on vCPU
 * threads, several at once, without the bus lock: a device protects its own state, may
 * add or remove regions from its handler, and must keep a removed region's memory valid
 * until the vCPU threads have stopped.
 */
struct io_region_ops {
	void (*read)(struct io_region *r, uint64_t off, void *data, unsigned len);
	void (*write)(struct io_region *r, uint64_t off, const void *data, unsigned len);
};

/* Embed this in the device and get back to the device with container_of(). */
struct io_region {
	uint64_t base;
	uint64_t len;
	const char *name;
	const struct io_region_ops *ops;
};

/* A sorted set of non-overlapping regions. Zero-initialise before use. */
struct io_bus {
	const char *name; /* "pio" or "mmio", for messages */
	struct io_region **regions;
	size_t count, cap;
	pthread_rwlock_t lock;
	bool lock_ready;
};

void io_bus_init(struct io_bus *bus, const char *name);
void io_bus_destroy(struct io_bus *bus);
/* Adds r at r->base. Returns 0, -EEXIST if it overlaps another region, -EINVAL if empty. */
int io_bus_add(struct io_bus *bus, struct io_region *r);
void io_bus_remove(struct io_bus *bus, struct io_region *r);
/* The region containing [addr, addr+len), or NULL. */
struct io_region *io_bus_find(struct io_bus *bus, uint64_t addr, uint64_t len);

/*
 * Dispatches one access. Returns false when no region claims it: reads then return
 * all-ones (as on a real bus with nothing answering) and writes are dropped.
 */
bool io_bus_read(struct io_bus *bus, uint64_t addr, void *data, unsigned len);
bool io_bus_write(struct io_bus *bus, uint64_t addr, const void *data, unsigned len);

#endif

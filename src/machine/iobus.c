/* iobus.c: sorted region table with binary search; unclaimed reads float high. */
#include "iobus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void io_bus_init(struct io_bus *bus, const char *name)
{
	memset(bus, 0, sizeof(*bus));
	bus->name = name;
	pthread_rwlock_init(&bus->lock, NULL);
	bus->lock_ready = true;
}

void io_bus_destroy(struct io_bus *bus)
{
	free(bus->regions);
	if (bus->lock_ready)
		pthread_rwlock_destroy(&bus->lock);
	memset(bus, 0, sizeof(*bus));
}

int io_bus_add(struct io_bus *bus, struct io_region *r)
{
	size_t i;

	if (r->len == 0 || r->base + r->len < r->base)
		return -EINVAL;
	pthread_rwlock_wrlock(&bus->lock);
	for (i = 0; i < bus->count; i++) {
		struct io_region *o = bus->regions[i];
		if (r->base < o->base + o->len && o->base < r->base + r->len) {
			pthread_rwlock_unlock(&bus->lock);
			return -EEXIST;
		}
		if (o->base > r->base)
			break;
	}
	if (bus->count == bus->cap) {
		size_t ncap = bus->cap ? bus->cap * 2 : 16;
		struct io_region **n = realloc(bus->regions, ncap * sizeof(*n));
		if (!n) {
			pthread_rwlock_unlock(&bus->lock);
			return -ENOMEM;
		}
		bus->regions = n;
		bus->cap = ncap;
	}
	memmove(&bus->regions[i + 1], &bus->regions[i], (bus->count - i) * sizeof(*bus->regions));
	bus->regions[i] = r;
	bus->count++;
	pthread_rwlock_unlock(&bus->lock);
	return 0;
}

void io_bus_remove(struct io_bus *bus, struct io_region *r)
{
	pthread_rwlock_wrlock(&bus->lock);
	for (size_t i = 0; i < bus->count; i++) {
		if (bus->regions[i] == r) {
			memmove(&bus->regions[i], &bus->regions[i + 1],
			        (bus->count - i - 1) * sizeof(*bus->regions));
			bus->count--;
			break;
		}
	}
	pthread_rwlock_unlock(&bus->lock);
}

/* Caller holds the lock. */
static struct io_region *find_locked(struct io_bus *bus, uint64_t addr, uint64_t len)
{
	size_t lo = 0, hi = bus->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct io_region *r = bus->regions[mid];
		if (addr < r->base) {
			hi = mid;
		} else if (addr - r->base >= r->len) {
			lo = mid + 1;
		} else {
			/* The whole access must fit: a straddling access is not this device's. */
			return len <= r->len - (addr - r->base) ? r : NULL;
		}
	}
	return NULL;
}

struct io_region *io_bus_find(struct io_bus *bus, uint64_t addr, uint64_t len)
{
	struct io_region *r;

	pthread_rwlock_rdlock(&bus->lock);
	r = find_locked(bus, addr, len);
	pthread_rwlock_unlock(&bus->lock);
	return r;
}

/*
 * The handler runs without the bus lock, so that it may itself add or remove regions
 * (a PCI config write moving a BAR on this very bus). Regions are embedded in devices
 * that live until the vCPU threads have stopped, so r stays valid after the lookup.
 */
static struct io_region *lookup(struct io_bus *bus, uint64_t addr, unsigned len, uint64_t *off)
{
	struct io_region *r;

	pthread_rwlock_rdlock(&bus->lock);
	r = find_locked(bus, addr, len);
	if (r)
		*off = addr - r->base;
	pthread_rwlock_unlock(&bus->lock);
	return r;
}

bool io_bus_read(struct io_bus *bus, uint64_t addr, void *data, unsigned len)
{
	uint64_t off = 0;
	struct io_region *r = lookup(bus, addr, len, &off);

	if (r)
		r->ops->read(r, off, data, len);
	else
		memset(data, 0xff, len);
	return r != NULL;
}

bool io_bus_write(struct io_bus *bus, uint64_t addr, const void *data, unsigned len)
{
	uint64_t off = 0;
	struct io_region *r = lookup(bus, addr, len, &off);

	if (r)
		r->ops->write(r, off, data, len);
	return r != NULL;
}

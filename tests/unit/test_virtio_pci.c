/* test_virtio_pci.c: virtio-pci with virtio-rng and virtio-blk, the test acting as driver. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block.h"
#include "config.h"
#include "guest_mem.h"
#include "iobus.h"
#include "msix.h"
#include "pci.h"
#include "test.h"
#include "util.h"
#include "virtio_blk.h"
#include "virtio_pci.h"
#include "virtio_rng.h"
#include "virtq.h"

#define RAM_SIZE  (64 * MiB)
#define DESC_GPA  0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA  0x30000ULL
#define HDR_GPA   0x100000ULL
#define STAT_GPA  0x100800ULL
#define DATA_GPA  0x101000ULL
#define QSIZE     16
#define WAIT_MS   5000

#define S_ACK  VIRTIO_STATUS_ACKNOWLEDGE
#define S_DRV  VIRTIO_STATUS_DRIVER
#define S_FOK  VIRTIO_STATUS_FEATURES_OK
#define S_DOK  VIRTIO_STATUS_DRIVER_OK
#define S_NRST VIRTIO_STATUS_NEEDS_RESET

#define F_VERSION_1 (1ull << VIRTIO_F_VERSION_1)

/* virtio-blk bits the tests use (5.2). */
#define BLK_F_SEG_MAX  (1ull << 2)
#define BLK_F_RO       (1ull << 5)
#define BLK_F_BLK_SIZE (1ull << 6)
#define BLK_F_FLUSH    (1ull << 9)
#define BLK_T_IN       0
#define BLK_T_OUT      1
#define BLK_T_FLUSH    4
#define BLK_T_GET_ID   8
#define BLK_S_OK       0
#define BLK_S_IOERR    1
#define BLK_S_UNSUPP   2

/* The machine around the device: RAM, both buses, PCI bus 0. */
struct vm {
	struct guest_mem mem;
	struct io_bus pio, mmio;
	struct pci_bus bus;
};

static void vm_init(struct vm *vm)
{
	char err[256] = "";

	memset(vm, 0, sizeof(*vm));
	CHECK_EQ(guest_mem_create(&vm->mem, RAM_SIZE, 0, 0, err, sizeof(err)), 0);
	io_bus_init(&vm->pio, "pio");
	io_bus_init(&vm->mmio, "mmio");
	CHECK_EQ(pci_bus_init(&vm->bus, NULL, &vm->pio, &vm->mmio, 0xc0000000, 0x3c000000,
	                      0x1000000000ull, 0x1000000000ull),
	         0);
}

static void vm_fini(struct vm *vm)
{
	pci_bus_destroy(&vm->bus);
	io_bus_destroy(&vm->pio);
	io_bus_destroy(&vm->mmio);
	guest_mem_destroy(&vm->mem);
}

static void *gpa(struct vm *vm, uint64_t a, uint64_t len)
{
	void *p = gm_ptr(&vm->mem, a, len);

	CHECK(p != NULL);
	return p;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {0, (long)ms * 1000000};

	nanosleep(&ts, NULL);
}

/* --- register access through BAR2 --- */

static uint64_t rd(struct virtio_dev *d, uint64_t off, unsigned len)
{
	uint64_t v = 0;

	virtio_pci_bar_read(d, off, &v, len);
	return v;
}

static void wr(struct virtio_dev *d, uint64_t off, unsigned len, uint64_t v)
{
	virtio_pci_bar_write(d, off, &v, len);
}

static uint8_t status(struct virtio_dev *d)
{
	return (uint8_t)rd(d, VIRTIO_PCI_COMMON_STATUS, 1);
}

static void set_status(struct virtio_dev *d, uint8_t s)
{
	wr(d, VIRTIO_PCI_COMMON_STATUS, 1, s);
}

/* Reset, ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK; true if the device agreed. */
static bool negotiate(struct virtio_dev *d, uint64_t features)
{
	set_status(d, 0);
	set_status(d, S_ACK);
	set_status(d, S_ACK | S_DRV);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	wr(d, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)features);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(d, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(features >> 32));
	set_status(d, S_ACK | S_DRV | S_FOK);
	return status(d) & S_FOK;
}

static uint64_t device_features(struct virtio_dev *d)
{
	uint64_t f;

	wr(d, VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
	f = rd(d, VIRTIO_PCI_COMMON_DF, 4);
	wr(d, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
	f |= rd(d, VIRTIO_PCI_COMMON_DF, 4) << 32;
	return f;
}

/* --- the driver's side of queue 0 --- */

struct drv {
	struct vm *vm;
	struct virtio_dev *d;
	uint16_t size;
	uint16_t avail_idx, used_seen;
	struct virtq_desc *desc;
	struct virtq_avail *avail;
	struct virtq_used *used;
};

/* Lays out queue 0 (size n) in RAM and tells the device, without enabling anything else. */
static void queue_setup(struct drv *r, struct vm *vm, struct virtio_dev *d, uint16_t n,
                        uint64_t desc, uint64_t avail, uint64_t used)
{
	memset(r, 0, sizeof(*r));
	r->vm = vm;
	r->d = d;
	r->size = n;
	r->desc = gm_ptr(&vm->mem, DESC_GPA, 16ull * n);
	r->avail = gm_ptr(&vm->mem, AVAIL_GPA, 6 + 2ull * n);
	r->used = gm_ptr(&vm->mem, USED_GPA, 6 + 8ull * n);
	if (r->desc && r->avail && r->used) {
		memset(r->desc, 0, 16ull * n);
		memset(r->avail, 0, 6 + 2ull * n);
		memset(r->used, 0xa5, 6 + 8ull * n); /* virtq_init must clear it */
	}
	wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
	wr(d, VIRTIO_PCI_COMMON_Q_SIZE, 2, n);
	/* Linux writes the 64-bit addresses as two dwords; use both forms. */
	wr(d, VIRTIO_PCI_COMMON_Q_DESC, 4, (uint32_t)desc);
	wr(d, VIRTIO_PCI_COMMON_Q_DESC + 4, 4, desc >> 32);
	wr(d, VIRTIO_PCI_COMMON_Q_DRIVER, 8, avail);
	wr(d, VIRTIO_PCI_COMMON_Q_DEVICE, 4, (uint32_t)used);
	wr(d, VIRTIO_PCI_COMMON_Q_DEVICE + 4, 4, used >> 32);
	wr(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
}

/* The whole init sequence of 3.1.1, queue 0 at the usual place. */
static void drv_start(struct drv *r, struct vm *vm, struct virtio_dev *d, uint64_t features)
{
	CHECK(negotiate(d, features));
	queue_setup(r, vm, d, QSIZE, DESC_GPA, AVAIL_GPA, USED_GPA);
	set_status(d, S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK_EQ(status(d), S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK_EQ(r->used->idx, 0);
}

static void set_desc(struct drv *r, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
	r->desc[i] = (struct virtq_desc){.addr = addr, .len = len, .flags = flags, .next = next};
}

static void drv_add(struct drv *r, uint16_t head)
{
	r->avail->ring[r->avail_idx % r->size] = head;
	r->avail_idx++;
	__atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
}

static void drv_kick(struct drv *r)
{
	wr(r->d, VIRTIO_PCI_NOTIFY_OFF, 2, 0);
}

/* Waits for the next used element; false on timeout. */
static bool drv_wait_used(struct drv *r, struct virtq_used_elem *e)
{
	uint64_t end = now_ms() + WAIT_MS;

	while (__atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE) == r->used_seen) {
		if (now_ms() > end) {
			CHECK(!"no used element within the deadline");
			return false;
		}
		sleep_ms(1);
	}
	*e = r->used->ring[r->used_seen % r->size];
	r->used_seen++;
	return true;
}

static bool wait_status_bit(struct virtio_dev *d, uint8_t bit)
{
	uint64_t end = now_ms() + WAIT_MS;

	while (!(status(d) & bit)) {
		if (now_ms() > end)
			return false;
		sleep_ms(1);
	}
	return true;
}

/* One 64-byte entropy request through descriptor `head`; returns the used length. */
static uint32_t rng_request(struct drv *r, uint16_t head, uint8_t *out)
{
	struct virtq_used_elem e = {0};
	uint8_t *buf = gpa(r->vm, DATA_GPA, 64);

	memset(buf, 0, 64);
	set_desc(r, head, DATA_GPA, 64, VIRTQ_DESC_F_WRITE, 0);
	drv_add(r, head);
	drv_kick(r);
	if (!drv_wait_used(r, &e))
		return 0;
	CHECK_EQ(e.id, head);
	if (out)
		memcpy(out, buf, 64);
	return e.len;
}

static bool nonzero(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return true;
	return false;
}

/* --- PCI side --- */

/* Vendor capability offsets of d in list order and their cfg_type; returns how many. */
static unsigned virtio_caps(struct vm *vm, struct virtio_dev *d, unsigned *offs, uint8_t *types,
                            unsigned *msix_cap)
{
	unsigned n = 0, slot = d->pci.slot, guard = 0;
	unsigned off = pci_cfg_read(&vm->bus, slot, PCI_CAP_PTR, 1);

	*msix_cap = 0;
	while (off && guard++ < 48) {
		uint8_t id = (uint8_t)pci_cfg_read(&vm->bus, slot, off, 1);
		if (id == PCI_CAP_ID_VENDOR && n < 8) {
			offs[n] = off;
			types[n] = (uint8_t)pci_cfg_read(&vm->bus, slot, off + 3, 1);
			n++;
		} else if (id == PCI_CAP_ID_MSIX) {
			*msix_cap = off;
		}
		off = pci_cfg_read(&vm->bus, slot, off + 1, 1);
	}
	return n;
}

static unsigned find_cap(struct vm *vm, struct virtio_dev *d, uint8_t type)
{
	unsigned offs[8], mx, n;
	uint8_t types[8];

	n = virtio_caps(vm, d, offs, types, &mx);
	for (unsigned i = 0; i < n; i++)
		if (types[i] == type)
			return offs[i];
	return 0;
}

static unsigned msix_cap_of(struct vm *vm, struct virtio_dev *d)
{
	unsigned offs[8], mx;
	uint8_t types[8];

	virtio_caps(vm, d, offs, types, &mx);
	return mx;
}

static struct virtio_dev *rng_new(struct virtio_rng *rng, struct vm *vm)
{
	char err[256] = "";
	int r = virtio_rng_create(rng, NULL, &vm->mem, &vm->bus, err, sizeof(err));

	if (r < 0)
		fprintf(stderr, "virtio_rng_create: %s\n", err);
	CHECK_EQ(r, 0);
	return &rng->vdev;
}

/* --- virtio-blk on a temporary image --- */

struct disk {
	char path[64];
	struct disk_config dc;
	struct virtio_blk vb;
	bool ok;
};

#define DISK_SIZE (1 * MiB)

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 7 + (off >> 9) + 3);
}

static bool disk_new(struct disk *k, struct vm *vm, bool readonly)
{
	struct blk_opts o = {.readonly = readonly, .cache = BLK_CACHE_WRITEBACK};
	char err[256] = "";
	uint8_t buf[4096];
	int fd;

	memset(k, 0, sizeof(*k));
	strcpy(k->path, "/tmp/vmstack-test-vpci-XXXXXX");
	fd = mkstemp(k->path);
	CHECK(fd >= 0);
	if (fd < 0)
		return false;
	for (uint64_t off = 0; off < DISK_SIZE; off += sizeof(buf)) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = pattern(off + i);
		CHECK_EQ(pwrite(fd, buf, sizeof(buf), (off_t)off), sizeof(buf));
	}
	close(fd);
	o.path = k->path;
	k->dc.blk = blk_open(&o, err, sizeof(err));
	if (!k->dc.blk) {
		fprintf(stderr, "blk_open: %s\n", err);
		CHECK(!"blk_open");
		unlink(k->path);
		return false;
	}
	k->dc.queues = 1;
	strcpy(k->dc.serial, "vmstack-serial-1");
	int r = virtio_blk_create(&k->vb, 0, &k->dc, NULL, &vm->mem, &vm->bus, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "virtio_blk_create: %s\n", err);
		CHECK_EQ(r, 0);
		blk_close(k->dc.blk);
		unlink(k->path);
		return false;
	}
	k->ok = true;
	return true;
}

static void disk_free(struct disk *k)
{
	if (!k->ok)
		return;
	virtio_blk_destroy(&k->vb);
	blk_close(k->dc.blk);
	unlink(k->path);
}

static bool file_is_pattern(struct disk *k)
{
	uint8_t buf[4096];
	int fd = open(k->path, O_RDONLY);
	bool same = true;

	CHECK(fd >= 0);
	for (uint64_t off = 0; fd >= 0 && off < DISK_SIZE && same; off += sizeof(buf)) {
		CHECK_EQ(pread(fd, buf, sizeof(buf), (off_t)off), sizeof(buf));
		for (size_t i = 0; i < sizeof(buf); i++)
			if (buf[i] != pattern(off + i))
				same = false;
	}
	if (fd >= 0)
		close(fd);
	return same;
}

static uint64_t blk_features(void)
{
	return F_VERSION_1 | BLK_F_SEG_MAX | BLK_F_BLK_SIZE | BLK_F_FLUSH;
}

/*
 * A request as Linux frames it: header (readable), data (readable for OUT, writable for
 * IN/GET_ID; none if len 0), status (writable). Returns the status byte, 0xee on timeout.
 */
static uint8_t blk_request(struct drv *r, uint32_t type, uint64_t sector, void *data, uint32_t len,
                           uint32_t *used_len)
{
	uint8_t *hdr = gpa(r->vm, HDR_GPA, 16), *st = gpa(r->vm, STAT_GPA, 1);
	uint8_t *buf = len ? gpa(r->vm, DATA_GPA, len) : NULL;
	bool in = type == BLK_T_IN || type == BLK_T_GET_ID;
	struct virtq_used_elem e = {0};

	put_le32(hdr, type);
	put_le32(hdr + 4, 0);
	put_le64(hdr + 8, sector);
	*st = 0xff;
	if (buf)
		memcpy(buf, data, len);
	set_desc(r, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, len ? 1 : 2);
	set_desc(r, 1, DATA_GPA, len, VIRTQ_DESC_F_NEXT | (in ? VIRTQ_DESC_F_WRITE : 0), 2);
	set_desc(r, 2, STAT_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	drv_add(r, 0);
	drv_kick(r);
	if (!drv_wait_used(r, &e))
		return 0xee;
	CHECK_EQ(e.id, 0);
	if (used_len)
		*used_len = e.len;
	if (buf && in)
		memcpy(data, buf, len);
	return *st;
}

/* --- tests --- */

TEST(vpci_ids_and_capabilities)
{
	struct vm vm;
	struct virtio_rng rng;
	struct disk k;
	struct virtio_dev *d;
	unsigned offs[8], mx, n, s;
	uint8_t types[8];

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	s = d->pci.slot;
	CHECK_EQ(s, 1);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, PCI_VENDOR_ID, 2), 0x1af4);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, PCI_DEVICE_ID, 2), 0x1044);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, PCI_REVISION_ID, 1), 1);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, PCI_SUBSYSTEM_VENDOR, 2), 0x1af4);
	CHECK(pci_cfg_read(&vm.bus, s, PCI_SUBSYSTEM_ID, 2) >= 0x40);
	CHECK(pci_cfg_read(&vm.bus, s, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	/* BAR0 32-bit (MSI-X), BAR2 64-bit prefetchable in the 64-bit window. */
	CHECK_EQ(pci_cfg_read(&vm.bus, s, PCI_BAR0, 4) & 0xf, 0);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, PCI_BAR0 + 8, 4) & 0xf, 0xc);
	CHECK(d->pci.bar[2].addr >= 0x1000000000ull);
	CHECK(io_bus_find(&vm.mmio, d->pci.bar[2].addr + VIRTIO_PCI_NOTIFY_OFF, 2) ==
	      &d->pci.bar[2].region);
	CHECK(io_bus_find(&vm.mmio, d->pci.bar[0].addr, 4) == &d->pci.bar[0].region);

	/* rng has no device config: common, ISR, notify, PCI cfg access. */
	n = virtio_caps(&vm, d, offs, types, &mx);
	CHECK_EQ(n, 4);
	CHECK_EQ(types[0], VIRTIO_PCI_CAP_COMMON_CFG);
	CHECK_EQ(types[1], VIRTIO_PCI_CAP_ISR_CFG);
	CHECK_EQ(types[2], VIRTIO_PCI_CAP_NOTIFY_CFG);
	CHECK_EQ(types[3], VIRTIO_PCI_CAP_PCI_CFG);
	CHECK(mx != 0);

	CHECK(disk_new(&k, &vm, false));
	if (k.ok) {
		struct virtio_dev *b = &k.vb.vdev;
		static const struct {
			uint8_t type, cap_len;
			uint32_t off, len;
		} want[] = {
		    {VIRTIO_PCI_CAP_COMMON_CFG, 16, VIRTIO_PCI_COMMON_OFF, VIRTIO_PCI_COMMON_LEN},
		    {VIRTIO_PCI_CAP_ISR_CFG, 16, VIRTIO_PCI_ISR_OFF, 1},
		    {VIRTIO_PCI_CAP_DEVICE_CFG, 16, VIRTIO_PCI_DEVICE_OFF, 60},
		    {VIRTIO_PCI_CAP_NOTIFY_CFG, 20, VIRTIO_PCI_NOTIFY_OFF, 4},
		    {VIRTIO_PCI_CAP_PCI_CFG, 20, 0, 0},
		};
		s = b->pci.slot;
		CHECK_EQ(s, 2);
		CHECK_EQ(pci_cfg_read(&vm.bus, s, PCI_DEVICE_ID, 2), 0x1042);
		CHECK_EQ(pci_cfg_read(&vm.bus, s, PCI_CLASS_DEVICE, 2), 0x0100);
		n = virtio_caps(&vm, b, offs, types, &mx);
		CHECK_EQ(n, 5);
		for (unsigned i = 0; i < n && i < ARRAY_SIZE(want); i++) {
			unsigned c = offs[i];
			CHECK_EQ(types[i], want[i].type);
			CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 2, 1), want[i].cap_len);
			CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 4, 1),
			         want[i].type == VIRTIO_PCI_CAP_PCI_CFG ? 0 : VIRTIO_PCI_BAR);
			CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 8, 4), want[i].off);
			CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 12, 4), want[i].len);
		}
		/* notify_off_multiplier */
		CHECK_EQ(pci_cfg_read(&vm.bus, s, offs[3] + 16, 4), VIRTIO_PCI_NOTIFY_MULT);
		/* MSI-X: one vector per queue + config, table and PBA in BAR0. */
		CHECK(mx != 0);
		CHECK_EQ(pci_cfg_read(&vm.bus, s, mx + 2, 2) & 0x7ff, 1);
		CHECK_EQ(pci_cfg_read(&vm.bus, s, mx + 4, 4), 0 | VIRTIO_PCI_MSIX_BAR);
		CHECK_EQ(pci_cfg_read(&vm.bus, s, mx + 8, 4), VIRTIO_PCI_PBA_OFF);
		/* The read-only parts of the capabilities stay so. */
		pci_cfg_write(&vm.bus, s, offs[0] + 8, 4, 0x1234);
		CHECK_EQ(pci_cfg_read(&vm.bus, s, offs[0] + 8, 4), 0);
		/* Device config: capacity, num_queues. */
		CHECK_EQ(rd(b, VIRTIO_PCI_DEVICE_OFF, 8), DISK_SIZE / 512);
		CHECK_EQ(rd(b, VIRTIO_PCI_DEVICE_OFF + 34, 2), 1);
		CHECK_EQ(rd(b, VIRTIO_PCI_DEVICE_OFF + 20, 4) % 512, 0);
		CHECK_EQ(rd(b, VIRTIO_PCI_DEVICE_OFF + 60, 4), 0); /* past cfg_size */
		CHECK_EQ(rd(b, VIRTIO_PCI_DEVICE_OFF + 58, 4), 0); /* straddles the end */
	}
	disk_free(&k);
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_feature_negotiation)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	uint64_t f;

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
	CHECK_EQ(status(d), 0);
	wr(d, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_DFSELECT, 4), 1);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_DF, 4) & 1, 1);
	wr(d, VIRTIO_PCI_COMMON_DFSELECT, 4, 2);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_DF, 4), 0);
	f = device_features(d);
	CHECK(f & F_VERSION_1);
	CHECK(f & 1ull << VIRTIO_F_INDIRECT_DESC);
	CHECK(f & 1ull << VIRTIO_F_EVENT_IDX);
	/* Device features are read-only. */
	wr(d, VIRTIO_PCI_COMMON_DF, 4, 0);
	CHECK_EQ(device_features(d), f);

	/* No VERSION_1: refused. */
	CHECK(!negotiate(d, 0));
	CHECK_EQ(status(d), S_ACK | S_DRV);
	CHECK(!negotiate(d, 1ull << VIRTIO_F_EVENT_IDX));
	/* A feature not offered: refused. */
	CHECK(!(f & 1ull << 5));
	CHECK(!negotiate(d, F_VERSION_1 | 1ull << 5));
	CHECK(!negotiate(d, F_VERSION_1 | 1ull << 40));
	/* DRIVER_OK without FEATURES_OK is ignored. */
	set_status(d, S_ACK | S_DRV | S_DOK);
	CHECK_EQ(status(d) & S_DOK, 0);
	/* Exactly what is offered: accepted, and the driver features read back. */
	CHECK(negotiate(d, f));
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_GF, 4), (uint32_t)f);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_GF, 4), f >> 32);
	/* After FEATURES_OK the driver features are frozen. */
	wr(d, VIRTIO_PCI_COMMON_GF, 4, 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_GF, 4), f >> 32);
	/* Status bits are only added; clearing one is not possible without reset. */
	set_status(d, S_ACK);
	CHECK_EQ(status(d), S_ACK | S_DRV | S_FOK);
	/* The guest cannot set NEEDS_RESET. */
	set_status(d, S_ACK | S_DRV | S_FOK | S_NRST);
	CHECK_EQ(status(d) & S_NRST, 0);
	/* Just VERSION_1 is fine too. */
	CHECK(negotiate(d, F_VERSION_1));
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_rng_request)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	struct drv r;
	uint8_t out[64];

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 64);
	drv_start(&r, &vm, d, F_VERSION_1);
	/* The queue registers read back what the driver wrote. */
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), QSIZE);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_NOFF, 2), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DESC, 8), DESC_GPA);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DRIVER, 4), AVAIL_GPA);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DEVICE + 4, 4), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DEVICE, 8), USED_GPA);
	/* Queue setup is frozen once enabled. */
	wr(d, VIRTIO_PCI_COMMON_Q_DESC, 8, 0x50000);
	wr(d, VIRTIO_PCI_COMMON_Q_SIZE, 2, 8);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DESC, 8), DESC_GPA);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), QSIZE);

	memset(out, 0, sizeof(out));
	CHECK_EQ(rng_request(&r, 3, out), 64);
	CHECK(nonzero(out, sizeof(out)));
	/* Again, through another descriptor; data differs. */
	uint8_t out2[64];
	CHECK_EQ(rng_request(&r, 5, out2), 64);
	CHECK(memcmp(out, out2, 64) != 0);
	/* A chain of two writable buffers is filled whole. */
	uint8_t *b1 = gpa(&vm, DATA_GPA + 0x1000, 16), *b2 = gpa(&vm, DATA_GPA + 0x2000, 32);
	struct virtq_used_elem e = {0};
	memset(b1, 0, 16);
	memset(b2, 0, 32);
	set_desc(&r, 7, DATA_GPA + 0x1000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 8);
	set_desc(&r, 8, DATA_GPA + 0x2000, 32, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&r, 7);
	drv_kick(&r);
	CHECK(drv_wait_used(&r, &e));
	CHECK_EQ(e.id, 7);
	CHECK_EQ(e.len, 48);
	CHECK(nonzero(b2, 32));
	CHECK_EQ(rng.bytes, 64 + 64 + 48);
	CHECK_EQ(status(d) & S_NRST, 0);
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_queue_select_out_of_range)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	CHECK(negotiate(d, F_VERSION_1));
	for (unsigned q = 1; q < 4; q++) {
		wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 2, q == 3 ? 0xffff : q);
		CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 0);
		CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
		/* Writes to a queue that does not exist go nowhere. */
		wr(d, VIRTIO_PCI_COMMON_Q_SIZE, 2, 8);
		wr(d, VIRTIO_PCI_COMMON_Q_DESC, 8, DESC_GPA);
		wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 2, 0);
		wr(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
		CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 0);
		CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DESC, 8), 0);
	}
	/* Notifies for queues that do not exist are dropped. */
	wr(d, VIRTIO_PCI_NOTIFY_OFF + 4, 2, 1);
	wr(d, VIRTIO_PCI_NOTIFY_OFF + 0xffc, 2, 0x3ff);
	wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 64);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	/* Odd accesses to the common config: ignored, reads zero past its end. */
	wr(d, VIRTIO_PCI_COMMON_Q_SELECT + 1, 1, 5);
	wr(d, VIRTIO_PCI_COMMON_STATUS, 4, 0);
	wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 4, 0xffffffff);
	wr(d, VIRTIO_PCI_COMMON_LEN - 2, 4, 0xffffffff);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SELECT, 2), 0);
	CHECK_EQ(status(d), S_ACK | S_DRV | S_FOK);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_LEN, 4), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_LEN - 2, 4), 0);
	CHECK_EQ(rd(d, 0xffc, 4), 0);
	/* rng has no device config space. */
	CHECK_EQ(rd(d, VIRTIO_PCI_DEVICE_OFF, 4), 0);
	wr(d, VIRTIO_PCI_DEVICE_OFF, 4, 0xffffffff);
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_bad_queue_address_needs_reset)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	struct drv r;

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	CHECK(negotiate(d, F_VERSION_1));
	queue_setup(&r, &vm, d, QSIZE, RAM_SIZE + 0x1000, AVAIL_GPA, USED_GPA);
	CHECK_EQ(status(d) & S_NRST, 0);
	set_status(d, S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK(status(d) & S_NRST);
	CHECK(status(d) & S_DOK);
	/* With MSI-X off, the config change shows in the ISR (bit 1) and on INTx. */
	CHECK(pci_cfg_read(&vm.bus, d->pci.slot, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	CHECK_EQ(rd(d, VIRTIO_PCI_ISR_OFF, 1), 2);
	CHECK_EQ(rd(d, VIRTIO_PCI_ISR_OFF, 1), 0);
	CHECK_EQ(pci_cfg_read(&vm.bus, d->pci.slot, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0);
	/* Kicking a broken queue does nothing. */
	drv_kick(&r);
	sleep_ms(20);
	CHECK(status(d) & S_NRST);

	/* A misaligned used ring is as bad. */
	CHECK(negotiate(d, F_VERSION_1));
	queue_setup(&r, &vm, d, QSIZE, DESC_GPA, AVAIL_GPA, USED_GPA + 2);
	set_status(d, S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK(status(d) & S_NRST);
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_reset_and_reinit)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	struct drv r;
	uint8_t out[64];

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	CHECK(negotiate(d, F_VERSION_1));
	queue_setup(&r, &vm, d, QSIZE, 0xfffffffffffff000ull, AVAIL_GPA, USED_GPA);
	wr(d, VIRTIO_PCI_COMMON_MSIX, 2, 0);
	wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
	set_status(d, S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK(status(d) & S_NRST);

	set_status(d, 0);
	CHECK_EQ(status(d), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SELECT, 2), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 64);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DESC, 8), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DRIVER, 8), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_DEVICE, 8), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_GF, 4), 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_ISR_OFF, 1), 0);

	drv_start(&r, &vm, d, F_VERSION_1);
	CHECK_EQ(rng_request(&r, 0, out), 64);
	CHECK(nonzero(out, sizeof(out)));
	/* Reset with the queue live, then once more from scratch. */
	set_status(d, 0);
	CHECK_EQ(status(d), 0);
	drv_start(&r, &vm, d, F_VERSION_1 | 1ull << VIRTIO_F_EVENT_IDX);
	CHECK_EQ(rng_request(&r, 1, out), 64);
	CHECK_EQ(rng_request(&r, 2, out), 64);
	CHECK_EQ(status(d) & S_NRST, 0);
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_avail_idx_jump_needs_reset)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	struct drv r;

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	drv_start(&r, &vm, d, F_VERSION_1);
	CHECK_EQ(rng_request(&r, 0, NULL), 64);
	__atomic_store_n(&r.avail->idx, (uint16_t)(r.avail_idx + 1000), __ATOMIC_RELEASE);
	drv_kick(&r);
	CHECK(wait_status_bit(d, S_NRST));
	/* The device stopped writing the used ring. */
	CHECK_EQ(__atomic_load_n(&r.used->idx, __ATOMIC_ACQUIRE), 1);
	/* Reset clears it and the device works again. */
	set_status(d, 0);
	CHECK_EQ(status(d), 0);
	drv_start(&r, &vm, d, F_VERSION_1);
	CHECK_EQ(rng_request(&r, 0, NULL), 64);

	/* A head index beyond the queue is as bad. */
	r.avail->ring[r.avail_idx % r.size] = QSIZE + 3;
	r.avail_idx++;
	__atomic_store_n(&r.avail->idx, r.avail_idx, __ATOMIC_RELEASE);
	drv_kick(&r);
	CHECK(wait_status_bit(d, S_NRST));
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_isr_with_intx)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	struct drv r;
	uint64_t end;

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	drv_start(&r, &vm, d, F_VERSION_1);
	CHECK_EQ(rd(d, VIRTIO_PCI_ISR_OFF, 1), 0);
	CHECK_EQ(rng_request(&r, 0, NULL), 64);
	/* The interrupt follows the used element: wait for INTx (reading it clears nothing). */
	end = now_ms() + WAIT_MS;
	while (!(pci_cfg_read(&vm.bus, d->pci.slot, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT) &&
	       now_ms() < end)
		sleep_ms(1);
	CHECK(pci_cfg_read(&vm.bus, d->pci.slot, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	CHECK_EQ(rd(d, VIRTIO_PCI_ISR_OFF, 1), 1);
	CHECK_EQ(rd(d, VIRTIO_PCI_ISR_OFF, 1), 0);
	CHECK_EQ(pci_cfg_read(&vm.bus, d->pci.slot, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0);

	/* NO_INTERRUPT in avail->flags: no ISR bit for the next completion. */
	r.avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	CHECK_EQ(rng_request(&r, 1, NULL), 64);
	sleep_ms(20);
	CHECK_EQ(rd(d, VIRTIO_PCI_ISR_OFF, 1), 0);
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_msix_completion)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	struct drv r;
	unsigned mx;
	uint64_t end, n = 0, t0 = 0;
	uint32_t v;

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	mx = msix_cap_of(&vm, d);
	CHECK(mx != 0);
	CHECK(negotiate(d, F_VERSION_1));
	queue_setup(&r, &vm, d, QSIZE, DESC_GPA, AVAIL_GPA, USED_GPA);
	/* Vectors: config 0, queue 0 -> 1; out of range reads back NO_VECTOR. */
	wr(d, VIRTIO_PCI_COMMON_MSIX, 2, 2);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	wr(d, VIRTIO_PCI_COMMON_MSIX, 2, 0);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_MSIX, 2), 0);
	wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 2, 5);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_MSIX, 2), 1);
	set_status(d, S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK_EQ(status(d), S_ACK | S_DRV | S_FOK | S_DOK);

	/* The guest enables MSI-X and programs vector 1 through BAR0 on the MMIO bus. */
	pci_cfg_write(&vm.bus, d->pci.slot, mx + 2, 2, MSIX_CTRL_ENABLE);
	CHECK(msix_enabled(&d->msix));
	uint64_t t = d->pci.bar[0].addr + 16;
	v = 0xfee00000;
	CHECK(io_bus_write(&vm.mmio, t + 0, &v, 4));
	v = 0;
	CHECK(io_bus_write(&vm.mmio, t + 4, &v, 4));
	v = 0x4031;
	CHECK(io_bus_write(&vm.mmio, t + 8, &v, 4));
	v = 0;
	CHECK(io_bus_write(&vm.mmio, t + 12, &v, 4));
	v = 1;
	CHECK(io_bus_read(&vm.mmio, t + 12, &v, 4));
	CHECK_EQ(v, 0);

	CHECK_EQ(rng_request(&r, 0, NULL), 64);
	end = now_ms() + WAIT_MS;
	while (read(d->msix.vec[1].fd, &n, sizeof(n)) != sizeof(n) && now_ms() < end)
		sleep_ms(1);
	CHECK_EQ(n, 1);
	/* Not through INTx/ISR, not on the config vector. */
	CHECK_EQ(rd(d, VIRTIO_PCI_ISR_OFF, 1), 0);
	CHECK(read(d->msix.vec[0].fd, &t0, sizeof(t0)) < 0);

	/* Masked in the table: the next completion is pending in the PBA until unmasked. */
	v = 1;
	CHECK(io_bus_write(&vm.mmio, t + 12, &v, 4));
	CHECK_EQ(rng_request(&r, 1, NULL), 64);
	end = now_ms() + WAIT_MS;
	uint64_t pba = 0;
	while (!(pba & 2) && now_ms() < end) {
		sleep_ms(1);
		CHECK(io_bus_read(&vm.mmio, d->pci.bar[0].addr + VIRTIO_PCI_PBA_OFF, &pba, 8));
	}
	CHECK_EQ(pba, 2);
	CHECK(read(d->msix.vec[1].fd, &n, sizeof(n)) < 0);
	v = 0;
	CHECK(io_bus_write(&vm.mmio, t + 12, &v, 4));
	n = 0;
	CHECK_EQ(read(d->msix.vec[1].fd, &n, sizeof(n)), sizeof(n));
	CHECK_EQ(n, 1);
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

TEST(vpci_pci_cfg_access_capability)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	unsigned c, s;

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	s = d->pci.slot;
	c = find_cap(&vm, d, VIRTIO_PCI_CAP_PCI_CFG);
	CHECK(c != 0);
	set_status(d, S_ACK | S_DRV);
	/* Window onto device_status: bar 2, offset 0x14, 1 byte. */
	pci_cfg_write(&vm.bus, s, c + 4, 1, VIRTIO_PCI_BAR);
	pci_cfg_write(&vm.bus, s, c + 8, 4, VIRTIO_PCI_COMMON_STATUS);
	pci_cfg_write(&vm.bus, s, c + 12, 4, 1);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 4, 1), VIRTIO_PCI_BAR);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 8, 4), VIRTIO_PCI_COMMON_STATUS);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 16, 4) & 0xff, S_ACK | S_DRV);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 16, 1), S_ACK | S_DRV);
	/* Writes go through too: reset, then ACKNOWLEDGE. */
	pci_cfg_write(&vm.bus, s, c + 16, 4, 0);
	CHECK_EQ(status(d), 0);
	pci_cfg_write(&vm.bus, s, c + 16, 4, S_ACK);
	CHECK_EQ(status(d), S_ACK);
	/* A 4-byte window: device_feature_select and device_feature. */
	pci_cfg_write(&vm.bus, s, c + 12, 4, 4);
	pci_cfg_write(&vm.bus, s, c + 8, 4, VIRTIO_PCI_COMMON_DFSELECT);
	pci_cfg_write(&vm.bus, s, c + 16, 4, 1);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_DFSELECT, 4), 1);
	pci_cfg_write(&vm.bus, s, c + 8, 4, VIRTIO_PCI_COMMON_DF);
	CHECK_EQ(pci_cfg_read(&vm.bus, s, c + 16, 4) & 1, 1);
	/* Through the config ports, as a guest would. */
	uint32_t a = 0x80000000u | s << 11 | (c + 16), v = 0;
	CHECK(io_bus_write(&vm.pio, PCI_CFG_ADDR_PORT, &a, 4));
	CHECK(io_bus_read(&vm.pio, PCI_CFG_DATA_PORT, &v, 4));
	CHECK_EQ(v & 1, 1);
	/* A bad window (wrong BAR, bad length, past the BAR) reads nothing and writes nothing. */
	pci_cfg_write(&vm.bus, s, c + 8, 4, VIRTIO_PCI_COMMON_STATUS);
	pci_cfg_write(&vm.bus, s, c + 12, 4, 3);
	pci_cfg_write(&vm.bus, s, c + 16, 4, 0);
	CHECK_EQ(status(d), S_ACK);
	pci_cfg_write(&vm.bus, s, c + 12, 4, 1);
	pci_cfg_write(&vm.bus, s, c + 4, 1, 0);
	pci_cfg_write(&vm.bus, s, c + 16, 4, 0);
	CHECK_EQ(status(d), S_ACK);
	pci_cfg_write(&vm.bus, s, c + 4, 1, VIRTIO_PCI_BAR);
	pci_cfg_write(&vm.bus, s, c + 8, 4, VIRTIO_PCI_BAR_SIZE - 2);
	pci_cfg_write(&vm.bus, s, c + 12, 4, 4);
	pci_cfg_read(&vm.bus, s, c + 16, 4);
	pci_cfg_write(&vm.bus, s, c + 8, 4, 0xffffffff);
	pci_cfg_write(&vm.bus, s, c + 16, 4, 0);
	CHECK_EQ(status(d), S_ACK);
	virtio_rng_destroy(&rng);
	vm_fini(&vm);
}

/* queue_size may only be lowered to another power of two (2.7.1); the rest is refused. */
TEST(vpci_queue_size_limits)
{
	struct vm vm;
	struct virtio_rng rng;
	struct virtio_dev *d;
	struct drv r;
	struct disk k;
	uint8_t out[64];

	vm_init(&vm);
	d = rng_new(&rng, &vm);
	CHECK(negotiate(d, F_VERSION_1));
	static const uint16_t bad[] = {0, 12, 63, 65, 128, 0xffff};
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		wr(d, VIRTIO_PCI_COMMON_Q_SIZE, 2, bad[i]);
		CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 64);
	}
	wr(d, VIRTIO_PCI_COMMON_Q_SIZE, 2, 1);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 1);
	/* A driver that ignores the refusal and lays out 128 entries gets a 64-entry queue. */
	queue_setup(&r, &vm, d, 128, DESC_GPA, AVAIL_GPA, USED_GPA);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 1);
	set_status(d, S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK_EQ(status(d) & S_NRST, 0);
	/* Size 1 works. */
	CHECK(negotiate(d, F_VERSION_1));
	queue_setup(&r, &vm, d, 1, DESC_GPA, AVAIL_GPA, USED_GPA);
	set_status(d, S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK_EQ(rng_request(&r, 0, out), 64);
	CHECK_EQ(rng_request(&r, 0, out), 64);
	virtio_rng_destroy(&rng);

	/*
	 * virtio-blk keeps per-request state in QUEUE_SIZE (256) slots indexed by head: a
	 * driver that writes 512 and uses head 300 must not get past the queue size.
	 */
	if (disk_new(&k, &vm, false)) {
		struct virtio_dev *b = &k.vb.vdev;
		uint8_t *hdr = gpa(&vm, HDR_GPA, 16), *st = gpa(&vm, STAT_GPA, 1);
		CHECK(negotiate(b, blk_features()));
		queue_setup(&r, &vm, b, 512, DESC_GPA, AVAIL_GPA, USED_GPA);
		CHECK_EQ(rd(b, VIRTIO_PCI_COMMON_Q_SIZE, 2), 256);
		set_status(b, S_ACK | S_DRV | S_FOK | S_DOK);
		put_le32(hdr, BLK_T_FLUSH);
		*st = 0xff;
		set_desc(&r, 300, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 301);
		set_desc(&r, 301, STAT_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
		drv_add(&r, 300);
		drv_kick(&r);
		CHECK(wait_status_bit(b, S_NRST));
		CHECK_EQ(*st, 0xff);
	}
	disk_free(&k);
	vm_fini(&vm);
}

TEST(vblk_write_then_read)
{
	struct vm vm;
	struct disk k;
	struct drv r;
	uint8_t wbuf[1024], rbuf[1024];
	uint32_t len = 0;

	vm_init(&vm);
	if (!disk_new(&k, &vm, false)) {
		vm_fini(&vm);
		return;
	}
	struct virtio_dev *d = &k.vb.vdev;
	uint64_t f = device_features(d);
	CHECK((f & blk_features()) == blk_features());
	CHECK_EQ(f & BLK_F_RO, 0);
	drv_start(&r, &vm, d, blk_features());

	/* The file's own content first. */
	CHECK_EQ(blk_request(&r, BLK_T_IN, 3, rbuf, 512, &len), BLK_S_OK);
	CHECK_EQ(len, 513);
	for (unsigned i = 0; i < 512; i++)
		if (rbuf[i] != pattern(3 * 512 + i)) {
			CHECK_EQ(rbuf[i], pattern(3 * 512 + i));
			break;
		}

	for (unsigned i = 0; i < sizeof(wbuf); i++)
		wbuf[i] = (uint8_t)(i * 13 + 1);
	CHECK_EQ(blk_request(&r, BLK_T_OUT, 3, wbuf, 512, &len), BLK_S_OK);
	CHECK_EQ(len, 1);
	memset(rbuf, 0, sizeof(rbuf));
	CHECK_EQ(blk_request(&r, BLK_T_IN, 3, rbuf, 512, &len), BLK_S_OK);
	CHECK_EQ(len, 513);
	CHECK(memcmp(wbuf, rbuf, 512) == 0);

	/* Header and data in one descriptor, status separate. */
	uint8_t *hd = gpa(&vm, HDR_GPA, 16 + 1024), *st = gpa(&vm, STAT_GPA, 1);
	struct virtq_used_elem e = {0};
	put_le32(hd, BLK_T_OUT);
	put_le32(hd + 4, 0);
	put_le64(hd + 8, 100);
	for (unsigned i = 0; i < 1024; i++)
		wbuf[i] = (uint8_t)(i * 29 + 5);
	memcpy(hd + 16, wbuf, 1024);
	*st = 0xff;
	set_desc(&r, 4, HDR_GPA, 16 + 1024, VIRTQ_DESC_F_NEXT, 9);
	set_desc(&r, 9, STAT_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&r, 4);
	drv_kick(&r);
	CHECK(drv_wait_used(&r, &e));
	CHECK_EQ(e.id, 4);
	CHECK_EQ(e.len, 1);
	CHECK_EQ(*st, BLK_S_OK);
	memset(rbuf, 0, sizeof(rbuf));
	CHECK_EQ(blk_request(&r, BLK_T_IN, 100, rbuf, 1024, &len), BLK_S_OK);
	CHECK_EQ(len, 1025);
	CHECK(memcmp(wbuf, rbuf, 1024) == 0);

	/* Read with data and status in one writable descriptor. */
	uint8_t *ds = gpa(&vm, DATA_GPA, 513);
	memset(ds, 0, 513);
	ds[512] = 0xff;
	put_le32(hd, BLK_T_IN);
	put_le64(hd + 8, 101);
	set_desc(&r, 2, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 6);
	set_desc(&r, 6, DATA_GPA, 513, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&r, 2);
	drv_kick(&r);
	CHECK(drv_wait_used(&r, &e));
	CHECK_EQ(e.id, 2);
	CHECK_EQ(e.len, 513);
	CHECK_EQ(ds[512], BLK_S_OK);
	CHECK(memcmp(ds, wbuf + 512, 512) == 0);

	/* The image file has the data where the guest put it. */
	int fd = open(k.path, O_RDONLY);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK_EQ(pread(fd, rbuf, 1024, 100 * 512), 1024);
		CHECK(memcmp(wbuf, rbuf, 1024) == 0);
		close(fd);
	}
	CHECK_EQ(status(d) & S_NRST, 0);
	disk_free(&k);
	vm_fini(&vm);
}

TEST(vblk_flush_errors_and_get_id)
{
	struct vm vm;
	struct disk k;
	struct drv r;
	uint8_t buf[1024];
	uint32_t len = 0;

	vm_init(&vm);
	if (!disk_new(&k, &vm, false)) {
		vm_fini(&vm);
		return;
	}
	drv_start(&r, &vm, &k.vb.vdev, blk_features());
	CHECK_EQ(blk_request(&r, BLK_T_FLUSH, 0, NULL, 0, &len), BLK_S_OK);
	CHECK_EQ(len, 1);

	/* Beyond capacity: IOERR, nothing read. */
	const uint64_t cap = DISK_SIZE / 512;
	CHECK_EQ(blk_request(&r, BLK_T_IN, cap, buf, 512, &len), BLK_S_IOERR);
	CHECK_EQ(len, 1);
	CHECK_EQ(blk_request(&r, BLK_T_IN, cap - 1, buf, 1024, NULL), BLK_S_IOERR);
	CHECK_EQ(blk_request(&r, BLK_T_IN, ~0ull, buf, 512, NULL), BLK_S_IOERR);
	CHECK_EQ(blk_request(&r, BLK_T_OUT, cap, buf, 512, NULL), BLK_S_IOERR);
	/* Not a whole sector. */
	CHECK_EQ(blk_request(&r, BLK_T_IN, 0, buf, 100, NULL), BLK_S_IOERR);
	/* The last sector is fine. */
	CHECK_EQ(blk_request(&r, BLK_T_IN, cap - 1, buf, 512, NULL), BLK_S_OK);
	CHECK_EQ(buf[0], pattern((cap - 1) * 512));

	/* Unknown request type. */
	CHECK_EQ(blk_request(&r, 0x77, 0, NULL, 0, &len), BLK_S_UNSUPP);
	CHECK_EQ(blk_request(&r, 0x77, 0, buf, 512, NULL), BLK_S_UNSUPP);
	/* DISCARD was not negotiated: unsupported. */
	CHECK_EQ(blk_request(&r, 11, 0, buf, 16, NULL), BLK_S_UNSUPP);

	/* GET_ID: the serial, NUL-padded to 20 bytes. */
	memset(buf, 0xee, 20);
	CHECK_EQ(blk_request(&r, BLK_T_GET_ID, 0, buf, 20, &len), BLK_S_OK);
	CHECK_EQ(len, 21);
	CHECK(memcmp(buf, "vmstack-serial-1\0\0\0\0", 20) == 0);
	/* A shorter buffer gets a prefix. */
	memset(buf, 0xee, 20);
	CHECK_EQ(blk_request(&r, BLK_T_GET_ID, 0, buf, 7, &len), BLK_S_OK);
	CHECK_EQ(len, 8);
	CHECK(memcmp(buf, "vmstack", 7) == 0);
	CHECK_EQ(buf[7], 0xee);

	/* The file is untouched by all of that, and the device still healthy. */
	CHECK(file_is_pattern(&k));
	CHECK_EQ(status(&k.vb.vdev) & S_NRST, 0);
	CHECK_EQ(blk_request(&r, BLK_T_IN, 0, buf, 512, NULL), BLK_S_OK);
	disk_free(&k);
	vm_fini(&vm);
}

TEST(vblk_readonly_rejects_writes)
{
	struct vm vm;
	struct disk k;
	struct drv r;
	uint8_t buf[512];
	uint32_t len = 0;

	vm_init(&vm);
	if (!disk_new(&k, &vm, true)) {
		vm_fini(&vm);
		return;
	}
	CHECK(device_features(&k.vb.vdev) & BLK_F_RO);
	drv_start(&r, &vm, &k.vb.vdev, blk_features() | BLK_F_RO);
	memset(buf, 0x5a, sizeof(buf));
	CHECK_EQ(blk_request(&r, BLK_T_OUT, 0, buf, 512, &len), BLK_S_IOERR);
	CHECK_EQ(len, 1);
	CHECK_EQ(blk_request(&r, BLK_T_OUT, 7, buf, 512, NULL), BLK_S_IOERR);
	CHECK_EQ(blk_request(&r, BLK_T_IN, 7, buf, 512, &len), BLK_S_OK);
	CHECK_EQ(len, 513);
	CHECK_EQ(buf[0], pattern(7 * 512));
	CHECK_EQ(blk_request(&r, BLK_T_FLUSH, 0, NULL, 0, NULL), BLK_S_OK);
	CHECK(file_is_pattern(&k));
	disk_free(&k);
	vm_fini(&vm);
}

TEST(vblk_chain_without_status_byte)
{
	struct vm vm;
	struct disk k;
	struct drv r;
	struct virtq_used_elem e = {0};
	uint8_t buf[512];

	vm_init(&vm);
	if (!disk_new(&k, &vm, false)) {
		vm_fini(&vm);
		return;
	}
	drv_start(&r, &vm, &k.vb.vdev, blk_features());
	uint8_t *hdr = gpa(&vm, HDR_GPA, 16);
	put_le32(hdr, BLK_T_OUT);
	put_le64(hdr + 8, 0);
	memset(gpa(&vm, DATA_GPA, 512), 0x33, 512);
	/* All readable: header, data, no status. */
	set_desc(&r, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(&r, 1, DATA_GPA, 512, 0, 0);
	drv_add(&r, 0);
	drv_kick(&r);
	CHECK(drv_wait_used(&r, &e));
	CHECK_EQ(e.id, 0);
	CHECK_EQ(e.len, 0);
	/* Just a header. */
	put_le32(hdr, BLK_T_IN);
	set_desc(&r, 5, HDR_GPA, 16, 0, 0);
	drv_add(&r, 5);
	drv_kick(&r);
	CHECK(drv_wait_used(&r, &e));
	CHECK_EQ(e.id, 5);
	CHECK_EQ(e.len, 0);
	/* A header shorter than 16 bytes: IOERR. */
	uint8_t *st = gpa(&vm, STAT_GPA, 1);
	*st = 0xff;
	set_desc(&r, 6, HDR_GPA, 8, VIRTQ_DESC_F_NEXT, 7);
	set_desc(&r, 7, STAT_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&r, 6);
	drv_kick(&r);
	CHECK(drv_wait_used(&r, &e));
	CHECK_EQ(e.id, 6);
	CHECK_EQ(*st, BLK_S_IOERR);
	/* Nothing was written; the device still works. */
	CHECK(file_is_pattern(&k));
	CHECK_EQ(blk_request(&r, BLK_T_IN, 0, buf, 512, NULL), BLK_S_OK);
	CHECK_EQ(buf[1], pattern(1));
	CHECK_EQ(status(&k.vb.vdev) & S_NRST, 0);
	disk_free(&k);
	vm_fini(&vm);
}

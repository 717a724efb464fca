/* test_virtio_state.c: virtio-pci snapshot: quiesce, save, load into a fresh device, carry on. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "block.h"
#include "config.h"
#include "guest_mem.h"
#include "iobus.h"
#include "msix.h"
#include "pci.h"
#include "state_util.h"
#include "test.h"
#include "util.h"
#include "virtio_blk.h"
#include "virtio_console.h"
#include "virtio_pci.h"
#include "virtio_rng.h"
#include "virtq.h"

#define RAM_SIZE  (16 * MiB)
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

#define F_VERSION_1  (1ull << VIRTIO_F_VERSION_1)
#define F_EVENT_IDX  (1ull << VIRTIO_F_EVENT_IDX)
#define BLK_FEATURES (F_VERSION_1 | 1ull << 2 | 1ull << 6 | 1ull << 9)

#define RNG_INST VIRTIO_PCI_STATE_INST(VIRTIO_ID_RNG, 0)

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

/* Guest RAM of `from` into `to`, as restoring the snapshot's memory file does. */
static void vm_copy_ram(struct vm *to, struct vm *from)
{
	memcpy(gpa(to, 0, RAM_SIZE), gpa(from, 0, RAM_SIZE), RAM_SIZE);
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

/* The driver's view of queue 0 in vm's RAM (after a restore: in the copy). */
static void drv_attach(struct drv *r, struct vm *vm, struct virtio_dev *d, uint16_t n)
{
	memset(r, 0, sizeof(*r));
	r->vm = vm;
	r->d = d;
	r->size = n;
	r->desc = gpa(vm, DESC_GPA, 16ull * n);
	r->avail = gpa(vm, AVAIL_GPA, 6 + 2ull * n);
	r->used = gpa(vm, USED_GPA, 6 + 8ull * n);
	r->avail_idx = r->avail->idx;
	r->used_seen = r->used->idx;
}

/* 3.1.1 with queue 0 of size n; MSI-X vectors: config 0, queue 1. */
static void drv_start(struct drv *r, struct vm *vm, struct virtio_dev *d, uint64_t features,
                      uint16_t n)
{
	memset(gpa(vm, DESC_GPA, 16ull * n), 0, 16ull * n);
	memset(gpa(vm, AVAIL_GPA, 6 + 2ull * n), 0, 6 + 2ull * n);
	wr(d, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	wr(d, VIRTIO_PCI_COMMON_STATUS, 1, S_ACK | S_DRV);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	wr(d, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)features);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(d, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(features >> 32));
	wr(d, VIRTIO_PCI_COMMON_STATUS, 1, S_ACK | S_DRV | S_FOK);
	wr(d, VIRTIO_PCI_COMMON_MSIX, 2, 0);
	wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
	wr(d, VIRTIO_PCI_COMMON_Q_SIZE, 2, n);
	wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
	wr(d, VIRTIO_PCI_COMMON_Q_DESC, 8, DESC_GPA);
	wr(d, VIRTIO_PCI_COMMON_Q_DRIVER, 8, AVAIL_GPA);
	wr(d, VIRTIO_PCI_COMMON_Q_DEVICE, 8, USED_GPA);
	wr(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
	wr(d, VIRTIO_PCI_COMMON_STATUS, 1, S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK_EQ(status(d), S_ACK | S_DRV | S_FOK | S_DOK);
	drv_attach(r, vm, d, n);
	CHECK_EQ(r->used_seen, 0);
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

/* One 64-byte entropy request through descriptor `head`; returns the used length. */
static uint32_t rng_request(struct drv *r, uint16_t head)
{
	struct virtq_used_elem e = {0};

	set_desc(r, head, DATA_GPA + 64ull * head, 64, VIRTQ_DESC_F_WRITE, 0);
	r->avail->ring[r->size] = r->used_seen; /* used_event: interrupt for this one */
	drv_add(r, head);
	drv_kick(r);
	if (!drv_wait_used(r, &e))
		return 0;
	CHECK_EQ(e.id, head);
	return e.len;
}

static unsigned msix_cap_of(struct vm *vm, struct virtio_dev *d)
{
	unsigned s = d->pci.slot, off = pci_cfg_read(&vm->bus, s, PCI_CAP_PTR, 1);

	for (unsigned guard = 0; off && guard < 48; guard++) {
		if (pci_cfg_read(&vm->bus, s, off, 1) == PCI_CAP_ID_MSIX)
			return off;
		off = pci_cfg_read(&vm->bus, s, off + 1, 1);
	}
	return 0;
}

/* The guest turns MSI-X on and programs vectors 0 and 1, unmasked. */
static void msix_setup(struct vm *vm, struct virtio_dev *d)
{
	unsigned mx = msix_cap_of(vm, d);

	CHECK(mx != 0);
	pci_cfg_write(&vm->bus, d->pci.slot, mx + 2, 2, MSIX_CTRL_ENABLE);
	for (unsigned v = 0; v < 2; v++) {
		uint32_t dw[4] = {0xfee00000, 0, 0x4030 + v, 0};
		for (unsigned i = 0; i < 4; i++)
			CHECK(io_bus_write(&vm->mmio, d->pci.bar[0].addr + 16 * v + 4 * i, &dw[i],
			                   4));
	}
}

static uint64_t fd_count(int fd)
{
	uint64_t n = 0;
	uint64_t end = now_ms() + WAIT_MS;

	while (read(fd, &n, sizeof(n)) != sizeof(n) && now_ms() < end)
		sleep_ms(1);
	return n;
}

/* Both devices answer every register read alike: common config, ISR, PCI config, MSI-X. */
static void devices_same(struct vm *va, struct virtio_dev *a, struct vm *vb, struct virtio_dev *b)
{
	for (unsigned off = 0; off < VIRTIO_PCI_COMMON_LEN; off++)
		CHECK_EQ(rd(b, off, 1), rd(a, off, 1));
	for (unsigned sel = 0; sel < 2; sel++) {
		wr(a, VIRTIO_PCI_COMMON_GFSELECT, 4, sel);
		wr(b, VIRTIO_PCI_COMMON_GFSELECT, 4, sel);
		CHECK_EQ(rd(b, VIRTIO_PCI_COMMON_GF, 4), rd(a, VIRTIO_PCI_COMMON_GF, 4));
	}
	CHECK_EQ(rd(b, VIRTIO_PCI_ISR_OFF, 1), rd(a, VIRTIO_PCI_ISR_OFF, 1));
	for (unsigned off = 0; off < PCI_CFG_SIZE; off += 4)
		CHECK_EQ(pci_cfg_read(&vb->bus, b->pci.slot, off, 4),
		         pci_cfg_read(&va->bus, a->pci.slot, off, 4));
	for (unsigned off = 0; off < 16 * b->msix.nvec; off += 4) {
		uint32_t x = 0, y = 0;
		CHECK(io_bus_read(&va->mmio, a->pci.bar[0].addr + off, &x, 4));
		CHECK(io_bus_read(&vb->mmio, b->pci.bar[0].addr + off, &y, 4));
		CHECK_EQ(y, x);
	}
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

/* A quiesced device's state, read back. */
static struct snap_reader *rng_snapshot(struct virtio_rng *rng)
{
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r;

	virtio_pci_quiesce(&rng->vdev);
	CHECK_EQ(virtio_rng_save(rng, w, 0), 0);
	virtio_pci_unquiesce(&rng->vdev);
	r = st_reopen(w);
	snap_writer_free(w);
	return r;
}

/* --- tests --- */

TEST(vstate_rng_roundtrip_with_msix)
{
	struct vm va, vb;
	struct virtio_rng ra, rb;
	struct virtio_dev *a, *b;
	struct drv da, db;
	struct snap_reader *r;
	char err[256] = "";

	vm_init(&va);
	vm_init(&vb);
	a = rng_new(&ra, &va);
	b = rng_new(&rb, &vb);
	drv_start(&da, &va, a, F_VERSION_1 | F_EVENT_IDX, QSIZE);
	msix_setup(&va, a);
	for (uint16_t i = 0; i < 3; i++)
		CHECK_EQ(rng_request(&da, i), 64);
	CHECK(fd_count(a->msix.vec[1].fd) >= 1);
	wr(a, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);

	r = rng_snapshot(&ra);
	vm_copy_ram(&vb, &va);
	CHECK_EQ(virtio_rng_load(&rb, r, 0, err, sizeof(err)), 0);
	if (err[0])
		fprintf(stderr, "%s\n", err);
	devices_same(&va, a, &vb, b);
	CHECK_EQ(status(b), S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK(msix_enabled(&b->msix));

	/* The driver carries on in the restored RAM: the next request lands at used[3]. */
	drv_attach(&db, &vb, b, QSIZE);
	CHECK_EQ(db.used_seen, 3);
	CHECK_EQ(rng_request(&db, 7), 64);
	CHECK_EQ(db.used->idx, 4);
	CHECK_EQ(db.used->ring[3].id, 7);
	CHECK_EQ(fd_count(b->msix.vec[1].fd), 1);
	/* The original does the same with the same request. */
	CHECK_EQ(rng_request(&da, 7), 64);
	CHECK_EQ(da.used->ring[3].id, 7);
	CHECK_EQ(fd_count(a->msix.vec[1].fd), 1);
	/* EVENT_IDX: the device asks for a kick at the next entry in both. */
	CHECK_EQ(get_le16((const uint8_t *)&db.used->ring[QSIZE]),
	         get_le16((const uint8_t *)&da.used->ring[QSIZE]));
	CHECK_EQ(status(b) & S_NRST, 0);
	snap_reader_free(r);
	virtio_rng_destroy(&ra);
	virtio_rng_destroy(&rb);
	vm_fini(&va);
	vm_fini(&vb);
}

TEST(vstate_quiesced_device_waits_then_loaded_one_catches_up)
{
	struct vm va, vb;
	struct virtio_rng ra, rb;
	struct virtio_dev *a;
	struct drv da;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r;
	char err[256] = "";
	uint16_t *used_b;

	vm_init(&va);
	vm_init(&vb);
	a = rng_new(&ra, &va);
	rng_new(&rb, &vb);
	drv_start(&da, &va, a, F_VERSION_1, QSIZE);
	CHECK_EQ(rng_request(&da, 0), 64);

	/* Quiesced: a kick waits (the iothread is paused between callbacks). */
	virtio_pci_quiesce(a);
	set_desc(&da, 1, DATA_GPA + 64, 64, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&da, 1);
	drv_kick(&da);
	sleep_ms(50);
	CHECK_EQ(__atomic_load_n(&da.used->idx, __ATOMIC_ACQUIRE), 1);
	CHECK_EQ(virtio_rng_save(&ra, w, 0), 0);
	vm_copy_ram(&vb, &va);
	virtio_pci_unquiesce(a);
	/* Unquiesced, the original gets to it. */
	struct virtq_used_elem e;
	CHECK(drv_wait_used(&da, &e));
	CHECK_EQ(e.id, 1);

	/* The restored device was never kicked for it, yet handles it at load. */
	r = st_reopen(w);
	CHECK_EQ(virtio_rng_load(&rb, r, 0, err, sizeof(err)), 0);
	used_b = gpa(&vb, USED_GPA + 2, 2);
	for (uint64_t end = now_ms() + WAIT_MS;
	     __atomic_load_n(used_b, __ATOMIC_ACQUIRE) != 2 && now_ms() < end;)
		sleep_ms(1);
	CHECK_EQ(*used_b, 2);
	CHECK_EQ(((struct virtq_used *)gpa(&vb, USED_GPA, 16))->ring[1].id, 1);
	CHECK_EQ(rb.bytes, 64);
	snap_reader_free(r);
	snap_writer_free(w);
	virtio_rng_destroy(&ra);
	virtio_rng_destroy(&rb);
	vm_fini(&va);
	vm_fini(&vb);
}

/* --- virtio-blk --- */

#define DISK_SIZE (1 * MiB)
#define BQSIZE    64
#define NWRITES   8

struct disk {
	char path[64];
	struct disk_config dc;
	struct virtio_blk vb;
	bool ok;
};

/* A disk on `path` (created zeroed if `fresh`). */
static bool disk_open(struct disk *k, struct vm *vm, const char *path, bool fresh)
{
	struct blk_opts o = {.cache = BLK_CACHE_WRITEBACK};
	char err[256] = "";
	int fd, r;

	memset(k, 0, sizeof(*k));
	snprintf(k->path, sizeof(k->path), "%s", path);
	if (fresh) {
		fd = mkstemp(k->path);
		CHECK(fd >= 0);
		if (fd < 0)
			return false;
		CHECK_EQ(ftruncate(fd, DISK_SIZE), 0);
		close(fd);
	}
	o.path = k->path;
	k->dc.blk = blk_open(&o, err, sizeof(err));
	if (!k->dc.blk) {
		fprintf(stderr, "blk_open: %s\n", err);
		CHECK(!"blk_open");
		return false;
	}
	k->dc.queues = 1;
	strcpy(k->dc.serial, "vmstack-state");
	r = virtio_blk_create(&k->vb, 0, &k->dc, NULL, &vm->mem, &vm->bus, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "virtio_blk_create: %s\n", err);
		CHECK_EQ(r, 0);
		blk_close(k->dc.blk);
		return false;
	}
	k->ok = true;
	return true;
}

static void disk_close(struct disk *k)
{
	if (!k->ok)
		return;
	virtio_blk_destroy(&k->vb);
	blk_close(k->dc.blk);
	unlink(k->path);
}

static void file_copy(const char *to, const char *from)
{
	uint8_t buf[65536];
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ssize_t n;

	CHECK(in >= 0 && out >= 0);
	while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
		CHECK_EQ(write(out, buf, (size_t)n), n);
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
}

/* Request i: write sector 8*i with bytes i+1, through descriptors 3i..3i+2. */
static void blk_add_write(struct drv *r, unsigned i)
{
	uint8_t *hdr = gpa(r->vm, HDR_GPA + 16ull * i, 16);
	uint8_t *st = gpa(r->vm, STAT_GPA + i, 1);

	put_le32(hdr, 1);
	put_le32(hdr + 4, 0);
	put_le64(hdr + 8, 8ull * i);
	*st = 0xff;
	memset(gpa(r->vm, DATA_GPA + 512ull * i, 512), (int)(i + 1), 512);
	set_desc(r, 3 * i, HDR_GPA + 16ull * i, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(3 * i + 1));
	set_desc(r, 3 * i + 1, DATA_GPA + 512ull * i, 512, VIRTQ_DESC_F_NEXT,
	         (uint16_t)(3 * i + 2));
	set_desc(r, 3 * i + 2, STAT_GPA + i, 1, VIRTQ_DESC_F_WRITE, 0);
	drv_add(r, (uint16_t)(3 * i));
}

/* Read sector `sector` through descriptors 60..62; returns the status byte. */
static uint8_t blk_read(struct drv *r, uint64_t sector, uint8_t *out)
{
	uint8_t *hdr = gpa(r->vm, HDR_GPA + 0x400, 16), *st = gpa(r->vm, STAT_GPA + 0x100, 1);
	struct virtq_used_elem e = {0};

	put_le32(hdr, 0);
	put_le32(hdr + 4, 0);
	put_le64(hdr + 8, sector);
	*st = 0xff;
	set_desc(r, 60, HDR_GPA + 0x400, 16, VIRTQ_DESC_F_NEXT, 61);
	set_desc(r, 61, DATA_GPA + 0x10000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 62);
	set_desc(r, 62, STAT_GPA + 0x100, 1, VIRTQ_DESC_F_WRITE, 0);
	drv_add(r, 60);
	drv_kick(r);
	if (!drv_wait_used(r, &e))
		return 0xee;
	CHECK_EQ(e.id, 60);
	memcpy(out, gpa(r->vm, DATA_GPA + 0x10000, 512), 512);
	return *st;
}

TEST(vstate_blk_quiesce_drains_and_restores)
{
	struct vm va, vb;
	struct disk ka, kb;
	struct drv da, db;
	struct snap_writer *w;
	struct snap_reader *r = NULL;
	char err[256] = "", copy[80];
	uint8_t buf[512] = {0};

	vm_init(&va);
	vm_init(&vb);
	if (!disk_open(&ka, &va, "/tmp/vmstack-test-vstate-XXXXXX", true))
		goto out;
	snprintf(copy, sizeof(copy), "%s.copy", ka.path);
	drv_start(&da, &va, &ka.vb.vdev, BLK_FEATURES, BQSIZE);
	for (unsigned round = 0; round < 5; round++) {
		/* Writes kicked and at once quiesced: whatever the device took is finished. */
		for (unsigned i = 0; i < NWRITES; i++)
			blk_add_write(&da, i);
		drv_kick(&da);
		virtio_pci_quiesce(&ka.vb.vdev);
		struct virtq *vq = &ka.vb.vdev.q[0].vq;
		CHECK_EQ(vq->last_avail, vq->used_idx);
		CHECK_EQ(__atomic_load_n(&da.used->idx, __ATOMIC_ACQUIRE), vq->used_idx);
		CHECK_EQ(ka.vb.quiesce_err, 0);
		w = snap_writer_new();
		CHECK_EQ(virtio_blk_save(&ka.vb, w, 1), 0);
		if (round == 4) {
			/* What the snapshot takes: RAM, the (flushed) image, the state. */
			vm_copy_ram(&vb, &va);
			file_copy(copy, ka.path);
			r = st_reopen(w);
		}
		virtio_pci_unquiesce(&ka.vb.vdev);
		snap_writer_free(w);
		for (unsigned i = 0; i < NWRITES; i++) {
			struct virtq_used_elem e;
			CHECK(drv_wait_used(&da, &e));
		}
	}
	CHECK_EQ(da.used->idx, 5 * NWRITES);

	if (!disk_open(&kb, &vb, copy, false)) {
		snap_reader_free(r);
		disk_close(&ka);
		goto out;
	}
	CHECK_EQ(virtio_blk_load(&kb.vb, r, 0, err, sizeof(err)), -ENOENT);
	err[0] = '\0';
	CHECK_EQ(virtio_blk_load(&kb.vb, r, 1, err, sizeof(err)), 0);
	if (err[0])
		fprintf(stderr, "%s\n", err);
	/* Writes the device had not taken at the snapshot are done after the load. */
	drv_attach(&db, &vb, &kb.vb.vdev, BQSIZE);
	db.used_seen = (uint16_t)(5 * NWRITES - NWRITES);
	for (unsigned i = 0; i < NWRITES; i++) {
		struct virtq_used_elem e;
		CHECK(drv_wait_used(&db, &e));
		CHECK_EQ(*(uint8_t *)gpa(&vb, STAT_GPA + e.id / 3, 1), 0);
	}
	for (unsigned i = 0; i < NWRITES; i++) {
		CHECK_EQ(blk_read(&db, 8ull * i, buf), 0);
		CHECK_EQ(buf[0], i + 1);
		CHECK_EQ(buf[511], i + 1);
	}
	CHECK_EQ(status(&kb.vb.vdev) & S_NRST, 0);
	snap_reader_free(r);
	disk_close(&kb);
	disk_close(&ka);
out:
	vm_fini(&va);
	vm_fini(&vb);
}

/* --- hostile state --- */

static void expect_bad(int ret, const char *err, const char *what)
{
	CHECK_EQ(ret, -EINVAL);
	if (!strstr(err, what)) {
		fprintf(stderr, "error \"%s\" does not say \"%s\"\n", err, what);
		CHECK(!"error message");
	}
}

/* Loads t into a fresh rng on vm; returns what the load returned. */
static int load_fresh(struct vm *vm, const struct snap_reader *t, char *err, size_t errlen)
{
	struct virtio_rng rng;
	int ret;

	err[0] = '\0';
	rng_new(&rng, vm);
	ret = virtio_rng_load(&rng, t, 0, err, errlen);
	virtio_rng_destroy(&rng);
	return ret;
}

TEST(vstate_load_rejects_bad_state)
{
	static const struct st_sect list[] = {{"virtio-pci", RNG_INST},
	                                      {"virtio-pci.q", RNG_INST * 256},
	                                      {"pci", RNG_INST},
	                                      {"msix", RNG_INST}};
	static const struct {
		const char *tag;
		size_t off;
		uint64_t val;
		size_t width;
		const char *what;
	} bad[] = {
	    {"virtio-pci.q", 24, 3000, 2, "virtio-pci.q 262144/0: queue size 3000 > 64"},
	    {"virtio-pci.q", 24, 12, 2, "queue size 12 is not a power of two"},
	    {"virtio-pci.q", 24, 0, 2, "queue size 0"},
	    {"virtio-pci.q", 26, 9, 2, "vector 9 >= 2"},
	    {"virtio-pci.q", 28, 2, 1, "enabled 2"},
	    {"virtio-pci.q", 29, 3, 1, "broken 3"},
	    {"virtio-pci.q", 34, 102, 2, "ahead"},
	    {"virtio-pci.q", 36, 0, 2, "2 requests in flight"},
	    {"virtio-pci.q", 0, RAM_SIZE + 0x1000, 8, "not in guest RAM"},
	    {"virtio-pci.q", 16, USED_GPA + 2, 8, "misaligned"},
	    {"virtio-pci", 32, 2, 2, "not the same device: 2 queues"},
	    {"virtio-pci", 0, 0, 8, "not the same device: features"},
	    {"virtio-pci", 34, S_ACK | S_DRV | S_FOK | S_DOK | S_NRST, 1, "NEEDS_RESET"},
	    {"virtio-pci", 34, S_ACK | S_DRV | S_DOK, 1, "without FEATURES_OK"},
	    {"virtio-pci", 8, 0, 8, "never accepted"},
	    {"virtio-pci", 8, ~0ull, 8, "never accepted"},
	    {"virtio-pci", 30, 7, 2, "msix_config vector 7"},
	    {"virtio-pci", 35, 2, 1, "needs_reset 2"},
	    {"virtio-pci", 36, 4, 1, "ISR"},
	    {"pci", 0, 0x1af5, 2, "not the same device"},
	    {"msix", 0, 3, 2, "not the same device"},
	};
	struct vm va, vb;
	struct virtio_rng ra;
	struct drv da;
	struct snap_reader *r, *t;
	char err[256];

	vm_init(&va);
	vm_init(&vb);
	rng_new(&ra, &va);
	drv_start(&da, &va, &ra.vdev, F_VERSION_1, QSIZE);
	CHECK_EQ(rng_request(&da, 0), 64);
	CHECK_EQ(rng_request(&da, 1), 64);
	r = rng_snapshot(&ra);
	vm_copy_ram(&vb, &va);
	CHECK_EQ(load_fresh(&vb, r, err, sizeof(err)), 0);

	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		uint32_t inst = strcmp(bad[i].tag, "virtio-pci.q") ? RNG_INST : RNG_INST * 256;
		t = st_poke(r, list, ARRAY_SIZE(list), bad[i].tag, inst, bad[i].off, bad[i].val,
		            bad[i].width);
		expect_bad(load_fresh(&vb, t, err, sizeof(err)), err, bad[i].what);
		snap_reader_free(t);
	}
	/* Wrong lengths and missing sections. */
	t = st_edit(r, list, 4, "virtio-pci.q", RNG_INST * 256, 0, NULL, 0, 47);
	expect_bad(load_fresh(&vb, t, err, sizeof(err)), err, "47 bytes");
	snap_reader_free(t);
	t = st_edit(r, list, 4, "virtio-pci", RNG_INST, 0, NULL, 0, 4000);
	expect_bad(load_fresh(&vb, t, err, sizeof(err)), err, "4000 bytes");
	snap_reader_free(t);
	for (unsigned i = 0; i < ARRAY_SIZE(list); i++) {
		t = st_edit(r, list, 4, list[i].tag, list[i].inst, 0, NULL, 0, ST_DROP);
		CHECK_EQ(load_fresh(&vb, t, err, sizeof(err)), -ENOENT);
		CHECK(strstr(err, list[i].tag) != NULL);
		snap_reader_free(t);
	}
	/* A queue that was broken with bad rings is restored broken, not refused. */
	static const uint8_t broken[] = {1};
	t = st_edit(r, list, 4, "virtio-pci.q", RNG_INST * 256, 29, broken, 1, ST_SAME);
	CHECK_EQ(load_fresh(&vb, t, err, sizeof(err)), 0);
	snap_reader_free(t);

	/* Another kind of device: its transport is not this one's. */
	struct virtio_console vc;
	int devnull = open("/dev/null", O_WRONLY);
	CHECK_EQ(virtio_console_create(&vc, -1, devnull, NULL, &vb.mem, &vb.bus, err, sizeof(err)),
	         0);
	expect_bad(virtio_pci_load(&vc.vdev, r, RNG_INST, err, sizeof(err)), err,
	           "not the same device");
	CHECK_EQ(virtio_console_load(&vc, r, 0, err, sizeof(err)), -ENOENT);
	virtio_console_destroy(&vc);
	close(devnull);
	snap_reader_free(r);
	virtio_rng_destroy(&ra);
	vm_fini(&va);
	vm_fini(&vb);
}

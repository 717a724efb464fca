/*
 * virtio_blk.c: drives the virtio-blk PCI function: capacity, reads, writes (one buffer,
 * two data segments, an indirect table), flush, GET_ID, errors past the end, read-only
 * disks, the MSI-X pending bit of a masked vector and the ISR without MSI-X.
 *
 * What it writes (unless the disk is read-only), for the host to check:
 *   sector 1  "vmstack-blk-test" x 32
 *   sector 2  "vmstack-sector-2" x 32  } one request, two data descriptors
 *   sector 3  "vmstack-sector-3" x 32  }
 *   sector 4  "vmstack-indirect" x 32  (only with VIRTIO_F_INDIRECT_DESC; "blk: indirect ok")
 */
#include "virtio.h"

#define SECTOR 512

#define VIRTIO_BLK_F_SEG_MAX  2
#define VIRTIO_BLK_F_RO       5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH    9

#define VIRTIO_BLK_T_IN     0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

/* Device config offsets (5.2.4). */
#define BLK_CFG_CAPACITY 0
#define BLK_CFG_SEG_MAX  12
#define BLK_CFG_BLK_SIZE 20

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

static struct virtio_pci dev;
static struct vq q;
static volatile struct blk_hdr *hdr;
static volatile uint8_t *status;
static uint32_t last_len;

static bool has(unsigned bit)
{
	return dev.driver_features & (1ull << bit);
}

/* One request: header, ndata data buffers, status. Returns the status byte. */
static uint8_t blk_request(uint32_t type, uint64_t sector, const struct vbuf *data, unsigned ndata)
{
	struct vbuf bufs[6];

	if (ndata > 4)
		fail("blk_request: too many buffers");
	hdr->type = type;
	hdr->reserved = 0;
	hdr->sector = sector;
	*status = 0xee;
	bufs[0] = (struct vbuf){(void *)hdr, sizeof(*hdr), false};
	for (unsigned i = 0; i < ndata; i++)
		bufs[1 + i] = data[i];
	bufs[1 + ndata] = (struct vbuf){(void *)status, 1, true};
	barrier();
	last_len = vq_transfer(&q, bufs, ndata + 2);
	return *status;
}

static void fill_pattern(uint8_t *buf, const char *pat)
{
	for (unsigned i = 0; i < SECTOR; i++)
		buf[i] = (uint8_t)pat[i % 16];
}

static bool check_pattern(const uint8_t *buf, const char *pat)
{
	for (unsigned i = 0; i < SECTOR; i++) {
		if (buf[i] != (uint8_t)pat[i % 16])
			return false;
	}
	return true;
}

static void expect_ok(uint8_t st, const char *what, uint32_t want_len)
{
	if (st != VIRTIO_BLK_S_OK)
		failf("blk: %s: status %u", what, st);
	if (last_len != want_len)
		failf("blk: %s: used.len %u, expected %u (bytes the device wrote)", what, last_len,
		      want_len);
}

/* A write whose only descriptor in the ring points to an indirect table of three. */
static uint8_t write_indirect(uint64_t sector, uint8_t *buf)
{
	volatile struct vring_desc *table = dma_alloc(3 * sizeof(struct vring_desc), 16);
	volatile struct vring_desc *head = &q.desc[0];
	uint32_t id, len;
	int r;

	hdr->type = VIRTIO_BLK_T_OUT;
	hdr->reserved = 0;
	hdr->sector = sector;
	*status = 0xee;
	table[0] =
	    (struct vring_desc){(uint64_t)(uintptr_t)hdr, sizeof(*hdr), VRING_DESC_F_NEXT, 1};
	table[1] = (struct vring_desc){(uint64_t)(uintptr_t)buf, SECTOR, VRING_DESC_F_NEXT, 2};
	table[2] = (struct vring_desc){(uint64_t)(uintptr_t)status, 1, VRING_DESC_F_WRITE, 0};
	head->addr = (uint64_t)(uintptr_t)table;
	head->len = 3 * sizeof(struct vring_desc);
	head->flags = VRING_DESC_F_INDIRECT;
	head->next = 0;
	vq_publish(&q, 0);
	vq_notify(&q);
	r = vq_wait(&q, 5000, &id, &len);
	if (r != VQ_DONE)
		failf("blk: indirect write: %s", r == VQ_TIMEOUT ? "timeout" : "NEEDS_RESET");
	if (id != 0)
		failf("blk: indirect write: used id %u", id);
	last_len = len;
	return *status;
}

static void setup(void)
{
	const char *err;
	uint64_t want = 1ull << VIRTIO_BLK_F_RO | 1ull << VIRTIO_BLK_F_FLUSH |
	                1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_BLK_SIZE |
	                1ull << VIRTIO_F_INDIRECT_DESC;

	virtio_find(&dev, VIRTIO_ID_BLOCK);
	if (!dev.cap_device)
		fail("blk: no device configuration capability");
	if (!dev.cap_msix || dev.msix_size < 2)
		fail("blk: no MSI-X capability with at least 2 vectors");
	err = virtio_negotiate(&dev, want);
	if (err)
		failf("blk: %s", err);

	/* MSI-X on, function unmasked, every vector still masked in its table entry. */
	msix_enable(&dev, true);
	if (!(pci_read16(dev.slot, dev.cap_msix + MSIX_CTRL) & MSIX_CTRL_ENABLE))
		fail("blk: MSI-X enable bit does not stick");
	for (unsigned v = 0; v < dev.msix_size; v++) {
		if (!(msix_entry_read(&dev, v, MSIX_ENTRY_CTRL) & MSIX_ENTRY_MASKED))
			failf("blk: MSI-X vector %u is not masked after reset", v);
	}

	err = vq_setup(&dev, &q, 0, 16);
	if (err)
		failf("blk: queue 0: %s", err);
	vc_write16(&dev, VC_Q_SELECT, 0);
	vc_write16(&dev, VC_Q_MSIX, 1);
	if (vc_read16(&dev, VC_Q_MSIX) != 1)
		failf("blk: queue_msix_vector reads 0x%x after writing 1",
		      vc_read16(&dev, VC_Q_MSIX));
	virtio_add_status(&dev, VIRTIO_STATUS_DRIVER_OK);
	if (!(virtio_status(&dev) & VIRTIO_STATUS_DRIVER_OK) ||
	    (virtio_status(&dev) & VIRTIO_STATUS_NEEDS_RESET))
		failf("blk: status 0x%x after DRIVER_OK", virtio_status(&dev));

	hdr = dma_alloc(sizeof(*hdr), 16);
	status = dma_alloc(1, 1);
}

void guest_main(struct boot_params *bp)
{
	static const char *const pats[] = {"vmstack-blk-test", "vmstack-sector-2",
	                                   "vmstack-sector-3", "vmstack-indirect"};
	uint8_t *sec0, *w1, *w2, *w3, *w4, *rd, *id;
	uint64_t cap;
	unsigned nwritten = 3;
	uint8_t st, isr;

	(void)bp;
	print("virtio_blk: start\n");
	pci_scan_print();
	setup();

	cap = virtio_cfg_read64(&dev, BLK_CFG_CAPACITY);
	print("blk: capacity %lu sectors\n", cap);
	if (has(VIRTIO_BLK_F_SEG_MAX))
		print("blk: seg_max %u\n", virtio_cfg_read32(&dev, BLK_CFG_SEG_MAX));
	if (has(VIRTIO_BLK_F_BLK_SIZE))
		print("blk: blk_size %u\n", virtio_cfg_read32(&dev, BLK_CFG_BLK_SIZE));
	if (cap < 8)
		failf("blk: capacity %lu is too small for this test (want >= 8 sectors)", cap);

	sec0 = dma_alloc(SECTOR, 4096);
	w1 = dma_alloc(SECTOR, 4096);
	w2 = dma_alloc(SECTOR, 4096);
	w3 = dma_alloc(SECTOR, 4096);
	w4 = dma_alloc(SECTOR, 4096);
	rd = dma_alloc(4 * SECTOR, 4096);
	id = dma_alloc(20, 64);

	/* Sector 0, with MSI-X on and vector 1 masked: the interrupt must stay pending. */
	if (msix_pending(&dev, 1))
		fail("blk: MSI-X vector 1 pending before any request");
	st = blk_request(VIRTIO_BLK_T_IN, 0, &(struct vbuf){sec0, SECTOR, true}, 1);
	expect_ok(st, "read sector 0", SECTOR + 1);
	print("blk: sector0 ");
	print_hexbytes(sec0, 16);
	print("\n");
	if (!msix_pending(&dev, 1))
		failf("blk: MSI-X PBA 0x%x: vector 1 not pending after a request on queue 0",
		      mmio_read32(dev.msix_pba));
	print("blk: msix pending ok\n");

	/* MSI-X off: the next completion must show in the ISR, which a read clears. */
	msix_enable(&dev, false);
	(void)virtio_isr(&dev);
	memset(id, 0, 20);
	st = blk_request(VIRTIO_BLK_T_GET_ID, 0, &(struct vbuf){id, 20, true}, 1);
	isr = virtio_isr(&dev);
	if (st != VIRTIO_BLK_S_OK)
		failf("blk: GET_ID status %u", st);
	print("blk: serial ");
	for (unsigned i = 0; i < 20 && id[i]; i++)
		print_char((char)id[i]);
	print("\n");
	if (!(isr & 1))
		failf("blk: ISR 0x%x after a completion without MSI-X (want bit 0)", isr);
	isr = virtio_isr(&dev);
	if (isr != 0)
		failf("blk: ISR 0x%x on the second read (reading must clear it)", isr);
	print("blk: isr ok\n");

	if (has(VIRTIO_BLK_F_RO)) {
		print("blk: readonly\n");
		fill_pattern(w1, pats[0]);
		st = blk_request(VIRTIO_BLK_T_OUT, 1, &(struct vbuf){w1, SECTOR, false}, 1);
		print("blk: write to a read-only disk: status %u\n", st);
		if (st == VIRTIO_BLK_S_OK)
			fail("blk: a write to a read-only disk succeeded");
		if (st != VIRTIO_BLK_S_IOERR)
			failf("blk: a write to a read-only disk returned status %u, not IOERR", st);
		nwritten = 0;
	} else {
		fill_pattern(w1, pats[0]);
		fill_pattern(w2, pats[1]);
		fill_pattern(w3, pats[2]);
		fill_pattern(w4, pats[3]);
		st = blk_request(VIRTIO_BLK_T_OUT, 1, &(struct vbuf){w1, SECTOR, false}, 1);
		expect_ok(st, "write sector 1", 1);
		if (!has(VIRTIO_BLK_F_SEG_MAX) || virtio_cfg_read32(&dev, BLK_CFG_SEG_MAX) >= 2) {
			struct vbuf two[2] = {{w2, SECTOR, false}, {w3, SECTOR, false}};

			st = blk_request(VIRTIO_BLK_T_OUT, 2, two, 2);
			expect_ok(st, "write sectors 2-3 from two buffers", 1);
		} else {
			fail("blk: seg_max < 2");
		}
		if (has(VIRTIO_F_INDIRECT_DESC)) {
			st = write_indirect(4, w4);
			expect_ok(st, "indirect write of sector 4", 1);
			print("blk: indirect ok\n");
			nwritten = 4;
		} else {
			print("blk: no indirect descriptors\n");
		}
		print("blk: wrote sectors 1-%u\n", nwritten);
	}

	if (has(VIRTIO_BLK_F_FLUSH)) {
		st = blk_request(VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
		expect_ok(st, "flush", 1);
		print("blk: flush ok\n");
	} else {
		print("blk: no flush feature\n");
	}

	/* Read back sectors 1-4 in one request and compare with what was written. */
	memset(rd, 0x5a, 4 * SECTOR);
	st = blk_request(VIRTIO_BLK_T_IN, 1, &(struct vbuf){rd, 4 * SECTOR, true}, 1);
	expect_ok(st, "read sectors 1-4", 4 * SECTOR + 1);
	for (unsigned i = 0; i < nwritten; i++) {
		if (!check_pattern(rd + i * SECTOR, pats[i])) {
			print("blk: sector %u reads ", i + 1);
			print_hexbytes(rd + i * SECTOR, 16);
			print("\n");
			failf("blk: sector %u does not hold what was written", i + 1);
		}
	}
	if (nwritten)
		print("blk: readback ok\n");

	/* Past the end: the last sector plus one, and a read straddling the end. */
	st = blk_request(VIRTIO_BLK_T_IN, cap, &(struct vbuf){rd, SECTOR, true}, 1);
	if (st != VIRTIO_BLK_S_IOERR)
		failf("blk: read of sector %lu (= capacity) returned status %u, not IOERR", cap,
		      st);
	st = blk_request(VIRTIO_BLK_T_IN, cap - 1, &(struct vbuf){rd, 2 * SECTOR, true}, 1);
	if (st != VIRTIO_BLK_S_IOERR)
		failf("blk: read of sectors %lu-%lu (past the end) returned status %u, not IOERR",
		      cap - 1, cap, st);
	st = blk_request(VIRTIO_BLK_T_IN, cap - 1, &(struct vbuf){rd, SECTOR, true}, 1);
	expect_ok(st, "read of the last sector", SECTOR + 1);
	print("blk: beyond capacity ioerr ok\n");

	if (!virtio_reset(&dev))
		fail("blk: reset did not complete");
	pass();
}

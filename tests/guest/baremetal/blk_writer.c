/*
 * blk_writer.c: writes numbered 4 KiB records to the virtio-blk disk until it has written
 * one to every block, flushing after every FLUSH_EVERY records and printing
 * "writer: flushed N" once records 0..N-1 are acknowledged as stable. The crash test
 * (tests/integration/test_qcow2_vm.py) kills the monitor at a random moment and checks
 * that the image is consistent and holds every record the guest saw flushed.
 *
 * Record i goes to 4 KiB block (i * STRIDE) mod nblocks: a permutation when STRIDE is a
 * prime not dividing nblocks, so records never overwrite each other and, on qcow2, the
 * first writes each land in a new cluster (allocating writes, scattered over the disk).
 * A record is "vmstack-rec-NNNNNNNN\n" (hex i, 21 bytes) then bytes 21..4095 equal to
 * (offset * 7) & 0xff: only the header changes per record, because this guest's code runs
 * under KVM's instruction emulator on some hosts, where filling 4 KiB costs milliseconds.
 */
#include "virtio.h"

#define SECTOR      512
#define BLOCK       4096
#define STRIDE      7919
#define FLUSH_EVERY 8

#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_T_OUT   1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_S_OK    0

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

static struct virtio_pci dev;
static struct vq q;
static volatile struct blk_hdr *hdr;
static volatile uint8_t *status;

static uint8_t request(uint32_t type, uint64_t sector, void *data, uint32_t len)
{
	struct vbuf bufs[3];
	unsigned n = 0;

	hdr->type = type;
	hdr->reserved = 0;
	hdr->sector = sector;
	*status = 0xee;
	bufs[n++] = (struct vbuf){(void *)hdr, sizeof(*hdr), false};
	if (len)
		bufs[n++] = (struct vbuf){data, len, false};
	bufs[n++] = (struct vbuf){(void *)status, 1, true};
	barrier();
	(void)vq_transfer(&q, bufs, n);
	return *status;
}

static void fill_filler(uint8_t *buf)
{
	for (unsigned k = 21; k < BLOCK; k++)
		buf[k] = (uint8_t)(k * 7);
	memcpy(buf, "vmstack-rec-", 12);
	buf[20] = '\n';
}

static void fill_record(uint8_t *buf, uint64_t i)
{
	static const char hex[] = "0123456789abcdef";

	for (unsigned k = 0; k < 8; k++)
		buf[12 + k] = (uint8_t)hex[(i >> (28 - 4 * k)) & 15];
}

void guest_main(struct boot_params *bp)
{
	const char *err;
	uint64_t cap, nblocks;
	uint8_t *buf;

	(void)bp;
	print("blk_writer: start\n");
	virtio_find(&dev, VIRTIO_ID_BLOCK);
	err = virtio_negotiate(&dev, 1ull << VIRTIO_BLK_F_FLUSH);
	if (err)
		failf("writer: %s", err);
	if (!(dev.driver_features & (1ull << VIRTIO_BLK_F_FLUSH)))
		fail("writer: the disk offers no flush");
	err = vq_setup(&dev, &q, 0, 16);
	if (err)
		failf("writer: queue 0: %s", err);
	virtio_add_status(&dev, VIRTIO_STATUS_DRIVER_OK);
	hdr = dma_alloc(sizeof(*hdr), 16);
	status = dma_alloc(1, 1);
	buf = dma_alloc(BLOCK, 4096);
	fill_filler(buf);

	cap = virtio_cfg_read64(&dev, 0);
	nblocks = cap / (BLOCK / SECTOR);
	if (nblocks < 16 || nblocks % STRIDE == 0)
		failf("writer: capacity %lu sectors does not suit this test", cap);
	print("writer: blocks %lu\n", nblocks);
	for (uint64_t i = 0; i < nblocks; i++) {
		uint64_t block = (i * STRIDE) % nblocks;

		fill_record(buf, i);
		if (request(VIRTIO_BLK_T_OUT, block * (BLOCK / SECTOR), buf, BLOCK) !=
		    VIRTIO_BLK_S_OK)
			failf("writer: write of record %lu failed", i);
		if ((i + 1) % FLUSH_EVERY == 0) {
			if (request(VIRTIO_BLK_T_FLUSH, 0, NULL, 0) != VIRTIO_BLK_S_OK)
				failf("writer: flush after record %lu failed", i);
			print("writer: flushed %lu\n", i + 1);
		}
	}
	print("writer: wrote every block\n");
	pass();
}

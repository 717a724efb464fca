/* virtio_rng.c: finds the virtio-rng PCI function, sets it up and draws entropy twice. */
#include "virtio.h"

#define RNG_BUF 64

static uint32_t draw(struct vq *q, uint8_t *buf)
{
	struct vbuf b = {buf, RNG_BUF, true};
	uint32_t len;

	memset(buf, 0, RNG_BUF);
	len = vq_transfer(q, &b, 1);
	if (len == 0 || len > RNG_BUF)
		failf("rng: used.len %u for a %u-byte buffer", len, RNG_BUF);
	return len;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i])
			return false;
	}
	return true;
}

void guest_main(struct boot_params *bp)
{
	struct virtio_pci dev;
	struct vq q;
	uint8_t *a, *b;
	uint32_t la, lb;
	const char *err;

	(void)bp;
	print("virtio_rng: start\n");
	pci_scan_print();
	if (pci_read32(0, PCI_VENDOR_ID) != 0x00081b36)
		failf("slot 0 is %08x, not the 1b36:0008 host bridge", pci_read32(0, 0));
	virtio_find(&dev, VIRTIO_ID_RNG);
	err = virtio_negotiate(&dev, 0);
	if (err)
		failf("rng: %s", err);
	if (dev.num_queues < 1)
		fail("rng: num_queues is 0");
	err = vq_setup(&dev, &q, 0, 16);
	if (err)
		failf("rng: queue 0: %s", err);
	virtio_add_status(&dev, VIRTIO_STATUS_DRIVER_OK);
	if (virtio_status(&dev) != (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	                            VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK))
		failf("rng: status 0x%x after DRIVER_OK", virtio_status(&dev));

	a = dma_alloc(RNG_BUF, 64);
	b = dma_alloc(RNG_BUF, 64);
	la = draw(&q, a);
	print("rng: %u bytes ", la);
	print_hexbytes(a, la < 16 ? la : 16);
	print("\n");
	lb = draw(&q, b);
	print("rng: %u bytes ", lb);
	print_hexbytes(b, lb < 16 ? lb : 16);
	print("\n");
	if (all_zero(a, la) || all_zero(b, lb))
		fail("rng: a buffer came back all zero");
	if (la == lb && memcmp(a, b, la) == 0)
		fail("rng: two draws returned the same bytes");

	if (!virtio_reset(&dev))
		fail("rng: reset did not complete");
	print("rng: ok\n");
	pass();
}

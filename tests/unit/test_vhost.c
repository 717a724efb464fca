/*
 * test_vhost.c: virtio-net served by the kernel's vhost-net, the test acting as driver.
 *
 * The device is the real one (transport, MSI-X, virtio-net, vhost_net.c) on a real tap
 * and the real /dev/vhost-net; the "guest" is this program, with its rings in a
 * guest-memory buffer, kicking through the notify register (which writes the kick
 * eventfd vhost waits on) and waiting on the MSI-X vectors' eventfds (the irqfds KVM
 * would consume). Frames go to the tap's kernel side, which answers ARP and ping.
 *
 * Needs /dev/vhost-net and root for a tap: hosts without them skip these tests, and
 * tests/integration/test_linux_vhost.py runs this binary inside the test guest, whose
 * kernel has both (tests/guest/linux/vmstack.config).
 */
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <unistd.h>

#include "config.h"
#include "guest_mem.h"
#include "iobus.h"
#include "msix.h"
#include "netframes.h"
#include "pci.h"
#include "snapshot_file.h"
#include "state_util.h"
#include "test.h"
#include "util.h"
#include "vhost_net.h"
#include "virtio_net.h"
#include "virtq.h"

#define RAM_SIZE (64 * MiB)
#define QSIZE    64
#define BUF_LEN  2048  /* one receive buffer holds a whole 1514-byte frame and its header */
#define WAIT_MS  20000 /* generous: in the test guest the kernel's side is emulated */
#define RXQ      0
#define TXQ      1

#define F_MAC       (1ull << 5)
#define F_MRG_RXBUF (1ull << 15)
#define F_EVENT_IDX (1ull << VIRTIO_F_EVENT_IDX)
#define F_VERSION_1 (1ull << VIRTIO_F_VERSION_1)
#define FEATURES    (F_VERSION_1 | F_MAC | F_MRG_RXBUF | F_EVENT_IDX)

/* The driver's side of one queue: rings at 0x10000 * (q + 1), buffers at 1 MiB * (q + 1). */
struct ring {
	uint16_t avail_idx, used_seen;
	struct virtq_desc *desc;
	struct virtq_avail *avail;
	struct virtq_used *used;
	uint64_t desc_gpa, avail_gpa, used_gpa, buf_gpa;
};

struct nvm {
	struct guest_mem mem;
	struct io_bus pio, mmio;
	struct pci_bus bus;
	char ifname[IFNAMSIZ];
	struct net_config nc;
	struct virtio_net vn;
	struct ring q[2];
	const char *host_ip, *guest_ip;
	uint8_t host_mac[6];
};

static uint8_t frame[65536];

static bool vhost_unavailable(void)
{
	if (access(VHOST_NET_PATH, R_OK | W_OK) != 0) {
		test_skip("no usable %s (modprobe vhost_net; the Linux guest test runs these)",
		          VHOST_NET_PATH);
		return true;
	}
	return tap_unavailable();
}

static void wr(struct virtio_dev *d, uint64_t off, unsigned len, uint64_t v)
{
	virtio_pci_bar_write(d, off, &v, len);
}

static uint64_t rd(struct virtio_dev *d, uint64_t off, unsigned len)
{
	uint64_t v = 0;

	virtio_pci_bar_read(d, off, &v, len);
	return v;
}

static void *gpa(struct nvm *m, uint64_t a, uint64_t len)
{
	void *p = gm_ptr(&m->mem, a, len);

	CHECK(p != NULL);
	return p;
}

static void vector_ctrl(struct nvm *m, unsigned v, uint32_t ctrl)
{
	msix_table_write(&m->vn.vdev.msix, v * MSIX_ENTRY_LEN + 12, &ctrl, 4);
}

static bool use_intx; /* driver_init leaves MSI-X off: interrupts are INTx + ISR */

/* Virtio 3.1.1 with MSI-X: vector 0 for config, q + 1 for queue q, all unmasked. */
static void driver_init(struct nvm *m)
{
	struct virtio_dev *d = &m->vn.vdev;

	wr(d, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	wr(d, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	wr(d, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)FEATURES);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(d, VIRTIO_PCI_COMMON_GF, 4, FEATURES >> 32);
	wr(d, VIRTIO_PCI_COMMON_STATUS, 1,
	   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	pci_cfg_write(&m->bus, d->pci.slot, d->msix.cap + 2, 2, use_intx ? 0 : MSIX_CTRL_ENABLE);
	for (unsigned v = 0; v < 3; v++) {
		uint32_t zero = 0, data = v;
		msix_table_write(&d->msix, v * MSIX_ENTRY_LEN + 0, &zero, 4);
		msix_table_write(&d->msix, v * MSIX_ENTRY_LEN + 8, &data, 4);
		vector_ctrl(m, v, 0);
	}
	wr(d, VIRTIO_PCI_COMMON_MSIX, 2, 0);
	for (unsigned qi = 0; qi < 2; qi++) {
		struct ring *r = &m->q[qi];
		uint64_t base = 0x10000ull * (qi + 1);

		memset(r, 0, sizeof(*r));
		r->desc_gpa = base;
		r->avail_gpa = base + 0x1000;
		r->used_gpa = base + 0x2000;
		r->buf_gpa = MiB * (qi + 1);
		r->desc = gpa(m, r->desc_gpa, 16 * QSIZE);
		r->avail = gpa(m, r->avail_gpa, 6 + 2 * QSIZE);
		r->used = gpa(m, r->used_gpa, 6 + 8 * QSIZE);
		memset(r->desc, 0, 16 * QSIZE);
		memset(r->avail, 0, 6 + 2 * QSIZE);
		wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 2, qi);
		wr(d, VIRTIO_PCI_COMMON_Q_SIZE, 2, QSIZE);
		wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 2, qi + 1);
		wr(d, VIRTIO_PCI_COMMON_Q_DESC, 8, r->desc_gpa);
		wr(d, VIRTIO_PCI_COMMON_Q_DRIVER, 8, r->avail_gpa);
		wr(d, VIRTIO_PCI_COMMON_Q_DEVICE, 8, r->used_gpa);
		wr(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
	}
	wr(d, VIRTIO_PCI_COMMON_STATUS, 1,
	   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
	       VIRTIO_STATUS_DRIVER_OK);
	CHECK_EQ(rd(d, VIRTIO_PCI_COMMON_STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET, 0);
}

static uint16_t *used_event(struct ring *r)
{
	return &r->avail->ring[QSIZE];
}

static void post(struct ring *r, uint16_t head)
{
	r->avail->ring[r->avail_idx % QSIZE] = head;
	r->avail_idx++;
	__atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
}

static void kick(struct nvm *m, unsigned qi)
{
	wr(&m->vn.vdev, VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * qi, 2, qi);
}

static int vector_fd(struct nvm *m, unsigned qi)
{
	return m->vn.vdev.msix.vec[qi + 1].fd;
}

/* Consumes the interrupt of queue qi if one came; true if it did. */
static bool took_interrupt(struct nvm *m, unsigned qi)
{
	uint64_t n;

	return read(vector_fd(m, qi), &n, sizeof(n)) == sizeof(n);
}

/* Every receive buffer to the device. */
static void rx_fill(struct nvm *m)
{
	struct ring *r = &m->q[RXQ];

	for (uint16_t i = 0; i < QSIZE; i++) {
		r->desc[i] =
		    (struct virtq_desc){r->buf_gpa + i * BUF_LEN, BUF_LEN, VIRTQ_DESC_F_WRITE, 0};
		post(r, i);
	}
	kick(m, RXQ);
}

/*
 * Waits for the next used element of queue qi, as Linux does with EVENT_IDX: look at the
 * ring, and only when it is empty ask for an interrupt (used_event) and wait for it.
 * Returns false after WAIT_MS.
 */
static bool next_used(struct nvm *m, unsigned qi, struct virtq_used_elem *e)
{
	struct ring *r = &m->q[qi];
	int64_t deadline = now_ms() + WAIT_MS;

	for (;;) {
		if (__atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE) != r->used_seen) {
			*e = r->used->ring[r->used_seen % QSIZE];
			r->used_seen++;
			return true;
		}
		__atomic_store_n(used_event(r), r->used_seen, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&r->used->idx, __ATOMIC_SEQ_CST) != r->used_seen)
			continue;
		if (!wait_fd(vector_fd(m, qi), POLLIN, deadline))
			return false;
		took_interrupt(m, qi);
	}
}

/* Puts one frame on the transmit queue and kicks; returns its descriptor. */
static uint16_t xmit_nowait(struct nvm *m, const uint8_t *f, size_t len)
{
	struct ring *r = &m->q[TXQ];
	uint16_t slot = r->avail_idx % QSIZE;

	CHECK(len <= BUF_LEN);
	memcpy(gpa(m, r->buf_gpa + slot * BUF_LEN, len), f, len);
	r->desc[slot] = (struct virtq_desc){r->buf_gpa + slot * BUF_LEN, (uint32_t)len, 0, 0};
	post(r, slot);
	kick(m, TXQ);
	return slot;
}

/* Sends one frame through the transmit queue and waits until the device is done with it. */
static void xmit(struct nvm *m, const uint8_t *f, size_t len)
{
	uint16_t slot = xmit_nowait(m, f, len);
	struct virtq_used_elem e;

	CHECK(next_used(m, TXQ, &e));
	CHECK_EQ(e.id, slot);
}

typedef bool match_fn(const uint8_t *f, size_t len, const void *ctx);

/* Receives frames into `frame` until match() accepts one; returns its length or 0. */
static size_t recv_until(struct nvm *m, match_fn *match, const void *ctx)
{
	struct ring *r = &m->q[RXQ];
	struct virtq_used_elem e;

	while (next_used(m, RXQ, &e)) {
		size_t len = e.len;
		CHECK(e.id < QSIZE && len >= HDR && len <= BUF_LEN);
		if (e.id >= QSIZE || len > BUF_LEN)
			return 0;
		memcpy(frame, gpa(m, r->buf_gpa + e.id * BUF_LEN, len), len);
		post(r, (uint16_t)e.id); /* the buffer goes back at once */
		kick(m, RXQ);
		/* MRG_RXBUF: vhost says how many buffers the frame took. */
		CHECK_EQ(frame[10] | frame[11] << 8, 1);
		if (match(frame, len, ctx))
			return len;
	}
	CHECK(!"no matching frame within the deadline");
	return 0;
}

static bool arp_reply(const uint8_t *f, size_t len, const void *ctx)
{
	return is_arp(f, len, 2, ctx);
}

struct echo {
	const char *host;
	uint16_t id, seq;
};

static bool echo_reply(const uint8_t *f, size_t len, const void *ctx)
{
	const struct echo *e = ctx;

	return is_ip_from(f, len, 1, e->host) && len >= L4 + 8 && f[L4] == 0 &&
	       get16(f + L4 + 4) == e->id && get16(f + L4 + 6) == e->seq;
}

/* ARP for the host's address; keeps its MAC. */
static void resolve(struct nvm *m)
{
	uint8_t req[IP + 28];

	xmit(m, req, arp_request(req, m->guest_ip, m->host_ip));
	if (recv_until(m, arp_reply, m->host_ip))
		memcpy(m->host_mac, frame + IP + 8, 6);
}

/* One ping of `payload` bytes; checks the reply carries them back intact. */
static void ping(struct nvm *m, uint16_t seq, uint16_t payload)
{
	static uint8_t req[BUF_LEN];
	struct echo e = {m->host_ip, 0x7654, seq};
	size_t len = icmp_echo(req, m->host_mac, m->guest_ip, m->host_ip, e.id, seq, payload);
	size_t got;

	xmit(m, req, len);
	got = recv_until(m, echo_reply, &e);
	CHECK_EQ(got, len);
	if (got == len) {
		CHECK_EQ(fold(sum16(frame + IP, 20, 0)), 0xffff);
		CHECK_EQ(fold(sum16(frame + L4, 8u + payload, 0)), 0xffff);
		CHECK(memcmp(frame + L4 + 8, req + L4 + 8, payload) == 0);
	}
}

static bool nvm_open(struct nvm *m, int net, enum vhost_mode mode, char *err, size_t errlen)
{
	static char host[32], guest[32];

	memset(m, 0, sizeof(*m));
	snprintf(host, sizeof(host), "10.213.%d.1", net);
	snprintf(guest, sizeof(guest), "10.213.%d.2", net);
	m->host_ip = host;
	m->guest_ip = guest;
	CHECK_EQ(guest_mem_create(&m->mem, RAM_SIZE, 0, 0, err, errlen), 0);
	io_bus_init(&m->pio, "pio");
	io_bus_init(&m->mmio, "mmio");
	CHECK_EQ(pci_bus_init(&m->bus, NULL, &m->pio, &m->mmio, 0xc0000000, 0x3c000000,
	                      0x1000000000ull, 0x1000000000ull),
	         0);
	m->nc.nd = tap_up(m->ifname, sizeof(m->ifname), net);
	memcpy(m->nc.mac, guest_mac, 6);
	m->nc.vhost = mode;
	return m->nc.nd &&
	       virtio_net_create(&m->vn, 0, &m->nc, NULL, &m->mem, &m->bus, err, errlen) == 0;
}

static void nvm_close(struct nvm *m, bool created)
{
	if (created)
		virtio_net_destroy(&m->vn);
	if (m->nc.nd)
		netdev_close(m->nc.nd);
	pci_bus_destroy(&m->bus);
	io_bus_destroy(&m->pio);
	io_bus_destroy(&m->mmio);
	guest_mem_destroy(&m->mem);
}

/* Opens the device with vhost=on and brings the driver up; false (checked) if it fails. */
static bool nvm_start(struct nvm *m, int net)
{
	char err[256] = "";
	bool ok = nvm_open(m, net, VHOST_ON, err, sizeof(err));

	if (!ok) {
		fprintf(stderr, "%s\n", err);
		CHECK(!"device created");
		nvm_close(m, false);
		return false;
	}
	driver_init(m);
	CHECK(virtio_net_vhost_active(&m->vn));
	rx_fill(m);
	return true;
}

/* ---- tests ---- */

TEST(vhost_net_absent_says_why)
{
	struct vhost_net vh;
	char why[256] = "";

	if (access(VHOST_NET_PATH, F_OK) == 0)
		return test_skip("this host has %s", VHOST_NET_PATH);
	CHECK(vhost_net_open(&vh, why, sizeof(why)) < 0);
	CHECK(strstr(why, "/dev/vhost-net: ") == why);
	CHECK(strstr(why, "modprobe vhost_net (or say vhost=off)") != NULL);
}

/* vhost=on where it cannot be had is an error at creation, naming device and tap;
 * auto quietly serves the queues itself. */
TEST(vhost_on_without_vhost_net_fails_early)
{
	struct nvm m;
	char err[256] = "";
	bool ok;

	if (access(VHOST_NET_PATH, F_OK) == 0)
		return test_skip("this host has %s", VHOST_NET_PATH);
	if (tap_unavailable())
		return;
	ok = nvm_open(&m, 41, VHOST_ON, err, sizeof(err));
	CHECK(!ok);
	CHECK(strstr(err, "virtio-net0 (tap vmst") == err);
	CHECK(strstr(err, "/dev/vhost-net: No such file or directory — modprobe vhost_net") !=
	      NULL);
	nvm_close(&m, ok);

	ok = nvm_open(&m, 42, VHOST_AUTO, err, sizeof(err));
	CHECK(ok);
	if (ok) {
		driver_init(&m);
		CHECK(!virtio_net_vhost_active(&m.vn));
	}
	nvm_close(&m, ok);
}

/*
 * ARP and pings of several sizes through the kernel's data path, and none of it
 * through ours: the iothread never read a kick, never relayed an interrupt (the
 * unmasked vectors' eventfds were vhost's call fds) and never touched a frame.
 */
TEST(vhost_arp_and_ping)
{
	struct nvm m;

	if (vhost_unavailable() || !nvm_start(&m, 31))
		return;
	resolve(&m);
	ping(&m, 1, 56);
	ping(&m, 2, 1000);
	ping(&m, 3, 1472);
	CHECK_EQ(m.vn.vdev.kicks, 0);
	CHECK_EQ(m.vn.vdev.interrupts, 0);
	CHECK_EQ(m.vn.stats.tx_packets + m.vn.stats.rx_packets, 0);
	/* so the counters the control socket reports are the tap's, from the guest's side */
	uint64_t c[6] = {0};
	CHECK_EQ(netdev_tap_counters(m.nc.nd, c), 0);
	CHECK(c[0] >= 4 && c[2] >= 4); /* ARP + 3 pings each way */
	CHECK(c[1] >= 56 + 1000 + 1472 && c[3] >= 56 + 1000 + 1472);
	nvm_close(&m, true);
}

/*
 * A masked vector: vhost's interrupt goes through our relay, which keeps the pending
 * bit instead of raising it; unmasking delivers it, and vhost writes the irqfd again.
 */
TEST(vhost_masked_vector_pends_until_unmasked)
{
	struct nvm m;
	uint8_t req[IP + 28];
	uint64_t pba = 0;
	int64_t deadline;
	uint16_t seen;

	if (vhost_unavailable() || !nvm_start(&m, 32))
		return;
	resolve(&m);
	vector_ctrl(&m, RXQ + 1, 1);
	took_interrupt(&m, RXQ);
	seen = m.q[RXQ].used_seen;
	__atomic_store_n(used_event(&m.q[RXQ]), seen, __ATOMIC_SEQ_CST);
	xmit(&m, req, arp_request(req, m.guest_ip, m.host_ip));
	deadline = now_ms() + WAIT_MS;
	while (__atomic_load_n(&m.q[RXQ].used->idx, __ATOMIC_ACQUIRE) == seen &&
	       now_ms() < deadline)
		usleep(1000);
	CHECK(m.q[RXQ].used->idx != seen);
	/* The relay runs on the iothread: give it until the pending bit shows. */
	while (!(pba & 2) && now_ms() < deadline) {
		msix_pba_read(&m.vn.vdev.msix, 0, &pba, 8);
		usleep(1000);
	}
	CHECK_EQ(pba & 2, 2);
	CHECK(!took_interrupt(&m, RXQ));
	CHECK(m.vn.vdev.interrupts >= 1);
	vector_ctrl(&m, RXQ + 1, 0);
	CHECK(took_interrupt(&m, RXQ));
	msix_pba_read(&m.vn.vdev.msix, 0, &pba, 8);
	CHECK_EQ(pba & 2, 0);
	/* Unmasked again: pings work and need no relay. */
	CHECK(recv_until(&m, arp_reply, m.host_ip) > 0);
	uint64_t relayed = m.vn.vdev.interrupts;
	ping(&m, 4, 100);
	CHECK_EQ(m.vn.vdev.interrupts, relayed);
	nvm_close(&m, true);
}

/* Reset takes the rings back from the kernel; a driver that starts over gets vhost again. */
TEST(vhost_reset_and_reinit)
{
	struct nvm m;

	if (vhost_unavailable() || !nvm_start(&m, 33))
		return;
	resolve(&m);
	ping(&m, 5, 200);
	wr(&m.vn.vdev, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	CHECK(!virtio_net_vhost_active(&m.vn));
	driver_init(&m);
	CHECK(virtio_net_vhost_active(&m.vn));
	rx_fill(&m);
	ping(&m, 6, 300);
	nvm_close(&m, true);
}

/*
 * Quiesce (for a snapshot) gives the rings back with their positions in the
 * transport's state, which is what a snapshot saves; unquiesce hands them back.
 */
TEST(vhost_quiesce_keeps_positions)
{
	struct nvm m;

	if (vhost_unavailable() || !nvm_start(&m, 34))
		return;
	resolve(&m);
	ping(&m, 7, 500);
	virtio_pci_quiesce(&m.vn.vdev);
	CHECK(!virtio_net_vhost_active(&m.vn));
	for (unsigned qi = 0; qi < 2; qi++) {
		struct virtq *vq = &m.vn.vdev.q[qi].vq;
		CHECK_EQ(vq->used_idx, m.q[qi].used->idx);
		CHECK_EQ(vq->last_avail, vq->used_idx); /* nothing in flight */
	}
	CHECK_EQ(m.vn.vdev.q[TXQ].vq.last_avail, m.q[TXQ].avail_idx);
	virtio_pci_unquiesce(&m.vn.vdev);
	CHECK(virtio_net_vhost_active(&m.vn));
	ping(&m, 8, 600);
	nvm_close(&m, true);
}

/* A descriptor outside guest RAM: the kernel stops the ring, the device asks for a reset. */
TEST(vhost_bad_descriptor_needs_reset)
{
	struct nvm m;
	struct ring *r;
	int64_t deadline;

	if (vhost_unavailable() || !nvm_start(&m, 35))
		return;
	r = &m.q[TXQ];
	r->desc[0] = (struct virtq_desc){0x7f0000000000ull, 100, 0, 0};
	post(r, 0);
	kick(&m, TXQ);
	deadline = now_ms() + WAIT_MS;
	while (!(rd(&m.vn.vdev, VIRTIO_PCI_COMMON_STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET) &&
	       now_ms() < deadline)
		usleep(1000);
	CHECK(rd(&m.vn.vdev, VIRTIO_PCI_COMMON_STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET);
	/* and a reset makes it usable again */
	driver_init(&m);
	rx_fill(&m);
	resolve(&m);
	ping(&m, 9, 64);
	nvm_close(&m, true);
}

/*
 * Snapshot and restore: the state saved while vhost had the rings is loaded into a new
 * device over the same RAM and tap, which hands the rings to the kernel again at the
 * saved positions; the driver carries on with its rings as they were.
 */
TEST(vhost_snapshot_restore_carries_on)
{
	struct nvm m;
	struct snap_writer *w;
	struct snap_reader *r;
	char err[256] = "";

	if (vhost_unavailable() || !nvm_start(&m, 36))
		return;
	resolve(&m);
	ping(&m, 10, 700);
	virtio_pci_quiesce(&m.vn.vdev);
	w = snap_writer_new();
	CHECK(w != NULL);
	CHECK_EQ(virtio_net_save(&m.vn, w, 0), 0);
	r = st_reopen(w);
	snap_writer_free(w);
	virtio_net_destroy(&m.vn);
	CHECK_EQ(virtio_net_create(&m.vn, 0, &m.nc, NULL, &m.mem, &m.bus, err, sizeof(err)), 0);
	CHECK(!virtio_net_vhost_active(&m.vn));
	if (r && virtio_net_load(&m.vn, r, 0, err, sizeof(err)) < 0)
		fprintf(stderr, "load: %s\n", err);
	CHECK(virtio_net_vhost_active(&m.vn));
	snap_reader_free(r);
	ping(&m, 11, 800);
	ping(&m, 12, 900);
	CHECK_EQ(m.vn.vdev.kicks, 0);
	nvm_close(&m, true);
}

/* MSI-X off: vhost's interrupts go through the relay to the ISR and the INTx line. */
TEST(vhost_intx_through_the_relay)
{
	struct nvm m;
	uint8_t req[IP + 28];
	int64_t deadline;
	uint64_t isr = 0;
	uint16_t seen;

	if (vhost_unavailable())
		return;
	use_intx = true;
	if (!nvm_start(&m, 37)) {
		use_intx = false;
		return;
	}
	use_intx = false;
	seen = m.q[RXQ].used_seen;
	xmit_nowait(&m, req, arp_request(req, m.guest_ip, m.host_ip));
	deadline = now_ms() + WAIT_MS;
	while (!(isr & 1) && now_ms() < deadline) {
		isr = rd(&m.vn.vdev, VIRTIO_PCI_ISR_OFF, 1);
		if (!(isr & 1))
			usleep(1000);
	}
	CHECK_EQ(isr & 1, 1); /* queue interrupt, read-to-clear */
	CHECK(m.vn.vdev.interrupts >= 1);
	CHECK(!took_interrupt(&m, TXQ) && !took_interrupt(&m, RXQ)); /* no MSI-X */
	CHECK(m.q[TXQ].used->idx == 1 || m.q[RXQ].used->idx != seen);
	nvm_close(&m, true);
}

/*
 * devpath.c: drives vmstack's virtio-blk and virtio-net request paths from the host
 * side, the way a guest driver would, with no guest and no KVM exits in the way.
 *
 * The device is the real one (transport, virtqueue engine, iothread, backend); the
 * "guest" is this program: it owns a guest-memory buffer with the rings, fills the
 * avail ring, kicks through the queue's kick eventfd (the fd KVM's ioeventfd signals),
 * and waits for the MSI-X vector's eventfd (the fd KVM's irqfd consumes). So what is
 * measured is exactly the monitor's part of a request.
 *
 *   devpath [spin] blk FILE rand|seq BS DEPTH SECONDS [none|writeback]
 *   devpath net-tx TAPNAME PKTSIZE SECONDS [vhost]   (vhost: the kernel's vhost-net
 *                                                 carries the frames; its worker's CPU
 *                                                 time counts as the monitor's)
 *   devpath tap-raw TAPNAME PKTSIZE SECONDS    (baseline: the same frames written
 *                                               straight to the tap fd, no device)
 *
 * With `spin` first, the driver waits for an interrupt by reading the vector's eventfd in
 * a loop (up to 1 ms, then it sleeps) instead of sleeping in poll() at once: a vCPU that
 * is running when its interrupt arrives, as under load, rather than a halted one that
 * must be woken. Either way completions come through the irqfd's eventfd.
 *
 * Prints one line of key=value: requests, seconds, iops/pps, MB/s, and monitor CPU per
 * request (the process's CPU time minus this driver thread's own, per request).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "block.h"
#include "config.h"
#include "guest_mem.h"
#include "netdev.h"
#include "pci.h"
#include "util.h"
#include "virtio_blk.h"
#include "virtio_net.h"

#define RAM       (256 * MiB)
#define DESC_GPA  0x100000ull
#define AVAIL_GPA 0x110000ull
#define USED_GPA  0x120000ull
#define HDR_GPA   0x200000ull /* per slot: 16-byte header + status at +16 */
#define DATA_GPA  0x1000000ull
#define QSIZE     256

static struct guest_mem mem;
static struct io_bus pio, mmio;
static struct pci_bus bus;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void w32(struct virtio_dev *d, uint64_t off, uint32_t v)
{
	virtio_pci_bar_write(d, off, &v, 4);
}

static void w16(struct virtio_dev *d, uint64_t off, uint16_t v)
{
	virtio_pci_bar_write(d, off, &v, 2);
}

static void w8(struct virtio_dev *d, uint64_t off, uint8_t v)
{
	virtio_pci_bar_write(d, off, &v, 1);
}

static uint32_t r32(struct virtio_dev *d, uint64_t off)
{
	uint32_t v;
	virtio_pci_bar_read(d, off, &v, 4);
	return v;
}

/* The spec's init sequence, every offered feature accepted (EVENT_IDX too, as Linux
 * does), MSI-X on. */
static void driver_init(struct virtio_dev *d, unsigned nq, uint64_t ring_base)
{
	uint64_t f;
	uint16_t ctrl = MSIX_CTRL_ENABLE;

	w8(d, VIRTIO_PCI_COMMON_STATUS, 0);
	w8(d, VIRTIO_PCI_COMMON_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	w32(d, VIRTIO_PCI_COMMON_DFSELECT, 0);
	f = r32(d, VIRTIO_PCI_COMMON_DF);
	w32(d, VIRTIO_PCI_COMMON_DFSELECT, 1);
	f |= (uint64_t)r32(d, VIRTIO_PCI_COMMON_DF) << 32;
	w32(d, VIRTIO_PCI_COMMON_GFSELECT, 0);
	w32(d, VIRTIO_PCI_COMMON_GF, (uint32_t)f);
	w32(d, VIRTIO_PCI_COMMON_GFSELECT, 1);
	w32(d, VIRTIO_PCI_COMMON_GF, (uint32_t)(f >> 32));
	w8(d, VIRTIO_PCI_COMMON_STATUS,
	   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	/* MSI-X: enabled, vector i+1 for queue i, all unmasked (table written directly). */
	pci_cfg_write(&bus, d->pci.slot, d->msix.cap + 2, 2, ctrl);
	for (unsigned v = 0; v <= nq; v++) {
		uint32_t zero = 0, data = v;
		msix_table_write(&d->msix, v * 16 + 0, &zero, 4);
		msix_table_write(&d->msix, v * 16 + 8, &data, 4);
		msix_table_write(&d->msix, v * 16 + 12, &zero, 4);
	}
	for (unsigned q = 0; q < nq; q++) {
		uint64_t base = ring_base + q * 0x40000ull;
		w16(d, VIRTIO_PCI_COMMON_Q_SELECT, (uint16_t)q);
		w16(d, VIRTIO_PCI_COMMON_Q_SIZE, QSIZE);
		w16(d, VIRTIO_PCI_COMMON_Q_MSIX, (uint16_t)(q + 1));
		w32(d, VIRTIO_PCI_COMMON_Q_DESC, (uint32_t)(base + DESC_GPA));
		w32(d, VIRTIO_PCI_COMMON_Q_DESC + 4, 0);
		w32(d, VIRTIO_PCI_COMMON_Q_DRIVER, (uint32_t)(base + AVAIL_GPA));
		w32(d, VIRTIO_PCI_COMMON_Q_DRIVER + 4, 0);
		w32(d, VIRTIO_PCI_COMMON_Q_DEVICE, (uint32_t)(base + USED_GPA));
		w32(d, VIRTIO_PCI_COMMON_Q_DEVICE + 4, 0);
		w16(d, VIRTIO_PCI_COMMON_Q_ENABLE, 1);
	}
	w8(d, VIRTIO_PCI_COMMON_STATUS,
	   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
	       VIRTIO_STATUS_DRIVER_OK);
	if (!(r32(d, VIRTIO_PCI_COMMON_STATUS) & VIRTIO_STATUS_DRIVER_OK)) {
		fprintf(stderr, "devpath: device refused DRIVER_OK\n");
		exit(1);
	}
}

struct ring {
	struct virtq_desc *desc;
	struct virtq_avail *avail;
	struct virtq_used *used;
	uint16_t *used_event, *avail_event;
	uint16_t avail_idx, kicked_idx, used_seen;
	int kick_fd, irq_fd;
	uint64_t kicks, waits; /* kicks written, sleeps waiting for an interrupt */
};

static void ring_map(struct ring *r, struct virtio_dev *d, unsigned q, uint64_t base)
{
	r->desc = gm_ptr(&mem, base + DESC_GPA, 16 * QSIZE);
	r->avail = gm_ptr(&mem, base + AVAIL_GPA, 6 + 2 * QSIZE);
	r->used = gm_ptr(&mem, base + USED_GPA, 6 + 8 * QSIZE);
	r->used_event = (uint16_t *)&r->avail->ring[QSIZE];
	r->avail_event = (uint16_t *)&r->used->ring[QSIZE];
	r->avail_idx = r->kicked_idx = r->used_seen = 0;
	r->kick_fd = d->q[q].kick_fd;
	r->irq_fd = d->msix.vec[q + 1].fd;
	r->kicks = 0;
}

static void publish(struct ring *r, uint16_t head)
{
	r->avail->ring[r->avail_idx % QSIZE] = head;
	r->avail_idx++;
	__atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
}

/* vring_need_event(): did the index step over the other side's event index? */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
}

/* Kicks if the device asked for it (avail_event, as Linux's virtqueue_kick_prepare). */
static void kick(struct ring *r)
{
	uint64_t one = 1;
	uint16_t old = r->kicked_idx;

	r->kicked_idx = r->avail_idx;
	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* avail->idx before avail_event */
	if (!need_event(__atomic_load_n(r->avail_event, __ATOMIC_RELAXED), r->avail_idx, old))
		return;
	r->kicks++;
	if (write(r->kick_fd, &one, 8) != 8)
		abort();
}

static bool spin; /* `devpath spin ...`: see the top of the file */

/* Waits for the interrupt; returns the heads completed since the last call. */
static unsigned reap(struct ring *r, uint16_t *heads)
{
	struct pollfd p = {.fd = r->irq_fd, .events = POLLIN};
	uint64_t n;
	unsigned k = 0;
	uint16_t idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);

	while (idx == r->used_seen) {
		/* Interrupt me at the next completion (virtqueue_enable_cb), then look again. */
		__atomic_store_n(r->used_event, r->used_seen, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
		if (idx != r->used_seen)
			break;
		if (spin) {
			double until = now() + 1e-3;
			while (read(r->irq_fd, &n, 8) != 8 && now() < until)
				;
			idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
			if (idx != r->used_seen)
				break;
		}
		r->waits++;
		if (poll(&p, 1, 5000) <= 0) {
			fprintf(stderr, "devpath: no interrupt in 5 s\n");
			exit(1);
		}
		if (read(r->irq_fd, &n, 8) < 0) {
			/* raced with another read: look at the ring */
		}
		idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
	}
	while (r->used_seen != idx) {
		heads[k++] = (uint16_t)r->used->ring[r->used_seen % QSIZE].id;
		r->used_seen++;
	}
	return k;
}

static uint64_t rnd(void)
{
	static uint64_t s = 88172645463325252ull;
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

static int bench_blk(int argc, char **argv)
{
	const char *path = argv[0];
	bool random = strcmp(argv[1], "rand") == 0;
	uint64_t bs, pos = 0;
	unsigned depth = (unsigned)atoi(argv[3]);
	double secs = atof(argv[4]);
	struct disk_config dc = {.queues = 1};
	struct virtio_blk vb;
	struct ring r;
	char err[512];
	uint16_t heads[QSIZE];
	uint64_t done = 0, sectors;
	double t0, c0, d0, t1;

	if (parse_size(argv[2], &bs) < 0 || depth == 0 || depth > QSIZE / 2 ||
	    bs * depth > RAM - DATA_GPA) {
		fprintf(stderr, "devpath: bad block size or depth\n");
		return 1;
	}
	dc.opts = (struct blk_opts){
	    .path = path,
	    .cache = argc > 5 && !strcmp(argv[5], "none") ? BLK_CACHE_NONE : BLK_CACHE_WRITEBACK};
	dc.blk = blk_open(&dc.opts, err, sizeof(err));
	if (!dc.blk) {
		fprintf(stderr, "devpath: %s\n", err);
		return 1;
	}
	if (virtio_blk_create(&vb, 0, &dc, NULL, &mem, &bus, err, sizeof(err)) < 0) {
		fprintf(stderr, "devpath: %s\n", err);
		return 1;
	}
	sectors = blk_size(dc.blk) / 512;
	driver_init(&vb.vdev, 1, 0);
	ring_map(&r, &vb.vdev, 0, 0);
	/* Slot s uses descriptors 2s (header), 2s+1 (data) and... status in the header page. */
	for (unsigned s = 0; s < depth; s++) {
		uint16_t h = (uint16_t)(3 * s);
		r.desc[h] = (struct virtq_desc){HDR_GPA + 32 * s, 16, VIRTQ_DESC_F_NEXT, h + 1};
		r.desc[h + 1] = (struct virtq_desc){DATA_GPA + bs * s, (uint32_t)bs,
		                                    VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, h + 2};
		r.desc[h + 2] =
		    (struct virtq_desc){HDR_GPA + 32 * s + 16, 1, VIRTQ_DESC_F_WRITE, 0};
	}
	/* Each request is a read at a fresh offset. */
	t0 = now();
	c0 = cpu(CLOCK_PROCESS_CPUTIME_ID);
	d0 = cpu(CLOCK_THREAD_CPUTIME_ID);
	for (unsigned s = 0; s < depth; s++) {
		uint8_t *hdr = gm_ptr(&mem, HDR_GPA + 32 * s, 16);
		uint64_t sec = random ? (rnd() % (sectors / (bs / 512))) * (bs / 512) : pos;
		pos = (pos + bs / 512) % (sectors - bs / 512);
		put_le32(hdr, 0);
		put_le64(hdr + 8, sec);
		publish(&r, (uint16_t)(3 * s));
	}
	kick(&r);
	for (;;) {
		unsigned n = reap(&r, heads);
		done += n;
		t1 = now();
		if (t1 - t0 >= secs)
			break;
		for (unsigned i = 0; i < n; i++) {
			unsigned s = heads[i] / 3;
			uint8_t *hdr = gm_ptr(&mem, HDR_GPA + 32 * s, 17);
			uint64_t sec = random ? (rnd() % (sectors / (bs / 512))) * (bs / 512) : pos;
			if (hdr[16] != 0) {
				fprintf(stderr, "devpath: request failed, status %u\n", hdr[16]);
				return 1;
			}
			pos = (pos + bs / 512) % (sectors - bs / 512);
			put_le64(hdr + 8, sec);
			publish(&r, heads[i]);
		}
		kick(&r);
	}
	{
		double wall = t1 - t0;
		double monitor =
		    (cpu(CLOCK_PROCESS_CPUTIME_ID) - c0) - (cpu(CLOCK_THREAD_CPUTIME_ID) - d0);
		printf("requests=%llu seconds=%.2f iops=%.0f MBps=%.1f monitor_cpu_us_per_req=%.2f "
		       "engine=%s kicks_per_req=%.3f waits_per_req=%.3f polled_per_req=%.3f\n",
		       (unsigned long long)done, wall, done / wall, done * bs / wall / 1e6,
		       monitor / done * 1e6, blk_engine_name(dc.blk), (double)r.kicks / done,
		       (double)r.waits / done, (double)vb.vdev.polled / done);
	}
	virtio_blk_destroy(&vb);
	blk_close(dc.blk);
	return 0;
}

/*
 * CPU seconds of this process's vhost worker ("vhost-PID"), when it is a kernel thread of
 * its own (before Linux 6.4); 0 when there is none or it is one of our own threads (6.4
 * on), which CLOCK_PROCESS_CPUTIME_ID already counts.
 */
static double vhost_worker_cpu(void)
{
	char want[32], path[300], buf[512];
	double total = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;

	snprintf(want, sizeof(want), "vhost-%d", (int)getpid());
	while (d && (e = readdir(d))) {
		FILE *f;
		char *p;
		unsigned long ut, st;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
		fclose(f);
		if (!p || !strstr(buf, want))
			continue;
		/* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
		 * cmajflt utime stime */
		if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
		           &st) == 2)
			total += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	}
	if (d)
		closedir(d);
	return total;
}

static int bench_net_tx(char **argv, bool vhost)
{
	struct net_config nc = {.opts = {.kind = NETDEV_TAP, .ifname = argv[0], .fd = -1},
	                        .vhost = vhost ? VHOST_ON : VHOST_OFF};
	unsigned size = (unsigned)atoi(argv[1]);
	double secs = atof(argv[2]);
	struct virtio_net vn;
	struct ring r;
	char err[512];
	uint16_t heads[QSIZE];
	uint64_t done = 0;
	double t0, c0, d0, t1;
	const unsigned depth = 128;

	if (size < 60 || size > 1514)
		return 1;
	nc.nd = netdev_open(&nc.opts, err, sizeof(err));
	if (!nc.nd) {
		fprintf(stderr, "devpath: %s\n", err);
		return 1;
	}
	if (virtio_net_create(&vn, 0, &nc, NULL, &mem, &bus, err, sizeof(err)) < 0) {
		fprintf(stderr, "devpath: %s\n", err);
		return 1;
	}
	driver_init(&vn.vdev, 2, 0);
	if (vhost && !virtio_net_vhost_active(&vn)) {
		fprintf(stderr, "devpath: vhost-net did not take the queues (see the log above)\n");
		return 1;
	}
	ring_map(&r, &vn.vdev, 1, 0x40000); /* transmit queue */
	for (unsigned s = 0; s < depth; s++) {
		uint8_t *f = gm_ptr(&mem, DATA_GPA + 2048 * s, 2048);
		memset(f, 0, 12);                              /* virtio_net_hdr_v1 */
		memset(f + 12, 0xff, 6);                       /* broadcast */
		memcpy(f + 18, "\x52\x54\x00\x12\x34\x56", 6); /* our MAC */
		f[24] = 0x88, f[25] = 0xb5;                    /* local experimental ethertype */
		memset(f + 26, 0x5a, size - 14);
		r.desc[s] = (struct virtq_desc){DATA_GPA + 2048 * s, 12 + size, 0, 0};
	}
	t0 = now();
	c0 = cpu(CLOCK_PROCESS_CPUTIME_ID) + (vhost ? vhost_worker_cpu() : 0);
	d0 = cpu(CLOCK_THREAD_CPUTIME_ID);
	for (unsigned s = 0; s < depth; s++)
		publish(&r, (uint16_t)s);
	kick(&r);
	for (;;) {
		unsigned n = reap(&r, heads);
		done += n;
		t1 = now();
		if (t1 - t0 >= secs)
			break;
		for (unsigned i = 0; i < n; i++)
			publish(&r, heads[i]);
		kick(&r);
	}
	{
		double wall = t1 - t0;
		double monitor =
		    (cpu(CLOCK_PROCESS_CPUTIME_ID) + (vhost ? vhost_worker_cpu() : 0) - c0) -
		    (cpu(CLOCK_THREAD_CPUTIME_ID) - d0);
		printf("packets=%llu seconds=%.2f pps=%.0f MBps=%.1f monitor_cpu_us_per_pkt=%.2f "
		       "dropped=%llu kicks_per_pkt=%.3f waits_per_pkt=%.3f\n",
		       (unsigned long long)done, wall, done / wall, done * size / wall / 1e6,
		       monitor / done * 1e6, (unsigned long long)vn.stats.tx_dropped,
		       (double)r.kicks / done, (double)r.waits / done);
	}
	virtio_net_destroy(&vn);
	netdev_close(nc.nd);
	return 0;
}

/* The physical limit of the transmit path: frames written to the tap fd in a loop. */
static int bench_tap_raw(char **argv)
{
	struct netdev_opts o = {.kind = NETDEV_TAP, .ifname = argv[0], .fd = -1};
	unsigned size = (unsigned)atoi(argv[1]);
	double secs = atof(argv[2]), t0, c0, t1;
	uint8_t f[12 + 1514] = {0};
	struct iovec iov = {f, 0};
	uint64_t done = 0;
	char err[512];
	struct netdev *nd = netdev_open(&o, err, sizeof(err));

	if (!nd || size < 60 || size > 1514) {
		fprintf(stderr, "devpath: %s\n", nd ? "bad size" : err);
		return 1;
	}
	memset(f + 12, 0xff, 6);
	memcpy(f + 18, "\x52\x54\x00\x12\x34\x56", 6);
	f[24] = 0x88, f[25] = 0xb5;
	memset(f + 26, 0x5a, size - 14);
	iov.iov_len = 12 + size;
	t0 = now();
	c0 = cpu(CLOCK_PROCESS_CPUTIME_ID);
	do {
		for (int i = 0; i < 256; i++) {
			ssize_t n = netdev_send(nd, &iov, 1);
			if (n == -EAGAIN) {
				struct pollfd p = {.fd = netdev_fd(nd), .events = POLLOUT};
				poll(&p, 1, 100);
			} else if (n > 0) {
				done++;
			}
		}
		t1 = now();
	} while (t1 - t0 < secs);
	printf("packets=%llu seconds=%.2f pps=%.0f MBps=%.1f cpu_us_per_pkt=%.2f\n",
	       (unsigned long long)done, t1 - t0, done / (t1 - t0), done * size / (t1 - t0) / 1e6,
	       (cpu(CLOCK_PROCESS_CPUTIME_ID) - c0) / done * 1e6);
	netdev_close(nd);
	return 0;
}

int main(int argc, char **argv)
{
	char err[256];

	if (argc > 1 && !strcmp(argv[1], "spin")) {
		spin = true;
		argv++;
		argc--;
	}
	if (argc < 2) {
		fprintf(
		    stderr,
		    "usage: devpath [spin] blk FILE rand|seq BS DEPTH SECONDS [none|writeback]\n"
		    "       devpath net-tx TAPNAME PKTSIZE SECONDS [vhost]\n");
		return 1;
	}
	if (guest_mem_create(&mem, RAM, 0, 0, err, sizeof(err)) < 0) {
		fprintf(stderr, "devpath: %s\n", err);
		return 1;
	}
	io_bus_init(&pio, "port");
	io_bus_init(&mmio, "MMIO");
	pci_bus_init(&bus, NULL, &pio, &mmio, 0xc0000000, 0x3c000000, 0, 0);
	if (!strcmp(argv[1], "blk") && argc >= 7)
		return bench_blk(argc - 2, argv + 2);
	if (!strcmp(argv[1], "net-tx") && argc >= 5)
		return bench_net_tx(argv + 2, argc >= 6 && !strcmp(argv[5], "vhost"));
	if (!strcmp(argv[1], "tap-raw") && argc >= 5)
		return bench_tap_raw(argv + 2);
	fprintf(stderr, "devpath: bad arguments\n");
	return 1;
}

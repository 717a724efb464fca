/* test_qcow2.c: qcow2 core and image API, checked against qemu-img/qemu-io as reference. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image.h"
#include "qcow2.h"
#include "qcow2_internal.h"
#include "test.h"
#include "util.h"

/* ---- helpers ---- */

static char tdir[64];

static bool have_qemu(void)
{
	static int have = -1;

	if (have < 0)
		have = system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null "
		              "2>&1") == 0;
	return have;
}

static const char *tpath(const char *name)
{
	static char bufs[8][256];
	static int i;
	char *b = bufs[i++ % 8];

	snprintf(b, 256, "%s/%s", tdir, name);
	return b;
}

static void setup(void)
{
	strcpy(tdir, "/tmp/vmstack-test-qcow2-XXXXXX");
	if (!mkdtemp(tdir))
		abort();
}

static void cleanup(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tdir);
}

/* Runs a shell command (cd'd into the test dir); returns its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	int n, st;
	va_list ap;

	n = snprintf(cmd, sizeof(cmd), "cd %s && (", tdir);
	va_start(ap, fmt);
	n += vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
	va_end(ap);
	snprintf(cmd + n, sizeof(cmd) - (size_t)n, ") >/dev/null 2>&1");
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static uint8_t pat(uint64_t off, unsigned seed)
{
	return (uint8_t)(off * 131 + (off >> 9) * 7 + seed * 29 + 1);
}

static void fill(uint8_t *buf, size_t len, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pat(off + i, seed);
}

static bool all_bytes(const uint8_t *buf, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != v)
			return false;
	return true;
}

static struct img *open_img(const char *path, bool ro)
{
	char err[512];
	struct img *im =
	    img_open(&(struct img_open_opts){.path = path, .readonly = ro}, err, sizeof(err));

	if (!im)
		fprintf(stderr, "open %s: %s\n", path, err);
	return im;
}

static int create_q(const char *path, uint64_t size, unsigned cs, unsigned compat,
                    const char *backing)
{
	char err[512];
	int ret = img_create(&(struct img_create_opts){.path = path,
	                                               .format = IMG_FMT_QCOW2,
	                                               .size = size,
	                                               .cluster_size = cs,
	                                               .compat = compat,
	                                               .backing_file = backing},
	                     err, sizeof(err));

	if (ret < 0)
		fprintf(stderr, "create %s: %s\n", path, err);
	return ret;
}

/* Writes the same pattern to im and to the raw mirror file fd. */
static void write_both(struct img *im, int raw, uint64_t off, size_t len, unsigned seed)
{
	uint8_t *buf = malloc(len);

	fill(buf, len, off, seed);
	CHECK_EQ(img_pwrite(im, buf, len, off), 0);
	CHECK_EQ(pwrite(raw, buf, len, (off_t)off), (ssize_t)len);
	free(buf);
}

/* Compares the whole image read through img_preadv with the raw mirror. */
static bool same_as_raw(struct img *im, int raw)
{
	uint64_t size = img_size(im), chunk = 256 * 1024;
	uint8_t *a = malloc(chunk), *b = malloc(chunk);
	bool same = true;

	for (uint64_t off = 0; off < size && same; off += chunk) {
		size_t n = (size_t)MIN(chunk, size - off);

		if (img_pread(im, a, n, off) != 0)
			same = false;
		memset(b, 0, n);
		if (pread(raw, b, n, (off_t)off) < 0)
			same = false;
		if (memcmp(a, b, n) != 0) {
			fprintf(stderr, "mismatch in [0x%llx, +%zu)\n", (unsigned long long)off, n);
			same = false;
		}
	}
	free(a);
	free(b);
	return same;
}

static int open_raw_mirror(const char *name, uint64_t size)
{
	int fd = open(tpath(name), O_RDWR | O_CREAT | O_TRUNC, 0644);

	if (fd >= 0 && ftruncate(fd, (off_t)size) < 0)
		CHECK(0);
	return fd;
}

/* Patches big-endian bytes of a file at off. */
static void poke(const char *path, uint64_t off, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY);

	CHECK(fd >= 0);
	CHECK_EQ(pwrite(fd, data, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static void poke32(const char *path, uint64_t off, uint32_t v)
{
	v = htobe32(v);
	poke(path, off, &v, 4);
}

static void poke64(const char *path, uint64_t off, uint64_t v)
{
	v = htobe64(v);
	poke(path, off, &v, 8);
}

static uint64_t peek64(const char *path, uint64_t off)
{
	uint64_t v = 0;
	int fd = open(path, O_RDONLY);

	if (pread(fd, &v, 8, (off_t)off) != 8)
		CHECK(0);
	close(fd);
	return be64toh(v);
}

/* ---- (a) our images, checked by qemu-img ---- */

static void rw_roundtrip(unsigned cs, unsigned compat)
{
	uint64_t size = 8 * MiB;
	const char *p = tpath("a.qcow2");
	struct img *im;
	int raw;

	unlink(p);
	CHECK_EQ(create_q(p, size, cs, compat, NULL), 0);
	CHECK_EQ(sh("qemu-img check a.qcow2"), 0);
	raw = open_raw_mirror("a.raw", size);
	im = open_img(p, false);
	if (!im)
		return;
	write_both(im, raw, 0, 512, 1);        /* sub-cluster */
	write_both(im, raw, 1000, 3000, 2);    /* unaligned, maybe cluster-crossing */
	write_both(im, raw, cs - 100, 300, 3); /* crosses a cluster boundary */
	write_both(im, raw, 3 * cs + 17, MIN(5 * cs, 1 * MiB), 4); /* multi-cluster */
	write_both(im, raw, 2 * MiB, 1 * MiB, 5);                  /* big aligned */
	write_both(im, raw, size - 4096, 4096, 6);                 /* the end */
	write_both(im, raw, 2 * MiB + 5000, 100, 7); /* in place over allocated data */
	write_both(im, raw, 5 * MiB - 7, 70000, 8);  /* crosses an L2 table (cs 512) */
	CHECK(same_as_raw(im, raw));
	CHECK_EQ(img_flush(im), 0);
	CHECK_EQ(img_close(im), 0);
	im = open_img(p, true);
	CHECK(im && same_as_raw(im, raw));
	img_close(im);
	close(raw);
	CHECK_EQ(sh("qemu-img check a.qcow2"), 0);
	CHECK_EQ(sh("qemu-img compare -f qcow2 -F raw a.qcow2 a.raw"), 0);
}

TEST(qcow2_write_read_v3_64k)
{
	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	rw_roundtrip(65536, 3);
	cleanup();
}

TEST(qcow2_write_read_v2_4k)
{
	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	rw_roundtrip(4096, 2);
	cleanup();
}

TEST(qcow2_write_read_512_and_2m)
{
	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	rw_roundtrip(512, 3);
	rw_roundtrip(2 * MiB, 3);
	cleanup();
}

TEST(qcow2_create_matches_qemu)
{
	struct img_info info;
	struct img *im;
	char err[512];

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	CHECK_EQ(create_q(tpath("v3.qcow2"), 1 * GiB, 0, 0, NULL), 0);
	CHECK_EQ(sh("qemu-img create -f qcow2 q.qcow2 1G"), 0);
	/* Same header, extensions and metadata layout as qemu-img's own. */
	CHECK_EQ(sh("cmp v3.qcow2 q.qcow2"), 0);
	CHECK_EQ(create_q(tpath("v2.qcow2"), 1 * MiB, 0, 2, NULL), 0);
	CHECK_EQ(sh("qemu-img create -f qcow2 -o compat=0.10 q2.qcow2 1M"), 0);
	CHECK_EQ(sh("cmp v2.qcow2 q2.qcow2"), 0);
	CHECK_EQ(sh("qemu-img info v2.qcow2 | grep -q 'compat: 0.10'"), 0);
	/* Existing file refused. */
	CHECK(img_create(&(struct img_create_opts){.path = tpath("v3.qcow2"),
	                                           .format = IMG_FMT_QCOW2,
	                                           .size = 1 * MiB},
	                 err, sizeof(err)) == -EEXIST);
	CHECK(strstr(err, tpath("v3.qcow2")) != NULL);
	CHECK(img_create(&(struct img_create_opts){.path = tpath("bad.qcow2"),
	                                           .format = IMG_FMT_QCOW2,
	                                           .size = 1 * MiB,
	                                           .cluster_size = 3000},
	                 err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "cluster size") != NULL);
	/* Backing file: size taken from it, format written. */
	CHECK_EQ(sh("qemu-img create -f raw base.raw 3M"), 0);
	CHECK_EQ(create_q(tpath("ov.qcow2"), 0, 0, 0, "base.raw"), 0);
	CHECK_EQ(sh("qemu-img check ov.qcow2"), 0);
	CHECK_EQ(sh("qemu-img info ov.qcow2 | grep -q 'backing file format: raw'"), 0);
	im = open_img(tpath("ov.qcow2"), true);
	CHECK(im != NULL);
	if (im) {
		CHECK_EQ(img_size(im), 3 * MiB);
		CHECK(img_backing(im) != NULL);
		CHECK_STR(img_backing_name(im), "base.raw");
		CHECK_EQ(img_get_info(im, &info), 0);
		CHECK_EQ(info.version, 3);
		CHECK_EQ(info.cluster_size, 65536);
		CHECK_EQ(info.refcount_bits, 16);
		CHECK_STR(info.compression, "zlib");
		CHECK_STR(info.backing_format, "raw");
		img_close(im);
	}
	/* Preallocation. */
	CHECK_EQ(img_create(&(struct img_create_opts){.path = tpath("pm.qcow2"),
	                                              .format = IMG_FMT_QCOW2,
	                                              .size = 5 * MiB,
	                                              .prealloc = IMG_PREALLOC_METADATA},
	                    err, sizeof(err)),
	         0);
	CHECK_EQ(sh("qemu-img check pm.qcow2"), 0);
	CHECK_EQ(sh("qemu-img compare -f qcow2 pm.qcow2 v3.qcow2 2>&1 | grep -q identical || "
	            "qemu-img compare -s pm.qcow2 v2.qcow2"),
	         0);
	CHECK_EQ(img_create(&(struct img_create_opts){.path = tpath("pf.qcow2"),
	                                              .format = IMG_FMT_QCOW2,
	                                              .size = 3 * MiB,
	                                              .cluster_size = 4096,
	                                              .prealloc = IMG_PREALLOC_FULL},
	                    err, sizeof(err)),
	         0);
	CHECK_EQ(sh("qemu-img check pf.qcow2"), 0);
	CHECK_EQ(sh("qemu-img map --output=json pf.qcow2 | grep -q '\"data\": true'"), 0);
	im = open_img(tpath("pf.qcow2"), false);
	if (im) {
		uint64_t host = 0;

		CHECK_EQ(qcow2_map_io(im, 0, 3 * MiB, true, &host), 3 * MiB);
		img_close(im);
	}
	cleanup();
}

/* ---- (b) images made by qemu ---- */

static void check_reads(const char *path)
{
	struct img *im = open_img(path, true);
	uint8_t *buf = malloc(2 * MiB);

	CHECK(im != NULL);
	if (!im) {
		free(buf);
		return;
	}
	CHECK_EQ(img_size(im), 4 * MiB);
	CHECK_EQ(img_pread(im, buf, 64 * 1024, 0), 0);
	CHECK(all_bytes(buf, 64 * 1024, 0xab));
	CHECK_EQ(img_pread(im, buf, 36 * 1024, 64 * 1024), 0);
	CHECK(all_bytes(buf, 36 * 1024, 0));
	CHECK_EQ(img_pread(im, buf, 3 * 1024, 100 * 1024), 0);
	CHECK(all_bytes(buf, 3 * 1024, 0xcd));
	CHECK_EQ(img_pread(im, buf, 512 * 1024, 1 * MiB), 0);
	CHECK(all_bytes(buf, 512 * 1024, 0x11));
	CHECK_EQ(img_pread(im, buf, 64 * 1024, 1536 * 1024), 0);
	CHECK(all_bytes(buf, 64 * 1024, 0));
	CHECK_EQ(img_pread(im, buf, 448 * 1024, 1600 * 1024), 0);
	CHECK(all_bytes(buf, 448 * 1024, 0x11));
	CHECK_EQ(img_pread(im, buf, 2 * MiB, 2 * MiB), 0);
	CHECK(all_bytes(buf, 2 * MiB, 0));
	/* An odd read across everything. */
	CHECK_EQ(img_pread(im, buf, 1000, 65536 - 500), 0);
	CHECK(all_bytes(buf, 500, 0xab) && all_bytes(buf + 500, 500, 0));
	img_close(im);
	free(buf);
}

static void qemu_made(const char *create_opts, const char *const *convert_opts)
{
	CHECK_EQ(sh("rm -f q.img && qemu-img create -f qcow2 %s q.img 4M", create_opts), 0);
	CHECK_EQ(sh("qemu-io -f qcow2 -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 100k 3k' "
	            "-c 'write -P 0x11 1M 1M' -c 'write -z 1536k 64k' q.img"),
	         0);
	check_reads(tpath("q.img"));
	for (; *convert_opts; convert_opts++) {
		CHECK_EQ(
		    sh("rm -f c.img && qemu-img convert -O qcow2 %s q.img c.img", *convert_opts),
		    0);
		check_reads(tpath("c.img"));
	}
}

TEST(qcow2_reads_qemu_images)
{
	/* qemu-io writes synchronously: few sources, many (fast) conversions. */
	static const char *const converts[] = {
	    "-c -o compression_type=zlib",
	    "-c -o compression_type=zstd",
	    "-o compat=0.10,cluster_size=4096",
	    "-c -o compat=0.10",
	    "-o cluster_size=512,refcount_bits=1",
	    "-c -o compression_type=zstd,cluster_size=512",
	    "-c -o compression_type=zlib,cluster_size=512,refcount_bits=64",
	    "-o cluster_size=4096,refcount_bits=8",
	    "-o cluster_size=2M,refcount_bits=64",
	    "-c -o cluster_size=2M,compression_type=zstd",
	    NULL,
	};
	static const char *const none[] = {NULL};

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	qemu_made("", converts);
	qemu_made("-o compat=0.10", none);
	cleanup();
}

/* Writes into compressed clusters: COW into new clusters, then check with qemu-img. */
TEST(qcow2_write_over_compressed)
{
	struct img *im;
	int raw;

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	CHECK_EQ(sh("qemu-img create -f raw r.raw 4M && qemu-io -f raw -c 'write -P 0x5a 0 2M' "
	            "-c 'write -P 0x33 3M 512k' r.raw"),
	         0);
	for (int zstd = 0; zstd < 2; zstd++) {
		CHECK_EQ(sh("rm -f c.qcow2 && qemu-img convert -c -O qcow2 -o "
		            "compression_type=%s,cluster_size=4096 r.raw c.qcow2",
		            zstd ? "zstd" : "zlib"),
		         0);
		CHECK_EQ(sh("cp r.raw m.raw"), 0);
		raw = open(tpath("m.raw"), O_RDWR);
		im = open_img(tpath("c.qcow2"), false);
		if (!im)
			continue;
		write_both(im, raw, 100, 200, 1);
		write_both(im, raw, 4096 * 10 - 50, 8192, 2);
		write_both(im, raw, 3 * MiB + 1000, 70000, 3);
		CHECK_EQ(img_write_zeroes(im, 1 * MiB, 64 * 1024, false), 0);
		{
			static const uint8_t z[65536];

			CHECK_EQ(pwrite(raw, z, 65536, 1 * MiB), 65536);
		}
		CHECK(same_as_raw(im, raw));
		CHECK_EQ(img_close(im), 0);
		close(raw);
		CHECK_EQ(sh("qemu-img check c.qcow2"), 0);
		CHECK_EQ(sh("qemu-img compare -f qcow2 -F raw c.qcow2 m.raw"), 0);
	}
	cleanup();
}

/* ---- (c) backing chains ---- */

TEST(qcow2_backing_chain)
{
	struct img *im;
	uint8_t buf[8192];
	char err[512];
	int raw;

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	/* base.raw (3M, shorter than the overlays) <- mid.qcow2 <- top.qcow2 (4M) */
	CHECK_EQ(sh("qemu-img create -f raw base.raw 3M && qemu-io -f raw -c 'write -P 0x01 0 3M' "
	            "base.raw && md5sum base.raw > base.md5"),
	         0);
	CHECK_EQ(create_q(tpath("mid.qcow2"), 0, 0, 0, "base.raw"), 0);
	im = open_img(tpath("mid.qcow2"), false);
	if (im) {
		memset(buf, 0x02, sizeof(buf));
		CHECK_EQ(img_pwrite(im, buf, 4096, 65536 + 4096), 0);
		CHECK_EQ(img_resize(im, 4 * MiB, err, sizeof(err)), 0);
		img_close(im);
	}
	CHECK_EQ(sh("mkdir sub && mv mid.qcow2 sub/ && ln -s ../base.raw sub/base.raw"), 0);
	CHECK_EQ(create_q(tpath("top.qcow2"), 0, 512, 0, "sub/mid.qcow2"), 0);
	CHECK_EQ(sh("cp base.raw m.raw && truncate -s 4M m.raw && qemu-io -f raw -c 'write -P 0x02 "
	            "69632 4096' m.raw"),
	         0);
	raw = open(tpath("m.raw"), O_RDWR);
	im = open_img(tpath("top.qcow2"), false);
	CHECK(im != NULL);
	if (im) {
		CHECK(img_backing(im) && img_backing(img_backing(im)));
		CHECK(same_as_raw(im, raw));
		write_both(im, raw, 65536 + 4000, 200, 5);  /* COW over mid's data */
		write_both(im, raw, 3 * MiB - 100, 300, 6); /* across the end of base */
		write_both(im, raw, 10, 10, 7);
		CHECK(same_as_raw(im, raw));
		CHECK_EQ(img_close(im), 0);
	}
	close(raw);
	CHECK_EQ(sh("md5sum -c base.md5"), 0);
	CHECK_EQ(sh("qemu-img check top.qcow2 && qemu-img check sub/mid.qcow2"), 0);
	CHECK_EQ(sh("qemu-img compare top.qcow2 m.raw"), 0);
	cleanup();
}

/* ---- (d) write zeroes, discard ---- */

TEST(qcow2_zeroes_and_discard)
{
	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	for (unsigned v = 2; v <= 3; v++) {
		for (int backed = 0; backed < 2; backed++) {
			struct img *im;
			int raw;

			CHECK_EQ(sh("rm -f b.raw t.qcow2 && qemu-img create -f raw b.raw 2M && "
			            "qemu-io -f raw -c 'write -P 0x77 0 2M' b.raw"),
			         0);
			CHECK_EQ(
			    create_q(tpath("t.qcow2"), 2 * MiB, 4096, v, backed ? "b.raw" : NULL),
			    0);
			raw = open_raw_mirror("m.raw", 2 * MiB);
			if (backed)
				CHECK_EQ(sh("cp b.raw m.raw"), 0);
			im = open_img(tpath("t.qcow2"), false);
			if (!im)
				continue;
			write_both(im, raw, 0, 64 * 1024, 1);
			CHECK_EQ(img_write_zeroes(im, 4096, 3 * 4096, true), 0);
			CHECK_EQ(img_write_zeroes(im, 20000, 10000, false), 0); /* partial */
			CHECK_EQ(img_write_zeroes(im, 512 * 1024, 64 * 1024, false),
			         0); /* unalloc */
			{
				uint8_t z[65536] = {0};

				CHECK_EQ(pwrite(raw, z, 3 * 4096, 4096), 3 * 4096);
				CHECK_EQ(pwrite(raw, z, 10000, 20000), 10000);
				CHECK_EQ(pwrite(raw, z, 65536, 512 * 1024), 65536);
			}
			CHECK(same_as_raw(im, raw));
			/* Discard: reads zeros or old data; ours punch holes in owned clusters. */
			CHECK_EQ(img_discard(im, 32768, 8192), 0);
			{
				uint8_t b[8192];

				CHECK_EQ(img_pread(im, b, 8192, 32768), 0);
				fill(b + 4096, 0, 0, 0);
				CHECK(all_bytes(b, 8192, 0) || b[0] == pat(32768, 1));
				CHECK_EQ(pwrite(raw, b, 8192, 32768), 8192);
			}
			/* Rewrite a zeroed (still allocated) cluster: reused in place. */
			write_both(im, raw, 4096 + 100, 100, 2);
			CHECK(same_as_raw(im, raw));
			CHECK_EQ(img_close(im), 0);
			close(raw);
			CHECK_EQ(sh("qemu-img check t.qcow2"), 0);
			CHECK_EQ(sh("qemu-img compare t.qcow2 m.raw"), 0);
		}
	}
	cleanup();
}

/* ---- (e) hostile images ---- */

/* Opens path; expects failure naming the file. */
static void expect_open_fails(const char *path, bool ro, const char *needle)
{
	char err[512] = "";
	struct img *im =
	    img_open(&(struct img_open_opts){.path = path, .readonly = ro}, err, sizeof(err));

	CHECK(im == NULL);
	if (im) {
		fprintf(stderr, "%s opened unexpectedly\n", path);
		img_close(im);
		return;
	}
	CHECK(strstr(err, path) != NULL);
	if (needle && !strstr(err, needle)) {
		fprintf(stderr, "error '%s' lacks '%s'\n", err, needle);
		CHECK(0);
	}
}

/* Opens path read-only and reads everything; expects -EIO somewhere, no crash. */
static void expect_read_eio(const char *path)
{
	struct img *im = open_img(path, true);
	uint8_t *buf = malloc(1 * MiB);
	bool eio = false;

	if (im) {
		for (uint64_t off = 0; off < img_size(im); off += 1 * MiB)
			if (img_pread(im, buf, MIN(1 * MiB, img_size(im) - off), off) == -EIO)
				eio = true;
		img_close(im);
	}
	CHECK(im != NULL && eio);
	free(buf);
}

TEST(qcow2_hostile_images)
{
	char p[256];
	uint64_t l1_off, l2_off;

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	snprintf(p, sizeof(p), "%s", tpath("h.qcow2"));
#define FRESH() CHECK_EQ(sh("cp good.qcow2 h.qcow2"), 0)
	CHECK_EQ(sh("qemu-img create -f qcow2 -o cluster_size=4096 good.qcow2 4M && qemu-io -f "
	            "qcow2 -c 'write -P 0xab 0 64k' good.qcow2"),
	         0);
	l1_off = peek64(tpath("good.qcow2"), 40);
	l2_off = peek64(tpath("good.qcow2"), l1_off) & QCOW2_L1E_OFFSET_MASK;

	FRESH();
	poke32(p, 0, 0x12345678);
	{
		/* Bad magic: probed as raw, but refused as qcow2. */
		char err[512];
		struct img *im = img_open(
		    &(struct img_open_opts){.path = p, .format = IMG_FMT_QCOW2, .readonly = true},
		    err, sizeof(err));

		CHECK(im == NULL && strstr(err, p) && strstr(err, "not a qcow2"));
		if (im)
			img_close(im);
	}
	FRESH();
	poke32(p, 4, 4);
	expect_open_fails(p, true, "version 4");
	FRESH();
	poke32(p, 20, 30);
	expect_open_fails(p, true, "cluster_bits");
	FRESH();
	poke32(p, 36, 0x7fffffff);
	expect_open_fails(p, true, "L1");
	FRESH();
	poke64(p, 40, 0x100000000ull);
	expect_open_fails(p, true, "L1");
	FRESH();
	poke64(p, 24, 1ull << 63); /* huge virtual size */
	expect_open_fails(p, true, "L1");
	FRESH();
	poke64(p, 48, 0);
	expect_open_fails(p, true, "refcount table");
	FRESH();
	poke64(p, 8, 512);
	poke32(p, 16, 100000);
	expect_open_fails(p, true, "backing file name");
	FRESH();
	poke32(p, 32, 1);
	expect_open_fails(p, true, "encrypted");
	FRESH();
	poke64(p, 72, 1ull << 5);
	expect_open_fails(p, true, "bit 5");
	FRESH();
	poke64(p, 72, QCOW2_INCOMPAT_EXTL2);
	expect_open_fails(p, true, "extended L2");
	FRESH();
	poke64(p, 72, QCOW2_INCOMPAT_DATA_FILE);
	expect_open_fails(p, true, "external data file");
	FRESH();
	poke64(p, 72, QCOW2_INCOMPAT_CORRUPT);
	expect_open_fails(p, false, "marked corrupt");
	{
		struct img *im = open_img(p, true); /* read-only is fine */

		CHECK(im != NULL);
		img_close(im);
	}
	FRESH();
	poke64(p, 72, QCOW2_INCOMPAT_DIRTY);
	expect_open_fails(p, false, "refcount repair");

	/* Table entries: the open succeeds, the read fails with -EIO. */
	FRESH();
	poke64(p, l1_off, (l2_off + 8) | QCOW2_OFLAG_COPIED); /* unaligned L2 offset */
	expect_read_eio(p);
	FRESH();
	poke64(p, l1_off, (1ull << 40) | QCOW2_OFLAG_COPIED); /* L2 past EOF */
	expect_read_eio(p);
	FRESH();
	poke64(p, l2_off + 8, (1ull << 40) | QCOW2_OFLAG_COPIED); /* data past EOF */
	expect_read_eio(p);
	FRESH();
	poke64(p, l2_off + 8, 4096 | (1ull << 60)); /* reserved bits */
	expect_read_eio(p);
	FRESH();
	poke64(p, l2_off + 16, QCOW2_OFLAG_COMPRESSED | (1ull << 40)); /* compressed past EOF */
	expect_read_eio(p);
	FRESH();
	poke64(p, l2_off + 16, QCOW2_OFLAG_COMPRESSED | 4096 * 3); /* compressed garbage */
	expect_read_eio(p);
	/* Writes through a bad entry fail too, without touching the file past its end. */
	FRESH();
	poke64(p, l2_off + 8, (1ull << 40) | QCOW2_OFLAG_COPIED);
	{
		struct img *im = open_img(p, false);
		uint8_t b[512] = {1};
		struct stat st;

		if (im) {
			CHECK_EQ(img_pwrite(im, b, 512, 4096), -EIO);
			img_close(im);
		}
		CHECK(stat(p, &st) == 0 && (uint64_t)st.st_size < 1 * MiB);
	}
	/* Refcount table entry pointing past EOF: allocation fails, no crash. */
	FRESH();
	poke64(p, peek64(p, 48), 1ull << 40);
	{
		struct img *im = open_img(p, false);
		uint8_t b[512] = {1};

		if (im) {
			CHECK_EQ(img_pwrite(im, b, 512, 2 * MiB), -EIO);
			img_close(im);
		}
	}

	/* Backing loops. */
	CHECK_EQ(create_q(tpath("la.qcow2"), 1 * MiB, 0, 0, NULL), 0);
	CHECK_EQ(create_q(tpath("lb.qcow2"), 1 * MiB, 0, 0, "la.qcow2"), 0);
	CHECK_EQ(sh("qemu-img rebase -u -F qcow2 -b lb.qcow2 la.qcow2"), 0);
	expect_open_fails(tpath("la.qcow2"), false, "loops");
	CHECK_EQ(create_q(tpath("self.qcow2"), 1 * MiB, 0, 0, NULL), 0);
	CHECK_EQ(sh("qemu-img rebase -u -F qcow2 -b self.qcow2 self.qcow2"), 0);
	expect_open_fails(tpath("self.qcow2"), true, "loops");
	cleanup();
}

/* ---- (f) crash consistency ---- */

TEST(qcow2_crash_leaves_no_corruption)
{
	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	/* 0: exit without close; 1: SIGKILL half-way; 2: small clusters and a 4-table L2
	 * cache, so dirty tables are evicted (written back) during the run. */
	for (int round = 0; round < 3; round++) {
		unsigned nwrites = round == 2 ? 150 : 600;
		pid_t pid;
		int st, rc;

		CHECK_EQ(sh("rm -f k.qcow2"), 0);
		CHECK_EQ(create_q(tpath("k.qcow2"), 64 * MiB, round == 2 ? 4096 : 65536, 3, NULL),
		         0);
		pid = fork();
		if (pid == 0) {
			struct img *im = img_open(&(struct img_open_opts){.path = tpath("k.qcow2"),
			                                                  .l2_cache_bytes = 4096},
			                          (char[256]){0}, 256);
			uint8_t b[12288];

			if (!im)
				_exit(1);
			for (unsigned i = 0; i < nwrites; i++) {
				uint64_t off = ((uint64_t)i * 2654435761u) % (60 * MiB);

				memset(b, (int)i, sizeof(b));
				if (img_pwrite(im, b, 1000 + (i % 11000), off) < 0)
					_exit(2);
				if (round == 1 && i == 300)
					kill(getpid(), SIGKILL);
			}
			_exit(0); /* no flush, no close */
		}
		CHECK(waitpid(pid, &st, 0) == pid);
		CHECK(round == 1 ? WIFSIGNALED(st) : (WIFEXITED(st) && WEXITSTATUS(st) == 0));
		rc = sh("qemu-img check k.qcow2");
		CHECK(rc == 0 || rc == 3);
		/* Our own open still works, and qemu-img can repair the leaks. */
		CHECK_EQ(sh("qemu-img check -r leaks k.qcow2 && qemu-img check k.qcow2"), 0);
	}
	cleanup();
}

/* ---- (g) refcount table growth ---- */

TEST(qcow2_refcount_growth_512)
{
	struct img *im;
	int raw;

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	CHECK_EQ(create_q(tpath("g.qcow2"), 16 * MiB, 512, 3, NULL), 0);
	raw = open_raw_mirror("g.raw", 16 * MiB);
	im = open_img(tpath("g.qcow2"), false);
	if (im) {
		uint64_t reft0 = im->q->reft_offset;

		/* Scattered first (many L2 tables), then sequential 3 MiB. */
		for (unsigned i = 0; i < 60; i++)
			write_both(im, raw, (uint64_t)i * 277777 % (15 * MiB), 700, i);
		write_both(im, raw, 4 * MiB, 10 * MiB, 9); /* past 8 MiB: one table cluster */
		CHECK(im->q->reft_offset != reft0);        /* the table moved */
		CHECK(im->q->reft_clusters > 1);
		CHECK(same_as_raw(im, raw));
		CHECK_EQ(img_close(im), 0);
	}
	close(raw);
	CHECK_EQ(sh("qemu-img check g.qcow2"), 0);
	CHECK_EQ(sh("qemu-img compare g.qcow2 g.raw"), 0);
	/* refcount_bits=1 and 64 images made by qemu, grown by us. */
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(sh("rm -f r.qcow2 && qemu-img create -f qcow2 -o "
		            "cluster_size=512,refcount_bits=%d r.qcow2 8M",
		            i ? 64 : 1),
		         0);
		raw = open_raw_mirror("r.raw", 8 * MiB);
		im = open_img(tpath("r.qcow2"), false);
		if (im) {
			write_both(im, raw, 1 * MiB, 2 * MiB + 333, 3);
			CHECK_EQ(img_close(im), 0);
		}
		close(raw);
		CHECK_EQ(sh("qemu-img check r.qcow2"), 0);
		CHECK_EQ(sh("qemu-img compare r.qcow2 r.raw"), 0);
	}
	cleanup();
}

/* ---- (h) resize ---- */

TEST(qcow2_resize_grow)
{
	struct img *im;
	char err[512];
	uint8_t buf[4096];

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	CHECK_EQ(create_q(tpath("z.qcow2"), 1 * MiB, 512, 3, NULL), 0);
	im = open_img(tpath("z.qcow2"), false);
	if (im) {
		memset(buf, 0x42, sizeof(buf));
		CHECK_EQ(img_pwrite(im, buf, 4096, 0), 0);
		CHECK_EQ(img_resize(im, 64 * MiB, err, sizeof(err)), 0);
		CHECK_EQ(img_size(im), 64 * MiB);
		CHECK_EQ(img_pwrite(im, buf, 4096, 64 * MiB - 4096), 0);
		CHECK_EQ(img_resize(im, 1 * MiB, err, sizeof(err)), -ENOTSUP);
		CHECK(strstr(err, "shrinking") && strstr(err, tpath("z.qcow2")));
		CHECK_EQ(img_pwrite(im, buf, 4096, 64 * MiB), -EINVAL);
		CHECK_EQ(img_close(im), 0);
	}
	CHECK_EQ(sh("qemu-img check z.qcow2"), 0);
	CHECK_EQ(sh("qemu-img info z.qcow2 | grep -q '64 MiB'"), 0);
	CHECK_EQ(sh("qemu-io -c 'read -P 0x42 0 4k' -c 'read -P 0x42 64508k 4k' -c 'read -P 0 4k "
	            "1M' z.qcow2 | grep -vq Pattern"),
	         0);
	cleanup();
}

/* ---- (i) map_io ---- */

TEST(qcow2_map_io_runs)
{
	struct img *im;
	uint64_t host = 0, host2 = 0;
	uint8_t *buf = malloc(1 * MiB);

	if (!have_qemu()) {
		free(buf);
		return test_skip("needs qemu-img");
	}
	setup();
	CHECK_EQ(create_q(tpath("m.qcow2"), 8 * MiB, 0, 3, NULL), 0);
	im = open_img(tpath("m.qcow2"), false);
	if (im) {
		memset(buf, 1, 1 * MiB);
		CHECK_EQ(img_pwrite(im, buf, 1 * MiB, 0), 0);
		CHECK_EQ(img_pwrite(im, buf, 1 * MiB, 1 * MiB), 0);
		CHECK_EQ(qcow2_map_io(im, 0, 2 * MiB, true, &host), 2 * MiB);
		CHECK_EQ(qcow2_map_io(im, 4096, 8192, false, &host2), 8192);
		CHECK_EQ(host2, host + 4096);
		CHECK_EQ(qcow2_map_io(im, 4 * MiB, 4096, false, &host), 0); /* unallocated */
		CHECK_EQ(img_write_zeroes(im, 1 * MiB, 65536, false), 0);
		CHECK_EQ(qcow2_map_io(im, 1 * MiB, 4096, false, &host), 0); /* zero */
		CHECK_EQ(qcow2_map_io(im, 0, 2 * MiB, true, &host), 1 * MiB);
		CHECK_EQ(qcow2_map_io(im, 9 * MiB, 4096, false, &host), -EINVAL);
		/* Data written through the mapping reads back through the image. */
		CHECK_EQ(qcow2_map_io(im, 65536, 512, true, &host), 512);
		memset(buf, 0x99, 512);
		CHECK_EQ(pwrite(img_fd(im), buf, 512, (off_t)host), 512);
		CHECK_EQ(img_pread(im, buf + 512, 512, 65536), 0);
		CHECK(all_bytes(buf + 512, 512, 0x99));
		img_close(im);
	}
	/* Compressed clusters are not mappable. */
	CHECK_EQ(sh("qemu-img convert -c -O qcow2 m.qcow2 c.qcow2"), 0);
	im = open_img(tpath("c.qcow2"), true);
	if (im) {
		CHECK_EQ(qcow2_map_io(im, 0, 4096, false, &host), 0);
		img_close(im);
	}
	free(buf);
	cleanup();
}

/* ---- (j) threads ---- */

struct tw {
	struct img *im;
	uint64_t base;
	unsigned seed;
};

static void *thread_writer(void *arg)
{
	struct tw *t = arg;
	uint8_t buf[5000];

	for (unsigned i = 0; i < 200; i++) {
		uint64_t off = t->base + (uint64_t)i * 5000;

		fill(buf, sizeof(buf), off, t->seed);
		if (img_pwrite(t->im, buf, sizeof(buf), off) < 0)
			return (void *)1;
		if (i % 50 == 0)
			img_flush(t->im);
	}
	return NULL;
}

TEST(qcow2_threads)
{
	struct img *im;
	pthread_t th[2];
	struct tw tw[2];
	void *rv;
	int raw;

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	CHECK_EQ(create_q(tpath("t.qcow2"), 4 * MiB, 4096, 3, NULL), 0);
	im = open_img(tpath("t.qcow2"), false);
	raw = open_raw_mirror("t.raw", 4 * MiB);
	if (im) {
		for (int i = 0; i < 2; i++) {
			tw[i] = (struct tw){im, (uint64_t)i * 2 * MiB, (unsigned)i + 1};
			pthread_create(&th[i], NULL, thread_writer, &tw[i]);
		}
		for (int i = 0; i < 2; i++) {
			pthread_join(th[i], &rv);
			CHECK(rv == NULL);
		}
		for (int i = 0; i < 2; i++) {
			uint8_t *b = malloc(200 * 5000);

			fill(b, 200 * 5000, (uint64_t)i * 2 * MiB, (unsigned)i + 1);
			CHECK_EQ(pwrite(raw, b, 200 * 5000, (off_t)i * 2 * MiB), 200 * 5000);
			free(b);
		}
		CHECK(same_as_raw(im, raw));
		CHECK_EQ(img_close(im), 0);
	}
	close(raw);
	CHECK_EQ(sh("qemu-img check t.qcow2 && qemu-img compare t.qcow2 t.raw"), 0);
	cleanup();
}

/* ---- raw images and block status ---- */

TEST(image_raw_basics)
{
	struct img *im;
	struct img_extent ext;
	char err[512];
	uint8_t buf[8192];

	setup();
	CHECK_EQ(img_create(&(struct img_create_opts){.path = tpath("r.img"),
	                                              .format = IMG_FMT_RAW,
	                                              .size = 4 * MiB},
	                    err, sizeof(err)),
	         0);
	im = open_img(tpath("r.img"), false);
	CHECK(im != NULL);
	if (im) {
		CHECK_EQ(img_format(im), IMG_FMT_RAW);
		CHECK_EQ(img_size(im), 4 * MiB);
		memset(buf, 7, sizeof(buf));
		CHECK_EQ(img_pwrite(im, buf, sizeof(buf), 1 * MiB), 0);
		CHECK_EQ(img_block_status(im, 0, 4 * MiB, &ext), 0);
		CHECK_EQ(ext.kind, IMG_EXT_ZERO);
		CHECK_EQ(ext.len, 1 * MiB);
		CHECK_EQ(img_block_status(im, 1 * MiB, 4096, &ext), 0);
		CHECK_EQ(ext.kind, IMG_EXT_DATA);
		CHECK_EQ(img_write_zeroes(im, 1 * MiB, 4096, true), 0);
		CHECK_EQ(img_pread(im, buf, 8192, 1 * MiB), 0);
		CHECK(all_bytes(buf, 4096, 0) && all_bytes(buf + 4096, 4096, 7));
		CHECK_EQ(img_pread(im, buf, 10, 4 * MiB - 5), -EINVAL);
		CHECK_EQ(img_resize(im, 8 * MiB, err, sizeof(err)), 0);
		CHECK_EQ(img_size(im), 8 * MiB);
		img_close(im);
	}
	im = open_img(tpath("r.img"), true);
	if (im) {
		CHECK_EQ(img_pwrite(im, buf, 10, 0), -EROFS);
		img_close(im);
	}
	CHECK_STR(img_format_name(IMG_FMT_QCOW2), "qcow2");
	CHECK_EQ(img_format_parse("raw"), IMG_FMT_RAW);
	CHECK_EQ(img_format_parse("vmdk"), -1);
	cleanup();
}

TEST(qcow2_block_status_kinds)
{
	struct img *im;
	struct img_extent ext;
	uint8_t buf[65536];

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	CHECK_EQ(create_q(tpath("s.qcow2"), 4 * MiB, 0, 3, NULL), 0);
	im = open_img(tpath("s.qcow2"), false);
	if (im) {
		memset(buf, 3, sizeof(buf));
		CHECK_EQ(img_pwrite(im, buf, sizeof(buf), 65536), 0);
		CHECK_EQ(img_pwrite(im, buf, sizeof(buf), 131072), 0);
		CHECK_EQ(img_pwrite(im, buf, sizeof(buf), 1 * MiB), 0);
		CHECK_EQ(img_write_zeroes(im, 1 * MiB, 2 * 65536, false), 0); /* data + unalloc */
		CHECK_EQ(img_block_status(im, 0, 4 * MiB, &ext), 0);
		CHECK_EQ(ext.kind, IMG_EXT_UNALLOC);
		CHECK_EQ(ext.len, 65536);
		CHECK_EQ(img_block_status(im, 65536, 4 * MiB - 65536, &ext), 0);
		CHECK_EQ(ext.kind, IMG_EXT_DATA);
		CHECK_EQ(ext.len, 2 * 65536);
		CHECK(ext.host_off != 0);
		CHECK_EQ(img_block_status(im, 1 * MiB, 3 * MiB, &ext), 0);
		CHECK_EQ(ext.kind, IMG_EXT_ZERO); /* zeroed data cluster: stays allocated */
		CHECK_EQ(ext.len, 65536);
		CHECK_EQ(img_block_status(im, 1 * MiB + 65536, 65536, &ext), 0);
		CHECK_EQ(ext.kind, IMG_EXT_UNALLOC); /* no backing: already reads zeros */
		img_close(im);
	}
	cleanup();
}

/* Snapshot-shared clusters (refcount 2, no COPIED) are copied on write. */
TEST(qcow2_cow_shared_with_snapshot)
{
	struct img *im;
	int raw;

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	CHECK_EQ(sh("qemu-img create -f qcow2 -o cluster_size=4096 s.qcow2 2M && qemu-io -c "
	            "'write -P 0x61 0 1M' s.qcow2 && qemu-img snapshot -c snap1 s.qcow2"),
	         0);
	CHECK_EQ(sh("qemu-img convert -O raw s.qcow2 s.raw"), 0);
	raw = open(tpath("s.raw"), O_RDWR);
	im = open_img(tpath("s.qcow2"), false);
	if (im) {
		uint64_t host;

		CHECK_EQ(qcow2_map_io(im, 0, 4096, true, &host), 0);     /* shared: no write map */
		CHECK_EQ(qcow2_map_io(im, 0, 4096, false, &host), 4096); /* but readable */
		write_both(im, raw, 100, 5000, 1);
		write_both(im, raw, 500000, 100000, 2);
		CHECK(same_as_raw(im, raw));
		CHECK_EQ(img_close(im), 0);
	}
	close(raw);
	CHECK_EQ(sh("qemu-img check s.qcow2"), 0);
	CHECK_EQ(sh("qemu-img compare s.qcow2 s.raw"), 0);
	/* The snapshot still holds the old data. */
	CHECK_EQ(sh("qemu-img snapshot -a snap1 s.qcow2 && qemu-io -c 'read -P 0x61 0 1M' s.qcow2 "
	            "| grep -vq Pattern"),
	         0);
	cleanup();
}

/* Unknown autoclear bits are cleared by a read-write open; unknown extensions are kept. */
TEST(qcow2_header_rewrite_keeps_unknown)
{
	struct img *im;
	char err[512];
	static const uint8_t ext[16] = {0x12, 0x34, 0x56, 0x78, 0,   0,  0,
	                                5,    'h',  'e',  'l',  'l', 'o'};

	if (!have_qemu())
		return test_skip("needs qemu-img");
	setup();
	CHECK_EQ(sh("qemu-img create -f qcow2 -o cluster_size=4096 u.qcow2 1M"), 0);
	/* qemu leaves no extension here at 4 KiB clusters: put ours at header_length. */
	poke(tpath("u.qcow2"), 112, ext, sizeof(ext));
	poke64(tpath("u.qcow2"), 88, 1ull << 5);
	im = open_img(tpath("u.qcow2"), false);
	CHECK(im != NULL);
	if (im) {
		CHECK_EQ(img_resize(im, 2 * MiB, err, sizeof(err)), 0); /* rewrites the header */
		img_close(im);
	}
	CHECK_EQ(peek64(tpath("u.qcow2"), 88), 0);
	CHECK_EQ(sh("qemu-img check u.qcow2 && qemu-img info u.qcow2 | grep -q '2 MiB'"), 0);
	CHECK_EQ(sh("grep -q hello u.qcow2"), 0);
	cleanup();
}

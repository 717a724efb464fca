/* test_qcow2_snapshot.c: qcow2 internal snapshots, check/repair, set_backing and make_empty,
 * cross-checked against qemu-img / qemu-io (skipped where those are missing). */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
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

static char tmpdir[64];

static void rm_tmpdir(void)
{
	rmdir(tmpdir); /* empty by then, unless a test failed midway */
}

static const char *tdir(void)
{
	if (!tmpdir[0]) {
		strcpy(tmpdir, "/tmp/vmstack-qsnap-XXXXXX");
		if (!mkdtemp(tmpdir))
			tmpdir[0] = '\0';
		else
			atexit(rm_tmpdir);
	}
	return tmpdir;
}

static void tpath(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tdir(), name);
	unlink(buf);
}

static bool have_qemu(void)
{
	return access("/usr/bin/qemu-img", X_OK) == 0 && access("/usr/bin/qemu-io", X_OK) == 0;
}

/* Runs a shell command; its stdout+stderr go to out (if any). Returns the exit status. */
static int run(char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int run(char *out, size_t outlen, const char *fmt, ...)
{
	char cmd[2048];
	char sink[4096];
	size_t n = 0;
	va_list ap;
	FILE *f;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
	va_end(ap);
	strcat(cmd, " 2>&1");
	if (!out) {
		out = sink;
		outlen = sizeof(sink);
	}
	out[0] = '\0';
	f = popen(cmd, "r");
	if (!f)
		return -1;
	while (n + 1 < outlen) {
		size_t r = fread(out + n, 1, outlen - 1 - n, f);

		if (r == 0)
			break;
		n += r;
	}
	out[n] = '\0';
	while (fread(sink, 1, sizeof(sink), f) > 0)
		;
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* qemu-img check's exit code; its output is shown when it is not `expect`. */
static int qemu_check_is(const char *path, int expect)
{
	char out[8192];
	int rc = run(out, sizeof(out), "qemu-img check -f qcow2 '%s'", path);

	if (rc != expect)
		fprintf(stderr, "qemu-img check %s -> %d:\n%s", path, rc, out);
	return rc;
}

static int qemu_check(const char *path)
{
	return qemu_check_is(path, 0);
}

/* Every problem line of qemu-img check ("ERROR ...", "Leaked cluster ...") is in ours. */
static bool qemu_lines_in(const char *path, const char *ours)
{
	char out[8192], *save = NULL;
	bool ok = true;
	unsigned n = 0;

	run(out, sizeof(out), "qemu-img check -f qcow2 '%s'", path);
	for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "ERROR", 5) != 0 && strncmp(line, "Leaked", 6) != 0)
			continue;
		n++;
		if (!strstr(ours, line)) {
			fprintf(stderr, "qemu-img says \"%s\"; ours:\n%s", line, ours);
			ok = false;
		}
	}
	return ok && n > 0;
}

static struct img *open_img(const char *path, bool ro)
{
	char err[512] = "";
	struct img *im =
	    img_open(&(struct img_open_opts){.path = path, .format = IMG_FMT_QCOW2, .readonly = ro},
	             err, sizeof(err));

	if (!im)
		fprintf(stderr, "img_open %s: %s\n", path, err);
	return im;
}

static struct img *open_check(const char *path, bool ro)
{
	char err[512] = "";
	struct img *im = img_open(
	    &(struct img_open_opts){
	        .path = path, .format = IMG_FMT_QCOW2, .readonly = ro, .no_backing = true},
	    err, sizeof(err));

	if (!im)
		fprintf(stderr, "img_open %s: %s\n", path, err);
	return im;
}

static bool buf_is(const uint8_t *b, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (b[i] != v)
			return false;
	return true;
}

/* Reads len bytes at off with ours and tells whether they are all v. */
static bool reads_as(struct img *im, uint64_t off, size_t len, uint8_t v)
{
	uint8_t *b = malloc(len);
	bool ok = b && img_pread(im, b, len, off) == 0 && buf_is(b, len, v);

	free(b);
	return ok;
}

static bool qemu_reads_as(const char *path, uint64_t off, size_t len, uint8_t v)
{
	char out[4096];
	int rc = run(out, sizeof(out), "qemu-io -f qcow2 -r -c 'read -P 0x%02x %llu %zu' '%s'", v,
	             (unsigned long long)off, len, path);

	if (rc != 0 || strstr(out, "verification failed") || strstr(out, "error")) {
		fprintf(stderr, "qemu-io read -P 0x%02x %llu %zu: %s", v, (unsigned long long)off,
		        len, out);
		return false;
	}
	return true;
}

static void fill_with(struct img *im, uint64_t off, size_t len, uint8_t v)
{
	uint8_t *b = malloc(len);

	memset(b, v, len);
	CHECK_EQ(img_pwrite(im, b, len, off), 0);
	free(b);
}

/* A report callback collecting lines. */
struct lines {
	char buf[16384];
	size_t len;
	unsigned n;
};

static void collect(void *opaque, const char *line)
{
	struct lines *l = opaque;
	int w = snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s\n", line);

	if (w > 0 && l->len + (size_t)w < sizeof(l->buf))
		l->len += (size_t)w;
	l->n++;
}

static int our_check(const char *path, enum qcow2_repair r, struct qcow2_check_result *res,
                     struct lines *l)
{
	struct img *im = open_check(path, r == QCOW2_REPAIR_NONE);
	int ret;

	if (!im)
		return -EIO;
	memset(l, 0, sizeof(*l));
	ret = qcow2_check(im, r, res, collect, l);
	img_close(im);
	return ret;
}

/* qemu-img's exit code for a result: 0 clean, 2 corruptions, 3 leaks only, 1 incomplete. */
static int exit_code_of(const struct qcow2_check_result *r)
{
	if (r->check_errors)
		return 1;
	if (r->corruptions)
		return 2;
	if (r->leaks)
		return 3;
	return 0;
}

static uint64_t file_u64(const char *path, uint64_t off)
{
	uint64_t v = 0;
	int fd = open(path, O_RDONLY);

	if (fd >= 0) {
		if (pread(fd, &v, 8, (off_t)off) != 8)
			v = 0;
		close(fd);
	}
	return be64toh(v);
}

static void file_put(const char *path, uint64_t off, const void *p, size_t len)
{
	int fd = open(path, O_WRONLY);

	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK_EQ(pwrite(fd, p, len, (off_t)off), (ssize_t)len);
		close(fd);
	}
}

static void file_put_be64(const char *path, uint64_t off, uint64_t v)
{
	v = htobe64(v);
	file_put(path, off, &v, 8);
}

static void file_put_be32(const char *path, uint64_t off, uint32_t v)
{
	v = htobe32(v);
	file_put(path, off, &v, 4);
}

static void file_put_be16(const char *path, uint64_t off, uint16_t v)
{
	v = htobe16(v);
	file_put(path, off, &v, 2);
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* ---- snapshots ---- */

TEST(snapshot_create_list_matches_qemu)
{
	char p[128], out[8192], err[512];
	struct qcow2_snapshot_info info[4];
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "create.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 4M", p), 0);
	CHECK_EQ(run(NULL, 0,
	             "qemu-io -f qcow2 -c 'write -P 0x11 0 128k' -c 'write -P 0x12 1M 64k' "
	             "-c 'write -z 2M 64k' '%s'",
	             p),
	         0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_list(im, info, 4), 0);
	CHECK_EQ(qcow2_snapshot_create(im, "first", err, sizeof(err)), 0);
	fill_with(im, 0, 4096, 0x21);
	CHECK_EQ(qcow2_snapshot_create(im, "second", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_create(im, "first", err, sizeof(err)), -EEXIST);
	CHECK(strstr(err, "first") != NULL);
	CHECK_EQ(qcow2_snapshot_create(im, "", err, sizeof(err)), -EINVAL);
	CHECK_EQ(qcow2_snapshot_list(im, info, 4), 2);
	CHECK_STR(info[0].id, "1");
	CHECK_STR(info[0].name, "first");
	CHECK_STR(info[1].id, "2");
	CHECK_STR(info[1].name, "second");
	CHECK_EQ(info[0].disk_size, 4 * MiB);
	CHECK_EQ(info[0].vm_state_size, 0);
	CHECK(info[1].date_sec > 1600000000u);
	CHECK_EQ(qcow2_snapshot_list(im, info, 1), 2); /* more than max: count still */
	CHECK_EQ(img_close(im), 0);

	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(run(out, sizeof(out), "qemu-img snapshot -l '%s'", p), 0);
	CHECK(strstr(out, "first") != NULL);
	CHECK(strstr(out, "second") != NULL);
	/* The list's rows start with the id. */
	CHECK(strstr(out, "\n1 ") != NULL);
	CHECK(strstr(out, "\n2 ") != NULL);
	/* And the data: the live image has the write, the snapshots their own state. */
	CHECK(qemu_reads_as(p, 0, 4096, 0x21));
	CHECK(qemu_reads_as(p, 4096, 124 * 1024, 0x11));
	CHECK(qemu_reads_as(p, 1 * MiB, 64 * 1024, 0x12));
	CHECK(qemu_reads_as(p, 2 * MiB, 64 * 1024, 0x00));
	unlink(p);
}

TEST(snapshot_apply_restores_data)
{
	char p[128], err[512];
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "apply.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 8M", p), 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	fill_with(im, 0, 256 * 1024, 0x11);
	fill_with(im, 5 * MiB, 64 * 1024, 0x12);
	CHECK_EQ(qcow2_snapshot_create(im, "before", err, sizeof(err)), 0);
	fill_with(im, 0, 128 * 1024, 0x22);
	fill_with(im, 3 * MiB, 64 * 1024, 0x23); /* a cluster the snapshot never had */
	CHECK(reads_as(im, 0, 128 * 1024, 0x22));
	CHECK_EQ(qcow2_snapshot_apply(im, "nope", err, sizeof(err)), -ENOENT);
	CHECK_EQ(qcow2_snapshot_apply(im, "before", err, sizeof(err)), 0);
	CHECK(reads_as(im, 0, 256 * 1024, 0x11));
	CHECK(reads_as(im, 3 * MiB, 64 * 1024, 0x00));
	CHECK(reads_as(im, 5 * MiB, 64 * 1024, 0x12));
	/* Writing after the revert must not touch the snapshot's clusters (COW again). */
	fill_with(im, 0, 4096, 0x33);
	CHECK(reads_as(im, 0, 4096, 0x33));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 0, 4096, 0x33));
	CHECK(qemu_reads_as(p, 4096, 252 * 1024, 0x11));
	CHECK(qemu_reads_as(p, 3 * MiB, 64 * 1024, 0x00));

	/* Apply by id, again: the first write is undone. */
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_apply(im, "1", err, sizeof(err)), 0);
	CHECK(reads_as(im, 0, 256 * 1024, 0x11));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 0, 256 * 1024, 0x11));
	unlink(p);
}

TEST(snapshot_delete_keeps_data_and_check_clean)
{
	char p[128], out[8192], err[512];
	struct qcow2_snapshot_info info[4];
	struct qcow2_check_result res;
	struct lines l;
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "delete.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 4M", p), 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	fill_with(im, 0, 192 * 1024, 0x41);
	CHECK_EQ(qcow2_snapshot_create(im, "a", err, sizeof(err)), 0);
	fill_with(im, 64 * 1024, 64 * 1024, 0x42);
	CHECK_EQ(qcow2_snapshot_create(im, "b", err, sizeof(err)), 0);
	fill_with(im, 128 * 1024, 64 * 1024, 0x43);
	CHECK_EQ(qcow2_snapshot_delete(im, "a", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_delete(im, "a", err, sizeof(err)), -ENOENT);
	CHECK_EQ(qcow2_snapshot_list(im, info, 4), 1);
	CHECK_STR(info[0].name, "b");
	CHECK_STR(info[0].id, "2");
	CHECK(reads_as(im, 0, 64 * 1024, 0x41));
	CHECK(reads_as(im, 64 * 1024, 64 * 1024, 0x42));
	CHECK(reads_as(im, 128 * 1024, 64 * 1024, 0x43));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK_EQ(res.corruptions + res.leaks + res.check_errors, 0);
	CHECK_EQ(run(out, sizeof(out), "qemu-img snapshot -l '%s'", p), 0);
	CHECK(strstr(out, " b ") != NULL);
	CHECK(strstr(out, " a ") == NULL);

	/* The new id is max + 1 even after a delete; then delete everything. */
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_create(im, "c", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_list(im, info, 4), 2);
	CHECK_STR(info[1].id, "3");
	CHECK_EQ(qcow2_snapshot_delete(im, "2", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_delete(im, "c", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_list(im, info, 4), 0);
	/* With no snapshot left, the live clusters are writable in place again. */
	fill_with(im, 0, 4096, 0x44);
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 0, 4096, 0x44));
	CHECK(qemu_reads_as(p, 128 * 1024, 64 * 1024, 0x43));
	unlink(p);
}

TEST(snapshots_made_by_qemu)
{
	char p[128], out[8192], err[512];
	struct qcow2_snapshot_info info[4];
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "qemu-snaps.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 4M", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0x51 0 128k' '%s'", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img snapshot -c alpha '%s'", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0x52 0 64k' '%s'", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img snapshot -c beta '%s'", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0x53 0 64k' '%s'", p), 0);

	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_list(im, info, 4), 2);
	CHECK_STR(info[0].name, "alpha");
	CHECK_STR(info[0].id, "1");
	CHECK_STR(info[1].name, "beta");
	CHECK_EQ(info[1].disk_size, 4 * MiB);
	CHECK(reads_as(im, 0, 64 * 1024, 0x53));
	CHECK_EQ(qcow2_snapshot_apply(im, "alpha", err, sizeof(err)), 0);
	CHECK(reads_as(im, 0, 128 * 1024, 0x51));
	CHECK_EQ(qcow2_snapshot_delete(im, "beta", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_create(im, "gamma", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_list(im, info, 4), 2);
	CHECK_STR(info[1].id, "2"); /* max existing id (alpha's 1) + 1, as QEMU */
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(run(out, sizeof(out), "qemu-img snapshot -l '%s'", p), 0);
	CHECK(strstr(out, "alpha") && strstr(out, "gamma") && !strstr(out, "beta"));
	/* qemu can use ours: apply gamma, delete alpha. */
	CHECK_EQ(run(NULL, 0, "qemu-img snapshot -a gamma '%s'", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img snapshot -d alpha '%s'", p), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 0, 128 * 1024, 0x51));
	unlink(p);
}

TEST(snapshot_v2_and_compressed_and_small_clusters)
{
	static const char *const opts[] = {
	    "-o compat=0.10",
	    "-o cluster_size=512",
	    "-o refcount_bits=8,cluster_size=4096",
	};
	char p[128], src[128], err[512];
	struct qcow2_check_result res;
	struct lines l;
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	for (unsigned i = 0; i < ARRAY_SIZE(opts); i++) {
		tpath(p, sizeof(p), "variant.qcow2");
		CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 %s '%s' 2M", opts[i], p), 0);
		CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0x61 0 100k' '%s'", p), 0);
		im = open_img(p, false);
		CHECK(im);
		if (!im)
			return;
		CHECK_EQ(qcow2_snapshot_create(im, "s", err, sizeof(err)), 0);
		fill_with(im, 0, 32 * 1024, 0x62);
		CHECK_EQ(qcow2_snapshot_apply(im, "s", err, sizeof(err)), 0);
		CHECK(reads_as(im, 0, 100 * 1024, 0x61));
		CHECK_EQ(qcow2_snapshot_create(im, "t", err, sizeof(err)), 0);
		CHECK_EQ(qcow2_snapshot_delete(im, "s", err, sizeof(err)), 0);
		CHECK_EQ(img_close(im), 0);
		CHECK_EQ(qemu_check(p), 0);
		CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
		CHECK_EQ(res.corruptions + res.leaks + res.check_errors, 0);
		unlink(p);
	}

	/* Compressed clusters (several per host cluster) are counted per reference. */
	tpath(src, sizeof(src), "plain.qcow2");
	tpath(p, sizeof(p), "compressed.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 2M", src), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0x71 0 512k' '%s'", src), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img convert -c -O qcow2 '%s' '%s'", src, p), 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_create(im, "c1", err, sizeof(err)), 0);
	fill_with(im, 0, 64 * 1024, 0x72);
	CHECK_EQ(qcow2_snapshot_create(im, "c2", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_apply(im, "c1", err, sizeof(err)), 0);
	CHECK(reads_as(im, 0, 512 * 1024, 0x71));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK_EQ(res.corruptions + res.leaks + res.check_errors, 0);
	CHECK(res.compressed_clusters > 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_delete(im, "c1", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_delete(im, "c2", err, sizeof(err)), 0);
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 0, 512 * 1024, 0x71));
	unlink(p);
	unlink(src);
}

TEST(snapshot_apply_restores_disk_size)
{
	char p[128], out[4096], err[512];
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "resize.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 -o cluster_size=512 '%s' 1M", p), 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	fill_with(im, 0, 8192, 0x81);
	CHECK_EQ(qcow2_snapshot_create(im, "small", err, sizeof(err)), 0);
	CHECK_EQ(img_resize(im, 4 * MiB, err, sizeof(err)), 0);
	fill_with(im, 3 * MiB, 8192, 0x82);
	CHECK_EQ(qcow2_snapshot_create(im, "big", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_apply(im, "small", err, sizeof(err)), 0);
	CHECK_EQ(img_size(im), 1 * MiB);
	CHECK(reads_as(im, 0, 8192, 0x81));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(run(out, sizeof(out), "qemu-img info '%s'", p), 0);
	CHECK(strstr(out, "virtual size: 1 MiB") != NULL);

	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_apply(im, "big", err, sizeof(err)), 0);
	CHECK_EQ(img_size(im), 4 * MiB);
	CHECK(reads_as(im, 3 * MiB, 8192, 0x82));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 3 * MiB, 8192, 0x82));

	/* An active L1 smaller than the snapshot's: back to "small", then shrink the header's
	 * l1_size to what 1 MiB needs (32 tables of 64 x 512 bytes) and reclaim the tail;
	 * applying "big" must move the active L1 to a larger area. */
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_apply(im, "small", err, sizeof(err)), 0);
	CHECK_EQ(img_close(im), 0);
	file_put_be32(p, 36, 32);
	{
		struct qcow2_check_result res;
		struct lines l;

		CHECK_EQ(our_check(p, QCOW2_REPAIR_LEAKS, &res, &l), 0);
		CHECK_EQ(exit_code_of(&res), 0);
	}
	CHECK_EQ(qemu_check(p), 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_apply(im, "big", err, sizeof(err)), 0);
	CHECK_EQ(img_size(im), 4 * MiB);
	CHECK(reads_as(im, 3 * MiB, 8192, 0x82));
	CHECK(reads_as(im, 0, 8192, 0x81));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(file_u64(p, 32) & 0xffffffffu, 128); /* header l1_size, moved and grown */
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 3 * MiB, 8192, 0x82));
	CHECK(qemu_reads_as(p, 0, 8192, 0x81));
	unlink(p);
}

TEST(snapshot_many_create_delete)
{
	char p[128], name[32], err[512];
	struct qcow2_snapshot_info info[32];
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "many.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 -o cluster_size=4096 '%s' 4M", p), 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	for (int i = 0; i < 24; i++) {
		fill_with(im, (uint64_t)(i % 6) * 64 * 1024, 8192, (uint8_t)(0x90 + i));
		snprintf(name, sizeof(name), "snap-%d", i);
		CHECK_EQ(qcow2_snapshot_create(im, name, err, sizeof(err)), 0);
	}
	CHECK_EQ(qcow2_snapshot_list(im, info, 32), 24);
	for (int i = 0; i < 24; i += 2) {
		snprintf(name, sizeof(name), "snap-%d", (i * 7) % 24);
		CHECK_EQ(qcow2_snapshot_delete(im, name, err, sizeof(err)), 0);
	}
	CHECK_EQ(qcow2_snapshot_list(im, info, 32), 12);
	CHECK_EQ(qcow2_snapshot_apply(im, "snap-5", err, sizeof(err)), 0);
	CHECK(reads_as(im, 5 * 64 * 1024, 8192, 0x95));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	unlink(p);
}

TEST(snapshot_refuses_readonly_and_non_qcow2)
{
	char p[128], err[512];
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "ro.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 1M", p), 0);
	im = open_img(p, true);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_create(im, "x", err, sizeof(err)), -EROFS);
	CHECK_EQ(qcow2_snapshot_list(im, NULL, 0), 0);
	CHECK_EQ(img_close(im), 0);
	unlink(p);

	tpath(p, sizeof(p), "raw.img");
	CHECK_EQ(run(NULL, 0, "truncate -s 1M '%s'", p), 0);
	im = img_open(&(struct img_open_opts){.path = p, .format = IMG_FMT_RAW}, err, sizeof(err));
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_snapshot_create(im, "x", err, sizeof(err)), -EINVAL);
	CHECK_EQ(qcow2_snapshot_list(im, NULL, 0), -EINVAL);
	CHECK_EQ(qcow2_make_empty(im), -EINVAL);
	CHECK_EQ(img_close(im), 0);
	unlink(p);
}

/* ---- hostile snapshot tables ---- */

/* An image with one snapshot of a 1 MiB disk; returns the snapshot table offset. */
static uint64_t make_snap_image(const char *p)
{
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 1M", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0xa1 0 64k' '%s'", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img snapshot -c s '%s'", p), 0);
	return file_u64(p, 64);
}

/* Every operation on the image fails cleanly or works; none crashes. */
static void poke_everything(const char *p, bool expect_list_error, bool expect_apply_error)
{
	struct qcow2_snapshot_info info[4];
	struct qcow2_check_result res;
	struct lines l;
	char err[512];
	struct img *im =
	    img_open(&(struct img_open_opts){.path = p, .format = IMG_FMT_QCOW2}, err, sizeof(err));
	int n;

	if (!im) {
		CHECK(err[0] != '\0'); /* refused at open: fine, with a message */
		return;
	}
	n = qcow2_snapshot_list(im, info, 4);
	if (expect_list_error)
		CHECK(n < 0);
	err[0] = '\0';
	n = qcow2_snapshot_apply(im, "s", err, sizeof(err));
	if (expect_apply_error) {
		CHECK(n < 0);
		CHECK(err[0] != '\0');
	}
	n = qcow2_snapshot_delete(im, "s", err, sizeof(err));
	if (expect_apply_error)
		CHECK(n < 0);
	n = qcow2_snapshot_create(im, "new", err, sizeof(err));
	if (expect_list_error)
		CHECK(n < 0);
	img_close(im);
	n = our_check(p, QCOW2_REPAIR_NONE, &res, &l);
	CHECK(n < 0 || res.corruptions > 0 || res.check_errors > 0);
	/* And a repair must not make anything worse than refusing. */
	our_check(p, QCOW2_REPAIR_ALL, &res, &l);
}

TEST(hostile_snapshot_tables)
{
	char p[128];
	uint64_t so;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "hostile.qcow2");

	/* nb_snapshots huge. */
	make_snap_image(p);
	file_put_be32(p, 60, 0xffffffffu);
	poke_everything(p, true, true);
	make_snap_image(p);
	file_put_be32(p, 60, 1000);
	poke_everything(p, true, true);

	/* Table offset past the end of the file, and unaligned. */
	make_snap_image(p);
	file_put_be64(p, 64, file_size(p) + 1 * MiB);
	poke_everything(p, true, true);
	make_snap_image(p);
	file_put_be64(p, 64, 4096 + 8);
	poke_everything(p, true, true);

	/* id_str_size past the table (the table is the last thing in the file). */
	so = make_snap_image(p);
	CHECK(so + 40 + 0xffff > file_size(p));
	file_put_be16(p, so + 12, 0xffff);
	poke_everything(p, true, true);

	/* extra_data_size huge. */
	so = make_snap_image(p);
	file_put_be32(p, so + 36, 0x7fffffff);
	poke_everything(p, true, true);

	/* L1 size huge: listing works, using it does not. */
	so = make_snap_image(p);
	file_put_be32(p, so + 8, 0x10000000);
	poke_everything(p, false, true);

	/* L1 offset past the end, and unaligned. */
	so = make_snap_image(p);
	file_put_be64(p, so, 1ull << 40);
	poke_everything(p, false, true);
	so = make_snap_image(p);
	file_put_be64(p, so, 512 * 3);
	poke_everything(p, false, true);

	/* An L2 entry of the snapshot pointing past the end of the file. */
	so = make_snap_image(p);
	{
		uint64_t sl1 = file_u64(p, so);
		uint64_t l2 = file_u64(p, sl1) & QCOW2_L1E_OFFSET_MASK;

		file_put_be64(p, l2 + 8, (1ull << 45) | QCOW2_OFLAG_COPIED);
		poke_everything(p, false, false);
	}
	unlink(p);
}

/* ---- check ---- */

/* "key": N from qemu-img check --output=json. */
static long long json_num(const char *json, const char *key)
{
	char pat[64];
	const char *s;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	s = strstr(json, pat);
	return s ? strtoll(s + strlen(pat), NULL, 10) : -1;
}

TEST(check_clean_image_agrees_with_qemu)
{
	char p[128], out[8192];
	struct qcow2_check_result res;
	struct lines l;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "clean.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 16M", p), 0);
	CHECK_EQ(run(NULL, 0,
	             "qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 8M 64k' "
	             "-c 'write -P 3 4M 64k' -c 'write -z 8M 64k' '%s'",
	             p),
	         0);
	CHECK_EQ(run(NULL, 0, "qemu-img snapshot -c one '%s'", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 4 0 64k' '%s'", p), 0);
	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(res.leaks, 0);
	CHECK_EQ(res.check_errors, 0);
	CHECK_EQ(l.n, 0);
	if (l.n)
		fprintf(stderr, "%s", l.buf);
	CHECK_EQ(res.total_clusters, 16 * MiB / 65536);
	CHECK_EQ(run(out, sizeof(out), "qemu-img check --output=json '%s'", p), 0);
	CHECK_EQ(res.allocated_clusters, json_num(out, "allocated-clusters"));
	CHECK_EQ(res.fragmented_clusters, json_num(out, "fragmented-clusters"));
	CHECK_EQ(res.image_end_offset, json_num(out, "image-end-offset"));
	CHECK_EQ(res.total_clusters, json_num(out, "total-clusters"));
	unlink(p);
}

TEST(check_leak_reported_and_repaired)
{
	char p[128];
	struct qcow2_check_result res;
	struct lines l;
	struct img *im;
	int64_t leak;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "leak.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 4M", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 5 0 128k' '%s'", p), 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	pthread_mutex_lock(&im->q->lock);
	leak = qcow2_alloc_clusters(im->q, 2 * 65536); /* referenced by nothing */
	CHECK(leak > 0);
	if (leak > 0) {
		static uint8_t junk[2 * 65536];

		/* Written, so the file covers them (checks look at clusters in the file). */
		CHECK_EQ(qcow2_meta_write(im->q, (uint64_t)leak, junk, sizeof(junk)), 0);
		CHECK_EQ(qcow2_refcount_update(im->q, (uint64_t)leak, 65536, 1), 0); /* rc 2 */
	}
	pthread_mutex_unlock(&im->q->lock);
	CHECK_EQ(img_close(im), 0);

	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK_EQ(res.leaks, 2);
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(exit_code_of(&res), 3);
	CHECK(strstr(l.buf, "Leaked cluster") != NULL);
	CHECK(strstr(l.buf, "refcount=2 reference=0") != NULL);
	CHECK_EQ(qemu_check_is(p, 3), 3);
	CHECK(qemu_lines_in(p, l.buf));

	CHECK_EQ(our_check(p, QCOW2_REPAIR_LEAKS, &res, &l), 0);
	CHECK_EQ(res.leaks_fixed, 2);
	CHECK_EQ(res.leaks, 0);
	CHECK_EQ(res.corruptions, 0);
	CHECK(strstr(l.buf, "Repairing cluster") != NULL);
	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK_EQ(exit_code_of(&res), 0);
	CHECK(qemu_reads_as(p, 0, 128 * 1024, 5));
	unlink(p);
}

TEST(check_corruption_refcount_too_low)
{
	char p[128];
	struct qcow2_check_result res;
	struct lines l;
	struct img *im;
	uint64_t l2, data;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "lowrc.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 4M", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 6 0 128k' '%s'", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img snapshot -c s '%s'", p), 0);
	/* The data cluster of guest offset 0 is shared (refcount 2): drop one. */
	l2 = file_u64(p, file_u64(p, 40)) & QCOW2_L1E_OFFSET_MASK;
	data = file_u64(p, l2) & QCOW2_L2E_OFFSET_MASK;
	CHECK(data != 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	pthread_mutex_lock(&im->q->lock);
	CHECK_EQ(qcow2_refcount_update(im->q, data, 65536, -1), 0);
	pthread_mutex_unlock(&im->q->lock);
	CHECK_EQ(img_close(im), 0);

	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK(res.corruptions >= 1);
	CHECK_EQ(exit_code_of(&res), 2);
	CHECK(strstr(l.buf, "refcount=1 reference=2") != NULL);
	CHECK_EQ(qemu_check_is(p, 2), 2);
	CHECK(qemu_lines_in(p, l.buf));
	CHECK_EQ(our_check(p, QCOW2_REPAIR_LEAKS, &res, &l), 0);
	CHECK(res.corruptions >= 1); /* leaks mode does not fix that */
	CHECK_EQ(our_check(p, QCOW2_REPAIR_ALL, &res, &l), 0);
	CHECK(res.corruptions_fixed >= 1);
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 0, 128 * 1024, 6));
	unlink(p);
}

TEST(check_copied_flag_corruption)
{
	char p[128];
	struct qcow2_check_result res;
	struct lines l;
	uint64_t l2, e;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "copied.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 4M", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 7 0 128k' '%s'", p), 0);
	l2 = file_u64(p, file_u64(p, 40)) & QCOW2_L1E_OFFSET_MASK;
	e = file_u64(p, l2);
	CHECK(e & QCOW2_OFLAG_COPIED);
	file_put_be64(p, l2, e & ~QCOW2_OFLAG_COPIED);

	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK_EQ(res.corruptions, 1);
	CHECK_EQ(res.leaks, 0);
	CHECK(strstr(l.buf, "ERROR OFLAG_COPIED data cluster") != NULL);
	CHECK_EQ(exit_code_of(&res), 2);
	CHECK_EQ(qemu_check_is(p, 2), 2);
	CHECK(qemu_lines_in(p, l.buf));
	CHECK_EQ(our_check(p, QCOW2_REPAIR_ALL, &res, &l), 0);
	CHECK_EQ(res.corruptions_fixed, 1);
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(file_u64(p, l2), e);
	CHECK_EQ(qemu_check(p), 0);

	/* The same on the L1 entry. */
	e = file_u64(p, file_u64(p, 40));
	file_put_be64(p, file_u64(p, 40), e & ~QCOW2_OFLAG_COPIED);
	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK_EQ(res.corruptions, 1);
	CHECK(strstr(l.buf, "ERROR OFLAG_COPIED L2 cluster") != NULL);
	CHECK_EQ(qemu_check_is(p, 2), 2);
	CHECK(qemu_lines_in(p, l.buf));
	CHECK_EQ(our_check(p, QCOW2_REPAIR_ALL, &res, &l), 0);
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK(qemu_reads_as(p, 0, 128 * 1024, 7));
	unlink(p);
}

TEST(check_offsets_past_end_are_corruption)
{
	char p[128];
	struct qcow2_check_result res;
	struct lines l;
	uint64_t l2;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "pastend.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 4M", p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 8 0 64k' '%s'", p), 0);
	l2 = file_u64(p, file_u64(p, 40)) & QCOW2_L1E_OFFSET_MASK;
	file_put_be64(p, l2 + 8, (1ull << 50) | QCOW2_OFLAG_COPIED);
	file_put_be64(p, l2 + 16, 0x12345 | QCOW2_OFLAG_COPIED); /* unaligned */
	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK(res.corruptions >= 2);
	CHECK(strstr(l.buf, "exceeding the end of the file") != NULL);
	CHECK(strstr(l.buf, "not properly aligned") != NULL);
	CHECK_EQ(exit_code_of(&res), 2);
	CHECK_EQ(qemu_check_is(p, 2), 2);
	CHECK(qemu_lines_in(p, l.buf));
	unlink(p);
}

/* ---- backing file and make_empty ---- */

TEST(set_backing_shows_in_qemu_info)
{
	char base[128], p[128], out[4096], err[512], longname[1100];
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(base, sizeof(base), "sb-base.qcow2");
	tpath(p, sizeof(p), "sb-top.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 2M", base), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0xb1 0 64k' '%s'", base), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 2M", p), 0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_set_backing(im, "sb-base.qcow2", IMG_FMT_QCOW2, err, sizeof(err)), 0);
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(run(out, sizeof(out), "qemu-img info '%s'", p), 0);
	CHECK(strstr(out, "backing file: sb-base.qcow2") != NULL);
	CHECK(strstr(out, "backing file format: qcow2") != NULL);
	CHECK(qemu_reads_as(p, 0, 65536, 0xb1));
	CHECK_EQ(qemu_check(p), 0);

	/* Too long for the header's cluster (or the limit): refused, header intact. */
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	err[0] = '\0';
	CHECK(qcow2_set_backing(im, longname, IMG_FMT_QCOW2, err, sizeof(err)) < 0);
	CHECK(err[0] != '\0');
	CHECK_STR(img_backing_name(im), "sb-base.qcow2");
	CHECK_EQ(qcow2_set_backing(im, NULL, IMG_FMT_AUTO, err, sizeof(err)), 0);
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(run(out, sizeof(out), "qemu-img info '%s'", p), 0);
	CHECK(strstr(out, "backing file") == NULL);
	CHECK(qemu_reads_as(p, 0, 65536, 0));
	CHECK_EQ(qemu_check(p), 0);

	/* 1 KiB clusters: a 1000-byte name cannot fit; -ENOSPC, header unchanged. */
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 -o cluster_size=1024 '%s' 2M", p), 0);
	longname[1000] = '\0';
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	CHECK_EQ(qcow2_set_backing(im, longname, IMG_FMT_RAW, err, sizeof(err)), -ENOSPC);
	CHECK(strstr(err, "shorter") != NULL);
	CHECK_EQ(qcow2_set_backing(im, "sb-base.qcow2", IMG_FMT_QCOW2, err, sizeof(err)), 0);
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(run(out, sizeof(out), "qemu-img info '%s'", p), 0);
	CHECK(strstr(out, "backing file: sb-base.qcow2") != NULL);
	unlink(p);
	unlink(base);
}

TEST(make_empty_reads_from_backing)
{
	char base[128], p[128], err[512];
	struct qcow2_check_result res;
	struct lines l;
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(base, sizeof(base), "me-base.qcow2");
	tpath(p, sizeof(p), "me-top.qcow2");
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 '%s' 4M", base), 0);
	CHECK_EQ(run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0xc1 0 4M' '%s'", base), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img create -f qcow2 -b me-base.qcow2 -F qcow2 '%s'", p), 0);
	CHECK_EQ(
	    run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 0xc2 0 64k' -c 'write -z 1M 64k' '%s'", p),
	    0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	fill_with(im, 2 * MiB, 200 * 1024, 0xc3);
	CHECK(reads_as(im, 0, 65536, 0xc2));
	CHECK(reads_as(im, 1 * MiB, 65536, 0));
	CHECK_EQ(qcow2_snapshot_create(im, "blocker", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_make_empty(im), -EBUSY);
	CHECK_EQ(qcow2_snapshot_delete(im, "blocker", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_make_empty(im), 0);
	CHECK(reads_as(im, 0, 4 * MiB, 0xc1));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(our_check(p, QCOW2_REPAIR_NONE, &res, &l), 0);
	CHECK_EQ(exit_code_of(&res), 0);
	CHECK_EQ(res.allocated_clusters, 0);
	CHECK(qemu_reads_as(p, 0, 4 * MiB, 0xc1));
	unlink(p);
	unlink(base);
}

TEST(snapshot_of_our_own_image)
{
	char p[128], err[512];
	struct img *im;

	if (!have_qemu())
		return test_skip("needs qemu-img and qemu-io");
	tpath(p, sizeof(p), "ours.qcow2");
	CHECK_EQ(img_create(
	             &(struct img_create_opts){
	                 .path = p, .format = IMG_FMT_QCOW2, .size = 8 * MiB, .cluster_size = 4096},
	             err, sizeof(err)),
	         0);
	im = open_img(p, false);
	CHECK(im);
	if (!im)
		return;
	fill_with(im, 0, 3 * MiB, 0xd1);
	CHECK_EQ(qcow2_snapshot_create(im, "x", err, sizeof(err)), 0);
	fill_with(im, 1 * MiB, 1 * MiB, 0xd2);
	CHECK_EQ(qcow2_snapshot_create(im, "y", err, sizeof(err)), 0);
	CHECK_EQ(qcow2_snapshot_apply(im, "x", err, sizeof(err)), 0);
	CHECK(reads_as(im, 0, 3 * MiB, 0xd1));
	CHECK_EQ(img_close(im), 0);
	CHECK_EQ(qemu_check(p), 0);
	CHECK_EQ(run(NULL, 0, "qemu-img snapshot -a y '%s'", p), 0);
	CHECK(qemu_reads_as(p, 1 * MiB, 1 * MiB, 0xd2));
	CHECK(qemu_reads_as(p, 0, 1 * MiB, 0xd1));
	unlink(p);
}

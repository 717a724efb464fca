/* test_control.c: the QMP-style control socket over real UNIX sockets in a temporary dir. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "test.h"
#include "util.h"

/* ---- the server side: a few test commands ---- */

static json_t *cmd_echo(void *opaque, json_t *args, struct control_error *err)
{
	(void)opaque;
	(void)err;
	return json_incref(args);
}

static json_t *cmd_fail(void *opaque, json_t *args, struct control_error *err)
{
	(void)opaque;
	(void)args;
	control_error_set(err, "DeviceNotActive", "device '%s' is not active", "disk0");
	return NULL;
}

static json_t *cmd_nothing(void *opaque, json_t *args, struct control_error *err)
{
	(void)opaque;
	(void)args;
	(void)err;
	return NULL;
}

/* Requests the "sleep" command has finished: flood_fairness counts them. */
static atomic_int sleeps_done;

static json_t *cmd_sleep(void *opaque, json_t *args, struct control_error *err)
{
	(void)opaque;
	(void)err;
	usleep((useconds_t)json_integer_value(json_object_get(args, "ms")) * 1000);
	atomic_fetch_add(&sleeps_done, 1);
	return json_array();
}

static json_t *cmd_sleeps(void *opaque, json_t *args, struct control_error *err)
{
	(void)opaque;
	(void)args;
	(void)err;
	return json_pack("{s:i}", "done", atomic_load(&sleeps_done));
}

static const struct control_cmd test_cmds[] = {
    {"echo", cmd_echo},   {"fail", cmd_fail},     {"nothing", cmd_nothing},
    {"sleep", cmd_sleep}, {"sleeps", cmd_sleeps},
};

struct fixture {
	char dir[64];
	char path[128];
	struct control *c;
};

static void fixture_dir(struct fixture *f)
{
	strcpy(f->dir, "/tmp/vmstack-ctl-XXXXXX");
	if (!mkdtemp(f->dir)) {
		perror("mkdtemp");
		abort();
	}
	snprintf(f->path, sizeof(f->path), "%s/control.sock", f->dir);
}

static struct control_opts test_opts(struct fixture *f)
{
	return (struct control_opts){.path = f->path,
	                             .cmds = test_cmds,
	                             .ncmds = ARRAY_SIZE(test_cmds),
	                             .package = "vmstack-vm test"};
}

/* Starts a server with o (path filled in; NULL for the defaults). */
static bool fixture_start(struct fixture *f, struct control_opts *o)
{
	struct control_opts def;
	char err[512];

	fixture_dir(f);
	if (!o) {
		def = test_opts(f);
		o = &def;
	}
	o->path = f->path;
	f->c = control_start(o, err, sizeof(err));
	if (!f->c)
		fprintf(stderr, "control_start: %s\n", err);
	return f->c != NULL;
}

static void fixture_end(struct fixture *f)
{
	control_stop(f->c);
	f->c = NULL;
	unlink(f->path);
	rmdir(f->dir);
}

/* ---- the client side ---- */

struct conn {
	int fd;
	bool eof; /* the server closed the connection */
	char *buf;
	size_t len, cap;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 5};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	strcpy(sa.sun_path, path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static struct conn *conn_open(const char *path)
{
	struct conn *cn = calloc(1, sizeof(*cn));

	cn->fd = connect_to(path);
	if (cn->fd < 0) {
		fprintf(stderr, "connect %s: %s\n", path, strerror(errno));
		free(cn);
		return NULL;
	}
	return cn;
}

static void conn_close(struct conn *cn)
{
	if (!cn)
		return;
	close(cn->fd);
	free(cn->buf);
	free(cn);
}

static bool conn_send(struct conn *cn, const char *s)
{
	size_t len = strlen(s);

	while (len) {
		ssize_t n = send(cn->fd, s, len, MSG_NOSIGNAL);
		if (n <= 0)
			return false;
		s += n;
		len -= (size_t)n;
	}
	return true;
}

/* One server message without its "\r\n" (malloc'd), or NULL on EOF / timeout. */
static char *conn_line(struct conn *cn)
{
	for (;;) {
		char *end = cn->len ? memmem(cn->buf, cn->len, "\r\n", 2) : NULL;
		ssize_t n;

		if (end) {
			size_t l = (size_t)(end - cn->buf);
			char *line = malloc(l + 1);

			memcpy(line, cn->buf, l);
			line[l] = 0;
			memmove(cn->buf, end + 2, cn->len - l - 2);
			cn->len -= l + 2;
			return line;
		}
		if (cn->cap - cn->len < 4096) {
			cn->cap = MAX(cn->cap * 2, (size_t)65536);
			cn->buf = realloc(cn->buf, cn->cap);
		}
		n = recv(cn->fd, cn->buf + cn->len, cn->cap - cn->len, 0);
		cn->eof |= n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
		if (n <= 0)
			return NULL;
		cn->len += (size_t)n;
	}
}

/* One server message, parsed; checks it is one compact line. NULL on EOF / timeout. */
static json_t *conn_read(struct conn *cn)
{
	char *line = conn_line(cn);
	json_error_t jerr;
	json_t *j;

	if (!line)
		return NULL;
	CHECK(!strchr(line, '\n'));
	j = json_loads(line, 0, &jerr);
	if (!j)
		fprintf(stderr, "bad server message '%s': %s\n", line, jerr.text);
	CHECK(json_is_object(j));
	free(line);
	return j;
}

/* True if the server closes the connection (after any messages) within the timeout. */
static bool conn_eof(struct conn *cn)
{
	char *line;

	while ((line = conn_line(cn)))
		free(line);
	return cn->eof;
}

static json_t *conn_cmd(struct conn *cn, const char *req)
{
	CHECK(conn_send(cn, req));
	return conn_read(cn);
}

static void check_return(json_t *r)
{
	if (!json_object_get(r, "return")) {
		char *s = r ? json_dumps(r, 0) : NULL;
		fprintf(stderr, "expected a return, got %s\n", s ? s : "(nothing)");
		free(s);
	}
	CHECK(json_object_get(r, "return") != NULL);
}

static void check_error(json_t *r, const char *cls, const char *desc_part)
{
	json_t *e = json_object_get(r, "error");
	const char *desc = json_string_value(json_object_get(e, "desc"));

	CHECK(e != NULL);
	CHECK_STR(json_string_value(json_object_get(e, "class")), cls);
	CHECK(desc && strstr(desc, desc_part));
	if (!desc || !strstr(desc, desc_part))
		fprintf(stderr, "  desc '%s' lacks '%s'\n", desc ? desc : "(null)", desc_part);
}

/* Reads the greeting and negotiates capabilities. */
static void conn_negotiate(struct conn *cn)
{
	json_t *g = conn_read(cn);

	CHECK(json_object_get(g, "QMP") != NULL);
	json_decref(g);
	g = conn_cmd(cn, "{\"execute\": \"qmp_capabilities\"}");
	check_return(g);
	json_decref(g);
}

static struct conn *conn_ready(const char *path)
{
	struct conn *cn = conn_open(path);

	if (cn)
		conn_negotiate(cn);
	return cn;
}

/* ---- protocol ---- */

TEST(greeting_format)
{
	struct fixture f;
	struct conn *cn;
	json_t *g, *v, *q;
	char *line;

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	cn = conn_open(f.path);
	CHECK(cn != NULL);
	line = conn_line(cn);
	CHECK(line != NULL);
	/* Compact, one line; the "\r\n" was stripped by conn_line. */
	CHECK(line && !strstr(line, ": ") && !strstr(line, ", ") && !strchr(line, '\r'));
	g = line ? json_loads(line, 0, NULL) : NULL;
	CHECK(json_object_size(g) == 1);
	q = json_object_get(g, "QMP");
	CHECK(json_is_array(json_object_get(q, "capabilities")));
	CHECK_EQ(json_array_size(json_object_get(q, "capabilities")), 0);
	v = json_object_get(q, "version");
	CHECK_STR(json_string_value(json_object_get(v, "package")), "vmstack-vm test");
	CHECK(json_is_integer(json_object_get(json_object_get(v, "qemu"), "major")));
	CHECK(json_is_integer(json_object_get(json_object_get(v, "qemu"), "minor")));
	CHECK(json_is_integer(json_object_get(json_object_get(v, "qemu"), "micro")));
	/* QEMU's key order, which some clients' tests compare textually. */
	CHECK(line && strstr(line, "{\"QMP\":{\"version\":{\"qemu\":{\"micro\":"));
	CHECK(line && strstr(line, ",\"package\":\"vmstack-vm test\"},\"capabilities\":[]}}"));

	/* query-version answers the same version. */
	json_decref(conn_cmd(cn, "{\"execute\":\"qmp_capabilities\"}"));
	{
		json_t *r = conn_cmd(cn, "{\"execute\":\"query-version\"}");
		CHECK(json_equal(json_object_get(r, "return"), v));
		json_decref(r);
	}
	free(line);
	json_decref(g);
	conn_close(cn);
	fixture_end(&f);
}

TEST(negotiation_rules)
{
	struct fixture f;
	struct conn *cn;
	json_t *r, *list;
	bool seen_echo = false, seen_caps = false, seen_cmds = false;

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	cn = conn_open(f.path);
	json_decref(conn_read(cn));
	r = conn_cmd(cn, "{\"execute\":\"query-version\",\"id\":1}");
	check_error(r, "CommandNotFound",
	            "Expecting capabilities negotiation with 'qmp_capabilities'");
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 1);
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"echo\"}");
	check_error(r, "CommandNotFound", "Expecting capabilities negotiation");
	json_decref(r);
	/* No capabilities are offered, so enabling one fails (and negotiation is not done). */
	r = conn_cmd(cn, "{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}");
	check_error(r, "GenericError", "Capability 'oob' not available");
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[]}}");
	check_return(r);
	CHECK(json_is_object(json_object_get(r, "return")));
	CHECK_EQ(json_object_size(json_object_get(r, "return")), 0);
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"qmp_capabilities\"}");
	check_error(r, "CommandNotFound",
	            "Capabilities negotiation is already complete, command ignored");
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"nope\",\"id\":\"x\"}");
	check_error(r, "CommandNotFound", "The command nope has not been found");
	CHECK_STR(json_string_value(json_object_get(r, "id")), "x");
	json_decref(r);

	r = conn_cmd(cn, "{\"execute\":\"query-commands\"}");
	list = json_object_get(r, "return");
	CHECK(json_is_array(list));
	CHECK_EQ(json_array_size(list), 3 + ARRAY_SIZE(test_cmds));
	for (size_t i = 0; i < json_array_size(list); i++) {
		const char *n = json_string_value(json_object_get(json_array_get(list, i), "name"));
		seen_echo |= n && !strcmp(n, "echo");
		seen_caps |= n && !strcmp(n, "qmp_capabilities");
		seen_cmds |= n && !strcmp(n, "query-commands");
	}
	CHECK(seen_echo && seen_caps && seen_cmds);
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"query-commands\",\"arguments\":{\"x\":1}}");
	check_error(r, "GenericError", "Parameter 'x' is unexpected");
	json_decref(r);
	conn_close(cn);
	fixture_end(&f);
}

TEST(command_args_and_id)
{
	static const char *const ids[] = {"42", "\"abc\"", "{\"k\":[1,2,{\"z\":null}]}", "-1.5"};
	struct fixture f;
	struct conn *cn;
	json_t *r;
	char req[256];

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	cn = conn_ready(f.path);
	for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
		json_t *id = json_loads(ids[i], JSON_DECODE_ANY, NULL);

		snprintf(
		    req, sizeof(req),
		    "{\"execute\":\"echo\",\"arguments\":{\"a\":1,\"b\":[true,\"s\"]},\"id\":%s}",
		    ids[i]);
		r = conn_cmd(cn, req);
		check_return(r);
		CHECK_EQ(json_integer_value(json_object_get(json_object_get(r, "return"), "a")), 1);
		CHECK_EQ(json_array_size(json_object_get(json_object_get(r, "return"), "b")), 2);
		CHECK(json_equal(json_object_get(r, "id"), id));
		json_decref(id);
		json_decref(r);
	}
	/* No arguments: the handler sees {}; a NULL return is {}; no id, no "id". */
	r = conn_cmd(cn, "{\"execute\":\"echo\"}");
	CHECK(json_is_object(json_object_get(r, "return")));
	CHECK_EQ(json_object_size(json_object_get(r, "return")), 0);
	CHECK(json_object_get(r, "id") == NULL);
	json_decref(r);
	r = conn_cmd(cn, "{\"id\":7,\"execute\":\"nothing\"}");
	CHECK(json_is_object(json_object_get(r, "return")));
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 7);
	json_decref(r);
	/* A handler's error. */
	r = conn_cmd(cn, "{\"execute\":\"fail\",\"id\":[1]}");
	check_error(r, "DeviceNotActive", "device 'disk0' is not active");
	CHECK(json_is_array(json_object_get(r, "id")));
	CHECK(json_object_get(r, "return") == NULL);
	json_decref(r);
	conn_close(cn);
	fixture_end(&f);
}

TEST(malformed_requests)
{
	struct fixture f;
	struct conn *cn;
	json_t *r;

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	cn = conn_ready(f.path);
	r = conn_cmd(cn, "[1,2]");
	check_error(r, "GenericError", "must be a JSON object");
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":3,\"id\":9}");
	check_error(r, "GenericError", "'execute' must be a string");
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 9);
	json_decref(r);
	r = conn_cmd(cn, "{\"id\":1}");
	check_error(r, "GenericError", "lacks member 'execute'");
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"echo\",\"arguments\":[1]}");
	check_error(r, "GenericError", "'arguments' must be an object");
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"echo\",\"arguments\":\"x\"}");
	check_error(r, "GenericError", "'arguments' must be an object");
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"echo\",\"foo\":1}");
	check_error(r, "GenericError", "'foo' is unexpected");
	json_decref(r);
	r = conn_cmd(cn, "{\"exec-oob\":\"echo\"}");
	check_error(r, "GenericError", "out-of-band");
	json_decref(r);

	/* Bad JSON: an error, then the connection still works. */
	r = conn_cmd(cn, "{\"execute\": nope}\r\n");
	check_error(r, "GenericError", "JSON parse error: ");
	json_decref(r);
	r = conn_cmd(cn, "{\"execute\":\"echo\",\"id\":1}");
	check_return(r);
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 1);
	json_decref(r);
	/* ... also with the good request in the same write, on the next line. */
	r = conn_cmd(cn, "{bad\n{\"execute\":\"echo\",\"id\":5}\n");
	check_error(r, "GenericError", "JSON parse error: ");
	json_decref(r);
	r = conn_read(cn);
	check_return(r);
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 5);
	json_decref(r);
	/* Invalid UTF-8 is a parse error too, not a crash or a hang. */
	r = conn_cmd(cn, "{\"execute\":\"\xff\xfe\"}\n");
	check_error(r, "GenericError", "JSON parse error: ");
	json_decref(r);
	conn_close(cn);
	fixture_end(&f);
}

TEST(split_and_batched)
{
	/* Non-ASCII text so that reads split UTF-8 characters too. */
	static const char req[] =
	    "{\"execute\": \"echo\", \"arguments\": {\"s\": \"h\xc3\xa9llo \xe2\x98\x83 "
	    "\\u00e9\"}, \"id\": \"\xf0\x9f\x90\xa7\"}";
	struct fixture f;
	struct conn *cn;
	json_t *r;

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	cn = conn_ready(f.path);
	for (size_t i = 0; i < sizeof(req) - 1; i++) {
		CHECK_EQ(send(cn->fd, req + i, 1, MSG_NOSIGNAL), 1);
		usleep(200);
	}
	r = conn_read(cn);
	check_return(r);
	CHECK_STR(json_string_value(json_object_get(json_object_get(r, "return"), "s")),
	          "h\xc3\xa9llo \xe2\x98\x83 \xc3\xa9");
	CHECK_STR(json_string_value(json_object_get(r, "id")), "\xf0\x9f\x90\xa7");
	json_decref(r);

	/* Three requests in one write, with and without separators: three replies in order. */
	CHECK(conn_send(cn, "{\"execute\":\"echo\",\"id\":1}{\"execute\":\"echo\",\"id\":2} \r\n\t"
	                    "{\"execute\":\"fail\",\"id\":3}\n"));
	for (int i = 1; i <= 3; i++) {
		r = conn_read(cn);
		CHECK_EQ(json_integer_value(json_object_get(r, "id")), i);
		CHECK(json_object_get(r, i == 3 ? "error" : "return") != NULL);
		json_decref(r);
	}
	/* A client that sends and then shuts down its side still gets its answers. */
	CHECK(conn_send(cn, "{\"execute\":\"echo\",\"id\":4}{\"execute\":\"echo\",\"id\":5}"));
	shutdown(cn->fd, SHUT_WR);
	for (int i = 4; i <= 5; i++) {
		r = conn_read(cn);
		CHECK_EQ(json_integer_value(json_object_get(r, "id")), i);
		json_decref(r);
	}
	CHECK(conn_eof(cn));
	conn_close(cn);
	fixture_end(&f);
}

TEST(oversized_message)
{
	struct fixture f;
	struct control_opts o;
	struct conn *cn;
	char big[2100];
	json_t *r;

	fixture_dir(&f);
	rmdir(f.dir);
	o = test_opts(&f);
	o.max_message = 1024;
	if (!fixture_start(&f, &o)) {
		CHECK(0);
		return;
	}
	/* Just under the limit: fine. */
	cn = conn_ready(f.path);
	snprintf(big, sizeof(big), "{\"execute\":\"echo\",\"arguments\":{\"s\":\"%0*d\"}}", 980, 0);
	r = conn_cmd(cn, big);
	check_return(r);
	json_decref(r);
	/* An incomplete value beyond the limit. */
	snprintf(big, sizeof(big), "{\"execute\":\"echo\",\"arguments\":{\"s\":\"%0*d", 2000, 0);
	r = conn_cmd(cn, big);
	check_error(r, "GenericError", "message too long (more than 1024 bytes)");
	json_decref(r);
	CHECK(conn_eof(cn));
	conn_close(cn);
	/* A complete one beyond the limit. */
	cn = conn_ready(f.path);
	snprintf(big, sizeof(big), "{\"execute\":\"echo\",\"arguments\":{\"s\":\"%0*d\"}}", 1500,
	         0);
	r = conn_cmd(cn, big);
	check_error(r, "GenericError", "message too long");
	json_decref(r);
	CHECK(conn_eof(cn));
	conn_close(cn);
	fixture_end(&f);
}

/* ---- clients ---- */

TEST(many_clients)
{
	struct fixture f;
	struct conn *cns[10];
	char req[64];
	json_t *r;

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	for (int i = 0; i < 20; i++) {
		struct conn *cn = conn_ready(f.path);

		CHECK(cn != NULL);
		if (!cn)
			break;
		snprintf(req, sizeof(req), "{\"execute\":\"echo\",\"id\":%d}", i);
		r = conn_cmd(cn, req);
		CHECK_EQ(json_integer_value(json_object_get(r, "id")), i);
		json_decref(r);
		conn_close(cn);
	}
	for (int i = 0; i < 10; i++)
		cns[i] = conn_open(f.path);
	for (int i = 0; i < 10; i++)
		json_decref(conn_read(cns[i]));
	for (int i = 0; i < 10; i++)
		conn_send(cns[i], "{\"execute\":\"qmp_capabilities\"}");
	for (int i = 0; i < 10; i++) {
		snprintf(req, sizeof(req), "{\"execute\":\"echo\",\"id\":%d}", 100 + i);
		conn_send(cns[i], req);
	}
	for (int i = 9; i >= 0; i--) {
		r = conn_read(cns[i]);
		check_return(r);
		json_decref(r);
		r = conn_read(cns[i]);
		CHECK_EQ(json_integer_value(json_object_get(r, "id")), 100 + i);
		json_decref(r);
	}
	for (int i = 0; i < 10; i++)
		conn_close(cns[i]);
	fixture_end(&f);
}

TEST(max_clients)
{
	struct fixture f;
	struct control_opts o;
	struct conn *a, *b, *c, *d = NULL;
	json_t *r;

	fixture_dir(&f);
	rmdir(f.dir);
	o = test_opts(&f);
	o.max_clients = 2;
	if (!fixture_start(&f, &o)) {
		CHECK(0);
		return;
	}
	a = conn_open(f.path);
	b = conn_open(f.path);
	json_decref(conn_read(a));
	json_decref(conn_read(b));
	c = conn_open(f.path);
	r = conn_read(c);
	check_error(r, "GenericError", "too many clients (max 2)");
	json_decref(r);
	CHECK(conn_eof(c));
	conn_close(c);
	/* A slot frees up once a client leaves. */
	conn_close(a);
	for (int tries = 0; tries < 200; tries++) {
		d = conn_open(f.path);
		r = conn_read(d);
		if (json_object_get(r, "QMP")) {
			json_decref(r);
			break;
		}
		json_decref(r);
		conn_close(d);
		d = NULL;
		usleep(10000);
	}
	CHECK(d != NULL);
	conn_close(d);
	conn_close(b);
	fixture_end(&f);
}

/* One client floods slow requests: another is served after a few of them, not all. */
TEST(flood_fairness)
{
	struct fixture f;
	struct conn *a, *b;
	char *flood;
	size_t len = 0;
	json_t *r;
	int n = 500, done;

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	a = conn_ready(f.path);
	b = conn_ready(f.path);
	atomic_store(&sleeps_done, 0);
	flood = malloc((size_t)n * 64);
	for (int i = 0; i < n; i++)
		len += (size_t)sprintf(
		    flood + len, "{\"execute\":\"sleep\",\"arguments\":{\"ms\":1},\"id\":%d}", i);
	CHECK(conn_send(a, flood));
	usleep(20000);
	/* Counted, not timed: a busy host stretches the sleeps, not the count. */
	r = conn_cmd(b, "{\"execute\":\"sleeps\",\"id\":\"b\"}");
	CHECK_STR(json_string_value(json_object_get(r, "id")), "b");
	done = (int)json_integer_value(json_object_get(json_object_get(r, "return"), "done"));
	CHECK(done < n / 2);
	if (done >= n / 2)
		fprintf(stderr, "  b was served after %d of a's %d requests\n", done, n);
	json_decref(r);
	for (int i = 0; i < n; i++) {
		r = conn_read(a);
		CHECK_EQ(json_integer_value(json_object_get(r, "id")), i);
		json_decref(r);
	}
	free(flood);
	conn_close(a);
	conn_close(b);
	fixture_end(&f);
}

/* ---- events ---- */

TEST(event_format)
{
	struct fixture f;
	struct conn *ready, *fresh;
	json_t *r, *ts;
	time_t now;

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	/* No client: dropped early (and freed). */
	control_event(f.c, "NOBODY", json_pack("{s:i}", "x", 1));
	ready = conn_ready(f.path);
	fresh = conn_open(f.path);
	json_decref(conn_read(fresh));
	control_event(f.c, "STOP", NULL);
	control_event(f.c, "DEVICE_DELETED", json_pack("{s:s}", "device", "disk0"));
	now = time(NULL);
	r = conn_read(ready);
	CHECK_STR(json_string_value(json_object_get(r, "event")), "STOP");
	CHECK(json_object_get(r, "data") == NULL);
	ts = json_object_get(r, "timestamp");
	CHECK(json_is_integer(json_object_get(ts, "seconds")));
	CHECK(llabs((long long)json_integer_value(json_object_get(ts, "seconds")) -
	            (long long)now) <= 2);
	CHECK(json_integer_value(json_object_get(ts, "microseconds")) >= 0 &&
	      json_integer_value(json_object_get(ts, "microseconds")) < 1000000);
	json_decref(r);
	r = conn_read(ready);
	CHECK_STR(json_string_value(json_object_get(r, "event")), "DEVICE_DELETED");
	CHECK_STR(json_string_value(json_object_get(json_object_get(r, "data"), "device")),
	          "disk0");
	json_decref(r);
	/* The client that had not negotiated saw none of them. */
	r = conn_cmd(fresh, "{\"execute\":\"qmp_capabilities\"}");
	check_return(r);
	json_decref(r);
	control_event(f.c, "RESUME", NULL);
	r = conn_read(fresh);
	CHECK_STR(json_string_value(json_object_get(r, "event")), "RESUME");
	json_decref(r);
	conn_close(ready);
	conn_close(fresh);
	control_event(f.c, "LATE", json_object());
	fixture_end(&f);
}

/* Events read so far by read_events(), for a poster that keeps its reader's lag bounded. */
static atomic_int events_read;

struct poster {
	struct control *c;
	int thread, count;
	int max_lag; /* 0: post as fast as possible */
};

static void *post_events(void *opaque)
{
	struct poster *p = opaque;

	for (int i = 0; i < p->count; i++) {
		double t0 = now_s();

		/* Bounded wait: a reader that was dropped must not hang the test. */
		while (p->max_lag && i - atomic_load(&events_read) > p->max_lag && now_s() - t0 < 5)
			usleep(100);
		control_event(p->c, "TEST", json_pack("{s:i,s:i}", "t", p->thread, "n", i));
	}
	return NULL;
}

/* Reads events until `total` have arrived (checking each thread's order) and, if
 * want_reply, the reply with id "ping". Returns the events seen. */
static int read_events(struct conn *cn, int nthreads, int total, bool want_reply, double *reply_at)
{
	int next[8] = {0}, seen = 0;
	bool got_reply = !want_reply;

	while (seen < total || !got_reply) {
		json_t *r = conn_read(cn);
		int t, n;

		if (!r)
			break;
		if (json_object_get(r, "return")) {
			CHECK_STR(json_string_value(json_object_get(r, "id")), "ping");
			got_reply = true;
			*reply_at = now_s();
			json_decref(r);
			continue;
		}
		t = (int)json_integer_value(json_object_get(json_object_get(r, "data"), "t"));
		n = (int)json_integer_value(json_object_get(json_object_get(r, "data"), "n"));
		CHECK(t >= 0 && t < nthreads);
		if (t >= 0 && t < nthreads) {
			if (n != next[t])
				fprintf(stderr, "  thread %d: event %d, expected %d\n", t, n,
				        next[t]);
			CHECK_EQ(n, next[t]);
			next[t] = n + 1;
		}
		seen++;
		atomic_store(&events_read, seen);
		json_decref(r);
	}
	CHECK(got_reply);
	return seen;
}

/* A client that never reads is dropped; the others are not held up. */
TEST(slow_reader_dropped)
{
	struct fixture f;
	struct control_opts o;
	struct conn *stuck, *good;
	struct poster p;
	pthread_t th;
	double t0, reply_at = 0;
	int stuck_events = 0;
	char *line;

	fixture_dir(&f);
	rmdir(f.dir);
	o = test_opts(&f);
	o.max_backlog = 64 * 1024;
	if (!fixture_start(&f, &o)) {
		CHECK(0);
		return;
	}
	stuck = conn_ready(f.path);
	good = conn_ready(f.path);
	p = (struct poster){.c = f.c, .thread = 0, .count = 10000, .max_lag = 300};
	atomic_store(&events_read, 0);
	pthread_create(&th, NULL, post_events, &p);
	usleep(5000);
	t0 = now_s();
	CHECK(conn_send(good, "{\"execute\":\"echo\",\"id\":\"ping\"}"));
	CHECK_EQ(read_events(good, 1, 10000, true, &reply_at), 10000);
	CHECK(reply_at - t0 < 3.0); /* generous: a busy host stalls threads */
	pthread_join(th, NULL);
	/* What the stuck client was sent before it was dropped, then EOF. */
	while ((line = conn_line(stuck))) {
		stuck_events += strstr(line, "\"event\"") != NULL;
		free(line);
	}
	CHECK(stuck->eof);
	CHECK(stuck_events < 10000);
	conn_close(stuck);
	conn_close(good);
	fixture_end(&f);
}

TEST(events_from_threads)
{
	struct fixture f;
	struct control_opts o;
	struct poster p[4];
	pthread_t th[4];
	struct conn *cn;
	double dummy;

	fixture_dir(&f);
	rmdir(f.dir);
	o = test_opts(&f);
	o.max_backlog = 16 * 1024 * 1024;
	if (!fixture_start(&f, &o)) {
		CHECK(0);
		return;
	}
	cn = conn_ready(f.path);
	for (int i = 0; i < 4; i++) {
		p[i] = (struct poster){.c = f.c, .thread = i, .count = 2500};
		pthread_create(&th[i], NULL, post_events, &p[i]);
	}
	CHECK_EQ(read_events(cn, 4, 10000, false, &dummy), 10000);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	conn_close(cn);
	fixture_end(&f);
}

/* ---- the socket file ---- */

TEST(socket_mode)
{
	struct fixture f;
	struct control_opts o;
	struct stat st;
	mode_t old = umask(0);

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		umask(old);
		return;
	}
	CHECK(stat(f.path, &st) == 0);
	CHECK(S_ISSOCK(st.st_mode));
	CHECK_EQ(st.st_mode & 07777, 0600);
	fixture_end(&f);

	fixture_dir(&f);
	rmdir(f.dir);
	o = test_opts(&f);
	o.mode = 0660;
	if (fixture_start(&f, &o)) {
		CHECK(stat(f.path, &st) == 0);
		CHECK_EQ(st.st_mode & 07777, 0660);
		fixture_end(&f);
	}
	umask(old);
	CHECK_EQ(umask(old), old); /* restored */
}

static bool one_line(const char *s)
{
	return !strchr(s, '\n') && strstr(s, " — ") != NULL;
}

TEST(socket_path_errors)
{
	struct fixture f, g;
	struct control_opts o;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct control *c;
	char err[512], path[256];
	json_t *r;
	struct conn *cn;
	int fd;

	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	/* A live server: refused, and it keeps working. */
	g = f;
	o = test_opts(&g);
	c = control_start(&o, err, sizeof(err));
	CHECK(c == NULL);
	control_stop(c);
	CHECK(strncmp(err, f.path, strlen(f.path)) == 0);
	CHECK(strstr(err, "in use by another monitor — pick another --control path") != NULL);
	CHECK(one_line(err));
	cn = conn_ready(f.path);
	r = conn_cmd(cn, "{\"execute\":\"echo\",\"id\":1}");
	check_return(r);
	json_decref(r);
	conn_close(cn);
	fixture_end(&f);

	/* A stale socket (its server died without unlinking it) is replaced. */
	fixture_dir(&f);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(sa.sun_path, f.path);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	close(fd);
	o = test_opts(&f);
	f.c = control_start(&o, err, sizeof(err));
	CHECK(f.c != NULL);
	if (!f.c)
		fprintf(stderr, "  %s\n", err);
	cn = f.c ? conn_ready(f.path) : NULL;
	CHECK(cn != NULL);
	conn_close(cn);
	fixture_end(&f);

	/* Not a socket. */
	fixture_dir(&f);
	fd = open(f.path, O_CREAT | O_WRONLY, 0600);
	close(fd);
	o = test_opts(&f);
	CHECK(control_start(&o, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "exists and is not a socket — remove it or pick another path") != NULL);
	CHECK(one_line(err));
	fixture_end(&f);

	/* Missing directory. */
	fixture_dir(&f);
	snprintf(path, sizeof(path), "%s/missing/control.sock", f.dir);
	o = test_opts(&f);
	o.path = path;
	CHECK(control_start(&o, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "does not exist") != NULL);
	CHECK(strncmp(err, path, strlen(path)) == 0);
	CHECK(one_line(err));

	/* Too long for sun_path. */
	memset(path, 'a', 200);
	path[0] = '/';
	path[200] = 0;
	o.path = path;
	CHECK(control_start(&o, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "too long") != NULL);
	CHECK(one_line(err));
	fixture_end(&f);
}

TEST(stop_with_clients)
{
	struct fixture f;
	struct conn *a, *b, *c;
	struct stat st;

	control_stop(NULL);
	control_event(NULL, "X", json_object());
	if (!fixture_start(&f, NULL)) {
		CHECK(0);
		return;
	}
	a = conn_ready(f.path);
	b = conn_open(f.path);
	c = conn_ready(f.path);
	conn_send(b, "{\"execute\":\"echo\",\"argu");
	for (int i = 0; i < 100; i++)
		control_event(f.c, "TICK", json_pack("{s:i}", "n", i));
	usleep(10000);
	control_stop(f.c);
	f.c = NULL;
	CHECK(conn_eof(a));
	CHECK(conn_eof(b));
	CHECK(conn_eof(c));
	CHECK(lstat(f.path, &st) < 0 && errno == ENOENT);
	conn_close(a);
	conn_close(b);
	conn_close(c);
	fixture_end(&f);
}

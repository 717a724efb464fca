/* passt.c: user-mode networking (--net user) through a passt child process. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "netdev_internal.h"
#include "util.h"

/*
 * passt (https://passt.top) turns guest frames into host sockets. We start it with one
 * end of a socketpair as `--fd N`; over that stream each frame is a 32-bit big-endian
 * length followed by the Ethernet frame, as with QEMU's stream netdev.
 *
 * Command line, for Debian's passt 0.0~git20230309 (flags checked against its --help):
 *   -f                 foreground: stays our child, so we can reap it
 *   -q                 no informational chatter (dropped at debug log level)
 *   --fd N             the socketpair end; --fd implies --one-off, so passt also exits
 *                      by itself when our end closes (e.g. if we are SIGKILLed)
 *   -P /proc/self/fd/M readiness: passt writes its pid there once it is set up (after
 *                      sandboxing), so netdev_open knows it started, or why it did not
 *   -a -n -g           guest address, prefix and gateway (10.0.2.15/24 via 10.0.2.2)
 *   --mtu 1500         the MTU passt's DHCP hands out. Its default, 65520, assumes the
 *                      guest can take 64 KiB frames; 1500 fits any virtio-net receive
 *                      buffer layout (no mergeable buffers needed), as QEMU's slirp does
 *   --no-dhcpv6 --no-ndp --no-ra   IPv4 only towards the guest, like QEMU's default
 * Connections to the gateway address reach the host's loopback (passt maps the gateway
 * to the host by default; --no-map-gw would turn that off). No ports are forwarded from
 * the host to the guest. Started as root, passt drops to nobody by itself.
 *
 * passt's stderr goes to our stderr at debug log level. Otherwise it goes to a pipe we
 * keep: when passt exits, at startup or later, its last words end up in our one-line
 * error. The pipe's write end is non-blocking, so a full pipe drops messages rather
 * than stalling passt.
 *
 * Receive reads only what the current frame needs (plus the next length prefix), so
 * nothing complete ever waits in our buffer: EPOLLIN on netdev_fd means exactly "a
 * frame may be received", as with a tap. Send writes the whole frame at once; when the
 * socket takes only part of it, the rest is kept and -EAGAIN returned: the caller polls
 * EPOLLOUT and retries the same frame (netdev.h), which then only finishes the tail. (A
 * frame reported as sent while its tail still waited here would stall until some later
 * call, and nothing in the netdev API would make that call happen.)
 */

#define PASST_FRAME_MAX  65535 /* passt drops larger frames (ETH_MAX_MTU) */
#define PASST_FRAME_MIN  14    /* an Ethernet header */
#define PASST_START_MS   10000 /* upper bound on passt's start-up, not a delay */
#define PASST_PIDFILE_FD 256   /* where the -P pipe goes, see fd_move() */

struct passt {
	struct netdev nd;
	pid_t pid;  /* 0 once reaped */
	int err_fd; /* read end of passt's stderr, or -1 at debug level */
	bool gone;  /* passt's hang-up has been logged */
	struct ratelimit rl;

	/* Send: a frame whose head went out and whose tail did not. */
	size_t out_len, out_off;
	uint8_t out[4 + PASST_FRAME_MAX];

	/* Receive: the frame being assembled and the length prefix of the next one. */
	uint8_t len_be[4], next_be[4];
	unsigned len_have, next_have;
	size_t body_have;
	uint8_t body[PASST_FRAME_MAX];
};

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * Reads what passt wrote to stderr and keeps its last meaningful line in buf ("" if
 * none). Skips this version's noise: it reports every failed syslog write on stderr.
 */
static void passt_last_words(int fd, char *buf, size_t len)
{
	char tail[4096], *line, *save = NULL;
	size_t have = 0;
	ssize_t n;

	buf[0] = '\0';
	if (fd < 0)
		return;
	for (;;) {
		if (have == sizeof(tail) - 1) {
			memmove(tail, tail + have / 2, have - have / 2);
			have -= have / 2;
		}
		n = read(fd, tail + have, sizeof(tail) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	tail[have] = '\0';
	for (line = strtok_r(tail, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
		if (strncmp(line, "Failed to send ", 15) == 0 && strstr(line, "syslog"))
			continue;
		if (strstr(line, "Changing to nobody") || line[strspn(line, " \t")] == '\0')
			continue;
		snprintf(buf, len, "%s", line);
	}
}

/* Describes how passt ended ("exited with status 1"), reaping it if it has. */
static void passt_reap(struct passt *p, bool block, char *buf, size_t len)
{
	int status;
	pid_t r;

	snprintf(buf, len, "hung up");
	if (p->pid <= 0)
		return;
	do
		r = waitpid(p->pid, &status, block ? 0 : WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return;
	p->pid = 0;
	if (r < 0)
		snprintf(buf, len, "was reaped elsewhere");
	else if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
}

/* The socket hung up: passt is gone. Logs it once; returns e for the caller to pass on. */
static int passt_gone(struct passt *p, int e)
{
	char how[96], words[256];

	if (!p->gone) {
		p->gone = true;
		passt_reap(p, false, how, sizeof(how));
		passt_last_words(p->err_fd, words, sizeof(words));
		log_err("%s: passt %s%s%s — guest networking is down", p->nd.name, how,
		        words[0] ? ": " : "", words);
	}
	return e;
}

/* Writes out the rest of the frame in out[]. 0 when all of it went, or -errno. */
static int passt_flush(struct passt *p)
{
	ssize_t n;

	while (p->out_off < p->out_len) {
		n = send(p->nd.fd, p->out + p->out_off, p->out_len - p->out_off,
		         MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return -EAGAIN;
		if (n < 0)
			return passt_gone(p, errno == ECONNRESET ? -ECONNRESET : -EPIPE);
		p->out_off += (size_t)n;
	}
	p->out_len = p->out_off = 0;
	return 0;
}

/* Gathers iov from byte `skip` on into dst. */
static void iov_gather(const struct iovec *iov, unsigned iovcnt, size_t skip, uint8_t *dst)
{
	for (unsigned i = 0; i < iovcnt; i++) {
		size_t len = iov[i].iov_len;

		if (skip >= len) {
			skip -= len;
			continue;
		}
		memcpy(dst, (const uint8_t *)iov[i].iov_base + skip, len - skip);
		dst += len - skip;
		skip = 0;
	}
}

/* Does iov, from byte `skip` on, hold exactly the len bytes at buf? */
static bool iov_equal(const struct iovec *iov, unsigned iovcnt, size_t skip, const uint8_t *buf,
                      size_t len)
{
	for (unsigned i = 0; i < iovcnt; i++) {
		size_t n = iov[i].iov_len;

		if (skip >= n) {
			skip -= n;
			continue;
		}
		n -= skip;
		if (n > len || memcmp((const uint8_t *)iov[i].iov_base + skip, buf, n) != 0)
			return false;
		buf += n;
		len -= n;
		skip = 0;
	}
	return len == 0;
}

static ssize_t passt_send(struct netdev *nd, const struct iovec *iov, unsigned iovcnt)
{
	struct passt *p = container_of(nd, struct passt, nd);
	size_t total = netdev_iov_len(iov, iovcnt), len;
	int r;

	if (total < NETDEV_HDR_LEN + PASST_FRAME_MIN)
		return -EINVAL;
	len = total - NETDEV_HDR_LEN;
	if (len > PASST_FRAME_MAX)
		return -EMSGSIZE;
	if (p->out_len) {
		/* The tail of the frame that got -EAGAIN: the stream needs it either way. */
		r = passt_flush(p);
		if (r < 0)
			return r;
		if (get_be32(p->out) == len &&
		    iov_equal(iov, iovcnt, NETDEV_HDR_LEN, p->out + 4, len))
			return (ssize_t)total;
	}
	/* The virtio-net header is dropped: without offloads it carries nothing for passt. */
	put_be32(p->out, (uint32_t)len);
	iov_gather(iov, iovcnt, NETDEV_HDR_LEN, p->out + 4);
	p->out_len = 4 + len;
	p->out_off = 0;
	r = passt_flush(p);
	if (r == 0)
		return (ssize_t)total;
	if (r != -EAGAIN || p->out_off == 0)
		p->out_len = p->out_off = 0; /* nothing of it is in the stream */
	return r;
}

/* Copies the received frame out behind a zeroed virtio-net header. */
static ssize_t passt_deliver(struct passt *p, const struct iovec *iov, unsigned iovcnt, size_t len)
{
	static const uint8_t zero_hdr[NETDEV_HDR_LEN];
	size_t room = netdev_iov_len(iov, iovcnt);

	if (room < NETDEV_HDR_LEN + len) {
		log_ratelimited(&p->rl, LOG_WARN, "%s: dropped a %zu-byte frame: buffer of %zu",
		                p->nd.name, len, room);
		return -EMSGSIZE;
	}
	netdev_iov_write(iov, iovcnt, 0, zero_hdr, NETDEV_HDR_LEN);
	netdev_iov_write(iov, iovcnt, NETDEV_HDR_LEN, p->body, len);
	return (ssize_t)(NETDEV_HDR_LEN + len);
}

/*
 * One read towards the current frame: its length prefix, or the rest of its body plus
 * the next prefix. Bodies over PASST_FRAME_MAX are read over and over into body[] and
 * dropped. Returns bytes read, or -errno.
 */
static ssize_t passt_read(struct passt *p)
{
	struct iovec v[2];
	struct msghdr msg = {.msg_iov = v, .msg_iovlen = 1};
	uint32_t len = get_be32(p->len_be);
	ssize_t n;

	if (p->len_have < 4) {
		v[0] = (struct iovec){p->len_be + p->len_have, 4 - p->len_have};
	} else {
		size_t want = len - p->body_have;
		size_t at = len > PASST_FRAME_MAX ? 0 : p->body_have;

		v[0] = (struct iovec){p->body + at, MIN(want, PASST_FRAME_MAX)};
		v[1] = (struct iovec){p->next_be, 4};
		/* Read ahead only once the rest of this frame fits in v[0]. */
		msg.msg_iovlen = want <= PASST_FRAME_MAX ? 2 : 1;
	}
	do
		n = recvmsg(p->nd.fd, &msg, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return passt_gone(p, -ECONNRESET);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -EAGAIN;
	if (n < 0)
		return errno == ECONNRESET ? passt_gone(p, -ECONNRESET) : -errno;
	if (p->len_have < 4) {
		p->len_have += (unsigned)n;
	} else if ((size_t)n > v[0].iov_len) {
		p->body_have += v[0].iov_len;
		p->next_have = (unsigned)((size_t)n - v[0].iov_len);
	} else {
		p->body_have += (size_t)n;
	}
	return n;
}

static ssize_t passt_recv(struct netdev *nd, const struct iovec *iov, unsigned iovcnt)
{
	struct passt *p = container_of(nd, struct passt, nd);
	ssize_t r;
	uint32_t len;

	for (;;) {
		len = get_be32(p->len_be);
		if (p->len_have == 4 && p->body_have == len) {
			/* A whole frame: start the next from the prefix read along with it. */
			memcpy(p->len_be, p->next_be, sizeof(p->len_be));
			p->len_have = p->next_have;
			p->next_have = 0;
			p->body_have = 0;
			if (len > PASST_FRAME_MAX) {
				log_ratelimited(&p->rl, LOG_WARN, "%s: dropped a %u-byte frame",
				                nd->name, len);
				return -EMSGSIZE;
			}
			if (len > 0)
				return passt_deliver(p, iov, iovcnt, len);
			continue;
		}
		r = passt_read(p);
		if (r < 0)
			return r;
	}
}

static int passt_set_offloads(struct netdev *nd, unsigned off)
{
	(void)nd;
	return off ? -EOPNOTSUPP : 0;
}

static void passt_close(struct netdev *nd)
{
	struct passt *p = container_of(nd, struct passt, nd);
	char how[96];

	/* Closing the socket alone makes passt exit (--fd implies --one-off). */
	close(nd->fd);
	if (p->pid > 0) {
		kill(p->pid, SIGTERM);
		passt_reap(p, true, how, sizeof(how));
		log_debug("%s: passt %s", nd->name, how);
	}
	if (p->err_fd >= 0)
		close(p->err_fd);
	free(p);
}

static const struct netdev_ops passt_ops = {
    .send = passt_send,
    .recv = passt_recv,
    .set_offloads = passt_set_offloads,
    .close = passt_close,
};

/* Finds "passt" in $PATH into buf. false if it is nowhere. */
static bool passt_find(char *buf, size_t len)
{
	const char *path = getenv("PATH");
	const char *dir, *end;

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
	for (dir = path; dir; dir = *end ? end + 1 : NULL) {
		end = strchrnul(dir, ':');
		if (end == dir)
			continue;
		snprintf(buf, len, "%.*s/passt", (int)(end - dir), dir);
		if (access(buf, X_OK) == 0)
			return true;
	}
	return false;
}

/*
 * Moves fd to min or above (if it is not there already). 0-2 are overwritten in the
 * child; the -P pipe goes higher still: a passt that closes inherited fds (newer ones
 * do) would otherwise find some fd of its own under our /proc/self/fd/N and truncate it.
 */
static int fd_move(int fd, int min)
{
	int n;

	if (fd < 0 || fd >= min)
		return fd;
	n = fcntl(fd, F_DUPFD_CLOEXEC, min);
	if (n < 0 && min > STDERR_FILENO + 1)
		n = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	close(fd);
	return n;
}

/* The child's fds: what it gets as --fd, -P, stdin/stdout and stderr. */
struct passt_child_fds {
	int sock, pid_w, null, err;
};

/* In the child, between fork and exec: async-signal-safe calls only. */
static void __attribute__((noreturn))
passt_exec(const char *binary, char *const argv[], const struct passt_child_fds *c)
{
	static const char msg[] = "cannot execute passt\n";
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigset_t none;

	/* Our threads may block or ignore signals; passt must see SIGTERM. */
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* passt gets the fds below and nothing else of ours (guest memory, disks, ...). */
	close_range(STDERR_FILENO + 1, ~0U, CLOSE_RANGE_CLOEXEC);
	if (dup2(c->null, STDIN_FILENO) < 0 || dup2(c->null, STDOUT_FILENO) < 0 ||
	    dup2(c->err, STDERR_FILENO) < 0 || fcntl(c->sock, F_SETFD, 0) < 0 ||
	    (c->pid_w >= 0 && fcntl(c->pid_w, F_SETFD, 0) < 0))
		_exit(126);
	execv(binary, argv);
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
		/* nowhere to report it: the exit status says it */
	}
	_exit(127);
}

/* What passt_spawn needs from netdev_open's options, and what it hands back. */
struct passt_start {
	const char *binary, *addr, *gw;
	unsigned prefix;
	bool pidfile; /* use -P for readiness (see passt_spawn) */
	pid_t pid;
	int sock, err_fd;
};

/* passt's command line (see the top of this file), built before fork. */
struct passt_argv {
	char fd[16], pidfile[40], prefix[16];
	const char *v[24];
};

static void passt_argv(const struct passt_start *s, int sock, int pid_w, struct passt_argv *a)
{
	unsigned n = 0;

	snprintf(a->fd, sizeof(a->fd), "%d", sock);
	snprintf(a->pidfile, sizeof(a->pidfile), "/proc/self/fd/%d", pid_w);
	snprintf(a->prefix, sizeof(a->prefix), "%u", s->prefix);
	a->v[n++] = s->binary;
	a->v[n++] = "-f";
	if (log_get_level() < LOG_DEBUG)
		a->v[n++] = "-q";
	a->v[n++] = "--fd";
	a->v[n++] = a->fd;
	if (pid_w >= 0) {
		a->v[n++] = "-P";
		a->v[n++] = a->pidfile;
	}
	a->v[n++] = "-a";
	a->v[n++] = s->addr;
	a->v[n++] = "-n";
	a->v[n++] = a->prefix;
	a->v[n++] = "-g";
	a->v[n++] = s->gw;
	a->v[n++] = "--mtu";
	a->v[n++] = "1500";
	a->v[n++] = "--no-dhcpv6";
	a->v[n++] = "--no-ndp";
	a->v[n++] = "--no-ra";
	a->v[n] = NULL;
}

/*
 * Waits for passt's pid on the -P pipe: a line means it is up, EOF means it exited.
 * Returns 0, -ECHILD (exited) or -ETIMEDOUT.
 */
static int passt_wait_ready(int pid_r)
{
	struct pollfd pfd = {.fd = pid_r, .events = POLLIN};
	char line[32];
	size_t have = 0;
	ssize_t n;
	int r;

	for (;;) {
		do
			r = poll(&pfd, 1, PASST_START_MS);
		while (r < 0 && errno == EINTR);
		if (r == 0)
			return -ETIMEDOUT;
		n = read(pid_r, line + have, sizeof(line) - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -ECHILD;
		have += (size_t)n;
		if (memchr(line, '\n', have) || have == sizeof(line) - 1)
			return 0;
	}
}

/*
 * Starts passt; fills s->pid, s->sock and s->err_fd. On failure: -1 and the reason in
 * err (its stderr's last line when it exited).
 */
static int passt_spawn(struct passt_start *s, char *err, size_t errlen)
{
	struct passt_child_fds c = {.sock = -1, .pid_w = -1, .null = -1, .err = STDERR_FILENO};
	int sv[2] = {-1, -1}, pid_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
	struct passt_argv argv;
	char how[96], words[256];
	int r = -1, ready;

	s->pid = 0;
	s->err_fd = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
	    (s->pidfile && pipe2(pid_pipe, O_CLOEXEC) < 0) ||
	    (log_get_level() < LOG_DEBUG && pipe2(err_pipe, O_CLOEXEC | O_NONBLOCK) < 0)) {
		netdev_err(err, errlen, "--net user: %s", strerror(errno));
		goto out;
	}
	c.sock = sv[1] = fd_move(sv[1], STDERR_FILENO + 1);
	c.pid_w = pid_pipe[1] = fd_move(pid_pipe[1], PASST_PIDFILE_FD);
	if (err_pipe[1] >= 0)
		c.err = err_pipe[1] = fd_move(err_pipe[1], STDERR_FILENO + 1);
	c.null = fd_move(open("/dev/null", O_RDWR | O_CLOEXEC), STDERR_FILENO + 1);
	if (c.sock < 0 || (s->pidfile && c.pid_w < 0) || c.err < 0 || c.null < 0) {
		netdev_err(err, errlen, "--net user: %s", strerror(errno));
		goto out;
	}
	/* Started as root, passt opens the pid file as nobody, through /proc/self/fd. */
	if (c.pid_w >= 0 && geteuid() == 0)
		fchmod(c.pid_w, S_IRUSR | S_IWUSR | S_IWGRP | S_IWOTH);
	passt_argv(s, c.sock, c.pid_w, &argv);

	s->pid = fork();
	if (s->pid < 0) {
		netdev_err(err, errlen, "--net user: fork: %s", strerror(errno));
		s->pid = 0;
		goto out;
	}
	if (s->pid == 0)
		passt_exec(s->binary, (char *const *)argv.v, &c);

	close(sv[1]);
	sv[1] = -1;
	if (pid_pipe[1] >= 0)
		close(pid_pipe[1]);
	pid_pipe[1] = -1;
	if (err_pipe[1] >= 0)
		close(err_pipe[1]);
	err_pipe[1] = -1;

	ready = s->pidfile ? passt_wait_ready(pid_pipe[0]) : 0;
	if (ready == -ETIMEDOUT) {
		kill(s->pid, SIGKILL);
		netdev_err(err, errlen, "--net user: passt (pid %d) did not start within %d s",
		           (int)s->pid, PASST_START_MS / 1000);
	} else if (ready < 0) {
		struct passt tmp = {.pid = s->pid};

		passt_reap(&tmp, true, how, sizeof(how));
		passt_last_words(err_pipe[0], words, sizeof(words));
		netdev_err(err, errlen, "--net user: passt %s at startup%s%s", how,
		           words[0] ? ": " : "", words[0] ? words : " (see its messages above)");
		s->pid = 0;
	} else {
		r = 0;
	}
	if (r < 0 && s->pid > 0) {
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
out:
	if (c.null >= 0)
		close(c.null);
	for (int i = 0; i < 2; i++) {
		if (pid_pipe[i] >= 0)
			close(pid_pipe[i]);
		if (sv[i] >= 0 && (i == 1 || r < 0))
			close(sv[i]);
		if (err_pipe[i] >= 0 && (i == 1 || r < 0))
			close(err_pipe[i]);
	}
	s->sock = r == 0 ? sv[0] : -1;
	s->err_fd = r == 0 ? err_pipe[0] : -1;
	return r;
}

static struct passt *passt_new(int sock, pid_t pid, int err_fd)
{
	struct passt *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->nd.ops = &passt_ops;
	p->nd.fd = sock;
	p->pid = pid;
	p->err_fd = err_fd;
	p->rl.interval_ms = 5000;
	p->rl.burst = 5;
	if (pid > 0)
		snprintf(p->nd.name, sizeof(p->nd.name), "user (passt pid %d)", (int)pid);
	else
		snprintf(p->nd.name, sizeof(p->nd.name), "user (fd %d)", sock);
	return p;
}

struct netdev *passt_adopt(int sock, char *err, size_t errlen)
{
	struct passt *p = passt_new(sock, 0, -1);

	if (!p) {
		netdev_err(err, errlen, "--net user: out of memory");
		return NULL;
	}
	return &p->nd;
}

struct netdev *passt_open(const struct netdev_opts *opts, const char *binary, char *err,
                          size_t errlen)
{
	struct passt_start s = {
	    .binary = binary,
	    .addr = opts->user_addr ? opts->user_addr : "10.0.2.15",
	    .gw = opts->user_gw ? opts->user_gw : "10.0.2.2",
	    .prefix = opts->user_prefix ? opts->user_prefix : 24,
	    .pidfile = true,
	};
	char path[PATH_MAX], why[512];
	struct passt *p;

	if (!binary && !passt_find(path, sizeof(path))) {
		netdev_err(err, errlen,
		           "--net user: passt not found — install it "
		           "(apt-get install passt)");
		return NULL;
	}
	if (!binary) {
		s.binary = path;
	} else if (access(binary, X_OK) < 0) {
		netdev_err(err, errlen,
		           "--net user: passt not found (%s: %s) — install it "
		           "(apt-get install passt)",
		           binary, strerror(errno));
		return NULL;
	}
	if (s.prefix > 32) {
		netdev_err(err, errlen, "--net user: prefix /%u is not an IPv4 prefix length",
		           s.prefix);
		return NULL;
	}
	if (passt_spawn(&s, why, sizeof(why)) < 0 && strstr(why, "PID file")) {
		/* A passt that closes inherited fds cannot use ours: start without -P. */
		s.pidfile = false;
		passt_spawn(&s, why, sizeof(why));
	}
	if (s.pid <= 0) {
		netdev_err(err, errlen, "%s", why);
		return NULL;
	}
	p = passt_new(s.sock, s.pid, s.err_fd);
	if (!p) {
		netdev_err(err, errlen, "--net user: out of memory");
		close(s.sock);
		kill(s.pid, SIGTERM);
		waitpid(s.pid, NULL, 0);
		if (s.err_fd >= 0)
			close(s.err_fd);
		return NULL;
	}
	log_debug("%s: started %s for %s/%u via %s", p->nd.name, s.binary, s.addr, s.prefix, s.gw);
	return &p->nd;
}

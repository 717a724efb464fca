/* console.c: stdio/file/pty console backends, raw-terminal handling and the escape key. */
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "log.h"

/*
 * Process-wide by nature: there is one controlling terminal, and the fatal-signal
 * handler must find its saved state without any context.
 */
static struct termios saved_termios;
static volatile sig_atomic_t terminal_saved;
static int terminal_fd = -1;

void console_restore_terminal(void)
{
	if (terminal_saved) {
		tcsetattr(terminal_fd, TCSAFLUSH, &saved_termios);
		terminal_saved = 0;
		log_set_raw_terminal(false);
	}
}

static void fatal_signal(int sig)
{
	console_restore_terminal();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_restore_hooks(void)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGQUIT};
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fatal_signal;
	sa.sa_flags = SA_RESETHAND;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	atexit(console_restore_terminal);
}

static int open_stdio(struct console *c)
{
	struct termios raw;

	/* Started with stdin closed (a daemon, some CI runners): no input, nothing to poll. */
	c->in_fd = fcntl(STDIN_FILENO, F_GETFD) < 0 ? -1 : STDIN_FILENO;
	c->out_fd = STDOUT_FILENO;
	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0)
		return 0; /* pipe or file: pass bytes through unchanged */
	terminal_fd = STDIN_FILENO;
	terminal_saved = 1;
	install_restore_hooks();
	raw = saved_termios;
	cfmakeraw(&raw);
	raw.c_oflag |= OPOST | ONLCR; /* keep our own messages readable */
	if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) < 0) {
		terminal_saved = 0;
		return -errno;
	}
	c->raw = true;
	log_set_raw_terminal(true);
	return 0;
}

static int open_pty(struct console *c, const char *opt, char *err, size_t errlen)
{
	struct termios t;
	int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	const char *name;

	if (fd < 0 || grantpt(fd) < 0 || unlockpt(fd) < 0 || !(name = ptsname(fd))) {
		snprintf(err, errlen, "%s pty: cannot allocate a pseudo-terminal: %s", opt,
		         strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	snprintf(c->pty_path, sizeof(c->pty_path), "%s", name);
	c->pty_slave = open(c->pty_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (c->pty_slave >= 0 && tcgetattr(c->pty_slave, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(c->pty_slave, TCSANOW, &t);
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	c->in_fd = c->out_fd = fd;
	c->drop_on_full = true;
	return 0;
}

int console_open(struct console *c, const struct vm_config *cfg, char *err, size_t errlen)
{
	return console_open_as(c, cfg->console, cfg->console_path, "--console", err, errlen);
}

int console_open_as(struct console *c, enum console_kind kind, const char *path, const char *opt,
                    char *err, size_t errlen)
{
	int r;

	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->in_fd = c->out_fd = c->pty_slave = -1;
	switch (kind) {
	case CONSOLE_STDIO:
		r = open_stdio(c);
		if (r < 0)
			snprintf(err, errlen,
			         "--console stdio: cannot set the terminal to raw mode: %s",
			         strerror(-r));
		return r;
	case CONSOLE_FILE:
		c->out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (c->out_fd < 0) {
			r = -errno;
			snprintf(err, errlen, "%s file:%s: %s", opt, path, strerror(errno));
			return r;
		}
		return 0;
	case CONSOLE_PTY:
		r = open_pty(c, opt, err, errlen);
		if (r == 0) /* always shown: the user needs the path */
			log_msg(LOG_ERR, "%s on %s",
			        strcmp(opt, "--console") ? "virtio console" : "console",
			        c->pty_path);
		return r;
	}
	return -EINVAL;
}

void console_close(struct console *c)
{
	console_restore_terminal();
	if (c->kind == CONSOLE_FILE && c->out_fd >= 0)
		close(c->out_fd);
	if (c->kind == CONSOLE_PTY) {
		if (c->in_fd >= 0)
			close(c->in_fd);
		if (c->pty_slave >= 0)
			close(c->pty_slave);
	}
	c->in_fd = c->out_fd = c->pty_slave = -1;
}

void console_write(struct console *c, const uint8_t *buf, size_t len)
{
	while (len > 0 && c->out_fd >= 0) {
		ssize_t n = write(c->out_fd, buf, len);
		/*
		 * EINTR: this vCPU thread was kicked because the VM is stopping; a reader that
		 * went away or a full pty must not stall the guest either. Drop the rest.
		 */
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

size_t console_filter(struct console *c, uint8_t *buf, size_t len, bool *quit)
{
	size_t out = 0;

	for (size_t i = 0; i < len; i++) {
		uint8_t b = buf[i];
		if (c->escape) {
			c->escape = false;
			if (b == 'x' || b == 'X') {
				*quit = true;
				return out;
			}
			if (b == CONSOLE_ESCAPE)
				buf[out++] = b;
			/* any other key after the escape is dropped, like QEMU */
			continue;
		}
		if (b == CONSOLE_ESCAPE) {
			c->escape = true;
			continue;
		}
		buf[out++] = b;
	}
	return out;
}

ssize_t console_read(struct console *c, uint8_t *out, size_t len, bool *quit)
{
	ssize_t n;

	if (c->in_fd < 0)
		return -1;
	do {
		n = read(c->in_fd, out, len);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n <= 0)
		return -1;
	if (!c->raw)
		return n;
	return (ssize_t)console_filter(c, out, (size_t)n, quit);
}

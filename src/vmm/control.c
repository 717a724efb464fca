/* control.c: the QMP-style control socket server, on its own epoll thread: the socket,
 * accepting clients, events, start and stop. One client's messages: control_client.c. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "control_internal.h"
#include "log.h"
#include "util.h"

#ifndef VMSTACK_VERSION
#define VMSTACK_VERSION "0.0.0"
#endif

#define DEFAULT_MAX_CLIENTS 16
#define DEFAULT_MAX_MESSAGE (64 * 1024)
#define DEFAULT_MAX_BACKLOG (1024 * 1024)
#define ACCEPTS_PER_TURN    16

/* A serialized event waiting for the control thread. */
struct event_msg {
	struct event_msg *next;
	size_t len;
	char text[];
};

/* ---- clients ---- */

void control_client_close(struct client *cl)
{
	struct control *c = cl->c;
	struct client **pp;

	if (cl->dead)
		return;
	cl->dead = true;
	epoll_ctl(c->epfd, EPOLL_CTL_DEL, cl->fd, NULL);
	close(cl->fd);
	if (cl->negotiated)
		atomic_fetch_sub(&c->nready, 1);
	for (pp = &c->clients; *pp; pp = &(*pp)->next) {
		if (*pp == cl) {
			*pp = cl->next;
			break;
		}
	}
	c->nclients--;
	/* epoll may still hold an event for it in this iteration's batch. */
	cl->next = c->zombies;
	c->zombies = cl;
	log_debug("control: client %u disconnected", cl->id);
}

static void client_free(struct client *cl)
{
	free(cl->in);
	free(cl->out);
	free(cl);
}

static void accept_clients(struct control *c)
{
	for (int i = 0; i < ACCEPTS_PER_TURN; i++) {
		int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct epoll_event ev;
		struct client *cl;
		json_t *greeting;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("control: accept: %s", strerror(errno));
			return;
		}
		if (c->nclients >= c->max_clients) {
			char msg[128];
			int n =
			    snprintf(msg, sizeof(msg),
			             "{\"error\":{\"class\":\"GenericError\",\"desc\":\"too many "
			             "clients (max %u)\"}}\r\n",
			             c->max_clients);

			log_ratelimited(&c->warn_rl, LOG_WARN,
			                "control: refused a client: too many clients (max %u)",
			                c->max_clients);
			/* Best effort: a fresh socket's buffer takes it whole. */
			if (send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				log_debug("control: send: %s", strerror(errno));
			close(fd);
			continue;
		}
		cl = calloc(1, sizeof(*cl));
		if (!cl) {
			close(fd);
			continue;
		}
		cl->c = c;
		cl->fd = fd;
		cl->id = ++c->next_id;
		cl->mask = EPOLLIN;
		ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = cl};
		if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			log_warn("control: epoll_ctl: %s", strerror(errno));
			close(fd);
			free(cl);
			continue;
		}
		cl->next = c->clients;
		c->clients = cl;
		c->nclients++;
		log_debug("control: client %u connected", cl->id);
		greeting = json_pack("{s:{s:o,s:[]}}", "QMP", "version", control_version_json(c),
		                     "capabilities");
		control_client_send_json(cl, greeting);
	}
}

/* ---- events ---- */

void control_event(struct control *c, const char *name, json_t *data)
{
	struct timespec ts;
	struct event_msg *m;
	json_t *ev;
	char *s;
	size_t len;

	if (!c || !atomic_load(&c->nready)) {
		json_decref(data);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ev = json_pack("{s:s}", "event", name);
	if (data)
		json_object_set_new(ev, "data", data);
	json_object_set_new(ev, "timestamp",
	                    json_pack("{s:I,s:I}", "seconds", (json_int_t)ts.tv_sec, "microseconds",
	                              (json_int_t)(ts.tv_nsec / 1000)));
	s = control_format_msg(ev, &len);
	if (!s) {
		log_warn("control: event %s cannot be formatted, dropped", name);
		return;
	}
	m = malloc(sizeof(*m) + len);
	if (!m) {
		free(s);
		return;
	}
	m->next = NULL;
	m->len = len;
	memcpy(m->text, s, len);
	free(s);

	pthread_mutex_lock(&c->lock);
	if (c->ev_bytes + len > c->ev_limit) {
		/* The control thread is stuck (in a handler): clients will be dropped. */
		c->ev_overflow = true;
		free(m);
		m = NULL;
	} else {
		*c->ev_tail = m;
		c->ev_tail = &m->next;
		c->ev_bytes += len;
	}
	pthread_mutex_unlock(&c->lock);
	if (m) {
		uint64_t one = 1;

		if (write(c->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_warn("control: eventfd: %s", strerror(errno));
	}
}

static void deliver_events(struct control *c)
{
	struct event_msg *m, *next;
	bool overflow;
	uint64_t v;

	if (read(c->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("control: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&c->lock);
	m = c->ev_head;
	overflow = c->ev_overflow;
	c->ev_head = NULL;
	c->ev_tail = &c->ev_head;
	c->ev_bytes = 0;
	c->ev_overflow = false;
	pthread_mutex_unlock(&c->lock);

	if (overflow) {
		/* Clients never see a gap in the event stream: they see the connection end. */
		log_warn("control: event queue overflow (more than %zu bytes), dropping clients",
		         c->ev_limit);
		for (struct client *cl = c->clients, *n; cl; cl = n) {
			n = cl->next;
			if (cl->negotiated)
				control_client_close(cl);
		}
	}
	for (; m; m = next) {
		next = m->next;
		for (struct client *cl = c->clients, *n; cl; cl = n) {
			n = cl->next;
			if (cl->negotiated)
				control_client_send(cl, m->text, m->len);
		}
		free(m);
	}
}

/* ---- the thread ---- */

static void *control_thread(void *opaque)
{
	struct control *c = opaque;
	struct epoll_event evs[32];

	while (!atomic_load(&c->stop)) {
		bool busy = false;
		int n;

		for (struct client *cl = c->clients; cl; cl = cl->next)
			busy |= cl->pending;
		n = epoll_wait(c->epfd, evs, ARRAY_SIZE(evs), busy ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_err("control: epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			struct client *cl;

			if (p == c) {
				accept_clients(c);
				continue;
			}
			if (p == &c->wake_fd) {
				deliver_events(c);
				continue;
			}
			cl = p;
			if (cl->dead)
				continue;
			if ((evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && cl->out_len) {
				if (!control_client_flush(cl))
					continue;
				if (cl->closing && !cl->pending && !cl->out_len) {
					control_client_close(cl);
					continue;
				}
				control_client_update_mask(cl);
			}
			if ((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !cl->pending &&
			    !cl->closing)
				control_client_read(cl);
		}
		/* Requests left over from earlier turns, MSGS_PER_TURN per client. */
		for (struct client *cl = c->clients, *next; cl; cl = next) {
			next = cl->next;
			if (cl->pending)
				control_client_process(cl);
		}
		while (c->zombies) {
			struct client *cl = c->zombies;

			c->zombies = cl->next;
			client_free(cl);
		}
	}
	return NULL;
}

/* ---- start and stop ---- */

static int check_existing(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s — check the path and its permissions", path,
		         strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen,
		         "%s: exists and is not a socket — remove it or pick another path", path);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s — check system limits", path,
		         strerror(errno));
		return -1;
	}
	strcpy(sa.sun_path, path);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r == 0 || errno == EAGAIN || errno == EINPROGRESS) {
		/* EAGAIN: a live server whose backlog is full. */
		close(fd);
		snprintf(err, errlen, "%s: in use by another monitor — pick another --control path",
		         path);
		return -1;
	}
	r = errno;
	close(fd);
	if (r != ECONNREFUSED) {
		snprintf(err, errlen,
		         "%s: cannot check the existing socket: %s — remove it or "
		         "pick another path",
		         path, strerror(r));
		return -1;
	}
	/* Stale: left by a monitor that died. */
	if (unlink(path) < 0 && errno != ENOENT) {
		snprintf(err, errlen,
		         "%s: cannot remove the stale socket: %s — remove it or pick "
		         "another path",
		         path, strerror(errno));
		return -1;
	}
	return 0;
}

static int create_socket(struct control *c, unsigned mode, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	mode_t old;
	int fd, r, e;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s — check system limits", c->path,
		         strerror(errno));
		return -1;
	}
	strcpy(sa.sun_path, c->path);
	/* The file is created with 0777 & ~umask: never wider than mode, whatever the umask. */
	old = umask(~mode & 0777);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	e = errno;
	umask(old);
	if (r < 0) {
		char dir[sizeof(c->path)];
		char *slash;

		close(fd);
		strcpy(dir, c->path);
		slash = strrchr(dir, '/');
		if (slash == dir)
			slash[1] = 0;
		else if (slash)
			*slash = 0;
		else
			strcpy(dir, ".");
		if (e == ENOENT || e == ENOTDIR)
			snprintf(err, errlen,
			         "%s: directory %s does not exist — create it or pick "
			         "another path",
			         c->path, dir);
		else if (e == EADDRINUSE)
			snprintf(err, errlen,
			         "%s: in use by another monitor — pick another --control path",
			         c->path);
		else if (e == EACCES || e == EROFS || e == EPERM)
			snprintf(err, errlen, "%s: %s — check the permissions of %s", c->path,
			         strerror(e), dir);
		else
			snprintf(err, errlen, "%s: bind: %s — pick another path", c->path,
			         strerror(e));
		return -1;
	}
	if (chmod(c->path, mode) < 0 || stat(c->path, &st) < 0 ||
	    listen(fd, (int)MIN(c->max_clients + 1, 128u)) < 0) {
		snprintf(err, errlen, "%s: %s — check the directory's permissions", c->path,
		         strerror(errno));
		unlink(c->path);
		close(fd);
		return -1;
	}
	c->sock_dev = st.st_dev;
	c->sock_ino = st.st_ino;
	c->listen_fd = fd;
	return 0;
}

static void control_free(struct control *c)
{
	struct event_msg *m;

	while (c->clients)
		control_client_close(c->clients);
	while (c->zombies) {
		struct client *cl = c->zombies;

		c->zombies = cl->next;
		client_free(cl);
	}
	while ((m = c->ev_head)) {
		c->ev_head = m->next;
		free(m);
	}
	if (c->listen_fd >= 0) {
		struct stat st;

		close(c->listen_fd);
		/* Only our socket: another monitor may have replaced it since. */
		if (lstat(c->path, &st) == 0 && st.st_dev == c->sock_dev &&
		    st.st_ino == c->sock_ino)
			unlink(c->path);
	}
	if (c->epfd >= 0)
		close(c->epfd);
	if (c->wake_fd >= 0)
		close(c->wake_fd);
	pthread_mutex_destroy(&c->lock);
	free(c->package);
	free(c);
}

struct control *control_start(const struct control_opts *o, char *err, size_t errlen)
{
	struct control *c;
	struct epoll_event ev;
	sigset_t all, old;
	size_t plen = o->path ? strlen(o->path) : 0;
	int r;

	if (!plen) {
		snprintf(err, errlen, "(none): no control socket path — give one");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "%s: out of memory — free some memory", o->path);
		return NULL;
	}
	c->listen_fd = c->epfd = c->wake_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	c->ev_tail = &c->ev_head;
	c->warn_rl = (struct ratelimit)RATELIMIT_INIT;
	c->cmds = o->cmds;
	c->ncmds = o->ncmds;
	c->opaque = o->opaque;
	c->package = strdup(o->package ? o->package : "");
	c->max_clients = o->max_clients ? o->max_clients : DEFAULT_MAX_CLIENTS;
	c->max_message = o->max_message ? o->max_message : DEFAULT_MAX_MESSAGE;
	c->max_backlog = o->max_backlog ? o->max_backlog : DEFAULT_MAX_BACKLOG;
	/* Room for bursts while a handler blocks; beyond it every client would overflow. */
	c->ev_limit = MAX(4 * c->max_backlog, (size_t)(8 * MiB));
	if (sscanf(VMSTACK_VERSION, "%d.%d.%d", &c->major, &c->minor, &c->micro) != 3)
		c->major = c->minor = c->micro = 0;
	if (!c->package) {
		snprintf(err, errlen, "%s: out of memory — free some memory", o->path);
		goto fail;
	}

	if (plen >= sizeof(c->path)) {
		snprintf(err, errlen,
		         "%s: path too long for a UNIX socket (%zu bytes, max %zu) — "
		         "pick a shorter path",
		         o->path, plen, sizeof(c->path) - 1);
		goto fail;
	}
	memcpy(c->path, o->path, plen + 1);
	for (unsigned i = 0; i < c->ncmds; i++) {
		bool dup = false;

		for (size_t j = 0; j < ARRAY_SIZE(control_builtin_names); j++)
			dup |= !strcmp(c->cmds[i].name, control_builtin_names[j]);
		for (unsigned j = 0; j < i; j++)
			dup |= !strcmp(c->cmds[i].name, c->cmds[j].name);
		if (dup || !c->cmds[i].fn) {
			snprintf(err, errlen,
			         "%s: command '%s' registered twice or without a "
			         "handler — fix the command table",
			         c->path, c->cmds[i].name);
			goto fail;
		}
	}

	if (check_existing(c->path, err, errlen) < 0)
		goto fail;
	if (create_socket(c, o->mode ? o->mode & 0777 : 0600, err, errlen) < 0)
		goto fail;
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->epfd < 0 || c->wake_fd < 0) {
		snprintf(err, errlen, "%s: %s — check system limits", c->path, strerror(errno));
		goto fail;
	}
	ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = c};
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->listen_fd, &ev) < 0)
		goto fail_errno;
	ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &c->wake_fd};
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->wake_fd, &ev) < 0)
		goto fail_errno;

	/* Signals belong to the monitor's main thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&c->thread, NULL, control_thread, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		errno = r;
		goto fail_errno;
	}
	pthread_setname_np(c->thread, "control");
	return c;

fail_errno:
	snprintf(err, errlen, "%s: %s — check system limits", c->path, strerror(errno));
fail:
	control_free(c);
	return NULL;
}

void control_stop(struct control *c)
{
	uint64_t one = 1;

	if (!c)
		return;
	atomic_store(&c->stop, true);
	if (write(c->wake_fd, &one, sizeof(one)) < 0)
		log_warn("control: eventfd: %s", strerror(errno));
	pthread_join(c->thread, NULL);
	control_free(c);
}

/* control.c: the QMP-style control socket server, on its own epoll thread. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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
#include "log.h"
#include "util.h"

#ifndef VMSTACK_VERSION
#define VMSTACK_VERSION "0.0.0"
#endif

#define DEFAULT_MAX_CLIENTS 16
#define DEFAULT_MAX_MESSAGE (64 * 1024)
#define DEFAULT_MAX_BACKLOG (1024 * 1024)
/* Requests handled per client per loop iteration, so one flooding client cannot starve
 * the others (its further input waits in its buffer, and its socket, until next time). */
#define MSGS_PER_TURN    16
#define ACCEPTS_PER_TURN 16
#define READ_CHUNK       (16 * 1024)

/* A serialized event waiting for the control thread. */
struct event_msg {
	struct event_msg *next;
	size_t len;
	char text[];
};

struct client {
	struct client *next;
	struct control *c;
	unsigned id;
	int fd;
	uint32_t mask;   /* epoll events currently watched */
	bool negotiated; /* qmp_capabilities done: accepts commands, receives events */
	bool pending;    /* the input buffer may hold a complete request */
	bool closing;    /* read no more; close once pending input and output are done */
	bool dead;       /* closed; freed at the end of the loop iteration */
	bool need_close; /* the buffer ends in an incomplete value: reparse on '}' or ']' */
	char *in;
	size_t in_start, in_len, in_cap;
	char *out;
	size_t out_start, out_len, out_cap;
};

struct control {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t sock_dev;
	ino_t sock_ino;
	int listen_fd, epfd, wake_fd;
	pthread_t thread;
	atomic_bool stop;

	const struct control_cmd *cmds;
	unsigned ncmds;
	void *opaque;
	char *package;
	unsigned max_clients;
	size_t max_message, max_backlog;
	int major, minor, micro;

	/* Control thread only. */
	struct ratelimit warn_rl; /* client misbehaviour must not flood the log */
	struct client *clients, *zombies;
	unsigned nclients, next_id;

	/* Event queue: any thread, under lock. */
	pthread_mutex_t lock;
	struct event_msg *ev_head, **ev_tail;
	size_t ev_bytes, ev_limit;
	bool ev_overflow;
	atomic_uint nready; /* negotiated clients: no need to format events when 0 */
};

void control_error_set(struct control_error *e, const char *cls, const char *fmt, ...)
{
	va_list ap;

	e->cls = cls;
	va_start(ap, fmt);
	vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
	va_end(ap);
}

/* Formats obj (which is released) as one line; NULL if jansson cannot. */
static char *format_msg(json_t *obj, size_t *len)
{
	char *s = json_dumps(obj, JSON_COMPACT), *t;
	size_t n;

	json_decref(obj);
	if (!s)
		return NULL;
	n = strlen(s);
	t = realloc(s, n + 3);
	if (!t) {
		free(s);
		return NULL;
	}
	memcpy(t + n, "\r\n", 3);
	*len = n + 2;
	return t;
}

/* ---- client output ---- */

static void client_close(struct client *cl);

static void client_update_mask(struct client *cl)
{
	uint32_t mask = 0;
	struct epoll_event ev;

	if (cl->dead)
		return;
	if (!cl->closing && !cl->pending)
		mask |= EPOLLIN;
	if (cl->out_len)
		mask |= EPOLLOUT;
	if (mask == cl->mask)
		return;
	ev = (struct epoll_event){.events = mask, .data.ptr = cl};
	if (epoll_ctl(cl->c->epfd, EPOLL_CTL_MOD, cl->fd, &ev) < 0)
		log_warn("control: epoll_ctl: %s", strerror(errno));
	cl->mask = mask;
}

/* Sends what is queued; false if the client had to be closed. */
static bool client_flush(struct client *cl)
{
	while (cl->out_len) {
		ssize_t n =
		    send(cl->fd, cl->out + cl->out_start, cl->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			log_debug("control: client %u: send: %s", cl->id, strerror(errno));
			client_close(cl);
			return false;
		}
		cl->out_start += (size_t)n;
		cl->out_len -= (size_t)n;
	}
	if (!cl->out_len)
		cl->out_start = 0;
	return true;
}

/* Queues one message; drops the client whose unread output would exceed max_backlog. */
static void client_send(struct client *cl, const char *s, size_t len)
{
	struct control *c = cl->c;

	if (cl->dead)
		return;
	if (cl->out_len + len > c->max_backlog) {
		/* Try to make room first: the client may have read since the last flush. */
		if (!client_flush(cl))
			return;
		if (cl->out_len + len > c->max_backlog) {
			log_ratelimited(&c->warn_rl, LOG_WARN,
			                "control: client %u not reading (more than %zu bytes "
			                "queued), dropped",
			                cl->id, c->max_backlog);
			client_close(cl);
			return;
		}
	}
	if (cl->out_start + cl->out_len + len > cl->out_cap) {
		if (cl->out_start) {
			memmove(cl->out, cl->out + cl->out_start, cl->out_len);
			cl->out_start = 0;
		}
		if (cl->out_len + len > cl->out_cap) {
			size_t cap = MAX(cl->out_cap * 2, 4096);
			char *p;

			while (cap < cl->out_len + len)
				cap *= 2;
			p = realloc(cl->out, cap);
			if (!p) {
				log_warn("control: client %u: out of memory, dropped", cl->id);
				client_close(cl);
				return;
			}
			cl->out = p;
			cl->out_cap = cap;
		}
	}
	memcpy(cl->out + cl->out_start + cl->out_len, s, len);
	cl->out_len += len;
	if (client_flush(cl))
		client_update_mask(cl);
}

static void client_send_json(struct client *cl, json_t *obj)
{
	size_t len;
	char *s = format_msg(obj, &len);

	if (!s) {
		log_warn("control: client %u: cannot format a reply", cl->id);
		s = strdup("{\"error\":{\"class\":\"GenericError\",\"desc\":\"reply cannot be "
		           "formatted\"}}\r\n");
		if (!s)
			return;
		len = strlen(s);
	}
	client_send(cl, s, len);
	free(s);
}

static size_t utf8_partial_tail(const char *buf, size_t len);

/* A JSON string of s, which snprintf() may have cut in the middle of a UTF-8 character. */
static json_t *text_json(const char *s)
{
	json_t *j = json_string(s);

	if (!j)
		j = json_stringn(s, strlen(s) - utf8_partial_tail(s, strlen(s)));
	return j ? j : json_string("(message is not valid UTF-8)");
}

static void reply_error(struct client *cl, json_t *id, const char *cls, const char *desc)
{
	json_t *r =
	    json_pack("{s:{s:o,s:o}}", "error", "class", text_json(cls), "desc", text_json(desc));

	if (r && id)
		json_object_set(r, "id", id);
	client_send_json(cl, r);
}

static void reply_return(struct client *cl, json_t *id, json_t *value)
{
	json_t *r = json_object();

	json_object_set_new(r, "return", value ? value : json_object());
	if (id)
		json_object_set(r, "id", id);
	client_send_json(cl, r);
}

/* ---- built-in commands ---- */

static json_t *version_json(struct control *c)
{
	return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "micro", c->micro, "minor", c->minor,
	                 "major", c->major, "package", c->package);
}

/* QMP commands take named arguments; these built-ins take none but qmp_capabilities'. */
static bool check_args(json_t *args, const char *allowed, struct control_error *err)
{
	const char *key;
	json_t *v;

	json_object_foreach(args, key, v)
	{
		if (!allowed || strcmp(key, allowed) != 0) {
			control_error_set(err, "GenericError", "Parameter '%s' is unexpected", key);
			return false;
		}
	}
	return true;
}

static json_t *cmd_capabilities(struct control *c, struct client *cl, json_t *args,
                                struct control_error *err)
{
	json_t *enable = json_object_get(args, "enable");

	if (!check_args(args, "enable", err))
		return NULL;
	if (enable && !json_is_array(enable)) {
		control_error_set(err, "GenericError",
		                  "Invalid parameter type for 'enable', expected: array");
		return NULL;
	}
	if (json_array_size(enable)) {
		json_t *cap = json_array_get(enable, 0);

		control_error_set(err, "GenericError", "Capability '%s' not available",
		                  json_is_string(cap) ? json_string_value(cap) : "?");
		return NULL;
	}
	cl->negotiated = true;
	atomic_fetch_add(&c->nready, 1);
	return NULL;
}

static const char *const builtin_names[] = {"qmp_capabilities", "query-version", "query-commands"};

static json_t *cmd_query_commands(struct control *c)
{
	json_t *a = json_array();

	for (size_t i = 0; i < ARRAY_SIZE(builtin_names); i++)
		json_array_append_new(a, json_pack("{s:s}", "name", builtin_names[i]));
	for (unsigned i = 0; i < c->ncmds; i++)
		json_array_append_new(a, json_pack("{s:s}", "name", c->cmds[i].name));
	return a;
}

/* ---- requests ---- */

static void handle_request(struct client *cl, json_t *req)
{
	struct control *c = cl->c;
	struct control_error err = {0};
	json_t *id, *exec, *args, *ret = NULL;
	const char *name, *key;
	json_t *v;
	char desc[300];

	if (!json_is_object(req)) {
		reply_error(cl, NULL, "GenericError", "QMP input must be a JSON object");
		return;
	}
	id = json_object_get(req, "id");
	json_object_foreach(req, key, v)
	{
		if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
			snprintf(desc, sizeof(desc), "QMP input member '%s' is unexpected%s", key,
			         strcmp(key, "exec-oob")
			             ? ""
			             : " (out-of-band execution is not supported)");
			reply_error(cl, id, "GenericError", desc);
			return;
		}
	}
	exec = json_object_get(req, "execute");
	if (!exec) {
		reply_error(cl, id, "GenericError", "QMP input lacks member 'execute'");
		return;
	}
	if (!json_is_string(exec)) {
		reply_error(cl, id, "GenericError", "QMP input member 'execute' must be a string");
		return;
	}
	name = json_string_value(exec);
	args = json_object_get(req, "arguments");
	if (args && !json_is_object(args)) {
		reply_error(cl, id, "GenericError",
		            "QMP input member 'arguments' must be an object");
		return;
	}
	args = args ? json_incref(args) : json_object();

	if (!strcmp(name, "qmp_capabilities")) {
		if (cl->negotiated)
			control_error_set(&err, "CommandNotFound",
			                  "Capabilities negotiation is already complete, command "
			                  "ignored");
		else
			ret = cmd_capabilities(c, cl, args, &err);
	} else if (!cl->negotiated) {
		control_error_set(&err, "CommandNotFound",
		                  "Expecting capabilities negotiation with 'qmp_capabilities'");
	} else if (!strcmp(name, "query-version")) {
		if (check_args(args, NULL, &err))
			ret = version_json(c);
	} else if (!strcmp(name, "query-commands")) {
		if (check_args(args, NULL, &err))
			ret = cmd_query_commands(c);
	} else {
		unsigned i;

		for (i = 0; i < c->ncmds; i++)
			if (!strcmp(name, c->cmds[i].name))
				break;
		if (i == c->ncmds)
			control_error_set(&err, "CommandNotFound",
			                  "The command %.200s has not been found", name);
		else
			ret = c->cmds[i].fn(c->opaque, args, &err);
	}
	json_decref(args);

	if (err.cls) {
		json_decref(ret);
		reply_error(cl, id, err.cls, err.desc);
	} else {
		reply_return(cl, id, ret);
	}
}

static bool is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/*
 * Bytes at the end of buf that start a UTF-8 sequence not yet complete: jansson would call
 * them invalid, but the rest of the character may be in the next read.
 */
static size_t utf8_partial_tail(const char *buf, size_t len)
{
	for (size_t back = 1; back <= 3 && back <= len; back++) {
		unsigned char ch = (unsigned char)buf[len - back];
		size_t need;

		if ((ch & 0xc0) == 0x80)
			continue; /* continuation byte: look further back */
		if ((ch & 0xe0) == 0xc0)
			need = 2;
		else if ((ch & 0xf0) == 0xe0)
			need = 3;
		else if ((ch & 0xf8) == 0xf0)
			need = 4;
		else
			return 0;
		return need > back ? back : 0;
	}
	return 0;
}

static void refuse_too_long(struct client *cl)
{
	char desc[96];

	snprintf(desc, sizeof(desc), "message too long (more than %zu bytes)", cl->c->max_message);
	reply_error(cl, NULL, "GenericError", desc);
	cl->closing = true;
	cl->pending = false;
	cl->in_start = cl->in_len = 0;
}

/* Handles up to MSGS_PER_TURN complete requests from the input buffer. */
static void client_process(struct client *cl)
{
	struct control *c = cl->c;

	for (int n = 0; n < MSGS_PER_TURN && !cl->dead; n++) {
		const char *buf;
		size_t len, used;
		json_error_t jerr;
		json_t *req;

		while (cl->in_len && is_space(cl->in[cl->in_start])) {
			cl->in_start++;
			cl->in_len--;
		}
		if (!cl->in_len) {
			cl->in_start = 0;
			cl->pending = false;
			break;
		}
		buf = cl->in + cl->in_start;
		len = cl->in_len - utf8_partial_tail(cl->in + cl->in_start, cl->in_len);
		req = json_loadb(buf, len, JSON_DISABLE_EOF_CHECK, &jerr);
		if (!req && (json_error_code(&jerr) == json_error_premature_end_of_input ||
		             (size_t)jerr.position >= len)) {
			/* Incomplete (or wrong only so far): wait for more. */
			if (cl->in_len > c->max_message)
				refuse_too_long(cl);
			cl->pending = false;
			cl->need_close = true;
			break;
		}
		if (!req) {
			char desc[sizeof(jerr.text) + 32];
			const char *nl = memchr(buf + jerr.position, '\n', len - jerr.position);

			snprintf(desc, sizeof(desc), "JSON parse error: %s", jerr.text);
			reply_error(cl, NULL, "GenericError", desc);
			/* Resynchronise at the next line; without one, drop what we have. */
			used = nl ? (size_t)(nl + 1 - buf) : cl->in_len;
			cl->in_start += used;
			cl->in_len -= used;
			continue;
		}
		used = (size_t)jerr.position;
		if (used > c->max_message) {
			json_decref(req);
			refuse_too_long(cl);
			break;
		}
		cl->in_start += used;
		cl->in_len -= used;
		handle_request(cl, req);
		json_decref(req);
	}
	if (cl->dead)
		return;
	if (cl->closing && !cl->pending && !cl->out_len) {
		client_close(cl);
		return;
	}
	client_update_mask(cl);
}

static void client_read(struct client *cl)
{
	struct control *c = cl->c;
	size_t limit = c->max_message + 1, room;
	ssize_t n;

	if (cl->in_start) {
		memmove(cl->in, cl->in + cl->in_start, cl->in_len);
		cl->in_start = 0;
	}
	if (cl->in_len >= limit) { /* cannot happen: client_process refused it */
		refuse_too_long(cl);
		return;
	}
	if (cl->in_cap - cl->in_len < READ_CHUNK && cl->in_cap < limit) {
		size_t cap = MIN(MAX(cl->in_cap * 2, (size_t)READ_CHUNK), limit);
		char *p = realloc(cl->in, cap);

		if (!p) {
			log_warn("control: client %u: out of memory, dropped", cl->id);
			client_close(cl);
			return;
		}
		cl->in = p;
		cl->in_cap = cap;
	}
	room = MIN(cl->in_cap - cl->in_len, (size_t)READ_CHUNK);
	n = recv(cl->fd, cl->in + cl->in_len, room, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		log_debug("control: client %u: recv: %s", cl->id, strerror(errno));
		client_close(cl);
		return;
	}
	if (n == 0) {
		/* The client may have shut down only its sending side: answer what it sent. */
		cl->closing = true;
		cl->pending = true;
		client_update_mask(cl);
		return;
	}
	if (!cl->need_close || memchr(cl->in + cl->in_len, '}', (size_t)n) ||
	    memchr(cl->in + cl->in_len, ']', (size_t)n)) {
		cl->pending = true;
		cl->need_close = false;
	}
	cl->in_len += (size_t)n;
	if (!cl->pending && cl->in_len > c->max_message)
		refuse_too_long(cl);
	/* Complete requests are handled by the loop, a few per turn. */
	if (cl->closing && !cl->pending)
		client_process(cl);
	else
		client_update_mask(cl);
}

/* ---- clients ---- */

static void client_close(struct client *cl)
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
		greeting =
		    json_pack("{s:{s:o,s:[]}}", "QMP", "version", version_json(c), "capabilities");
		client_send_json(cl, greeting);
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
	s = format_msg(ev, &len);
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
				client_close(cl);
		}
	}
	for (; m; m = next) {
		next = m->next;
		for (struct client *cl = c->clients, *n; cl; cl = n) {
			n = cl->next;
			if (cl->negotiated)
				client_send(cl, m->text, m->len);
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
				if (!client_flush(cl))
					continue;
				if (cl->closing && !cl->pending && !cl->out_len) {
					client_close(cl);
					continue;
				}
				client_update_mask(cl);
			}
			if ((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !cl->pending &&
			    !cl->closing)
				client_read(cl);
		}
		/* Requests left over from earlier turns, MSGS_PER_TURN per client. */
		for (struct client *cl = c->clients, *next; cl; cl = next) {
			next = cl->next;
			if (cl->pending)
				client_process(cl);
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
		client_close(c->clients);
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

		for (size_t j = 0; j < ARRAY_SIZE(builtin_names); j++)
			dup |= !strcmp(c->cmds[i].name, builtin_names[j]);
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

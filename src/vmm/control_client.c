/* control_client.c: one control-socket client's messages: parsing its JSON input stream,
 * running its requests (built-in and registered commands), replies and buffered output. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "control.h"
#include "control_internal.h"
#include "log.h"
#include "util.h"

/* Requests handled per client per loop iteration, so one flooding client cannot starve
 * the others (its further input waits in its buffer, and its socket, until next time). */
#define MSGS_PER_TURN 16
#define READ_CHUNK    (16 * 1024)

void control_error_set(struct control_error *e, const char *cls, const char *fmt, ...)
{
	va_list ap;

	e->cls = cls;
	va_start(ap, fmt);
	vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
	va_end(ap);
}

/* Formats obj (which is released) as one line; NULL if jansson cannot. */
char *control_format_msg(json_t *obj, size_t *len)
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

void control_client_update_mask(struct client *cl)
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
bool control_client_flush(struct client *cl)
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
			control_client_close(cl);
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
void control_client_send(struct client *cl, const char *s, size_t len)
{
	struct control *c = cl->c;

	if (cl->dead)
		return;
	if (cl->out_len + len > c->max_backlog) {
		/* Try to make room first: the client may have read since the last flush. */
		if (!control_client_flush(cl))
			return;
		if (cl->out_len + len > c->max_backlog) {
			log_ratelimited(&c->warn_rl, LOG_WARN,
			                "control: client %u not reading (more than %zu bytes "
			                "queued), dropped",
			                cl->id, c->max_backlog);
			control_client_close(cl);
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
				control_client_close(cl);
				return;
			}
			cl->out = p;
			cl->out_cap = cap;
		}
	}
	memcpy(cl->out + cl->out_start + cl->out_len, s, len);
	cl->out_len += len;
	if (control_client_flush(cl))
		control_client_update_mask(cl);
}

void control_client_send_json(struct client *cl, json_t *obj)
{
	size_t len;
	char *s = control_format_msg(obj, &len);

	if (!s) {
		log_warn("control: client %u: cannot format a reply", cl->id);
		s = strdup("{\"error\":{\"class\":\"GenericError\",\"desc\":\"reply cannot be "
		           "formatted\"}}\r\n");
		if (!s)
			return;
		len = strlen(s);
	}
	control_client_send(cl, s, len);
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
	control_client_send_json(cl, r);
}

static void reply_return(struct client *cl, json_t *id, json_t *value)
{
	json_t *r = json_object();

	json_object_set_new(r, "return", value ? value : json_object());
	if (id)
		json_object_set(r, "id", id);
	control_client_send_json(cl, r);
}

/* ---- built-in commands ---- */

json_t *control_version_json(struct control *c)
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

const char *const control_builtin_names[] = {"qmp_capabilities", "query-version", "query-commands"};

static json_t *cmd_query_commands(struct control *c)
{
	json_t *a = json_array();

	for (size_t i = 0; i < ARRAY_SIZE(control_builtin_names); i++)
		json_array_append_new(a, json_pack("{s:s}", "name", control_builtin_names[i]));
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
			ret = control_version_json(c);
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
void control_client_process(struct client *cl)
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
		control_client_close(cl);
		return;
	}
	control_client_update_mask(cl);
}

void control_client_read(struct client *cl)
{
	struct control *c = cl->c;
	size_t limit = c->max_message + 1, room;
	ssize_t n;

	if (cl->in_start) {
		memmove(cl->in, cl->in + cl->in_start, cl->in_len);
		cl->in_start = 0;
	}
	if (cl->in_len >= limit) { /* cannot happen: control_client_process refused it */
		refuse_too_long(cl);
		return;
	}
	if (cl->in_cap - cl->in_len < READ_CHUNK && cl->in_cap < limit) {
		size_t cap = MIN(MAX(cl->in_cap * 2, (size_t)READ_CHUNK), limit);
		char *p = realloc(cl->in, cap);

		if (!p) {
			log_warn("control: client %u: out of memory, dropped", cl->id);
			control_client_close(cl);
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
		control_client_close(cl);
		return;
	}
	if (n == 0) {
		/* The client may have shut down only its sending side: answer what it sent. */
		cl->closing = true;
		cl->pending = true;
		control_client_update_mask(cl);
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
		control_client_process(cl);
	else
		control_client_update_mask(cl);
}

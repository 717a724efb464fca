/* control_internal.h: what control.c (the socket, its thread, events) and control_client.c
 * (one client's messages) share. Not for other files. */
#ifndef VMSTACK_CONTROL_INTERNAL_H
#define VMSTACK_CONTROL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include <jansson.h>

#include "control.h"
#include "log.h"

struct event_msg; /* control.c: a serialized event waiting for the control thread */

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

/* ---- control_client.c ---- */
/* Formats obj (which is released) as one line ending in "\r\n"; NULL if jansson cannot. */
char *control_format_msg(json_t *obj, size_t *len);
/* Watches for input unless a request is pending or the client closing, for output if queued. */
void control_client_update_mask(struct client *cl);
/* Sends what is queued; false if the client had to be closed. */
bool control_client_flush(struct client *cl);
/* Queues one message; drops the client whose unread output would exceed max_backlog. */
void control_client_send(struct client *cl, const char *s, size_t len);
/* Queues obj (which is released) as one message; an error message if it cannot be formatted. */
void control_client_send_json(struct client *cl, json_t *obj);
/* The query-version value, also the greeting's "version". */
json_t *control_version_json(struct control *c);
/* The built-in commands, which a registered command must not be named after. */
extern const char *const control_builtin_names[3];
/* Handles up to MSGS_PER_TURN complete requests from the input buffer. */
void control_client_process(struct client *cl);
/* Receives what the client sent; complete requests are left pending for control_client_process. */
void control_client_read(struct client *cl);

/* ---- control.c ---- */
/* Closes the client's socket and unlinks it; it is freed at the end of the loop iteration. */
void control_client_close(struct client *cl);

#endif

/* control.h: the monitor's control socket, a UNIX socket speaking QMP-style JSON. */
#ifndef VMSTACK_CONTROL_H
#define VMSTACK_CONTROL_H

#include <stddef.h>

#include <jansson.h>

/*
 * The protocol layer knows nothing about VMs: the monitor registers commands and posts
 * events; this file moves JSON between them and the clients (QEMU's QMP specification,
 * docs/interop/qmp-spec.rst):
 *
 *   client                                  server (control thread)
 *   ------                                  -----------------------
 *   connect                         <--     {"QMP": {"version": ..., "capabilities": []}}
 *   {"execute": "qmp_capabilities"} -->
 *                                   <--     {"return": {}}
 *   {"execute": "x", "arguments": {...}, "id": ID}
 *                                   -->     handler runs on the control thread
 *                                   <--     {"return": VALUE, "id": ID}
 *                                      or   {"error": {"class": C, "desc": D}, "id": ID}
 *   (any time after negotiation)    <--     {"event": N, "data": ..., "timestamp": ...}
 *
 * Every server message is one compact JSON object followed by "\r\n". Client input is a
 * stream of JSON objects, split or batched arbitrarily.
 *
 * Built-in commands: qmp_capabilities, query-version, query-commands. Until a client has
 * sent qmp_capabilities, nothing else is accepted and it receives no events.
 *
 * Call order: control_start() (before other threads exist: it changes the umask for a
 * moment), then any number of control_event() from any thread, then control_stop() once,
 * after the last control_event() has returned. Handlers run on the control thread, one at
 * a time; a slow handler delays every client (and events), never the caller of
 * control_event(). A handler may call control_event() but not control_stop().
 */

struct control;

/* A failed command: class (a static string such as "GenericError") and description. */
struct control_error {
	const char *cls;
	char desc[256];
};

struct control_cmd {
	const char *name;
	/*
	 * Runs on the control thread. args: the request's "arguments" object ({} when
	 * absent), borrowed. Returns a new reference, the "return" value (NULL means {})
	 * -- or, on failure, sets err with control_error_set() and returns NULL (a value
	 * returned alongside an error is released and ignored).
	 */
	json_t *(*fn)(void *opaque, json_t *args, struct control_error *err);
};

struct control_opts {
	const char *path; /* socket path (copied) */
	unsigned mode;    /* permission bits of the socket file; 0 = 0600 */
	/* Commands (the array and its names must outlive the control; not copied). Names
	 * must be unique and must not be a built-in's. */
	const struct control_cmd *cmds;
	unsigned ncmds;
	void *opaque;         /* passed to every handler */
	const char *package;  /* e.g. "vmstack-vm 0.1.0", for the greeting (copied) */
	unsigned max_clients; /* 0 = 16; one more is sent an error and closed */
	size_t max_message;   /* 0 = 64 KiB: a longer request is refused, its client dropped */
	size_t max_backlog;   /* 0 = 1 MiB of output a client has not read; beyond: dropped */
};

/*
 * Creates the socket (replacing a stale one left by a dead monitor), starts the control
 * thread. Returns NULL with a one-line "<path>: <what> — <fix>" message in err on failure:
 * path too long, directory missing, path in use by a live server, path not a socket, ...
 */
struct control *control_start(const struct control_opts *o, char *err, size_t errlen);

/* Sets a handler's error: cls is kept as a pointer (use a string literal). */
void control_error_set(struct control_error *e, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Posts {"event": name, "data": data, "timestamp": {"seconds", "microseconds"}} (the
 * time of this call, wall clock) to every client that has completed capabilities
 * negotiation. Any thread; never blocks on a client (it takes a mutex briefly and wakes
 * the control thread). data is stolen; NULL means no "data" member. c == NULL is a no-op.
 * Events from one thread reach every client in the order they were posted.
 */
void control_event(struct control *c, const char *name, json_t *data);

/* Stops the thread, closes every client, unlinks the socket, frees c. NULL is fine. */
void control_stop(struct control *c);

#endif

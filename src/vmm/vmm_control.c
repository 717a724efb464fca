/* vmm_control.c: the monitor's control-socket commands and events (on top of control.c). */
#include "vmm_control.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block.h"
#include "control.h"
#include "log.h"
#include "virtio_blk.h"
#include "virtio_net.h"

/*
 * Commands run on the control thread; the machine they act on comes and goes with each
 * boot (a reboot builds a new one), so every command takes `lock` and finds the current
 * machine there, and vmm_ctl_detach() takes it before the machine is torn down.
 *
 * Status, as QMP's query-status names it: "prelaunch" before the first boot, "running",
 * "paused" after stop, "shutdown" once the guest or the host ended the VM.
 */
struct vmm_ctl {
	struct control *ctl;
	const struct vm_config *cfg;
	pthread_mutex_t lock;
	struct machine *m;  /* NULL between boots */
	const char *status; /* see above */
	bool host_reset;    /* system_reset asked: restart even with --on-reboot exit */
	bool host_quit;     /* quit asked */
};

static struct machine *need_machine(struct vmm_ctl *c, struct control_error *err)
{
	if (!c->m)
		control_error_set(err, "GenericError", "the VM is not running (status %s)",
		                  c->status);
	return c->m;
}

static json_t *cmd_query_status(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;
	json_t *r;

	(void)args;
	(void)err;
	pthread_mutex_lock(&c->lock);
	r = json_pack("{s:s, s:b, s:b}", "status", c->status, "running",
	              !strcmp(c->status, "running"), "singlestep", 0);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static json_t *cmd_stop(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;
	struct machine *m;
	bool emit = false;

	(void)args;
	pthread_mutex_lock(&c->lock);
	m = need_machine(c, err);
	if (m && !machine_paused(m)) {
		if (machine_pause(m) < 0) {
			control_error_set(err, "GenericError", "the VM is shutting down");
		} else {
			c->status = "paused";
			emit = true;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (emit)
		control_event(c->ctl, "STOP", NULL);
	return NULL;
}

static json_t *cmd_cont(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;
	struct machine *m;
	bool emit = false;

	(void)args;
	pthread_mutex_lock(&c->lock);
	m = need_machine(c, err);
	if (m && machine_paused(m)) {
		machine_resume(m);
		c->status = "running";
		emit = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (emit)
		control_event(c->ctl, "RESUME", NULL);
	return NULL;
}

static json_t *cmd_system_reset(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;
	struct machine *m;

	(void)args;
	pthread_mutex_lock(&c->lock);
	m = need_machine(c, err);
	if (m) {
		c->host_reset = true;
		machine_request_exit(m, MACHINE_RESET);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* The ACPI power button: what a stock kernel honours with no special configuration (its
 * ACPI button driver reports KEY_POWER, and systemd-logind or acpid powers off), and what
 * QEMU's system_powerdown does on the pc machine. */
static json_t *cmd_system_powerdown(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;
	struct machine *m;

	(void)args;
	pthread_mutex_lock(&c->lock);
	m = need_machine(c, err);
	if (m)
		machine_powerdown(m);
	pthread_mutex_unlock(&c->lock);
	if (m)
		control_event(c->ctl, "POWERDOWN", NULL);
	return NULL;
}

static json_t *cmd_quit(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;

	(void)args;
	(void)err;
	pthread_mutex_lock(&c->lock);
	c->host_quit = true;
	if (c->m)
		machine_request_exit(c->m, MACHINE_STOPPED);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/*
 * The configuration a restore starts from: the `run` arguments, NUL-separated, without
 * --control (the restored monitor names its own socket).
 */
static int put_config(const struct vm_config *cfg, struct snap_writer *w)
{
	size_t len = 0, n = 0;
	char *buf;
	int r;

	for (int i = 0; i < cfg->argc; i++)
		len += strlen(cfg->argv[i]) + 1;
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	for (int i = 1; i < cfg->argc; i++) {
		const char *a = cfg->argv[i];
		if (!strcmp(a, "--control")) {
			i++;
			continue;
		}
		if (!strncmp(a, "--control=", 10))
			continue;
		memcpy(buf + n, a, strlen(a) + 1);
		n += strlen(a) + 1;
	}
	r = snap_put(w, "config", 0, buf, n);
	free(buf);
	return r;
}

/* snapshot-save {"path": DIR}: the VM is paused, saved into DIR, and stays paused (`cont`
 * continues it — its disks then move on past the snapshot — and `quit` ends it). */
static json_t *cmd_snapshot_save(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;
	struct machine_save_info info;
	struct snap_writer *w = NULL;
	struct machine *m;
	const char *dir = NULL;
	char msg[512];
	bool was_running = false, emit = false;
	json_t *ret = NULL;
	int r;

	if (!args || json_unpack(args, "{s:s}", "path", &dir) < 0 || !*dir) {
		control_error_set(err, "GenericError",
		                  "snapshot-save: argument 'path' (the snapshot directory) is "
		                  "required, e.g. {\"path\": \"/var/lib/vm/snap1\"}");
		return NULL;
	}
	pthread_mutex_lock(&c->lock);
	m = need_machine(c, err);
	if (!m)
		goto out;
	was_running = !machine_paused(m);
	w = snap_writer_new();
	if (!w || put_config(c->cfg, w) < 0) {
		control_error_set(err, "GenericError", "snapshot-save: out of memory");
		goto out;
	}
	r = machine_save(m, w, dir, &info, msg, sizeof(msg));
	if (r == 0)
		r = snap_writer_commit(w, dir, msg, sizeof(msg));
	if (machine_paused(m)) {
		c->status = "paused";
		emit = was_running;
	}
	if (r < 0) {
		control_error_set(err, "GenericError", "snapshot-save: %s", msg);
		goto out;
	}
	ret = json_pack("{s:s, s:I, s:f}", "path", dir, "memory-bytes",
	                (json_int_t)info.memory_bytes, "seconds", info.seconds);
	log_info("snapshot saved to %s: %llu bytes of memory in %.3f s", dir,
	         (unsigned long long)info.memory_bytes, info.seconds);
out:
	pthread_mutex_unlock(&c->lock);
	snap_writer_free(w);
	if (emit)
		control_event(c->ctl, "STOP", NULL);
	return ret;
}

static json_t *cmd_query_cpus(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;
	struct machine *m;
	json_t *list = NULL;

	(void)args;
	pthread_mutex_lock(&c->lock);
	m = need_machine(c, err);
	if (m) {
		list = json_array();
		for (unsigned i = 0; i < m->ncpus; i++)
			json_array_append_new(list, json_pack("{s:i, s:i, s:s, s:{s:i, s:i, s:i}}",
			                                      "cpu-index", (int)i, "thread-id",
			                                      m->vcpus[i].tid, "target", "x86_64",
			                                      "props", "core-id", 0, "thread-id", 0,
			                                      "socket-id", (int)i));
	}
	pthread_mutex_unlock(&c->lock);
	return list;
}

/* The monitor's resident set, from /proc/self/statm (pages). */
static uint64_t monitor_rss(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static json_t *cmd_query_memory(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;

	(void)args;
	(void)err;
	return json_pack("{s:I, s:I}", "guest-ram", (json_int_t)c->cfg->memory, "monitor-rss",
	                 (json_int_t)monitor_rss());
}

static json_t *blk_stats(const struct virtio_blk *vb)
{
	const struct virtio_blk_stats *s = &vb->stats;

	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "rd_operations",
	                 (json_int_t)s->reads, "wr_operations", (json_int_t)s->writes,
	                 "flush_operations", (json_int_t)s->flushes, "discard_operations",
	                 (json_int_t)s->discards, "rd_bytes", (json_int_t)s->read_bytes, "wr_bytes",
	                 (json_int_t)s->write_bytes, "failed_operations", (json_int_t)s->errors);
}

static json_t *block_list(struct vmm_ctl *c, bool stats)
{
	json_t *list = json_array();

	for (unsigned i = 0; i < c->cfg->ndisks; i++) {
		const struct disk_config *d = &c->cfg->disks[i];
		char dev[8];
		json_t *e;

		snprintf(dev, sizeof(dev), "vd%c", 'a' + i);
		e = json_pack("{s:s, s:s, s:s, s:b, s:I}", "device", dev, "file", d->opts.path,
		              "format", img_format_name(blk_format(d->blk)), "readonly",
		              blk_readonly(d->blk), "size", (json_int_t)blk_size(d->blk));
		if (stats && c->m && c->m->blk[i])
			json_object_set_new(e, "stats", blk_stats(c->m->blk[i]));
		json_array_append_new(list, e);
	}
	return list;
}

/* The device's counters; with vhost-net, which moves frames past us, the tap's. */
static json_t *net_stats(struct virtio_net *vn)
{
	const struct virtio_net_stats *s = &vn->stats;
	uint64_t v[6] = {s->rx_packets, s->rx_bytes,   s->tx_packets,
	                 s->tx_bytes,   s->rx_dropped, s->tx_dropped};

	if (virtio_net_vhost_active(vn) && netdev_tap_counters(vn->nd, v) < 0)
		memset(v, 0, sizeof(v));
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "rx_packets", (json_int_t)v[0],
	                 "rx_bytes", (json_int_t)v[1], "tx_packets", (json_int_t)v[2], "tx_bytes",
	                 (json_int_t)v[3], "rx_dropped", (json_int_t)v[4], "tx_dropped",
	                 (json_int_t)v[5]);
}

static json_t *net_list(struct vmm_ctl *c, bool stats)
{
	json_t *list = json_array();

	for (unsigned i = 0; i < c->cfg->nnets; i++) {
		const struct net_config *n = &c->cfg->nets[i];
		char dev[16], mac[18];
		json_t *e;

		snprintf(dev, sizeof(dev), "net%u", i);
		snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1],
		         n->mac[2], n->mac[3], n->mac[4], n->mac[5]);
		e = json_pack("{s:s, s:s, s:s}", "device", dev, "backend",
		              n->opts.kind == NETDEV_TAP ? "tap" : "user", "mac", mac);
		if (c->m && c->m->net[i])
			json_object_set_new(e, "vhost",
			                    json_boolean(virtio_net_vhost_active(c->m->net[i])));
		if (stats && c->m && c->m->net[i])
			json_object_set_new(e, "stats", net_stats(c->m->net[i]));
		json_array_append_new(list, e);
	}
	return list;
}

/* A device list, without counters, under the lock. */
static json_t *locked_list(void *opaque, json_t *(*list)(struct vmm_ctl *, bool))
{
	struct vmm_ctl *c = opaque;
	json_t *r;

	pthread_mutex_lock(&c->lock);
	r = list(c, false);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static json_t *cmd_query_block(void *opaque, json_t *args, struct control_error *err)
{
	(void)args;
	(void)err;
	return locked_list(opaque, block_list);
}

static json_t *cmd_query_net(void *opaque, json_t *args, struct control_error *err)
{
	(void)args;
	(void)err;
	return locked_list(opaque, net_list);
}

static json_t *cmd_query_stats(void *opaque, json_t *args, struct control_error *err)
{
	struct vmm_ctl *c = opaque;
	json_t *r;

	(void)args;
	(void)err;
	pthread_mutex_lock(&c->lock);
	r = json_pack("{s:{s:I, s:I}, s:o, s:o}", "memory", "guest-ram", (json_int_t)c->cfg->memory,
	              "monitor-rss", (json_int_t)monitor_rss(), "block", block_list(c, true), "net",
	              net_list(c, true));
	pthread_mutex_unlock(&c->lock);
	return r;
}

static const struct control_cmd vmm_cmds[] = {
    {"query-status", cmd_query_status},
    {"stop", cmd_stop},
    {"cont", cmd_cont},
    {"system_reset", cmd_system_reset},
    {"quit", cmd_quit},
    {"system_powerdown", cmd_system_powerdown},
    {"query-cpus-fast", cmd_query_cpus},
    {"query-cpus", cmd_query_cpus},
    {"query-memory", cmd_query_memory},
    {"query-block", cmd_query_block},
    {"query-net", cmd_query_net},
    {"query-stats", cmd_query_stats},
    {"snapshot-save", cmd_snapshot_save},
};

struct vmm_ctl *vmm_ctl_start(const char *path, const struct vm_config *cfg, char *err,
                              size_t errlen)
{
	struct vmm_ctl *c = calloc(1, sizeof(*c));
	struct control_opts o = {
	    .path = path,
	    .cmds = vmm_cmds,
	    .ncmds = sizeof(vmm_cmds) / sizeof(vmm_cmds[0]),
	    .package = "vmstack-vm " VMSTACK_VERSION,
	};

	if (!c) {
		snprintf(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	c->cfg = cfg;
	c->status = "prelaunch";
	pthread_mutex_init(&c->lock, NULL);
	o.opaque = c;
	c->ctl = control_start(&o, err, errlen);
	if (!c->ctl) {
		pthread_mutex_destroy(&c->lock);
		free(c);
		return NULL;
	}
	return c;
}

void vmm_ctl_attach(struct vmm_ctl *c, struct machine *m)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->m = m;
	c->status = "running";
	c->host_reset = false;
	if (c->host_quit) /* quit arrived between two boots (a reboot in progress) */
		machine_request_exit(m, MACHINE_STOPPED);
	pthread_mutex_unlock(&c->lock);
}

enum machine_exit vmm_ctl_detach(struct vmm_ctl *c, enum machine_exit why, bool *host_reset)
{
	const char *reason = NULL;
	bool guest = false;

	*host_reset = false;
	if (!c)
		return why;
	pthread_mutex_lock(&c->lock);
	c->m = NULL;
	if (c->host_quit)
		why = MACHINE_STOPPED;
	*host_reset = c->host_reset && why == MACHINE_RESET;
	switch (why) {
	case MACHINE_RESET:
		guest = !*host_reset;
		reason = guest ? "guest-reset" : "host-qmp-system-reset";
		c->status = "prelaunch";
		break;
	case MACHINE_POWEROFF:
		guest = true;
		reason = "guest-shutdown";
		c->status = "shutdown";
		break;
	case MACHINE_STOPPED:
		reason = c->host_quit ? "host-qmp-quit" : "host-signal";
		c->status = "shutdown";
		break;
	default:
		reason = "guest-panic";
		guest = true;
		c->status = "shutdown";
		break;
	}
	pthread_mutex_unlock(&c->lock);
	control_event(c->ctl, why == MACHINE_RESET ? "RESET" : "SHUTDOWN",
	              json_pack("{s:b, s:s}", "guest", guest, "reason", reason));
	return why;
}

void vmm_ctl_device_error(void *opaque, const char *device, const char *reason, const char *msg)
{
	struct vmm_ctl *c = opaque;

	if (c)
		control_event(c->ctl, "DEVICE_ERROR",
		              json_pack("{s:s, s:s, s:s}", "device", device, "reason", reason,
		                        "message", msg));
}

void vmm_ctl_stop(struct vmm_ctl *c)
{
	if (!c)
		return;
	control_stop(c->ctl);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

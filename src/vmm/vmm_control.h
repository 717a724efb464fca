/* vmm_control.h: vmstack-vm's --control socket: QMP-style commands and events for one VM. */
#ifndef VMSTACK_VMM_CONTROL_H
#define VMSTACK_VMM_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "machine.h"

/*
 * Call order, in the monitor's main thread:
 *	c = vmm_ctl_start(path, cfg)         before the first boot (NULL + err on failure)
 *	per boot: machine_start(m); vmm_ctl_attach(c, m); ... supervise ...;
 *	          why = vmm_ctl_detach(c, why, &host_reset); machine_stop/destroy(m)
 *	vmm_ctl_stop(c)                      at exit
 * Commands: query-status, stop, cont, system_reset, quit, query-cpus(-fast), query-memory,
 * query-block, query-net, query-stats (plus control.c's qmp_capabilities, query-version,
 * query-commands). Events: STOP, RESUME, RESET and SHUTDOWN ({"guest", "reason"} as QEMU).
 * Every vmm_ctl_* function accepts c == NULL (no --control) and then does nothing.
 */
struct vmm_ctl;

struct vmm_ctl *vmm_ctl_start(const char *path, const struct vm_config *cfg, char *err,
                              size_t errlen);
void vmm_ctl_attach(struct vmm_ctl *c, struct machine *m);
/* The machine stopped for `why`: sends RESET or SHUTDOWN and forgets the machine. Returns
 * the exit reason to act on (quit turns any reason into MACHINE_STOPPED); *host_reset is
 * true when the reset came from system_reset (restart even with --on-reboot exit). */
enum machine_exit vmm_ctl_detach(struct vmm_ctl *c, enum machine_exit why, bool *host_reset);
void vmm_ctl_stop(struct vmm_ctl *c);

/* machine_host.device_error: a DEVICE_ERROR event {device, reason, message}. Any thread;
 * opaque is the vmm_ctl (NULL: nothing). */
void vmm_ctl_device_error(void *opaque, const char *device, const char *reason, const char *msg);

#endif

/* vcpu.h: the per-vCPU thread: KVM_RUN loop, exit dispatch, fatal-exit register dump. */
#ifndef VMSTACK_VCPU_H
#define VMSTACK_VCPU_H

#include "machine.h"

/* Signal used to kick a vCPU out of KVM_RUN; install with vcpu_signals_init() first. */
#define VCPU_KICK_SIGNAL SIGUSR1

/* Installs the kick handler (process-wide, once, before any vCPU thread starts). */
int vcpu_signals_init(void);

/* Thread entry: runs until the machine stops. */
void *vcpu_thread(void *arg);

/* Interrupts a running vCPU so it sees machine->stopping. */
void vcpu_kick(struct vcpu *v);

/* Writes the register dump printed after a fatal exit. */
void vcpu_dump_state(struct vcpu *v);

#endif

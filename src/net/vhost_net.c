/* vhost_net.c: thin, checked wrappers of the vhost-net ioctls (Documentation: drivers/vhost). */
#include "vhost_net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vhost.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "guest_mem.h"

/* One ioctl; on failure the line "/dev/vhost-net: NAME: strerror" and -errno. */
static int vh_ioctl(struct vhost_net *vh, unsigned long req, const char *name, void *arg, char *err,
                    size_t errlen)
{
	if (ioctl(vh->fd, req, arg) == 0)
		return 0;
	int e = errno;
	snprintf(err, errlen, "%s: %s: %s", VHOST_NET_PATH, name, strerror(e));
	return -e;
}
#define VH_IOCTL(vh, req, arg, err, errlen) vh_ioctl(vh, req, #req, arg, err, errlen)

int vhost_net_open(struct vhost_net *vh, char *err, size_t errlen)
{
	int r;

	vh->features = 0;
	vh->fd = open(VHOST_NET_PATH, O_RDWR | O_CLOEXEC);
	if (vh->fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s — %s", VHOST_NET_PATH, strerror(e),
		         e == ENOENT   ? "modprobe vhost_net (or say vhost=off)"
		         : e == EACCES ? "run as root or give this user access to it "
		                         "(or say vhost=off)"
		                       : "check that the vhost_net module works (or say "
		                         "vhost=off)");
		return -e;
	}
	r = VH_IOCTL(vh, VHOST_SET_OWNER, NULL, err, errlen);
	if (r == 0)
		r = VH_IOCTL(vh, VHOST_GET_FEATURES, &vh->features, err, errlen);
	if (r < 0)
		vhost_net_close(vh);
	return r;
}

void vhost_net_close(struct vhost_net *vh)
{
	if (vh->fd >= 0)
		close(vh->fd);
	vh->fd = -1;
}

int vhost_net_set_features(struct vhost_net *vh, uint64_t features, char *err, size_t errlen)
{
	/* The guest's header goes to the tap as it is; no dirty log. */
	features &= vh->features & ~(1ull << VHOST_NET_F_VIRTIO_NET_HDR | 1ull << VHOST_F_LOG_ALL);
	return VH_IOCTL(vh, VHOST_SET_FEATURES, &features, err, errlen);
}

int vhost_net_set_mem(struct vhost_net *vh, const struct guest_mem *mem, char *err, size_t errlen)
{
	struct vhost_memory *t;
	int r;

	t = calloc(1, sizeof(*t) + mem->nregions * sizeof(t->regions[0]));
	if (!t) {
		snprintf(err, errlen, "%s: memory table: out of memory", VHOST_NET_PATH);
		return -ENOMEM;
	}
	t->nregions = mem->nregions;
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct gm_region *g = &mem->regions[i];
		t->regions[i] = (struct vhost_memory_region){
		    .guest_phys_addr = g->gpa,
		    .memory_size = g->size,
		    .userspace_addr = (uint64_t)(uintptr_t)(mem->host + g->offset),
		};
	}
	r = VH_IOCTL(vh, VHOST_SET_MEM_TABLE, t, err, errlen);
	free(t);
	return r;
}

int vhost_net_start_ring(struct vhost_net *vh, const struct vhost_ring *ring, char *err,
                         size_t errlen)
{
	struct vhost_vring_state num = {.index = ring->index, .num = ring->size};
	struct vhost_vring_state base = {.index = ring->index, .num = ring->base};
	struct vhost_vring_addr addr = {
	    .index = ring->index,
	    .desc_user_addr = (uint64_t)(uintptr_t)ring->desc,
	    .avail_user_addr = (uint64_t)(uintptr_t)ring->avail,
	    .used_user_addr = (uint64_t)(uintptr_t)ring->used,
	};
	struct vhost_vring_file kick = {.index = ring->index, .fd = ring->kick_fd};
	struct vhost_vring_file call = {.index = ring->index, .fd = ring->call_fd};
	struct vhost_vring_file verr = {.index = ring->index, .fd = ring->err_fd};
	struct vhost_vring_file backend = {.index = ring->index, .fd = ring->backend_fd};
	int r;

	r = VH_IOCTL(vh, VHOST_SET_VRING_NUM, &num, err, errlen);
	if (r == 0)
		r = VH_IOCTL(vh, VHOST_SET_VRING_BASE, &base, err, errlen);
	if (r == 0)
		r = VH_IOCTL(vh, VHOST_SET_VRING_ADDR, &addr, err, errlen);
	if (r == 0)
		r = VH_IOCTL(vh, VHOST_SET_VRING_KICK, &kick, err, errlen);
	if (r == 0)
		r = VH_IOCTL(vh, VHOST_SET_VRING_CALL, &call, err, errlen);
	if (r == 0 && ring->err_fd >= 0)
		r = VH_IOCTL(vh, VHOST_SET_VRING_ERR, &verr, err, errlen);
	if (r == 0)
		r = VH_IOCTL(vh, VHOST_NET_SET_BACKEND, &backend, err, errlen);
	return r;
}

int vhost_net_set_call(struct vhost_net *vh, unsigned index, int call_fd, char *err, size_t errlen)
{
	struct vhost_vring_file call = {.index = index, .fd = call_fd};

	return VH_IOCTL(vh, VHOST_SET_VRING_CALL, &call, err, errlen);
}

int vhost_net_stop_ring(struct vhost_net *vh, unsigned index, uint16_t *base, char *err,
                        size_t errlen)
{
	struct vhost_vring_file backend = {.index = index, .fd = -1};
	struct vhost_vring_state st = {.index = index};
	int r;

	r = VH_IOCTL(vh, VHOST_NET_SET_BACKEND, &backend, err, errlen);
	if (r == 0)
		r = VH_IOCTL(vh, VHOST_GET_VRING_BASE, &st, err, errlen);
	if (r == 0)
		*base = (uint16_t)st.num;
	return r;
}

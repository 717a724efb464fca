/*
 * netload.c: the in-guest TCP workload of bench/net (static; runs from the tools disk).
 *
 *   netload send HOST PORT SECONDS   guest -> host: write for SECONDS, shut down the
 *                                    sending side, wait for the host to close (so every
 *                                    byte has arrived)
 *   netload recv HOST PORT           host -> guest: read until the host closes, then close
 *
 * HOST is an IPv4 address. The connect is retried for a while (the link may still be
 * coming up). Prints one line, timed in the guest from connect to the end (MB = 10^6 B):
 *   NETLOAD mode=send|recv bytes=N secs=S MBps=X
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (128 * 1024) /* bytes per write/read: few syscalls, each costly here */

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* Connects to host:port, retrying for up to 30 s. */
static int connect_to(const char *host, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	double t0 = now();

	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "netload: bad address %s\n", host);
		exit(2);
	}
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0)
			die("socket");
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		if (now() - t0 > 30)
			die("connect");
		sleep(1);
	}
}

int main(int argc, char **argv)
{
	static char buf[CHUNK];
	unsigned long long bytes = 0;
	double t0, secs;
	int fd, sending;

	if (argc < 4 || (strcmp(argv[1], "send") && strcmp(argv[1], "recv")) ||
	    (!strcmp(argv[1], "send") && argc != 5)) {
		fprintf(stderr, "usage: netload send HOST PORT SECONDS | recv HOST PORT\n");
		return 2;
	}
	sending = !strcmp(argv[1], "send");
	fd = connect_to(argv[2], atoi(argv[3]));
	t0 = now();
	if (sending) {
		double limit = atof(argv[4]);

		memset(buf, 0x5a, sizeof(buf));
		while (now() - t0 < limit) {
			ssize_t n = write(fd, buf, sizeof(buf));

			if (n < 0)
				die("write");
			bytes += n;
		}
		if (shutdown(fd, SHUT_WR))
			die("shutdown");
		/* The host closes once it has read everything up to our FIN. */
		while (read(fd, buf, sizeof(buf)) > 0)
			;
	} else {
		for (;;) {
			ssize_t n = read(fd, buf, sizeof(buf));

			if (n < 0)
				die("read");
			if (n == 0)
				break;
			bytes += n;
		}
	}
	secs = now() - t0;
	close(fd);
	printf("NETLOAD mode=%s bytes=%llu secs=%.3f MBps=%.2f\n", argv[1], bytes, secs,
	       bytes / secs / 1e6);
	return 0;
}

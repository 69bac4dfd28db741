/*
 * NAME
 *	writevbench - the bare cost of writing frames to many sockets: the fanout's reference
 * DESCRIPTION
 *	writevbench --conns N --frames M --size B
 *
 *	Opens N loopback TCP connections (127.0.0.1); a reader thread drains them all (epoll) and
 *	throws the bytes away.  The writer thread then writes M frames to every connection, each
 *	one writev of a WebSocket binary frame header (2..10 bytes) plus B payload bytes (blocking
 *	sockets, one syscall per frame per connection, the least a fanout can do per frame).
 *	Prints one line: conns frames size written cpu_s us_per_frame (writer thread CPU, user +
 *	system, per frame written to one connection) wall_s.
 * DIAGNOSTICS
 *	Exit 0, or 1 on a socket error (message on stderr), 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 10000

static int rfd[MAX_CONNS], wfd[MAX_CONNS], n_conns;
static atomic_bool stop;

static void *reader(void *arg)
{
	int ep = *(int *)arg;
	static char buf[1 << 16];
	struct epoll_event ev[64];
	while (!atomic_load(&stop)) {
		int n = epoll_wait(ep, ev, 64, 100);
		for (int i = 0; i < n; i++)
			while (read(ev[i].data.fd, buf, sizeof buf) > 0) {
			}
	}
	return NULL;
}

static double cpu_thread(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "conns", 1, 0, 'c' }, { "frames", 1, 0, 'f' }, { "size", 1, 0, 's' },
					    { 0, 0, 0, 0 } };
	long frames = 20000, size = 1500;
	int o;
	n_conns = 100;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'c': n_conns = atoi(optarg); break;
		case 'f': frames = atol(optarg); break;
		case 's': size = atol(optarg); break;
		default: n_conns = 0; break;
		}
	}
	if (n_conns < 1 || n_conns > MAX_CONNS || frames < 1 || size < 1 || size > (16l << 20)) {
		fprintf(stderr, "usage: writevbench --conns N --frames M --size B\n");
		return 2;
	}
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1024) < 0 ||
	    getsockname(ls, (struct sockaddr *)&a, &al) < 0) {
		perror("writevbench: listen");
		return 1;
	}
	int ep = epoll_create1(0);
	for (int i = 0; i < n_conns; i++) {
		wfd[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (wfd[i] < 0 || connect(wfd[i], (struct sockaddr *)&a, sizeof a) < 0 ||
		    (rfd[i] = accept(ls, NULL, NULL)) < 0) {
			perror("writevbench: connect");
			return 1;
		}
		int one = 1;
		setsockopt(wfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = rfd[i] };
		/* The reader drains non-blocking; the writer blocks when a socket is full. */
		if (fcntl(rfd[i], F_SETFL, O_NONBLOCK) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, rfd[i], &ev) < 0) {
			perror("writevbench: epoll");
			return 1;
		}
	}
	pthread_t th;
	pthread_create(&th, NULL, reader, &ep);
	uint8_t hdr[10];
	size_t hn;
	hdr[0] = 0x82; /* FIN + binary */
	if (size < 126) {
		hdr[1] = (uint8_t)size;
		hn = 2;
	} else if (size < 65536) {
		hdr[1] = 126, hdr[2] = (uint8_t)(size >> 8), hdr[3] = (uint8_t)size;
		hn = 4;
	} else {
		hdr[1] = 127;
		for (int i = 0; i < 8; i++)
			hdr[2 + i] = (uint8_t)((uint64_t)size >> (56 - 8 * i));
		hn = 10;
	}
	uint8_t *payload = malloc((size_t)size);
	memset(payload, 0xa5, (size_t)size);
	struct iovec iov[2] = { { hdr, hn }, { payload, (size_t)size } };
	size_t total = hn + (size_t)size;
	double c0 = cpu_thread(), w0 = wall();
	uint64_t written = 0;
	for (long f = 0; f < frames; f++)
		for (int i = 0; i < n_conns; i++) {
			ssize_t n = writev(wfd[i], iov, 2);
			if (n < 0) {
				perror("writevbench: writev");
				return 1;
			}
			/* A short write on a blocking socket: finish the frame with plain writes. */
			size_t done = (size_t)n;
			while (done < total) {
				size_t off = done < hn ? 0 : done - hn;
				const void *p = done < hn ? hdr + done : payload + off;
				size_t left = done < hn ? hn - done : (size_t)size - off;
				ssize_t m = write(wfd[i], p, left);
				if (m < 0) {
					perror("writevbench: write");
					return 1;
				}
				done += (size_t)m;
			}
			written++;
		}
	double cpu = cpu_thread() - c0, w = wall() - w0;
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	printf("conns=%d frames=%ld size=%ld written=%llu cpu_s=%.3f us_per_frame=%.3f wall_s=%.3f\n", n_conns, frames,
	       size, (unsigned long long)written, cpu, cpu * 1e6 / (double)written, w);
	return 0;
}

/*
 * NAME
 *	bt_lock - one relay per data directory, instance name and port (see bt_lock.h)
 */
#include "bt_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int take(int fd)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES)
		return -EAGAIN;
	if (errno != EINVAL)
		return -errno;
	/* A kernel without OFD locks (before 3.15): flock has the same owner (the open file). */
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* The holder's line; it may be between its truncate and its write: a few tries. */
static void read_holder(int fd, char *holder, size_t cap)
{
	if (!holder || !cap)
		return;
	holder[0] = 0;
	for (int i = 0; i < 20; i++) {
		ssize_t n = pread(fd, holder, cap - 1, 0);
		if (n > 0) {
			holder[n] = 0;
			holder[strcspn(holder, "\n")] = 0;
			return;
		}
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	holder[0] = 0;
}

int bt_lock_file(const char *path, const char *info, char *holder, size_t cap)
{
	if (holder && cap)
		holder[0] = 0;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0)
		return -errno;
	int rc = take(fd);
	if (rc < 0) {
		if (rc == -EAGAIN)
			read_holder(fd, holder, cap);
		close(fd);
		return rc;
	}
	if (info) {
		size_t n = strlen(info);
		if (ftruncate(fd, 0) < 0 || pwrite(fd, info, n, 0) != (ssize_t)n || pwrite(fd, "\n", 1, (off_t)n) != 1) {
			rc = -errno;
			close(fd);
			return rc;
		}
	}
	return fd;
}

int bt_lock_file_wait(const char *path, const char *info, unsigned wait_ms, void (*tick)(void), char *holder,
		      size_t cap)
{
	for (unsigned waited = 0;; waited += 100) {
		if (tick)
			tick();
		int fd = bt_lock_file(path, info, holder, cap);
		if (fd != -EAGAIN || waited >= wait_ms)
			return fd;
		nanosleep(&(struct timespec){ 0, 100 * 1000 * 1000 }, NULL);
	}
}

long bt_lock_holder_pid(const char *holder)
{
	const char *p = holder ? strstr(holder, "pid=") : NULL;
	return p ? strtol(p + 4, NULL, 10) : 0;
}

int bt_lock_parse_bind(const char *s, char *host, size_t hcap, char *port, size_t pcap)
{
	char hbuf[256], pbuf[16];
	if (!host) {
		host = hbuf;
		hcap = sizeof hbuf;
	}
	if (!port) {
		port = pbuf;
		pcap = sizeof pbuf;
	}
	const char *colon;
	if (!s)
		return -1;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= hcap)
			return -1;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = 0;
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= hcap)
			return -1;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
	}
	size_t pl = strlen(colon + 1);
	if (!pl || pl >= pcap || pl > 5)
		return -1;
	long v = 0;
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (*p - '0');
	}
	if (v > 65535)
		return -1;
	memcpy(port, colon + 1, pl + 1);
	return (int)v;
}

static socklen_t port_addr(int port, struct sockaddr_un *a)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "baton-port-%d", port);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

pid_t bt_lock_port_holder(int port)
{
	struct sockaddr_un a;
	socklen_t len = port_addr(port, &a);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	pid_t pid;
	if (connect(fd, (struct sockaddr *)&a, len) == 0) {
		struct ucred uc;
		socklen_t ul = sizeof uc;
		pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) == 0 && uc.pid > 0 ? uc.pid : -1;
	} else {
		/* ECONNREFUSED: nobody listens under that name.  EAGAIN: its backlog is full. */
		pid = errno == ECONNREFUSED || errno == ENOENT ? 0 : -1;
	}
	close(fd);
	return pid;
}

int bt_lock_port(int port, pid_t *holder)
{
	if (holder)
		*holder = 0;
	struct sockaddr_un a;
	socklen_t len = port_addr(port, &a);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, len) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		if (e == EADDRINUSE && holder) {
			pid_t p = bt_lock_port_holder(port);
			*holder = p > 0 ? p : 0;
		}
		return -e;
	}
	return fd;
}

void bt_lock_port_drain(int fd)
{
	if (fd < 0)
		return;
	int c;
	while ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
		close(c);
}

int bt_lock_probe_bind(const char *bind_s)
{
	char host[256], port[16];
	if (bt_lock_parse_bind(bind_s, host, sizeof host, port, sizeof port) < 0)
		return -EINVAL;
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = host[0] ? AF_UNSPEC : AF_INET; /* as the fanouts resolve it */
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0 || !res)
		return -EINVAL;
	int rc = -EINVAL;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		int one = 1;
		/* SO_REUSEADDR: connections in TIME_WAIT do not count, listeners do. */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		rc = bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : -errno;
		close(fd);
		break; /* the address a fanout binds first (with SO_REUSEPORT it would join a listener) */
	}
	freeaddrinfo(res);
	return rc;
}

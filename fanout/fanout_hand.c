/*
 * NAME
 *	fanout_hand - a restarting fanout hands its open consumer connections to another fanout
 * DESCRIPTION
 *	Every fanout listens on a Unix SOCK_SEQPACKET socket, RELAY_SHM_DIR/baton-NAME-fanout-I.hand
 *	(I its slot).  On SIGHUP (batonctl restart fanout, the supervisor's way to restart one) a
 *	fanout, instead of closing its consumers with 1012:
 *	  1. picks another running fanout (the one with the fewest consumers) and connects to it;
 *	     there is none, or it does not answer: the plain restart (1012, consumers resume from
 *	     their cursor);
 *	  2. closes its listeners, so new connections go to the other fanouts (SO_REUSEPORT);
 *	  3. stops queueing to its consumers and, as each one's output drains into the kernel,
 *	     passes its socket (SCM_RIGHTS) with its state ({after, ip, ua, cursor, since_ms,
 *	     peer}: one message, one descriptor) and forgets it (bt_ws_detach: no close frame);
 *	  4. exits once every consumer is handed, closing with 1012 those still not drained after
 *	     HAND_DEADLINE_MS (a consumer that does not read): the supervisor starts it again (exit
 *	     0), or compose's restart: on-failure does (exit 3 when RELAY_SPAWN_STAGES=false).
 *	The receiver wraps the socket in a server WebSocket connection already open and serves it
 *	from after + 1, from the ring or RocksDB like any consumer: the consumer sees neither a
 *	close nor a gap nor a duplicate (the TCP connection never changed; the frames queued by the
 *	old fanout were all written before the hand-over).  A fanout that is itself stopping or
 *	handing refuses (its socket is closed first).
 * DIAGNOSTICS
 *	HANDED_OUT / HANDED_IN counters; a failed hand-over is logged and the consumer's TCP
 *	connection ends (it resumes from its cursor).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "fanout.h"

#define HAND_DEADLINE_MS 10000
#define HAND_MSG_MAX 4096
#define HAND_STEP_MS 5

static int lfd = -1;
static struct event *accept_ev, *step_ev;
static char my_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static int out_fd = -1;           /* to the receiving fanout while handing */
static uint64_t hand_deadline_ms;
static volatile sig_atomic_t hup;
static bool handed; /* our consumers went to another fanout: exit to be started again */

static int path_of(int slot, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/baton-%s-fanout-%d.hand", bt_cfg.shm_dir, bt_cfg.name, slot);
	return n > 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

/* ---- receiving ---- */

struct conn {
	int fd;
	struct event *ev;
};

static void conn_free(struct conn *c)
{
	event_free(c->ev);
	close(c->fd);
	free(c);
}

static void on_conn(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	for (;;) {
		char buf[HAND_MSG_MAX + 1];
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int))];
		} cm;
		struct iovec iov = { buf, HAND_MSG_MAX };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof cm.b };
		ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			conn_free(c); /* the sender is done (or gone) */
			return;
		}
		int sock = -1;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h))
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS && h->cmsg_len == CMSG_LEN(sizeof(int)))
				memcpy(&sock, CMSG_DATA(h), sizeof sock);
		buf[n] = 0;
		json_t *st = json_loads(buf, 0, NULL);
		if (sock < 0 || !json_is_object(st) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || fan.stopping ||
		    out_fd >= 0 /* handing ourselves */) {
			BT_LOG_EVERY(BT_LOG_WARN, "hand-over: a malformed message or a descriptor we cannot take: dropped");
			if (sock >= 0)
				close(sock);
		} else if (fan_sub_adopt(sock, st) < 0) {
			BT_LOG_EVERY(BT_LOG_ERROR, "hand-over: out of memory for a consumer");
		}
		json_decref(st);
	}
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (c < 0)
		return;
	struct conn *cn = calloc(1, sizeof *cn);
	if (!cn || !(cn->ev = event_new(fan.base, c, EV_READ | EV_PERSIST, on_conn, cn)) || event_add(cn->ev, NULL) < 0) {
		if (cn && cn->ev)
			event_free(cn->ev);
		free(cn);
		close(c);
		return;
	}
	cn->fd = c;
	BT_INFO("hand-over: another fanout is handing us its consumers");
}

static void on_hup(int sig)
{
	hup = 1;
}

int fan_hand_init(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (path_of(bt_proc.index, my_path, sizeof my_path) < 0)
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, my_path, sizeof sa.sun_path);
	unlink(my_path); /* a predecessor's (the slot is ours: claimed in bt_proc_init) */
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 8) < 0) {
		int e = -errno;
		if (lfd >= 0)
			close(lfd);
		lfd = -1;
		return e;
	}
	accept_ev = event_new(fan.base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
	if (!accept_ev || event_add(accept_ev, NULL) < 0)
		return -ENOMEM;
	struct sigaction sa2 = { .sa_handler = on_hup };
	sigemptyset(&sa2.sa_mask);
	sigaction(SIGHUP, &sa2, NULL);
	return 0;
}

static void stop_listening(void)
{
	if (accept_ev) {
		event_free(accept_ev);
		accept_ev = NULL;
	}
	if (lfd >= 0) {
		close(lfd);
		lfd = -1;
		unlink(my_path);
	}
}

void fan_hand_fini(void)
{
	stop_listening();
	if (step_ev)
		event_free(step_ev);
	step_ev = NULL;
	if (out_fd >= 0)
		close(out_fd);
	out_fd = -1;
}

/* ---- handing ---- */

static int send_one(int fd, json_t *st, void *arg)
{
	char *txt = json_dumps(st, JSON_COMPACT);
	if (!txt || strlen(txt) > HAND_MSG_MAX) {
		free(txt);
		return -EMSGSIZE;
	}
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	memset(&cm, 0, sizeof cm);
	struct iovec iov = { txt, strlen(txt) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof cm.b };
	struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof fd);
	ssize_t n = sendmsg(out_fd, &mh, MSG_NOSIGNAL); /* blocking, bounded by SO_SNDTIMEO */
	free(txt);
	return n == (ssize_t)iov.iov_len ? 0 : -EPIPE;
}

static void on_step(evutil_socket_t fd, short what, void *arg)
{
	unsigned left = fan_sub_hand_step(send_one, NULL);
	if (left && bt_now_ms() < hand_deadline_ms) {
		struct timeval tv = { 0, HAND_STEP_MS * 1000 };
		event_add(step_ev, &tv);
		return;
	}
	if (left)
		BT_WARN("hand-over: %u consumers did not drain in %d s: closed (1012), they resume from their cursor",
			left, HAND_DEADLINE_MS / 1000);
	BT_INFO("hand-over done: exiting to be restarted");
	handed = true;
	close(out_fd);
	out_fd = -1;
	bt_proc_stop = 1; /* the tick closes what is left and ends the loop */
}

/* The running fanout (not us) with the fewest consumers whose hand-over socket answers. */
static int connect_peer(int *peer_slot)
{
	int order[BT_MAX_FANOUT], n = 0;
	uint64_t load[BT_MAX_FANOUT];
	uint64_t now = bt_now_ms();
	for (int i = 0; i < BT_MAX_FANOUT; i++) {
		struct bt_stats_page *p = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(bt_pipe_slot(BT_ROLE_FANOUT, i)));
		if (i == bt_proc.index || !p || !bt_pid_alive(atomic_load(&p->pid)))
			continue;
		uint64_t hb = atomic_load(&p->heartbeat_ms);
		if (hb > now || now - hb > 2000)
			continue; /* not beating: it could not serve them */
		load[i] = bt_stat_get(p, BT_STAT_CONSUMERS);
		int j = n++;
		while (j > 0 && load[order[j - 1]] > load[i]) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = i;
	}
	for (int k = 0; k < n; k++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (path_of(order[k], sa.sun_path, sizeof sa.sun_path) < 0)
			continue;
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (s < 0)
			continue;
		struct timeval tv = { 1, 0 };
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) {
			*peer_slot = order[k];
			return s;
		}
		close(s);
	}
	return -1;
}

void fan_hand_tick(void)
{
	if (!hup || fan.stopping || out_fd >= 0)
		return;
	hup = 0;
	int peer = -1;
	out_fd = connect_peer(&peer);
	stop_listening(); /* no one hands to us any more */
	if (out_fd < 0) {
		BT_INFO("SIGHUP: no other fanout to hand our %u consumers to: a plain restart", fan_sub_count());
		bt_proc_stop = 1;
		return;
	}
	BT_INFO("SIGHUP: handing our %u consumers to fanout %d", fan_sub_count(), peer);
	fan_stop_listening();
	fan_sub_hand_all();
	hand_deadline_ms = bt_now_ms() + HAND_DEADLINE_MS;
	step_ev = evtimer_new(fan.base, on_step, NULL);
	on_step(-1, 0, NULL);
}

int fan_hand_exit_code(void)
{
	/* Under compose (RELAY_SPAWN_STAGES=false) `restart: on-failure` restarts only a non-zero
	   exit: 3 says "handed over, start me again".  Our supervisor restarts any exit but 2. */
	return handed && !bt_cfg.spawn_stages ? 3 : 0;
}

/*
 * NAME
 *	bt_ctl - ZeroMQ control messages (see bt_ctl.h)
 * DESCRIPTION
 *	ROUTER messages are [identity][empty][json] when the peer is REQ.  ZMQ_FD is edge
 *	triggered: after any send or receive the socket must be drained until ZMQ_EVENTS says
 *	nothing is readable, or a wakeup is lost; bt_ctl_srv_poll does that.
 */
#include "bt_ctl.h"
#include "bt_log.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

struct bt_ctl_srv {
	void *sock;
	char path[512]; /* the ipc socket file, removed on free */
	struct event *ev;
	bt_ctl_fn *fn;
	void *arg;
};

struct bt_ctl_req {
	struct bt_ctl_srv *srv;
	size_t id_len;
	unsigned char id[256];
};

static void *ctx;

void *bt_ctl_context(void)
{
	if (!ctx)
		ctx = zmq_ctx_new();
	return ctx;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	bt_ctl_srv_poll(arg);
}

struct bt_ctl_srv *bt_ctl_srv_new(struct event_base *base, const char *endpoint, bt_ctl_fn *fn, void *arg)
{
	struct bt_ctl_srv *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->sock = zmq_socket(bt_ctl_context(), ZMQ_ROUTER);
	int linger = 0;
	zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
	int64_t maxmsg = BT_CTL_MAX;
	zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
	if (strncmp(endpoint, "ipc://", 6) == 0) {
		unlink(endpoint + 6); /* a stale socket file from a killed predecessor */
		snprintf(s->path, sizeof s->path, "%s", endpoint + 6);
	}
	if (zmq_bind(s->sock, endpoint) != 0) {
		BT_ERR("zmq bind %s: %s", endpoint, zmq_strerror(errno));
		zmq_close(s->sock);
		free(s);
		return NULL;
	}
	s->fn = fn;
	s->arg = arg;
	if (base) {
		int fd = bt_ctl_srv_fd(s);
		s->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, s);
		event_add(s->ev, NULL);
		/* Messages may already be queued: the edge has passed. */
		event_active(s->ev, EV_READ, 0);
	}
	return s;
}

int bt_ctl_srv_fd(struct bt_ctl_srv *s)
{
	int fd = -1;
	size_t sz = sizeof fd;
	zmq_getsockopt(s->sock, ZMQ_FD, &fd, &sz);
	return fd;
}

int bt_ctl_srv_poll(struct bt_ctl_srv *s)
{
	int handled = 0;
	for (;;) {
		int events = 0;
		size_t sz = sizeof events;
		if (zmq_getsockopt(s->sock, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN))
			break;
		/* Read all parts: identity, empty delimiter, body. */
		struct bt_ctl_req *req = calloc(1, sizeof *req);
		if (!req)
			break;
		req->srv = s;
		zmq_msg_t parts[3];
		int n = 0;
		int more = 1;
		while (more) {
			zmq_msg_t m;
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, s->sock, ZMQ_DONTWAIT) < 0) {
				zmq_msg_close(&m);
				break;
			}
			more = zmq_msg_more(&m);
			if (n < 3)
				parts[n++] = m;
			else
				zmq_msg_close(&m);
		}
		json_t *msg = NULL;
		if (n == 3 && zmq_msg_size(&parts[0]) <= sizeof req->id) {
			req->id_len = zmq_msg_size(&parts[0]);
			memcpy(req->id, zmq_msg_data(&parts[0]), req->id_len);
			json_error_t je;
			msg = json_loadb(zmq_msg_data(&parts[2]), zmq_msg_size(&parts[2]), 0, &je);
		}
		for (int i = 0; i < n; i++)
			zmq_msg_close(&parts[i]);
		if (!msg || !json_is_object(msg)) {
			BT_LOG_EVERY(BT_LOG_WARN, "control: dropped a malformed message (%d parts)", n);
			if (n == 3)
				bt_ctl_reply(req, json_pack("{s:s}", "error", "BadRequest"));
			else
				free(req);
			json_decref(msg);
			continue;
		}
		s->fn(s->arg, req, msg);
		json_decref(msg);
		handled++;
	}
	return handled;
}

void bt_ctl_reply(struct bt_ctl_req *req, json_t *reply)
{
	struct bt_ctl_srv *s = req->srv;
	char *txt = json_dumps(reply ? reply : json_object(), JSON_COMPACT);
	json_decref(reply);
	if (txt) {
		zmq_send(s->sock, req->id, req->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
		zmq_send(s->sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
		zmq_send(s->sock, txt, strlen(txt), ZMQ_DONTWAIT);
		free(txt);
	}
	free(req);
	if (s->ev)
		event_active(s->ev, EV_READ, 0); /* a send can consume the edge */
}

void bt_ctl_srv_free(struct bt_ctl_srv **ps)
{
	struct bt_ctl_srv *s = *ps;
	if (!s)
		return;
	if (s->ev)
		event_free(s->ev);
	zmq_close(s->sock);
	if (s->path[0])
		unlink(s->path);
	free(s);
	*ps = NULL;
}

json_t *bt_ctl_call(const char *endpoint, json_t *req, int timeout_ms)
{
	char *txt = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!txt)
		return NULL;
	void *sock = zmq_socket(bt_ctl_context(), ZMQ_REQ);
	int linger = 0;
	zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
	zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
	zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
	int64_t maxmsg = 16 << 20;
	zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
	json_t *reply = NULL;
	if (zmq_connect(sock, endpoint) == 0 && zmq_send(sock, txt, strlen(txt), 0) >= 0) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, 0) >= 0) {
			json_error_t je;
			reply = json_loadb(zmq_msg_data(&m), zmq_msg_size(&m), 0, &je);
		}
		zmq_msg_close(&m);
	}
	free(txt);
	zmq_close(sock);
	return reply;
}

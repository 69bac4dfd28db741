/*
 * NAME
 *	bt_ctl - ZeroMQ control messages (JSON objects, one per message)
 * DESCRIPTION
 *	Control traffic is small and rare, so it is JSON (jansson) over ZeroMQ: a server binds a
 *	ROUTER socket and may answer later (asynchronously) through a bt_ctl_req token; a client
 *	makes one REQ round trip with a timeout.  Endpoints are ipc:// paths from
 *	bt_params_ipc().  Messages over BT_CTL_MAX bytes are refused before decoding.  The message
 *	table is in docs/ctl.md.
 *
 *	A server can be driven by a libevent loop (bt_ctl_srv_new with a base) or polled by a
 *	plain loop (base NULL, then bt_ctl_srv_poll()).
 * DIAGNOSTICS
 *	Undecodable or oversized messages are logged once per second and dropped.
 */
#ifndef BT_CTL_H
#define BT_CTL_H
#include <jansson.h>

#define BT_CTL_MAX 65536

struct event_base;
struct bt_ctl_srv;
struct bt_ctl_req;

/* Handler: msg is borrowed; answer exactly once with bt_ctl_reply (now or later). */
typedef void bt_ctl_fn(void *arg, struct bt_ctl_req *req, json_t *msg);

struct bt_ctl_srv *bt_ctl_srv_new(struct event_base *base, const char *endpoint, bt_ctl_fn *fn, void *arg);
int  bt_ctl_srv_poll(struct bt_ctl_srv *s);          /* handle pending messages without blocking */
int  bt_ctl_srv_fd(struct bt_ctl_srv *s);            /* ZMQ_FD, for poll()-based loops */
void bt_ctl_srv_free(struct bt_ctl_srv **s);
/* Sends reply (steals the reference) and frees req. */
void bt_ctl_reply(struct bt_ctl_req *req, json_t *reply);
/* One REQ/REP round trip; returns an owned reply or NULL on timeout/error. Steals req. */
json_t *bt_ctl_call(const char *endpoint, json_t *req, int timeout_ms);
void *bt_ctl_context(void);                          /* the process's zmq context */
#endif

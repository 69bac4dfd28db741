/*
 * NAME
 *	fanout_xrpc - the HTTP routes of the public port and requestCrawl forwarding
 * DESCRIPTION
 *	Routes: subscribeRepos (fanout_sub.c), requestCrawl (forwarded to the ingest process
 *	over ZeroMQ), the sync read queries listHosts, getHostStatus, listRepos, getRepoStatus,
 *	getLatestCommit and getRepo (fanout_repo.c), /_health and /xrpc/_health
 *	(fanout_health.c), GET / (banner); HEAD for /, /_health and /xrpc/_health.  /metrics is
 *	on its own listener (fanout_metrics.c), not here.  XRPC GETs and requestCrawl carry
 *	Access-Control-Allow-Origin: *, and OPTIONS on /xrpc/ answers the CORS preflight.
 *	Other /xrpc/ methods answer 501 MethodNotImplemented, anything else 404 NotFound.
 *	Every answer carries the Server header (set once on the HTTP server).
 *
 *	/admin/ routes are fanout_admin.c's.
 *
 *	requestCrawl may take the ingest seconds (it probes the host), so the round trip runs
 *	on a small pool of worker threads and never blocks the loop; so does every other
 *	control round trip of an HTTP request (fan_ctl_async, used by the admin routes).  The loop hands a job
 *	(owned by it until written) to the workers through a pipe; a worker does the
 *	bt_ctl_call and hands the job back through a second pipe, whose read end the loop
 *	watches; the loop answers the request.  Nothing else is shared, so no lock: a job
 *	belongs to exactly one thread at a time, and the pipe write/read orders the memory.
 *	At most MAX_INFLIGHT jobs exist at once; more get 503.
 * DIAGNOSTICS
 *	Bad JSON or a missing hostname: 400 InvalidRequest.  The ingest's refusal is passed
 *	on with its status and error.  No answer within CRAWL_TIMEOUT_MS: 503.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "bt_ctl.h"
#include "bt_http.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "fanout.h"

#define N_WORKERS 2
#define MAX_INFLIGHT 64
#define CRAWL_TIMEOUT_MS 15000

/* One control round trip run by a worker: the loop fills it, a worker sets reply, the loop
   calls done.  Owned by exactly one thread at a time (handed over through the pipes). */
struct ctl_job {
	struct bt_http_req *req; /* only the loop thread touches it */
	char ep[700];
	json_t *msg;             /* owned; the worker sends it (bt_ctl_call takes it) */
	int timeout_ms;
	json_t *reply;           /* set by the worker: owned reply, NULL on timeout */
	fan_ctl_done_fn *done;
	void *arg;
};

static int job_pipe[2] = { -1, -1 };  /* loop -> workers */
static int done_pipe[2] = { -1, -1 }; /* workers -> loop */
static struct event *done_ev;
static unsigned inflight;
static bool workers_started;

void fan_xrpc_json(struct bt_http_req *req, int status, json_t *j)
{
	char *txt = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!txt) {
		bt_http_respond(req, 500, "application/json", "{\"error\":\"InternalServerError\"}", 31);
		return;
	}
	bt_http_respond(req, status, "application/json", txt, strlen(txt));
	free(txt);
}

void fan_xrpc_error(struct bt_http_req *req, int status, const char *error, const char *message)
{
	json_t *j = json_object();
	json_object_set_new(j, "error", json_string(error));
	if (message)
		json_object_set_new(j, "message", json_string(message));
	fan_xrpc_json(req, status, j);
}

static void *worker(void *arg)
{
	for (;;) {
		struct ctl_job *job;
		ssize_t n = read(job_pipe[0], &job, sizeof job);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof job || !job)
			return NULL;
		job->reply = bt_ctl_call(job->ep, job->msg, job->timeout_ms);
		job->msg = NULL;
		while (write(done_pipe[1], &job, sizeof job) < 0 && errno == EINTR)
			;
	}
}

/* Turns the ingest's reply into the HTTP answer. */
static void answer_crawl(struct bt_http_req *req, json_t *r, void *arg)
{
	if (!r) {
		bt_stat_add(bt_proc.stats, BT_STAT_CRAWLS_REFUSED, 1);
		fan_xrpc_error(req, 503, "ServiceUnavailable", "the crawler did not answer in time");
		return;
	}
	if (json_is_true(json_object_get(r, "ok"))) {
		bt_stat_add(bt_proc.stats, BT_STAT_CRAWLS, 1);
		bt_http_respond(req, 200, "application/json", "{}", 2);
	} else {
		bt_stat_add(bt_proc.stats, BT_STAT_CRAWLS_REFUSED, 1);
		json_int_t st = json_integer_value(json_object_get(r, "status"));
		if (st < 400 || st > 599)
			st = 400;
		const char *err = json_string_value(json_object_get(r, "error"));
		const char *msg = json_string_value(json_object_get(r, "message"));
		fan_xrpc_error(req, (int)st, err && *err ? err : "InvalidRequest", msg);
	}
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_job *job;
	while (read(done_pipe[0], &job, sizeof job) == (ssize_t)sizeof job) {
		job->done(job->req, job->reply, job->arg);
		json_decref(job->reply);
		free(job);
		inflight--;
	}
}

int fan_ctl_async(struct bt_http_req *req, const char *what, json_t *msg, int timeout_ms, fan_ctl_done_fn *done,
		  void *arg)
{
	if (!msg)
		return -ENOMEM;
	if (!workers_started || inflight >= MAX_INFLIGHT || fan.stopping) {
		json_decref(msg);
		return -EBUSY;
	}
	struct ctl_job *job = calloc(1, sizeof *job);
	if (!job) {
		json_decref(msg);
		return -ENOMEM;
	}
	job->req = req;
	bt_params_ipc(what, job->ep, sizeof job->ep);
	job->msg = msg;
	job->timeout_ms = timeout_ms;
	job->done = done;
	job->arg = arg;
	if (write(job_pipe[1], &job, sizeof job) != (ssize_t)sizeof job) {
		json_decref(msg);
		free(job);
		return -EIO;
	}
	inflight++;
	return 0;
}

void fan_ctl_answer(struct bt_http_req *req, json_t *r, const char *what)
{
	if (!r) {
		char m[96];
		snprintf(m, sizeof m, "the %s process did not answer in time", what);
		fan_xrpc_error(req, 503, "ServiceUnavailable", m);
		return;
	}
	const char *err = json_string_value(json_object_get(r, "error"));
	if (err || json_is_false(json_object_get(r, "ok"))) {
		json_int_t st = json_integer_value(json_object_get(r, "status"));
		if (st < 400 || st > 599)
			st = 400;
		const char *msg = json_string_value(json_object_get(r, "message"));
		fan_xrpc_error(req, (int)st, err && *err ? err : "InvalidRequest", msg);
		return;
	}
	fan_xrpc_json(req, 200, json_incref(r));
}

static void request_crawl(struct bt_http_req *req)
{
	size_t n;
	const uint8_t *body = bt_http_req_body(req, &n);
	json_error_t je;
	json_t *j = json_loadb((const char *)body, n, 0, &je);
	const char *host = j ? json_string_value(json_object_get(j, "hostname")) : NULL;
	if (!host || !*host || strlen(host) > 253) {
		json_decref(j);
		fan_xrpc_error(req, 400, "InvalidRequest", "body must be JSON {\"hostname\": \"...\"}");
		return;
	}
	json_t *msg = json_pack("{s:s, s:s}", "op", "requestCrawl", "hostname", host);
	json_t *hint = json_object_get(j, "cursorHint"); /* indigo PR 1268: where a new host starts */
	if (hint)
		json_object_set(msg, "cursorHint", hint);
	json_decref(j);
	if (fan_ctl_async(req, "ingest", msg, CRAWL_TIMEOUT_MS, answer_crawl, NULL) < 0)
		fan_xrpc_error(req, 503, "ServiceUnavailable", "too many requestCrawl in flight");
}

static void banner(struct bt_http_req *req)
{
	char b[768];
	int n = snprintf(b, sizeof b,
			 "This is an atproto relay (%s), fanout %d.\n\n"
			 "Firehose: /xrpc/com.atproto.sync.subscribeRepos\nHealth: /xrpc/_health\n",
			 fan.server_hdr, bt_proc.index);
	bt_http_respond(req, 200, "text/plain; charset=utf-8", b, (size_t)n < sizeof b ? (size_t)n : sizeof b - 1);
}

#define CORS_HDR "Access-Control-Allow-Origin: *\r\n"

/* CORS preflight (indigo PR 1344): XRPC GETs and the requestCrawl POST may be called from a browser. */
static void preflight(struct bt_http_req *req)
{
	bt_http_respond_hdr(req, 204, NULL,
			    CORS_HDR "Access-Control-Allow-Methods: GET, HEAD, POST, OPTIONS\r\n"
				     "Access-Control-Allow-Headers: Content-Type, Authorization, Atproto-Proxy\r\n"
				     "Access-Control-Max-Age: 86400\r\n",
			    NULL, 0);
}

void fan_xrpc_handle(struct bt_http_req *req, void *arg)
{
	const char *m = bt_http_req_method(req);
	const char *p = bt_http_req_path(req);
	bool head = !strcmp(m, "HEAD");
	bool get = !strcmp(m, "GET") || head; /* HEAD: the GET answer without its body (bt_http) */
	bool xrpc = !strncmp(p, "/xrpc/", 6);
	if (xrpc && !strcmp(m, "OPTIONS")) {
		preflight(req);
		return;
	}
	if (xrpc && (get || !strcmp(p, "/xrpc/com.atproto.sync.requestCrawl")))
		bt_http_req_add_headers(req, CORS_HDR);
	if (!strcmp(p, "/xrpc/com.atproto.sync.subscribeRepos")) {
		if (!strcmp(m, "GET"))
			fan_sub_start(req);
		else
			fan_xrpc_error(req, 405, "MethodNotAllowed", "subscribeRepos is a GET (WebSocket)");
	} else if (!strcmp(p, "/xrpc/com.atproto.sync.requestCrawl")) {
		if (!strcmp(m, "POST"))
			request_crawl(req);
		else
			fan_xrpc_error(req, 405, "MethodNotAllowed", "requestCrawl is a POST");
	} else if (get && (!strcmp(p, "/_health") || !strcmp(p, "/xrpc/_health"))) {
		fan_health_respond(req);
	} else if (!strncmp(p, "/admin/", 7)) {
		fan_admin_handle(req, p); /* fanout_admin.c: HTTP Basic or bearer, RELAY_ADMIN_PASSWORD */
	} else if (get && !strcmp(p, "/")) {
		banner(req);
	} else if (!head && fan_coll_handle(req, p)) {
		/* the collection index (fanout_coll.c) */
	} else if (xrpc && !head && fan_repo_handle(req, p + 6)) {
		/* answered from the RocksDB view (fanout_repo.c) */
	} else if (xrpc && head) {
		fan_xrpc_error(req, 405, "MethodNotAllowed", "HEAD is answered for /, /_health and /xrpc/_health");
	} else if (xrpc) {
		fan_xrpc_error(req, 501, "MethodNotImplemented", "this relay does not serve that method");
	} else {
		fan_xrpc_error(req, 404, "NotFound", NULL);
	}
}

int fan_xrpc_init(void)
{
	if (pipe2(job_pipe, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(done_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	/* The workers' end of done_pipe blocks (it never fills: MAX_INFLIGHT pointers). */
	fcntl(done_pipe[1], F_SETFL, fcntl(done_pipe[1], F_GETFL) & ~O_NONBLOCK);
	done_ev = event_new(fan.base, done_pipe[0], EV_READ | EV_PERSIST, on_done, NULL);
	if (!done_ev || event_add(done_ev, NULL) < 0)
		return -ENOMEM;
	for (int i = 0; i < N_WORKERS; i++) {
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		int rc = pthread_create(&t, &a, worker, NULL);
		pthread_attr_destroy(&a);
		if (rc != 0)
			return -rc;
	}
	workers_started = true;
	return 0;
}

void fan_xrpc_fini(void)
{
	/* Tell the workers to exit; they are detached because one may still sit in a
	   15 s round trip, which must not delay the shutdown.  Unanswered requests die with
	   their connections at exit. */
	if (workers_started) {
		struct ctl_job *none = NULL;
		for (int i = 0; i < N_WORKERS; i++)
			if (write(job_pipe[1], &none, sizeof none) < 0)
				break;
		workers_started = false;
	}
	if (done_ev)
		event_free(done_ev);
	done_ev = NULL;
}

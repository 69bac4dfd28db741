/*
 * NAME
 *	manyhosts - N idle upstream PDS hosts on 127.0.0.1 in one process (the scale benchmark)
 * DESCRIPTION
 *	manyhosts --n N [--crawl RELAY_URL] [--ports-file FILE] [--crawl-parallel P] [--trickle S]
 *
 *	Listens on N ephemeral ports of 127.0.0.1 (one bt_http server each, one libevent loop) and
 *	answers, on every port:
 *	  GET /xrpc/com.atproto.server.describeServer   the requestCrawl probe
 *	  WS  /xrpc/com.atproto.sync.subscribeRepos      accepted and kept open, idle (no events:
 *	                                                 what is measured is the cost of a connection);
 *	                                                 with --trickle S each subscriber gets one #info
 *	                                                 frame every S seconds (spread over the S), so the
 *	                                                 relay's read path of every connection is used
 *	  GET /_stats                                    {"hosts":N,"subs":S,"crawled":C,"crawl_failed":F}
 *	With --crawl RELAY_URL a second thread POSTs RELAY_URL/xrpc/com.atproto.sync.requestCrawl
 *	{"hostname":"localhost:PORT"} for every port (P at a time with libcurl multi, default 8;
 *	a 503 "too many in flight" is retried), so the probes are answered by the loop meanwhile.
 *	--ports-file writes the ports, one a line.  Runs until SIGINT/SIGTERM.  Needs 2N+ file
 *	descriptors (raise ulimit -n).
 * DIAGNOSTICS
 *	"manyhosts: listening N" then "manyhosts: crawled C failed F" on stderr; exit 2 on start-up
 *	errors.
 */
#include "bt_buf.h"
#include "bt_fh.h"
#include "bt_http.h"
#include "bt_ws.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HOSTS 20000

static struct {
	int n, parallel;
	const char *crawl;
	int ports[MAX_HOSTS];
	struct event_base *base;
	atomic_int subs, crawled, crawl_failed;
	double trickle;
	struct bt_ws *sub[MAX_HOSTS * 2]; /* open subscribers, for the trickle */
	int n_sub, next_sub;
	struct bt_buf info;
} g;

static void ws_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	atomic_fetch_sub(&g.subs, 1);
	for (int i = 0; i < g.n_sub; i++)
		if (g.sub[i] == ws) {
			g.sub[i] = g.sub[--g.n_sub];
			break;
		}
}

/* Every 100 ms: the next share of the subscribers gets an #info frame. */
static void on_trickle(evutil_socket_t fd, short what, void *arg)
{
	static double carry;
	carry += g.n_sub * 0.1 / g.trickle;
	for (; carry >= 1 && g.n_sub; carry--) {
		g.next_sub = g.next_sub >= g.n_sub ? 0 : g.next_sub;
		bt_ws_send(g.sub[g.next_sub++], BT_WS_BINARY, g.info.p, g.info.len);
	}
}

static void ws_msg(struct bt_ws *ws, int opcode, const uint8_t *p, size_t n, void *arg)
{
}

static void handler(struct bt_http_req *req, void *arg)
{
	const char *path = bt_http_req_path(req);
	if (!strcmp(path, "/xrpc/com.atproto.server.describeServer")) {
		static const char body[] = "{\"did\":\"did:web:localhost\",\"availableUserDomains\":[]}";
		bt_http_respond(req, 200, "application/json", body, sizeof body - 1);
	} else if (!strcmp(path, "/xrpc/com.atproto.sync.subscribeRepos")) {
		static const struct bt_ws_cbs cbs = { .on_msg = ws_msg, .on_close = ws_close };
		struct bt_ws_opts o = { .max_msg = 65536, .server_hdr = "manyhosts" };
		struct bt_ws *ws = bt_http_upgrade(req, &cbs, NULL, &o);
		if (ws) {
			atomic_fetch_add(&g.subs, 1);
			if (g.n_sub < MAX_HOSTS * 2)
				g.sub[g.n_sub++] = ws;
		}
	} else if (!strcmp(path, "/_stats")) {
		char b[160];
		int n = snprintf(b, sizeof b, "{\"hosts\":%d,\"subs\":%d,\"crawled\":%d,\"crawl_failed\":%d}", g.n,
				 atomic_load(&g.subs), atomic_load(&g.crawled), atomic_load(&g.crawl_failed));
		bt_http_respond(req, 200, "application/json", b, (size_t)n);
	} else {
		bt_http_respond(req, 404, "application/json", "{}", 2);
	}
}

static int listen_any(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

struct job {
	CURL *h;
	int i, tries;
	char body[64];
	char resp[256];
	size_t rn;
};

static size_t on_data(char *p, size_t sz, size_t nm, void *arg)
{
	struct job *j = arg;
	size_t n = sz * nm, k = n < sizeof j->resp - 1 - j->rn ? n : sizeof j->resp - 1 - j->rn;
	memcpy(j->resp + j->rn, p, k);
	j->rn += k;
	return n;
}

static void start_job(CURLM *m, struct job *j, const char *url, struct curl_slist *hd)
{
	j->rn = 0;
	snprintf(j->body, sizeof j->body, "{\"hostname\":\"localhost:%d\"}", g.ports[j->i]);
	if (!j->h)
		j->h = curl_easy_init();
	curl_easy_reset(j->h);
	curl_easy_setopt(j->h, CURLOPT_URL, url);
	curl_easy_setopt(j->h, CURLOPT_POSTFIELDS, j->body);
	curl_easy_setopt(j->h, CURLOPT_HTTPHEADER, hd);
	curl_easy_setopt(j->h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(j->h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(j->h, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(j->h, CURLOPT_PRIVATE, j);
	curl_multi_add_handle(m, j->h);
}

static void *crawler(void *arg)
{
	char url[600];
	snprintf(url, sizeof url, "%s/xrpc/com.atproto.sync.requestCrawl", g.crawl);
	struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
	CURLM *m = curl_multi_init();
	struct job *jobs = calloc((size_t)g.parallel, sizeof *jobs);
	int next = 0, running = 0, first_err = 0;
	for (int k = 0; k < g.parallel && next < g.n; k++) {
		jobs[k].i = next++;
		start_job(m, &jobs[k], url, hd);
		running++;
	}
	while (running > 0) {
		int still;
		curl_multi_perform(m, &still);
		curl_multi_poll(m, NULL, 0, 100, NULL);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(m, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			struct job *j;
			long code = 0;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
			curl_multi_remove_handle(m, j->h);
			j->resp[j->rn] = 0;
			if (code == 503 && j->tries++ < 50) {
				usleep(20000);
				start_job(m, j, url, hd);
				continue;
			}
			if (code == 200) {
				atomic_fetch_add(&g.crawled, 1);
			} else {
				atomic_fetch_add(&g.crawl_failed, 1);
				if (first_err++ < 3)
					fprintf(stderr, "manyhosts: requestCrawl localhost:%d: HTTP %ld %s\n", g.ports[j->i], code,
						j->resp);
			}
			if (next < g.n) {
				j->i = next++;
				j->tries = 0;
				start_job(m, j, url, hd);
			} else {
				curl_easy_cleanup(j->h);
				j->h = NULL;
				running--;
			}
		}
	}
	curl_multi_cleanup(m);
	curl_slist_free_all(hd);
	free(jobs);
	fprintf(stderr, "manyhosts: crawled %d failed %d\n", atomic_load(&g.crawled), atomic_load(&g.crawl_failed));
	return NULL;
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(g.base);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "n", 1, 0, 'n' },
					    { "crawl", 1, 0, 'c' },
					    { "ports-file", 1, 0, 'p' },
					    { "crawl-parallel", 1, 0, 'P' },
					    { "trickle", 1, 0, 't' },
					    { 0, 0, 0, 0 } };
	const char *pf = NULL;
	int o;
	g.parallel = 8;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'n': g.n = atoi(optarg); break;
		case 'c': g.crawl = optarg; break;
		case 'p': pf = optarg; break;
		case 'P': g.parallel = atoi(optarg); break;
		case 't': g.trickle = atof(optarg); break;
		default: g.n = 0; break;
		}
	}
	if (g.n < 1 || g.n > MAX_HOSTS || g.parallel < 1 || g.parallel > 256 || g.trickle < 0) {
		fprintf(stderr, "usage: manyhosts --n N [--crawl RELAY_URL] [--ports-file FILE] [--crawl-parallel P] [--trickle S]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	g.base = event_base_new();
	struct bt_http_limits lim = { .server_hdr = "manyhosts" };
	FILE *f = pf ? fopen(pf, "w") : NULL;
	for (int i = 0; i < g.n; i++) {
		int fd = listen_any(&g.ports[i]);
		if (fd < 0 || !bt_http_server_new(g.base, fd, &lim, handler, NULL)) {
			fprintf(stderr, "manyhosts: listen %d of %d failed (ulimit -n?)\n", i, g.n);
			return 2;
		}
		if (f)
			fprintf(f, "%d\n", g.ports[i]);
	}
	if (f)
		fclose(f);
	fprintf(stderr, "manyhosts: listening %d\n", g.n);
	struct event *s1 = evsignal_new(g.base, SIGTERM, on_signal, NULL);
	struct event *s2 = evsignal_new(g.base, SIGINT, on_signal, NULL);
	event_add(s1, NULL);
	event_add(s2, NULL);
	if (g.trickle > 0) {
		if (bt_fh_encode_info(&g.info, "Trickle", "manyhosts keeps the connection in use") < 0)
			return 2;
		struct event *tk = event_new(g.base, -1, EV_PERSIST, on_trickle, NULL);
		event_add(tk, &(struct timeval){ 0, 100000 });
	}
	pthread_t th;
	if (g.crawl)
		pthread_create(&th, NULL, crawler, NULL);
	event_base_dispatch(g.base);
	_exit(0); /* the crawler thread may still be running; nothing to flush */
}

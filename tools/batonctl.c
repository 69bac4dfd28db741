/*
 * NAME
 *	batonctl - talk to a running baton over its ZeroMQ control sockets
 * DESCRIPTION
 *	batonctl status              per stage: pid, state, uptime, restarts, heartbeat age, frames
 *	                             in/out per second (two samples 1 s apart), drops; each fanout's
 *	                             consumers and lag; the rings' fill.  --json: the supervisor's
 *	                             answer (every counter) at once, for scripts
 *	batonctl scale fanout N      run N fanouts (slots 0..N-1, at most 32), at any time (those
 *	                             stopped hand their consumers to the others first)
 *	batonctl drain fanout I      take fanout I out of service: it hands its consumers to the others
 *	                             and stays stopped (scale brings it back)
 *	batonctl --json CMD ...      any command's answer as JSON (the default for all but status)
 *	batonctl restart ROLE [IDX]  SIGTERM a stage; the supervisor starts it again
 *	batonctl hosts               upstream hosts and committed cursors (from the store)
 *	batonctl upstreams           upstream connections (from ingest)
 *	batonctl block HOST          disconnect and ban an upstream host (its frames already read are
 *	                             still decided; requestCrawl of it is refused from then on)
 *	batonctl unblock HOST        lift the ban; the host is subscribed again from its cursor
 *	batonctl kill-upstream HOST [--block]
 *	                             disconnect it (not banned: a requestCrawl or a restart brings it back)
 *	batonctl ban-domain D        ban a domain and every subdomain; connected hosts under it are
 *	                             disconnected at once
 *	batonctl unban-domain D      lift it (hosts under it are subscribed again)
 *	batonctl domain-bans         the banned domains (the stored ones and RELAY_BANNED_DOMAINS)
 *	batonctl crawl               whether new crawls are enabled, the per-day limit, today's count
 *	batonctl enable-crawls | disable-crawls
 *	                             resume / pause every new requestCrawl (connections stay)
 *	batonctl per-day-limit N     new hosts accepted by the public requestCrawl per UTC day
 *	batonctl request-crawl HOST [CURSOR]
 *	                             the operator's requestCrawl (past the switch and the limit)
 *	batonctl import-hosts FILE   register hosts (one per line) without the requestCrawl probe, as a
 *	                             bootstrap from a known list (like indigo's pull-hosts); ingest
 *	                             subscribes to them when it next starts
 *	batonctl change-limits HOST ACCOUNT_LIMIT [PER_SECOND PER_HOUR PER_DAY]
 *	                             set a host's account limit (throttled accounts up to it are
 *	                             re-activated at once) and optionally its event rates (0 = from
 *	                             the account limit); like POST /admin/pds/changeLimits
 *	batonctl take-down DID       take an account down (like POST /admin/repo/takeDown: #account
 *	                             takendown, its later events dropped, its events out of replay)
 *	batonctl reverse-takedown DID
 *	                             reverse it (#account with its upstream state)
 *	batonctl reload KEY=VALUE... change parameters of the running relay (RELAY_LOG_LEVEL, the
 *	                             consumer limits, coverage, heartbeat, commit and replay windows:
 *	                             others need a restart and are refused); waits until every running
 *	                             stage applied them; stages started later get them too
 *	batonctl health fanout       exit 0 if every fanout of this container (its mount namespace; all
 *	                             of them outside containers) runs with a fresh heartbeat: compose's
 *	                             per-replica healthcheck
 *	batonctl quarantine [list]   the frames verify kept after they crashed it twice (RELAY_DATA_DIR/
 *	                             quarantine); quarantine show NAME: what the frame decodes to (type,
 *	                             seq, did, rev, ops, first bytes); quarantine drop NAME | --all
 *	batonctl import-hosts lines may be "HOST CURSOR": the host's starting cursor (its seq).
 *	batonctl pull-hosts URL      bootstrap from another relay (like indigo's pull-hosts): pages
 *	                             through URL's com.atproto.sync.listHosts (limit 500, at most
 *	                             400 pages / 100,000 hosts, 10 s a page); skips hosts whose
 *	                             status is not active/idle, whose seq <= 0, that this relay
 *	                             knows, and (without RELAY_ALLOW_INSECURE_HOSTS) non-SSL ones;
 *	                             the rest go through ingest's admission (requestCrawl as the
 *	                             operator, without the probe): banned hosts and domains are
 *	                             refused and counted, never fetched.  Prints the counts (JSON).
 *	It finds the relay through the same RELAY_SHM_DIR and RELAY_NAME as the relay.
 * DIAGNOSTICS
 *	Exit 1 if the relay does not answer in time (5 s; request-crawl 15 s) or refuses (the answer is printed), 2 on a
 *	usage error.
 */
#include "bt_ctl.h"
#include "bt_host.h"
#include "bt_params.h"

#include "bt_fetch.h"
#include "bt_fh.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
	fprintf(stderr, "usage: batonctl [--json] status | restart ROLE [INDEX] | scale fanout N | drain fanout I | hosts | upstreams | block HOST | unblock HOST\n"
			"  | kill-upstream HOST [--block] | ban-domain D | unban-domain D | domain-bans | crawl\n"
			"  | enable-crawls | disable-crawls | per-day-limit N | request-crawl HOST [CURSOR] | import-hosts FILE\n"
			"  | pull-hosts URL\n"
			"  | change-limits HOST ACCOUNT_LIMIT [PER_SECOND PER_HOUR PER_DAY] | take-down DID | reverse-takedown DID\n"
			"  | quarantine [list | show NAME | drop NAME | drop --all] | reload KEY=VALUE... | health ROLE\n"
			"  (reads RELAY_SHM_DIR and RELAY_NAME like baton; see baton --help)\n");
	return 2;
}

/* batonctl quarantine [list | show NAME | drop NAME|--all]: the frames verify kept after they
   crashed it twice (RELAY_DATA_DIR/quarantine/host<ID>-seq<USEQ>.frame).  Files only: no stage is
   involved, so it works while the relay is down too. */
static bool quarantine_name_ok(const char *n)
{
	size_t l = strlen(n);
	return l > 6 && l < 128 && !strchr(n, '/') && n[0] != '.' && !strcmp(n + l - 6, ".frame");
}

static int quarantine(int argc, char **argv, int a, bool json_out)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/quarantine", bt_cfg.data_dir);
	const char *sub = a + 1 < argc ? argv[a + 1] : "list";
	if (!strcmp(sub, "list")) {
		DIR *d = opendir(dir);
		json_t *arr = json_array();
		struct dirent *e;
		while (d && (e = readdir(d)))
			if (quarantine_name_ok(e->d_name)) {
				char path[PATH_MAX + 300];
				struct stat st;
				snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
				if (stat(path, &st) == 0)
					json_array_append_new(arr, json_pack("{s:s,s:I,s:I}", "name", e->d_name, "bytes",
									     (json_int_t)st.st_size, "mtime",
									     (json_int_t)st.st_mtime));
			}
		if (d)
			closedir(d);
		if (json_out) {
			char *t = json_dumps(arr, JSON_INDENT(1));
			puts(t);
			free(t);
		} else {
			size_t i;
			json_t *x;
			printf("%zu quarantined frame(s) in %s\n", json_array_size(arr), dir);
			json_array_foreach(arr, i, x) printf("  %s  %lld bytes\n", json_string_value(json_object_get(x, "name")),
							    (long long)json_integer_value(json_object_get(x, "bytes")));
		}
		json_decref(arr);
		return 0;
	}
	if (a + 2 >= argc)
		return usage();
	const char *name = argv[a + 2];
	if (!strcmp(sub, "drop") && !strcmp(name, "--all")) {
		DIR *d = opendir(dir);
		struct dirent *e;
		int n = 0;
		while (d && (e = readdir(d)))
			if (quarantine_name_ok(e->d_name)) {
				char path[PATH_MAX + 300];
				snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
				n += unlink(path) == 0;
			}
		if (d)
			closedir(d);
		printf("{\"dropped\": %d}\n", n);
		return 0;
	}
	if (!quarantine_name_ok(name)) {
		fprintf(stderr, "batonctl: %s: not a quarantined frame name (see batonctl quarantine list)\n", name);
		return 2;
	}
	char path[PATH_MAX + 300];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (!strcmp(sub, "drop")) {
		if (unlink(path) < 0) {
			fprintf(stderr, "batonctl: %s: %s\n", path, strerror(errno));
			return 1;
		}
		printf("{\"dropped\": 1}\n");
		return 0;
	}
	if (strcmp(sub, "show"))
		return usage();
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "batonctl: %s: %s\n", path, strerror(errno));
		return 1;
	}
	static uint8_t buf[8 << 20];
	size_t n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	/* What it says, as far as it decodes: it crashed verify, so it is read with the same care. */
	static struct bt_fh_msg m;
	const char *why = NULL;
	int rc = bt_fh_decode(buf, n, &m, &why);
	json_t *o = json_pack("{s:s,s:I}", "name", name, "bytes", (json_int_t)n);
	if (rc < 0) {
		json_object_set_new(o, "decodes", json_false());
		json_object_set_new(o, "error", json_string(why ? why : "does not decode"));
	} else {
		const char *t = bt_fh_type_name(m.type);
		json_object_set_new(o, "decodes", json_true());
		json_object_set_new(o, "t", t ? json_string(t) : json_stringn((const char *)m.t.p, m.t.n));
		if (m.has_seq)
			json_object_set_new(o, "seq", json_integer(m.seq));
		if (m.did.n)
			json_object_set_new(o, "did", json_stringn((const char *)m.did.p, m.did.n));
		if (m.rev.n)
			json_object_set_new(o, "rev", json_stringn((const char *)m.rev.p, m.rev.n));
		json_object_set_new(o, "ops", json_integer((json_int_t)m.n_ops));
		json_object_set_new(o, "blocks_bytes", json_integer((json_int_t)m.blocks.n));
	}
	char hex[2 * 64 + 1];
	size_t hn = n < 64 ? n : 64;
	for (size_t i = 0; i < hn; i++)
		snprintf(hex + 2 * i, 3, "%02x", buf[i]);
	hex[2 * hn] = 0;
	json_object_set_new(o, "head_hex", json_string(hex));
	char *txt = json_dumps(o, JSON_INDENT(1));
	puts(txt);
	free(txt);
	json_decref(o);
	return 0;
}

/* batonctl health fanout: the health of THIS replica, for a container's healthcheck.  Under
   compose every fanout shares the supervisor's network (one port: /_health answers for whichever
   fanout the kernel picks) and pid namespace, but each replica has its own mount namespace: the
   fanouts whose /proc/PID/ns/mnt is ours are this replica's.  Healthy when there is at least one
   and each is running with a heartbeat younger than half of RELAY_HEARTBEAT_TIMEOUT.  Outside
   containers every fanout shares our namespace: all are checked. */
static int health_self(const char *role)
{
	char ep[600], me[64] = "", theirs[64];
	bt_params_ipc("sup", ep, sizeof ep);
	json_t *st = bt_ctl_call(ep, json_pack("{s:s}", "op", "status"), 5000);
	if (!st) {
		printf("unhealthy: no answer from the supervisor (%s)\n", ep);
		return 1;
	}
	ssize_t n = readlink("/proc/self/ns/mnt", me, sizeof me - 1);
	me[n > 0 ? n : 0] = 0;
	int mine = 0, bad = 0, unreadable = 0;
	char why[512] = "";
	size_t i;
	json_t *x, *sel = json_array();
	json_array_foreach(json_object_get(st, "stages"), i, x)
	{
		int pid = (int)json_integer_value(json_object_get(x, "pid"));
		if (strcmp(json_string_value(json_object_get(x, "role")), role) || pid <= 0)
			continue;
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/ns/mnt", pid);
		ssize_t m = readlink(path, theirs, sizeof theirs - 1);
		theirs[m > 0 ? m : 0] = 0;
		unreadable += m <= 0;
		if (me[0] && m > 0 && !strcmp(me, theirs))
			json_array_append(sel, x);
	}
	if (!json_array_size(sel) && unreadable) /* namespaces we may not read: judge them all */
		json_array_foreach(json_object_get(st, "stages"), i, x) if (!strcmp(json_string_value(json_object_get(x, "role")), role) &&
									   json_integer_value(json_object_get(x, "pid")) > 0)
			json_array_append(sel, x);
	json_array_foreach(sel, i, x)
	{
		mine++;
		long long age = json_integer_value(json_object_get(x, "heartbeat_age_ms"));
		const char *state = json_string_value(json_object_get(x, "state"));
		if (strcmp(state, "running") || age > bt_cfg.heartbeat_timeout * 500) {
			bad++;
			snprintf(why + strlen(why), sizeof why - strlen(why), " %s-%lld %s, heartbeat %lld ms;", role,
				 (long long)json_integer_value(json_object_get(x, "index")), state, age);
		}
	}
	json_decref(sel);
	json_decref(st);
	if (!mine) {
		printf("unhealthy: no %s of this replica is running\n", role);
		return 1;
	}
	if (bad) {
		printf("unhealthy:%s\n", why);
		return 1;
	}
	printf("ok: %d %s(s) of this replica running\n", mine, role);
	return 0;
}

/* batonctl reload KEY=VALUE...: the supervisor checks and publishes them; then wait (5 s) until
   every running stage says it applied them.  Exit 1 on a refusal or a stage that did not. */
static int reload(int argc, char **argv, int a)
{
	json_t *set = json_object();
	for (int i = a + 1; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		if (!eq || eq == argv[i]) {
			json_decref(set);
			return usage();
		}
		json_object_set_new(set, strndup(argv[i], (size_t)(eq - argv[i])), json_string(eq + 1));
	}
	char ep[600];
	bt_params_ipc("sup", ep, sizeof ep);
	json_t *r = bt_ctl_call(ep, json_pack("{s:s,s:o}", "op", "reload", "set", set), 5000);
	if (!r) {
		fprintf(stderr, "batonctl: no answer from %s\n", ep);
		return 1;
	}
	if (!json_is_true(json_object_get(r, "ok"))) {
		char *t = json_dumps(r, JSON_INDENT(1));
		puts(t);
		free(t);
		json_decref(r);
		return 1;
	}
	json_int_t gen = json_integer_value(json_object_get(r, "gen"));
	json_t *pending = NULL;
	for (int tries = 0; tries < 50; tries++) {
		json_decref(pending);
		pending = json_array();
		json_t *st = bt_ctl_call(ep, json_pack("{s:s}", "op", "status"), 5000);
		size_t i;
		json_t *x;
		json_array_foreach(json_object_get(st, "stages"), i, x) if (json_integer_value(json_object_get(x, "pid")) > 0 &&
									    json_integer_value(json_object_get(x, "reload_gen")) < gen)
			json_array_append_new(pending, json_sprintf("%s-%lld", json_string_value(json_object_get(x, "role")),
								    (long long)json_integer_value(json_object_get(x, "index"))));
		json_decref(st);
		if (!json_array_size(pending))
			break;
		usleep(100000);
	}
	json_object_set_new(r, "not_applied_by", pending);
	char *t = json_dumps(r, JSON_INDENT(1));
	puts(t);
	free(t);
	int rc = json_array_size(pending) ? 1 : 0;
	json_decref(r);
	return rc;
}

/* Each line: a hostname, normalised by the requestCrawl policy (bt_host), registered with the
   store.  Prints how many were added, known already, or refused. */
static int import_hosts(const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	if (!f) {
		perror(path);
		return 2;
	}
	char ep[600], line[1024], host[256];
	bt_params_ipc("store", ep, sizeof ep);
	int added = 0, known = 0, refused = 0, failed = 0;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\r\n")] = 0;
		if (!line[0] || line[0] == '#')
			continue;
		char *sp = strchr(line, ' ');
		long long cursor = -1;
		if (sp) {
			*sp = 0;
			char *end;
			cursor = strtoll(sp + 1, &end, 10);
			if (*end || cursor < 0) {
				fprintf(stderr, "batonctl: %s: bad cursor\n", line);
				refused++;
				continue;
			}
		}
		bool insecure;
		const char *why = NULL;
		if (bt_host_normalize(line, bt_cfg.allow_insecure_hosts, host, sizeof host, &insecure, &why) < 0) {
			fprintf(stderr, "batonctl: %s: %s\n", line, why);
			refused++;
			continue;
		}
		json_t *add = json_pack("{s:s,s:s}", "op", "addHost", "hostname", host);
		if (cursor >= 0)
			json_object_set_new(add, "cursor", json_integer(cursor));
		json_t *r = bt_ctl_call(ep, add, 3000);
		if (!r || !json_is_integer(json_object_get(r, "id")))
			failed++;
		else if (json_is_true(json_object_get(r, "existed")))
			known++;
		else
			added++;
		json_decref(r);
	}
	if (f != stdin)
		fclose(f);
	printf("{\"added\": %d, \"known\": %d, \"refused\": %d, \"failed\": %d}\n", added, known, refused, failed);
	return failed ? 1 : 0;
}

#define PULL_PAGE 500
#define PULL_MAX_PAGES 400
#define PULL_MAX_HOSTS 100000
#define PULL_MAX_BODY ((size_t)8 << 20)

struct page {
	bool done;
	json_t *j;
};

static void on_page(void *arg, int status, const char *body, size_t len, const char *server)
{
	struct page *pg = arg;
	pg->done = true;
	if (status < 0)
		fprintf(stderr, "batonctl: listHosts: %s\n", strerror(-status));
	else if (status != 200)
		fprintf(stderr, "batonctl: listHosts: HTTP %d\n", status);
	else if (!(pg->j = json_loadb(body, len, 0, NULL)) || !json_is_array(json_object_get(pg->j, "hosts"))) {
		fprintf(stderr, "batonctl: listHosts: not a listHosts answer\n");
		json_decref(pg->j);
		pg->j = NULL;
	}
}

/* One listHosts page of base after cursor (NULL: the first), fetched with bt_fetch on a loop of
   its own: the parsed answer, owned; NULL with a message on stderr if it failed. */
static json_t *list_page(struct event_base *ev, struct bt_fetch *f, const char *base, const char *cursor)
{
	char url[2048], esc[1024] = "";
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	for (size_t i = 0, o = 0; cursor && cursor[i] && o + 4 < sizeof esc; i++) {
		unsigned char ch = (unsigned char)cursor[i];
		o += (size_t)snprintf(esc + o, sizeof esc - o, isalnum(ch) || strchr("-._~", ch) ? "%c" : "%%%02X", ch);
	}
	snprintf(url, sizeof url, "%.*s/xrpc/com.atproto.sync.listHosts?limit=%d%s%s", (int)bl, base, PULL_PAGE,
		 cursor ? "&cursor=" : "", esc);
	struct page pg = { 0 };
	if (bt_fetch_get(f, url, on_page, &pg) < 0) {
		fprintf(stderr, "batonctl: %s: cannot start the request\n", url);
		return NULL;
	}
	while (!pg.done && event_base_loop(ev, EVLOOP_ONCE) == 0)
		;
	return pg.j;
}

/* The hostnames this relay's store knows (normalised), as a JSON object used as a set. */
static json_t *known_hosts(void)
{
	char ep[600];
	bt_params_ipc("store", ep, sizeof ep);
	json_t *r = bt_ctl_call(ep, json_pack("{s:s}", "op", "hosts"), 5000);
	if (!r)
		return NULL;
	json_t *set = json_object();
	size_t i;
	json_t *it;
	json_array_foreach(json_object_get(r, "hosts"), i, it)
	{
		const char *name = json_string_value(json_object_get(it, "host"));
		const char *st = json_string_value(json_object_get(it, "status"));
		char norm[256];
		bool insecure;
		/* a banned host is left to the admission, which refuses and counts it */
		if (name && !(st && !strcmp(st, "banned")) && bt_host_normalize(name, true, norm, sizeof norm, &insecure, NULL) == 0)
			json_object_set_new(set, norm, json_true());
	}
	json_decref(r);
	return set;
}

static void count(json_t *o, const char *k)
{
	json_object_set_new(o, k, json_integer(json_integer_value(json_object_get(o, k)) + 1));
}

/* pull-hosts URL: see the header.  Exit 0 if every page was read and every admission answered. */
static int pull_hosts(const char *base)
{
	json_t *known = known_hosts();
	if (!known) {
		fprintf(stderr, "batonctl: no answer from the store\n");
		return 1;
	}
	char ep[600];
	bt_params_ipc("ingest", ep, sizeof ep);
	struct event_base *ev = event_base_new();
	struct bt_fetch_opts fo = { .max_conns = 1, .timeout_ms = 10000, .max_body = PULL_MAX_BODY,
				    .user_agent = bt_cfg.user_agent };
	struct bt_fetch *f = ev ? bt_fetch_new(ev, &fo) : NULL;
	if (!f) {
		if (ev)
			event_base_free(ev);
		json_decref(known);
		return 1;
	}
	json_t *skipped = json_object(), *refused = json_object();
	int added = 0, seen = 0, pages = 0, failed = 0;
	bool complete = false;
	char *cursor = NULL;
	while (pages < PULL_MAX_PAGES && seen < PULL_MAX_HOSTS) {
		json_t *pg = list_page(ev, f, base, cursor);
		if (!pg) {
			failed++;
			break;
		}
		pages++;
		size_t i;
		json_t *h;
		json_array_foreach(json_object_get(pg, "hosts"), i, h)
		{
			if (seen >= PULL_MAX_HOSTS)
				break;
			seen++;
			const char *name = json_string_value(json_object_get(h, "hostname"));
			const char *st = json_string_value(json_object_get(h, "status"));
			json_t *seq = json_object_get(h, "seq");
			char norm[256];
			bool insecure;
			const char *why = NULL;
			if (!name || bt_host_normalize(name, true, norm, sizeof norm, &insecure, &why) < 0) {
				count(skipped, "syntax");
				continue;
			}
			if (st && strcmp(st, "active") && strcmp(st, "idle")) {
				count(skipped, "status");
				continue;
			}
			if (!json_is_integer(seq) || json_integer_value(seq) <= 0) {
				count(skipped, "seq");
				continue;
			}
			if (json_object_get(known, norm)) {
				count(skipped, "known");
				continue;
			}
			if (insecure && !bt_cfg.allow_insecure_hosts) {
				count(skipped, "insecure");
				continue;
			}
			json_t *req = json_pack("{s:s,s:s,s:b,s:b,s:I}", "op", "requestCrawl", "hostname", norm, "admin", 1,
						"noProbe", 1, "cursorHint", json_integer_value(seq));
			json_t *r = bt_ctl_call(ep, req, 5000);
			if (!r) {
				failed++;
			} else if (json_is_true(json_object_get(r, "ok"))) {
				added++;
				json_object_set_new(known, norm, json_true());
			} else {
				const char *e = json_string_value(json_object_get(r, "error"));
				count(refused, e ? e : "unknown");
				if (e && !strcmp(e, "ServiceUnavailable"))
					failed++;
			}
			json_decref(r);
		}
		const char *next = json_string_value(json_object_get(pg, "cursor"));
		bool more = next && *next && json_array_size(json_object_get(pg, "hosts")) > 0 &&
			    (!cursor || strcmp(next, cursor));
		free(cursor);
		cursor = more ? strdup(next) : NULL;
		json_decref(pg);
		if (!cursor) {
			complete = true;
			break;
		}
	}
	free(cursor);
	bt_fetch_free(&f);
	event_base_free(ev);
	json_t *out = json_pack("{s:i,s:i,s:i,s:o,s:o,s:b,s:i}", "added", added, "seen", seen, "pages", pages,
				"skipped", skipped, "refused", refused, "complete", complete, "failed", failed);
	char *txt = json_dumps(out, JSON_SORT_KEYS);
	puts(txt);
	free(txt);
	json_decref(out);
	json_decref(known);
	return failed || !complete ? 1 : 0;
}

static uint64_t counter(json_t *stage, const char *name)
{
	return (uint64_t)json_integer_value(json_object_get(json_object_get(stage, "counters"), name));
}

static void human_age(uint64_t ms, char *out, size_t cap)
{
	uint64_t s = ms / 1000;
	if (s < 120)
		snprintf(out, cap, "%llus", (unsigned long long)s);
	else if (s < 7200)
		snprintf(out, cap, "%llum", (unsigned long long)s / 60);
	else
		snprintf(out, cap, "%lluh%02llum", (unsigned long long)s / 3600, (unsigned long long)s / 60 % 60);
}

static void human_bytes(uint64_t b, char *out, size_t cap)
{
	if (b < 10u << 10)
		snprintf(out, cap, "%llu B", (unsigned long long)b);
	else if (b < 10u << 20)
		snprintf(out, cap, "%llu KiB", (unsigned long long)b >> 10);
	else
		snprintf(out, cap, "%llu MiB", (unsigned long long)b >> 20);
}

/* `batonctl status` for a person: one line per stage with its rates over the second between
   a and b (two answers of the supervisor), the rings' fill and each fanout's lag. */
static void print_status(json_t *a, json_t *b, double secs)
{
	json_t *st = json_object_get(b, "stages");
	uint64_t store_seq = 0;
	size_t i;
	json_t *s;
	json_array_foreach(st, i, s) if (!strcmp(json_string_value(json_object_get(s, "role")), "store"))
		store_seq = counter(s, "last_seq");
	printf("baton: %lld verify, %lld fanout; last seq %llu\n",
	       (long long)json_integer_value(json_object_get(b, "verify_procs")),
	       (long long)json_integer_value(json_object_get(b, "fanout_procs")), (unsigned long long)store_seq);
	printf("%-10s %8s %-10s %7s %8s %9s %9s %9s %9s  %s\n", "STAGE", "PID", "STATE", "UPTIME", "RESTARTS",
	       "HEARTBEAT", "IN/s", "OUT/s", "DROPPED", "");
	json_array_foreach(st, i, s)
	{
		const char *role = json_string_value(json_object_get(s, "role"));
		int idx = (int)json_integer_value(json_object_get(s, "index"));
		char name[32], up[32], extra[96] = "";
		if (!strcmp(role, "verify") || !strcmp(role, "fanout"))
			snprintf(name, sizeof name, "%s-%d", role, idx);
		else
			snprintf(name, sizeof name, "%s", role);
		human_age((uint64_t)json_integer_value(json_object_get(s, "uptime_ms")), up, sizeof up);
		json_t *prev = NULL, *p;
		size_t j;
		json_array_foreach(json_object_get(a, "stages"), j, p)
		if (!strcmp(json_string_value(json_object_get(p, "role")), role) &&
		    json_integer_value(json_object_get(p, "index")) == idx) prev = p;
		double in = prev ? (double)(counter(s, "frames_in") - counter(prev, "frames_in")) / secs : 0;
		double out = prev ? (double)(counter(s, "frames_out") - counter(prev, "frames_out")) / secs : 0;
		if (!strcmp(role, "fanout")) {
			uint64_t sent = counter(s, "last_seq"), cons = counter(s, "consumers");
			snprintf(extra, sizeof extra, "consumers %llu, lag %llu", (unsigned long long)cons,
				 (unsigned long long)(cons && store_seq > sent ? store_seq - sent : 0));
		}
		printf("%-10s %8lld %-10s %7s %8lld %7lldms %9.0f %9.0f %9llu  %s\n", name,
		       (long long)json_integer_value(json_object_get(s, "pid")), json_string_value(json_object_get(s, "state")),
		       up, (long long)json_integer_value(json_object_get(s, "restarts")),
		       (long long)json_integer_value(json_object_get(s, "heartbeat_age_ms")), in, out,
		       (unsigned long long)counter(s, "dropped"), extra);
	}
	json_array_foreach(json_object_get(b, "rings"), i, s)
	{
		uint64_t used = (uint64_t)json_integer_value(json_object_get(s, "used"));
		uint64_t cap = (uint64_t)json_integer_value(json_object_get(s, "capacity"));
		char ub[24], cb[24];
		human_bytes(used, ub, sizeof ub);
		human_bytes(cap, cb, sizeof cb);
		printf("ring %-18s %5.1f%% (%s of %s)\n", json_string_value(json_object_get(s, "ring")),
		       cap ? 100.0 * (double)used / (double)cap : 0.0, ub, cb);
	}
}

int main(int argc, char **argv)
{
	/* --json anywhere: JSON output (status prints a table for people by default). */
	bool json_out = false;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--json")) {
			json_out = true;
			memmove(argv + i, argv + i + 1, (size_t)(argc - i) * sizeof *argv);
			argc--;
			i--;
		}
	int a = 1;
	if (argc > 1 && !strcmp(argv[1], "--version")) {
		printf("batonctl %s\n", bt_version());
		return 0;
	}
	/* Flags of the parameter table may precede the command. */
	while (a < argc && !strncmp(argv[a], "--", 2) && strcmp(argv[a], "--help"))
		a++;
	if (a >= argc || !strcmp(argv[a], "--help") || !strcmp(argv[a], "-h"))
		return usage();
	bt_params_load(a, argv, "batonctl", "batonctl: control a running baton");
	const char *cmd = argv[a];
	char ep[600];
	json_t *req;
	if (!strcmp(cmd, "status")) {
		bt_params_ipc("sup", ep, sizeof ep);
		req = json_pack("{s:s}", "op", "status");
	} else if (!strcmp(cmd, "scale") && a + 2 < argc) {
		char *end;
		long n = strtol(argv[a + 2], &end, 10);
		if (*end || strcmp(argv[a + 1], "fanout"))
			return usage();
		bt_params_ipc("sup", ep, sizeof ep);
		req = json_pack("{s:s,s:s,s:i}", "op", "scale", "role", "fanout", "n", (int)n);
	} else if (!strcmp(cmd, "drain") && a + 2 < argc && !strcmp(argv[a + 1], "fanout")) {
		bt_params_ipc("sup", ep, sizeof ep);
		req = json_pack("{s:s,s:i}", "op", "drain", "index", atoi(argv[a + 2]));
	} else if (!strcmp(cmd, "restart") && a + 1 < argc) {
		bt_params_ipc("sup", ep, sizeof ep);
		req = json_pack("{s:s,s:s}", "op", "restart", "role", argv[a + 1]);
		if (a + 2 < argc)
			json_object_set_new(req, "index", json_integer(atoi(argv[a + 2])));
	} else if (!strcmp(cmd, "hosts")) {
		bt_params_ipc("store", ep, sizeof ep);
		req = json_pack("{s:s}", "op", "hosts");
	} else if (!strcmp(cmd, "upstreams")) {
		bt_params_ipc("ingest", ep, sizeof ep);
		req = json_pack("{s:s}", "op", "upstreams");
	} else if (!strcmp(cmd, "block") && a + 1 < argc) {
		bt_params_ipc("ingest", ep, sizeof ep);
		req = json_pack("{s:s,s:s}", "op", "block", "hostname", argv[a + 1]);
	} else if ((!strcmp(cmd, "unblock") || !strcmp(cmd, "kill-upstream")) && a + 1 < argc) {
		bt_params_ipc("ingest", ep, sizeof ep);
		req = json_pack("{s:s,s:s}", "op", cmd[0] == 'u' ? "unblock" : "killUpstream", "hostname", argv[a + 1]);
		if (a + 2 < argc && !strcmp(argv[a + 2], "--block"))
			json_object_set_new(req, "block", json_true());
	} else if ((!strcmp(cmd, "ban-domain") || !strcmp(cmd, "unban-domain")) && a + 1 < argc) {
		bt_params_ipc("ingest", ep, sizeof ep);
		req = json_pack("{s:s,s:s}", "op", cmd[0] == 'b' ? "banDomain" : "unbanDomain", "domain", argv[a + 1]);
	} else if (!strcmp(cmd, "domain-bans") || !strcmp(cmd, "crawl")) {
		bt_params_ipc("ingest", ep, sizeof ep);
		req = json_pack("{s:s}", "op", cmd[0] == 'd' ? "domainBans" : "crawl");
	} else if (!strcmp(cmd, "enable-crawls") || !strcmp(cmd, "disable-crawls")) {
		bt_params_ipc("ingest", ep, sizeof ep);
		req = json_pack("{s:s,s:b}", "op", "setCrawl", "enabled", cmd[0] == 'e');
	} else if (!strcmp(cmd, "per-day-limit") && a + 1 < argc) {
		char *end;
		long long n = strtoll(argv[a + 1], &end, 10);
		if (*end || n < 0)
			return usage();
		bt_params_ipc("ingest", ep, sizeof ep);
		req = json_pack("{s:s,s:I}", "op", "setCrawl", "per_day_limit", (json_int_t)n);
	} else if (!strcmp(cmd, "request-crawl") && a + 1 < argc) {
		bt_params_ipc("ingest", ep, sizeof ep);
		req = json_pack("{s:s,s:s,s:b}", "op", "requestCrawl", "hostname", argv[a + 1], "admin", 1);
		if (a + 2 < argc)
			json_object_set_new(req, "cursorHint", json_integer(atoll(argv[a + 2])));
	} else if (!strcmp(cmd, "change-limits") && a + 2 < argc) {
		char host[256];
		bool insecure;
		const char *why = NULL;
		if (bt_host_normalize(argv[a + 1], true, host, sizeof host, &insecure, &why) < 0) {
			fprintf(stderr, "batonctl: %s: %s\n", argv[a + 1], why);
			return 2;
		}
		bt_params_ipc("store", ep, sizeof ep);
		req = json_pack("{s:s,s:s}", "op", "changeLimits", "hostname", host);
		static const char *const keys[] = { "repo_limit", "per_second", "per_hour", "per_day" };
		for (int i = 0; i < 4 && a + 2 + i < argc; i++) {
			char *end;
			long long v = strtoll(argv[a + 2 + i], &end, 10);
			if (*end || v < 0)
				return usage();
			json_object_set_new(req, keys[i], json_integer(v));
		}
	} else if ((!strcmp(cmd, "take-down") || !strcmp(cmd, "reverse-takedown")) && a + 1 < argc) {
		bt_params_ipc("store", ep, sizeof ep);
		req = json_pack("{s:s,s:s}", "op", cmd[0] == 't' ? "takeDown" : "reverseTakedown", "did", argv[a + 1]);
	} else if (!strcmp(cmd, "health") && a + 1 < argc) {
		return health_self(argv[a + 1]);
	} else if (!strcmp(cmd, "reload") && a + 1 < argc) {
		return reload(argc, argv, a);
	} else if (!strcmp(cmd, "quarantine")) {
		return quarantine(argc, argv, a, json_out);
	} else if (!strcmp(cmd, "import-hosts") && a + 1 < argc) {
		return import_hosts(argv[a + 1]);
	} else if (!strcmp(cmd, "pull-hosts") && a + 1 < argc) {
		return pull_hosts(argv[a + 1]);
	} else {
		return usage();
	}
	/* requestCrawl probes the host (up to 10 s); the rest answers at once or after one store write */
	json_t *r = bt_ctl_call(ep, req, !strcmp(cmd, "request-crawl") ? 15000 : 5000);
	if (!r) {
		fprintf(stderr, "batonctl: no answer from %s\n", ep);
		return 1;
	}
	if (!strcmp(cmd, "status") && !json_out && !json_object_get(r, "error")) {
		/* rates: a second answer one second later */
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		usleep(1000000);
		json_t *r2 = bt_ctl_call(ep, json_pack("{s:s}", "op", "status"), 5000);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		print_status(r, r2 ? r2 : r, r2 ? secs : 1);
		json_decref(r2);
		json_decref(r);
		return 0;
	}
	char *txt = json_dumps(r, JSON_INDENT(1));
	puts(txt);
	free(txt);
	/* A refusal ({ok:false} or {error}) exits 1, so scripts can tell. */
	int rc = json_is_false(json_object_get(r, "ok")) || json_object_get(r, "error") ? 1 : 0;
	json_decref(r);
	return rc;
}

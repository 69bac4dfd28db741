/*
 * NAME
 *	batonctl - talk to a running baton over its ZeroMQ control sockets
 * DESCRIPTION
 *	batonctl status              stages, pids, restarts, heartbeats and counters (JSON)
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
 *	It finds the relay through the same RELAY_SHM_DIR and RELAY_NAME as the relay.
 * DIAGNOSTICS
 *	Exit 1 if the relay does not answer in time (5 s; request-crawl 15 s) or refuses (the answer is printed), 2 on a
 *	usage error.
 */
#include "bt_ctl.h"
#include "bt_host.h"
#include "bt_params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
	fprintf(stderr, "usage: batonctl status | restart ROLE [INDEX] | hosts | upstreams | block HOST | unblock HOST\n"
			"  | kill-upstream HOST [--block] | ban-domain D | unban-domain D | domain-bans | crawl\n"
			"  | enable-crawls | disable-crawls | per-day-limit N | request-crawl HOST [CURSOR] | import-hosts FILE\n"
			"  | change-limits HOST ACCOUNT_LIMIT [PER_SECOND PER_HOUR PER_DAY]\n"
			"  (reads RELAY_SHM_DIR and RELAY_NAME like baton; see baton --help)\n");
	return 2;
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
		bool insecure;
		const char *why = NULL;
		if (bt_host_normalize(line, bt_cfg.allow_insecure_hosts, host, sizeof host, &insecure, &why) < 0) {
			fprintf(stderr, "batonctl: %s: %s\n", line, why);
			refused++;
			continue;
		}
		json_t *r = bt_ctl_call(ep, json_pack("{s:s,s:s}", "op", "addHost", "hostname", host), 3000);
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

int main(int argc, char **argv)
{
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
	} else if (!strcmp(cmd, "import-hosts") && a + 1 < argc) {
		return import_hosts(argv[a + 1]);
	} else {
		return usage();
	}
	/* requestCrawl probes the host (up to 10 s); the rest answers at once or after one store write */
	json_t *r = bt_ctl_call(ep, req, !strcmp(cmd, "request-crawl") ? 15000 : 5000);
	if (!r) {
		fprintf(stderr, "batonctl: no answer from %s\n", ep);
		return 1;
	}
	char *txt = json_dumps(r, JSON_INDENT(1));
	puts(txt);
	free(txt);
	/* A refusal ({ok:false} or {error}) exits 1, so scripts can tell. */
	int rc = json_is_false(json_object_get(r, "ok")) || json_object_get(r, "error") ? 1 : 0;
	json_decref(r);
	return rc;
}

/*
 * NAME
 *	bt_params - parsing of the parameter table (see bt_params.h)
 */
#include "bt_params.h"
#include "bt_log.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct bt_config bt_cfg;

struct pdesc {
	enum bt_param_type type;
	const char *field, *env, *def, *doc;
	int64_t lo, hi;
	size_t off;
};

#define X(t, f, e, d, lo, hi, doc) { BT_P_##t, #f, e, d, doc, lo, hi, offsetof(struct bt_config, f) },
static const struct pdesc params[] = { BT_PARAMS(X) };
#undef X
#define N_PARAMS (sizeof params / sizeof params[0])

static const char *type_name(enum bt_param_type t)
{
	switch (t) {
	case BT_P_STR: return "string";
	case BT_P_INT: return "int";
	case BT_P_BOOL: return "bool";
	case BT_P_DUR: return "duration";
	}
	return "?";
}

static int parse_dur(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || v < 0)
		return -1;
	int64_t mul = 1;
	if (*end == 's')
		mul = 1, end++;
	else if (*end == 'm')
		mul = 60, end++;
	else if (*end == 'h')
		mul = 3600, end++;
	else if (*end == 'd')
		mul = 86400, end++;
	if (*end)
		return -1;
	*out = v * mul;
	return 0;
}

static void set_param(const struct pdesc *p, const char *v, const char *src)
{
	char *base = (char *)&bt_cfg;
	switch (p->type) {
	case BT_P_STR:
		if (strlen(v) >= 512)
			bt_die_config("%s: value too long (from %s)", p->env, src);
		strcpy(base + p->off, v);
		break;
	case BT_P_BOOL:
		if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes"))
			*(bool *)(base + p->off) = true;
		else if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no"))
			*(bool *)(base + p->off) = false;
		else
			bt_die_config("%s: '%s' is not a boolean (from %s)", p->env, v, src);
		break;
	case BT_P_INT:
	case BT_P_DUR: {
		int64_t x;
		char *end;
		if (p->type == BT_P_INT) {
			errno = 0;
			x = strtoll(v, &end, 10);
			if (errno || end == v || *end)
				bt_die_config("%s: '%s' is not an integer (from %s)", p->env, v, src);
		} else if (parse_dur(v, &x) < 0) {
			bt_die_config("%s: '%s' is not a duration (from %s)", p->env, v, src);
		}
		if (x < p->lo || x > p->hi)
			bt_die_config("%s: %lld is outside [%lld, %lld] (from %s)", p->env, (long long)x,
				      (long long)p->lo, (long long)p->hi, src);
		*(int64_t *)(base + p->off) = x;
		break;
	}
	}
}

/* The parameters a running relay takes from `batonctl reload`: each is read where it is used,
   so a new value applies from the next use on. */
static const char *const runtime_ok[] = { "RELAY_LOG_LEVEL", "RELAY_MAX_CONNS_PER_IP", "RELAY_CONSUMER_BUFFER_MB",
					  "RELAY_CONSUMER_READ_TIMEOUT", "RELAY_COVERAGE_MIN_PERCENT",
					  "RELAY_METRICS_TOP_HOSTS", "RELAY_HEARTBEAT_TIMEOUT", "RELAY_COMMIT_WINDOW_US",
					  "RELAY_REPLAY_WINDOW" };

int bt_params_set_runtime(const char *env, const char *v, char *err, size_t cap)
{
	const struct pdesc *p = NULL;
	for (size_t i = 0; i < N_PARAMS; i++)
		if (!strcmp(params[i].env, env))
			p = &params[i];
	if (!p) {
		snprintf(err, cap, "%s: no such parameter", env);
		return -ENOENT;
	}
	bool ok = false;
	for (size_t i = 0; i < sizeof runtime_ok / sizeof *runtime_ok; i++)
		ok |= !strcmp(runtime_ok[i], env);
	if (!ok) {
		snprintf(err, cap, "%s cannot change while the relay runs (restart it)", env);
		return -EPERM;
	}
	char *base = (char *)&bt_cfg;
	if (p->type == BT_P_STR) {
		if (!strcmp(env, "RELAY_LOG_LEVEL")) {
			int l = bt_log_parse_level(v);
			if (l < 0) {
				snprintf(err, cap, "%s: unknown level '%s'", env, v);
				return -EINVAL;
			}
			bt_log_set_level((enum bt_log_level)l);
		}
		snprintf(base + p->off, 512, "%s", v);
		return 0;
	}
	int64_t x;
	char *end;
	errno = 0;
	if (p->type == BT_P_INT) {
		x = strtoll(v, &end, 10);
		if (errno || end == v || *end)
			x = p->lo - 1;
	} else if (p->type != BT_P_DUR || parse_dur(v, &x) < 0) {
		x = p->lo - 1;
	}
	if (x < p->lo || x > p->hi) {
		snprintf(err, cap, "%s: '%s' is not a %s in [%lld, %lld]", env, v, type_name(p->type), (long long)p->lo,
			 (long long)p->hi);
		return -EINVAL;
	}
	*(int64_t *)(base + p->off) = x;
	return 0;
}

static void flag_name(const struct pdesc *p, char *out, size_t cap)
{
	snprintf(out, cap, "--%s", p->field);
	for (char *c = out + 2; *c; c++)
		if (*c == '_')
			*c = '-';
}

static void usage(const char *prog, const char *about, bool markdown)
{
	if (markdown) {
		printf("| flag | environment | type | default | doc |\n|---|---|---|---|---|\n");
		for (size_t i = 0; i < N_PARAMS; i++) {
			char fl[64];
			flag_name(&params[i], fl, sizeof fl);
			printf("| `%s` | `%s` | %s | `%s` | %s |\n", fl, params[i].env,
			       type_name(params[i].type), params[i].def, params[i].doc);
		}
		return;
	}
	printf("usage: %s [--flag=value ...]\n%s\n\n", prog, about);
	printf("Every flag can also be set by its environment variable.\n\n");
	for (size_t i = 0; i < N_PARAMS; i++) {
		char fl[64];
		flag_name(&params[i], fl, sizeof fl);
		printf("  %-28s %-32s %s (%s, default \"%s\")\n", fl, params[i].env, params[i].doc,
		       type_name(params[i].type), params[i].def);
	}
	printf("  %-28s %-32s %s\n", "--index", "BATON_INDEX",
	       "which verify/fanout process this is (set by the supervisor; \"auto\": a fanout claims a free slot)");
	printf("  %-28s %-32s %s\n", "--version", "", "prints the build's version (git describe) and exits");
}

#ifndef BT_VERSION
#define BT_VERSION "unknown"
#endif
const char *bt_version(void)
{
	return BT_VERSION;
}

void bt_params_load(int argc, char **argv, const char *prog, const char *about)
{
	memset(&bt_cfg, 0, sizeof bt_cfg);
	for (size_t i = 0; i < N_PARAMS; i++) {
		const char *v = getenv(params[i].env);
		set_param(&params[i], v ? v : params[i].def, v ? "environment" : "default");
	}
	const char *ix = getenv("BATON_INDEX");
	bt_cfg.index = !ix ? 0 : !strcmp(ix, "auto") ? -1 : atoi(ix);
	for (int a = 1; a < argc; a++) {
		const char *arg = argv[a];
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			usage(prog, about, false);
			exit(0);
		}
		if (!strcmp(arg, "--version")) {
			printf("%s %s\n", prog, bt_version());
			exit(0);
		}
		if (!strcmp(arg, "--help-markdown")) {
			usage(prog, about, true);
			exit(0);
		}
		const char *eq = strchr(arg, '=');
		char name[128];
		const char *val;
		if (eq) {
			snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
			val = eq + 1;
		} else {
			snprintf(name, sizeof name, "%s", arg);
			val = a + 1 < argc ? argv[++a] : NULL;
		}
		if (!val)
			bt_die_config("flag %s needs a value", name);
		if (!strcmp(name, "--index")) {
			bt_cfg.index = !strcmp(val, "auto") ? -1 : atoi(val);
			continue;
		}
		size_t i;
		for (i = 0; i < N_PARAMS; i++) {
			char fl[64];
			flag_name(&params[i], fl, sizeof fl);
			if (!strcmp(fl, name))
				break;
		}
		if (i == N_PARAMS)
			bt_die_config("unknown flag %s (see --help)", name);
		set_param(&params[i], val, "flag");
	}
	bt_cfg.n_verify = (int)bt_cfg.verify_procs;
	if (bt_cfg.n_verify == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		bt_cfg.n_verify = n < 1 ? 1 : n > 16 ? 16 : (int)n;
	}
	int l = bt_log_parse_level(bt_cfg.log_level);
	if (l < 0)
		bt_die_config("RELAY_LOG_LEVEL: unknown level '%s'", bt_cfg.log_level);
	bt_log_set_level((enum bt_log_level)l);
}

void bt_params_export(void)
{
	char *base = (char *)&bt_cfg;
	for (size_t i = 0; i < N_PARAMS; i++) {
		const struct pdesc *p = &params[i];
		char v[600];
		switch (p->type) {
		case BT_P_STR: snprintf(v, sizeof v, "%s", base + p->off); break;
		case BT_P_BOOL: snprintf(v, sizeof v, "%s", *(bool *)(base + p->off) ? "true" : "false"); break;
		case BT_P_INT:
		case BT_P_DUR: snprintf(v, sizeof v, "%lld", (long long)*(int64_t *)(base + p->off)); break;
		}
		setenv(p->env, v, 1);
	}
	char k[16];
	snprintf(k, sizeof k, "%d", bt_cfg.n_verify);
	setenv("RELAY_VERIFY_PROCS", k, 1);
}

void bt_params_shm_path(char *out, unsigned cap)
{
	snprintf(out, cap, "%s/baton-%s.shm", bt_cfg.shm_dir, bt_cfg.name);
}

void bt_params_ipc(const char *what, char *out, unsigned cap)
{
	snprintf(out, cap, "ipc://%s/baton-%s-%s.sock", bt_cfg.shm_dir, bt_cfg.name, what);
}

/*
 * NAME
 *	bt_proc - the stage skeleton (see bt_proc.h)
 */
#include "bt_proc.h"
#include "bt_log.h"
#include "bt_shm.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <errno.h>
#include <unistd.h>

struct bt_proc bt_proc;
volatile sig_atomic_t bt_proc_stop;

static void on_signal(int sig)
{
	bt_proc_stop = 1;
}

/* A slot (stats page) is taken while the process whose pid it holds is alive.  Stages share
   a pid namespace with each other (spawned by the supervisor, or `pid: service:supervisor`
   under compose), so kill(pid, 0) tells. */
static bool slot_free(struct bt_stats_page *p, int32_t *pid)
{
	*pid = atomic_load(&p->pid);
	return *pid == 0 || *pid == (int32_t)getpid() || !bt_pid_alive(*pid);
}

/* Take the slot of (role, idx) with a compare-and-swap on its pid, so two starters never hold
   the same one.  idx < 0 (BATON_INDEX=auto, scaled fanouts): the first free slot.  Waits up to
   RELAY_ATTACH_WAIT for a slot a dying predecessor still holds. */
static int claim_slot(enum bt_role role, int idx, int n)
{
	uint64_t deadline = bt_now_ms() + (uint64_t)bt_cfg.attach_wait * 1000u;
	do {
		for (int i = idx < 0 ? 0 : idx; i < (idx < 0 ? n : idx + 1); i++) {
			struct bt_stats_page *p = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(bt_pipe_slot(role, i)));
			int32_t pid;
			if (slot_free(p, &pid) && atomic_compare_exchange_strong(&p->pid, &pid, (int32_t)getpid()))
				return i;
		}
		usleep(100000);
	} while (bt_now_ms() < deadline && !bt_proc_stop);
	return -1;
}

void bt_proc_check_limits(uint64_t ring_cap, uint64_t bcast_cap)
{
	size_t frame = (size_t)bt_cfg.max_frame_bytes;
	const struct {
		uint64_t cap;
		size_t need;
		const char *what;
	} need[] = {
		{ ring_cap, sizeof(struct bt_rec_frame) + frame, "ingest->verify (RELAY_RING_MB)" },
		{ ring_cap, sizeof(struct bt_rec_verdict) + frame + BT_VERDICT_SLACK, "verify->store (RELAY_RING_MB)" },
		{ bcast_cap, frame + BT_VERDICT_SLACK, "broadcast (RELAY_BCAST_RING_MB)" },
	};
	for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
		if (BT_RING_MAX_RECORD(need[i].cap) < need[i].need)
			bt_die_config("RELAY_MAX_FRAME_BYTES=%zu needs records of %zu bytes in the %s ring, whose "
				      "largest is %zu: raise the ring or lower the frame limit",
				      frame, need[i].need, need[i].what, BT_RING_MAX_RECORD(need[i].cap));
}

void bt_proc_init(enum bt_role role, int argc, char **argv, const char *about)
{
	char name[32];
	snprintf(name, sizeof name, "baton-%s", bt_role_name(role));
	bt_params_load(argc, argv, name, about);
	prctl(PR_SET_NAME, name, 0, 0, 0);
	/* No PDEATHSIG: a stage outlives its supervisor for RELAY_ORPHAN_TIMEOUT, so a new baton can
	   adopt the running pipeline (sup_watch below); then it stops on its own. */
	bt_proc.role = role;
	bt_proc.index = (role == BT_ROLE_VERIFY || role == BT_ROLE_FANOUT) ? bt_cfg.index : -1;
	bt_log_init(name, bt_proc.index);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	char path[600];
	bt_params_shm_path(path, sizeof path);
	/* Started by something other than our supervisor (docker-compose), a stage may come up
	   before the segment exists: wait for it, bounded. */
	uint64_t deadline = bt_now_ms() + (uint64_t)bt_cfg.attach_wait * 1000u;
	int rc;
	while ((rc = bt_shm_open(path, &bt_proc.shm)) == -ENOENT && bt_now_ms() < deadline && !bt_proc_stop)
		usleep(100000);
	if (rc < 0)
		bt_die_config("cannot attach the shared-memory segment %s (%d): is the supervisor running?", path, rc);
	struct bt_sup_page *sp = bt_shm_page(bt_proc.shm, 0);
	bt_proc.K = (int)sp->n_verify;
	bt_proc.N = (int)sp->n_fanout;
	if (bt_proc.K < 1 || bt_proc.K > BT_MAX_VERIFY || bt_proc.N < 1 || bt_proc.N > BT_MAX_FANOUT)
		bt_die_config("segment %s has a bad process count K=%d N=%d", path, bt_proc.K, bt_proc.N);
	/* Fanouts scale on their own: any of the BT_MAX_FANOUT slots, whatever N the segment was
	   made with (N is only how many the supervisor starts). */
	int n = role == BT_ROLE_VERIFY ? bt_proc.K : role == BT_ROLE_FANOUT ? BT_MAX_FANOUT : 1;
	int want = role == BT_ROLE_VERIFY || role == BT_ROLE_FANOUT ? bt_cfg.index : 0;
	if (want >= n || (want < 0 && role != BT_ROLE_FANOUT))
		bt_die_config("index %d is out of range (K=%d verify, %d fanout slots)", want, bt_proc.K, BT_MAX_FANOUT);
	int got = claim_slot(role, want, n);
	if (got < 0)
		bt_die_config("no free %s slot (index %d): another live process holds it", bt_role_name(role), want);
	if (role == BT_ROLE_VERIFY || role == BT_ROLE_FANOUT)
		bt_proc.index = got;
	bt_log_init(name, bt_proc.index);
	unsigned slot = bt_pipe_slot(role, bt_proc.index < 0 ? 0 : bt_proc.index);
	bt_proc.stats = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(slot));
	bt_proc.stats->role = (uint32_t)role;
	bt_proc.stats->index = (uint32_t)(bt_proc.index < 0 ? 0 : bt_proc.index);
	bt_proc_beat();
	BT_INFO("started (K=%d N=%d)", bt_proc.K, bt_proc.N);
}

bool bt_pid_alive(int32_t pid)
{
	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
		return false;
	/* a zombie (dead, not reaped yet) is not alive */
	char path[64], st[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return true; /* no /proc: kill(0) said it exists */
	size_t n = fread(st, 1, sizeof st - 1, f);
	fclose(f);
	st[n] = 0;
	const char *rp = strrchr(st, ')');
	return !(rp && rp[1] == ' ' && rp[2] == 'Z');
}

/* Once a second (from any thread's beat): is the supervisor that owns the segment alive?  A stage
   whose supervisor died keeps working (consumers stay connected) while a new baton may adopt it
   (supervisor_main.c); after RELAY_ORPHAN_TIMEOUT without one it stops as if told to.  Stages
   started by others (RELAY_SPAWN_STAGES=false) belong to their orchestrator: no watch. */
static _Atomic uint64_t next_sup_check, orphan_since;
static _Atomic int32_t last_sup;

/* batonctl reload: the parameters the supervisor published (once a second, and at start, so a
   stage started after a reload runs with it too). */
static uint32_t reload_applied;

static void reload_poll(struct bt_sup_page *sp)
{
	uint32_t g = atomic_load_explicit(&sp->reload_gen, memory_order_acquire);
	if (g == reload_applied || (g & 1))
		return;
	char blob[sizeof sp->reload];
	memcpy(blob, sp->reload, sizeof blob);
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&sp->reload_gen, memory_order_relaxed) != g)
		return; /* rewritten meanwhile: next second */
	blob[sizeof blob - 1] = 0;
	for (char *line = blob, *nl; line && *line; line = nl) {
		nl = strchr(line, '\n');
		if (nl)
			*nl++ = 0;
		char *eq = strchr(line, '=');
		if (!eq)
			continue;
		*eq = 0;
		char err[160];
		if (bt_params_set_runtime(line, eq + 1, err, sizeof err) < 0)
			BT_WARN("reload: %s", err);
		else if (reload_applied || g) /* at start, quiet unless there was a reload */
			BT_INFO("reload: %s=%s", line, eq + 1);
	}
	reload_applied = g;
	atomic_store(&bt_proc.stats->reload_seen, g);
}

static void sup_watch(uint64_t now)
{
	if (!bt_proc.shm)
		return;
	struct bt_sup_page *sp = bt_shm_page(bt_proc.shm, 0);
	reload_poll(sp);
	if (!bt_cfg.spawn_stages)
		return;
	int32_t pid = atomic_load(&sp->pid);
	uint64_t since = atomic_load(&orphan_since);
	if (bt_pid_alive(pid)) {
		int32_t was = atomic_exchange(&last_sup, pid);
		if (since || (was && was != pid))
			BT_INFO("adopted by the supervisor pid %d", (int)pid);
		atomic_store(&orphan_since, 0);
		return;
	}
	if (!since) {
		BT_WARN("the supervisor (pid %d) is gone: running on for up to %lld s for a new baton to adopt us",
			(int)pid, (long long)bt_cfg.orphan_timeout);
		atomic_store(&orphan_since, now);
	} else if (now - since > (uint64_t)bt_cfg.orphan_timeout * 1000u && !bt_proc_stop) {
		BT_WARN("no supervisor for %lld s: stopping", (long long)bt_cfg.orphan_timeout);
		kill(getpid(), SIGTERM); /* the stage's own clean stop */
	}
}

void bt_proc_beat(void)
{
	uint64_t now = bt_now_ms();
	atomic_store_explicit(&bt_proc.stats->heartbeat_ms, now, memory_order_release);
	uint64_t due = atomic_load_explicit(&next_sup_check, memory_order_relaxed);
	if (now >= due && atomic_compare_exchange_strong(&next_sup_check, &due, now + 1000))
		sup_watch(now);
}

void bt_proc_progress(uint64_t n)
{
	atomic_fetch_add_explicit(&bt_proc.stats->progress, n, memory_order_relaxed);
}

void bt_proc_exit(int code)
{
	BT_INFO("exiting (%d)", code);
	if (bt_proc.stats) {
		int32_t me = (int32_t)getpid(); /* the slot is free at once (a scaled-down fanout) */
		atomic_compare_exchange_strong(&bt_proc.stats->pid, &me, 0);
	}
	bt_shm_close(&bt_proc.shm);
	exit(code);
}

uint64_t bt_proc_store_gen(void)
{
	if (!bt_proc.shm)
		return 0;
	const struct bt_stats_page *p = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(bt_pipe_slot(BT_ROLE_STORE, 0)));
	return p ? bt_stat_get(p, BT_STAT_DB_OPENS) : 0;
}

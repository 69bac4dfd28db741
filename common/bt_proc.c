/*
 * NAME
 *	bt_proc - the stage skeleton (see bt_proc.h)
 */
#include "bt_proc.h"
#include "bt_log.h"
#include "bt_shm.h"

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

/* BATON_INDEX=auto (scaled fanouts under docker-compose): take the first fanout slot that no
   live process holds.  A slot is free when its pid is 0 or its heartbeat is older than the
   heartbeat timeout; the compare-and-swap on pid makes two starters never take the same one. */
static int claim_fanout_slot(void)
{
	uint64_t stale = (uint64_t)bt_cfg.heartbeat_timeout * 1000u;
	for (int i = 0; i < bt_proc.N; i++) {
		struct bt_stats_page *p = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(bt_pipe_slot(BT_ROLE_FANOUT, i)));
		int32_t pid = atomic_load(&p->pid);
		uint64_t hb = atomic_load(&p->heartbeat_ms), now = bt_now_ms();
		if (pid != 0 && now - hb < stale)
			continue;
		if (atomic_compare_exchange_strong(&p->pid, &pid, (int32_t)getpid())) {
			atomic_store(&p->heartbeat_ms, now);
			return i;
		}
	}
	return -1;
}

void bt_proc_init(enum bt_role role, int argc, char **argv, const char *about)
{
	char name[32];
	snprintf(name, sizeof name, "baton-%s", bt_role_name(role));
	bt_params_load(argc, argv, name, about);
	prctl(PR_SET_NAME, name, 0, 0, 0);
	/* Stages do not outlive the supervisor that owns their segment. */
	prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
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
	if (role == BT_ROLE_FANOUT && bt_cfg.index < 0)
		bt_proc.index = claim_fanout_slot();
	if ((role == BT_ROLE_VERIFY && (bt_proc.index < 0 || bt_proc.index >= bt_proc.K)) ||
	    (role == BT_ROLE_FANOUT && (bt_proc.index < 0 || bt_proc.index >= bt_proc.N)))
		bt_die_config("index %d is out of range (K=%d, N=%d)", bt_proc.index, bt_proc.K, bt_proc.N);
	bt_log_init(name, bt_proc.index);
	unsigned slot = bt_pipe_slot(role, bt_proc.index < 0 ? 0 : bt_proc.index);
	bt_proc.stats = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(slot));
	bt_proc.stats->role = (uint32_t)role;
	bt_proc.stats->index = (uint32_t)(bt_proc.index < 0 ? 0 : bt_proc.index);
	atomic_store(&bt_proc.stats->pid, (int32_t)getpid());
	bt_proc_beat();
	BT_INFO("started (K=%d N=%d)", bt_proc.K, bt_proc.N);
}

void bt_proc_beat(void)
{
	atomic_store_explicit(&bt_proc.stats->heartbeat_ms, bt_now_ms(), memory_order_release);
}

void bt_proc_progress(uint64_t n)
{
	atomic_fetch_add_explicit(&bt_proc.stats->progress, n, memory_order_relaxed);
}

void bt_proc_exit(int code)
{
	BT_INFO("exiting (%d)", code);
	bt_shm_close(&bt_proc.shm);
	exit(code);
}

/*
 * NAME
 *	baton - the supervisor: creates the shared memory, starts and restarts the stages
 * DESCRIPTION
 *	Deliberately small and dumb (Postfix's master): it never decodes a frame and never
 *	holds anything a child needs.  It
 *	  - creates RELAY_DATA_DIR and the shared-memory segment (rings, bells, stats pages),
 *	    so the segment outlives any stage, after taking the instance locks (sup_lock.c:
 *	    one relay per data directory, RELAY_NAME and port);
 *	  - starts baton-store, K baton-verify, N baton-fanout and baton-ingest from its own
 *	    directory, passing the resolved configuration in the environment;
 *	  - restarts a stage that exits or is killed, with exponential backoff; exit code 2
 *	    means fatal configuration and is never respawned (the relay stops with exit 2);
 *	  - kills (SIGKILL) and restarts a stage whose heartbeat is older than
 *	    RELAY_HEARTBEAT_TIMEOUT;
 *	  - answers batonctl on a ZeroMQ socket (status, restart, scale: fanouts may hold any of
 *	    the BT_MAX_FANOUT slots, and `scale fanout M` starts or stops them at any time);
 *	  - with RELAY_SPAWN_STAGES=false (docker-compose, where each stage is its own service)
 *	    it only creates the segment and reports the stages' heartbeats;
 *	  - on SIGINT/SIGTERM stops every stage (SIGTERM, then SIGKILL after 10 s) and exits 0;
 *	  - killed (-9) or crashed, it leaves the stages running (RELAY_ORPHAN_TIMEOUT, bt_proc.c):
 *	    the next baton started on the same RELAY_SHM_DIR and RELAY_NAME finds the segment and
 *	    its live stages (pids in their stats pages, checked by /proc) and adopts them: the
 *	    relay keeps serving, consumers stay connected.
 * DIAGNOSTICS
 *	Exit 2 on a configuration or environment error at start-up.
 */
#include "bt_ctl.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "sup.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got_stop;
static char bindir[PATH_MAX];
static char shm_path[PATH_MAX];
static struct bt_shm *shm;
static struct sup_stage stages[2 + BT_MAX_VERIFY + BT_MAX_FANOUT];
static int n_stages;
static int fatal_exit;

static void on_stop(int sig)
{
	got_stop = 1;
}

static uint64_t round_pow2(uint64_t v)
{
	uint64_t p = 1;
	while (p < v)
		p <<= 1;
	return p;
}

static int mkdir_p(const char *path)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The stage's restart count, also in the segment (the fanouts' /metrics and /dash read it). */
static void count_restart(struct sup_stage *s)
{
	s->restarts += 1;
	unsigned slot = bt_pipe_slot(s->role, s->index);
	struct bt_sup_page *sp = bt_shm_page(shm, 0);
	if (slot < sizeof sp->restarts / sizeof sp->restarts[0])
		atomic_store(&sp->restarts[slot], s->restarts);
}

static void add_stage(enum bt_role role, int index)
{
	struct sup_stage *s = &stages[n_stages++];
	memset(s, 0, sizeof *s);
	s->role = role;
	s->index = index;
	s->backoff_ms = 100;
	s->stats = bt_shm_page(shm, bt_pipe_page_of_slot(bt_pipe_slot(role, index)));
}

static void start_stage(struct sup_stage *s)
{
	char exe[PATH_MAX + 32], name[32], idx[16];
	snprintf(name, sizeof name, "baton-%s", bt_role_name(s->role));
	snprintf(exe, sizeof exe, "%s/%s", bindir, name);
	snprintf(idx, sizeof idx, "%d", s->index);
	/* Reset the heartbeat so the new process gets a full timeout to start. */
	atomic_store(&s->stats->heartbeat_ms, bt_now_ms());
	atomic_store(&s->stats->pid, 0);
	pid_t pid = fork();
	if (pid < 0) {
		BT_ERR("fork: %s", strerror(errno));
		s->next_start_ms = bt_now_ms() + 1000;
		return;
	}
	if (pid == 0) {
		/* Own process group: a terminal's Ctrl-C reaches only the supervisor, which stops the
		   stages in order with SIGTERM (if it dies they run on, for a new one to adopt them). */
		setpgid(0, 0);
		setenv("BATON_INDEX", idx, 1);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		char *argv[] = { name, NULL };
		execv(exe, argv);
		fprintf(stderr, "baton: exec %s: %s\n", exe, strerror(errno));
		_exit(2);
	}
	s->pid = pid;
	s->started_ms = bt_now_ms();
	s->progress0 = atomic_load(&s->stats->progress);
	s->state = SUP_RUNNING;
	BT_INFO("started %s[%d] pid=%d", name, s->index, (int)pid);
}

static void reap(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int i = 0; i < n_stages; i++) {
			struct sup_stage *s = &stages[i];
			if (s->pid != pid)
				continue;
			s->pid = 0;
			s->state = SUP_STOPPED;
			const char *name = bt_role_name(s->role);
			if (got_stop)
				break;
			if (!s->wanted) {
				BT_INFO("%s[%d] pid=%d stopped (scaled down)", name, s->index, (int)pid);
				break;
			}
			if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
				BT_ERR("%s[%d] exited with 2 (fatal configuration): not restarting; stopping the relay",
				       name, s->index);
				fatal_exit = 2;
				got_stop = 1;
				break;
			}
			if (WIFSIGNALED(status))
				BT_WARN("%s[%d] pid=%d killed by signal %d", name, s->index, (int)pid, WTERMSIG(status));
			else
				BT_WARN("%s[%d] pid=%d exited with %d", name, s->index, (int)pid, WEXITSTATUS(status));
			uint64_t now = bt_now_ms();
			/* A stage that ran long enough, or did work (consumed input) since it started, is
			   not crash-looping: forget earlier crashes, so a kill -9 under load costs 100 ms
			   of restart delay, not a backoff doubled by unrelated earlier kills (t7). */
			if (now - s->started_ms > 30000 || atomic_load(&s->stats->progress) != s->progress0)
				s->backoff_ms = 100;
			s->next_start_ms = now + s->backoff_ms;
			s->last_delay_ms = s->backoff_ms;
			s->backoff_ms = s->backoff_ms * 2 > 10000 ? 10000 : s->backoff_ms * 2;
			count_restart(s);
			s->state = SUP_BACKOFF;
		}
	}
}

static void check_heartbeats(void)
{
	uint64_t now = bt_now_ms();
	uint64_t limit = (uint64_t)bt_cfg.heartbeat_timeout * 1000u;
	for (int i = 0; i < n_stages; i++) {
		struct sup_stage *s = &stages[i];
		if (s->state == SUP_BACKOFF && now >= s->next_start_ms)
			start_stage(s);
		if (s->state != SUP_RUNNING || !s->pid)
			continue;
		uint64_t hb = atomic_load(&s->stats->heartbeat_ms);
		if (now > hb && now - hb > limit) {
			BT_ERR("%s[%d] pid=%d silent for %llu ms: killing it", bt_role_name(s->role), s->index,
			       (int)s->pid, (unsigned long long)(now - hb));
			kill(s->pid, SIGKILL);
			atomic_store(&s->stats->heartbeat_ms, now); /* one kill per timeout */
		}
	}
}

/* Stages started by others: adopt what their stats pages say (pid, heartbeat), for status.
   Restarting them is their orchestrator's job (docker-compose restart policies). */
static void watch_external(void)
{
	uint64_t now = bt_now_ms(), limit = (uint64_t)bt_cfg.heartbeat_timeout * 1000u;
	for (int i = 0; i < n_stages; i++) {
		struct sup_stage *s = &stages[i];
		int32_t pid = atomic_load(&s->stats->pid);
		uint64_t hb = atomic_load(&s->stats->heartbeat_ms);
		bool alive = pid > 0 && now - hb < limit && (kill(pid, 0) == 0 || errno != ESRCH);
		if (alive && s->state != SUP_RUNNING)
			BT_INFO("%s[%d] is up (pid %d in its namespace)", bt_role_name(s->role), s->index, (int)pid);
		else if (!alive && s->state == SUP_RUNNING)
			BT_WARN("%s[%d] stopped heartbeating", bt_role_name(s->role), s->index);
		if (alive && s->state != SUP_RUNNING)
			s->started_ms = now;
		s->pid = alive ? pid : 0;
		s->state = alive ? SUP_RUNNING : SUP_STOPPED;
		s->seen |= alive;
	}
}

/* The fanout slots we keep running, for the fanouts' health checks (bt_sup_page). */
static void publish_wanted(void)
{
	uint32_t m = 0;
	for (int i = 0; i < n_stages; i++)
		if (stages[i].role == BT_ROLE_FANOUT && stages[i].wanted && stages[i].index < 32)
			m |= 1u << stages[i].index;
	atomic_store(&((struct bt_sup_page *)bt_shm_page(shm, 0))->fanout_wanted, m);
}

/* batonctl scale fanout M: starts the fanouts of slots 0..M-1 that do not run and stops (SIGTERM,
   no restart) those of slots M and up; the segment's count follows (fanout health checks it). */
static json_t *scale_fanouts(int m)
{
	struct bt_sup_page *sp = bt_shm_page(shm, 0);
	int started = 0, stopped = 0;
	for (int i = 0; i < n_stages; i++) {
		struct sup_stage *s = &stages[i];
		if (s->role != BT_ROLE_FANOUT)
			continue;
		bool want = s->index < m;
		if (want && !s->wanted) {
			s->wanted = true;
			s->backoff_ms = 100;
			if (!s->pid) {
				start_stage(s);
				s->seen = true;
				started++;
			}
		} else if (!want && s->wanted) {
			s->wanted = false;
			if (s->pid) {
				kill(s->pid, SIGHUP); /* hands its consumers to the ones that stay, then exits */
				stopped++;
			}
			s->state = s->pid ? SUP_RUNNING : SUP_STOPPED;
		}
	}
	atomic_store(&sp->n_fanout, (uint32_t)m);
	publish_wanted();
	sup_set_counts(sup_counts_get().K, m);
	BT_INFO("scaled fanouts to %d (%d started, %d stopped)", m, started, stopped);
	return json_pack("{s:b,s:i,s:i,s:i}", "ok", 1, "fanouts", m, "started", started, "stopped", stopped);
}

/* Adopted stages are not our children: one that is gone is restarted like an exited child. */
static void check_adopted(void)
{
	for (int i = 0; i < n_stages; i++) {
		struct sup_stage *s = &stages[i];
		if (!s->adopted || !s->pid || bt_pid_alive(s->pid))
			continue;
		BT_WARN("%s[%d] pid=%d (adopted) is gone", bt_role_name(s->role), s->index, (int)s->pid);
		s->adopted = false;
		s->pid = 0;
		s->state = SUP_STOPPED;
		if (got_stop || !s->wanted)
			continue;
		s->next_start_ms = bt_now_ms() + s->backoff_ms;
		s->last_delay_ms = s->backoff_ms;
		count_restart(s);
		s->state = SUP_BACKOFF;
	}
}

/* A segment left by a supervisor that died (kill -9, a crash, an upgrade) while its stages run
   on (bt_proc.c: they wait RELAY_ORPHAN_TIMEOUT for us): open it instead of making a new one,
   and take over its stages.  True (shm set) when at least one stage of it is alive. */
static bool find_orphans(void)
{
	struct bt_shm *old;
	if (bt_shm_open(shm_path, &old) < 0)
		return false;
	struct bt_sup_page *sp = bt_shm_page(old, 0);
	int live = 0;
	if (!bt_pid_alive(atomic_load(&sp->pid)) && sp->n_verify >= 1 && sp->n_verify <= BT_MAX_VERIFY) {
		for (unsigned slot = 0; slot < 2 + BT_MAX_VERIFY + BT_MAX_FANOUT; slot++) {
			struct bt_stats_page *p = bt_shm_page(old, bt_pipe_page_of_slot(slot));
			char path[64], comm[32] = "";
			int32_t pid = p ? atomic_load(&p->pid) : 0;
			if (!bt_pid_alive(pid))
				continue;
			snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
			FILE *f = fopen(path, "r");
			if (f) {
				if (!fgets(comm, sizeof comm, f))
					comm[0] = 0;
				fclose(f);
			}
			live += !strncmp(comm, "baton-", 6); /* not a recycled pid */
		}
	}
	if (!live) {
		bt_shm_close(&old);
		return false;
	}
	shm = old;
	BT_INFO("adopting %d running stages of the segment %s (their supervisor pid %d is gone)", live, shm_path,
		(int)atomic_load(&sp->pid));
	return true;
}

/* batonctl reload {set: {ENV: value}}: checked and applied here first (all or none), exported
   for stages started later, and published in the segment for the running ones (bt_proc.c). */
static json_t *reloaded; /* every parameter reloaded so far */

static json_t *reload(json_t *set)
{
	if (!json_is_object(set) || !json_object_size(set))
		return json_pack("{s:b,s:s}", "ok", 0, "error", "reload KEY=VALUE ...");
	struct bt_config was = bt_cfg;
	const char *k;
	json_t *v;
	char err[200];
	json_object_foreach(set, k, v)
	{
		if (!json_is_string(v) || strlen(json_string_value(v)) > 200 ||
		    bt_params_set_runtime(k, json_string_value(v), err, sizeof err) < 0) {
			if (!json_is_string(v) || strlen(json_string_value(v)) > 200)
				snprintf(err, sizeof err, "%s: the value must be a string of at most 200 bytes", k);
			bt_cfg = was;
			int l = bt_log_parse_level(bt_cfg.log_level);
			if (l >= 0)
				bt_log_set_level((enum bt_log_level)l);
			return json_pack("{s:b,s:s}", "ok", 0, "error", err);
		}
	}
	if (!reloaded)
		reloaded = json_object();
	json_object_foreach(set, k, v)
	{
		setenv(k, json_string_value(v), 1);
		json_object_set(reloaded, k, v);
	}
	char blob[sizeof ((struct bt_sup_page *)0)->reload] = "";
	size_t n = 0;
	json_object_foreach(reloaded, k, v)
	{
		int w = snprintf(blob + n, sizeof blob - n, "%s=%s\n", k, json_string_value(v));
		if (w < 0 || (size_t)w >= sizeof blob - n)
			return json_pack("{s:b,s:s}", "ok", 0, "error", "too many reloaded parameters");
		n += (size_t)w;
	}
	struct bt_sup_page *sp = bt_shm_page(shm, 0);
	uint32_t g = atomic_load(&sp->reload_gen);
	atomic_store(&sp->reload_gen, g + 1); /* odd: being written */
	memcpy(sp->reload, blob, sizeof blob);
	atomic_store(&sp->reload_gen, g + 2);
	BT_INFO("reload %u: %s", g + 2, blob);
	return json_pack("{s:b,s:i,s:O}", "ok", 1, "gen", (int)(g + 2), "set", reloaded);
}

static void on_ctl(void *arg, struct bt_ctl_req *req, json_t *msg)
{
	const char *op = json_string_value(json_object_get(msg, "op"));
	if (op && !strcmp(op, "status")) {
		json_t *st = sup_status_json(stages, n_stages, sup_counts_get());
		/* The fill of every ingest->verify and verify->store ring (the broadcast ring is always
		   full: it overwrites, fanouts lapped read from RocksDB). */
		json_t *rings = json_array();
		int K = sup_counts_get().K;
		for (int k = 0; k < K; k++)
			for (int d = 0; d < 2; d++) {
				struct bt_ring *r = bt_shm_ring(shm, d ? bt_pipe_ring_out(K, k) : bt_pipe_ring_in(k));
				if (!r)
					continue;
				char name[48];
				snprintf(name, sizeof name, d ? "verify-%d->store" : "ingest->verify-%d", k);
				json_array_append_new(rings, json_pack("{s:s,s:I,s:I}", "ring", name, "used",
								       (json_int_t)bt_ring_used(r), "capacity",
								       (json_int_t)bt_ring_capacity(r)));
			}
		json_object_set_new(st, "rings", rings);
		bt_ctl_reply(req, st);
		return;
	}
	if (op && !strcmp(op, "scale")) {
		const char *role = json_string_value(json_object_get(msg, "role"));
		json_t *nj = json_object_get(msg, "n");
		if (!bt_cfg.spawn_stages)
			bt_ctl_reply(req, json_pack("{s:b,s:s}", "ok", 0, "error",
						    "stages are not ours to scale (RELAY_SPAWN_STAGES=false): docker compose up --scale fanout=N"));
		else if (!role || strcmp(role, "fanout") || !json_is_integer(nj) || json_integer_value(nj) < 1 ||
			 json_integer_value(nj) > BT_MAX_FANOUT)
			bt_ctl_reply(req, json_pack("{s:b,s:s}", "ok", 0, "error", "scale fanout N, N from 1 to 32"));
		else
			bt_ctl_reply(req, scale_fanouts((int)json_integer_value(nj)));
		return;
	}
	if (op && !strcmp(op, "drain")) {
		/* batonctl drain fanout I: out of service without dropping a consumer: it hands them
		   all to the other fanouts and is not started again (batonctl scale brings it back). */
		json_int_t idx = json_integer_value(json_object_get(msg, "index"));
		struct sup_stage *t = NULL;
		for (int i = 0; i < n_stages; i++)
			if (stages[i].role == BT_ROLE_FANOUT && stages[i].index == idx && stages[i].pid)
				t = &stages[i];
		int others = 0;
		for (int i = 0; i < n_stages; i++)
			others += stages[i].role == BT_ROLE_FANOUT && stages[i].pid && &stages[i] != t;
		if (!bt_cfg.spawn_stages || !t || !others) {
			bt_ctl_reply(req, json_pack("{s:b,s:s}", "ok", 0, "error",
						    !bt_cfg.spawn_stages ? "stages are not ours (RELAY_SPAWN_STAGES=false)"
						    : !t		 ? "no such running fanout"
									 : "it is the only fanout running"));
			return;
		}
		t->wanted = false;
		publish_wanted();
		kill(t->pid, SIGHUP);
		BT_INFO("draining fanout[%d] pid=%d", t->index, (int)t->pid);
		bt_ctl_reply(req, json_pack("{s:b,s:i}", "ok", 1, "draining", (int)t->index));
		return;
	}
	if (op && !strcmp(op, "reload")) {
		bt_ctl_reply(req, reload(json_object_get(msg, "set")));
		return;
	}
	if (op && !strcmp(op, "restart") && !bt_cfg.spawn_stages) {
		bt_ctl_reply(req, json_pack("{s:b,s:s}", "ok", 0, "error", "stages are not ours to restart (RELAY_SPAWN_STAGES=false)"));
		return;
	}
	if (op && !strcmp(op, "restart")) {
		const char *role = json_string_value(json_object_get(msg, "role"));
		json_int_t idx = json_integer_value(json_object_get(msg, "index"));
		int n = 0;
		bool known = false;
		for (int i = 0; i < n_stages; i++)
			known |= role && !strcmp(role, bt_role_name(stages[i].role));
		if (!known) {
			bt_ctl_reply(req, json_pack("{s:b,s:s}", "ok", 0, "error",
						    "no such stage (ingest, verify, store or fanout)"));
			return;
		}
		for (int i = 0; i < n_stages; i++) {
			struct sup_stage *s = &stages[i];
			if (role && !strcmp(role, bt_role_name(s->role)) &&
			    (!json_object_get(msg, "index") || idx == s->index) && s->pid) {
				/* A fanout gets SIGHUP: it hands its open consumers to another fanout first
				   (fanout/fanout_hand.c), then exits and is started again. */
				kill(s->pid, s->role == BT_ROLE_FANOUT ? SIGHUP : SIGTERM);
				n++;
			}
		}
		bt_ctl_reply(req, json_pack("{s:b,s:i}", "ok", n > 0, "signalled", n));
		return;
	}
	bt_ctl_reply(req, json_pack("{s:s}", "error", "UnknownOp"));
}

static void stop_all(void)
{
	if (!bt_cfg.spawn_stages)
		return; /* not our children: their orchestrator stops them */
	for (int i = 0; i < n_stages; i++)
		if (stages[i].pid)
			kill(stages[i].pid, SIGTERM);
	uint64_t deadline = bt_now_ms() + 10000;
	for (;;) {
		reap();
		for (int i = 0; i < n_stages; i++)
			if (stages[i].adopted && stages[i].pid && !bt_pid_alive(stages[i].pid))
				stages[i].pid = 0; /* not our child: no wait status */
		int alive = 0;
		for (int i = 0; i < n_stages; i++)
			alive += stages[i].pid != 0;
		if (!alive)
			break;
		if (bt_now_ms() > deadline) {
			for (int i = 0; i < n_stages; i++)
				if (stages[i].pid) {
					BT_WARN("%s[%d] did not stop: SIGKILL", bt_role_name(stages[i].role),
						stages[i].index);
					kill(stages[i].pid, SIGKILL);
				}
			deadline = UINT64_MAX;
		}
		usleep(20000);
	}
}

int main(int argc, char **argv)
{
	bt_params_load(argc, argv, "baton",
		       "baton: an AT Protocol relay. Starts the ingest, verify, store and fanout processes.");
	bt_log_init("baton-supervisor", -1);
	if (bt_cfg.index != 0)
		bt_die_config("--index is for stages, not the supervisor");

	/* The stages live next to this binary. */
	ssize_t n = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
	if (n <= 0)
		bt_die_config("cannot find my own binary: %s", strerror(errno));
	bindir[n] = 0;
	*strrchr(bindir, '/') = 0;

	int rc = mkdir_p(bt_cfg.data_dir);
	if (rc < 0)
		bt_die_config("cannot create RELAY_DATA_DIR %s: %s", bt_cfg.data_dir, strerror(-rc));
	char sec[PATH_MAX];
	snprintf(sec, sizeof sec, "%s/secondary", bt_cfg.data_dir);
	mkdir_p(sec);
	if ((rc = mkdir_p(bt_cfg.shm_dir)) < 0)
		bt_die_config("cannot create RELAY_SHM_DIR %s: %s", bt_cfg.shm_dir, strerror(-rc));
	bt_params_shm_path(shm_path, sizeof shm_path);
	bool adopting = bt_cfg.spawn_stages && find_orphans();
	sup_take_locks(adopting); /* before the segment and the sockets, which another instance may own */

	int K = bt_cfg.n_verify, N = (int)bt_cfg.fanout_procs;
	if (adopting) {
		struct bt_sup_page *op = bt_shm_page(shm, 0);
		if ((int)op->n_verify != K || (int)atomic_load(&op->n_fanout) != N)
			BT_WARN("adopted segment has K=%u verify, N=%u fanout (configured: %d, %d): kept; a change of "
				"RELAY_VERIFY_PROCS needs a full restart", op->n_verify, atomic_load(&op->n_fanout), K, N);
		K = (int)op->n_verify;
		N = (int)atomic_load(&op->n_fanout);
	} else {
	struct bt_shm_layout lay;
	memset(&lay, 0, sizeof lay);
	uint64_t ring = round_pow2((uint64_t)bt_cfg.ring_mb << 20);
	uint64_t bcast = round_pow2((uint64_t)bt_cfg.bcast_ring_mb << 20);
	bt_proc_check_limits(ring, bcast);
	for (int k = 0; k < K; k++) {
		lay.rings[bt_pipe_ring_in(k)].kind = BT_RING_SPSC;
		lay.rings[bt_pipe_ring_in(k)].capacity = ring;
		lay.rings[bt_pipe_ring_in(k)].bell = bt_pipe_bell_verify(k);
		lay.rings[bt_pipe_ring_out(K, k)].kind = BT_RING_SPSC;
		lay.rings[bt_pipe_ring_out(K, k)].capacity = ring;
		lay.rings[bt_pipe_ring_out(K, k)].bell = bt_pipe_bell_store();
	}
	lay.rings[bt_pipe_ring_bcast(K)].kind = BT_RING_BCAST;
	lay.rings[bt_pipe_ring_bcast(K)].capacity = bcast;
	lay.rings[bt_pipe_ring_bcast(K)].bell = bt_pipe_bell_fanout(K);
	lay.n_rings = (unsigned)(2 * K + 1);
	lay.n_bells = (unsigned)(K + 2);
	lay.n_pages = BT_PIPE_N_PAGES;
	if ((rc = bt_shm_create(shm_path, &lay, &shm)) == -ENOSPC)
		/* In a container /dev/shm is 64 MiB unless raised (docs/docker.md). */
		bt_die_config("cannot create the shared-memory segment %s: %" PRIu64 " MiB do not fit in "
			      "RELAY_SHM_DIR %s (2*K*RELAY_RING_MB + RELAY_BCAST_RING_MB plus a few pages); "
			      "in a container raise /dev/shm (docker run --shm-size, compose shm_size)",
			      shm_path, ((2 * (uint64_t)K * ring + bcast) >> 20) + 1, bt_cfg.shm_dir);
	if (rc < 0)
		bt_die_config("cannot create the shared-memory segment %s: %s", shm_path, strerror(-rc));
	struct bt_sup_page *sp = bt_shm_page(shm, 0);
	sp->n_verify = (uint32_t)K;
	sp->n_fanout = (uint32_t)N;
	atomic_store(&sp->started_ms, bt_wall_ms());
	}
	atomic_store(&((struct bt_sup_page *)bt_shm_page(shm, 0))->pid, (int32_t)getpid()); /* the stages see it */

	bt_params_export();

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	char ep[PATH_MAX + 16];
	bt_params_ipc("sup", ep, sizeof ep);
	struct bt_ctl_srv *ctl = bt_ctl_srv_new(NULL, ep, on_ctl, NULL);
	if (!ctl)
		bt_die_config("cannot bind the control socket %s", ep);

	add_stage(BT_ROLE_STORE, 0);
	for (int k = 0; k < K; k++)
		add_stage(BT_ROLE_VERIFY, k);
	for (int f = 0; f < BT_MAX_FANOUT; f++) /* every slot: batonctl scale, compose --scale */
		add_stage(BT_ROLE_FANOUT, f);
	add_stage(BT_ROLE_INGEST, 0);
	for (int i = 0; i < n_stages; i++)
		stages[i].wanted = stages[i].role != BT_ROLE_FANOUT || stages[i].index < N;
	sup_set_counts(K, N);
	if (bt_cfg.spawn_stages) {
		publish_wanted(); /* updated below for adopted fanouts */
		for (int i = 0; i < n_stages; i++) {
			struct sup_stage *s = &stages[i];
			int32_t pid = atomic_load(&s->stats->pid);
			if (adopting && bt_pid_alive(pid)) {
				s->pid = pid;
				s->adopted = s->seen = true;
				s->state = SUP_RUNNING;
				s->started_ms = bt_now_ms();
				s->progress0 = atomic_load(&s->stats->progress);
				s->wanted = s->wanted || s->role == BT_ROLE_FANOUT; /* one found running is kept */
				BT_INFO("adopted %s[%d] pid=%d", bt_role_name(s->role), s->index, (int)pid);
			} else if (s->wanted) {
				start_stage(s);
				s->seen = true;
			}
		}
		publish_wanted();
	} else {
		BT_INFO("RELAY_SPAWN_STAGES=false: stages are started by others (docker-compose); watching them");
	}
	BT_INFO("relay up: K=%d verify, N=%d fanout, api %s, data %s", K, N, bt_cfg.api_bind, bt_cfg.data_dir);

	struct pollfd pfd = { .fd = bt_ctl_srv_fd(ctl), .events = POLLIN };
	while (!got_stop) {
		poll(&pfd, 1, 50);
		bt_ctl_srv_poll(ctl);
		sup_locks_poll();
		reap();
		if (got_stop)
			break;
		if (bt_cfg.spawn_stages) {
			check_adopted();
			check_heartbeats();
		}
		else
			watch_external();
	}
	BT_INFO("stopping all stages");
	stop_all();
	bt_ctl_srv_free(&ctl);
	bt_shm_close(&shm);
	unlink(shm_path);
	unlink(ep + 6);
	BT_INFO("stopped");
	return fatal_exit;
}

/*
 * NAME
 *	bt_proc - the one skeleton every stage starts through
 * DESCRIPTION
 *	bt_proc_init() parses the parameter table, names the process (prctl: "baton-verify"),
 *	starts logging with role and index, attaches the shared-memory segment the supervisor
 *	created, claims the stage's stats page, asks for SIGTERM when the supervisor dies, and
 *	turns SIGINT/SIGTERM into bt_proc_stop, a flag the stage's loop checks.  Stages call
 *	bt_proc_beat() every loop turn: it stamps the heartbeat the supervisor watches.
 * DIAGNOSTICS
 *	A missing or incompatible segment is a configuration error: exit 2.
 */
#ifndef BT_PROC_H
#define BT_PROC_H
#include <signal.h>
#include <stdbool.h>

#include "bt_params.h"
#include "bt_pipe.h"

struct bt_shm;

struct bt_proc {
	enum bt_role role;
	int index;
	struct bt_shm *shm;
	struct bt_stats_page *stats;
	int K, N;            /* verify and fanout process counts */
};

extern struct bt_proc bt_proc;
extern volatile sig_atomic_t bt_proc_stop;

void bt_proc_init(enum bt_role role, int argc, char **argv, const char *about);
/* Supervisor, before it creates the segment: every size limit against the others (a frame the
   ingest accepts must fit the ingest->verify ring with its header, its verdict the verify->store
   ring, its event the broadcast ring, or it would be retried forever or lost).  Exit 2 if not. */
void bt_proc_check_limits(uint64_t ring_cap, uint64_t bcast_cap);
void bt_proc_beat(void);               /* heartbeat + loop-turn stamp; once a second, the supervisor watch */
/* pid names a live process (not a zombie): kill(pid, 0) and /proc/pid/stat. */
bool bt_pid_alive(int32_t pid);
void bt_proc_progress(uint64_t n);     /* input consumed (for stuck-pipeline detection) */
void bt_proc_exit(int code);           /* detaches and exits */
/* How many times a store opened RocksDB in this relay run: read views pass it to bt_db_catch_up_gen. */
uint64_t bt_proc_store_gen(void);
#endif

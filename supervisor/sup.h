/*
 * NAME
 *	sup.h - the supervisor's process table
 */
#ifndef SUP_H
#define SUP_H
#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "bt_pipe.h"

enum sup_state { SUP_STOPPED, SUP_RUNNING, SUP_BACKOFF };

struct sup_stage {
	enum bt_role role;
	int index;
	pid_t pid;
	enum sup_state state;
	unsigned restarts;
	uint64_t started_ms, next_start_ms, backoff_ms;
	uint64_t progress0; /* the stage's progress counter when it was started */
	uint64_t last_delay_ms; /* the delay before its last restart */
	struct bt_stats_page *stats; /* the stage's page in the segment (read only here) */
	bool wanted;                 /* kept running (a fanout slot above the scale is not) */
	bool seen;                   /* ever ran (listed by status) */
	bool adopted;                /* found running at start (not our child: watched by pid) */
};

struct sup_counts {
	int K, N;
};

void sup_set_counts(int K, int N);
struct sup_counts sup_counts_get(void);
/* Status of every stage with its counters, for batonctl (returns owned). */
json_t *sup_status_json(const struct sup_stage *st, int n, struct sup_counts c);
/* Takes the instance locks (sup_lock.c); exit 2 if another relay holds one. */
void sup_take_locks(bool adopting); /* adopting: the port is served by our adopted fanouts */
void sup_locks_poll(void); /* every loop turn: answers refused starters' port-lock probes */
#endif

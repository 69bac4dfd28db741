/*
 * NAME
 *	sup_lock - the supervisor's instance locks: one relay per data directory, name and port
 * DESCRIPTION
 *	Taken at start-up before anything is created, held until the supervisor exits or dies
 *	(the kernel drops them then, so a kill -9 leaves nothing stale; bt_lock.h):
 *	  RELAY_DATA_DIR/baton.lock           another relay on the same data directory
 *	  RELAY_SHM_DIR/baton-RELAY_NAME.lock another relay with the same segment and socket names
 *	  the port lock of RELAY_API_BIND     another relay on the same port (SO_REUSEPORT would
 *	                                      let its fanouts join ours and split the traffic)
 *	then a bind without SO_REUSEPORT checks that nothing else listens on the port.  That probe
 *	waits up to RELAY_ATTACH_WAIT while it fails: the fanouts of a previous instance that was
 *	killed with -9 are still exiting (they get SIGTERM when their supervisor dies).
 * DIAGNOSTICS
 *	Exit 2 with a message naming the other instance's pid when a lock is held or the port
 *	stays in use.
 */
#include "bt_lock.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "sup.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int port_fd = -1;

static const char *pid_of(const char *holder, char *buf, size_t cap)
{
	long pid = bt_lock_holder_pid(holder);
	if (pid > 0)
		snprintf(buf, cap, "pid %ld", pid);
	else
		snprintf(buf, cap, "pid unknown");
	return buf;
}

void sup_take_locks(bool adopting)
{
	char info[PATH_MAX + 600], holder[PATH_MAX + 600], path[PATH_MAX + 64], pb[32];
	snprintf(info, sizeof info, "pid=%d name=%s data=%s api=%s", (int)getpid(), bt_cfg.name, bt_cfg.data_dir,
		 bt_cfg.api_bind);

	snprintf(path, sizeof path, "%s/baton.lock", bt_cfg.data_dir);
	int fd = bt_lock_file(path, info, holder, sizeof holder);
	if (fd == -EAGAIN)
		bt_die_config("RELAY_DATA_DIR %s is in use by another baton (%s; it holds %s: %s): stop it or use "
			      "another data directory", bt_cfg.data_dir, pid_of(holder, pb, sizeof pb), path, holder);
	if (fd < 0)
		bt_die_config("cannot lock %s: %s", path, strerror(-fd));

	snprintf(path, sizeof path, "%s/baton-%s.lock", bt_cfg.shm_dir, bt_cfg.name);
	fd = bt_lock_file(path, info, holder, sizeof holder);
	if (fd == -EAGAIN)
		bt_die_config("RELAY_NAME %s is in use in RELAY_SHM_DIR %s by another baton (%s; it holds %s: %s): its "
			      "shared memory and control sockets would be overwritten; use another RELAY_NAME",
			      bt_cfg.name, bt_cfg.shm_dir, pid_of(holder, pb, sizeof pb), path, holder);
	if (fd < 0)
		bt_die_config("cannot lock %s: %s", path, strerror(-fd));

	int port = bt_lock_parse_bind(bt_cfg.api_bind, NULL, 0, NULL, 0);
	if (port < 0)
		bt_die_config("RELAY_API_BIND=%s: expected [host]:port", bt_cfg.api_bind);
	if (port == 0)
		return; /* an ephemeral port per fanout: nothing to share, nothing to lock */
	pid_t other = 0;
	port_fd = bt_lock_port(port, &other);
	if (port_fd == -EADDRINUSE) {
		if (other > 0)
			bt_die_config("RELAY_API_BIND %s: port %d is served by another baton (pid %d): use another port",
				      bt_cfg.api_bind, port, (int)other);
		bt_die_config("RELAY_API_BIND %s: port %d is served by another baton (pid unknown: another pid "
			      "namespace): use another port", bt_cfg.api_bind, port);
	}
	if (port_fd < 0)
		bt_die_config("cannot take the port lock of %d: %s", port, strerror(-port_fd));
	if (adopting)
		return; /* the listeners are the running fanouts we adopt */
	uint64_t deadline = bt_now_ms() + (uint64_t)bt_cfg.attach_wait * 1000u;
	int rc;
	bool told = false;
	while ((rc = bt_lock_probe_bind(bt_cfg.api_bind)) == -EADDRINUSE && bt_now_ms() < deadline) {
		if (!told)
			BT_WARN("RELAY_API_BIND %s is in use; waiting up to %llu s for it to be free (the fanouts of "
				"a previous instance still exiting?)", bt_cfg.api_bind,
				(unsigned long long)bt_cfg.attach_wait);
		told = true;
		usleep(100000);
	}
	if (rc == -EADDRINUSE)
		bt_die_config("RELAY_API_BIND %s: the port is in use by another program (not a baton holding its "
			      "port lock): stop it or use another port", bt_cfg.api_bind);
	if (rc < 0)
		bt_die_config("cannot bind RELAY_API_BIND %s: %s", bt_cfg.api_bind, strerror(-rc));
}

void sup_locks_poll(void)
{
	bt_lock_port_drain(port_fd);
}

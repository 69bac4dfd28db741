/*
 * NAME
 *	bt_lock - one relay per data directory, per instance name and per public port
 * DESCRIPTION
 *	Locks that the kernel releases when their holder dies, so a kill -9 never leaves a
 *	stale one and a restarted process takes the lock again at once:
 *	  - bt_lock_file: an exclusive open-file-description lock (F_OFD_SETLK; flock where
 *	    the kernel has no OFD locks) on a file, which is created if missing and never
 *	    removed (its existence means nothing, only the lock does).  The holder writes a
 *	    line about itself into it ("pid=42 name=baton data=./data api=:2470") so that a
 *	    refused starter can name it.  The descriptor is close-on-exec: stages started by
 *	    the supervisor do not inherit it.
 *	  - bt_lock_port: a listening Unix socket in the abstract namespace, named after the
 *	    TCP port ("\0baton-port-2470").  Abstract names belong to the network namespace,
 *	    exactly as TCP ports do, so two batons that could share a port through
 *	    SO_REUSEPORT always see each other's lock; it vanishes with its holder (no file).
 *	    A refused starter connects to it and learns the holder's pid from SO_PEERCRED.
 *	  - bt_lock_probe_bind: a bind without SO_REUSEPORT to the public address, which fails
 *	    while anything listens there (another program, an older baton without the lock).
 *	Who holds what (docs/ops.md "One relay per data directory"): the supervisor holds
 *	RELAY_DATA_DIR/baton.lock, RELAY_SHM_DIR/baton-NAME.lock and the port lock for its
 *	lifetime, in every mode (it creates the segment); the store holds
 *	RELAY_DATA_DIR/store.lock while it has RocksDB open.
 * DIAGNOSTICS
 *	Negative errno values: -EAGAIN (held by another), -EADDRINUSE (port held), others
 *	from open/socket/bind.
 */
#ifndef BT_LOCK_H
#define BT_LOCK_H
#include <stddef.h>
#include <sys/types.h>

/* Takes the lock on path (created 0644 if missing) and writes info (may be NULL) into it.
   Returns the descriptor (>= 0, keep it open to hold the lock), -EAGAIN if another open file
   holds it (holder, if not NULL, gets the holder's line, "" if it wrote none yet), or -errno. */
int bt_lock_file(const char *path, const char *info, char *holder, size_t cap);
/* Like bt_lock_file, but retries every 100 ms for up to wait_ms while the lock is held, calling
   tick (may be NULL: a stage's heartbeat) before each try. */
int bt_lock_file_wait(const char *path, const char *info, unsigned wait_ms, void (*tick)(void), char *holder,
		      size_t cap);
/* "pid=123 ..." -> 123; 0 when none. */
long bt_lock_holder_pid(const char *holder);

/* The port of "host:port", ":port" or "[v6]:port" (0..65535), or -1.  host (may be NULL) gets
   the host part, "" for ":port". */
int bt_lock_parse_bind(const char *bind, char *host, size_t hcap, char *port, size_t pcap);
/* The port lock of port: returns the listening descriptor (>= 0; drain it with
   bt_lock_port_drain), or -EADDRINUSE (holder, if not NULL, gets the holder's pid, 0 when
   unknown: another pid namespace), or -errno. */
int bt_lock_port(int port, pid_t *holder);
/* The pid holding the port lock of port: > 0, 0 if nobody holds it, -1 if held but unknown. */
pid_t bt_lock_port_holder(int port);
/* Accepts and closes the connections refused starters made (non-blocking). */
void bt_lock_port_drain(int fd);
/* Binds the address of bind (as the fanouts resolve it) without SO_REUSEPORT and closes it:
   0 if it is free, -EADDRINUSE if something listens there, other -errno otherwise. */
int bt_lock_probe_bind(const char *bind);
#endif

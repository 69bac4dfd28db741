/*
 * NAME
 *	bt_params - the one table of configuration parameters
 * DESCRIPTION
 *	BT_PARAMS below is the only place a parameter is declared: name, type, default, bounds
 *	and doc.  It generates struct bt_config, the environment and flag parsing, --help and
 *	docs/config.md (`baton --help-markdown`).  Environment variables use indigo's names where
 *	the meaning is the same.  A flag --data-dir=X is the same as RELAY_DATA_DIR=X.
 *
 *	The supervisor parses once and exports every resolved value into its environment, so
 *	the stages it starts see exactly its configuration.
 * DIAGNOSTICS
 *	A bad value or unknown flag is a fatal configuration error: message and exit 2.
 */
#ifndef BT_PARAMS_H
#define BT_PARAMS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* X(type, field, env, default, min, max, doc); DUR values are seconds ("90", "30s", "10m", "72h", "3d"). */
#define BT_PARAMS(X)                                                                                   \
	X(STR, data_dir, "RELAY_DATA_DIR", "./data", 0, 0, "directory of the RocksDB database")        \
	X(STR, api_bind, "RELAY_API_BIND", ":2470", 0, 0, "public HTTP/WebSocket listen address [host]:port") \
	X(STR, metrics_listen, "RELAY_METRICS_LISTEN", ":2471", 0, 0,                                 \
	  "Prometheus /metrics listen address [host]:port, shared by every fanout (empty = no metrics listener)") \
	X(INT, metrics_top_hosts, "RELAY_METRICS_TOP_HOSTS", "50", 1, 10000,                          \
	  "per-host metric series for this many hosts (most events); the rest are summed into host=\"_other\"") \
	X(INT, max_conns_per_ip, "RELAY_MAX_CONNS_PER_IP", "64", 0, 1000000,                          \
	  "subscribeRepos connections one IP address may hold per fanout process (0 = no limit); more get 429") \
	X(INT, consumer_buffer_mb, "RELAY_CONSUMER_BUFFER_MB", "256", 1, 65536,                        \
	  "output buffered for all consumers of one fanout process, MiB; a consumer over its share reads from RocksDB later") \
	X(DUR, consumer_read_timeout, "RELAY_CONSUMER_READ_TIMEOUT", "60", 1, 86400,                  \
	  "a consumer that acknowledged none of its queued output (ours or the kernel's send buffer) for this long is closed (it answers pings but does not read)") \
	X(STR, plc_host, "RELAY_PLC_HOST", "https://plc.directory", 0, 0, "PLC directory base URL")   \
	X(BOOL, allow_insecure_hosts, "RELAY_ALLOW_INSECURE_HOSTS", "false", 0, 0,                      \
	  "accept requestCrawl of localhost:PORT and subscribe over plain ws (testing)")               \
	X(STR, hosts, "RELAY_HOSTS", "", 0, 0, "comma-separated hosts to subscribe to at start")       \
	X(STR, upstream_relay, "RELAY_UPSTREAM_RELAY", "", 0, 0,                                        \
	  "serve another relay's firehose (host[:port]) instead of crawling PDSes: its events are taken as it sequenced them, without signature or MST checks, resequenced, stored and served here (fanout past one machine); requestCrawl is refused") \
	X(STR, banned_domains, "RELAY_BANNED_DOMAINS", "", 0, 0,                                        \
	  "comma-separated domains refused by requestCrawl, with all their subdomains (besides /admin/subs/banDomain's)") \
	X(INT, verify_procs, "RELAY_VERIFY_PROCS", "0", 0, 64, "verify processes K (0 = number of cores)") \
	X(INT, fanout_procs, "RELAY_FANOUT_PROCS", "2", 1, 32, "fanout processes N sharing the public port") \
	X(STR, shm_dir, "RELAY_SHM_DIR", "/dev/shm", 0, 0, "directory of the shared-memory segment and control sockets") \
	X(STR, name, "RELAY_NAME", "baton", 0, 0, "instance name (segment and socket names)")       \
	X(INT, ring_mb, "RELAY_RING_MB", "64", 32, 4096, "size of each ingest->verify and verify->store ring, MiB (a record is at most a quarter)") \
	X(INT, bcast_ring_mb, "RELAY_BCAST_RING_MB", "256", 8, 16384, "size of the store->fanout broadcast ring, MiB") \
	X(DUR, replay_window, "RELAY_REPLAY_WINDOW", "72h", 1, 31536000, "how long events are kept for cursor replay") \
	X(BOOL, sync_writes, "RELAY_SYNC_WRITES", "true", 0, 0, "fsync each group commit (survives power loss)") \
	X(INT, commit_batch, "RELAY_COMMIT_BATCH", "100", 1, 10000, "max verdicts per RocksDB write batch") \
	X(BOOL, lenient_sync_validation, "RELAY_LENIENT_SYNC_VALIDATION", "false", 0, 0,                \
	  "pass on commits whose ops do not invert to prevData (counted) instead of dropping them")                            \
	X(INT, max_frame_bytes, "RELAY_MAX_FRAME_BYTES", "5000000", 1024, 16777216, "largest upstream frame accepted") \
	X(DUR, reconnect_max, "RELAY_RECONNECT_MAX", "300", 1, 86400, "longest backoff between upstream reconnects") \
	X(DUR, identity_ttl, "RELAY_IDENTITY_TTL", "1h", 1, 604800, "how long a resolved DID document is trusted") \
	X(INT, identity_cache_size, "RELAY_IDENTITY_CACHE_SIZE", "200000", 16, 100000000, "identity cache entries per verify process") \
	X(INT, account_cache_size, "RELAY_ACCOUNT_CACHE_SIZE", "200000", 16, 100000000, "account-state cache entries per verify process") \
	X(INT, resolve_concurrency, "RELAY_RESOLVE_CONCURRENCY", "64", 1, 10000, "DID resolutions in flight per verify process") \
	X(DUR, heartbeat_timeout, "RELAY_HEARTBEAT_TIMEOUT", "15", 2, 3600, "a stage silent this long is killed and restarted") \
	X(INT, new_hosts_per_day, "RELAY_NEW_HOSTS_PER_DAY_LIMIT", "50", 0, 1000000, "new hosts accepted by requestCrawl per UTC day (until /admin/subs/setPerDayLimit stores another)") \
	X(DUR, coverage_window, "RELAY_COVERAGE_WINDOW", "10m", 1, 86400,                             \
	  "coverage: a host delivered recently when its last event is younger than this") \
	X(DUR, coverage_lookback, "RELAY_COVERAGE_LOOKBACK", "24h", 1, 31536000,                       \
	  "coverage: hosts whose last event is younger than this count as active (the share's denominator)") \
	X(INT, coverage_min_percent, "RELAY_COVERAGE_MIN_PERCENT", "0", 0, 100,                        \
	  "/_health says degraded (200) when fewer than this percent of active hosts delivered within RELAY_COVERAGE_WINDOW (0 = never)") \
	X(INT, default_account_limit, "RELAY_DEFAULT_ACCOUNT_LIMIT", "100", 0, 1000000000,               \
	  "accounts a new host may have before its further accounts are throttled (#account status throttled)") \
	X(INT, trusted_account_limit, "RELAY_TRUSTED_ACCOUNT_LIMIT", "10000000", 0, 1000000000,         \
	  "account limit of a new host matching RELAY_TRUSTED_DOMAINS") \
	X(STR, trusted_domains, "RELAY_TRUSTED_DOMAINS", "*.host.bsky.network", 0, 0,                   \
	  "comma-separated trusted host names (\"*.x\" matches every name ending in \".x\"): account limit RELAY_TRUSTED_ACCOUNT_LIMIT, events 5,000/s, 50M/h, 500M/day") \
	X(INT, host_events_per_second, "RELAY_HOST_EVENTS_PER_SECOND", "50", 1, 1000000000,            \
	  "event rate limit of a host per second, plus its account limit / 1000 (over it the host's socket is paused, never dropped)") \
	X(INT, host_events_per_hour, "RELAY_HOST_EVENTS_PER_HOUR", "2500", 1, 1000000000,              \
	  "event rate limit of a host per hour, plus its account limit") \
	X(INT, host_events_per_day, "RELAY_HOST_EVENTS_PER_DAY", "20000", 1, 1000000000,               \
	  "event rate limit of a host per day, plus 10 x its account limit") \
	X(STR, admin_password, "RELAY_ADMIN_PASSWORD", "", 0, 0,                                        \
	  "password of the admin API (/admin/*: HTTP Basic admin:<password> or Bearer <password>); empty = admin API disabled (403)") \
	X(STR, user_agent, "RELAY_USER_AGENT", "baton/0.1 (atproto-relay)", 0, 0, "User-Agent and Server header") \
	X(STR, log_level, "RELAY_LOG_LEVEL", "info", 0, 0, "debug, info, warn or error")          \
	X(BOOL, spawn_stages, "RELAY_SPAWN_STAGES", "true", 0, 0,                                       \
	  "the supervisor starts the stages (false: they are started by others, e.g. docker-compose)") \
	X(DUR, orphan_timeout, "RELAY_ORPHAN_TIMEOUT", "30", 1, 86400,                                   \
	  "a stage whose supervisor died keeps running this long for a new baton to adopt it, then stops") \
	X(DUR, attach_wait, "RELAY_ATTACH_WAIT", "30", 0, 3600,                                         \
	  "how long a stage waits for the supervisor's shared-memory segment to appear")            \
	X(STR, fault_crash_did, "RELAY_FAULT_CRASH_DID", "", 0, 0,                                      \
	  "fault injection for tests: verify aborts on every frame of this DID (never set it in production)") \
	X(BOOL, fault_crash_decode, "RELAY_FAULT_CRASH_DECODE", "false", 0, 0,                           \
	  "fault injection for tests: with RELAY_FAULT_CRASH_DID, verify aborts inside decoding (any frame whose bytes hold that DID) instead of after (never set it in production)") \
	X(DUR, identity_wait, "RELAY_IDENTITY_WAIT", "3m", 1, 86400,                                    \
	  "longest a frame waits for its DID's resolution; then the DID's frames are dropped (identity_timeout) and it is desynchronized until it resolves") \
	X(DUR, prior_key_grace, "RELAY_PRIOR_KEY_GRACE", "72h", 1, 31536000,                            \
	  "how long after a did:plc key rotation a commit signed with the previous key is still accepted (docs/identity.md)") \
	X(STR, fault_store_exit, "RELAY_FAULT_STORE_EXIT", "", 0, 0,                                    \
	  "fault injection for tests: comma-separated points where the store _exit(9)s (after_write_seq:N, " \
	  "after_publish_seq:N, in_publish_seq:N, after_reset_write, before_write_drop: before the write of " \
	  "the first batch holding a drop, once per data dir) or splice_fail_useq:U (the splice of " \
	  "the frame of upstream seq U, epoch 0, fails); never set it in production") \
	X(INT, commit_window_us, "RELAY_COMMIT_WINDOW_US", "1000", 0, 100000,                         \
	  "group commit: the store starts a RocksDB write (one WAL sync) at most once per this many microseconds; " \
	  "a batch below RELAY_COMMIT_BATCH waits up to then for more verdicts, adding at most this much latency (0 = write at once)") \
	X(INT, store_account_cache, "RELAY_STORE_ACCOUNT_CACHE", "100000", 16, 10000000,                \
	  "account states the store keeps in memory (about 550 bytes each; a miss reads RocksDB once)")

enum bt_param_type { BT_P_STR, BT_P_INT, BT_P_BOOL, BT_P_DUR };

struct bt_config {
#define BT_P_FIELD_STR(f) char f[512];
#define BT_P_FIELD_INT(f) int64_t f;
#define BT_P_FIELD_BOOL(f) bool f;
#define BT_P_FIELD_DUR(f) int64_t f; /* seconds */
#define X(t, f, e, d, lo, hi, doc) BT_P_FIELD_##t(f)
	BT_PARAMS(X)
#undef X
	int index;      /* --index / BATON_INDEX: which of the K verify or N fanout processes; -1 = auto */
	int n_verify;   /* verify_procs resolved (never 0) */
};

extern struct bt_config bt_cfg;

/* Parse environment then flags into bt_cfg; --help prints usage and exits 0; errors exit 2.
   `about` is the one-line description printed by --help. */
/* The build's version: `git describe --always --dirty` when it was built ("unknown" outside git). */
const char *bt_version(void);
void bt_params_load(int argc, char **argv, const char *prog, const char *about);
/* Export every resolved value into the environment (supervisor, before starting stages). */
void bt_params_export(void);
/* Paths derived from the config: the segment file and the control sockets ("ipc://..."). */
void bt_params_shm_path(char *out, unsigned cap);
void bt_params_ipc(const char *what, char *out, unsigned cap); /* what: "sup", "ingest", "store" */
/* `batonctl reload`: sets one parameter of a running stage if it is one that may change then
   (RELAY_LOG_LEVEL, the consumer limits, coverage, heartbeat, commit window, replay window);
   0, or <0 with the reason in err. */
int bt_params_set_runtime(const char *env, const char *value, char *err, size_t cap);
#endif

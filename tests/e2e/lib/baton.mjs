// NAME
//   baton.mjs - start, probe and hurt a baton relay from the e2e tests.
// DESCRIPTION
//   Baton runs `<builddir>/baton` (the supervisor, which starts the stages
//   from the same directory) in its own process group with the environment
//   the relay documents (RELAY_DATA_DIR, RELAY_SHM_DIR, RELAY_NAME,
//   RELAY_API_BIND, RELAY_PLC_HOST, RELAY_ALLOW_INSECURE_HOSTS,
//   RELAY_VERIFY_PROCS, RELAY_FANOUT_PROCS, and RELAY_DEFAULT_ACCOUNT_LIMIT
//   1000000, which lifts the per-host account and rate limits (1,050 events/s) so
//   a scenario measures the pipeline; acctlimit and ratelimit set their own); its stderr goes to
//   <tmpdir>/baton.log. Helpers: waitHealthy (GET /_health = 200),
//   requestCrawl, status (`batonctl status` JSON), killStage (kill -9 a stage's
//   pid) and waitRestarted (the supervisor brought up a new pid).
//   Every spawned process group is remembered in a module-level registry;
//   killAll() SIGKILLs them all (run.mjs calls it at exit, even on failure).
// DIAGNOSTICS
//   Helpers reject with an Error that says what was awaited; the relay's log
//   path is in `logPath` for the report.

import { spawn, execFile } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'

const live = new Set() // pids of process-group leaders we started
const stagePids = new Set() // stage pids seen in `batonctl status`

// True if pid is alive and its command line names a baton binary (so a
// recycled pid of an unrelated process is never signalled).
function isBatonPid(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('baton')
  } catch {
    return false
  }
}

function killStragglers() {
  for (const pid of stagePids) {
    if (isBatonPid(pid)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
  }
  stagePids.clear()
}

// SIGKILLs every process group started by this module (safe to call twice).
export function killAll() {
  for (const pid of live) {
    try {
      process.kill(-pid, 'SIGKILL')
    } catch {}
    try {
      process.kill(pid, 'SIGKILL')
    } catch {}
  }
  live.clear()
  killStragglers()
}

// Returns a TCP port that was free a moment ago on 127.0.0.1.
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

export class Baton {
  // buildDir: where baton, baton-* and batonctl are; tmpDir: this scenario's
  // directory (data, shm, log); plcUrl: the fake PLC; extraEnv: overrides.
  constructor({ buildDir, tmpDir, plcUrl, name, verifyProcs = 2, fanoutProcs = 2, extraEnv = {} }) {
    this.buildDir = path.resolve(buildDir)
    this.tmpDir = tmpDir
    this.plcUrl = plcUrl
    this.name = name ?? `e2e${process.pid}${Math.random().toString(36).slice(2, 8)}`
    this.verifyProcs = verifyProcs
    this.fanoutProcs = fanoutProcs
    this.extraEnv = extraEnv
    this.proc = null
    this.port = 0
    this.metricsPort = 0
    this.logPath = path.join(tmpDir, 'baton.log')
    this.exited = null
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`
  }

  get metricsUrl() {
    return `http://127.0.0.1:${this.metricsPort}/metrics`
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/xrpc/com.atproto.sync.subscribeRepos`
  }

  env() {
    return {
      ...process.env,
      RELAY_DATA_DIR: path.join(this.tmpDir, 'data'),
      RELAY_SHM_DIR: this.tmpDir,
      RELAY_NAME: this.name,
      RELAY_API_BIND: `127.0.0.1:${this.port}`,
      RELAY_METRICS_LISTEN: `127.0.0.1:${this.metricsPort}`,
      RELAY_PLC_HOST: this.plcUrl,
      RELAY_ALLOW_INSECURE_HOSTS: 'true',
      RELAY_VERIFY_PROCS: String(this.verifyProcs),
      RELAY_FANOUT_PROCS: String(this.fanoutProcs),
      RELAY_DEFAULT_ACCOUNT_LIMIT: '1000000',
      ...this.extraEnv,
    }
  }

  // Spawns the supervisor (own process group); does not wait for health.
  async start() {
    const bin = path.join(this.buildDir, 'baton')
    if (!fs.existsSync(bin)) throw new Error(`${bin} not found (build the relay first)`)
    if (!this.port) this.port = await freePort()
    if (!this.metricsPort) this.metricsPort = await freePort()
    fs.mkdirSync(path.join(this.tmpDir, 'data'), { recursive: true })
    const log = fs.openSync(this.logPath, 'a')
    this.proc = spawn(bin, [], {
      cwd: this.tmpDir,
      env: this.env(),
      stdio: ['ignore', log, log],
      detached: true,
    })
    fs.closeSync(log)
    live.add(this.proc.pid)
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, sig) => resolve({ code, sig })))
    this.proc.once('exit', () => {
      this.proc.exitedAt = Date.now()
    })
  }

  // Resolves when GET /_health answers 200; rejects after timeoutMs or if the
  // supervisor exits.
  async waitHealthy(timeoutMs = 20000) {
    const end = Date.now() + timeoutMs
    let last = 'no answer'
    while (Date.now() < end) {
      if (this.proc?.exitedAt) throw new Error(`baton exited during start-up (log: ${this.logPath})`)
      try {
        const res = await fetch(`${this.httpUrl}/_health`, { signal: AbortSignal.timeout(2000) })
        last = `HTTP ${res.status}`
        await res.arrayBuffer()
        if (res.status === 200) return
      } catch (err) {
        last = err.cause?.code ?? err.message
      }
      await sleep(200)
    }
    throw new Error(`/_health not 200 after ${timeoutMs} ms (last: ${last}; log: ${this.logPath})`)
  }

  // GET /_health once; resolves to { status, body } (status 0 if no answer).
  async health(timeoutMs = 2000) {
    try {
      const res = await fetch(`${this.httpUrl}/_health`, { signal: AbortSignal.timeout(timeoutMs) })
      const text = await res.text()
      let body = text
      try {
        body = JSON.parse(text)
      } catch {}
      return { status: res.status, body }
    } catch (err) {
      return { status: 0, body: err.cause?.code ?? err.message }
    }
  }

  // Sums `kind` ('counters' or 'drops') entry `key` over the stages of
  // `role` in a status object (missing entries count as 0).
  static sum(st, role, kind, key) {
    let n = 0
    for (const s of st?.stages || []) if (s.role === role) n += Number(s[kind]?.[key] ?? 0)
    return n
  }

  // POSTs requestCrawl; resolves to { status, body } (body parsed if JSON).
  // POST requestCrawl {hostname, cursorHint?} -> {status, body (JSON if it parses)}
  async requestCrawl(hostname, cursorHint) {
    const res = await fetch(`${this.httpUrl}/xrpc/com.atproto.sync.requestCrawl`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(cursorHint === undefined ? { hostname } : { hostname, cursorHint }),
      signal: AbortSignal.timeout(20000),
    })
    const text = await res.text()
    let body = text
    try {
      body = JSON.parse(text)
    } catch {}
    return { status: res.status, body }
  }

  // Runs `batonctl status`; resolves to the parsed JSON.
  status() {
    const bin = path.join(this.buildDir, 'batonctl')
    return new Promise((resolve, reject) => {
      execFile(bin, ['status', '--json'], { env: this.env(), timeout: 5000 }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`batonctl status: ${err.message} ${stderr}`.trim()))
        try {
          const st = JSON.parse(stdout)
          for (const s of st.stages || []) if (s.pid) stagePids.add(s.pid)
          resolve(st)
        } catch {
          reject(new Error(`batonctl status: not JSON: ${stdout.slice(0, 200)}`))
        }
      })
    })
  }

  // Runs `batonctl ...args`; resolves to its parsed JSON output.
  ctl(...args) {
    const bin = path.join(this.buildDir, 'batonctl')
    return new Promise((resolve, reject) => {
      execFile(bin, args, { env: this.env(), timeout: 5000 }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`batonctl ${args.join(' ')}: ${err.message} ${stderr}`.trim()))
        try {
          resolve(JSON.parse(stdout))
        } catch {
          reject(new Error(`batonctl ${args.join(' ')}: not JSON: ${stdout.slice(0, 200)}`))
        }
      })
    })
  }

  // Returns the stage entry {role, index, pid, state, restarts} or null.
  async stage(role, index) {
    const st = await this.status()
    return (st.stages || []).find((s) => s.role === role && s.index === index) ?? null
  }

  // kill -9 the stage's current pid; resolves to that pid.
  async killStage(role, index) {
    const s = await this.stage(role, index)
    if (!s || !s.pid) throw new Error(`no running ${role} ${index} in batonctl status`)
    process.kill(s.pid, 'SIGKILL')
    return s.pid
  }

  // Resolves to the new pid once the stage runs with a pid other than oldPid.
  async waitRestarted(role, index, oldPid, timeoutMs = 20000) {
    const end = Date.now() + timeoutMs
    let last = null
    while (Date.now() < end) {
      try {
        last = await this.stage(role, index)
        if (last && last.pid && last.pid !== oldPid && last.state === 'running') return last.pid
      } catch (err) {
        last = err.message
      }
      await sleep(200)
    }
    throw new Error(`${role} ${index} not restarted after ${timeoutMs} ms (last: ${JSON.stringify(last)})`)
  }

  // SIGTERM, wait up to timeoutMs, then SIGKILL the whole group. Resolves to
  // { code, sig, clean } where clean = it exited by itself after SIGTERM.
  async stop(timeoutMs = 10000) {
    if (!this.proc) return { clean: true }
    const pid = this.proc.pid
    let clean = false
    let result = { code: null, sig: null }
    if (!this.proc.exitedAt) {
      try {
        process.kill(pid, 'SIGTERM')
      } catch {}
      const t = sleep(timeoutMs).then(() => null)
      const r = await Promise.race([this.exited, t])
      if (r) {
        clean = true
        result = r
      }
    } else {
      result = await this.exited
    }
    try {
      process.kill(-pid, 'SIGKILL')
    } catch {}
    live.delete(pid)
    killStragglers()
    this.proc = null
    return { ...result, clean }
  }
}

#!/usr/bin/env node
// NAME
//   run.mjs - baton's end-to-end test runner.
// DESCRIPTION
//   node tests/e2e/run.mjs [builddir]        runs the relay scenarios (basic, kill,
//                                            inversion, health, resolver, oldcursor, revive)
//   node tests/e2e/run.mjs --selftest        checks the simulators only (no relay)
//   node tests/e2e/run.mjs --only NAME [builddir]
//   Each scenario gets its own temp dir (kept on failure, removed on success)
//   and a deadline; the whole run has a global deadline (E2E_TIMEOUT_S,
//   default 900 s). Every child process is killed at the end, also on failure
//   or timeout. Prints `ok - ...` / `not ok - ...` per check and ends with
//   `N passed, N failed`; exits 1 if anything failed.
// DIAGNOSTICS
//   A scenario that throws counts as one failed check with the error; the
//   relay's stderr log is in the scenario's temp dir (printed on failure).

import fs from 'node:fs'
import dns from 'node:dns'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Checks, makeTmp, withTimeout } from './lib/harness.mjs'
import { killAll } from './lib/baton.mjs'

// The simulators listen on 127.0.0.1 and are named localhost:PORT. Debian 12's node 18 resolves
// localhost to ::1 first and, unlike node 20, does not fall back to the next address.
dns.setDefaultResultOrder('ipv4first')

const here = path.dirname(fileURLToPath(import.meta.url))
const repoRoot = path.resolve(here, '..', '..')

const args = process.argv.slice(2)
let selftest = false
let only = null
let buildDir = null
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--selftest') selftest = true
  else if (args[i] === '--only') only = args[++i]
  else buildDir = args[i]
}
buildDir = path.resolve(buildDir ?? path.join(repoRoot, 'build'))

const SCENARIO_TIMEOUT_MS = {
  selftest: 90000,
  basic: 75000,
  kill: 110000,
  inversion: 60000,
  health: 75000,
  resolver: 90000,
  oldcursor: 75000,
  revive: 75000,
  restart: 75000,
  retention: 60000,
  garbage: 75000,
  reactivate: 60000,
  didweb: 60000,
  block: 60000,
  quarantine: 90000,
  sync: 60000,
  evict: 75000,
  identwait: 120000,
  rotation: 150000,
  indigo: 150000,
  chaos: 150000,
  reseq: 110000,
  admin: 150000,
  hostile_up: 200000,
  hostile_down: 150000,
  metrics: 75000,
  coverage: 120000,
  consumers: 300000, // 1,500 commits signed by the sim: ~150 s on a loaded 2-core machine
  consumerlimits: 120000,
  logescape: 60000,
  takedown: 90000,
  collections: 90000,
  adopt: 90000,
  handover: 120000,
  chain: 90000,
}
const DEFAULT_SCENARIOS = ['basic', 'kill', 'inversion', 'health', 'resolver', 'oldcursor', 'revive', 'restart', 'retention', 'garbage', 'reactivate', 'didweb', 'block', 'quarantine', 'sync', 'evict', 'identwait', 'rotation', 'indigo', 'reseq', 'chaos', 'admin', 'hostile_up', 'hostile_down', 'metrics', 'coverage', 'acctlimit', 'ratelimit', 'consumers', 'consumerlimits', 'logescape', 'takedown', 'collections', 'adopt', 'handover', 'chain']
const GLOBAL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_S || 2300) * 1000

let passed = 0
let failed = 0

function finish(code) {
  killAll()
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(code ?? (failed > 0 ? 1 : 0))
}

process.on('exit', () => killAll())
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.log(`not ok - run: interrupted by ${sig}`)
    failed++
    finish(1)
  })
}
const globalTimer = setTimeout(() => {
  console.log(`not ok - run: global timeout of ${GLOBAL_TIMEOUT_MS / 1000} s`)
  failed++
  finish(1)
}, GLOBAL_TIMEOUT_MS)
globalTimer.unref()

async function runScenario(mod) {
  const checks = new Checks(mod.name)
  const tmp = makeTmp(mod.name)
  const ctx = { tmp, buildDir, cleanup: [] }
  const t0 = Date.now()
  try {
    await withTimeout(mod.run(checks, ctx), SCENARIO_TIMEOUT_MS[mod.name] ?? 90000, mod.name)
  } catch (err) {
    checks.ok('scenario completed', false, err?.stack?.split('\n').slice(0, 3).join(' | ') ?? String(err))
  }
  for (const fn of ctx.cleanup.reverse()) {
    try {
      await withTimeout(Promise.resolve().then(fn), 15000, 'cleanup')
    } catch (err) {
      console.log(`# cleanup: ${err.message}`)
    }
  }
  killAll()
  passed += checks.passed
  failed += checks.failed
  const secs = ((Date.now() - t0) / 1000).toFixed(1)
  if (checks.failed > 0) {
    console.log(`# ${mod.name}: ${checks.failed} failed in ${secs} s; temp dir kept: ${tmp}`)
    const log = path.join(tmp, 'baton.log')
    if (fs.existsSync(log)) {
      const lines = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-15)
      for (const l of lines) console.log(`#   ${l}`)
    }
  } else {
    console.log(`# ${mod.name}: passed in ${secs} s`)
    if (!process.env.E2E_KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true })
    else console.log(`# ${mod.name}: temp dir kept (E2E_KEEP_TMP): ${tmp}`)
  }
}

const names = selftest ? ['selftest'] : only ? [only] : DEFAULT_SCENARIOS
for (const n of names) {
  const mod = await import(`./scenarios/${n}.mjs`)
  await runScenario(mod)
}
finish()

// NAME
//   consumerlimits.mjs - the per-IP connection limit and the read deadline on consumers.
// DESCRIPTION
//   RELAY_MAX_CONNS_PER_IP=5 (per fanout process), RELAY_CONSUMER_READ_TIMEOUT=3.
//   Per IP: 20 connections at once from 127.0.0.1; each fanout takes at most 5 (the live consumer
//   holds one), the rest get HTTP 429, every refusal is counted (ip_refused), and once they are
//   closed a new connection is taken again.
//   Read deadline: after 300 commits, two clients with a 4 KiB receive window replay from
//   cursor 0 (lib/noread.py): one never reads, one reads 2 KiB every 50 ms. The one that never
//   reads is closed (read_timeouts +1, its socket ends); the slow reader is not; the live
//   consumer gets every event.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { WebSocket } from 'ws'
import { sleep } from '../lib/pds.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'

export const name = 'consumerlimits'

const PER_IP = 5
const NOREAD = path.join(path.dirname(fileURLToPath(import.meta.url)), '../lib/noread.py')

function tryOpen(url) {
  return new Promise((res) => {
    const ws = new WebSocket(url)
    ws.once('open', () => res({ ws, status: 101 }))
    ws.once('unexpected-response', (_req, r) => { res({ ws: null, status: r.statusCode }); ws.terminate() })
    ws.once('error', () => res({ ws: null, status: 0 }))
  })
}

function noread(baton, mode, holdS) {
  const u = new URL(baton.wsUrl)
  const p = spawn('python3', [NOREAD, u.hostname, u.port, `${u.pathname}?cursor=0`, mode, String(holdS)], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  p.stdout.on('data', (d) => { out += d })
  const done = new Promise((res) => p.on('close', () => res(out.trim().split('\n').map((l) => JSON.parse(l)).pop() ?? null)))
  return { proc: p, done }
}

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, {
    extraEnv: { RELAY_MAX_CONNS_PER_IP: String(PER_IP), RELAY_CONSUMER_READ_TIMEOUT: '3' },
  })
  const pds = pdses[0]
  const F = baton.fanoutProcs
  const counter = async (k) => Baton.sum(await baton.status(), 'fanout', 'counters', k)

  // --- per-IP limit
  const refused0 = await counter('ip_refused')
  const tries = await Promise.all(Array.from({ length: 20 }, () => tryOpen(baton.wsUrl)))
  const open = tries.filter((t) => t.ws)
  const refused = tries.filter((t) => !t.ws)
  checks.ok(`at most ${PER_IP} per fanout accepted, the rest refused`,
    open.length >= PER_IP - 1 && open.length <= F * PER_IP - 1 && refused.length >= 1,
    `${open.length} accepted, ${refused.length} refused, ${F} fanouts`)
  checks.ok('every refusal is HTTP 429', refused.every((t) => t.status === 429), JSON.stringify(refused.map((t) => t.status)))
  const refused1 = await counter('ip_refused')
  checks.ok('every refusal counted (ip_refused)', refused1 - refused0 === refused.length, `${refused1 - refused0} counted, ${refused.length} refused`)
  for (const t of open) t.ws.close()
  let again = null
  for (const end = Date.now() + 10000; Date.now() < end;) {
    again = await tryOpen(baton.wsUrl)
    if (again.ws) break
    await sleep(200)
  }
  checks.ok('once they are closed, a new connection is taken', again?.ws != null, `HTTP ${again?.status}`)
  again?.ws?.close()

  // --- read deadline
  const accts = []
  for (let i = 0; i < 5; i++) accts.push(await pds.createAccount())
  for (let r = 0; r < 60; r++) for (const a of accts) await pds.write(a, 3)
  await pds.idle()
  await live.waitFor((c) => c.events.length >= 305, 30000, 'all events').catch(() => {})
  const want = live.events.length
  const timeouts0 = await counter('read_timeouts')
  const stuck = noread(baton, 'stuck', 8)
  const slow = noread(baton, 'slow', 8)
  let timeouts = timeouts0
  for (const end = Date.now() + 15000; Date.now() < end && timeouts === timeouts0;) {
    await sleep(250)
    timeouts = await counter('read_timeouts')
  }
  const [rs, rl] = await Promise.all([stuck.done, slow.done])
  timeouts = await counter('read_timeouts')
  console.log(`# never-reading client ${JSON.stringify(rs)}; slow reader ${JSON.stringify(rl)}; ${want} events`)
  checks.ok('both clients were upgraded', rs?.upgraded && rl?.upgraded, JSON.stringify([rs, rl]))
  checks.ok('the client that never read was closed by the read deadline', timeouts - timeouts0 === 1 && rs?.eof === true,
    `read_timeouts +${timeouts - timeouts0}, ${JSON.stringify(rs)}`)
  checks.ok('the slow reader was not closed and got the whole replay', rl?.eof === false && rl.closeCode === null && rl.bytes >= rs.bytes - 64,
    JSON.stringify(rl))
  checks.ok('the live consumer got every event, valid', live.events.length >= 305 && live.errors.length === 0,
    `${live.events.length} events, ${live.errors.length} errors`)
}

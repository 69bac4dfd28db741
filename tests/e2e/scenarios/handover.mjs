// NAME
//   handover.mjs - a rolling fanout restart hands every open consumer to the other fanout (issue 9).
// DESCRIPTION
//   Two fanouts, 20 consumers (no reconnect: a disconnect would show) while two PDS simulators
//   write commits at a steady rate. `batonctl restart fanout 0`, then once it is back `restart
//   fanout 1`: each hands its consumers' sockets, open, to the other fanout (SCM_RIGHTS) and
//   restarts. Then `drain fanout 1`: it hands its consumers to fanout 0 and stays stopped (draining
//   the last one is refused), and `scale fanout 2` brings it back. Expected: no consumer is ever disconnected or sees an error frame, every consumer
//   holds every valid event exactly once in per-DID order, each fanout got a new pid, and the
//   fanouts counted the hand-overs (handed_out = handed_in > 0).
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import path from 'node:path'
import { execFile } from 'node:child_process'
import { Consumer } from '../lib/consumer.mjs'
import { Baton, sleep } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'

export const name = 'handover'

export async function run(checks, ctx) {
  const { pdses, baton } = await relayWithPdses(checks, ctx, { names: ['a', 'b'], live: false })
  const consumers = []
  for (let i = 0; i < 20; i++) {
    const c = new Consumer(baton.wsUrl, { name: `c${i}`, cursor: i % 2 ? 0 : null })
    await c.start()
    ctx.cleanup.push(() => c.close())
    consumers.push(c)
  }
  const accounts = await createAccounts(pdses, 4)
  let stop = false
  const load = drive(accounts, { ratePerSec: 40, shouldStop: () => stop })
  const ctl = (...args) => new Promise((resolve) => execFile(path.join(ctx.buildDir, 'batonctl'), args, { env: baton.env(), timeout: 5000 },
    (err, stdout) => resolve({ code: err ? err.code ?? 1 : 0, out: stdout })))
  const fanoutPid = async (i) => (await baton.stage('fanout', i))?.pid
  for (const i of [0, 1]) {
    await sleep(1500)
    const old = await fanoutPid(i)
    const r = await ctl('restart', 'fanout', String(i))
    checks.ok(`batonctl restart fanout ${i}`, r.code === 0, r.out)
    let back = false
    for (let t = 0; t < 100 && !back; t++) {
      const s = await baton.stage('fanout', i)
      back = s && s.pid && s.pid !== old && s.state === 'running'
      if (!back) await sleep(100)
    }
    checks.ok(`fanout ${i} restarted (a new pid)`, back)
  }
  // drain: fanout 1 hands its consumers to fanout 0 and stays stopped; scale brings it back.
  await sleep(1000)
  const d = await ctl('drain', 'fanout', '1')
  checks.ok('batonctl drain fanout 1', d.code === 0, d.out)
  let drained = false
  for (let t = 0; t < 100 && !drained; t++) {
    const s = await baton.stage('fanout', 1)
    drained = !s || !s.pid || s.state !== 'running'
    if (!drained) await sleep(100)
  }
  await sleep(1000)
  const s1 = await baton.stage('fanout', 1)
  checks.ok('... it stops and stays stopped', drained && (!s1 || s1.state !== 'running'), JSON.stringify(s1))
  const hd = await baton.health()
  checks.ok('... and /_health stays 200 (a drained slot is not a failure)', hd.status === 200, JSON.stringify(hd.body))
  const one = await ctl('drain', 'fanout', '0')
  checks.ok('draining the last running fanout is refused', one.code !== 0, one.out)
  const sc = await ctl('scale', 'fanout', '2')
  checks.ok('batonctl scale fanout 2 brings it back', sc.code === 0, sc.out)
  await sleep(1500)
  stop = true
  await load
  for (const p of pdses) await p.idle()
  const valid = validRepoEvents(pdses)
  for (const c of consumers) await c.waitFor((x) => hasAll(x, valid), 30000, `${c.name} all`).catch(() => {})
  await sleep(500)
  let disc = 0
  for (const c of consumers) {
    checks.none(`${c.name}: every valid event once, per-DID order, nothing forged`, compareDelivery(c, valid, forgedEvents(pdses)))
    disc += c.disconnects + c.errorFrames.length + c.errors.length
  }
  checks.ok('no consumer was disconnected or got an error frame', disc === 0,
    JSON.stringify(consumers.map((c) => [c.name, c.disconnects, c.closeCodes, c.errorFrames.length, c.errors.slice(0, 2)])))
  const st = await baton.status()
  const out = Baton.sum(st, 'fanout', 'counters', 'handed_out')
  const inn = Baton.sum(st, 'fanout', 'counters', 'handed_in')
  // handed_out of a fanout that restarted is on its page until the new process resets... the
  // stats page is per slot and survives the restart, so both counts are totals.
  checks.ok('the fanouts counted the hand-overs (handed_out = handed_in > 0)', out > 0 && out === inn, `out ${out}, in ${inn}`)
  checks.ok('events flowed during the restarts', valid.length > 100, `${valid.length} valid events`)
}

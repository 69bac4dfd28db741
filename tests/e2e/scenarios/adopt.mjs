// NAME
//   adopt.mjs - kill -9 of the supervisor under load: no stage stops, a new one adopts them (issue 9).
// DESCRIPTION
//   Two PDS simulators write commits at a steady rate to a relay with 5 live consumers. The
//   supervisor is killed with SIGKILL mid-stream; writes go on. Expected: every stage keeps its
//   pid, the consumers see no disconnect, /_health stays 200; a new supervisor started on the
//   same segment adopts the six stages (the same pids in batonctl status); after more writes every
//   consumer holds every valid event exactly once, in per-DID order, and no stage restarted.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { Consumer } from '../lib/consumer.mjs'
import { sleep } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'

export const name = 'adopt'

export async function run(checks, ctx) {
  const { pdses, baton } = await relayWithPdses(checks, ctx, { names: ['a', 'b'], live: false })
  const consumers = []
  for (let i = 0; i < 5; i++) {
    const c = new Consumer(baton.wsUrl, { name: `c${i}` })
    await c.start()
    ctx.cleanup.push(() => c.close())
    consumers.push(c)
  }
  const accounts = await createAccounts(pdses, 4)
  const st0 = await baton.status()
  const pids0 = st0.stages.map((s) => `${s.role}/${s.index}:${s.pid}`).sort()

  let stop = false
  const load = drive(accounts, { ratePerSec: 40, shouldStop: () => stop })
  await sleep(1500)
  const oldSup = baton.proc.pid
  process.kill(oldSup, 'SIGKILL')
  await baton.exited
  baton.proc = null
  // Orphaned for a while: the stages keep serving.
  let bad = 0
  for (let i = 0; i < 10; i++) {
    const h = await baton.health()
    if (h.status !== 200) bad++
    await sleep(200)
  }
  checks.ok('with the supervisor dead /_health stays 200', bad === 0, `${bad} of 10 not 200`)
  await baton.start() // the same RELAY_SHM_DIR, RELAY_NAME and ports
  let adopted = false
  let st = null
  for (let i = 0; i < 50 && !adopted; i++) {
    st = await baton.status().catch(() => null)
    const pids = (st?.stages || []).filter((s) => s.state === 'running').map((s) => `${s.role}/${s.index}:${s.pid}`).sort()
    adopted = JSON.stringify(pids) === JSON.stringify(pids0)
    if (!adopted) await sleep(200)
  }
  checks.ok('a new supervisor adopts the six running stages (the same pids)', adopted,
    `before ${JSON.stringify(pids0)}, now ${JSON.stringify((st?.stages || []).map((s) => [s.role, s.index, s.pid, s.state]))}`)
  await sleep(1500)
  stop = true
  await load
  for (const p of pdses) await p.idle()
  const valid = validRepoEvents(pdses)
  for (const c of consumers) await c.waitFor((x) => hasAll(x, valid), 30000, `${c.name} all`).catch(() => {})
  await sleep(500)
  for (const c of consumers) {
    checks.none(`${c.name}: every valid event once, per-DID order, nothing forged`, compareDelivery(c, valid, forgedEvents(pdses)))
    checks.ok(`${c.name}: never disconnected`, c.disconnects === 0 && c.connects === 1, `connects ${c.connects}, disconnects ${c.disconnects}`)
  }
  const st2 = await baton.status()
  const restarts = st2.stages.reduce((n, s) => n + (s.restarts || 0), 0)
  checks.ok('no stage was restarted', restarts === 0, JSON.stringify(st2.stages.map((s) => [s.role, s.index, s.restarts])))
  checks.ok('events flowed across the kill', valid.length > 40, `${valid.length} valid events`)
  const end = await baton.stop()
  checks.ok('the adopting supervisor stops everything cleanly', end.clean && end.code === 0, JSON.stringify(end))
}

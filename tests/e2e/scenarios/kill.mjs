// NAME
//   kill.mjs - kill -9 each stage while events flow.
// DESCRIPTION
//   Like basic, with events flowing continuously from two PDS simulators:
//   kill -9 in turn ingest, verify 0, store and fanout 0, each time waiting
//   for the supervisor to bring the stage back (a new pid in batonctl
//   status). Consumers dropped by a dead fanout reconnect with
//   cursor=<last seq seen>. At the end every valid event was received exactly
//   once and in per-DID order by each consumer, nothing forged arrived, and a
//   fresh cursor=0 consumer sees exactly the same (seq, did, rev) sequence as
//   the others. Ingest must have resumed its upstreams with a cursor.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; `#` lines say how many consumer
//   reconnects happened (a killed fanout may have held no consumer).

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import {
  compareDelivery,
  validRepoEvents,
  forgedEvents,
  hasAll,
  tuples,
  sameTuples,
} from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'kill'

const VICTIMS = [
  ['ingest', 0],
  ['verify', 0],
  ['store', 0],
  ['fanout', 0],
]

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pdses = [new PdsSim({ plc, name: 'pds1' }), new PdsSim({ plc, name: 'pds2' })]
  for (const p of pdses) await p.start()
  ctx.cleanup.push(() => plc.stop(), ...pdses.map((p) => () => p.stop()))

  const baton = new Baton({ buildDir: ctx.buildDir, tmpDir: ctx.tmp, plcUrl: plc.url })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  for (const p of pdses) {
    const r = await baton.requestCrawl(p.host)
    if (r.status !== 200) throw new Error(`requestCrawl ${p.host}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  }
  for (const p of pdses) await p.waitSubscribers(1)

  const consumers = [0, 1, 2, 3].map((i) => new Consumer(baton.wsUrl, { reconnect: true, name: `live${i}` }))
  await Promise.all(consumers.map((c) => c.start()))
  ctx.cleanup.push(...consumers.map((c) => () => c.close()))

  const accounts = await createAccounts(pdses, 4)
  let stop = false
  let driveErr = null
  const driving = drive(accounts, { ratePerSec: 40, shouldStop: () => stop }).catch((err) => {
    driveErr = err
  })

  try {
    for (const [role, index] of VICTIMS) {
      await sleep(2500)
      const cursorsBefore = pdses.map((p) => p.subscribeCursors.length)
      const oldPid = await baton.killStage(role, index)
      let newPid = null
      try {
        newPid = await baton.waitRestarted(role, index, oldPid, 20000)
      } catch (err) {
        checks.ok(`${role} ${index} restarted after kill -9`, false, err.message)
        continue
      }
      checks.ok(`${role} ${index} restarted after kill -9 (pid ${oldPid} -> ${newPid})`, true)
      if (role === 'ingest') {
        const end = Date.now() + 15000
        while (Date.now() < end && pdses.some((p, i) => p.subscribeCursors.length <= cursorsBefore[i] || p.subscribers.size === 0)) {
          await sleep(100)
        }
        const resumed = pdses.map((p, i) => p.subscribeCursors.slice(cursorsBefore[i]))
        checks.ok(
          'ingest resumed every upstream with a cursor',
          resumed.every((cs) => cs.length > 0 && cs.every((c) => c !== null)),
          JSON.stringify(resumed),
        )
      }
    }
    // The store again, after it has committed events since its restart: a stage that did
    // work is not crash-looping, so it restarts after the base delay, not a doubled one.
    await sleep(2500)
    const again = await baton.killStage('store', 0)
    await baton.waitRestarted('store', 0, again, 20000).catch(() => {})
    const sst = (await baton.status()).stages.find((s) => s.role === 'store')
    checks.ok('a store killed again after doing work restarts after 100 ms (no crash-loop backoff)',
      sst?.restart_delay_ms === 100, `restart_delay_ms ${sst?.restart_delay_ms}`)
    await sleep(2500)
  } finally {
    stop = true
    await driving
  }
  for (const p of pdses) await p.idle()
  if (driveErr) throw driveErr

  const valid = validRepoEvents(pdses)
  const forged = forgedEvents(pdses)
  console.log(`# kill: ${valid.length} valid and ${forged.length} forged events sent`)
  await Promise.allSettled(consumers.map((c) => c.waitFor((x) => hasAll(x, valid), 40000, 'every valid event')))
  await sleep(1500)
  console.log(`# kill: consumer reconnects: ${consumers.map((c) => c.disconnects).join(', ')}`)

  try {
    await baton.waitHealthy(10000)
    checks.ok('/_health is 200 after the kills', true)
  } catch (err) {
    checks.ok('/_health is 200 after the kills', false, err.message)
  }

  // /metrics (and /dash) show the supervisor's restart counts, equal to batonctl status's.
  const st = await baton.status()
  const text = await (await fetch(baton.metricsUrl)).text()
  const bad = (st.stages || []).filter((s) => {
    const m = text.match(new RegExp(`^baton_restarts_total\\{role="${s.role}",index="${s.index}"\\} (\\d+)$`, 'm'))
    return !m || Number(m[1]) !== s.restarts
  })
  checks.ok('/metrics baton_restarts_total equals batonctl status for every stage', bad.length === 0 &&
    (st.stages || []).some((s) => s.restarts > 0), JSON.stringify(bad.map((s) => [s.role, s.index, s.restarts])))

  for (const c of consumers) {
    checks.none(`${c.name}: frames canonical, lexicon-valid, seq strictly increasing`, c.errors)
    checks.none(`${c.name}: every valid event exactly once, per-DID order, no forged`, compareDelivery(c, valid, forged))
  }

  await checkDrops(checks, baton, '', plantedFromSims(pdses))
  const head = Math.max(...consumers.map((c) => c.lastSeq ?? 0))
  const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
  await zero.start()
  ctx.cleanup.push(() => zero.close())
  await zero.waitFor((c) => (c.lastSeq ?? 0) >= head, 20000, 'replay to head').catch(() => {})
  checks.none('cursor=0: frames valid and seq strictly increasing', zero.errors)
  const ref = tuples(zero)
  for (const c of consumers) {
    checks.none(`cursor=0 sees the same (seq, did, rev) sequence as ${c.name}`, sameTuples(tuples(c), ref, c.name, 'cursor0'))
  }
}

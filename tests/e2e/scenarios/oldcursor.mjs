// NAME
//   oldcursor.mjs - consumers far behind, and a slow one, under load (lesson 13).
// DESCRIPTION
//   Events flow continuously from two PDS simulators (about 90/s, with
//   forged ones mixed in). A reference consumer is connected from the start;
//   a slow consumer connected from the start stops reading its socket for a
//   few seconds twice. After several seconds of history, a consumer with
//   cursor=0 and one with a mid-stream cursor connect while the flow goes on,
//   so both replay from RocksDB and must switch to live without a gap or a
//   duplicate. At the end: each of them saw exactly the reference's
//   (seq, did, rev) sequence from its cursor, every valid event exactly once,
//   in per-DID order; the slow consumer was never disconnected and caught up.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; `#` lines give the volumes.

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll, tuples, sameTuples } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'oldcursor'

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
  const ref = new Consumer(baton.wsUrl, { name: 'reference' })
  const slow = new Consumer(baton.wsUrl, { name: 'slow' })
  await Promise.all([ref.start(), slow.start()])
  ctx.cleanup.push(() => ref.close(), () => slow.close())

  const accounts = await createAccounts(pdses, 3)
  let stop = false
  let driveErr = null
  const driving = drive(accounts, { ratePerSec: 90, shouldStop: () => stop }).catch((err) => {
    driveErr = err
  })
  const late = []
  try {
    await sleep(3000)
    const slowPause1 = slow.pause(4000)
    await sleep(4000)
    await slowPause1
    const midSeq = ref.events[Math.floor(ref.events.length / 2)]?.seq ?? 0
    console.log(`# oldcursor: ${ref.events.length} events of history; mid cursor ${midSeq}`)
    const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
    const mid = new Consumer(baton.wsUrl, { cursor: midSeq, name: `cursor${midSeq}` })
    late.push({ c: zero, after: -1 }, { c: mid, after: midSeq })
    ctx.cleanup.push(() => zero.close(), () => mid.close())
    await Promise.all([zero.start(), mid.start()])
    await sleep(1500)
    const slowPause2 = slow.pause(4000)
    await sleep(4500)
    await slowPause2
  } finally {
    stop = true
    await driving
  }
  for (const p of pdses) await p.idle()
  if (driveErr) throw driveErr

  const valid = validRepoEvents(pdses)
  const forged = forgedEvents(pdses)
  const all = [ref, slow, ...late.map((l) => l.c)]
  const tWait = Date.now()
  await ref.waitFor((x) => hasAll(x, valid), 30000, 'every valid event').catch(() => {})
  await Promise.allSettled(all.map((c) => c.waitFor((x) => x.lastSeq === ref.lastSeq, 20000, 'the head')))
  const waited = Date.now() - tWait
  await sleep(1000)
  console.log(`# oldcursor: ${valid.length} valid, ${forged.length} forged sent; head seq ${ref.lastSeq}; drained in ${waited} ms`)

  checks.none('reference: frames canonical, lexicon-valid, seq strictly increasing', ref.errors)
  checks.none('reference: every valid event exactly once, per-DID order, no forged', compareDelivery(ref, valid, forged))
  for (const { c, after } of late) {
    checks.none(`${c.name}: no protocol problems`, c.errors)
    checks.ok(`${c.name}: stayed connected through replay -> live`, c.disconnects === 0 && !c.closed, `close codes ${JSON.stringify(c.closeCodes)}`)
    checks.none(
      `${c.name}: exactly the reference sequence after its cursor (no gap, no duplicate at the switch)`,
      sameTuples(tuples(c), tuples(ref, after), c.name, 'reference'),
    )
  }
  checks.none(
    'cursor0: every valid event exactly once, per-DID order, no forged',
    compareDelivery(late[0].c, valid, forged),
  )
  checks.none('slow: no protocol problems', slow.errors)
  checks.ok('slow: not disconnected after pausing twice', slow.disconnects === 0 && !slow.closed, `close codes ${JSON.stringify(slow.closeCodes)}`)
  checks.none('slow: caught up with exactly the reference sequence', sameTuples(tuples(slow), tuples(ref), 'slow', 'reference'))
  await checkDrops(checks, baton, '', plantedFromSims(pdses))
  const st = await baton.status()
  const kicks = Baton.sum(st, 'fanout', 'counters', 'slow_kicks')
  checks.ok('no consumer was kicked as slow (counters.slow_kicks = 0)', kicks === 0, `slow_kicks = ${kicks}`)
}

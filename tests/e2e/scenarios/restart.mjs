// NAME
//   restart.mjs - the whole relay stopped and started again on the same data.
// DESCRIPTION
//   Events flow from two PDS simulators; the relay is stopped with SIGTERM
//   while the sims keep emitting, then started again on the same data
//   directory (a new shared-memory segment: the broadcast ring starts empty).
//   Without any requestCrawl it must resubscribe to both hosts from their
//   committed cursors, so every event emitted while it was down arrives;
//   relay seq continues after the last one (never reused); a cursor=0
//   consumer after the restart sees exactly the pre-restart consumer's
//   sequence followed by the new events (replay from RocksDB with an empty
//   ring), and a cursor from before the restart gets exactly what follows it.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll, tuples, sameTuples } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'restart'

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
    checks.ok(`requestCrawl ${p.name} accepted`, r.status === 200, `HTTP ${r.status}`)
  }
  for (const p of pdses) await p.waitSubscribers(1)

  const before = new Consumer(baton.wsUrl, { name: 'before' })
  await before.start()
  ctx.cleanup.push(() => before.close())
  const accounts = await createAccounts(pdses, 3, { withSync: false })
  await drive(accounts, { count: 120, ratePerSec: 120 })
  for (const p of pdses) await p.idle()
  const firstBatch = validRepoEvents(pdses)
  await before.waitFor((c) => hasAll(c, firstBatch), 20000, 'first batch').catch(() => {})
  await sleep(500)
  await checkDrops(checks, baton, 'first run: ', plantedFromSims(pdses))
  const lastBefore = before.lastSeq
  await before.close()
  const st = await baton.stop()
  checks.ok('SIGTERM stops the relay cleanly', st.clean && st.code === 0, JSON.stringify(st))

  // Restarted with nothing new upstream: the broadcast ring stays empty and RocksDB has
  // every event; a replay must come from there.
  await baton.start()
  await baton.waitHealthy()
  // Before any new event: the broadcast ring is empty, RocksDB has everything.
  const early = new Consumer(baton.wsUrl, { cursor: 0, name: 'early' })
  await early.start()
  ctx.cleanup.push(() => early.close())
  await early.waitFor((c) => c.events.length >= before.events.length, 15000, 'replay').catch(() => {})
  checks.none(
    'cursor=0 right after the restart (empty ring) replays everything from RocksDB',
    sameTuples(tuples(early).slice(0, before.events.length), tuples(before), 'early', 'before'),
  )
  await early.close()

  const st2 = await baton.stop()
  const mark = pdses.map((p) => p.sent.length) // the third run decides what is sent from here on
  checks.ok('SIGTERM stops the relay cleanly again', st2.clean && st2.code === 0, JSON.stringify(st2))

  // Emitted while the relay is down.
  await drive(accounts, { count: 60, ratePerSec: 200 })
  for (const p of pdses) await p.idle()

  await baton.start()
  await baton.waitHealthy()
  for (const p of pdses) await p.waitSubscribers(1)
  checks.ok('the restarted relay resubscribed to both hosts by itself', true)
  const cursorsAsked = pdses.map((p) => p.subscribeCursors[p.subscribeCursors.length - 1])
  checks.ok(
    'it resumed each host from a committed cursor',
    cursorsAsked.every((c) => c !== null && c !== undefined && Number(c) > 0),
    JSON.stringify(cursorsAsked),
  )

  const live = new Consumer(baton.wsUrl, { name: 'after' })
  await live.start()
  ctx.cleanup.push(() => live.close())
  await drive(accounts, { count: 60, ratePerSec: 120 })
  for (const p of pdses) await p.idle()

  const valid = validRepoEvents(pdses)
  const forged = forgedEvents(pdses)
  const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
  await zero.start()
  ctx.cleanup.push(() => zero.close())
  await zero.waitFor((c) => hasAll(c, valid), 30000, 'every valid event').catch(() => {})
  await checkDrops(checks, baton, 'third run: ', plantedFromSims(pdses.map((p, i) => ({ sent: p.sent.slice(mark[i]) }))))
  await sleep(1000)
  checks.none('cursor=0 after the restart: frames valid, seq strictly increasing', zero.errors)
  checks.none('cursor=0 after the restart: every valid event exactly once, in order, nothing forged', compareDelivery(zero, valid, forged))
  checks.none(
    'cursor=0 after the restart starts with exactly the pre-restart sequence',
    sameTuples(tuples(zero).slice(0, before.events.length), tuples(before), 'cursor0', 'before'),
  )
  const firstNew = live.events[0]?.seq
  checks.ok(
    'relay seq continues after the restart (never reused)',
    firstNew === undefined || firstNew > lastBefore,
    `first live seq ${firstNew}, last before ${lastBefore}`,
  )
  const mid = new Consumer(baton.wsUrl, { cursor: lastBefore, name: 'oldcursor' })
  await mid.start()
  ctx.cleanup.push(() => mid.close())
  const head = zero.lastSeq
  await mid.waitFor((c) => c.lastSeq === head, 20000, 'replay to head').catch(() => {})
  checks.none(
    `cursor=${lastBefore} (from before the restart) gets exactly what follows it`,
    sameTuples(tuples(mid), tuples(zero, lastBefore), 'oldcursor', 'cursor0'),
  )
  await live.close()
  await zero.close()
  await mid.close()
}

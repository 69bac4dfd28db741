// NAME
//   revive.mjs - a PDS that goes away and comes back (lesson 16).
// DESCRIPTION
//   Events flow from a PDS simulator (and a second one that stays up). The
//   first one stops: its port is closed for several seconds while it keeps
//   appending events to its log. It comes back on the same port and the
//   relay must reconnect by itself (no requestCrawl) with a cursor, so the
//   events emitted while it was down and after it came back all arrive.
//   Then it goes down again, long enough for the relay's backoff to grow to
//   several seconds; when it comes back a requestCrawl of this known host
//   answers 200 and the relay reconnects at once (well within the backoff).
//   At the end every valid event of both sims arrived exactly once, in
//   per-DID order, nothing forged.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; `#` lines give the upstream
//   cursors the relay asked for.

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'revive'

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pds = new PdsSim({ plc, name: 'flaky' })
  const steady = new PdsSim({ plc, name: 'steady' })
  await pds.start()
  await steady.start()
  ctx.cleanup.push(() => plc.stop(), () => pds.stop(), () => steady.stop())

  const baton = new Baton({ buildDir: ctx.buildDir, tmpDir: ctx.tmp, plcUrl: plc.url })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  for (const p of [pds, steady]) {
    const r = await baton.requestCrawl(p.host)
    if (r.status !== 200) throw new Error(`requestCrawl ${p.host}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
    await p.waitSubscribers(1)
  }
  const live = new Consumer(baton.wsUrl, { reconnect: true, name: 'live' })
  await live.start()
  ctx.cleanup.push(() => live.close())

  const accounts = await createAccounts([pds, steady], 3)
  let stop = false
  let driveErr = null
  const driving = drive(accounts, { ratePerSec: 30, shouldStop: () => stop }).catch((err) => {
    driveErr = err
  })
  const port = pds.port
  try {
    // 1. Down for a few seconds, back on the same port: reconnects by itself.
    await sleep(2500)
    let n0 = pds.subscribeCursors.length
    const seqAtStop1 = pds.seq
    await pds.stop()
    await sleep(5000)
    await pds.start(port)
    const tBack = Date.now()
    let back = true
    try {
      await pds.waitSubscribers(1, 20000)
    } catch {
      back = false
    }
    const c1 = pds.subscribeCursors[n0] ?? null
    console.log(`# revive: back after ${Date.now() - tBack} ms; cursor ${c1} (seq at stop ${seqAtStop1})`)
    checks.ok('the relay reconnected by itself to the PDS back on its port (no requestCrawl)', back, 'no subscriber within 20 s')
    checks.ok(
      'it resumed with a cursor <= the last seq before the stop',
      back && c1 !== null && Number(c1) > 0 && Number(c1) <= seqAtStop1,
      `cursor ${c1}, seq at stop ${seqAtStop1}`,
    )

    // 2. Down long enough for the backoff to grow; requestCrawl revives at once.
    await sleep(2000)
    n0 = pds.subscribeCursors.length
    await pds.stop()
    // Meanwhile the host is reported offline (getHostStatus), and still retried.
    const statusOf = async () => {
      const res = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getHostStatus?hostname=${pds.host}`)
      return (await res.json()).status
    }
    let sawOffline = false
    for (const end = Date.now() + 10000; Date.now() < end; ) {
      if (!sawOffline && (await statusOf().catch(() => null)) === 'offline') sawOffline = true
      await sleep(250)
    }
    checks.ok('a host that cannot be reached is reported offline by getHostStatus', sawOffline)
    await pds.start(port)
    const t2 = Date.now()
    const r = await baton.requestCrawl(pds.host)
    checks.ok('requestCrawl of the known host answers 200', r.status === 200, `HTTP ${r.status} ${JSON.stringify(r.body)}`)
    let back2 = true
    try {
      await pds.waitSubscribers(1, 20000)
    } catch {
      back2 = false
    }
    const ms2 = Date.now() - t2
    const c2 = pds.subscribeCursors[n0] ?? null
    console.log(`# revive: after requestCrawl reconnected in ${ms2} ms; cursor ${c2}`)
    checks.ok(
      'requestCrawl made the relay reconnect at once (< 2.5 s, shorter than its backoff)',
      back2 && ms2 < 2500,
      back2 ? `reconnected after ${ms2} ms` : 'no subscriber within 20 s',
    )
    checks.ok('the revived connection has a cursor', c2 !== null && Number(c2) > 0, `cursor ${c2}`)
    let st2 = null
    for (const end = Date.now() + 4000; Date.now() < end && st2 !== 'active'; await sleep(200))
      st2 = await statusOf().catch((e) => String(e)) // status changes reach the store in batches, once a second
    checks.ok('once reconnected the host is active again', st2 === 'active', `status ${st2}`)
    await sleep(2000)
  } finally {
    stop = true
    await driving
  }
  for (const p of [pds, steady]) await p.idle()
  if (driveErr) throw driveErr

  const valid = validRepoEvents([pds, steady])
  await live.waitFor((c) => hasAll(c, valid), 30000, 'every valid event').catch(() => {})
  await sleep(1000)
  checks.none('live: frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  checks.none(
    `live: all ${valid.length} valid events (incl. those emitted while the PDS was down) exactly once, per-DID order, no forged`,
    compareDelivery(live, valid, forgedEvents([pds, steady])),
  )
  await checkDrops(checks, baton, '', plantedFromSims([pds, steady]))
}

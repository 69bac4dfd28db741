// NAME
//   basic.mjs - the relay end to end, nothing broken.
// DESCRIPTION
//   A fake PLC and two PDS simulators (accounts with K-256 and P-256 keys)
//   are crawled by a fresh baton; one consumer is connected before any event.
//   A few hundred valid commits interleaved with forged ones (bad signature,
//   rev going back) and #identity / #account events are emitted. Checks:
//   every valid commit arrives exactly once at each consumer with its blocks
//   byte for byte, per-DID order = send order, seq strictly increasing, no
//   forged event ever arrives, every frame is canonical and lexicon-valid; a
//   cursor=0 consumer sees exactly the live consumer's sequence and a
//   mid-stream cursor consumer exactly the events after its cursor; a cursor
//   in the future gets FutureCursor. requestCrawl of a host whose Server
//   header says atproto-relay, and of a dead port, are refused (4xx) and the
//   relay-like host is never subscribed. SIGTERM stops the relay cleanly.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; the relay log stays in the temp
//   dir on failure.

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton, freePort } from '../lib/baton.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import {
  compareDelivery,
  validRepoEvents,
  forgedEvents,
  hasAll,
  identityAccountDelivered,
  tuples,
  sameTuples,
  relayLinesFor,
} from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'basic'

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pdses = [new PdsSim({ plc, name: 'pds1' }), new PdsSim({ plc, name: 'pds2' })]
  for (const p of pdses) await p.start()
  const relayLike = new PdsSim({ plc, serverHeader: 'baton/0.0 (atproto-relay)', name: 'relaylike' })
  await relayLike.start()
  ctx.cleanup.push(() => plc.stop(), () => relayLike.stop(), ...pdses.map((p) => () => p.stop()))

  const baton = new Baton({
    buildDir: ctx.buildDir,
    tmpDir: ctx.tmp,
    plcUrl: plc.url,
    extraEnv: { RELAY_BANNED_DOMAINS: 'banned.example' },
  })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  checks.ok('relay starts and /_health is 200', true)

  // Refusals first: a relay-like host and a dead port.
  const r1 = await baton.requestCrawl(relayLike.host)
  checks.ok(
    'requestCrawl of an atproto-relay host is refused (4xx)',
    r1.status >= 400 && r1.status < 500 && typeof r1.body?.error === 'string',
    `HTTP ${r1.status} ${JSON.stringify(r1.body)}`,
  )
  const dead = await freePort()
  const r2 = await baton.requestCrawl(`localhost:${dead}`)
  checks.ok(
    'requestCrawl of a dead port is refused (4xx)',
    r2.status >= 400 && r2.status < 500 && typeof r2.body?.error === 'string',
    `HTTP ${r2.status} ${JSON.stringify(r2.body)}`,
  )

  const r3 = await baton.requestCrawl('pds.banned.example')
  checks.ok(
    'requestCrawl of a host under a banned domain is refused (DomainBanned)',
    r3.status === 400 && r3.body?.error === 'DomainBanned',
    `HTTP ${r3.status} ${JSON.stringify(r3.body)}`,
  )

  for (const p of pdses) {
    const r = await baton.requestCrawl(p.host)
    checks.ok(`requestCrawl ${p.name} accepted`, r.status === 200, `HTTP ${r.status} ${JSON.stringify(r.body)}`)
  }
  for (const p of pdses) await p.waitSubscribers(1)
  checks.ok('relay subscribed to both PDS sims', true)

  const live = new Consumer(baton.wsUrl, { name: 'live' })
  await live.start()
  ctx.cleanup.push(() => live.close())

  const accounts = await createAccounts(pdses, 4, { withSync: true })
  const counts = await drive(accounts, { count: 320, ratePerSec: 80 })
  for (const p of pdses) await p.idle()
  console.log(`# basic: sent ${JSON.stringify(counts)}`)

  const valid = validRepoEvents(pdses)
  const forged = forgedEvents(pdses)
  try {
    await live.waitFor((c) => hasAll(c, valid), 30000, 'every valid event')
  } catch {}
  await sleep(1500) // let late (wrong) frames arrive too
  checks.none('live: frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  const liveProblems = compareDelivery(live, valid, forged)
  checks.none(`live: ${valid.length} valid events exactly once, in per-DID order, blocks intact, no forged`, liveProblems)
  for (const l of relayLinesFor(baton.logPath, liveProblems)) console.log(`#   relay: ${l}`)
  checks.none('live: #identity and #account delivered', identityAccountDelivered(live, pdses))

  // Replay consumers.
  const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
  const midSeq = live.events[Math.floor(live.events.length / 2)]?.seq ?? 0
  const mid = new Consumer(baton.wsUrl, { cursor: midSeq, name: `cursor${midSeq}` })
  await Promise.all([zero.start(), mid.start()])
  ctx.cleanup.push(() => zero.close(), () => mid.close())
  const head = live.lastSeq
  await Promise.allSettled([
    zero.waitFor((c) => c.lastSeq === head, 20000, 'replay to head'),
    mid.waitFor((c) => c.lastSeq === head, 20000, 'replay to head'),
  ])
  checks.none('cursor=0: no protocol problems', zero.errors)
  checks.none('cursor=0: same (seq, did, rev) sequence as live', sameTuples(tuples(zero), tuples(live), 'cursor0', 'live'))
  checks.none(`cursor=${midSeq}: no protocol problems`, mid.errors)
  checks.none(
    `cursor=${midSeq}: exactly the events with seq > cursor`,
    sameTuples(tuples(mid), tuples(live, midSeq), 'mid', 'live'),
  )

  const fut = new Consumer(baton.wsUrl, { cursor: (head ?? 0) + 1000, name: 'future' })
  await fut.start()
  await fut.waitFor((c) => c.closed || c.errorFrames.length > 0, 5000, 'FutureCursor').catch(() => {})
  checks.ok(
    'cursor in the future gets FutureCursor',
    fut.errorFrames.some((f) => f.error === 'FutureCursor'),
    `error frames: ${JSON.stringify(fut.errorFrames)}; events: ${fut.events.length}`,
  )
  await fut.close()

  checks.ok('the atproto-relay host was never subscribed', relayLike.subscribeCount === 0, `${relayLike.subscribeCount} connections`)
  const lh = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.listHosts`)).json()
  const names = (lh.hosts || []).map((h) => h.hostname).sort()
  checks.ok(
    'listHosts has exactly the two accepted PDSes: nothing refused was stored',
    JSON.stringify(names) === JSON.stringify(pdses.map((p) => p.host).sort()),
    JSON.stringify(names),
  )
  await checkDrops(checks, baton, '', plantedFromSims(pdses))
  await live.close()
  await zero.close()
  await mid.close()
  const st = await baton.stop()
  checks.ok('SIGTERM stops the relay cleanly', st.clean && st.code === 0, JSON.stringify(st))
}

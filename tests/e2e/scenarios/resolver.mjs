// NAME
//   resolver.mjs - identity resolution failures (lesson 18).
// DESCRIPTION
//   1. A DID whose PLC document is 404: its commits are dropped as
//      no_identity (batonctl drops.no_identity) and never delivered.
//   2. The fake PLC answers 503, then drops connections, for several
//      seconds. Commits of accounts created meanwhile (identity never
//      resolved) must not be delivered during the outage (nothing forwarded
//      unverified) and must be counted as waiting (counters.waiting > 0 at
//      some point, resolve_fails > 0); commits of accounts already resolved
//      keep flowing. When the PLC recovers every one of them arrives exactly
//      once, in per-DID order, and nothing is left waiting.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'resolver'

const isRepo = (e) => e.t === '#commit' || e.t === '#sync'

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pds = new PdsSim({ plc, name: 'pds1' })
  await pds.start()
  ctx.cleanup.push(() => plc.stop(), () => pds.stop())

  const baton = new Baton({ buildDir: ctx.buildDir, tmpDir: ctx.tmp, plcUrl: plc.url })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  const r = await baton.requestCrawl(pds.host)
  if (r.status !== 200) throw new Error(`requestCrawl: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  await pds.waitSubscribers(1)
  const live = new Consumer(baton.wsUrl, { name: 'live' })
  await live.start()
  ctx.cleanup.push(() => live.close())

  // Warm accounts: resolved while the PLC is fine.
  const warm = await createAccounts([pds], 2)
  for (const { acct } of warm) await pds.write(acct)

  // 1. A DID the PLC does not know.
  const ghost = await pds.createAccount({ register: false })
  for (let i = 0; i < 3; i++) await pds.write(ghost)
  await pds.idle()
  const ghostCommits = pds.sent.filter((e) => e.did === ghost.did && e.t === '#commit').length
  for (const e of pds.sent) {
    if (e.did === ghost.did) {
      e.valid = false
      e.kind = 'noidentity'
    }
  }
  const phase1 = validRepoEvents([pds])
  await live.waitFor((c) => hasAll(c, phase1), 20000, 'warm accounts').catch(() => {})
  let st = null
  const end1 = Date.now() + 10000
  while (Date.now() < end1) {
    st = await baton.status()
    if (Baton.sum(st, 'verify', 'drops', 'no_identity') >= ghostCommits) break
    await sleep(200)
  }
  await sleep(500)
  const nNoId = Baton.sum(st, 'verify', 'drops', 'no_identity')
  checks.ok(
    `404 DID: drops.no_identity >= its ${ghostCommits} commits`,
    nNoId >= ghostCommits,
    `verify drops.no_identity = ${nNoId}; PLC asked ${plc.requests.get(ghost.did) || 0}x for it`,
  )
  const ghostGot = live.events.filter((e) => e.did === ghost.did && isRepo(e))
  checks.ok('404 DID: none of its commits delivered', ghostGot.length === 0, `${ghostGot.length} delivered`)

  // 2. PLC outage: 503, then connections dropped.
  const outageStart = pds.sent.length
  const reqBefore = plc.totalRequests()
  plc.setMode('503')
  const fresh = await createAccounts([pds], 3)
  const freshDids = new Set(fresh.map((a) => a.acct.did))
  let maxWaiting = 0
  let resolveFails = 0
  const sample = async () => {
    const s = await baton.status().catch(() => null)
    if (!s) return
    maxWaiting = Math.max(maxWaiting, Baton.sum(s, 'verify', 'counters', 'waiting'))
    resolveFails = Math.max(resolveFails, Baton.sum(s, 'verify', 'counters', 'resolve_fails'))
  }
  const t0 = Date.now()
  for (let round = 0; Date.now() - t0 < 8000; round++) {
    if (round === 12) plc.setMode('drop')
    for (const { acct } of fresh) await pds.write(acct)
    await pds.write(warm[round % warm.length].acct)
    await sample()
    await sleep(250)
  }
  await pds.idle()
  const during = pds.sent.slice(outageStart)
  const warmDuring = during.filter((e) => e.valid && isRepo(e) && !freshDids.has(e.did))
  await live.waitFor((c) => hasAll(c, warmDuring), 5000, 'warm accounts during the outage').catch(() => {})
  await sample()
  const leaked = live.events.filter((e) => freshDids.has(e.did) && isRepo(e))
  const outageMode = plc.mode
  const reqDuring = plc.totalRequests() - reqBefore
  checks.ok(
    'outage: no commit of an unresolved account delivered while the PLC is down',
    leaked.length === 0,
    `${leaked.length} delivered, e.g. ${leaked.slice(0, 2).map((e) => `seq ${e.seq} ${e.did} rev ${e.rev}`).join(', ')}`,
  )
  checks.ok(
    'outage: counters.waiting > 0 at some point (frames wait for the resolver)',
    maxWaiting > 0,
    `max verify counters.waiting seen = ${maxWaiting}; PLC requests during outage = ${reqDuring}`,
  )
  checks.ok(
    'outage: the relay tried the PLC and counted failures (counters.resolve_fails > 0)',
    reqDuring > 0 && resolveFails > 0,
    `PLC requests=${reqDuring} resolve_fails=${resolveFails}`,
  )
  checks.ok(
    `outage: ${warmDuring.length} commits of already-resolved accounts kept flowing`,
    hasAll(live, warmDuring),
    `${warmDuring.filter((e) => !live.events.some((x) => x.commit === e.commit)).length} missing`,
  )

  // 3. Recovery.
  plc.setMode('ok')
  const tRec = Date.now()
  const valid = validRepoEvents([pds])
  await live.waitFor((c) => hasAll(c, valid), 45000, 'every valid event after recovery').catch(() => {})
  const recMs = Date.now() - tRec
  await sleep(1000)
  console.log(`# resolver: outage mode at end ${outageMode}; recovered in ${recMs} ms; max waiting ${maxWaiting}`)
  checks.none('live: frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  checks.none(
    `recovery: all ${valid.length} valid commits exactly once, in per-DID order, none of the 404 DID`,
    compareDelivery(live, valid, forgedEvents([pds])),
  )
  const ghostLate = live.events.filter((e) => e.did === ghost.did && isRepo(e))
  checks.ok('404 DID: still nothing delivered at the end', ghostLate.length === 0, `${ghostLate.length} delivered`)
  // Every frame of the 404 DID but its #identity (#account, its commits) is dropped as
  // no_identity; an #identity is passed on whatever the resolution says, as indigo does.
  const ghostFrames = pds.sent.filter((e) => e.did === ghost.did && e.t !== '#identity').length
  console.log(`# resolver: ghost frames sent ${pds.sent.filter((e) => e.did === ghost.did).map((e) => e.t).join(',')}; delivered ${live.events.filter((e) => e.did === ghost.did).map((e) => e.t).join(',') || 'none'}`)
  await checkDrops(checks, baton, '', plantedFromSims([pds], { no_identity: ghostFrames }))
  const stEnd = await baton.status()
  const waitingEnd = Baton.sum(stEnd, 'verify', 'counters', 'waiting')
  checks.ok('recovery: nothing left waiting (counters.waiting = 0)', waitingEnd === 0, `waiting = ${waitingEnd}`)
}

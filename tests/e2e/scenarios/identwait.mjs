// NAME
//   identwait.mjs - a DID whose resolver never answers cannot hold verify's ring (RELAY_IDENTITY_WAIT).
// DESCRIPTION
//   One verify process (every DID in one partition), RELAY_IDENTITY_WAIT=4s.  The fake PLC
//   holds every request for account H open without an answer (hang).  H's #account and
//   commits wait in verify's ring; warm accounts of the same partition keep flowing
//   meanwhile.  After the wait H's frames get drop verdicts identity_timeout (counted, and
//   chained by the store: the host's committed cursor reaches the PDS's last seq), nothing
//   is left waiting although H is still unresolved, and a new commit of H is dropped at once
//   (desynchronized) instead of holding the ring again.  Then the PLC answers again: once
//   verify has resolved H, H's later commits are verified and delivered.  Every valid event
//   of the other accounts exactly once, in order; none of H's dropped frames delivered.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { sleep } from '../lib/pds.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll, relayLinesFor } from '../lib/harness.mjs'

export const name = 'identwait'

export async function run(checks, ctx) {
  const { plc, pdses, baton, live } = await relayWithPdses(checks, ctx, {
    extraEnv: { RELAY_VERIFY_PROCS: '1', RELAY_IDENTITY_WAIT: '4' },
  })
  const pds = pdses[0]
  const warm = [await pds.createAccount({ keyType: 'k256' }), await pds.createAccount({ keyType: 'p256' })]
  await pds.idle()
  await live.waitFor((c) => hasAll(c, validRepoEvents(pdses)), 20000, 'warm accounts').catch(() => {})

  const H = await pds.createAccount({ keyType: 'k256', quiet: true })
  plc.hang(H.did)
  pds.emitIdentity(H) // needs no resolution: delivered
  pds.emitAccount(H, { active: true })
  const hFrames = [pds.sent[pds.sent.length - 1]]
  for (let i = 0; i < 3; i++) hFrames.push(await pds.write(H))
  for (const e of hFrames) {
    e.valid = false
    e.kind = 'identity-timeout'
  }
  const warmDuring = []
  for (let i = 0; i < 6; i++) warmDuring.push(await pds.write(warm[i % 2]))
  await pds.idle()
  await live.waitFor((c) => hasAll(c, warmDuring), 10000, 'warm commits while H waits').catch(() => {})
  const st1 = await baton.status()
  checks.ok(
    'other DIDs of the partition flow while H waits for its resolver',
    hasAll(live, warmDuring),
    `${warmDuring.filter((e) => !live.events.some((x) => x.commit === e.commit)).length} missing`,
  )
  checks.ok('... and H\'s frames are waiting then', Baton.sum(st1, 'verify', 'counters', 'waiting') > 0 &&
    Baton.sum(st1, 'verify', 'drops', 'identity_timeout') === 0,
    `waiting ${Baton.sum(st1, 'verify', 'counters', 'waiting')} identity_timeout ${Baton.sum(st1, 'verify', 'drops', 'identity_timeout')}`)

  // After RELAY_IDENTITY_WAIT the frames leave the ring as counted drops.
  let st = null
  const end = Date.now() + 30000
  while (Date.now() < end) {
    st = await baton.status()
    // The drop counters and the waiting gauge are separate words of the stats page, read at
    // different instants: wait for both (a gauge a beat behind its counters is not a failure).
    if (Baton.sum(st, 'verify', 'drops', 'identity_timeout') >= hFrames.length &&
        Baton.sum(st, 'verify', 'counters', 'waiting') === 0) break
    await sleep(200)
  }
  const nTo = Baton.sum(st, 'verify', 'drops', 'identity_timeout')
  checks.ok(`H's ${hFrames.length} waiting frames are dropped as identity_timeout`, nTo === hFrames.length, `identity_timeout ${nTo}`)
  checks.ok('nothing is left waiting although H is still unresolved', Baton.sum(st, 'verify', 'counters', 'waiting') === 0,
    `waiting ${Baton.sum(st, 'verify', 'counters', 'waiting')}`)
  const late = await pds.write(H) // desynchronized: dropped at once, not held
  late.valid = false
  late.kind = 'identity-timeout'
  const end2 = Date.now() + 10000
  while (Date.now() < end2) {
    st = await baton.status()
    if (Baton.sum(st, 'verify', 'drops', 'identity_timeout') > nTo && Baton.sum(st, 'verify', 'counters', 'waiting') === 0) break
    await sleep(100)
  }
  checks.ok('a new commit of the desynchronized H is dropped too (identity_timeout)',
    Baton.sum(st, 'verify', 'drops', 'identity_timeout') === nTo + 1, `identity_timeout ${Baton.sum(st, 'verify', 'drops', 'identity_timeout')}`)
  checks.ok('... and is not held in the ring', Baton.sum(st, 'verify', 'counters', 'waiting') === 0)
  const w2 = await pds.write(warm[0])
  await live.waitFor((c) => c.events.some((e) => e.commit === w2.commit), 10000, 'warm commit').catch(() => {})
  // The drops are chained: the store's cursor for the host reaches the PDS's last seq.
  const end3 = Date.now() + 10000
  let hs = null
  while (Date.now() < end3) {
    hs = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getHostStatus?hostname=${pds.host}`)).json()
    if (hs.seq === pds.seq) break
    await sleep(200)
  }
  checks.ok('the host\'s committed cursor passes every dropped frame (the drops are chained)', hs?.seq === pds.seq,
    `cursor ${hs?.seq}, PDS seq ${pds.seq}`)

  const rs1 = await repoStatus(baton, H.did)
  checks.ok('getRepoStatus shows H desynchronized (inactive) while unresolved', rs1.active === false && rs1.status === 'desynchronized',
    JSON.stringify(rs1))

  // The resolver answers again: once H is resolved its commits flow.
  plc.unhang(H.did)
  const end4 = Date.now() + 60000
  while (!(plc.served.get(H.did) > 0) && Date.now() < end4) await sleep(100)
  checks.ok('verify asked the PLC for H again and got its document', plc.served.get(H.did) > 0)
  await sleep(500) // the answer reaches verify's loop
  const back = []
  for (let i = 0; i < 2; i++) back.push(await pds.write(H))
  await pds.idle()
  const valid = validRepoEvents(pdses)
  await live.waitFor((c) => hasAll(c, valid), 20000, 'every valid event').catch(() => {})
  await sleep(1000)
  checks.ok('after H resolves, its later commits are delivered', back.every((e) => live.events.some((x) => x.commit === e.commit)),
    `${back.filter((e) => !live.events.some((x) => x.commit === e.commit)).length} of 2 missing`)
  checks.none('frames valid, seq strictly increasing', live.errors)
  const problems = compareDelivery(live, valid, forgedEvents(pdses))
  checks.none('every valid event exactly once, in order; none of H\'s dropped frames', problems)
  for (const l of relayLinesFor(baton.logPath, problems)) console.log(`#   relay: ${l}`)
  const rs2 = await repoStatus(baton, H.did)
  checks.ok('after H\'s next verified commit getRepoStatus shows it active again', rs2.active === true && !rs2.status,
    JSON.stringify(rs2))
  const hAcct = live.events.filter((e) => e.t === '#account' && e.did === H.did).length
  checks.ok('H\'s #account (dropped while unresolved) was not delivered', hAcct === 0, `${hAcct}`)
}

async function repoStatus(baton, did) {
  const r = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${encodeURIComponent(did)}`)
  return { http: r.status, ...(await r.json().catch(() => ({}))) }
}

// NAME
//   inversion.mjs - Sync 1.1 inversion enforced (and the lenient switch).
// DESCRIPTION
//   A PDS simulator emits correctly signed commits that fail the Sync 1.1
//   inversion (prevData names another MST root, or ops omit one of the two
//   changes the commit made), each between valid commits of the same
//   account. Against a default relay: no forged commit reaches a consumer,
//   every valid commit around them arrives exactly once in per-DID order,
//   and batonctl status counts drops.bad_inversion >= the number forged.
//   Then a second, short-lived relay started with
//   RELAY_LENIENT_SYNC_VALIDATION=true passes the same kind of commit on
//   (delivered once) and counts counters.inversion_lenient.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; the relay logs stay in the temp
//   dir on failure (baton.log, lenient/baton.log).

import fs from 'node:fs'
import path from 'node:path'
import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'inversion'

// valid, forged, valid on random accounts; returns the forged metadata.
async function forgeRounds(accounts, rounds) {
  const forged = []
  for (let i = 0; i < rounds; i++) {
    const { pds, acct } = accounts[i % accounts.length]
    await pds.write(acct)
    forged.push(await pds.forgeBadInversion(acct, i % 2 === 0 ? 'prevData' : 'omitOp'))
    await pds.write(acct)
    await sleep(30)
  }
  return forged
}

async function waitStatus(baton, pred, timeoutMs) {
  const end = Date.now() + timeoutMs
  let st = null
  while (Date.now() < end) {
    st = await baton.status().catch(() => null)
    if (st && pred(st)) return st
    await sleep(200)
  }
  return st
}

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pds = new PdsSim({ plc, name: 'pds1' })
  await pds.start()
  ctx.cleanup.push(() => plc.stop(), () => pds.stop())

  // 1. Strict (default) relay.
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

  const accounts = await createAccounts([pds], 4)
  const forged = await forgeRounds(accounts, 12)
  await pds.idle()
  const valid = validRepoEvents([pds])
  await live.waitFor((c) => hasAll(c, valid), 30000, 'every valid event').catch(() => {})
  const st = await waitStatus(baton, (s) => Baton.sum(s, 'verify', 'drops', 'bad_inversion') >= forged.length, 5000)
  await sleep(1000) // late (wrong) frames
  checks.none('strict: frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  checks.none(
    `strict: ${valid.length} valid commits around ${forged.length} bad-inversion ones exactly once, in order, none forged`,
    compareDelivery(live, valid, forgedEvents([pds])),
  )
  const forgedCids = new Set(forged.map((e) => e.commit))
  const leaked = live.events.filter((e) => forgedCids.has(e.commit))
  checks.ok('strict: no bad-inversion commit delivered', leaked.length === 0, `${leaked.length} delivered`)
  const nInv = Baton.sum(st, 'verify', 'drops', 'bad_inversion')
  checks.ok(
    `strict: batonctl status drops.bad_inversion >= ${forged.length}`,
    nInv >= forged.length,
    `verify drops.bad_inversion = ${nInv}; verify drops: ${JSON.stringify((st?.stages || []).filter((s) => s.role === 'verify').map((s) => s.drops))}`,
  )
  await checkDrops(checks, baton, 'strict: ', plantedFromSims([pds]))
  await live.close()
  await baton.stop()

  // 2. Lenient relay: the same kind of commit is passed on.
  const ltmp = path.join(ctx.tmp, 'lenient')
  fs.mkdirSync(ltmp, { recursive: true })
  const pds2 = new PdsSim({ plc, name: 'pds2' })
  await pds2.start()
  ctx.cleanup.push(() => pds2.stop())
  const lenient = new Baton({
    buildDir: ctx.buildDir,
    tmpDir: ltmp,
    plcUrl: plc.url,
    verifyProcs: 1,
    fanoutProcs: 1,
    extraEnv: { RELAY_LENIENT_SYNC_VALIDATION: 'true' },
  })
  ctx.cleanup.push(() => lenient.stop())
  await lenient.start()
  await lenient.waitHealthy()
  const r2 = await lenient.requestCrawl(pds2.host)
  if (r2.status !== 200) throw new Error(`lenient requestCrawl: HTTP ${r2.status} ${JSON.stringify(r2.body)}`)
  await pds2.waitSubscribers(1)
  const lc = new Consumer(lenient.wsUrl, { name: 'lenient' })
  await lc.start()
  ctx.cleanup.push(() => lc.close())
  const accounts2 = await createAccounts([pds2], 2)
  const forged2 = await forgeRounds(accounts2, 4)
  await pds2.idle()
  const expected = [...validRepoEvents([pds2]), ...forged2]
  await lc.waitFor((c) => hasAll(c, expected), 20000, 'every event incl. the lenient ones').catch(() => {})
  const st2 = await waitStatus(lenient, (s) => Baton.sum(s, 'verify', 'counters', 'inversion_lenient') >= forged2.length, 5000)
  await sleep(500)
  checks.none('lenient: frames canonical, lexicon-valid, seq strictly increasing', lc.errors)
  const got = new Map()
  for (const e of lc.events) if (e.commit) got.set(e.commit, (got.get(e.commit) || 0) + 1)
  const notOnce = forged2.filter((e) => got.get(e.commit) !== 1).map((e) => `${e.did} rev ${e.rev}: ${got.get(e.commit) || 0}x`)
  checks.none(`lenient: the ${forged2.length} bad-inversion commits are delivered exactly once`, notOnce)
  checks.none(
    'lenient: every valid commit exactly once, in per-DID order',
    compareDelivery(lc, validRepoEvents([pds2]), []).filter((p) => !/^unexpected event/.test(p) && !/^\.\.\./.test(p)),
  )
  const nLen = Baton.sum(st2, 'verify', 'counters', 'inversion_lenient')
  checks.ok(
    `lenient: counters.inversion_lenient >= ${forged2.length} and no bad_inversion drop`,
    nLen >= forged2.length && Baton.sum(st2, 'verify', 'drops', 'bad_inversion') === 0,
    `inversion_lenient=${nLen} bad_inversion=${Baton.sum(st2, 'verify', 'drops', 'bad_inversion')}`,
  )
  await checkDrops(checks, lenient, 'lenient: ', plantedFromSims([pds2], {}, { lenient: true }))
  await lc.close()
  await lenient.stop()
}

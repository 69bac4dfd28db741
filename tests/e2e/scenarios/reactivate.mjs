// NAME
//   reactivate.mjs - account status: deactivation, reactivation, and a missed #account (lesson 15).
// DESCRIPTION
//   Account A is deactivated by its PDS (#account active:false): its next
//   commit is dropped as inactive (the relay asks the PDS's getRepoStatus,
//   which agrees). Then the PDS reactivates A without the relay seeing any
//   #account (a missed event): A's next correctly signed commit makes the
//   relay ask the PDS again, which says active, so that commit and the ones
//   after it are delivered. Account B goes the ordinary way: takendown, then
//   #account active:true, then its commits flow again.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'reactivate'

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx)
  const pds = pdses[0]

  const A = await pds.createAccount({ keyType: 'k256' })
  const B = await pds.createAccount({ keyType: 'p256' })
  const a1 = await pds.write(A)
  pds.emitAccount(A, { active: false, status: 'deactivated' })
  const aDropped = await pds.write(A) // inactive, and the PDS says so too
  pds.emitAccount(B, { active: false, status: 'takendown' })
  const bDropped = await pds.write(B)
  await sleep(6000) // past the relay's status re-check interval
  A.active = true // reactivated on the PDS; the relay never hears an #account about it
  A.status = null
  const a2 = await pds.write(A)
  const a3 = await pds.write(A)
  pds.emitAccount(B, { active: true })
  const b2 = await pds.write(B)
  await pds.idle()

  const want = [a1, a2, a3, b2]
  const has = (c, e) => c.events.some((x) => x.t === '#commit' && x.commit === e.commit)
  await live.waitFor((c) => want.every((e) => has(c, e)), 20000, 'expected commits').catch(() => {})
  await sleep(1000)
  checks.none('frames valid, seq strictly increasing', live.errors)
  checks.ok('a commit of a deactivated account is not delivered', !has(live, aDropped))
  checks.ok('a commit of a takendown account is not delivered', !has(live, bDropped))
  checks.ok(
    'after a missed reactivation, the relay asked the PDS and delivers the account again',
    has(live, a2) && has(live, a3),
    `a2 ${has(live, a2)}, a3 ${has(live, a3)}`,
  )
  checks.ok('after #account active:true the account is delivered again', has(live, b2))
  const st = await baton.status()
  const inactive = Baton.sum(st, 'verify', 'drops', 'inactive')
  checks.ok('the dropped commits are counted as inactive', inactive >= 2, `drops.inactive ${inactive}`)
  const accts = live.events.filter((e) => e.t === '#account').length
  checks.ok('the #account events were delivered', accts >= 3, `${accts} #account events`)
  // The two commits of inactive accounts; nothing else is dropped.
  await checkDrops(checks, baton, '', plantedFromSims(pdses, { inactive: 2 }))
  await live.close()
}

// NAME
//   didweb.mjs - an account whose DID is did:web.
// DESCRIPTION
//   The PDS simulator hosts a did:web account (did:web:localhost%3A<port>) and
//   serves its DID document at /.well-known/did.json. The relay must resolve
//   it there (not at the PLC), verify its commits with that key and deliver
//   them, while a forged one (signed with another key) is dropped. A did:plc
//   account on the same PDS keeps flowing alongside.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'didweb'

export async function run(checks, ctx) {
  const { plc, pdses, baton, live } = await relayWithPdses(checks, ctx)
  const pds = pdses[0]

  const web = await pds.createAccount({ keyType: 'p256', didWeb: true })
  const plcAcct = await pds.createAccount({ keyType: 'k256' })
  for (let i = 0; i < 5; i++) {
    await pds.write(web)
    await pds.write(plcAcct)
  }
  await pds.forgeBadSignature(web)
  await pds.write(web)
  await pds.idle()
  const valid = validRepoEvents([pds])
  await live.waitFor((c) => hasAll(c, valid), 20000, 'every valid event').catch(() => {})
  await sleep(1000)
  checks.none('frames valid, seq strictly increasing', live.errors)
  checks.none('every valid commit of both accounts exactly once, in order; the forged one dropped', compareDelivery(live, valid, forgedEvents([pds])))
  const webCommits = live.events.filter((e) => e.t === '#commit' && e.did === web.did).length
  checks.ok(`the did:web account's commits were delivered (${web.did})`, webCommits >= 6, `${webCommits} commits`)
  const plcAsked = plc.requests.get(web.did) ?? 0
  checks.ok('did:web was resolved at the host, not at the PLC', plcAsked === 0, `${plcAsked} PLC requests for did:web`)
  await checkDrops(checks, baton, '', plantedFromSims([pds]))
  await live.close()
}

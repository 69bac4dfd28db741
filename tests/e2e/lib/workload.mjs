// NAME
//   workload.mjs - the mixed event stream the scenarios emit.
// DESCRIPTION
//   Creates accounts on PDS simulators (alternating K-256 and P-256 keys) and
//   drives a stream of valid commits interleaved with forged ones (bad
//   signature, rev going back) and #identity / #account events, paced to a
//   target rate so a relay's per-host limits (50 events/s) are not the
//   bottleneck.
// DIAGNOSTICS
//   Errors from the simulators propagate (a failing @atproto/repo call is a
//   harness bug, not a relay bug).

import { sleep } from './pds.mjs'

// Creates n accounts on each sim; key types alternate k256 / p256. One
// account per sim starts with a #sync instead of a genesis #commit when
// opts.withSync is set.
export async function createAccounts(pdses, n, { withSync = false } = {}) {
  const accounts = []
  for (const pds of pdses) {
    for (let i = 0; i < n; i++) {
      const keyType = i % 2 === 0 ? 'k256' : 'p256'
      const genesis = withSync && i === 1 ? 'sync' : 'commit'
      const acct = await pds.createAccount({ keyType, genesis })
      accounts.push({ pds, acct })
    }
  }
  return accounts
}

// Emits `count` events (or until shouldStop() is true) across the accounts;
// ratePerSec paces the total. Resolves to counts per kind.
export async function drive(accounts, { count = Infinity, ratePerSec = 60, shouldStop = () => false } = {}) {
  const counts = { commit: 0, badsig: 0, revback: 0, identity: 0, account: 0 }
  const start = Date.now()
  for (let i = 0; i < count && !shouldStop(); i++) {
    const { pds, acct } = accounts[Math.floor(Math.random() * accounts.length)]
    if (i % 9 === 4) {
      await pds.forgeBadSignature(acct)
      counts.badsig++
    } else if (i % 13 === 7) {
      await pds.forgeRevBack(acct)
      counts.revback++
    } else if (i % 41 === 20) {
      pds.emitIdentity(acct, { handle: `h${i}-${acct.did.slice(8, 14)}.test` })
      counts.identity++
    } else if (i % 47 === 30) {
      pds.emitAccount(acct, { active: true })
      counts.account++
    } else {
      await pds.write(acct)
      counts.commit++
    }
    const due = start + ((i + 1) * 1000) / ratePerSec
    const wait = due - Date.now()
    // Behind schedule, still yield to timers and sockets: the sims' writes resolve through
    // microtasks only, so a loop that never sleeps would starve the event loop (the PLC, the
    // subscribers and the scenario's own timers, including the one that stops this loop).
    if (wait > 0) await sleep(wait)
    else await new Promise((r) => setImmediate(r))
  }
  return counts
}

// NAME
//   evict.mjs - a DID with uncommitted verdicts is never evicted from verify's cache.
// DESCRIPTION
//   One verify process with the smallest cache (RELAY_IDENTITY_CACHE_SIZE=16) and 22 accounts.
//   The store is frozen (SIGSTOP) so verdicts stay uncommitted; meanwhile account A gets a
//   commit c1 and account B an #account deactivated, then 20 other accounts write (enough to
//   evict A and B from an LRU cache of 16), then c1 is sent again byte for byte and B writes
//   a commit.  Were A and B evicted and reloaded from RocksDB (which does not have their new
//   state yet), the re-sent c1 would be accepted a second time and B's commit accepted.  The
//   store is thawed (SIGCONT) and the checks are: every valid commit exactly once, in order;
//   c1 once; B's commit never delivered (drops.inactive); the re-sent c1 dropped (rev_old).
//   Then, with everything committed, A is evicted for real and c1 is sent a third time: A
//   is reloaded from a view that caught up after its eviction, so c1 is dropped again.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { sleep } from '../lib/pds.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll, relayLinesFor } from '../lib/harness.mjs'

export const name = 'evict'

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, {
    extraEnv: { RELAY_VERIFY_PROCS: '1', RELAY_IDENTITY_CACHE_SIZE: '16', RELAY_HEARTBEAT_TIMEOUT: '120' },
  })
  const pds = pdses[0]
  const A = await pds.createAccount({ keyType: 'k256' })
  const B = await pds.createAccount({ keyType: 'p256' })
  const fillers = []
  for (let i = 0; i < 20; i++) fillers.push(await pds.createAccount({ keyType: i % 2 ? 'p256' : 'k256' }))
  await pds.write(A)
  await pds.write(B)
  await pds.idle()
  await live.waitFor((c) => hasAll(c, validRepoEvents(pdses)), 30000, 'the accounts').catch(() => {})

  const framesOut = async () => Baton.sum(await baton.status(), 'verify', 'counters', 'frames_out')
  const st0 = await baton.status()
  const store = (st0.stages || []).find((s) => s.role === 'store')
  process.kill(store.pid, 'SIGSTOP')
  let thawed = false
  ctx.cleanup.push(() => {
    if (!thawed) process.kill(store.pid, 'SIGCONT')
  })
  const base = await framesOut()
  const c1 = await pds.write(A)
  pds.emitAccount(B, { active: false, status: 'deactivated' })
  const end = Date.now() + 10000
  while ((await framesOut()) < base + 2 && Date.now() < end) await sleep(50)
  checks.ok('with the store frozen, verify gave A and B their verdicts', (await framesOut()) >= base + 2)
  for (const f of fillers) await pds.write(f)
  const again = pds.resend(c1)
  const bCommit = await pds.write(B)
  bCommit.valid = false
  bCommit.kind = 'inactive'
  await pds.idle()
  // Let verify go as far as it can.  A fixed verify stops taking new DIDs once its cache is
  // full of uncommitted ones (so this wait times out there), a broken one evicts and runs on.
  const end2 = Date.now() + 4000
  while ((await framesOut()) < base + 24 && Date.now() < end2) await sleep(100)
  console.log(`# evict: ${(await framesOut()) - base} verdicts given while the store was frozen`)
  process.kill(store.pid, 'SIGCONT')
  thawed = true

  const valid = validRepoEvents(pdses)
  await live.waitFor((c) => hasAll(c, valid), 30000, 'every valid event').catch(() => {})
  await sleep(1500)
  checks.none('frames valid, seq strictly increasing', live.errors)
  const problems = compareDelivery(live, valid, forgedEvents(pdses))
  checks.none('every valid commit exactly once, in per-DID order', problems)
  for (const l of relayLinesFor(baton.logPath, problems)) console.log(`#   relay: ${l}`)
  const copies = live.events.filter((e) => e.commit === c1.commit).length
  checks.ok('the re-sent commit of A is delivered once', copies === 1, `${copies} copies`)
  checks.ok('the commit of the deactivated B is not delivered', !live.events.some((e) => e.commit === bCommit.commit))
  let st = await baton.status()
  checks.ok('the re-sent commit is dropped as rev_old', Baton.sum(st, 'verify', 'drops', 'rev_old') >= 1)
  checks.ok('B\'s commit is dropped as inactive', Baton.sum(st, 'verify', 'drops', 'inactive') >= 1)

  // Everything is committed now: A may be evicted, and comes back with its latest state.
  const revOld = Baton.sum(st, 'verify', 'drops', 'rev_old')
  for (const f of fillers) await pds.write(f)
  await pds.idle()
  await live.waitFor((c) => hasAll(c, validRepoEvents(pdses)), 30000, 'the fillers').catch(() => {})
  pds.resend(c1)
  const last = await pds.write(A)
  await live.waitFor((c) => c.events.some((e) => e.commit === last.commit), 20000, 'A again').catch(() => {})
  await sleep(1000)
  st = await baton.status()
  const copies2 = live.events.filter((e) => e.commit === c1.commit).length
  checks.ok('after A was evicted and reloaded, c1 sent again is still not delivered', copies2 === 1, `${copies2} copies`)
  checks.ok('... it is dropped as rev_old', Baton.sum(st, 'verify', 'drops', 'rev_old') === revOld + 1,
    `rev_old ${revOld} -> ${Baton.sum(st, 'verify', 'drops', 'rev_old')}`)
  checks.none('and everything valid still exactly once, in order', compareDelivery(live, validRepoEvents(pdses), forgedEvents(pdses)))
  checks.ok('no stage restarted', (st.stages || []).every((s) => Number(s.restarts || 0) === 0))
  void again
}

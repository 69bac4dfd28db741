// NAME
//   sync.mjs - #sync events: forwarded when their rev is not older, state reset, forgeries dropped.
// DESCRIPTION
//   Accounts are created the way @atproto/pds's createAccount sequences them: #identity,
//   #account, the genesis #commit and a #sync of that same commit (same rev). Checks:
//   - every such #sync reaches the consumer exactly once, in per-DID order (indigo forwards
//     every #sync; a rev equal to the stored one is not "old");
//   - a #sync mid-stream that replaces an account's repo with a new state (new rev, new MST)
//     is forwarded and becomes the account's state: the #commits after it chain from it, so
//     no discontinuity is counted, and they are delivered;
//   - a #sync of the current state again (what activateAccount emits) is forwarded;
//   - forged or invalid #sync events are dropped with their named reasons and never
//     delivered: an older rev (drops.sync_rev_old), another key (bad_sig), a CAR past the
//     lexicon's 10,000 bytes (too_big), a rev an hour ahead (rev_future), an account that is
//     deactivated (inactive);
//   - a cursor=0 consumer replays exactly the live sequence.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import {
  compareDelivery,
  validRepoEvents,
  forgedEvents,
  hasAll,
  tuples,
  sameTuples,
  relayLinesFor,
} from '../lib/harness.mjs'

export const name = 'sync'

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx)
  const pds = pdses[0]

  const A = await pds.createAccount({ keyType: 'k256' })
  const B = await pds.createAccount({ keyType: 'p256' })
  const C = await pds.createAccount({ keyType: 'k256' })
  for (let i = 0; i < 3; i++) {
    await pds.write(A)
    await pds.write(B)
  }
  await pds.write(C)
  await pds.forgeSync(A, 'old') // the genesis commit again: older than the stored rev
  const reset = await pds.resetRepo(A) // a new state, announced by #sync only
  for (let i = 0; i < 3; i++) await pds.write(A) // chain from the new state
  await pds.forgeSync(B, 'badsig')
  await pds.forgeSync(B, 'big')
  await pds.forgeSync(B, 'future')
  const again = await pds.emitSync(B) // the current state again: same rev as stored
  await pds.write(B)
  pds.emitAccount(C, { active: false, status: 'deactivated' })
  const cSync = await pds.emitSync(C)
  cSync.valid = false
  cSync.kind = 'sync-inactive'
  await pds.idle()

  const valid = validRepoEvents(pdses)
  const forged = forgedEvents(pdses)
  await live.waitFor((c) => hasAll(c, valid), 30000, 'every valid event').catch(() => {})
  await sleep(1500) // late (wrong) frames would arrive meanwhile
  checks.none('frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  const problems = compareDelivery(live, valid, forged)
  checks.none(`${valid.length} valid #commit/#sync exactly once, in per-DID order, none forged`, problems)
  for (const l of relayLinesFor(baton.logPath, problems)) console.log(`#   relay: ${l}`)

  const syncs = (did) => live.events.filter((e) => e.t === '#sync' && e.did === did)
  for (const [n, acct] of [['A', A], ['B', B], ['C', C]]) {
    const got = syncs(acct.did).filter((e) => e.rev === acct.genesis.rev).length
    checks.ok(`account ${n}: the createAccount #sync (same rev as the genesis commit) arrives once`, got === 1, `${got} copies`)
  }
  const gotReset = syncs(A.did).filter((e) => e.rev === reset.rev)
  checks.ok('the mid-stream #sync resetting A to a new state arrives', gotReset.length === 1, `${gotReset.length} copies`)
  const after = live.events.filter((e) => e.t === '#commit' && e.did === A.did && e.rev > reset.rev)
  checks.ok('the #commits after it are delivered', after.length === 3, `${after.length} of 3`)
  checks.ok(
    'a #sync of the current state again (rev = stored rev) is forwarded',
    syncs(B.did).some((e) => e.rev === again.rev),
  )
  checks.ok('the #sync of a deactivated account is not delivered', !syncs(C.did).some((e) => e.rev === cSync.rev))

  const st = await baton.status()
  const d = (k) => Baton.sum(st, 'verify', 'drops', k)
  checks.ok('the older #sync is counted as sync_rev_old', d('sync_rev_old') === 1, `drops.sync_rev_old ${d('sync_rev_old')}`)
  checks.ok('the #sync signed with another key: bad_sig', d('bad_sig') === 1, `drops.bad_sig ${d('bad_sig')}`)
  checks.ok('the #sync over 10,000 bytes: too_big', d('too_big') === 1, `drops.too_big ${d('too_big')}`)
  checks.ok('the #sync an hour ahead: rev_future', d('rev_future') === 1, `drops.rev_future ${d('rev_future')}`)
  checks.ok('the #sync of the deactivated account: inactive', d('inactive') === 1, `drops.inactive ${d('inactive')}`)
  checks.ok('nothing else was dropped as rev_old', d('rev_old') === 0, `drops.rev_old ${d('rev_old')}`)
  const disc = Baton.sum(st, 'verify', 'counters', 'discontinuities')
  checks.ok(
    'the commits after each #sync chain from it (no discontinuity counted)',
    disc === 0,
    `counters.discontinuities ${disc}`,
  )
  const rs = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getLatestCommit?did=${A.did}`)).json()
  checks.ok('the relay holds A at its last commit after the reset', rs.rev === A.repo.commit.rev, JSON.stringify(rs))

  const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
  await zero.start()
  ctx.cleanup.push(() => zero.close())
  await zero.waitFor((c) => c.lastSeq === live.lastSeq, 20000, 'replay to head').catch(() => {})
  checks.none('cursor=0: no protocol problems', zero.errors)
  checks.none('cursor=0: same (seq, did, rev) sequence as live', sameTuples(tuples(zero), tuples(live), 'cursor0', 'live'))
  await zero.close()
  await live.close()
}

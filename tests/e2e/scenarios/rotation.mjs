// NAME
//   rotation.mjs - commits signed before a key rotation are not lost (issue 5, part 2).
// DESCRIPTION
//   (a) The relay is stopped for ~10 s while the PDS goes on writing: accounts the relay knew
//       rotate their signing key (PLC update, then #identity) between commits, and new accounts
//       are created, write and rotate before the relay ever saw them. After the restart the relay
//       catches up from its cursors. A cursor=0 consumer must hold every valid event exactly once,
//       in order; drops.bad_sig == 0 (nothing forged was sent); the known accounts were checked with
//       the persisted identity (counters.identity_loaded > 0) and the new accounts' pre-rotation
//       commits with the PLC audit log (counters.sig_prior_key > 0), one audit fetch per DID or so.
//   (b) Both verify stages are stopped (SIGSTOP) while accounts write, rotate and write again, so
//       the backlog waits in their input rings, then killed (-9): the new incarnations start with
//       an empty memory cache. Nothing valid is lost.
//   (c) The security boundary: after an account's commit signed with its new key is accepted (and
//       the verify stages restarted, so they never saw the #identity), a commit signed with the key
//       it rotated away (fresh rev, from the authoritative PDS, seconds after the rotation) is
//       dropped as bad_sig and never delivered.
//   (d) The persisted identity is purged in stream order: the relay is stopped, an account it
//       knows rotates (PLC update, #identity), then a commit signed with the old key follows the
//       #identity (within seconds of the rotation), then a valid one. After the restart the
//       persisted (old) key checks the frames before the #identity only: the old-key commit is
//       dropped as bad_sig, the valid one delivered.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; `#` lines give the counters.

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll, relayLinesFor } from '../lib/harness.mjs'

export const name = 'rotation'

// Writes n commits spread over the accounts, about every `gapMs`.
async function writes(pds, accts, n, gapMs = 40) {
  for (let i = 0; i < n; i++) {
    await pds.write(accts[i % accts.length])
    await sleep(gapMs)
  }
}

async function deliveredAll(checks, label, consumer, pdses, baton) {
  const valid = validRepoEvents(pdses)
  const forged = forgedEvents(pdses)
  await consumer.waitFor((c) => hasAll(c, valid), 40000, label).catch(() => {})
  await sleep(500)
  checks.none(`${label}: frames canonical, lexicon-valid, seq strictly increasing`, consumer.errors)
  const problems = compareDelivery(consumer, valid, forged)
  checks.none(`${label}: every valid event exactly once, in per-DID order, nothing forged`, problems)
  for (const l of relayLinesFor(baton.logPath, problems, 8)) console.log(`#   ${l}`)
  return valid.length
}

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pds = new PdsSim({ plc, name: 'pds' })
  await pds.start()
  ctx.cleanup.push(() => plc.stop(), () => pds.stop())
  const baton = new Baton({ buildDir: ctx.buildDir, tmpDir: ctx.tmp, plcUrl: plc.url })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  const r = await baton.requestCrawl(pds.host)
  checks.ok('requestCrawl accepted', r.status === 200, `HTTP ${r.status}`)
  await pds.waitSubscribers(1)

  // Accounts the relay knows (resolved, persisted) before it stops.
  const known = []
  for (let i = 0; i < 6; i++) known.push(await pds.createAccount({ keyType: i % 2 ? 'p256' : 'k256' }))
  await writes(pds, known, 18, 20)
  await pds.idle()
  const first = new Consumer(baton.wsUrl, { cursor: 0, name: 'first' })
  await first.start()
  ctx.cleanup.push(() => first.close())
  await first.waitFor((c) => hasAll(c, validRepoEvents([pds])), 20000, 'first batch').catch(() => {})
  await first.close()

  // (a) Stopped while the PDS writes and rotates.
  const st = await baton.stop()
  checks.ok('(a) SIGTERM stops the relay', st.clean, JSON.stringify(st))
  const t0 = Date.now()
  const rotated = known.slice(0, 4)
  await writes(pds, known, 24)
  for (const a of rotated) await pds.rotateKey(a)
  await writes(pds, known, 12)
  const fresh = []
  for (let i = 0; i < 3; i++) fresh.push(await pds.createAccount({ keyType: i % 2 ? 'p256' : 'k256' }))
  await writes(pds, fresh, 12)
  for (const a of fresh) await pds.rotateKey(a)
  await writes(pds, [...fresh, ...known], 12)
  await pds.idle()
  const left = 10000 - (Date.now() - t0)
  if (left > 0) await sleep(left)
  console.log(`# rotation: relay down ${((Date.now() - t0) / 1000).toFixed(1)} s, ${plc.rotations.length} rotations`)

  await baton.start()
  await baton.waitHealthy()
  await pds.waitSubscribers(1)
  const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
  await zero.start()
  ctx.cleanup.push(() => zero.close())
  const nA = await deliveredAll(checks, '(a) cursor=0 after the restart', zero, [pds], baton)
  let s = await baton.status()
  const badSig = (st) => Baton.sum(st, 'verify', 'drops', 'bad_sig')
  const prior = Baton.sum(s, 'verify', 'counters', 'sig_prior_key')
  const loaded = Baton.sum(s, 'verify', 'counters', 'identity_loaded')
  console.log(`# rotation: ${nA} valid events; bad_sig ${badSig(s)}, sig_prior_key ${prior}, identity_loaded ${loaded}`)
  checks.ok('(a) drops.bad_sig == 0 (nothing forged was sent)', badSig(s) === 0, `bad_sig ${badSig(s)}`)
  checks.ok('(a) known accounts were checked with the persisted identity (identity_loaded > 0)', loaded > 0, `${loaded}`)
  checks.ok('(a) new accounts\' pre-rotation commits accepted by the audit log (sig_prior_key > 0)', prior > 0, `${prior}`)
  const audits = fresh.map((a) => plc.auditRequests.get(a.did) || 0)
  checks.ok(
    '(a) a backlog costs about one audit-log fetch per DID',
    audits.every((n) => n >= 1 && n <= 3),
    JSON.stringify(audits),
  )

  // (b) Both verify stages frozen while accounts write, rotate and write; then killed.
  const pids = []
  for (const i of [0, 1]) pids.push((await baton.stage('verify', i)).pid)
  for (const p of pids) process.kill(p, 'SIGSTOP')
  const accts = [...known, ...fresh]
  await writes(pds, accts, 18, 20)
  for (const a of [known[0], known[4], fresh[1]]) await pds.rotateKey(a)
  await writes(pds, accts, 18, 20)
  await pds.idle()
  for (const p of pids) process.kill(p, 'SIGKILL')
  for (const i of [0, 1]) await baton.waitRestarted('verify', i, pids[i], 20000)
  checks.ok('(b) both verify stages restarted after SIGSTOP + kill -9', true)
  await writes(pds, accts, 9, 20)
  await pds.idle()
  await deliveredAll(checks, '(b) live consumer after the verify kills', zero, [pds], baton)
  s = await baton.status()
  checks.ok('(b) drops.bad_sig == 0', badSig(s) === 0, `bad_sig ${badSig(s)}`)

  // (c) A stolen, rotated-away key cannot publish once the new key has been used.
  const victim = known[1]
  await pds.rotateKey(victim)
  await pds.write(victim)
  await pds.idle()
  await zero.waitFor((c) => hasAll(c, validRepoEvents([pds])), 20000, 'new-key commit').catch(() => {})
  // Fresh verify processes: they never saw the #identity, so only the stored rev (a commit with
  // the new key, after the rotation) closes the old key's window.
  const pids2 = []
  for (const i of [0, 1]) pids2.push(await baton.killStage('verify', i))
  for (const i of [0, 1]) await baton.waitRestarted('verify', i, pids2[i], 20000)
  const before = badSig(await baton.status())
  const forged = await pds.forgeOldKey(victim)
  await pds.write(victim) // a valid commit after it: the forgery has been decided once this arrives
  await pds.idle()
  await deliveredAll(checks, '(c) after a commit signed with a rotated-away key', zero, [pds], baton)
  const after = badSig(await baton.status())
  checks.ok('(c) the old-key commit is dropped as bad_sig', after === before + 1, `bad_sig ${before} -> ${after}`)
  checks.ok(
    '(c) the old-key commit is never delivered',
    !zero.events.some((e) => e.commit === forged.commit),
    forged.commit,
  )
  await zero.close()

  // (d) The #identity purges the persisted identity in stream order.
  const victim2 = known[2]
  const st2 = await baton.stop()
  checks.ok('(d) SIGTERM stops the relay', st2.clean, JSON.stringify(st2))
  // The #identity is the account's first frame after the restart: nothing else has loaded
  // its persisted identity before it.
  await pds.rotateKey(victim2)
  const forged2 = await pds.forgeOldKey(victim2)
  await pds.write(victim2)
  await pds.idle()
  await baton.start()
  await baton.waitHealthy()
  await pds.waitSubscribers(1)
  const again = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0-d' })
  await again.start()
  ctx.cleanup.push(() => again.close())
  await deliveredAll(checks, '(d) cursor=0 after the second restart', again, [pds], baton)
  s = await baton.status()
  checks.ok('(d) the old-key commit after the #identity is dropped as bad_sig', badSig(s) === 1, `bad_sig ${badSig(s)}`)
  checks.ok(
    '(d) the old-key commit is never delivered',
    !again.events.some((e) => e.commit === forged2.commit),
    forged2.commit,
  )
  checks.ok('(d) the restarted verify used persisted identities', Baton.sum(s, 'verify', 'counters', 'identity_loaded') > 0)
  await again.close()
}

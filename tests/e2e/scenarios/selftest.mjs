// NAME
//   selftest.mjs - the simulator checked against @atproto/repo, no relay.
// DESCRIPTION
//   A checking consumer connects straight to a PDS simulator; every #commit
//   and #sync it receives is verified with Bluesky's own code (signature
//   against the key in the fake PLC's DID document, CAR block hashes, MST
//   proofs of every op, Sync 1.1 inversion to prevData, rev/since chaining).
//   The verdicts must match exactly what the simulator says it sent (valid
//   vs forged). Also: cursor replay (mid-stream and 0), FutureCursor, the
//   Server header of a relay-like sim, and each account's full repo from
//   getRepo verifies and matches the last emitted commit.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { EventVerifier } from '../lib/verify.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents } from '../lib/harness.mjs'
import { verifyRepoCar } from '@atproto/repo'

export const name = 'selftest'

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pds = new PdsSim({ plc, name: 'sim' })
  await pds.start()
  const relayLike = new PdsSim({ plc, serverHeader: 'baton/0.0 (atproto-relay)' })
  await relayLike.start()
  ctx.cleanup.push(() => plc.stop(), () => pds.stop(), () => relayLike.stop())

  const subUrl = `ws://127.0.0.1:${pds.port}/xrpc/com.atproto.sync.subscribeRepos`
  const live = new Consumer(subUrl, { keepBodies: true, name: 'live' })
  await live.start()
  ctx.cleanup.push(() => live.close())
  await pds.waitSubscribers(1)

  const accounts = await createAccounts([pds], 4, { withSync: true })
  checks.ok(
    'accounts use both key types',
    accounts.some((a) => a.acct.keyType === 'k256') && accounts.some((a) => a.acct.keyType === 'p256'),
  )
  const counts = await drive(accounts, { count: 160, ratePerSec: 2000 })
  for (let i = 0; i < 4; i++) {
    await pds.forgeBadInversion(accounts[i].acct, i % 2 === 0 ? 'prevData' : 'omitOp')
    await pds.write(accounts[i].acct)
  }
  counts.badinv = 4
  await pds.idle()
  checks.ok('forged events were emitted', counts.badsig > 0 && counts.revback > 0, JSON.stringify(counts))

  await live.waitFor((c) => c.events.length >= pds.sent.length, 10000, 'all events')
  checks.none('frames decode, are canonical and validate against the lexicon', live.errors)

  // Verify every repo event with @atproto/repo and compare with the sim's labels.
  const verifier = new EventVerifier({ plcUrl: plc.url, expectedPds: pds.endpoint })
  const sentBySeq = new Map(pds.sent.map((e) => [e.seq, e]))
  const mismatches = []
  let verified = 0
  for (const ev of live.events) {
    const sent = sentBySeq.get(ev.seq)
    if (!sent) {
      mismatches.push(`seq ${ev.seq} was never sent`)
      continue
    }
    if (ev.t === '#identity') {
      verifier.purge(ev.did)
      continue
    }
    if (ev.t !== '#commit' && ev.t !== '#sync') continue
    const r = await verifier.verify(ev.t, ev.body)
    if (r.ok) verified++
    if (r.ok !== sent.valid) {
      mismatches.push(`seq ${ev.seq} (${sent.kind}): verifier says ${r.ok ? 'valid' : r.reason}`)
    } else if (!r.ok) {
      const expect = sent.kind === 'badsig' ? /signature/ : sent.kind === 'badinv' ? /prevData/ : /rev not after/
      if (!expect.test(r.reason)) mismatches.push(`seq ${ev.seq} (${sent.kind}) rejected for: ${r.reason}`)
    }
  }
  checks.none(`@atproto/repo verification agrees with the sim (${verified} valid)`, mismatches)

  // The verifier itself must be able to say no: tamper with valid commits.
  const sample = live.events.find((e) => e.t === '#commit' && e.body.prevData && e.body.ops.length >= 2)
  if (checks.ok('a multi-op commit to tamper with exists', !!sample)) {
    const fresh = () => new EventVerifier({ plcUrl: plc.url, expectedPds: pds.endpoint })
    const okAsIs = await fresh().verify('#commit', sample.body)
    const dropOp = await fresh().verify('#commit', { ...sample.body, ops: sample.body.ops.slice(1) })
    const other = live.events.find((e) => e.t === '#commit' && e.body.prevData && e !== sample)
    const badPrev = await fresh().verify('#commit', { ...sample.body, prevData: other.body.commit })
    const blocks = new Uint8Array(sample.body.blocks)
    blocks[blocks.length - 3] ^= 0x55
    const badBlock = await fresh().verify('#commit', { ...sample.body, blocks })
    const wrongHost = await new EventVerifier({ plcUrl: plc.url, expectedPds: relayLike.endpoint }).verify(
      '#commit',
      sample.body,
    )
    checks.ok(
      'verifier rejects tampered commits (missing op, wrong prevData, corrupt block, wrong host)',
      okAsIs.ok && !dropOp.ok && !badPrev.ok && !badBlock.ok && !wrongHost.ok,
      JSON.stringify({ okAsIs, dropOp, badPrev, badBlock, wrongHost }),
    )
  }

  // Straight from the sim the forged events are there too; compare the rest.
  const valid = validRepoEvents([pds])
  const forgedSeqs = new Set(forgedEvents([pds]).map((e) => e.seq))
  const honest = { events: live.events.filter((e) => !forgedSeqs.has(e.seq)) }
  checks.none('every valid event once, in order, blocks intact', compareDelivery(honest, valid, []))
  checks.ok('every forged event was sent', live.events.filter((e) => forgedSeqs.has(e.seq)).length === forgedSeqs.size)
  checks.ok(
    'ops include create, update and delete',
    ['create', 'update', 'delete'].every((a) =>
      live.events.some((e) => e.t === '#commit' && e.body.ops.some((op) => op.action === a)),
    ),
  )
  checks.ok('a #sync was sent', live.events.some((e) => e.t === '#sync'))

  // Cursor replay from the sim: mid-stream and 0.
  const head = pds.seq
  const mid = Math.floor(head / 2)
  const midC = new Consumer(subUrl, { cursor: mid, name: 'mid' })
  const zeroC = new Consumer(subUrl, { cursor: 0, name: 'zero' })
  await Promise.all([midC.start(), zeroC.start()])
  ctx.cleanup.push(() => midC.close(), () => zeroC.close())
  await pds.write(accounts[0].acct) // one live event after the replay
  const total = pds.seq
  await midC.waitFor((c) => c.lastSeq === total, 10000, 'mid replay')
  await zeroC.waitFor((c) => c.lastSeq === total, 10000, 'zero replay')
  const seqs = (c) => c.events.map((e) => e.seq).join(',')
  const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i).join(',')
  checks.ok('cursor=mid replays exactly seq > mid then live', seqs(midC) === range(mid + 1, total), seqs(midC).slice(0, 80))
  checks.ok('cursor=0 replays everything then live', seqs(zeroC) === range(1, total))
  checks.none('replay consumers see no protocol problems', [...midC.errors, ...zeroC.errors])

  const fut = new Consumer(subUrl, { cursor: total + 100, name: 'future' })
  await fut.start()
  await fut.waitFor((c) => c.closed || c.errorFrames.length > 0, 5000, 'FutureCursor').catch(() => {})
  checks.ok(
    'cursor beyond head gets FutureCursor',
    fut.errorFrames.some((f) => f.error === 'FutureCursor'),
    JSON.stringify(fut.errorFrames),
  )
  await fut.close()

  // describeServer and the relay-like Server header.
  const d1 = await fetch(`${pds.endpoint}/xrpc/com.atproto.server.describeServer`)
  const d2 = await fetch(`http://localhost:${relayLike.port}/xrpc/com.atproto.server.describeServer`)
  await d1.json()
  await d2.json()
  checks.ok(
    'describeServer answers; relay-like sim says atproto-relay',
    d1.status === 200 && !/atproto-relay/.test(d1.headers.get('server')) && /atproto-relay/.test(d2.headers.get('server')),
  )

  // Full repos from getRepo verify with the PLC key and match the last commit.
  const repoProblems = []
  for (const { acct } of accounts) {
    const res = await fetch(`${pds.endpoint}/xrpc/com.atproto.sync.getRepo?did=${acct.did}`)
    const car = new Uint8Array(await res.arrayBuffer())
    try {
      const key = 'did:key:' + plc.doc(acct.did).verificationMethod[0].publicKeyMultibase
      const v = await verifyRepoCar(car, acct.did, key)
      if (v.commit.cid.toString() !== acct.repo.cid.toString()) repoProblems.push(`${acct.did}: head differs`)
      if (v.creates.length !== acct.paths.length) repoProblems.push(`${acct.did}: ${v.creates.length} records, expected ${acct.paths.length}`)
    } catch (err) {
      repoProblems.push(`${acct.did}: ${err.message}`)
    }
  }
  checks.none('getRepo CARs verify and match the emitted head', repoProblems)
  checks.ok('forged events are all labelled', forgedEvents([pds]).length === counts.badsig + counts.revback + counts.badinv)
}

// NAME
//   garbage.mjs - bad input from an upstream never crashes a stage or loses data.
// DESCRIPTION
//   Two PDS simulators: one well-behaved, one that, between its valid commits,
//   sends garbage: random bytes, a text frame, truncated CBOR, a frame over the
//   5,000,000-byte limit, an error frame with an unknown name, and sequenced
//   frames that decode but are wrong inside (a #commit whose blocks are not a
//   CAR, a #commit missing required fields, an unknown message type).
//   Checks: no stage is ever restarted; ingest counts bad frames and verify
//   drops the wrong-inside frames with named reasons; every valid commit of
//   both sims still arrives exactly once, in per-DID order; /_health is 200.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import crypto from 'node:crypto'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'garbage'

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, { names: ['garbage', 'good'] })
  const [bad, good] = pdses
  const before = await baton.status()

  const accounts = await createAccounts([bad, good], 3)
  const did = accounts.find((a) => a.pds === bad)?.acct?.did ?? accounts[0].acct?.did ?? 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa'
  const link = good.sent.find((e) => e.commit)?.commit
  let errorFrames = 0 // a well-formed error frame ends the connection too, without being a bad frame
  const garbage = [
    () => bad.sendRaw(crypto.randomBytes(300)),
    () => bad.sendRaw('not a binary frame'),
    () => bad.sendRaw(Buffer.from([0xa2, 0x61, 0x74, 0x67, 0x23, 0x63])), // truncated header
    () => bad.sendRaw(Buffer.alloc(5_100_000, 7)), // over the frame limit
    () => { errorFrames++; bad.sendRaw(Buffer.concat([Buffer.from([0xa2, 0x62, 0x6f, 0x70, 0x20, 0x61, 0x74, 0x61, 0x78]), Buffer.from([0xa1, 0x65, 0x65, 0x72, 0x72, 0x6f, 0x72, 0x63, 0x42, 0x61, 0x64])])) },
    () => bad.emitCustom('#commit', { repo: did, rev: '3kabcdefghij2', since: null, commit: null, blocks: crypto.randomBytes(64), ops: [], blobs: [], rebase: false, tooBig: false, time: new Date().toISOString() }, { reason: 'bad_frame' }), // commit: null is no CID: no #commit
    () => bad.emitCustom('#commit', { repo: did, time: new Date().toISOString() }, { reason: 'bad_frame' }),
    () => bad.emitCustom('#mystery', { did, time: new Date().toISOString(), link: link ?? null }, { reason: 'unknown_type' }),
  ]
  let i = 0
  await drive(accounts, { count: 240, ratePerSec: 80, shouldStop: () => { if (i % 10 === 5) garbage[(i / 10) % garbage.length | 0](); i++; return false } })
  for (const p of [bad, good]) await p.idle()

  const valid = validRepoEvents([bad, good]).filter((e) => e.kind !== 'garbage')
  await live.waitFor((c) => hasAll(c, valid), 40000, 'every valid event').catch(() => {})
  await sleep(1000)
  checks.none('frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  checks.none(
    `every valid commit of both sims exactly once, per-DID order, nothing forged (${valid.length})`,
    compareDelivery(live, valid, forgedEvents([bad, good]).filter((e) => e.kind !== 'garbage')),
  )
  const after = await baton.status()
  const restarts = (after?.stages || []).reduce((n, s) => n + Number(s.restarts || 0), 0)
  const pidsSame = (before?.stages || []).every((s, k) => after?.stages?.[k]?.pid === s.pid)
  checks.ok('no stage crashed or was restarted', restarts === 0 && pidsSame, `restarts ${restarts}`)
  const badFrames = Baton.sum(after, 'ingest', 'counters', 'bad_frames')
  // every connection of the bad sim but its last ended over an undecodable frame or an error
  // frame (ingest backs off after one, so how many there were depends on the timing: compare
  // with what the sim saw)
  const dropped = bad.subscribeCount - 1
  checks.ok('ingest counted the undecodable frames and dropped those connections',
    badFrames >= 1 && badFrames + errorFrames >= dropped,
    `bad_frames ${badFrames}, error frames sent ${errorFrames}, connections ended ${dropped}`)
  const named = ['bad_car', 'bad_frame', 'unknown_type', 'bad_commit'].map((k) => Baton.sum(after, 'verify', 'drops', k))
  checks.ok('verify dropped the wrong-inside frames with named reasons', named.reduce((a, b) => a + b, 0) >= 3, JSON.stringify(named))
  // Each sequenced garbage frame is one drop with the reason it was planted with; the raw
  // garbage is no frame at all (the connection is dropped, the relay resumes with its cursor).
  const extra = {}
  for (const e of bad.sent) if (e.kind === 'garbage') extra[e.reason] = (extra[e.reason] || 0) + 1
  await checkDrops(checks, baton, '', plantedFromSims([bad, good], extra))
  const h = await baton.health()
  checks.ok('/_health is 200 afterwards', h.status === 200, JSON.stringify(h))
  await live.close()
}

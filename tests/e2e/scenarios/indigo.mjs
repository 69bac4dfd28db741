// NAME
//   indigo.mjs - indigo's relay scenarios (shared/vectors/indigo/*.json) replayed through baton.
// DESCRIPTION
//   Each vector holds real frames captured from the network (real signatures) and says for each
//   one whether a relay forwards it or drops it. As in indigo's cmd/relay/testing runner: the
//   accounts' identities go into the directory (here the fake PLC, with #atproto_pds pointing
//   at the replaying PDS, so baton's host-authority check holds where indigo skips it), one
//   relay per scenario (RELAY_LENIENT_SYNC_VALIDATION=true when `lenient`), the frames are sent
//   one at a time, and a frame not marked `drop` must come out of the relay next, equal to what
//   was sent (type, DID, rev, commit CID, since, prevData, ops, blocks byte for byte; #account
//   active/status; #identity handle). `invalid` does not change what a relay must do (indigo's
//   runner ignores it and `update` too). Beyond indigo's runner:
//   - a frame marked `drop` must be decided (batonctl status: one more drop counted by store
//     or ingest, with the reason the table below names) and never arrive;
//   - the initial account `status` and every #account frame are what the PDS's getRepoStatus
//     answers (baton asks it before dropping a commit of an account it holds inactive);
//   - `wrong_key` is indigo's TestWrongKey: legacy.json with a different #atproto key, whose
//     #commit must then be dropped as bad_sig; `account_lifecycle` also runs lenient, as in
//     indigo's TestAccountLifecycle;
//   - an #account marked `update` changes the relay's own getRepoStatus answer for the DID;
//   - after the last frame, a cursor=0 consumer replays exactly the forwarded frames.
//   First the frames themselves are checked: every CAR block hashes to its CID and every
//   forwarded commit's signature verifies with the account's key, so the re-encoding from JSON
//   keeps the signed bytes (and the same check must fail with the wrong key).
// DIAGNOSTICS
//   One check per frame: `<vector>[i] #type seq N forwarded|dropped (reason)`; on a failure the
//   drop counters that moved meanwhile say what the relay decided instead.

import path from 'node:path'
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { FakePlc } from '../lib/plc.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { loadScenario, checkScenario, ReplayPds } from '../lib/replaypds.mjs'
import { decided, dropTable, statusWhen } from '../lib/drops.mjs'

export const name = 'indigo'

const here = path.dirname(fileURLToPath(import.meta.url))
const VECTORS = process.env.INDIGO_VECTORS || path.resolve(here, '../../../../shared/vectors/indigo')

// The key indigo's TestWrongKey puts in place of the account's.
const WRONG_KEY = 'zQ3shbzd9YoCFQrzfdw2AGpxUHTjUhh69MXRh7hHBavx9wQon'

// name, file, overrides; reasons: message index -> the drop reasons accepted for it (the first
// check a frame fails names it: rev_ordering[1]'s rev "3lmxjza3nva00" is no TID at all, '0' is
// not in the TID alphabet, and rev_ordering[2] repeats the stored rev but carries a commit signed
// with another rev, so either check may come first).
const RUNS = [
  { name: 'post_lifecycle', file: 'post_lifecycle' },
  { name: 'post_lifecycle_legacy', file: 'post_lifecycle_legacy' },
  { name: 'legacy', file: 'legacy' },
  { name: 'wrong_key', file: 'legacy', wrongKey: true, reasons: { 2: ['bad_sig'] } },
  { name: 'deactivation', file: 'deactivation', reasons: { 2: ['inactive'] } },
  { name: 'rev_ordering', file: 'rev_ordering', reasons: { 1: ['bad_syntax', 'rev_old'], 2: ['repo_mismatch', 'rev_old'] } },
  { name: 'seq_ordering', file: 'seq_ordering', reasons: { 1: ['duplicate'], 2: ['duplicate'] } },
  { name: 'account_lifecycle', file: 'account_lifecycle' },
  { name: 'account_lifecycle_lenient', file: 'account_lifecycle', lenient: true },
]

const STEP_MS = 10000

function load(run) {
  const sc = loadScenario(path.join(VECTORS, `${run.file}.json`), run.name)
  if (run.lenient !== undefined) sc.lenient = run.lenient
  if (run.wrongKey) {
    sc.accounts = structuredClone(sc.accounts)
    sc.accounts[0].identity.keys.atproto.publicKeyMultibase = WRONG_KEY
    for (const m of sc.messages) if (m.t === '#commit') m.drop = true
  }
  return sc
}

const enc = (v) => (v === undefined || v === null ? null : Buffer.from(dagCbor.encode(v)).toString('hex'))
const cidStr = (v) => (v ? CID.asCID(v)?.toString() ?? String(v) : null)

// Differences between a sent message and a received event (with body).
function differences(m, ev) {
  const d = []
  const b = ev.body || {}
  if (ev.t !== m.t) return [`type ${ev.t} != ${m.t}`]
  if (ev.did !== m.did) d.push(`did ${ev.did}`)
  if (m.t === '#commit') {
    if (ev.commit !== m.commit) d.push(`commit ${ev.commit} != ${m.commit}`)
    if (b.rev !== m.body.rev) d.push(`rev ${b.rev} != ${m.body.rev}`)
    if ((b.since ?? null) !== (m.body.since ?? null)) d.push(`since ${b.since} != ${m.body.since}`)
    if (cidStr(b.prevData) !== cidStr(m.body.prevData)) d.push(`prevData ${cidStr(b.prevData)} != ${cidStr(m.body.prevData)}`)
    if (enc(b.ops) !== enc(m.body.ops)) d.push('ops differ')
    if (b.tooBig !== m.body.tooBig) d.push(`tooBig ${b.tooBig}`)
    if (ev.blocksHash !== m.blocksHash) d.push('blocks differ')
  } else if (m.t === '#sync') {
    if (b.rev !== m.body.rev) d.push(`rev ${b.rev} != ${m.body.rev}`)
    if (ev.blocksHash !== m.blocksHash) d.push('blocks differ')
  } else if (m.t === '#account') {
    if (b.active !== m.body.active) d.push(`active ${b.active} != ${m.body.active}`)
    if ((b.status ?? null) !== (m.body.status ?? null)) d.push(`status ${b.status} != ${m.body.status}`)
  } else if (m.t === '#identity') {
    if ((b.handle ?? null) !== (m.body.handle ?? null)) d.push(`handle ${b.handle} != ${m.body.handle}`)
  }
  return d
}

// `update` on an #account frame: the relay's own getRepoStatus now says what the frame says
// (a deleted account may also be gone: RepoNotFound / RepoDeleted).
async function repoStatusProblems(baton, m) {
  let res
  try {
    res = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${encodeURIComponent(m.did)}`, { signal: AbortSignal.timeout(5000) })
  } catch (err) {
    return [`getRepoStatus: ${err.message}`]
  }
  const body = await res.json().catch(() => ({}))
  if (res.status !== 200) {
    if (m.body.status === 'deleted' && ['RepoNotFound', 'RepoDeleted'].includes(body.error)) return []
    return [`getRepoStatus HTTP ${res.status} ${JSON.stringify(body)}`]
  }
  const d = []
  if (body.active !== m.body.active) d.push(`active ${body.active} != ${m.body.active}`)
  if (!m.body.active && (body.status ?? null) !== (m.body.status ?? null)) d.push(`status ${body.status} != ${m.body.status}`)
  return d.length ? [...d, JSON.stringify(body)] : []
}

function diffDrops(before, after) {
  const out = []
  for (const role of ['ingest', 'verify', 'store']) {
    const a = dropTable(before, role)
    const b = dropTable(after, role)
    for (const [k, v] of Object.entries(b)) if (v !== (a[k] || 0)) out.push(`${role} ${k} +${v - (a[k] || 0)}`)
  }
  return out
}

// Reasons counted by store or ingest between two status snapshots.
function newReasons(before, after) {
  const out = []
  for (const role of ['store', 'ingest']) {
    const a = dropTable(before, role)
    const b = dropTable(after, role)
    for (const [k, v] of Object.entries(b)) for (let i = a[k] || 0; i < v; i++) out.push(k)
  }
  return out
}

async function waitUntil(pred, ms) {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) return false
    await new Promise((r) => setTimeout(r, 50))
  }
  return true
}

async function runOne(checks, ctx, plc, run) {
  const sc = load(run)
  const tag = run.name
  const sigProblems = await checkScenario(sc)
  checks.none(`${tag}: captured frames re-encode with their signed bytes intact (CAR hashes, signatures)`, sigProblems)
  if (run.wrongKey) {
    // The same check, with every frame counted as one that must be forwarded, must now fail.
    const strict = { ...sc, messages: sc.messages.map((m) => ({ ...m, drop: false })) }
    const p = await checkScenario(strict)
    checks.ok(`${tag}: the signature check fails with the wrong key`, p.some((x) => x.includes('signature')), JSON.stringify(p))
  }

  const pds = new ReplayPds(sc)
  await pds.start()
  ctx.cleanup.push(() => pds.stop())
  for (const a of sc.accounts) {
    plc.register(a.identity.did, { signingKey: a.identity.keys.atproto.publicKeyMultibase, pds: pds.endpoint, handle: a.identity.handle })
  }
  const tmpDir = path.join(ctx.tmp, tag)
  fs.mkdirSync(tmpDir, { recursive: true })
  const extraEnv = sc.lenient ? { RELAY_LENIENT_SYNC_VALIDATION: 'true' } : {}
  const baton = new Baton({ buildDir: ctx.buildDir, tmpDir, plcUrl: plc.url, verifyProcs: 1, fanoutProcs: 1, extraEnv })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  const r = await baton.requestCrawl(pds.host)
  if (r.status !== 200) throw new Error(`${tag}: requestCrawl: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  await pds.waitSubscribers(1)
  const live = new Consumer(baton.wsUrl, { name: `${tag}-live`, keepBodies: true })
  await live.start()

  const forwarded = []
  let st = await baton.status()
  for (const m of sc.messages) {
    const what = `${tag}[${m.i}] ${m.t} seq ${m.seq}${m.rev ? ` rev ${m.rev}` : ''}`
    const nEv = live.events.length
    const nDec = decided(st)
    pds.emit(m.i)
    if (!m.drop) {
      const arrived = await waitUntil(() => live.events.length > nEv, STEP_MS)
      const after = await baton.status()
      if (!arrived) {
        checks.ok(`${what} forwarded`, false, `not received within ${STEP_MS / 1000} s; drops meanwhile: ${diffDrops(st, after).join(', ') || 'none'}`)
      } else {
        const got = live.events.slice(nEv)
        const problems = []
        if (got.length !== 1) problems.push(`${got.length} events arrived: ${got.map((e) => `${e.t} ${e.rev ?? ''}`).join(', ')}`)
        problems.push(...differences(m, got[0]))
        checks.none(`${what} forwarded`, problems)
        forwarded.push(m)
        if (m.t === '#account' && m.update) checks.none(`${what}: the relay's account state follows it (getRepoStatus)`, await repoStatusProblems(baton, m))
      }
      st = after
    } else {
      // Decided = one more drop counted by store or ingest; an arriving event means it was forwarded.
      let s2 = st
      const end = Date.now() + STEP_MS
      while (Date.now() < end && live.events.length === nEv) {
        s2 = (await baton.status().catch(() => null)) ?? s2
        if (decided(s2) > nDec) break
        await new Promise((r) => setTimeout(r, 100))
      }
      const reasons = newReasons(st, s2)
      const wantList = run.reasons?.[m.i]
      const want = wantList?.join('|')
      if (live.events.length > nEv) {
        const e = live.events[nEv]
        checks.ok(`${what} dropped${want ? ` (${want})` : ''}`, false, `forwarded as relay seq ${e.seq} ${e.t}`)
      } else if (reasons.length === 0) {
        checks.ok(`${what} dropped${want ? ` (${want})` : ''}`, false, `no drop counted within ${STEP_MS / 1000} s (held? drops: ${diffDrops(st, s2).join(', ') || 'none'})`)
      } else {
        checks.ok(`${what} dropped (${want ?? reasons.join(',')})`, !wantList || (reasons.length === 1 && wantList.includes(reasons[0])), `counted as ${reasons.join(', ')}`)
      }
      st = s2
    }
  }
  // Anything late (a dropped frame forwarded after all) shows up within the settle time; the
  // per-frame checks above are the deterministic part.
  await new Promise((r) => setTimeout(r, 700))
  const exp = sc.messages.filter((m) => !m.drop)
  checks.ok(`${tag}: exactly the ${exp.length} forwarded frames arrived, in order`, live.events.length === exp.length && live.events.every((e, i) => e.t === exp[i].t && differences(exp[i], e).length === 0),
    `got ${live.events.map((e) => `${e.t}${e.rev ? ' ' + e.rev : ''}`).join(', ')}`)
  checks.none(`${tag}: live frames canonical, lexicon-valid, seq increasing`, live.errors)
  const zero = new Consumer(baton.wsUrl, { name: `${tag}-cursor0`, cursor: 0, keepBodies: true })
  await zero.start()
  await waitUntil(() => zero.events.length >= live.events.length, 5000)
  await new Promise((r) => setTimeout(r, 300))
  const a = zero.events.map((e) => `${e.seq} ${e.t} ${e.rev ?? ''}`).join(', ')
  const b = live.events.map((e) => `${e.seq} ${e.t} ${e.rev ?? ''}`).join(', ')
  checks.ok(`${tag}: cursor=0 replays the same events`, a === b && zero.errors.length === 0, `replay [${a}] live [${b}] ${zero.errors.slice(0, 2).join('; ')}`)
  await zero.close()
  await live.close()
  await baton.stop()
  await pds.stop()
}

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  ctx.cleanup.push(() => plc.stop())
  const only = process.env.INDIGO_ONLY ? process.env.INDIGO_ONLY.split(',') : null
  for (const r of RUNS) {
    if (only && !only.includes(r.name)) continue
    try {
      await runOne(checks, ctx, plc, r)
    } catch (err) {
      checks.ok(`${r.name}: completed`, false, err?.message ?? String(err))
    }
  }
}

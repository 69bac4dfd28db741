#!/usr/bin/env node
// NAME
//   run.mjs - baton against Bluesky's official PDS and consumer library (make interop).
// SYNOPSIS
//   node tests/interop/run.mjs [BUILD_DIR]
// DESCRIPTION
//   Starts a checking PLC directory (lib/plc.mjs), the official PDS (@atproto/pds, in
//   this process, data in a temp dir) and baton (tests/e2e/lib/baton.mjs), asks baton to
//   crawl the PDS before any write, then drives the PDS through its own XRPC API with
//   @atproto/api: accounts, posts, likes, edits, deletes, a handle change, deactivate and
//   reactivate, an admin account delete. Phase 2 stops baton, writes more, restarts it.
//   Two @atproto/sync Firehose consumers with commit verification on (lib/tap.mjs), one
//   on the PDS from cursor 0 and one on baton, must end with the same events: every
//   #commit, #sync, #identity and #account exactly once, per-DID in the PDS's order.
//   Then getLatestCommit, getRepoStatus and listRepos of baton against the PDS's answers.
//   See README.md beside this file.
// DIAGNOSTICS
//   One `ok - ` / `not ok - ` line per check, then `N passed, N failed`; exit 1 on any
//   failure. The temp dir (relay log, PDS data) is kept on failure and its path printed.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { AtpAgent } from '@atproto/api'
import { IdResolver } from '@atproto/identity'
import * as pdsPkg from '@atproto/pds'
import { Secp256k1Keypair } from '@atproto/crypto'
import { Baton, freePort, killAll, sleep } from '../e2e/lib/baton.mjs'
import { Checks, makeTmp } from '../e2e/lib/harness.mjs'
import { Plc } from './lib/plc.mjs'
import { Tap } from './lib/tap.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const buildDir = path.resolve(here, '../..', process.argv[2] ?? 'build')
const checks = new Checks('interop')
const tmp = makeTmp('interop')
const ADMIN = 'interop-admin-password'
const log = (...a) => console.log('#', ...a)

// ---- the official PDS, configured through the env names it documents -------------------
async function startPds(plcUrl) {
  const port = await freePort()
  const key = await Secp256k1Keypair.create({ exportable: true })
  const env = {
    PDS_PORT: String(port),
    PDS_HOSTNAME: 'localhost',
    PDS_DEV_MODE: 'true',
    PDS_DATA_DIRECTORY: path.join(tmp, 'pds'),
    PDS_BLOBSTORE_DISK_LOCATION: path.join(tmp, 'pds', 'blobs'),
    PDS_DID_PLC_URL: plcUrl,
    PDS_SERVICE_HANDLE_DOMAINS: '.test',
    PDS_INVITE_REQUIRED: 'false',
    PDS_RATE_LIMITS_ENABLED: 'false',
    PDS_JWT_SECRET: 'interop-jwt-secret',
    PDS_ADMIN_PASSWORD: ADMIN,
    PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: Buffer.from(await key.export()).toString('hex'),
    PDS_CRAWLERS: '',
    PDS_DISABLE_SSRF_PROTECTION: 'true',
    LOG_ENABLED: process.env.INTEROP_PDS_LOG ? 'true' : 'false',
  }
  fs.mkdirSync(env.PDS_BLOBSTORE_DISK_LOCATION, { recursive: true })
  Object.assign(process.env, env)
  const pe = pdsPkg.readEnv()
  const pds = await pdsPkg.PDS.create(pdsPkg.envToCfg(pe), pdsPkg.envToSecrets(pe))
  await pds.start()
  return { pds, port, url: `http://localhost:${port}` }
}

// ---- driving the PDS through its API ----------------------------------------------------
const adminHeaders = { authorization: 'Basic ' + Buffer.from(`admin:${ADMIN}`).toString('base64') }

async function account(pdsUrl, name) {
  const agent = new AtpAgent({ service: pdsUrl })
  await agent.createAccount({ email: `${name}@example.test`, handle: `${name}.test`, password: `pw-${name}` })
  return { name, agent, did: agent.session.did, posts: [] }
}

async function post(a, text) {
  const r = await a.agent.com.atproto.repo.createRecord({
    repo: a.did,
    collection: 'app.bsky.feed.post',
    record: { $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() },
  })
  a.posts.push(r.data)
  return r.data
}

async function like(a, subject) {
  const r = await a.agent.com.atproto.repo.createRecord({
    repo: a.did,
    collection: 'app.bsky.feed.like',
    record: { $type: 'app.bsky.feed.like', subject: { uri: subject.uri, cid: subject.cid }, createdAt: new Date().toISOString() },
  })
  return r.data
}

async function putProfile(a, displayName) {
  await a.agent.com.atproto.repo.putRecord({
    repo: a.did,
    collection: 'app.bsky.actor.profile',
    rkey: 'self',
    record: { $type: 'app.bsky.actor.profile', displayName },
  })
}

async function editPost(a, p, text) {
  const rkey = p.uri.split('/').pop()
  await a.agent.com.atproto.repo.putRecord({
    repo: a.did,
    collection: 'app.bsky.feed.post',
    rkey,
    record: { $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() },
  })
}

async function deleteRecord(a, uri) {
  const [, , , collection, rkey] = uri.split('/')
  await a.agent.com.atproto.repo.deleteRecord({ repo: a.did, collection, rkey })
}

// ---- comparing ------------------------------------------------------------------------
// Waits until the PDS's tap has reached the PDS sequencer's last seq (so it holds everything
// written so far), then until the relay's tap has at least as many events (settled).
async function converge(pds, pdsTap, relayTap, ms) {
  const end = Date.now() + ms
  const last = await pds.ctx.sequencer.curr()
  while (Date.now() < end && !(pdsTap.lastSeq >= last)) await sleep(100)
  if (!(pdsTap.lastSeq >= last)) return false
  let stable = 0
  while (Date.now() < end) {
    const n = pdsTap.events.length
    if (n > 0 && relayTap.events.length >= n) {
      if (++stable >= 3) return true
    } else stable = 0
    await sleep(200)
  }
  return false
}

function perDid(events) {
  const m = new Map()
  for (const e of events) {
    if (!m.has(e.did)) m.set(e.did, [])
    m.get(e.did).push(e.key)
  }
  return m
}

function compareStreams(label, pdsTap, relayTap) {
  const want = perDid(pdsTap.events)
  const got = perDid(relayTap.events)
  const problems = []
  for (const [did, keys] of want) {
    const g = got.get(did) ?? []
    const gset = new Map()
    for (const k of g) gset.set(k, (gset.get(k) || 0) + 1)
    for (const k of keys) {
      const c = gset.get(k) || 0
      if (c === 0) problems.push(`missing ${k}`)
      else gset.set(k, c - 1)
    }
    for (const [k, c] of gset) if (c > 0) problems.push(`extra x${c} ${k}`)
    if (!problems.length && g.join('\n') !== keys.join('\n')) {
      const i = keys.findIndex((k, j) => g[j] !== k)
      problems.push(`order differs for ${did} at #${i}: relay ${g[i]} vs pds ${keys[i]}`)
    }
  }
  for (const did of got.keys()) if (!want.has(did)) problems.push(`events for a DID the PDS never sequenced: ${did}`)
  checks.none(`${label}: baton's stream = the PDS's (every event once, per-DID order)`, problems)
  for (const t of ['#commit', '#sync', '#identity', '#account']) {
    const w = pdsTap.events.filter((e) => e.t === t).length
    const g = relayTap.events.filter((e) => e.t === t).length
    checks.ok(`${label}: ${t} events: ${g} from baton, ${w} from the PDS`, w === g && w > 0, `baton ${g}, pds ${w}`)
  }
}

async function xrpc(base, nsid, params) {
  const qs = new URLSearchParams(params).toString()
  const res = await fetch(`${base}/xrpc/${nsid}${qs ? '?' + qs : ''}`, { signal: AbortSignal.timeout(10000) })
  let body = await res.text()
  try {
    body = JSON.parse(body)
  } catch {}
  return { status: res.status, body }
}

// The part of an answer both must agree on: the data, or for an error its status and name.
// (The PDS answers every XRPC error with 400; baton uses 403/404 by kind, so codes are shown, not compared.)
const norm = (r) => (r.status === 200 ? r.body : { error: r.body?.error })

// deleted: DIDs whose account the PDS deleted. The PDS forgets such a repo (RepoNotFound,
// absent from listRepos); a relay keeps its last state, as shared/protocol.md says:
// getRepoStatus {active: false, status: 'deleted'}, getLatestCommit error RepoDeleted.
async function compareReads(pdsUrl, batonUrl, dids, deleted) {
  for (const did of dids) {
    for (const nsid of ['com.atproto.sync.getLatestCommit', 'com.atproto.sync.getRepoStatus']) {
      const name = nsid.split('.').pop()
      const pr = await xrpc(pdsUrl, nsid, { did })
      const br = await xrpc(batonUrl, nsid, { did })
      const p = norm(pr)
      const b = norm(br)
      // the PDS leaves out the optional rev of an inactive repo; baton keeps its last one
      if (name === 'getRepoStatus' && p.rev === undefined && b.active === false) delete b.rev
      const why = `baton ${br.status} ${JSON.stringify(b)}, pds ${pr.status} ${JSON.stringify(p)}`
      if (deleted.has(did)) {
        const ok = name === 'getLatestCommit' ? b.error === 'RepoDeleted' : b.active === false && b.status === 'deleted'
        checks.ok(`${name} ${did} (deleted account): baton reports the deletion (the PDS: ${p.error})`, ok && p.error === 'RepoNotFound', why)
      } else {
        checks.ok(`${name} ${did}: baton = PDS`, JSON.stringify(b) === JSON.stringify(p), why)
      }
    }
  }
  const list = async (base) => {
    const m = new Map()
    let cursor
    for (let i = 0; i < 50; i++) {
      const r = await xrpc(base, 'com.atproto.sync.listRepos', cursor ? { limit: 100, cursor } : { limit: 100 })
      if (r.status !== 200) return r
      for (const x of r.body.repos) m.set(x.did, x)
      cursor = r.body.cursor
      if (!cursor || !r.body.repos.length) break
    }
    return m
  }
  const p = await list(pdsUrl)
  const b = await list(batonUrl)
  if (!(p instanceof Map) || !(b instanceof Map)) {
    checks.ok('listRepos answers on both', false, `pds ${JSON.stringify(p?.status)} baton ${JSON.stringify(b?.status)}`)
    return
  }
  const problems = []
  for (const [did, x] of p) {
    const y = b.get(did)
    if (!y) problems.push(`${did} missing from baton`)
    else if (JSON.stringify(y) !== JSON.stringify(x)) problems.push(`${did}: baton ${JSON.stringify(y)} pds ${JSON.stringify(x)}`)
  }
  for (const [did, y] of b) {
    if (p.has(did)) continue
    if (deleted.has(did) && y.active === false && y.status === 'deleted') continue
    problems.push(`${did} listed by baton only: ${JSON.stringify(y)}`)
  }
  checks.none(`listRepos: baton's ${b.size} repos = the PDS's ${p.size}`, problems)
}

async function dropReport(baton) {
  try {
    const st = await baton.status()
    const drops = {}
    for (const s of st.stages || []) {
      for (const [k, v] of Object.entries(s.drops || {})) if (Number(v)) drops[`${s.role}${s.index ?? ''}.${k}`] = Number(v)
    }
    return drops
  } catch (err) {
    return { status_error: err.message }
  }
}

// ---- the run --------------------------------------------------------------------------
async function main() {
  const plc = new Plc()
  const plcUrl = await plc.start()
  const { pds, port, url: pdsUrl } = await startPds(plcUrl)
  log(`PLC ${plcUrl}, PDS ${pdsUrl}, tmp ${tmp}`)
  const baton = new Baton({ buildDir, tmpDir: tmp, plcUrl, verifyProcs: 2, fanoutProcs: 1 })
  await baton.start()
  await baton.waitHealthy()
  const idResolver = new IdResolver({ plcUrl, timeout: 5000 })

  // crawl first: everything after this is live
  const crawl = await baton.requestCrawl(`localhost:${port}`)
  checks.ok('requestCrawl localhost:PORT accepted', crawl.status === 200, JSON.stringify(crawl))
  const relayTap = new Tap('baton', `ws://127.0.0.1:${baton.port}`, idResolver)
  relayTap.start()
  // live from the PDS's first event: the PDS removes a deleted account's events from its
  // sequencer, so a replay from cursor 0 afterwards would not show them
  const pdsTap = new Tap('pds', `ws://localhost:${port}`, idResolver, { cursor: 0 })
  pdsTap.start()
  await sleep(1000)

  // phase 1: live
  const alice = await account(pdsUrl, 'alice')
  const bob = await account(pdsUrl, 'bob')
  const carol = await account(pdsUrl, 'carol')
  const dave = await account(pdsUrl, 'dave')
  const erin = await account(pdsUrl, 'erin')
  const everyone = [alice, bob, carol, dave, erin]
  for (const a of everyone) await putProfile(a, a.name)
  for (let i = 0; i < 3; i++) for (const a of everyone) await post(a, `${a.name} post ${i}`)
  await like(bob, alice.posts[0])
  await like(carol, alice.posts[1])
  await like(alice, bob.posts[0])
  await editPost(alice, alice.posts[2], 'alice post 2 (edited)')
  await putProfile(bob, 'Bob B.')
  await deleteRecord(carol, carol.posts[0].uri)
  await bob.agent.com.atproto.identity.updateHandle({ handle: 'robert.test' })
  await post(bob, 'bob after handle change')
  await carol.agent.com.atproto.server.deactivateAccount({})
  await carol.agent.com.atproto.server.activateAccount()
  await post(carol, 'carol is back')
  await dave.agent.com.atproto.admin.deleteAccount({ did: dave.did }, { headers: adminHeaders, encoding: 'application/json' })
  await erin.agent.com.atproto.server.deactivateAccount({})

  const ok1 = await converge(pds, pdsTap, relayTap, 30000)
  checks.ok('phase 1 (live): baton delivered as many events as the PDS sequenced', ok1,
    `baton ${relayTap.events.length}, pds ${pdsTap.events.length}; drops ${JSON.stringify(await dropReport(baton))}`)
  compareStreams('phase 1 (live)', pdsTap, relayTap)

  // phase 2: baton down while the PDS keeps writing; restarted, it must catch up from its cursor
  const stopped = await baton.stop()
  log(`baton stopped (clean=${stopped.clean}); writing while it is down`)
  for (let i = 0; i < 3; i++) for (const a of [alice, bob, carol]) await post(a, `${a.name} offline ${i}`)
  await like(alice, carol.posts[carol.posts.length - 1])
  await deleteRecord(alice, alice.posts[0].uri)
  await editPost(bob, bob.posts[1], 'bob edited offline')
  await bob.agent.com.atproto.identity.updateHandle({ handle: 'bobby.test' })
  await carol.agent.com.atproto.server.deactivateAccount({})
  await carol.agent.com.atproto.server.activateAccount()
  await erin.agent.com.atproto.server.activateAccount()
  await post(erin, 'erin is back')
  const frank = await account(pdsUrl, 'frank') // a new account baton first hears of from its backlog
  await post(frank, 'frank was born offline')
  everyone.push(frank)
  await baton.start()
  await baton.waitHealthy()
  log('baton restarted')
  await post(alice, 'alice after the restart')
  await frank.agent.com.atproto.server.deactivateAccount({}) // stays deactivated: getLatestCommit says so
  const ok2 = await converge(pds, pdsTap, relayTap, 60000)
  checks.ok('phase 2 (restart): baton caught up to every event the PDS sequenced', ok2,
    `baton ${relayTap.events.length}, pds ${pdsTap.events.length}; drops ${JSON.stringify(await dropReport(baton))}`)
  compareStreams('phase 2 (restart)', pdsTap, relayTap)
  checks.ok('the Firehose on baton reconnected with its cursor', relayTap.connects >= 2, `connects ${relayTap.connects}`)
  log(`baton tap: ${relayTap.connects} connects, ${relayTap.cleanCloses} clean closes, ${relayTap.subErrors} connection errors`)

  checks.none('consumer on the PDS: every event verified', pdsTap.problems)
  checks.none('consumer on baton: every event verified (signature, proof, schema, seq)', relayTap.problems)
  checks.none('PLC accepted every operation the PDS sent', plc.rejected)

  await compareReads(pdsUrl, baton.httpUrl, everyone.map((a) => a.did), new Set([dave.did]))
  const drops = await dropReport(baton)
  checks.ok('no event dropped by any stage', Object.keys(drops).length === 0, JSON.stringify(drops))

  await relayTap.stop()
  await pdsTap.stop()
  await baton.stop()
  await pds.destroy()
  await plc.stop()
}

const deadline = setTimeout(() => {
  checks.ok('finished within 240 s', false, 'timed out')
  finish(1)
}, 240000)

function finish(code) {
  clearTimeout(deadline)
  killAll()
  console.log(`${checks.passed} passed, ${checks.failed} failed`)
  if (checks.failed === 0 && code === 0) fs.rmSync(tmp, { recursive: true, force: true })
  else console.log(`# kept ${tmp} (baton.log, pds/)`)
  process.exit(checks.failed === 0 && code === 0 ? 0 : 1)
}

main().then(
  () => finish(0),
  (err) => {
    checks.ok('run completed', false, err?.stack ?? err)
    finish(1)
  },
)

// NAME
//   takedown.mjs - the operator's takedowns: dropped, out of replay, erased, persisted, reversed (issue 8).
// DESCRIPTION
//   Accounts V (taken down) and O (not) write commits. The admin API refuses a takedown
//   without credentials (401), of a malformed DID (400) and of a DID the relay never saw (404).
//   POST /admin/repo/takeDown {did: V}: a relay-made #account {active: false, status:
//   takendown} reaches a live consumer; V's later commits are dropped (drops.takendown) while
//   O's flow; getRepoStatus says takendown, getLatestCommit and getRepo answer 403
//   RepoTakendown; /admin/repo/takedowns lists V. A replay from cursor 0 (from the broadcast
//   ring, before the store erased anything) holds none of V's events but the takedown's
//   #account, and every one of O's. The store erases V's events from RocksDB (its
//   takedown_erased counter reaches exactly the number of V's events before the takedown).
//   Then the whole relay restarts: the ring is empty, so a replay from 0 comes from RocksDB,
//   and still holds none of V's events; the takedown is still in force (status, drops, list).
//   POST /admin/repo/reverseTakedown: #account {active: true}; V's next commit flows; the
//   list is empty; replay from 0 still holds none of V's events from before the takedown.
//   listReposByCollection lists V in none of its collections while it is taken down, and in
//   each of them again after the reversal (recounted from its repo).
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { Consumer } from '../lib/consumer.mjs'
import { Baton, sleep } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { statusWhen } from '../lib/drops.mjs'

export const name = 'takedown'

const PW = 'takedown-pw'
const auth = { Authorization: `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}`, 'Content-Type': 'application/json' }

async function admin(baton, path, body, headers = auth) {
  const r = await fetch(`${baton.httpUrl}${path}`, body === undefined ? { headers } : { method: 'POST', headers, body: JSON.stringify(body) })
  const text = await r.text()
  let json = null
  try { json = JSON.parse(text) } catch {}
  return { status: r.status, body: json ?? text }
}

async function replayAll(baton, name, upTo) {
  const c = new Consumer(baton.wsUrl, { name, cursor: 0, keepBodies: true })
  await c.start()
  await c.waitFor((x) => x.lastSeq !== null && x.lastSeq >= upTo, 20000, `${name} up to ${upTo}`).catch(() => {})
  await sleep(300)
  await c.close()
  return c
}

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, { extraEnv: { RELAY_ADMIN_PASSWORD: PW } })
  const pds = pdses[0]
  live.keepBodies = true
  const V = await pds.createAccount({ keyType: 'k256' })
  const O = await pds.createAccount({ keyType: 'p256' })
  for (let i = 0; i < 4; i++) {
    await pds.write(V)
    await pds.write(O)
  }
  await pds.idle()
  const before = pds.sent.filter((e) => e.valid && e.t === '#commit')
  await live.waitFor((c) => before.every((e) => c.events.some((x) => x.commit === e.commit)), 20000, 'first commits').catch(() => {})
  checks.ok('both accounts flow before the takedown', before.every((e) => live.events.some((x) => x.commit === e.commit)))

  const noAuth = await admin(baton, '/admin/repo/takeDown', { did: V.did }, { 'Content-Type': 'application/json' })
  checks.ok('takeDown without credentials: 401', noAuth.status === 401, `HTTP ${noAuth.status}`)
  const bad = await admin(baton, '/admin/repo/takeDown', { did: 'not-a-did' })
  checks.ok('takeDown of a malformed DID: 400', bad.status === 400, `HTTP ${bad.status} ${JSON.stringify(bad.body)}`)
  const noBody = await admin(baton, '/admin/repo/takeDown', {})
  checks.ok('takeDown without a did: 400', noBody.status === 400, `HTTP ${noBody.status}`)
  const unknown = await admin(baton, '/admin/repo/takeDown', { did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' })
  checks.ok('takeDown of a DID the relay never saw: 404', unknown.status === 404, `HTTP ${unknown.status} ${JSON.stringify(unknown.body)}`)

  const td = await admin(baton, '/admin/repo/takeDown', { did: V.did })
  checks.ok('takeDown: 200 {success: "true"}', td.status === 200 && td.body?.success === 'true', `HTTP ${td.status} ${JSON.stringify(td.body)}`)
  const isTd = (e) => e.t === '#account' && e.did === V.did && e.body?.active === false && e.body?.status === 'takendown'
  await live.waitFor((c) => c.events.some(isTd), 10000, '#account takendown').catch(() => {})
  const tdEv = live.events.find(isTd)
  checks.ok('a relay-made #account {active: false, status: takendown} reaches the live consumer', !!tdEv)
  const T = tdEv?.seq ?? Infinity
  const again = await admin(baton, '/admin/repo/takeDown', { did: V.did })
  checks.ok('a second takeDown is idempotent (200, no second #account)', again.status === 200)

  // After the takedown: V's commits are dropped, O's flow.
  const vAfter = [await pds.write(V), await pds.write(V)]
  pds.emitIdentity(V)
  const oAfter = [await pds.write(O), await pds.write(O)]
  await pds.idle()
  await live.waitFor((c) => oAfter.every((e) => c.events.some((x) => x.commit === e.commit)), 20000, 'O after').catch(() => {})
  await sleep(500)
  checks.ok('the other account still flows', oAfter.every((e) => live.events.some((x) => x.commit === e.commit)))
  const vLate = live.events.filter((e) => e.did === V.did && e.seq > T)
  checks.ok('nothing of the taken-down account follows its #account (commits, identity)', vLate.length === 0,
    JSON.stringify(vLate.map((e) => [e.seq, e.t])))
  checks.ok('their double #account was not sent', live.events.filter(isTd).length === 1, `${live.events.filter(isTd).length}`)
  const st = await statusWhen(baton, (s) => Baton.sum(s, 'store', 'drops', 'takendown') >= 3)
  const drops = Baton.sum(st, 'store', 'drops', 'takendown')
  checks.ok('its events are counted as drops with reason takendown', drops === vAfter.length + 1, `drops.takendown ${drops}`)
  void vAfter

  const checkBlocked = async (label) => {
    const rs = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${V.did}`)).json()
    checks.ok(`${label}getRepoStatus: active false, status takendown`, rs.active === false && rs.status === 'takendown', JSON.stringify(rs))
    for (const m of ['getLatestCommit', 'getRepo']) {
      const r = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.${m}?did=${V.did}`)
      const b = await r.json().catch(() => ({}))
      checks.ok(`${label}${m}: 403 RepoTakendown`, r.status === 403 && b.error === 'RepoTakendown', `HTTP ${r.status} ${JSON.stringify(b)}`)
    }
    const ro = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${O.did}`)).json()
    checks.ok(`${label}the other account: active`, ro.active === true, JSON.stringify(ro))
    const list = await admin(baton, '/admin/repo/takedowns')
    checks.ok(`${label}/admin/repo/takedowns lists it`, list.status === 200 && JSON.stringify(list.body?.dids) === JSON.stringify([V.did]),
      `HTTP ${list.status} ${JSON.stringify(list.body)}`)
  }
  await checkBlocked('')
  // The collection index: a taken-down account is in no collection.
  const colls = () => [...new Set(V.paths.map((p) => p.split('/')[0]))]
  const inColl = async (c) => {
    const r = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.listReposByCollection?collection=${c}&limit=2000`)).json()
    return (r.repos || []).some((x) => x.did === V.did)
  }
  const listed = []
  for (const c of colls()) if (await inColl(c)) listed.push(c)
  checks.ok('listReposByCollection lists the taken-down account in none of its collections', colls().length > 0 && listed.length === 0,
    `collections ${JSON.stringify(colls())}, still listed in ${JSON.stringify(listed)}`)

  // Replay from 0: none of V's events but the takedown's #account; all of O's.
  const vSeqs = live.events.filter((e) => e.did === V.did && e.seq < T).map((e) => e.seq)
  const oSeqs = live.events.filter((e) => e.did === O.did).map((e) => e.seq)
  const head = live.lastSeq
  const checkReplay = (c, label) => {
    const vs = c.events.filter((e) => e.did === V.did)
    checks.ok(`${label}replay from 0 holds none of the taken-down account's events but its #account takendown`,
      vs.length === 1 && vs[0].seq === T, JSON.stringify(vs.map((e) => [e.seq, e.t])))
    const got = new Set(c.events.map((e) => e.seq))
    const missing = oSeqs.filter((s) => !got.has(s))
    checks.ok(`${label}... and every event of the other account`, missing.length === 0, `missing ${JSON.stringify(missing)}`)
    checks.none(`${label}replay frames valid, seq strictly increasing`, c.errors)
  }
  checkReplay(await replayAll(baton, 'zero1', head), '')
  checks.ok('the account had events before the takedown', vSeqs.length >= 5, `${vSeqs.length}`)

  // The store erases them from RocksDB.
  const st2 = await statusWhen(baton, (s) => Baton.sum(s, 'store', 'counters', 'takedown_erased') >= vSeqs.length, 20000)
  const erased = Baton.sum(st2, 'store', 'counters', 'takedown_erased')
  checks.ok('the store erased exactly the account\'s events before the takedown', erased === vSeqs.length,
    `erased ${erased}, events ${vSeqs.length}`)
  await live.close()

  // A restart of the whole relay: an empty ring, so the replay comes from RocksDB.
  const stop = await baton.stop()
  checks.ok('the relay stops cleanly', stop.clean, JSON.stringify(stop))
  await baton.start()
  await baton.waitHealthy()
  await pds.waitSubscribers(1)
  checkReplay(await replayAll(baton, 'zero2', head), 'after a restart: ')
  await checkBlocked('after a restart: ')
  const live2 = new Consumer(baton.wsUrl, { name: 'live2', keepBodies: true })
  await live2.start()
  ctx.cleanup.push(() => live2.close())
  const vStill = await pds.write(V)
  const oMark = await pds.write(O)
  await pds.idle()
  await live2.waitFor((c) => c.events.some((x) => x.commit === oMark.commit), 20000, 'O marker').catch(() => {})
  checks.ok('after a restart the takedown still drops the account\'s commits',
    live2.events.some((x) => x.commit === oMark.commit) && !live2.events.some((x) => x.commit === vStill.commit))

  // Reversal.
  const rv = await admin(baton, '/admin/repo/reverseTakedown', { did: V.did })
  checks.ok('reverseTakedown: 200 {success: "true"}', rv.status === 200 && rv.body?.success === 'true', `HTTP ${rv.status} ${JSON.stringify(rv.body)}`)
  const isActive = (e) => e.t === '#account' && e.did === V.did && e.body?.active === true
  await live2.waitFor((c) => c.events.some(isActive), 10000, '#account active').catch(() => {})
  checks.ok('reversal: #account {active: true} reaches the consumer', live2.events.some(isActive))
  const vBack = await pds.write(V)
  await pds.idle()
  await live2.waitFor((c) => c.events.some((x) => x.commit === vBack.commit), 20000, 'V back').catch(() => {})
  checks.ok('after the reversal the account\'s new commit flows', live2.events.some((x) => x.commit === vBack.commit))
  const rs = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${V.did}`)).json()
  checks.ok('after the reversal getRepoStatus: active', rs.active === true, JSON.stringify(rs))
  // Its records are counted again from its repo (the commits dropped meanwhile included).
  let missingColls = colls()
  for (let i = 0; i < 60 && missingColls.length; i++) {
    const m = []
    for (const c of colls()) if (!(await inColl(c))) m.push(c)
    missingColls = m
    if (m.length) await sleep(500)
  }
  checks.ok('after the reversal the account is back in each of its collections (recounted)', missingColls.length === 0,
    `missing in ${JSON.stringify(missingColls)}`)
  const list = await admin(baton, '/admin/repo/takedowns')
  checks.ok('after the reversal the takedown list is empty', list.status === 200 && list.body?.dids?.length === 0, JSON.stringify(list.body))
  const z3 = await replayAll(baton, 'zero3', live2.lastSeq)
  const old = z3.events.filter((e) => e.did === V.did && e.seq < T)
  checks.ok('after the reversal the events before the takedown stay out of replay', old.length === 0, JSON.stringify(old.map((e) => e.seq)))
  checks.ok('... and the new ones are in it', z3.events.some((x) => x.commit === vBack.commit))
  await live2.close()
}

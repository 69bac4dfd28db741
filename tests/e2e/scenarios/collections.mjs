// NAME
//   collections.mjs - the collection index: listReposByCollection and /v1/listCollections.
// DESCRIPTION
//   Two PDS sims, accounts with random records over three collections (COLLECTIONS of
//   lib/pds.mjs). Some accounts are created without a #sync (their counts come from the
//   commits' ops only), others with one (the store recounts them from getRepo); the store
//   is killed (-9) while commits flow (counts written in the batch of their events: none
//   lost or counted twice). Then:
//   A deletes every record of one of its collections (its last one: it leaves that
//   collection), D is deleted (#account deleted: it leaves every collection), B (with a like
//   and a follow) has its repo reset by a #sync to a fresh repo of one post (recounted from
//   the PDS's getRepo) and creates one more post. Checks, once the relay has caught up:
//   - listReposByCollection of each collection, paged with limit=2 and with the default
//     limit, gives exactly the DIDs whose sim repo holds a record of it, in DID order;
//   - /v1/listCollections gives each collection's number of such accounts (and with c=);
//   - bad parameters (no collection, not an NSID, limit 0 or 2001, a cursor that is not a
//     DID) answer 400 InvalidRequest.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { sleep } from '../lib/pds.mjs'
import { relayWithPdses } from '../lib/setup.mjs'

export const name = 'collections'

const COLLS = ['app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.graph.follow']

async function getJson(baton, path) {
  const res = await fetch(`${baton.httpUrl}${path}`, { signal: AbortSignal.timeout(5000) })
  let body = null
  try {
    body = await res.json()
  } catch {}
  return { status: res.status, body }
}

// Every DID of a collection, following cursors; null if a page failed or looped.
async function listAll(baton, coll, limit) {
  const dids = []
  let cursor = null
  for (let pages = 0; pages < 100; pages++) {
    let q = `/xrpc/com.atproto.sync.listReposByCollection?collection=${coll}`
    if (limit) q += `&limit=${limit}`
    if (cursor) q += `&cursor=${encodeURIComponent(cursor)}`
    const r = await getJson(baton, q)
    if (r.status !== 200 || !Array.isArray(r.body?.repos)) return null
    if (limit && r.body.repos.length > limit) return null
    dids.push(...r.body.repos.map((x) => x.did))
    if (!r.body.cursor) return dids
    cursor = r.body.cursor
  }
  return null
}

export async function run(checks, ctx) {
  const { pdses, baton } = await relayWithPdses(checks, ctx, { names: ['pds', 'pds2'], live: false })
  const [p1, p2] = pdses
  const A = await p1.createAccount({ sync: false })
  const B = await p1.createAccount()
  const C = await p1.createAccount({ sync: false })
  const D = await p1.createAccount({ sync: false })
  const E = await p2.createAccount({ sync: false })
  const F = await p2.createAccount()
  const all = [
    [p1, A],
    [p1, B],
    [p1, C],
    [p1, D],
    [p2, E],
    [p2, F],
  ]
  for (let i = 0; i < 4; i++) for (const [p, a] of all) await p.write(a)
  // kill -9 of the store while commits flow: re-delivered verdicts must not count twice
  const flowing = []
  for (let i = 0; i < 3; i++) for (const [p, a] of all) flowing.push(p.write(a))
  await sleep(50)
  const oldPid = await baton.killStage('store', 0)
  const newPid = await baton.waitRestarted('store', 0, oldPid).catch(() => null)
  await Promise.all(flowing)
  checks.ok('the store restarted after kill -9', newPid !== null)
  for (const [p, a] of all) await p.write(a)
  // A: records in two collections, then none left in the first
  await p1.write(A, 0, [
    { action: 'create', path: `${COLLS[0]}/${'3zzz' + Date.now()}a` },
    { action: 'create', path: `${COLLS[1]}/${'3zzz' + Date.now()}b` },
  ])
  await p1.idle()
  const gone = A.paths.filter((x) => x.startsWith(COLLS[0] + '/'))
  await p1.write(A, 0, gone.map((path) => ({ action: 'delete', path })))
  await p1.idle()
  const aLeft = !A.paths.some((x) => x.startsWith(COLLS[0] + '/'))
  // D deleted; B reset by #sync, then one more write
  // B holds a like and a follow before its reset, none after (its new repo: one post)
  await p1.write(B, 0, [
    { action: 'create', path: `${COLLS[1]}/3zzz${Date.now()}c` },
    { action: 'create', path: `${COLLS[2]}/3zzz${Date.now()}d` },
  ])
  p1.emitAccount(D, { active: false, status: 'deleted' })
  await p1.resetRepo(B, 1)
  await p1.write(B, 0, [{ action: 'create', path: `${COLLS[0]}/3zzz${Date.now()}e` }])
  await p1.idle()
  await p2.idle()

  const live = all.map(([, a]) => a).filter((a) => a !== D)
  const want = {}
  for (const c of COLLS)
    want[c] = live
      .filter((a) => a.paths.some((x) => x.startsWith(c + '/')))
      .map((a) => a.did)
      .sort()
  const sorted = (o) => JSON.stringify(Object.fromEntries(Object.entries(o || {}).sort()))
  const same = (a, b) => a && a.length === b.length && a.every((x, i) => x === b[i])
  // Wait for the relay (the recounts of B and F fetch their repos from the sims).
  let got = {}
  const deadline = Date.now() + 30000
  for (;;) {
    for (const c of COLLS) got[c] = await listAll(baton, c, 0)
    if (COLLS.every((c) => same(got[c], want[c])) || Date.now() > deadline) break
    await sleep(500)
  }
  checks.ok("A's last record of a collection is deleted in the sim", aLeft && gone.length > 0, `${gone.length}`)
  for (const c of COLLS)
    checks.ok(
      `listReposByCollection ${c} (default limit) = the sims' accounts holding it`,
      same(got[c], want[c]),
      `got ${JSON.stringify(got[c])}, want ${JSON.stringify(want[c])}`,
    )
  for (const c of COLLS) {
    const paged = await listAll(baton, c, 2)
    checks.ok(`listReposByCollection ${c}, pages of 2 = the same`, same(paged, want[c]), JSON.stringify(paged))
  }
  checks.ok("A is not listed under the collection it left", !got[COLLS[0]]?.includes(A.did))
  checks.ok('the deleted account D is listed nowhere', COLLS.every((c) => !got[c]?.includes(D.did)))
  const bWant = COLLS.filter((c) => B.paths.some((x) => x.startsWith(c + '/')))
  checks.ok(
    "B's collections after its #sync reset are its new repo's (recounted from getRepo)",
    bWant.length === 1 && COLLS.every((c) => bWant.includes(c) === (got[c] || []).includes(B.did)),
    `B has ${JSON.stringify(bWant)}`,
  )

  const lc = await getJson(baton, '/v1/listCollections')
  const wantCounts = {}
  for (const c of COLLS) if (want[c].length) wantCounts[c] = want[c].length
  checks.ok(
    '/v1/listCollections counts = the sims',
    lc.status === 200 && sorted(lc.body?.collections) === sorted(wantCounts) && lc.body?.cursor === '',
    JSON.stringify(lc.body),
  )
  const one = await getJson(baton, `/v1/listCollections?c=${COLLS[2]}&c=app.example.none`)
  checks.ok(
    '/v1/listCollections?c= gives just those',
    one.status === 200 &&
      JSON.stringify(one.body?.collections) ===
        JSON.stringify(want[COLLS[2]].length ? { [COLLS[2]]: want[COLLS[2]].length } : {}),
    JSON.stringify(one.body),
  )

  const base = '/xrpc/com.atproto.sync.listReposByCollection'
  for (const q of [
    '',
    '?collection=notansid',
    `?collection=${COLLS[0]}&limit=0`,
    `?collection=${COLLS[0]}&limit=2001`,
    `?collection=${COLLS[0]}&limit=x`,
    `?collection=${COLLS[0]}&cursor=nodid`,
  ]) {
    const r = await getJson(baton, base + q)
    checks.ok(
      `listReposByCollection${q || ' (no collection)'} -> 400 InvalidRequest`,
      r.status === 400 && r.body?.error === 'InvalidRequest',
      `HTTP ${r.status} ${JSON.stringify(r.body)}`,
    )
  }
  const max = await getJson(baton, `${base}?collection=${COLLS[0]}&limit=2000`)
  checks.ok('limit=2000 is accepted', max.status === 200, `HTTP ${max.status}`)
}

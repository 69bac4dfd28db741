// NAME
//   acctlimit.mjs - per-host account limits: throttled, never silent, re-activated (issue 7).
// DESCRIPTION
//   RELAY_DEFAULT_ACCOUNT_LIMIT=3. Host A gets four accounts: the first three flow; the fourth
//   is throttled: a relay-made #account {active: false, status: "throttled"} reaches a
//   consumer, its commits are not relayed (counted as drops with reason throttled),
//   getRepoStatus says throttled, getHostStatus gives accountCount 4, /metrics shows one
//   throttled account. POST /admin/pds/changeLimits without credentials is refused (401); with
//   them it raises A's limit to 10 and a new #account {active: true} follows at once, after
//   which the fourth account's new commits flow and getRepoStatus says active. A fifth account
//   (under the new limit) is not throttled.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { hasAll } from '../lib/harness.mjs'

export const name = 'acctlimit'

const PW = 'acctlimit-pw'
const auth = { Authorization: `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}` }

export async function run(checks, ctx) {
  const { pdses, baton } = await relayWithPdses(checks, ctx, {
    names: ['A'],
    live: false,
    extraEnv: { RELAY_DEFAULT_ACCOUNT_LIMIT: '3', RELAY_ADMIN_PASSWORD: PW },
  })
  const [A] = pdses
  const live = new Consumer(baton.wsUrl, { name: 'live', keepBodies: true })
  await live.start()
  ctx.cleanup.push(() => live.close())

  const accts = []
  for (let i = 0; i < 3; i++) {
    accts.push(await A.createAccount({ keyType: i % 2 ? 'p256' : 'k256' }))
    await A.idle()
  }
  const firstThree = A.sent.filter((e) => e.valid && e.t === '#commit')
  await live.waitFor((c) => hasAll(c, firstThree), 20000, 'first three').catch(() => {})
  checks.ok('the first three accounts flow', hasAll(live, firstThree))

  const t4 = await A.createAccount({ keyType: 'k256' })
  for (let i = 0; i < 3; i++) await A.write(t4)
  await A.idle()
  const isThrottle = (e) => e.t === '#account' && e.did === t4.did && e.body?.active === false && e.body?.status === 'throttled'
  await live.waitFor((c) => c.events.some(isThrottle), 20000, '#account throttled').catch(() => {})
  checks.ok('#account {active: false, status: throttled} for the 4th account reaches the consumer',
    live.events.some(isThrottle), JSON.stringify(live.events.filter((e) => e.did === t4.did).map((e) => [e.t, e.body?.status])))
  // A marker on an unthrottled account: once it arrives, anything of t4 sent before it would have.
  const marker = A.write(accts[0])
  await A.idle()
  const mk = A.sent[A.sent.length - 1]
  await live.waitFor((c) => c.events.some((e) => e.commit === mk.commit), 20000, 'marker').catch(() => {})
  checks.ok('no commit of the throttled account is relayed',
    !live.events.some((e) => e.did === t4.did && e.t === '#commit'), `${live.events.filter((e) => e.did === t4.did && e.t === '#commit').length} relayed`)
  void marker

  const rs = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${t4.did}`)).json()
  checks.ok('getRepoStatus: active false, status throttled', rs.active === false && rs.status === 'throttled', JSON.stringify(rs))
  const rs1 = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${accts[0].did}`)).json()
  checks.ok('getRepoStatus of an account under the limit: active', rs1.active === true, JSON.stringify(rs1))
  const hs = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getHostStatus?hostname=${A.host}`)).json()
  checks.ok('getHostStatus: accountCount 4, status active', hs.accountCount === 4 && hs.status === 'active', JSON.stringify(hs))
  const metrics = await (await fetch(baton.metricsUrl)).text()
  checks.ok('/metrics: one throttled account', /baton_throttled_accounts\{role="store"[^}]*\} 1\b/.test(metrics),
    metrics.split('\n').filter((l) => l.includes('throttled')).join(' | '))
  const st = await baton.status()
  const dropped = Baton.sum(st, 'store', 'drops', 'throttled')
  checks.ok('its frames are counted as drops with reason throttled', dropped >= 3, `drops.throttled ${dropped}`)

  // The count and the throttle are persisted with the events: a store killed with -9 keeps them.
  const oldPid = await baton.killStage('store', 0)
  await baton.waitRestarted('store', 0, oldPid, 20000).catch(() => {})
  let hs2 = {}
  let rs3 = {}
  for (let i = 0; i < 40; i++) {
    hs2 = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getHostStatus?hostname=${A.host}`)).json().catch(() => ({}))
    rs3 = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${t4.did}`)).json().catch(() => ({}))
    if (hs2.accountCount === 4 && rs3.status === 'throttled') break
    await new Promise((r) => setTimeout(r, 250))
  }
  checks.ok('after kill -9 of the store: accountCount 4, the account still throttled',
    hs2.accountCount === 4 && rs3.status === 'throttled', JSON.stringify({ hs2, rs3 }))
  await A.write(t4)
  await A.idle()
  const again = A.sent[A.sent.length - 1]
  const mk2 = await A.write(accts[1])
  await A.idle()
  await live.waitFor((c) => c.events.some((e) => e.commit === mk2.commit), 20000, 'marker 2').catch(() => {})
  checks.ok('after the restart its commits are still held back', !live.events.some((e) => e.commit === again.commit))

  const url = `${baton.httpUrl}/admin/pds/changeLimits`
  const body = JSON.stringify({ host: A.host, repo_limit: 10 })
  const r0 = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json' } })
  checks.ok('changeLimits without credentials: 401', r0.status === 401, `HTTP ${r0.status}`)
  const rbad = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', Authorization: 'Bearer wrong' } })
  checks.ok('changeLimits with a wrong password: 401', rbad.status === 401, `HTTP ${rbad.status}`)
  const rnf = await fetch(url, { method: 'POST', body: JSON.stringify({ host: 'nosuch.example', repo_limit: 10 }), headers: { ...auth, 'content-type': 'application/json' } })
  checks.ok('changeLimits of an unknown host: 404 HostNotFound', rnf.status === 404 && (await rnf.json()).error === 'HostNotFound', `HTTP ${rnf.status}`)
  const rmiss = await fetch(url, { method: 'POST', body: JSON.stringify({ host: A.host }), headers: { ...auth, 'content-type': 'application/json' } })
  checks.ok('changeLimits without repo_limit: 400', rmiss.status === 400, `HTTP ${rmiss.status}`)
  const r1 = await fetch(url, { method: 'POST', body, headers: { ...auth, 'content-type': 'application/json' } })
  const j1 = await r1.json().catch(() => ({}))
  checks.ok('changeLimits with credentials: 200, one account re-activated', r1.status === 200 && j1.reactivated === 1 && j1.account_limit === 10,
    `HTTP ${r1.status} ${JSON.stringify(j1)}`)

  const throttleSeq = live.events.find(isThrottle)?.seq ?? Infinity
  const isActive = (e) => e.t === '#account' && e.did === t4.did && e.body?.active === true && e.seq > throttleSeq
  await live.waitFor((c) => c.events.some(isActive), 20000, '#account active').catch(() => {})
  checks.ok('a new #account {active: true} follows the raise', live.events.some(isActive))
  const rs2 = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=${t4.did}`)).json()
  checks.ok('getRepoStatus: active again', rs2.active === true && rs2.status === undefined, JSON.stringify(rs2))

  for (let i = 0; i < 3; i++) await A.write(t4)
  await A.idle()
  const later = A.sent.filter((e) => e.t === '#commit' && e.did === t4.did).slice(-3)
  await live.waitFor((c) => hasAll(c, later), 20000, 'later commits').catch(() => {})
  checks.ok('its later commits flow', hasAll(live, later), `${later.filter((e) => live.events.some((g) => g.commit === e.commit)).length}/3`)
  const t5 = await A.createAccount({ keyType: 'p256' })
  await A.write(t5)
  await A.idle()
  const t5c = A.sent.filter((e) => e.t === '#commit' && e.did === t5.did)
  await live.waitFor((c) => hasAll(c, t5c), 20000, 't5').catch(() => {})
  checks.ok('a fifth account under the raised limit flows', hasAll(live, t5c) && !live.events.some((e) => e.did === t5.did && e.body?.status === 'throttled'))
  const st2 = await baton.status()
  checks.ok('throttled_accounts back to 0', Baton.sum(st2, 'store', 'counters', 'throttled_accounts') === 0,
    `${Baton.sum(st2, 'store', 'counters', 'throttled_accounts')}`)
  checks.none('frames valid, seq strictly increasing', live.errors)
  await live.close()
}

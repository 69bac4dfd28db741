// NAME
//   admin.mjs - the admin API (indigo's /admin/ routes) and the admission order.
// DESCRIPTION
//   A relay with RELAY_ADMIN_PASSWORD and a static RELAY_BANNED_DOMAINS, PDS simulators
//   A, B (crawled at start), C, D, E, G (later). For every admin route: 401 without
//   credentials, with a wrong password (Basic and Bearer) and with another user name;
//   then its effect with the right ones:
//     pds/list and subs/getUpstreamConns list A and B (indigo's shapes);
//     pds/block disconnects A at once, A's later commits never reach a consumer, a
//       requestCrawl of A is refused HostBanned with no describeServer reaching A (the ban
//       is checked before the probe), getHostStatus says banned;
//     pds/unblock lets A back: not banned, subscribed again, its commits flow;
//     subs/killUpstream disconnects B without banning it (a second kill is 400; a
//       requestCrawl brings it back);
//     subs/banDomain covers the domain and its subdomains (refused before any probe),
//       and a ban of "localhost" disconnects every connected simulator at once; their
//       commits meanwhile are not delivered; unbanDomain subscribes them again;
//       listDomainBans lists the stored and the static bans; a static one cannot be unbanned;
//     subs/setEnabled false refuses every public requestCrawl (403 Forbidden, no probe)
//       while the admin requestCrawl still works; getEnabled says so;
//     subs/setPerDayLimit: the next new host over the limit is refused 429 with no probe;
//     requestCrawl's cursorHint: a host never seen starts at ?cursor=<hint>.
//   Then the relay restarts without a password: every route answers 403 AdminDisabled, and
//   what was set is still in force (persisted by the store): the domain ban, the host ban,
//   the crawl switch, the per-day limit and today's count; batonctl's verbs change them.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { PdsSim, sleep } from '../lib/pds.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { Consumer } from '../lib/consumer.mjs'

export const name = 'admin'

const PW = 'e2e admin secret'

const ROUTES = [
  ['GET', '/admin/pds/list'],
  ['POST', '/admin/pds/requestCrawl'],
  ['POST', '/admin/pds/block?host=x.example.invalid'],
  ['POST', '/admin/pds/unblock?host=x.example.invalid'],
  ['GET', '/admin/subs/getUpstreamConns'],
  ['POST', '/admin/subs/killUpstream?host=x.example.invalid'],
  ['GET', '/admin/subs/getEnabled'],
  ['POST', '/admin/subs/setEnabled?enabled=false'],
  ['GET', '/admin/subs/perDayLimit'],
  ['POST', '/admin/subs/setPerDayLimit?limit=0'],
  ['GET', '/admin/subs/listDomainBans'],
  ['POST', '/admin/subs/banDomain'],
  ['POST', '/admin/subs/unbanDomain'],
]

function authHeader(auth) {
  const basic = (s) => 'Basic ' + Buffer.from(s).toString('base64')
  switch (auth) {
    case 'basic':
      return basic(`admin:${PW}`)
    case 'bearer':
      return `Bearer ${PW}`
    case 'wrong-basic':
      return basic('admin:not the password')
    case 'wrong-bearer':
      return 'Bearer not the password'
    case 'wrong-user':
      return basic(`root:${PW}`)
    default:
      return null
  }
}

async function call(baton, method, path, { auth = 'basic', body } = {}) {
  const headers = {}
  const a = authHeader(auth)
  if (a) headers.authorization = a
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`${baton.httpUrl}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20000),
  })
  const text = await res.text()
  let b = text
  try {
    b = JSON.parse(text)
  } catch {}
  return { status: res.status, body: b, www: res.headers.get('www-authenticate') }
}

const crawl = (baton, hostname, cursorHint) => baton.requestCrawl(hostname, cursorHint)

async function until(pred, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (await pred()) return true
    await sleep(100)
  }
  return false
}

const hostStatus = async (baton, h) =>
  (await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getHostStatus?hostname=${h}`)).json()).status

const show = (r) => `HTTP ${r.status} ${JSON.stringify(r.body)}`

export async function run(checks, ctx) {
  const extraEnv = { RELAY_ADMIN_PASSWORD: PW, RELAY_BANNED_DOMAINS: 'static-ban.test' }
  const { plc, pdses, baton, live } = await relayWithPdses(checks, ctx, { names: ['A', 'B'], extraEnv })
  const [A, B] = pdses
  const more = {}
  for (const n of ['C', 'D', 'E', 'G']) {
    more[n] = new PdsSim({ plc, name: n })
    await more[n].start()
    ctx.cleanup.push(() => more[n].stop())
  }
  const { C, D, E, G } = more
  const a1 = await A.createAccount()
  const b1 = await B.createAccount()
  await A.idle()
  await B.idle()

  // ---- credentials
  for (const [m, p] of ROUTES) {
    const bad = []
    for (const auth of ['none', 'wrong-basic', 'wrong-bearer', 'wrong-user']) {
      const r = await call(baton, m, p, { auth, body: m === 'POST' ? {} : undefined })
      if (r.status !== 401 || r.body?.error !== 'AuthRequired') bad.push(`${auth}: ${show(r)}`)
      if (auth === 'none' && !/^Basic/.test(r.www || '')) bad.push('no WWW-Authenticate: Basic')
    }
    checks.ok(`${m} ${p.split('?')[0]}: 401 without or with wrong credentials`, bad.length === 0, bad.join('; '))
  }
  const wm = await call(baton, 'GET', '/admin/pds/block?host=x.example.invalid')
  checks.ok('a known route with the wrong method: 405', wm.status === 405, show(wm))
  const nf = await call(baton, 'GET', '/admin/nothing/here')
  checks.ok('an unknown admin route: 404', nf.status === 404, show(nf))

  // ---- lists
  let list = null
  await until(async () => {
    list = await call(baton, 'GET', '/admin/pds/list')
    const hs = Array.isArray(list.body) ? list.body : []
    return [A, B].every((p) => hs.some((h) => h.Host === p.host && h.HasActiveConnection === true))
  })
  checks.ok('pds/list: A and B, connected, in indigo\'s shape (ID, Host, Cursor, Blocked, HasActiveConnection)',
    Array.isArray(list.body) && list.body.every((h) => 'ID' in h && 'Cursor' in h && h.Blocked === false) &&
      [A, B].every((p) => list.body.some((h) => h.Host === p.host && h.HasActiveConnection === true)), show(list))
  const conns = await call(baton, 'GET', '/admin/subs/getUpstreamConns', { auth: 'bearer' })
  checks.ok('subs/getUpstreamConns (Bearer): the hostnames A and B',
    conns.status === 200 && Array.isArray(conns.body) && conns.body.includes(A.host) && conns.body.includes(B.host), show(conns))

  // ---- block / unblock
  const descA = A.describeCount
  const blk = await call(baton, 'POST', `/admin/pds/block?host=${A.host}`)
  checks.ok('pds/block A: {"success":"true"}', blk.status === 200 && blk.body?.success === 'true', show(blk))
  checks.ok('pds/block disconnects A at once', await until(() => A.subscribers.size === 0, 10000), `${A.subscribers.size} subscribers`)
  const aLate = await A.write(a1)
  const bMark = await B.write(b1)
  await live.waitFor((c) => c.events.some((e) => e.commit === bMark.commit), 15000, 'B after the block').catch(() => {})
  await sleep(1500)
  checks.ok('a commit A sends while banned never reaches the consumer', !live.events.some((e) => e.commit === aLate.commit))
  checks.ok('getHostStatus A: banned', (await hostStatus(baton, A.host)) === 'banned')
  const rA = await crawl(baton, A.host)
  checks.ok('requestCrawl of banned A: 400 HostBanned', rA.status === 400 && rA.body?.error === 'HostBanned', show(rA))
  const rAa = await call(baton, 'POST', '/admin/pds/requestCrawl', { body: { hostname: A.host } })
  checks.ok('admin requestCrawl of banned A: 400 HostBanned too', rAa.status === 400 && rAa.body?.error === 'HostBanned', show(rAa))
  checks.ok('no describeServer reached A after its ban (checked before the probe)', A.describeCount === descA,
    `${A.describeCount - descA} probes`)
  const listB = await call(baton, 'GET', '/admin/pds/list')
  checks.ok('pds/list: A Blocked', Array.isArray(listB.body) && listB.body.some((h) => h.Host === A.host && h.Blocked === true), show(listB))
  const ub = await call(baton, 'POST', `/admin/pds/unblock?host=${A.host}`)
  checks.ok('pds/unblock A: {"success":"true"}', ub.status === 200 && ub.body?.success === 'true', show(ub))
  checks.ok('getHostStatus A after unblock: not banned', (await hostStatus(baton, A.host)) !== 'banned')
  checks.ok('unblocked A is subscribed again', await until(() => A.subscribers.size === 1, 15000))
  const aBack = await A.write(a1)
  await live.waitFor((c) => c.events.some((e) => e.commit === aBack.commit), 15000, 'A back').catch(() => {})
  checks.ok('A\'s commits flow again after unblock', live.events.some((e) => e.commit === aBack.commit))
  const rA2 = await crawl(baton, A.host)
  checks.ok('requestCrawl of A accepted again', rA2.status === 200, show(rA2))
  const ubx = await call(baton, 'POST', '/admin/pds/unblock?host=never.seen.example')
  checks.ok('pds/unblock of an unknown host: 404 HostNotFound', ubx.status === 404 && ubx.body?.error === 'HostNotFound', show(ubx))
  const bq = await call(baton, 'POST', '/admin/pds/block')
  checks.ok('pds/block without ?host: 400', bq.status === 400, show(bq))

  // ---- killUpstream
  const k1 = await call(baton, 'POST', `/admin/subs/killUpstream?host=${B.host}`)
  checks.ok('subs/killUpstream B: {"success":"true"}', k1.status === 200 && k1.body?.success === 'true', show(k1))
  checks.ok('killUpstream disconnects B', await until(() => B.subscribers.size === 0, 10000))
  const conns2 = await call(baton, 'GET', '/admin/subs/getUpstreamConns')
  checks.ok('getUpstreamConns no longer lists B', Array.isArray(conns2.body) && !conns2.body.includes(B.host), show(conns2))
  checks.ok('a killed host is not banned', (await hostStatus(baton, B.host)) !== 'banned')
  const k2 = await call(baton, 'POST', `/admin/subs/killUpstream?host=${B.host}`)
  checks.ok('killUpstream of a host not connected: 400', k2.status === 400, show(k2))
  const rB = await crawl(baton, B.host)
  checks.ok('requestCrawl brings the killed B back', rB.status === 200 && (await until(() => B.subscribers.size === 1, 15000)), show(rB))

  // ---- domain bans
  const bd = await call(baton, 'POST', '/admin/subs/banDomain', { body: { Domain: 'evil.test' } })
  checks.ok('subs/banDomain {"Domain":"evil.test"}: {"success":"true"}', bd.status === 200 && bd.body?.success === 'true', show(bd))
  for (const h of ['evil.test', 'pds.evil.test', 'a.b.evil.test', 'pds.static-ban.test']) {
    const r = await crawl(baton, h)
    checks.ok(`requestCrawl ${h}: 400 DomainBanned`, r.status === 400 && r.body?.error === 'DomainBanned', show(r))
  }
  const ld = await call(baton, 'GET', '/admin/subs/listDomainBans')
  checks.ok('subs/listDomainBans: {"banned_domains": [evil.test, static-ban.test]}',
    ld.status === 200 && ['evil.test', 'static-ban.test'].every((d) => ld.body?.banned_domains?.includes(d)), show(ld))
  const us = await call(baton, 'POST', '/admin/subs/unbanDomain', { body: { domain: 'static-ban.test' } })
  checks.ok('unbanDomain of a RELAY_BANNED_DOMAINS domain: 400', us.status === 400, show(us))
  const bdBad = await call(baton, 'POST', '/admin/subs/banDomain', { body: { Domain: 'a..b' } })
  checks.ok('banDomain a..b: 400', bdBad.status === 400, show(bdBad))
  const bl = await call(baton, 'POST', '/admin/subs/banDomain', { body: { Domain: 'localhost' } })
  checks.ok('banDomain localhost', bl.status === 200, show(bl))
  checks.ok('banDomain disconnects every connected host under it (A and B)',
    await until(() => A.subscribers.size === 0 && B.subscribers.size === 0, 10000), `${A.subscribers.size} ${B.subscribers.size}`)
  const aDom = await A.write(a1)
  await sleep(2000)
  checks.ok('a commit sent under the domain ban is not delivered meanwhile', !live.events.some((e) => e.commit === aDom.commit))
  const descC = C.describeCount
  const rC0 = await crawl(baton, C.host)
  checks.ok('requestCrawl of a new localhost host under the ban: DomainBanned, no probe',
    rC0.status === 400 && rC0.body?.error === 'DomainBanned' && C.describeCount === descC, show(rC0))
  const ul = await call(baton, 'POST', '/admin/subs/unbanDomain', { body: { Domain: 'localhost' } })
  checks.ok('unbanDomain localhost', ul.status === 200 && ul.body?.success === 'true', show(ul))
  checks.ok('unbanDomain subscribes A and B again', await until(() => A.subscribers.size === 1 && B.subscribers.size === 1, 15000))
  const aAfter = await A.write(a1)
  await live.waitFor((c) => c.events.some((e) => e.commit === aAfter.commit), 15000, 'A after unban').catch(() => {})
  checks.ok('A\'s commits flow after unbanDomain', live.events.some((e) => e.commit === aAfter.commit))

  // ---- setEnabled / getEnabled
  const se = await call(baton, 'POST', '/admin/subs/setEnabled?enabled=false')
  checks.ok('subs/setEnabled?enabled=false: {"success":"true"}', se.status === 200 && se.body?.success === 'true', show(se))
  const ge = await call(baton, 'GET', '/admin/subs/getEnabled')
  checks.ok('subs/getEnabled: {"enabled": false}', ge.status === 200 && ge.body?.enabled === false, show(ge))
  const rC1 = await crawl(baton, C.host)
  checks.ok('disabled: requestCrawl of a new host is 403 Forbidden with no probe',
    rC1.status === 403 && rC1.body?.error === 'Forbidden' && C.describeCount === descC, show(rC1))
  const rA3 = await crawl(baton, A.host)
  checks.ok('disabled: a known host\'s requestCrawl is refused too (indigo)', rA3.status === 403, show(rA3))
  checks.ok('disabled: connected hosts stay connected', A.subscribers.size === 1 && B.subscribers.size === 1)
  const seBad = await call(baton, 'POST', '/admin/subs/setEnabled?enabled=maybe')
  checks.ok('setEnabled?enabled=maybe: 400', seBad.status === 400, show(seBad))
  const se2 = await call(baton, 'POST', '/admin/subs/setEnabled?enabled=true')
  const ge2 = await call(baton, 'GET', '/admin/subs/getEnabled')
  checks.ok('setEnabled?enabled=true: enabled again', se2.status === 200 && ge2.body?.enabled === true, show(ge2))

  // ---- per-day limit (A and B were new today: 2 so far)
  const pd = await call(baton, 'GET', '/admin/subs/perDayLimit')
  checks.ok('subs/perDayLimit: {"limit": 50} (RELAY_NEW_HOSTS_PER_DAY_LIMIT)', pd.status === 200 && pd.body?.limit === 50, show(pd))
  const sp = await call(baton, 'POST', '/admin/subs/setPerDayLimit?limit=3')
  const pd2 = await call(baton, 'GET', '/admin/subs/perDayLimit')
  checks.ok('subs/setPerDayLimit?limit=3', sp.status === 200 && sp.body?.success === 'true' && pd2.body?.limit === 3, show(pd2))
  const rC = await crawl(baton, C.host)
  checks.ok('the 3rd new host today is accepted', rC.status === 200, show(rC))
  const descD = D.describeCount
  const rD = await crawl(baton, D.host)
  checks.ok('the 4th is refused 429 RateLimitExceeded, with no probe',
    rD.status === 429 && rD.body?.error === 'RateLimitExceeded' && D.describeCount === descD, show(rD))
  const rDa = await call(baton, 'POST', '/admin/pds/requestCrawl', { body: { hostname: D.host } })
  checks.ok('the admin requestCrawl is past the limit', rDa.status === 200 && rDa.body?.success === 'true', show(rDa))
  const spBad = await call(baton, 'POST', '/admin/subs/setPerDayLimit?limit=-1')
  checks.ok('setPerDayLimit?limit=-1: 400', spBad.status === 400, show(spBad))

  // ---- cursorHint: E already has events; a host never seen starts at the hint
  const e1 = await E.createAccount()
  for (let i = 0; i < 4; i++) await E.write(e1)
  await E.idle()
  await call(baton, 'POST', '/admin/subs/setPerDayLimit?limit=10')
  const hint = E.seq - 2
  const rE = await crawl(baton, E.host, hint)
  await E.waitSubscribers(1).catch(() => {})
  checks.ok('requestCrawl {cursorHint} of a new host: the first subscribe asks ?cursor=<hint>',
    rE.status === 200 && E.subscribeCursors[0] === String(hint), `${show(rE)} cursors ${JSON.stringify(E.subscribeCursors)}`)
  const tail = E.sent.filter((e) => e.seq > hint && e.valid && e.t === '#commit')
  await live.waitFor((c) => tail.every((t) => c.events.some((e) => e.commit === t.commit)), 15000, 'E tail').catch(() => {})
  checks.ok('the events after the hint arrive', tail.length > 0 && tail.every((t) => live.events.some((e) => e.commit === t.commit)))
  const head = E.sent.filter((e) => e.seq <= hint && e.t === '#commit')
  checks.ok('the events up to the hint are not fetched', head.length > 0 && !head.some((t) => live.events.some((e) => e.commit === t.commit)))
  const rHintBad = await crawl(baton, G.host, 'x')
  checks.ok('cursorHint not an integer: 400', rHintBad.status === 400, show(rHintBad))

  // ---- state to survive the restart: a host ban, the switch off, the limit at 10 (4 new today: A B C E)
  await call(baton, 'POST', '/admin/pds/block?host=x.example.invalid')
  await call(baton, 'POST', '/admin/subs/setEnabled?enabled=false')
  await live.close()
  await baton.stop()

  // ---- restarted without a password: 403 everywhere; what was set is still in force
  baton.extraEnv = { RELAY_BANNED_DOMAINS: 'static-ban.test' }
  await baton.start()
  await baton.waitHealthy()
  const bad403 = []
  for (const [m, p] of ROUTES) {
    for (const auth of ['basic', 'none']) {
      const r = await call(baton, m, p, { auth, body: m === 'POST' ? {} : undefined })
      if (r.status !== 403 || r.body?.error !== 'AdminDisabled') bad403.push(`${m} ${p} ${auth}: ${show(r)}`)
    }
  }
  checks.ok('no RELAY_ADMIN_PASSWORD: every route 403 AdminDisabled, with or without credentials', bad403.length === 0, bad403.join('; '))
  const cr = await baton.ctl('crawl')
  checks.ok('after the restart: crawls still disabled, limit 10, 4 new hosts today (batonctl crawl)',
    cr.enabled === false && cr.per_day_limit === 10 && cr.new_today === 4, JSON.stringify(cr))
  const db = await baton.ctl('domain-bans')
  checks.ok('after the restart: the evil.test ban is kept (batonctl domain-bans)', db.banned_domains?.includes('evil.test'), JSON.stringify(db))
  const rX = await crawl(baton, 'x.example.invalid')
  checks.ok('after the restart: the banned host is refused HostBanned', rX.status === 400 && rX.body?.error === 'HostBanned', show(rX))
  const rEv = await crawl(baton, 'pds.evil.test')
  checks.ok('after the restart: the domain ban holds', rEv.status === 400 && rEv.body?.error === 'DomainBanned', show(rEv))
  const descG = G.describeCount
  const rG = await crawl(baton, G.host)
  checks.ok('after the restart: the switch is still off (403)', rG.status === 403 && G.describeCount === descG, show(rG))
  checks.ok('after the restart: A, B, C, D, E are subscribed again',
    await until(() => [A, B, C, D, E].every((p) => p.subscribers.size === 1), 20000))

  // ---- batonctl verbs
  const en = await baton.ctl('enable-crawls')
  const lim = await baton.ctl('per-day-limit', '4')
  checks.ok('batonctl enable-crawls, per-day-limit 4', en.enabled === true && lim.per_day_limit === 4, JSON.stringify([en, lim]))
  const rG2 = await crawl(baton, G.host)
  checks.ok('the count survived the restart: a 5th new host today is refused 429 with no probe',
    rG2.status === 429 && G.describeCount === descG, show(rG2))
  const ban = await baton.ctl('ban-domain', 'Other.Test')
  const db2 = await baton.ctl('domain-bans')
  checks.ok('batonctl ban-domain (normalised) and domain-bans', ban.ok === true && db2.banned_domains?.includes('other.test'), JSON.stringify(db2))
  const unban = await baton.ctl('unban-domain', 'other.test')
  const db3 = await baton.ctl('domain-bans')
  checks.ok('batonctl unban-domain', unban.ok === true && !db3.banned_domains?.includes('other.test'), JSON.stringify(db3))
  const kill = await baton.ctl('kill-upstream', C.host)
  checks.ok('batonctl kill-upstream disconnects C', kill.ok === true && (await until(() => C.subscribers.size === 0, 10000)), JSON.stringify(kill))
  const ubl = await baton.ctl('unblock', 'x.example.invalid')
  checks.ok('batonctl unblock x.example.invalid', ubl.ok === true && ubl.status === 'active', JSON.stringify(ubl))
  const refused = await baton.ctl('unban-domain', 'static-ban.test').then(() => 'exit 0', (e) => String(e))
  checks.ok('batonctl exits 1 on a refusal', /Command failed/.test(refused), refused)

  // ---- a cursorHint past the host's head: FutureCursor, then a new chain epoch from the start
  // (the FutureCursor / sequence-restart path itself is e2e reseq's; this is the hint's way in)
  const H = new PdsSim({ plc, name: 'H' })
  await H.start()
  ctx.cleanup.push(() => H.stop())
  const h1 = await H.createAccount()
  await H.idle()
  const live2 = new Consumer(baton.wsUrl, { name: 'live2' })
  await live2.start()
  ctx.cleanup.push(() => live2.close())
  const rH = await baton.ctl('request-crawl', H.host, '1000')
  await until(() => H.subscribeCount >= 2 && H.subscribers.size === 1, 20000)
  checks.ok('batonctl request-crawl HOST 1000: first ?cursor=1000 (FutureCursor), then a subscribe without cursor',
    rH.ok === true && H.subscribeCursors[0] === '1000' && H.subscribeCursors.slice(1).includes(null),
    `${JSON.stringify(rH)} cursors ${JSON.stringify(H.subscribeCursors)}`)
  const hw = await H.write(h1)
  await live2.waitFor((c) => c.events.some((e) => e.commit === hw.commit), 15000, 'H write').catch(() => {})
  checks.ok('that host\'s later commits flow', live2.events.some((e) => e.commit === hw.commit))
}

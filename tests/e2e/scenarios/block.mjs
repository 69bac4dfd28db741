// NAME
//   block.mjs - an upstream host removed while its frames are in flight (lesson 5).
// DESCRIPTION
//   Two PDS simulators. The PLC is made to fail, so commits of new accounts on
//   host X wait in verify (in flight, resolution pending) while host Y keeps
//   flowing. The operator blocks X (`batonctl block`): the relay disconnects it
//   and forgets it at once, its in-flight frames still get their verdicts when
//   the PLC comes back (nothing crashes: the e2e run under ASan checks this),
//   X is never reconnected, later commits from X never arrive, a requestCrawl
//   of X is refused (HostBanned) before any describeServer reaches X, getHostStatus says banned, and Y's events all
//   arrive exactly once. No stage restarts.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'

export const name = 'block'

export async function run(checks, ctx) {
  const { plc, pdses, baton, live } = await relayWithPdses(checks, ctx, { names: ['X', 'Y'] })
  const [X, Y] = pdses
  const before = await baton.status()

  const y1 = await Y.createAccount({ keyType: 'k256' })
  for (let i = 0; i < 5; i++) await Y.write(y1)
  await Y.idle()
  await live.waitFor((c) => hasAll(c, validRepoEvents([Y])), 15000, 'Y first').catch(() => {})

  plc.setMode('503')
  const xs = [await X.createAccount({ keyType: 'k256' }), await X.createAccount({ keyType: 'p256' })]
  for (const a of xs) for (let i = 0; i < 4; i++) await X.write(a)
  await X.idle()
  await sleep(1500)
  const mid = await baton.status()
  const waiting = Baton.sum(mid, 'verify', 'counters', 'waiting')
  checks.ok('frames of X are in flight (waiting for their identity)', waiting > 0, `counters.waiting ${waiting}`)

  const subsBefore = X.subscribeCount
  const res = await baton.ctl('block', X.host).catch((e) => ({ error: String(e) }))
  checks.ok('batonctl block X answers ok', res.ok === true, JSON.stringify(res))
  plc.setMode('ok')
  const xLate = xs[0]
  await X.write(xLate)
  for (let i = 0; i < 5; i++) await Y.write(y1)
  await Y.idle()
  await sleep(4000) // resolution retries, verdicts for X's in-flight frames, any reconnect attempt
  checks.ok('X is not reconnected after the block', X.subscribeCount === subsBefore, `${X.subscribeCount - subsBefore} new connections`)
  const late = X.sent[X.sent.length - 1]
  checks.ok('a commit X sends after the block is never delivered', !live.events.some((e) => e.commit === late.commit))
  const st = await baton.status()
  checks.ok('every in-flight frame got its verdict (nothing left waiting)', Baton.sum(st, 'verify', 'counters', 'waiting') === 0,
    `waiting ${Baton.sum(st, 'verify', 'counters', 'waiting')}`)
  const probes = X.describeCount
  const r2 = await baton.requestCrawl(X.host)
  checks.ok('requestCrawl of the blocked host is refused (HostBanned)', r2.status === 400 && r2.body?.error === 'HostBanned', `HTTP ${r2.status} ${JSON.stringify(r2.body)}`)
  checks.ok('... before its probe: no describeServer reached X (issue 7)', X.describeCount === probes, `${X.describeCount - probes} probes`)
  const hs = await (await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getHostStatus?hostname=${X.host}`)).json()
  checks.ok('getHostStatus says banned', hs.status === 'banned', JSON.stringify(hs))
  const validY = validRepoEvents([Y])
  await live.waitFor((c) => hasAll(c, validY), 15000, 'Y all').catch(() => {})
  // X's in-flight frames were read before the block: delivering them is fine; compare Y alone.
  const yDids = new Set(validY.map((e) => e.did))
  const onlyY = { events: live.events.filter((e) => yDids.has(e.did)) }
  checks.none('Y: every valid event exactly once, in order', compareDelivery(onlyY, validY, forgedEvents([Y])))
  checks.none('frames valid, seq strictly increasing', live.errors)
  const restarts = (st.stages || []).reduce((n, s) => n + Number(s.restarts || 0), 0)
  const samePids = (before.stages || []).every((s, k) => st.stages?.[k]?.pid === s.pid)
  checks.ok('no stage crashed or was restarted', restarts === 0 && samePids, `restarts ${restarts}`)
  await live.close()
}

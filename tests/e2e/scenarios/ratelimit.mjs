// NAME
//   ratelimit.mjs - a host over its event rate limit is slowed, not dropped; others unaffected.
// DESCRIPTION
//   Two PDS simulators A and B. The operator sets A's limit to 5 events a second
//   (`batonctl change-limits A 100 5`, a per-host override). A then sends a burst of 60 commits
//   at once, and right after it B sends a few. Checks: B's events all arrive while A is still
//   behind (A's socket is paused, not the relay); A's burst takes several seconds (its socket
//   is paused: rate_pauses counted by ingest) and then every A event arrives exactly once, in
//   order, nothing dropped; limits show in batonctl hosts. No timing decides the outcome
//   except the loose lower bound that 60 events at 5/s cannot all arrive within 4 s.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'

export const name = 'ratelimit'

const BURST = 60

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, { names: ['A', 'B'] })
  const [A, B] = pdses
  const a1 = await A.createAccount({ keyType: 'k256' })
  const b1 = await B.createAccount({ keyType: 'p256' })
  await A.idle()
  await B.idle()
  await live.waitFor((c) => hasAll(c, validRepoEvents([A, B])), 20000, 'genesis').catch(() => {})

  const res = await baton.ctl('change-limits', A.host, '100', '5').catch((e) => ({ error: String(e) }))
  checks.ok('batonctl change-limits A 100 5 answers with the new rate', res.per_second === 5 && res.ingest === true, JSON.stringify(res))
  const hosts = await baton.ctl('hosts')
  const ha = (hosts.hosts || []).find((h) => h.host === A.host)
  const hb = (hosts.hosts || []).find((h) => h.host === B.host)
  checks.ok("batonctl hosts shows A's override and B's default (50/s + L/1000)", ha?.per_second === 5 && hb?.per_second === 50 + Math.floor(hb?.account_limit / 1000),
    JSON.stringify({ a: ha?.per_second, b: hb?.per_second, bLimit: hb?.account_limit }))

  const arrived = new Map() // commit cid -> ms
  live.listeners.add((e) => e.commit && arrived.set(e.commit, Date.now()))
  const t0 = Date.now()
  for (let i = 0; i < BURST; i++) A.write(a1, 1)
  await A.idle()
  const burst = A.sent.filter((e) => e.t === '#commit' && e.did === a1.did).slice(-BURST)
  for (let i = 0; i < 5; i++) B.write(b1, 1)
  await B.idle()
  const bEvents = B.sent.filter((e) => e.t === '#commit' && e.did === b1.did).slice(-5)
  await live.waitFor((c) => hasAll(c, bEvents), 20000, 'B').catch(() => {})
  const bDone = Date.now()
  const aByThen = burst.filter((e) => (arrived.get(e.commit) ?? Infinity) <= bDone).length
  checks.ok("B's events all arrive while A is still behind", hasAll(live, bEvents) && aByThen < BURST,
    `B arrived: ${hasAll(live, bEvents)}, A's burst delivered by then: ${aByThen}/${BURST}`)

  await live.waitFor((c) => hasAll(c, burst), 60000, 'A burst').catch(() => {})
  const aLast = Math.max(...burst.map((e) => arrived.get(e.commit) ?? Infinity))
  checks.ok('every event of A arrives eventually', hasAll(live, burst))
  checks.ok(`A's burst of ${BURST} at 5/s was slowed (took >= 4 s)`, aLast - t0 >= 4000, `${aLast - t0} ms`)
  checks.none('A and B: every valid event exactly once, in order, nothing forged',
    compareDelivery(live, validRepoEvents([A, B]), forgedEvents([A, B])))
  checks.none('frames valid, seq strictly increasing', live.errors)
  const st = await baton.status()
  const pauses = Baton.sum(st, 'ingest', 'counters', 'rate_pauses')
  checks.ok('ingest counted rate-limit pauses', pauses > 0, `rate_pauses ${pauses}`)
  const dropped = Baton.sum(st, 'store', 'counters', 'dropped') + Baton.sum(st, 'ingest', 'counters', 'bad_frames')
  checks.ok('nothing dropped', dropped === 0, `dropped ${dropped}`)
  await live.close()
}

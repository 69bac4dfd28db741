// NAME
//   hostile_up.mjs - hostile upstream hosts never crash a stage, grow memory or hold the relay.
// DESCRIPTION
//   Alongside a well-behaved PDS simulator (3 accounts, a paced stream) and a second one that
//   floods 600 commits for one DID as fast as it can sign them, the relay is made to subscribe
//   to one raw HostileHost (lib/hostile.mjs) per misbehaviour: malformed CBOR, oversized frames,
//   endless continuation fragments, invalid UTF-8 in a text frame, reserved opcodes, a ping
//   flood that never reads a pong, a host that never answers the upgrade and one that trickles
//   its upgrade answer a byte every 500 ms.
//   Checks: every hostile connection is ended by the relay (the silent and trickling ones by
//   the handshake deadline, not held forever) and retried; no stage is restarted; no stage's
//   resident memory grows by more than 64 MiB (printed before and after, per process); the live
//   consumer gets every valid event of both simulators exactly once, in per-DID order; ingest
//   counted every rejected frame (bad_frames) and every ended connection (disconnects).
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; `# rss ...` lines with the numbers.

import { relayWithPdses } from '../lib/setup.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { Baton, sleep } from '../lib/baton.mjs'
import { HostileHost, until, stageRss, rssReport, restartProblems } from '../lib/hostile.mjs'

export const name = 'hostile_up'

const MODES = ['cbor', 'oversize', 'fragments', 'utf8', 'opcode', 'ping', 'silent', 'trickle']

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, { names: ['good', 'flood'] })
  const [good, flood] = pdses
  const goodAccts = await createAccounts([good], 3)
  const [floodAcct] = await createAccounts([flood], 1)
  await live.waitFor((c) => hasAll(c, validRepoEvents(pdses)), 30000, 'the genesis events').catch(() => {})
  const before = await baton.status()
  const rssBefore = await stageRss(baton)

  const hosts = {}
  for (const m of MODES) {
    const h = new HostileHost(m)
    await h.start()
    ctx.cleanup.push(() => h.stop())
    hosts[m] = h
    const r = await baton.requestCrawl(h.host)
    checks.ok(`requestCrawl of the ${m} host accepted`, r.status === 200, `HTTP ${r.status} ${JSON.stringify(r.body)}`)
  }

  // The honest traffic runs while the hostile hosts do their worst.
  const paced = drive(goodAccts, { count: 300, ratePerSec: 20 })
  const flooding = (async () => {
    for (let i = 0; i < 600; i++) await flood.write(floodAcct.acct, 1)
  })()

  // Each framing attack: the relay ends the connection and comes back (at least twice).
  for (const m of ['cbor', 'oversize', 'fragments', 'utf8', 'opcode']) {
    const h = hosts[m]
    const ok = await until(() => h.closed >= 2, 60000)
    checks.ok(`${m}: the relay ended the hostile connection and retried`, ok, `subscribes ${h.subscribes}, closed ${h.closed}`)
  }
  // The ping flood: the relay keeps reading pings while nobody reads its pongs; its memory
  // must not follow the flood (48 MiB of pings, each asking for a pong).
  const ph = hosts.ping
  const pingDone = await until(() => ph.closed >= 1 || (ph.conns[0]?.bytesOut ?? 0) >= 48 * 2 ** 20, 60000)
  checks.ok('ping: the flood was sent in full or the relay ended it', pingDone, `bytes ${ph.conns[0]?.bytesOut}`)
  // Silent and trickling upgrades end at the handshake deadline (30 s), not never.
  for (const m of ['silent', 'trickle']) {
    const h = hosts[m]
    const ok = await until(() => h.closed >= 1, 75000)
    const c = h.conns[0]
    checks.ok(`${m}: the relay gave up on the upgrade within a deadline`, ok,
      `subscribes ${h.subscribes}, closed ${h.closed}, held ${c ? ((c.closedAt || Date.now()) - c.at) / 1000 : '?'} s, bytes ${c?.bytesOut}`)
  }

  await paced
  await flooding
  for (const p of pdses) await p.idle()
  const valid = validRepoEvents(pdses)
  await live.waitFor((c) => hasAll(c, valid), 60000, 'every valid event').catch(() => {})
  checks.none('frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  checks.none(`every valid event of the honest hosts exactly once, per-DID order (${valid.length}, 600 for one DID)`,
    compareDelivery(live, valid, forgedEvents(pdses)))

  // What the hosts saw ended, taken before the relay's counters (which can only be ahead).
  const framed = ['cbor', 'oversize', 'fragments', 'utf8', 'opcode'].reduce((n, m) => n + hosts[m].closed, 0)
  const ended = MODES.reduce((n, m) => n + hosts[m].closed, 0)
  // the counters are published by ingest's loop: poll until they reach what the hosts saw
  let after = await baton.status()
  const badNow = (st) => Baton.sum(st, 'ingest', 'counters', 'bad_frames') - Baton.sum(before, 'ingest', 'counters', 'bad_frames')
  await until(async () => badNow((after = await baton.status())) >= framed, 10000)
  const rssAfter = await stageRss(baton)
  checks.none('no stage crashed or was restarted', restartProblems(before, after))
  checks.none('no stage grew by more than 64 MiB resident', rssReport('hostile_up', rssBefore, rssAfter))
  const bad = Baton.sum(after, 'ingest', 'counters', 'bad_frames') - Baton.sum(before, 'ingest', 'counters', 'bad_frames')
  checks.ok('ingest counted a bad frame for every hostile connection it ended over one', bad >= framed, `bad_frames +${bad}, connections ended ${framed}`)
  const disc = Baton.sum(after, 'ingest', 'counters', 'disconnects') - Baton.sum(before, 'ingest', 'counters', 'disconnects')
  checks.ok('ingest counted every ended connection', disc >= ended, `disconnects +${disc}, ended ${ended}`)
  const h = await baton.health()
  checks.ok('/_health is 200 afterwards', h.status === 200, JSON.stringify(h))
  await live.close()
}

// NAME
//   consumers.mjs - 200 consumers, 50 of which never read: the budget holds, readers get everything.
// DESCRIPTION
//   RELAY_CONSUMER_BUFFER_MB=4 per fanout. 150 reading consumers and 50 that never read after
//   the handshake (lib/noread.py: a 4 KiB receive window, so only the relay's kernel send buffer,
//   not the client's, absorbs what is sent); 1,500 commits (~5 MB, more than a send buffer holds)
//   are written. Checks: every reader receives the same, complete seq list as a reference
//   consumer; the budget engaged (budget_held counted); each fanout's queued bytes, polled
//   throughout, stay within max(budget, its consumers x the 64 KiB minimum share) plus one
//   event per consumer; the fanouts' RSS is printed, and must stay under 200 MiB. The read
//   deadline and the per-IP limit: consumerlimits.mjs.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; `# rss` lines with the fanouts' resident sizes.

import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { Baton } from '../lib/baton.mjs'
import { validRepoEvents, hasAll } from '../lib/harness.mjs'

const NOREAD = path.join(path.dirname(fileURLToPath(import.meta.url)), '../lib/noread.py')

export const name = 'consumers'

const BUDGET_MB = 4

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, {
    extraEnv: { RELAY_CONSUMER_BUFFER_MB: String(BUDGET_MB), RELAY_MAX_CONNS_PER_IP: '1000', RELAY_CONSUMER_READ_TIMEOUT: '600' },
  })
  const pds = pdses[0]
  const readers = []
  for (let i = 0; i < 150; i++) {
    const c = new Consumer(baton.wsUrl, { name: `r${i}` })
    await c.start()
    ctx.cleanup.push(() => c.close())
    readers.push(c)
  }
  const stuck = []
  const u = new URL(baton.wsUrl)
  for (let i = 0; i < 50; i++) {
    const p = spawn('python3', [NOREAD, u.hostname, u.port, u.pathname, 'stuck', '600'], { stdio: ['ignore', 'pipe', 'inherit'] })
    ctx.cleanup.push(() => p.kill('SIGKILL'))
    await new Promise((res) => p.stdout.once('data', res)) // upgraded
    stuck.push(p)
  }
  const accts = []
  for (let i = 0; i < 5; i++) accts.push(await pds.createAccount())
  const held0 = Baton.sum(await baton.status(), 'fanout', 'counters', 'budget_held')
  const over = [] // polls where a fanout held more than its bound
  let maxQueued = 0
  let polling = true
  const series = (t, n) => {
    const m = new Map()
    for (const l of t.split('\n')) {
      if (!l.startsWith(n + '{')) continue
      const idx = /index="(\d+)"/.exec(l)?.[1]
      if (idx !== undefined) m.set(idx, Number(l.split(' ').pop()))
    }
    return m
  }
  const metric = async () => {
    const t = await (await fetch(baton.metricsUrl)).text()
    return { queued: series(t, 'baton_queued_bytes'), subs: series(t, 'baton_consumers'), text: t }
  }
  const MIN_SHARE = 64 * 1024
  const MAX_EVENT = 16 * 1024 // the sim's commits are ~3.5 KB
  const poller = (async () => {
    while (polling) {
      const m = await metric().catch(() => null)
      if (m) {
        for (const [k, q] of m.queued) {
          const n = m.subs.get(k) ?? 200
          maxQueued = Math.max(maxQueued, q)
          const bound = Math.max(BUDGET_MB * 1048576, n * MIN_SHARE) + n * MAX_EVENT
          if (q > bound) over.push({ fanout: k, queued: q, consumers: n, bound })
        }
      }
      await sleep(200)
    }
  })()
  for (let r = 0; r < 300; r++) for (const a of accts) await pds.write(a, 3)
  await pds.idle()
  // the reference: the live consumer once it has every event the sim sequenced and nothing more
  // arrives for 2 s
  await live.waitFor((c) => hasAll(c, validRepoEvents([pds])), 120000, 'every event').catch(() => {})
  let n = -1
  for (const end = Date.now() + 60000; Date.now() < end && live.events.length !== n;) {
    n = live.events.length
    await sleep(2000)
  }
  const ref = live.events.map((e) => e.seq).join(',')
  const end = Date.now() + 90000
  while (Date.now() < end && readers.some((c) => c.events.length < live.events.length)) await sleep(500)
  const bad = readers.filter((c) => c.events.map((e) => e.seq).join(',') !== ref)
  checks.ok(`every reader got all ${live.events.length} events, in order`, live.events.length >= 1505 && bad.length === 0,
    `${bad.length} differ; e.g. ${bad[0]?.name} has ${bad[0]?.events.length}`)
  polling = false
  await poller
  const m1 = await metric()
  const rss = m1.text.split('\n').filter((l) => l.startsWith('process_resident_memory_bytes{role="fanout"')).map((l) => Number(l.split(' ').pop()))
  const held = Baton.sum(await baton.status(), 'fanout', 'counters', 'budget_held') - held0
  console.log(`# rss of the fanouts: ${rss.map((b) => (b / 1048576).toFixed(1) + ' MiB').join(', ')}; max queued ${(maxQueued / 1048576).toFixed(2)} MiB; budget_held +${held}`)
  checks.ok('the budget engaged (budget_held counted)', held > 0, `+${held}`)
  checks.ok('queued bytes per fanout stayed within max(budget, consumers x minimum share) + one event each', over.length === 0,
    JSON.stringify(over.slice(0, 3)))
  // ASan keeps freed memory in quarantine (up to 256 MiB by default): allowed for on top
  const rssBound = (200 + (process.env.ASAN_OPTIONS ? 256 : 0)) * 1048576
  checks.ok(`fanout RSS under ${rssBound >> 20} MiB`, rss.length === 2 && rss.every((b) => b < rssBound), JSON.stringify(rss))
  for (const p of stuck) p.kill('SIGKILL')
}

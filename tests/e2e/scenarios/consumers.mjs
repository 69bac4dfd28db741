// NAME
//   consumers.mjs - 200 consumers, 50 of which never read: the budget holds, readers get everything.
// DESCRIPTION
//   RELAY_CONSUMER_BUFFER_MB=4 per fanout. 150 reading consumers and
//   50 that stop reading right after the handshake (their socket is paused); 300 commits are written.
//   Checks: every reader receives the same, complete seq list as a reference consumer; each fanout's
//   queued_bytes stays within its budget plus one share per consumer (polled throughout; the fanouts'
//   RSS is printed, and must stay under 200 MiB). The read deadline and the per-IP limit are not
//   exercised here.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; `# rss` lines with the fanouts' resident sizes.

import { WebSocket } from 'ws'
import { sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { relayWithPdses } from '../lib/setup.mjs'

export const name = 'consumers'

const BUDGET_MB = 4

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, {
    extraEnv: { RELAY_CONSUMER_BUFFER_MB: String(BUDGET_MB), RELAY_MAX_CONNS_PER_IP: '1000' },
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
  for (let i = 0; i < 50; i++) {
    const ws = new WebSocket(baton.wsUrl)
    await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej) })
    ws._socket.pause() // never reads again
    ctx.cleanup.push(() => ws.terminate())
    stuck.push(ws)
  }
  const accts = []
  for (let i = 0; i < 5; i++) accts.push(await pds.createAccount())
  let maxQueued = 0
  let polling = true
  const metric = async () => {
    const t = await (await fetch(baton.metricsUrl)).text()
    const get = (n) => t.split('\n').filter((l) => l.startsWith(n + '{')).map((l) => Number(l.split(' ').pop()))
    const rss = t.split('\n').filter((l) => l.startsWith('process_resident_memory_bytes{role="fanout"')).map((l) => Number(l.split(' ').pop()))
    return { queued: get('baton_queued_bytes'), rss }
  }
  const poller = (async () => {
    while (polling) {
      const m = await metric().catch(() => null)
      if (m) for (const q of m.queued) maxQueued = Math.max(maxQueued, q)
      await sleep(300)
    }
  })()
  for (let r = 0; r < 60; r++) for (const a of accts) await pds.write(a, 3)
  await pds.idle()
  const want = 5 + 300 // the accounts' first commits and the writes
  await live.waitFor((c) => c.events.length >= want, 60000, 'reference').catch(() => {})
  const ref = live.events.map((e) => e.seq).join(',')
  const end = Date.now() + 60000
  while (Date.now() < end && readers.some((c) => c.events.length < live.events.length)) await sleep(500)
  const bad = readers.filter((c) => c.events.map((e) => e.seq).join(',') !== ref)
  checks.ok(`every reader got all ${live.events.length} events, in order`, live.events.length >= want && bad.length === 0,
    `${bad.length} differ; e.g. ${bad[0]?.name} has ${bad[0]?.events.length}`)
  const m1 = await metric()
  console.log(`# rss of the fanouts: ${m1.rss.map((b) => (b / 1048576).toFixed(1) + ' MiB').join(', ')}; max queued ${(maxQueued / 1048576).toFixed(2)} MiB`)
  const bound = BUDGET_MB * 1048576 + 200 * 64 * 1024
  checks.ok('queued bytes per fanout stayed within the budget (+ one minimum share each)', maxQueued <= bound, `${maxQueued} > ${bound}`)
  checks.ok('fanout RSS under 200 MiB', m1.rss.length === 2 && m1.rss.every((b) => b < 200 * 1048576), JSON.stringify(m1.rss))
  polling = false
  await poller
}

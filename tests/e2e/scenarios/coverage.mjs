// NAME
//   coverage.mjs - /_health turns "degraded" when half the hosts go silent, and recovers.
// DESCRIPTION
//   Six PDS simulators, one account each, written every 300 ms, with RELAY_COVERAGE_WINDOW=4,
//   RELAY_COVERAGE_MIN_PERCENT=75 and a short reconnect backoff. /_health is 200 "ok" while all
//   deliver; three simulators are stopped: /_health becomes 200 {"status":"degraded"} with a
//   reason naming the share and a silent host, /metrics says baton_coverage_ratio 0.5 and
//   baton_degraded 1, and the stopped hosts' last-event age grows. The three restart on their
//   ports and write again: /_health is "ok" again. Freezing the store (SIGSTOP) still gives
//   503, not degraded: a stopped pipeline is unhealthy.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import fs from 'node:fs'
import { sleep } from '../lib/pds.mjs'
import { relayWithPdses } from '../lib/setup.mjs'

export const name = 'coverage'

async function until(what, fn, timeoutMs) {
  const end = Date.now() + timeoutMs
  let last
  while (Date.now() < end) {
    last = await fn()
    if (last?.ok) return last
    await sleep(250)
  }
  return last ?? { ok: false, what }
}

export async function run(checks, ctx) {
  const names = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6']
  const { pdses, baton } = await relayWithPdses(checks, ctx, {
    names,
    live: false,
    extraEnv: {
      RELAY_COVERAGE_WINDOW: '4',
      RELAY_COVERAGE_MIN_PERCENT: '75',
      RELAY_RECONNECT_MAX: '2',
      RELAY_HEARTBEAT_TIMEOUT: '4',
    },
  })
  const accts = []
  for (const p of pdses) accts.push({ pds: p, acct: await p.createAccount() })
  const stopped = new Set()
  let stop = false
  const writer = (async () => {
    while (!stop) {
      for (const { pds, acct } of accts) if (!stopped.has(pds)) await pds.write(acct).catch(() => {})
      await sleep(300)
    }
  })()
  ctx.cleanup.push(async () => {
    stop = true
    await writer
  })
  const health = () => baton.health()
  const metric = async (name) => {
    const t = await (await fetch(baton.metricsUrl)).text()
    const line = t.split('\n').find((l) => l.startsWith(name + ' '))
    return line ? Number(line.split(' ')[1]) : NaN
  }

  const h0 = await until('ok', async () => {
    const h = await health()
    return { ok: h.status === 200 && h.body?.status === 'ok', h }
  }, 20000)
  checks.ok('all hosts delivering: /_health 200 ok', h0.ok, JSON.stringify(h0.h))
  checks.ok('coverage ratio 1', (await metric('baton_coverage_ratio')) === 1)

  const half = pdses.slice(0, 3)
  const ports = half.map((p) => p.port)
  for (const p of half) {
    stopped.add(p)
    await p.stop()
  }
  const d = await until('degraded', async () => {
    const h = await health()
    return { ok: h.status === 200 && h.body?.status === 'degraded', h }
  }, 30000)
  checks.ok('half the hosts silent: /_health 200 degraded', d.ok, JSON.stringify(d.h))
  const reason = d.h?.body?.reason || ''
  checks.ok('the reason names the share and a silent host', /3 of 6 active hosts/.test(reason) && half.some((p) => reason.includes(p.host)), reason)
  checks.ok('baton_degraded 1, baton_coverage_ratio 0.5', (await metric('baton_degraded')) === 1 && (await metric('baton_coverage_ratio')) === 0.5)
  const t = await (await fetch(baton.metricsUrl)).text()
  const age = (host) => Number((t.split('\n').find((l) => l.startsWith(`baton_host_last_event_age_seconds{host="${host}"}`)) || ' NaN').split(' ').pop())
  checks.ok('a stopped host shows a last-event age over the window', age(half[0].host) >= 4, `${age(half[0].host)}`)
  checks.ok('a running host shows a young last event', age(pdses[5].host) < 4, `${age(pdses[5].host)}`)

  for (let i = 0; i < half.length; i++) {
    await half[i].start(ports[i])
    stopped.delete(half[i])
  }
  const r = await until('recovered', async () => {
    const h = await health()
    return { ok: h.status === 200 && h.body?.status === 'ok', h }
  }, 40000)
  checks.ok('hosts back: /_health 200 ok again', r.ok, JSON.stringify(r.h))

  // a stopped pipeline is 503, not degraded
  const st = await baton.status()
  const store = (st.stages || []).find((s) => s.role === 'store')
  if (store?.pid) {
    for (const p of pdses) stopped.add(p) // nothing flows: coverage falls too
    process.kill(store.pid, 'SIGSTOP')
    try {
      const u = await until('503', async () => {
        const h = await health()
        return { ok: h.status === 503, h }
      }, 15000)
      checks.ok('a frozen store: /_health 503 unhealthy (not degraded)', u.ok && u.h.body?.status === 'unhealthy', JSON.stringify(u.h))
    } finally {
      if (fs.existsSync(`/proc/${store.pid}`)) process.kill(store.pid, 'SIGCONT')
    }
  } else {
    checks.ok('store pid known', false, JSON.stringify(st))
  }
  stop = true
  await writer
}

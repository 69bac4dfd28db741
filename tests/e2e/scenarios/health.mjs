// NAME
//   health.mjs - /_health is honest when a stage hangs (lesson 10).
// DESCRIPTION
//   The relay runs with RELAY_HEARTBEAT_TIMEOUT=3 while events flow from two
//   PDS simulators. /_health is 200; then verify 0 is frozen with SIGSTOP (it
//   stops heartbeating but its pid lives). Expected: /_health turns 503
//   within the heartbeat timeout (plus polling slack), the supervisor kills
//   the frozen process (it disappears; baton.log says it was silent) and
//   starts a new one (a new pid in batonctl status), /_health is 200 again,
//   and every valid event sent meanwhile arrives exactly once, in per-DID
//   order, nothing forged.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property. The frozen process is SIGCONT'ed
//   and SIGKILLed at cleanup if the supervisor never did it.

import fs from 'node:fs'
import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'health'

const HB_S = 3

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pdses = [new PdsSim({ plc, name: 'pds1' }), new PdsSim({ plc, name: 'pds2' })]
  for (const p of pdses) await p.start()
  ctx.cleanup.push(() => plc.stop(), ...pdses.map((p) => () => p.stop()))

  const baton = new Baton({
    buildDir: ctx.buildDir,
    tmpDir: ctx.tmp,
    plcUrl: plc.url,
    extraEnv: { RELAY_HEARTBEAT_TIMEOUT: String(HB_S) },
  })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  for (const p of pdses) {
    const r = await baton.requestCrawl(p.host)
    if (r.status !== 200) throw new Error(`requestCrawl ${p.host}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  }
  for (const p of pdses) await p.waitSubscribers(1)
  const live = new Consumer(baton.wsUrl, { reconnect: true, name: 'live' })
  await live.start()
  ctx.cleanup.push(() => live.close())

  const accounts = await createAccounts(pdses, 4)
  let stop = false
  let driveErr = null
  const driving = drive(accounts, { ratePerSec: 40, shouldStop: () => stop }).catch((err) => {
    driveErr = err
  })

  let frozen = 0
  ctx.cleanup.push(() => {
    if (frozen && fs.existsSync(`/proc/${frozen}`)) {
      try {
        process.kill(frozen, 'SIGCONT')
        process.kill(frozen, 'SIGKILL')
      } catch {}
    }
  })
  try {
    await sleep(2000)
    const h0 = await baton.health()
    checks.ok('/_health is 200 while events flow', h0.status === 200, JSON.stringify(h0))

    const before = await baton.stage('verify', 0)
    if (!before?.pid) throw new Error(`no running verify 0: ${JSON.stringify(before)}`)
    frozen = before.pid
    process.kill(frozen, 'SIGSTOP')
    const t0 = Date.now()

    // Poll /_health and batonctl status until the stage is back and healthy.
    let first503 = null
    let reason503 = null
    let newPid = null
    let healthyAgainAt = null
    let restarts = null
    let polls = 0
    const end = t0 + 30000
    while (Date.now() < end) {
      const h = await baton.health(1000)
      const now = Date.now()
      if (h.status === 503 && first503 === null) {
        first503 = now - t0
        reason503 = h.body
      }
      if (polls++ % 8 === 0 || (first503 !== null && !newPid)) {
        const s = await baton.stage('verify', 0).catch(() => null)
        if (s?.pid && s.pid !== frozen && s.state === 'running') {
          newPid = s.pid
          restarts = s.restarts
        }
      }
      if (newPid && first503 !== null && h.status === 200) {
        healthyAgainAt = now - t0
        break
      }
      await sleep(10)
    }
    checks.ok(
      `/_health turns 503 within the heartbeat timeout (${HB_S} s) of a frozen verify`,
      first503 !== null && first503 <= HB_S * 1000 + 2000,
      first503 === null ? 'never 503 in 30 s' : `first 503 after ${first503} ms`,
    )
    checks.ok(
      '/_health 503 body names the problem',
      first503 !== null && typeof reason503 === 'object' && /verify/.test(String(reason503?.reason)),
      JSON.stringify(reason503),
    )
    checks.ok(
      'the supervisor restarted verify 0 (new pid in batonctl status)',
      newPid !== null && restarts >= 1,
      `old pid ${frozen}, new ${newPid}, restarts ${restarts}`,
    )
    await sleep(300)
    const gone = !fs.existsSync(`/proc/${frozen}`)
    const log = fs.existsSync(baton.logPath) ? fs.readFileSync(baton.logPath, 'utf8') : ''
    const logged = log.split('\n').some((l) => l.includes(`pid=${frozen}`) && /silent/.test(l))
    checks.ok('the frozen process was killed (gone) and the kill was logged', gone && logged, `gone=${gone} logged=${logged}`)
    checks.ok(
      '/_health is 200 again after the restart',
      healthyAgainAt !== null,
      healthyAgainAt === null ? 'not 200 within 30 s' : '',
    )
    if (healthyAgainAt !== null) console.log(`# health: 503 after ${first503} ms, 200 again after ${healthyAgainAt} ms`)
    await sleep(2000)
  } finally {
    stop = true
    await driving
  }
  for (const p of pdses) await p.idle()
  if (driveErr) throw driveErr

  const valid = validRepoEvents(pdses)
  await live.waitFor((c) => hasAll(c, valid), 30000, 'every valid event').catch(() => {})
  await sleep(1000)
  checks.none('live: frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  checks.none(
    `live: ${valid.length} valid events (sent across the freeze) exactly once, per-DID order, no forged`,
    compareDelivery(live, valid, forgedEvents(pdses)),
  )
  await checkDrops(checks, baton, '', plantedFromSims(pdses))
  const h = await baton.health()
  checks.ok('/_health is 200 at the end', h.status === 200, JSON.stringify(h))
}

// NAME
//   setup.mjs - the common start of a scenario: PLC, PDS simulators, relay, crawl, consumer.
// DESCRIPTION
//   relayWithPdses(checks, ctx, opts) starts a fake PLC and one PDS simulator per name, a relay
//   (opts.extraEnv on top of the test environment), requestCrawls every simulator (checked),
//   waits until the relay is subscribed to each, and (unless opts.live === false) connects a live
//   consumer. Everything is registered in ctx.cleanup.

import { FakePlc } from './plc.mjs'
import { PdsSim } from './pds.mjs'
import { Consumer } from './consumer.mjs'
import { Baton } from './baton.mjs'

export async function relayWithPdses(checks, ctx, { names = ['pds'], extraEnv = {}, live = true } = {}) {
  const plc = new FakePlc()
  await plc.start()
  ctx.cleanup.push(() => plc.stop())
  const pdses = []
  for (const name of names) {
    const p = new PdsSim({ plc, name })
    await p.start()
    ctx.cleanup.push(() => p.stop())
    pdses.push(p)
  }
  const baton = new Baton({ buildDir: ctx.buildDir, tmpDir: ctx.tmp, plcUrl: plc.url, extraEnv })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  for (const p of pdses) {
    const r = await baton.requestCrawl(p.host)
    checks.ok(`requestCrawl ${p.name} accepted`, r.status === 200, `HTTP ${r.status} ${JSON.stringify(r.body)}`)
    await p.waitSubscribers(1)
  }
  let consumer = null
  if (live) {
    consumer = new Consumer(baton.wsUrl, { name: 'live' })
    await consumer.start()
    ctx.cleanup.push(() => consumer.close())
  }
  return { plc, pdses, baton, live: consumer }
}

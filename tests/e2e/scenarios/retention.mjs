// NAME
//   retention.mjs - the replay window, enforced while events flow (lesson 7).
// DESCRIPTION
//   The relay runs with RELAY_REPLAY_WINDOW=3s, so the store drops old events
//   every second while a PDS simulator keeps emitting. Checks: /_health
//   answers 200 every time it is polled during the run (retention never stalls
//   the pipeline or the health probe); a live consumer still receives every
//   valid event exactly once, in order; afterwards the oldest events are gone:
//   a cursor=1 consumer gets #info OutdatedCursor and then only retained
//   events, a cursor=0 consumer gets no #info and starts past seq 1, and both
//   end at the same head with seq strictly increasing.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'retention'

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, { extraEnv: { RELAY_REPLAY_WINDOW: '3s' } })
  const pds = pdses[0]

  let polling = true
  const bad = []
  let polls = 0
  const poller = (async () => {
    while (polling) {
      const h = await baton.health(2000)
      polls++
      if (h.status !== 200) bad.push(`${h.status} ${JSON.stringify(h.body)}`)
      await sleep(100)
    }
  })()
  const accounts = await createAccounts([pds], 4)
  await drive(accounts, { count: 500, ratePerSec: 70 }) // about 7 s: two windows and more
  await pds.idle()
  const valid = validRepoEvents([pds])
  await live.waitFor((c) => hasAll(c, valid), 20000, 'every valid event').catch(() => {})
  await sleep(2500) // one more retention pass after the last event
  polling = false
  await poller
  checks.ok(`/_health answered 200 to all ${polls} polls while retention ran`, bad.length === 0 && polls > 20, bad.slice(0, 3).join('; '))
  checks.none('live: every valid event exactly once, in order, nothing forged', compareDelivery(live, valid, forgedEvents([pds])))
  await checkDrops(checks, baton, '', plantedFromSims([pds]))

  const one = new Consumer(baton.wsUrl, { cursor: 1, name: 'cursor1' })
  const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
  await Promise.all([one.start(), zero.start()])
  ctx.cleanup.push(() => one.close(), () => zero.close())
  const head = live.lastSeq
  await Promise.allSettled([
    one.waitFor((c) => c.lastSeq === head, 10000, 'to head'),
    zero.waitFor((c) => c.lastSeq === head, 10000, 'to head'),
  ])
  checks.none('cursor=1 and cursor=0: frames valid, seq strictly increasing', [...one.errors, ...zero.errors])
  checks.ok(
    'cursor=1 (older than the window) gets #info OutdatedCursor',
    one.infos.some((i) => i.name === 'OutdatedCursor'),
    JSON.stringify(one.infos),
  )
  checks.ok('cursor=0 gets no #info', zero.infos.length === 0, JSON.stringify(zero.infos))
  const first = zero.events[0]?.seq
  checks.ok('old events were dropped from the window', first !== undefined && first > 1, `first replayed seq ${first} of ${head}`)
  // Retention keeps running between the two connects, so their first events may differ; each
  // must replay a gap-free run of seqs (relay seqs are dense) from where the window was to the head.
  const contiguous = (c) => c.events.every((e, i) => i === 0 || e.seq === c.events[i - 1].seq + 1)
  checks.ok(
    'cursor=1 and cursor=0 each replay a gap-free run from the window up to the head',
    one.lastSeq === head && zero.lastSeq === head && contiguous(one) && contiguous(zero) && one.events[0]?.seq > 1,
    `cursor1 ${one.events[0]?.seq}..${one.lastSeq}, cursor0 ${first}..${zero.lastSeq}, head ${head}`,
  )
  await one.close()
  await zero.close()
  await live.close()
}

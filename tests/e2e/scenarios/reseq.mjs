// NAME
//   reseq.mjs - an upstream whose sequencer restarts at 1, and the store killed at the
//   worst moments of its commit (RELAY_FAULT_STORE_EXIT), while events flow.
// DESCRIPTION
//   One PDS simulator, two live consumers that stay connected (no reconnect: a live
//   consumer must not skip anything). The store runs with
//   RELAY_FAULT_STORE_EXIT=in_publish_seq:12,after_write_seq:20,after_publish_seq:25,
//   after_reset_write,splice_fail_useq:1,before_write_drop: it _exit(9)s before the RocksDB
//   write of the first batch holding a drop (its drops are counted again by the next store,
//   and must be counted once: the counters are written with the batch), inside the broadcast publish of relay
//   seq 12 (after the ring's last_seq word, before its head: issue 5.3), after the RocksDB
//   write of seq 20's batch (before its publish), after the publish of seq 25 (before the
//   ring release), and after the RocksDB write of the batch that applies the chain reset, before
//   the ring release (issue 5.1); and the splice of upstream seq 1 fails (splice_fail_useq:1:
//   the first #identity is dropped as malformed), which must still move the host's cursor (issue 5.4).
//   Half-way the PDS resets its sequence (seq 1 again): the
//   relay's cursor is in its future, it gets FutureCursor and re-subscribes without a cursor,
//   in a new chain epoch; the new seqs overlap the old ones. At the end every valid event
//   reached each consumer exactly once, in per-DID order; cursor=0 replays the same
//   sequence; the host's committed cursor is the PDS's last seq (the new epoch's chain is
//   complete, nothing frozen); the store was restarted four times.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property. docs/chain.md explains the rules checked here.

import fs from 'node:fs'
import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll, tuples, sameTuples } from '../lib/harness.mjs'

export const name = 'reseq'

// The host's committed cursor (listHosts seq), once it equals want or after 10 s.
async function hostCursor(baton, host, want) {
  let seq = -1
  const end = Date.now() + 10000
  while (Date.now() < end) {
    const res = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.listHosts`).then((x) => x.json()).catch(() => null)
    seq = res?.hosts?.find((h) => h.hostname === host)?.seq ?? -1
    if (seq === want) break
    await sleep(300)
  }
  return seq
}

async function storeRestarts(baton) {
  const s = await baton.stage('store', 0).catch(() => null)
  return s ? s.restarts ?? 0 : -1
}

export async function run(checks, ctx) {
  const plc = new FakePlc()
  await plc.start()
  const pds = new PdsSim({ plc, name: 'pds1' })
  await pds.start()
  ctx.cleanup.push(() => plc.stop(), () => pds.stop())

  const baton = new Baton({
    buildDir: ctx.buildDir,
    tmpDir: ctx.tmp,
    plcUrl: plc.url,
    extraEnv: { RELAY_FAULT_STORE_EXIT: 'in_publish_seq:12,after_write_seq:20,after_publish_seq:25,after_reset_write,splice_fail_useq:1,before_write_drop' },
  })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  const r = await baton.requestCrawl(pds.host)
  if (r.status !== 200) throw new Error(`requestCrawl ${pds.host}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  await pds.waitSubscribers(1)

  const consumers = [0, 1].map((i) => new Consumer(baton.wsUrl, { name: `live${i}` }))
  await Promise.all(consumers.map((c) => c.start()))
  ctx.cleanup.push(...consumers.map((c) => () => c.close()))

  const accounts = await createAccounts([pds], 3)
  await drive(accounts, { count: 30, ratePerSec: 40 })
  await pds.idle()
  let valid = validRepoEvents([pds])
  await Promise.allSettled(consumers.map((c) => c.waitFor((x) => hasAll(x, valid), 15000, 'first half')))
  const oldSeq = pds.seq
  const mid = await hostCursor(baton, pds.host, oldSeq)
  checks.ok(`a failed splice does not freeze the host's cursor (${mid} = ${oldSeq})`, mid === oldSeq)

  // The upstream's sequence restarts; the relay must come back without a cursor.
  const conns = pds.subscribeCursors.length
  pds.resetSequence()
  await pds.waitSubscribers(1, 20000)
  const after = pds.subscribeCursors.slice(conns)
  checks.ok(
    'after the reset the relay asked its old cursor, then subscribed without one',
    after.length >= 2 && after[0] === String(oldSeq) && after[after.length - 1] === null,
    JSON.stringify(after),
  )
  await drive(accounts, { count: 50, ratePerSec: 40 })
  await pds.idle()
  checks.ok(`the new sequence overlaps the old one (old head ${oldSeq}, new head ${pds.seq})`, pds.seq > oldSeq)

  valid = validRepoEvents([pds])
  const forged = forgedEvents([pds])
  console.log(`# reseq: ${valid.length} valid and ${forged.length} forged events sent`)
  await Promise.allSettled(consumers.map((c) => c.waitFor((x) => hasAll(x, valid), 25000, 'every valid event')))
  await sleep(1500)
  // Which points fired, from the store's log.  in_publish_seq:12 is skipped when seq 12 shares
  // a batch with seq 20 (after_write_seq fires first, and a republish never trips in_publish):
  // big batches after slow restarts, as under ASan.  The other four always fire.
  const fired = new Set([...fs.readFileSync(baton.logPath, 'utf8').matchAll(/RELAY_FAULT_STORE_EXIT: exiting at (\w+)/g)].map((m) => m[1]))
  const always = ['before_write_drop', 'after_write', 'after_publish_seq']
  console.log(`# reseq: fault points fired: ${[...fired].join(', ')}`)
  checks.ok('the store died at before_write_drop, after_write (seq 20 and the reset) and after_publish_seq, and came back',
    always.every((f) => fired.has(f)) && (await storeRestarts(baton)) >= 4, `fired: ${[...fired].join(', ')}; restarts ${await storeRestarts(baton)}`)
  // Exact across the kills: each forged frame once, and the failed splice once (malformed).
  await checkDrops(checks, baton, '', plantedFromSims([pds], { malformed: 1 }))

  for (const c of consumers) {
    checks.ok(`${c.name} stayed connected`, c.disconnects === 0)
    checks.none(`${c.name}: frames canonical, lexicon-valid, seq strictly increasing`, c.errors)
    checks.none(`${c.name}: every valid event exactly once, per-DID order, no forged`, compareDelivery(c, valid, forged))
  }

  const head = Math.max(...consumers.map((c) => c.lastSeq ?? 0))
  const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
  await zero.start()
  ctx.cleanup.push(() => zero.close())
  await zero.waitFor((c) => (c.lastSeq ?? 0) >= head, 20000, 'replay to head').catch(() => {})
  checks.none('cursor=0 sees the same (seq, did, rev) sequence as live0', sameTuples(tuples(consumers[0]), tuples(zero), 'live0', 'cursor0'))

  // The committed cursor reaches the PDS's head: the new epoch's chain has no hole.
  const seq = await hostCursor(baton, pds.host, pds.seq)
  checks.ok(`the host's committed cursor is the PDS's head (${seq} = ${pds.seq})`, seq === pds.seq)
}

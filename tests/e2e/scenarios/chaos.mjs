// NAME
//   chaos.mjs - kill -9 a random stage every 2-5 s for a minute under load.
// DESCRIPTION
//   Three PDS simulators emit a continuous mix of valid commits, forged ones (bad signature,
//   rev going back), #identity and #account. Meanwhile a stage chosen at random (ingest, one of
//   the verifies, the store, one of the fanouts) is killed with SIGKILL every 2-5 s for at least
//   CHAOS_SECONDS (60) s: the schedule holds every role at least CHAOS_PER_ROLE (4) times,
//   store included, shuffled, and keeps drawing at random until the time is up. Before each kill
//   the previous victim must be running again (a new pid in batonctl status). Then the load
//   stops, the relay settles, and:
//   - each live consumer (reconnecting with cursor=<last seq> whenever a dead fanout drops it)
//     and a final cursor=0 replay received every valid event exactly once, per-DID in send
//     order, seq strictly increasing, canonical frames, nothing forged;
//   - the live consumers and the replay agree on the (seq, did, rev) sequence;
//   - the relay's drop counters equal what was planted (duplicates from re-delivery are free);
//   - every stage restart is one of ours (restarts = kills), and /_health is 200.
//   CHAOS_RATE (60) is the load in events per second over the three sims.
//   The kill schedule comes from a seeded PRNG: the seed is printed, CHAOS_SEED=<n> replays the
//   same victims and intervals (the load itself is random).
// DIAGNOSTICS
//   `# chaos: seed N`, one `#` line per kill, then one ok/not ok per property.

import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll, tuples, sameTuples, relayLinesFor } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'chaos'

const K = 2 // verifies
const N = 2 // fanouts
const SECONDS = Number(process.env.CHAOS_SECONDS || 60)
const PER_ROLE = Number(process.env.CHAOS_PER_ROLE || 4)

// mulberry32: a small seeded PRNG, [0, 1).
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function victim(rand, role) {
  if (role === 'verify') return ['verify', Math.floor(rand() * K)]
  if (role === 'fanout') return ['fanout', Math.floor(rand() * N)]
  return [role, 0]
}

export async function run(checks, ctx) {
  const seed = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : Math.floor(Math.random() * 2 ** 31)
  console.log(`# chaos: seed ${seed} (CHAOS_SEED=${seed} replays the kill schedule)`)
  const rand = prng(seed)
  const roles = ['ingest', 'verify', 'store', 'fanout']
  const plan = []
  for (const r of roles) for (let i = 0; i < PER_ROLE; i++) plan.push(r)
  for (let i = plan.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    ;[plan[i], plan[j]] = [plan[j], plan[i]]
  }

  const plc = new FakePlc()
  await plc.start()
  const pdses = [1, 2, 3].map((i) => new PdsSim({ plc, name: `pds${i}` }))
  for (const p of pdses) await p.start()
  ctx.cleanup.push(() => plc.stop(), ...pdses.map((p) => () => p.stop()))
  const baton = new Baton({ buildDir: ctx.buildDir, tmpDir: ctx.tmp, plcUrl: plc.url, verifyProcs: K, fanoutProcs: N })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  for (const p of pdses) {
    const r = await baton.requestCrawl(p.host)
    if (r.status !== 200) throw new Error(`requestCrawl ${p.host}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  }
  for (const p of pdses) await p.waitSubscribers(1)
  const consumers = [0, 1, 2].map((i) => new Consumer(baton.wsUrl, { reconnect: true, name: `live${i}` }))
  await Promise.all(consumers.map((c) => c.start()))
  ctx.cleanup.push(...consumers.map((c) => () => c.close()))

  const accounts = await createAccounts(pdses, 3)
  let stop = false
  let driveErr = null
  const driving = drive(accounts, { ratePerSec: Number(process.env.CHAOS_RATE || 60), shouldStop: () => stop }).catch((err) => {
    driveErr = err
  })

  const kills = []
  const notBack = []
  const t0 = Date.now()
  try {
    await sleep(1500)
    for (let k = 0; plan.length > 0 || Date.now() - t0 < SECONDS * 1000; k++) {
      const role = plan.length > 0 ? plan.shift() : roles[Math.floor(rand() * roles.length)]
      const [r, idx] = victim(rand, role)
      const interval = 2000 + Math.floor(rand() * 3000)
      const tk = Date.now()
      let oldPid
      try {
        oldPid = await baton.killStage(r, idx)
      } catch (err) {
        notBack.push(`kill ${k} ${r} ${idx}: ${err.message}`)
        await sleep(1000)
        continue
      }
      kills.push(`${r}${idx}`)
      let newPid = null
      try {
        newPid = await baton.waitRestarted(r, idx, oldPid, 20000)
      } catch (err) {
        notBack.push(`${r} ${idx} after kill ${k}: ${err.message}`)
      }
      console.log(`# chaos: kill ${k} at ${((tk - t0) / 1000).toFixed(1)} s: ${r} ${idx} pid ${oldPid} -> ${newPid}; next in ${interval} ms`)
      const wait = tk + interval - Date.now()
      if (wait > 0) await sleep(wait)
    }
  } finally {
    stop = true
    await driving
  }
  for (const p of pdses) await p.idle()
  if (driveErr) throw driveErr
  const secs = (Date.now() - t0) / 1000
  const perRole = Object.fromEntries(roles.map((r) => [r, kills.filter((k) => k.startsWith(r)).length]))
  console.log(`# chaos: ${kills.length} kills in ${secs.toFixed(0)} s: ${JSON.stringify(perRole)}`)
  checks.none('every killed stage came back (a new running pid)', notBack)
  checks.ok(
    `at least ${SECONDS} s of kills, every role at least ${PER_ROLE} times`,
    secs >= SECONDS && roles.every((r) => perRole[r] >= PER_ROLE),
    `${secs.toFixed(0)} s, ${JSON.stringify(perRole)}`,
  )

  const valid = validRepoEvents(pdses)
  const forged = forgedEvents(pdses)
  console.log(`# chaos: ${valid.length} valid and ${forged.length} forged events sent`)
  await Promise.allSettled(consumers.map((c) => c.waitFor((x) => hasAll(x, valid), 40000, 'every valid event')))
  await sleep(1500)
  console.log(`# chaos: consumer reconnects: ${consumers.map((c) => c.disconnects).join(', ')}`)
  const h = await baton.waitHealthy(15000).then(() => null, (err) => err.message)
  checks.ok('/_health is 200 after the chaos', h === null, h ?? '')

  for (const c of consumers) {
    checks.none(`${c.name}: frames canonical, lexicon-valid, seq strictly increasing`, c.errors)
    const problems = compareDelivery(c, valid, forged)
    checks.none(`${c.name}: every valid event exactly once, per-DID order, no forged`, problems)
    for (const l of relayLinesFor(baton.logPath, problems, 8)) console.log(`#   relay: ${l}`)
  }
  const st = await checkDrops(checks, baton, '', plantedFromSims(pdses))
  const restarts = {}
  for (const s of st?.stages || []) restarts[`${s.role}${s.index}`] = Number(s.restarts || 0)
  const killed = {}
  for (const k of kills) killed[k] = (killed[k] || 0) + 1
  const extra = Object.entries(restarts).filter(([k, n]) => n !== (killed[k] || 0)).map(([k, n]) => `${k}: ${n} restarts, ${killed[k] || 0} kills`)
  checks.none('no stage restarted but the killed ones (restarts = kills per stage)', extra)

  const head = Math.max(...consumers.map((c) => c.lastSeq ?? 0))
  const zero = new Consumer(baton.wsUrl, { cursor: 0, name: 'cursor0' })
  await zero.start()
  ctx.cleanup.push(() => zero.close())
  await zero.waitFor((c) => (c.lastSeq ?? 0) >= head, 30000, 'replay to head').catch(() => {})
  checks.none('cursor=0: frames canonical, lexicon-valid, seq strictly increasing', zero.errors)
  checks.none('cursor=0: every valid event exactly once, per-DID order, no forged', compareDelivery(zero, valid, forged))
  const ref = tuples(zero)
  for (const c of consumers) checks.none(`cursor=0 replays the (seq, did, rev) sequence ${c.name} saw live`, sameTuples(tuples(c), ref, c.name, 'cursor0'))
  await zero.close()
}

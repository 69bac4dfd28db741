// NAME
//   chain.mjs - a baton serving another baton's firehose (RELAY_UPSTREAM_RELAY): fanout past one machine.
// DESCRIPTION
//   Relay A crawls a PDS simulator; relay B has RELAY_UPSTREAM_RELAY=localhost:<A's port> and no
//   PDS of its own. A consumer of B (reconnecting with its cursor) must get every valid event
//   A delivers, once, in A's order, across a restart of B (events written while B is down are
//   caught up from A with B's stored cursor), with B's own seqs strictly increasing. B refuses
//   requestCrawl, and its getRepoStatus/getLatestCommit answer from what A sent.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import path from 'node:path'
import { Consumer } from '../lib/consumer.mjs'
import { Baton, sleep } from '../lib/baton.mjs'
import { relayWithPdses } from '../lib/setup.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { validRepoEvents, hasAll } from '../lib/harness.mjs'
import fs from 'node:fs'

export const name = 'chain'

export async function run(checks, ctx) {
  const { pdses, baton: A, live: atA } = await relayWithPdses(checks, ctx)
  atA.keepBodies = false
  const bTmp = path.join(ctx.tmp, 'b')
  fs.mkdirSync(bTmp, { recursive: true })
  const B = new Baton({ buildDir: ctx.buildDir, tmpDir: bTmp, plcUrl: 'http://127.0.0.1:9', extraEnv: { RELAY_UPSTREAM_RELAY: `localhost:${A.port}` } })
  ctx.cleanup.push(() => B.stop())
  await B.start()
  await B.waitHealthy()
  const atB = new Consumer(B.wsUrl, { name: 'atB', cursor: 0, reconnect: true })
  await atB.start()
  ctx.cleanup.push(() => atB.close())

  const crawl = await B.requestCrawl(pdses[0].host)
  checks.ok('B refuses requestCrawl (it serves A)', crawl.status === 400, `HTTP ${crawl.status} ${JSON.stringify(crawl.body)}`)

  const accounts = await createAccounts(pdses, 3)
  await drive(accounts, { count: 60, ratePerSec: 60 })
  await pdses[0].idle()
  const first = validRepoEvents(pdses)
  await atB.waitFor((c) => hasAll(c, first), 20000, 'first part at B').catch(() => {})
  checks.ok('B delivers every valid event A got', hasAll(atB, first))

  const stopped = await B.stop()
  checks.ok('B stops cleanly', stopped.clean, JSON.stringify(stopped))
  await drive(accounts, { count: 60, ratePerSec: 60 })
  await pdses[0].idle()
  await B.start()
  await B.waitHealthy()
  const all = validRepoEvents(pdses)
  await atA.waitFor((c) => hasAll(c, all), 20000, 'all at A').catch(() => {})
  await atB.waitFor((c) => hasAll(c, all), 30000, 'all at B').catch(() => {})
  await sleep(1000)
  checks.ok('after B restarts, the events written meanwhile arrive too', hasAll(atB, all))
  // Once each, in A's order per DID (B partitions by DID like any relay: across DIDs the
  // interleaving may differ). #identity/#account repeat: number each key's occurrences.
  const keyed = (events) => {
    const seen = new Map()
    return events.map((e) => {
      const k = `${e.t} ${e.did} ${e.commit ?? ''} ${e.rev ?? ''}`
      const n = (seen.get(k) || 0) + 1
      seen.set(k, n)
      return { did: e.did, k: `${k} #${n}` }
    })
  }
  const aK = keyed(atA.events)
  const bK = keyed(atB.events)
  const aSet = new Set(aK.map((x) => x.k))
  const extra = bK.filter((x) => !aSet.has(x.k))
  checks.ok('B delivered nothing A did not, nothing twice', extra.length === 0, JSON.stringify(extra.slice(0, 3)))
  const perDid = (ks) => {
    const m = new Map()
    for (const x of ks) m.set(x.did, [...(m.get(x.did) || []), x.k])
    return m
  }
  const aD = perDid(aK)
  const bD = perDid(bK)
  const differ = [...aD.keys()].filter((d) => JSON.stringify(aD.get(d)) !== JSON.stringify(bD.get(d) || []))
  checks.ok('B delivered every DID\'s events exactly as A did, in A\'s order', differ.length === 0,
    differ.slice(0, 2).map((d) => `${d}: A ${aD.get(d).length} B ${(bD.get(d) || []).length}`).join('; '))
  checks.none('B\'s frames valid, its seqs strictly increasing', atB.errors)
  checks.ok('B\'s consumer reconnected across the restart', atB.connects >= 2, `connects ${atB.connects}`)
  const did = accounts[0].acct.did
  const [ra, rb] = await Promise.all([A, B].map(async (r) => (await fetch(`${r.httpUrl}/xrpc/com.atproto.sync.getLatestCommit?did=${did}`)).json()))
  checks.ok('B\'s getLatestCommit equals A\'s', ra.cid && ra.cid === rb.cid && ra.rev === rb.rev, `A ${JSON.stringify(ra)} B ${JSON.stringify(rb)}`)
  const st = await B.status()
  const dropped = Baton.sum(st, 'store', 'counters', 'dropped')
  checks.ok('B dropped nothing', dropped === 0, `dropped ${dropped} ${JSON.stringify(st.stages.find((s) => s.role === 'store')?.drops)}`)
}

// NAME
//   quarantine.mjs - a frame that crashes verify twice is quarantined, not crash-looped.
// DESCRIPTION
//   The relay runs with the fault-injection parameter RELAY_FAULT_CRASH_DID set
//   to one account's DID: verify aborts on any frame of it. One commit of that
//   account is sent among valid commits of other accounts. The verify process
//   that owns it dies, is restarted, dies again on the same frame, and its
//   third incarnation quarantines the frame (stored under data/quarantine,
//   counted as drops.quarantined) and goes on. Every other valid commit still
//   arrives exactly once, in order; the poison one never does.  Then the same again with
//   RELAY_FAULT_CRASH_DECODE=true: verify aborts inside decoding the frame, before anything of it
//   is known (the crash marker is set before decoding, so it is still caught).
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { FakePlc } from '../lib/plc.mjs'
import { PdsSim, sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { Baton } from '../lib/baton.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { checkDrops, plantedFromSims } from '../lib/drops.mjs'

export const name = 'quarantine'

export async function run(checks, ctx) {
  await phase(checks, ctx, false)
  // The same with the crash inside decoding (RELAY_FAULT_CRASH_DECODE): the crash marker is set
  // before the frame is decoded, so it is recognised and quarantined all the same.
  await phase(checks, ctx, true)
}

async function phase(checks0, ctx, inDecode) {
  const tag = inDecode ? 'in decoding: ' : ''
  const checks = { ok: (n, ...a) => checks0.ok(tag + n, ...a), none: (n, ...a) => checks0.none(tag + n, ...a) }
  const tmpDir = inDecode ? path.join(ctx.tmp, 'decode') : ctx.tmp
  fs.mkdirSync(tmpDir, { recursive: true })
  const plc = new FakePlc()
  await plc.start()
  const pds = new PdsSim({ plc, name: 'pds' })
  await pds.start()
  ctx.cleanup.push(() => plc.stop(), () => pds.stop())
  const poison = await pds.createAccount({ keyType: 'k256', quiet: true })
  const baton = new Baton({
    buildDir: ctx.buildDir,
    tmpDir,
    plcUrl: plc.url,
    extraEnv: { RELAY_FAULT_CRASH_DID: poison.did, ...(inDecode ? { RELAY_FAULT_CRASH_DECODE: 'true' } : {}) },
  })
  ctx.cleanup.push(() => baton.stop())
  await baton.start()
  await baton.waitHealthy()
  const r = await baton.requestCrawl(pds.host)
  checks.ok('requestCrawl accepted', r.status === 200, `HTTP ${r.status}`)
  await pds.waitSubscribers(1)
  const live = new Consumer(baton.wsUrl, { name: 'live' })
  await live.start()
  ctx.cleanup.push(() => live.close())

  const others = []
  for (let i = 0; i < 4; i++) others.push(await pds.createAccount({ keyType: i % 2 ? 'p256' : 'k256' }))
  for (const a of others) await pds.write(a)
  const bad = await pds.write(poison)
  for (let round = 0; round < 4; round++) for (const a of others) await pds.write(a)
  await pds.idle()

  const valid = validRepoEvents([pds]).filter((e) => e.did !== poison.did)
  await live.waitFor((c) => hasAll(c, valid), 30000, 'every other valid event').catch(() => {})
  await sleep(1000)
  checks.none('frames valid, seq strictly increasing', live.errors)
  checks.none('every other valid commit exactly once, in order', compareDelivery(live, valid, forgedEvents([pds])))
  checks.ok('the poison commit is never delivered', !live.events.some((e) => e.commit === bad.commit))
  const st = await baton.status()
  const q = Baton.sum(st, 'verify', 'drops', 'quarantined')
  checks.ok('it is counted as quarantined', q === 1, `drops.quarantined ${q}`)
  const restarts = (st.stages || []).filter((s) => s.role === 'verify').reduce((n, s) => n + Number(s.restarts || 0), 0)
  checks.ok('verify crashed on it exactly twice, then went on', restarts === 2, `verify restarts ${restarts}`)
  const qdir = path.join(tmpDir, 'data', 'quarantine')
  const files = fs.existsSync(qdir) ? fs.readdirSync(qdir) : []
  checks.ok('the frame is kept for inspection under data/quarantine', files.length === 1, JSON.stringify(files))
  // batonctl quarantine: list, show (what it decodes to), drop.
  const ctl = (...args) => new Promise((resolve) => execFile(path.join(ctx.buildDir, 'batonctl'), args, { env: baton.env(), timeout: 5000 },
    (err, stdout) => resolve({ code: err ? err.code ?? 1 : 0, out: stdout })))
  const ls = await ctl('quarantine', 'list', '--json')
  let listed = []
  try { listed = JSON.parse(ls.out) } catch {}
  checks.ok('batonctl quarantine list --json names it', ls.code === 0 && listed.length === 1 && listed[0].name === files[0], ls.out)
  const sh = await ctl('quarantine', 'show', files[0] ?? 'x.frame')
  let shown = {}
  try { shown = JSON.parse(sh.out) } catch {}
  checks.ok('batonctl quarantine show decodes it: #commit of the poison account', sh.code === 0 && shown.decodes === true &&
    shown.t === '#commit' && shown.did === bad.did, sh.out.slice(0, 300))
  const bogus = await ctl('quarantine', 'show', '../../etc/passwd')
  checks.ok('batonctl quarantine show refuses a path', bogus.code !== 0)
  const dr = await ctl('quarantine', 'drop', files[0] ?? 'x.frame')
  checks.ok('batonctl quarantine drop removes it', dr.code === 0 && fs.readdirSync(qdir).length === 0, dr.out)
  const h = await baton.health()
  checks.ok('/_health is 200 afterwards', h.status === 200, JSON.stringify(h.body))
  // The poison frame, once (its re-deliveries after the two crashes are duplicates).
  await checkDrops(checks, baton, '', plantedFromSims([pds], { quarantined: 1 }))
  await live.close()
  await baton.stop()
}

// NAME
//   harness.mjs - check reporting, temp dirs and comparisons for e2e scenarios.
// DESCRIPTION
//   Checks prints one TAP-like line per check (`ok - name` /
//   `not ok - name: reason`) and counts them; run.mjs prints the closing
//   `N passed, N failed` line. The comparison helpers implement the
//   end-to-end properties every scenario asserts on a consumer's events:
//   every valid commit exactly once, per-DID order as sent, nothing forged,
//   blocks byte for byte.
// DIAGNOSTICS
//   Reasons are cut to a few hundred characters so one bad scenario cannot
//   flood the output.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export class Checks {
  constructor(scenario) {
    this.scenario = scenario
    this.passed = 0
    this.failed = 0
  }

  // Records one check; returns cond.
  ok(name, cond, reason = '') {
    if (cond) {
      this.passed++
      console.log(`ok - ${this.scenario}: ${name}`)
    } else {
      this.failed++
      const r = String(reason).replace(/\s+/g, ' ').slice(0, 400)
      console.log(`not ok - ${this.scenario}: ${name}${r ? ': ' + r : ''}`)
    }
    return cond
  }

  // Records a check from a list of problems (passes when it is empty).
  none(name, problems) {
    const n = problems.length
    return this.ok(name, n === 0, n ? `${n} problem(s): ${problems.slice(0, 5).join('; ')}` : '')
  }
}

// Creates a fresh temp dir for a scenario.
export function makeTmp(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `baton-e2e-${name}-`))
}

// Every event a PDS sim sent that a relay must forward (#commit/#sync).
export function validRepoEvents(pdses) {
  return pdses.flatMap((p) => p.sent.filter((e) => e.valid && (e.t === '#commit' || e.t === '#sync')))
}

export function forgedEvents(pdses) {
  return pdses.flatMap((p) => p.sent.filter((e) => !e.valid))
}

// Identity of a repo event: #commit by (did, rev, commit cid), #sync by (did, rev).
const key = (e) => (e.t === '#commit' ? `${e.t} ${e.did} ${e.rev} ${e.commit}` : `${e.t} ${e.did} ${e.rev}`)

// Problems with a consumer's received events against what the sims sent:
// each valid #commit/#sync exactly once (blocks byte for byte), nothing
// forged, per-DID order = send order. opts.afterSeq: only events with relay
// seq > afterSeq are expected to be present (for a mid-stream cursor), in
// which case "expected" = the valid events that the reference consumer saw
// after that seq.
export function compareDelivery(consumer, valid, forged) {
  const problems = []
  const got = new Map()
  for (const e of consumer.events) {
    if (e.t !== '#commit' && e.t !== '#sync') continue
    const k = key(e)
    got.set(k, (got.get(k) || 0) + 1)
  }
  // A forgery can be byte-identical to a valid commit (a rev-back right after an empty genesis,
  // signed deterministically with K-256): that is a re-send of the valid commit, whose first
  // copy must be delivered; only forgeries distinct from every valid commit count.
  const validCids = new Set(valid.filter((e) => e.commit).map((e) => e.commit))
  const forgedCommits = new Map(forged.filter((e) => e.commit && !validCids.has(e.commit)).map((e) => [e.commit, e]))
  let missing = 0
  let dup = 0
  let badBlocks = 0
  const byKey = new Map()
  for (const e of consumer.events) byKey.set(key(e), e)
  for (const e of valid) {
    const n = got.get(key(e)) || 0
    if (n === 0) {
      missing++
      if (missing <= 3) problems.push(`missing ${e.t} ${e.did} rev ${e.rev}`)
    } else if (n > 1) {
      dup++
      if (dup <= 3) problems.push(`${n} copies of ${e.t} ${e.did} rev ${e.rev}`)
    }
    const r = byKey.get(key(e))
    if (r && r.blocksHash !== e.blocksHash) {
      badBlocks++
      if (badBlocks <= 3) problems.push(`blocks differ for ${e.did} rev ${e.rev}`)
    }
  }
  if (missing > 3) problems.push(`... ${missing} missing in all`)
  if (dup > 3) problems.push(`... ${dup} duplicated in all`)
  const validKeys = new Set(valid.map(key))
  let extra = 0
  for (const e of consumer.events) {
    if (e.t !== '#commit' && e.t !== '#sync') continue
    if (e.commit && forgedCommits.has(e.commit)) {
      const f = forgedCommits.get(e.commit)
      problems.push(`forged commit delivered (${f.kind}, upstream seq ${f.seq}, relay seq ${e.seq}): ${e.did} rev ${e.rev}`)
    } else if (!validKeys.has(key(e))) {
      extra++
      if (extra <= 3) problems.push(`unexpected event ${key(e)}`)
    }
  }
  problems.push(...perDidOrder(consumer.events, valid))
  return problems
}

// Problems with per-DID order: for each DID, the received repo events must
// appear in the order the PDS sent them.
export function perDidOrder(events, valid) {
  const problems = []
  const sentIndex = new Map()
  valid.forEach((e, i) => sentIndex.set(key(e), i))
  const last = new Map()
  for (const e of events) {
    const i = sentIndex.get(key(e))
    if (i === undefined) continue
    const prev = last.get(e.did)
    if (prev !== undefined && i < prev) {
      problems.push(`out of order for ${e.did}: rev ${e.rev} after a later one`)
      if (problems.length >= 3) break
    }
    last.set(e.did, Math.max(prev ?? -1, i))
  }
  return problems
}

// Summary tuple list for comparing two consumers' streams.
export function tuples(consumer, afterSeq = -1) {
  return consumer.events.filter((e) => e.seq > afterSeq).map((e) => `${e.seq} ${e.t} ${e.did} ${e.rev ?? ''}`)
}

// Problems if two tuple lists differ (reports the first difference).
export function sameTuples(a, b, nameA, nameB) {
  const n = Math.max(a.length, b.length)
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) {
      return [`${nameA}[${i}]=${a[i] ?? '(end)'} but ${nameB}[${i}]=${b[i] ?? '(end)'} (${a.length} vs ${b.length} events)`]
    }
  }
  return []
}

// Calls fn with a deadline; rejects with `what` if it takes longer.
export async function withTimeout(promise, ms, what) {
  let timer
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, t])
  } finally {
    clearTimeout(timer)
  }
}

// True when the consumer has received every event in `valid` (by identity).
export function hasAll(consumer, valid) {
  const got = new Set(consumer.events.map(key))
  return valid.every((e) => got.has(key(e)))
}

// Problems if some DID that had #identity / #account events sent never got
// one delivered (the relay may coalesce them, so "at least one" per DID).
export function identityAccountDelivered(consumer, pdses) {
  const problems = []
  for (const t of ['#identity', '#account']) {
    const sentDids = new Set(pdses.flatMap((p) => p.sent.filter((e) => e.t === t).map((e) => e.did)))
    const gotDids = new Set(consumer.events.filter((e) => e.t === t).map((e) => e.did))
    for (const d of sentDids) if (!gotDids.has(d)) problems.push(`no ${t} for ${d}`)
  }
  return problems
}

// The relay log lines that mention any DID named in problems (e.g. "missing #commit <did> ..."):
// verify logs every drop with its reason, so a missing event explains itself.
export function relayLinesFor(logPath, problems, max = 20) {
  const dids = new Set()
  for (const p of problems) for (const m of String(p).matchAll(/did:[a-z]+:[A-Za-z0-9._%:-]+/g)) dids.add(m[0])
  if (!dids.size) return []
  let text = ''
  try {
    text = fs.readFileSync(logPath, 'utf8')
  } catch {
    return []
  }
  return text.split('\n').filter((l) => [...dids].some((d) => l.includes(d))).slice(0, max)
}

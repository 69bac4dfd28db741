// NAME
//   drops.mjs - the relay's drop counters against what a scenario planted.
// DESCRIPTION
//   Every frame that reaches a verify gets exactly one verdict, and the store counts each verdict
//   once (a re-delivered frame whose verdict it already has is counted as `duplicate` instead), so
//   the store's `drops` are the relay's decisions, one per frame; ingest counts what it drops
//   before the rings (`duplicate`: an upstream seq not after the cursor). verify's own counters
//   count again after a re-delivery (a killed store or ingest), so they are reported, not compared.
//
//   decided(st): the number of drop decisions so far (store verdicts + ingest drops, every
//   reason), the barrier a test waits on after sending a frame that must be dropped.
//   dropTable(st, role): { reason: n } for a role; decisions(st): store + ingest.
//   dropProblems(st, planted, { allow }): the problems if the decisions are not exactly `planted` ({ reason: n }, missing = 0), with
//   the reasons in `allow` (default ['duplicate']) free: duplicates after a kill are
//   re-deliveries, not losses. A valid event dropped for any reason shows up as a reason that
//   was not planted (or as one more than planted) and fails.
// DIAGNOSTICS
//   Problems name the reason, the counted and the planted number, and verify's counts.

export function dropTable(st, role) {
  const t = {}
  for (const s of st?.stages || []) {
    if (s.role !== role) continue
    for (const [k, v] of Object.entries(s.drops || {})) t[k] = (t[k] || 0) + Number(v)
  }
  return t
}

// Number of drop decisions the relay has made (store verdicts + ingest drops).
export function decided(st) {
  let n = 0
  for (const role of ['store', 'ingest']) for (const v of Object.values(dropTable(st, role))) n += v
  return n
}

// The relay's decisions: store verdicts plus what ingest drops before the rings.
export function decisions(st) {
  const t = dropTable(st, 'store')
  for (const [k, v] of Object.entries(dropTable(st, 'ingest'))) t[k] = (t[k] || 0) + v
  return t
}

export function dropProblems(st, planted, { allow = ['duplicate'] } = {}) {
  const problems = []
  const got = decisions(st)
  const verify = dropTable(st, 'verify')
  const reasons = new Set([...Object.keys(got), ...Object.keys(planted)])
  for (const r of reasons) {
    if (allow.includes(r) && !(r in planted)) continue
    const n = got[r] || 0
    const want = planted[r] || 0
    if (n !== want) problems.push(`drops.${r} = ${n}, planted ${want} (verify counted ${verify[r] || 0})`)
  }
  if (problems.length) problems.push(`store ${JSON.stringify(dropTable(st, 'store'))}; ingest ${JSON.stringify(dropTable(st, 'ingest'))}; verify ${JSON.stringify(verify)}`)
  return problems
}

// Polls batonctl status until pred(st) holds or timeoutMs passes; resolves to the last status.
export async function statusWhen(baton, pred, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs
  let st = null
  for (;;) {
    try {
      st = await baton.status()
      if (pred(st)) return st
    } catch {}
    if (Date.now() > end) return st
    await new Promise((r) => setTimeout(r, 200))
  }
}

// The planted count of a kind of forged frame in what the sims sent.
export function plantedCount(pdses, kind) {
  return pdses.reduce((n, p) => n + p.sent.filter((e) => !e.valid && e.kind === kind).length, 0)
}

// What the sims planted, as drop reasons: bad signatures, revs going back, bad inversions
// (lenient: inversions are passed on, so none), plus `extra` ({ reason: n }) for what a
// scenario plants itself.
export function plantedFromSims(pdses, extra = {}, { lenient = false } = {}) {
  const p = {
    bad_sig: plantedCount(pdses, 'badsig'),
    rev_old: plantedCount(pdses, 'revback'),
    bad_inversion: lenient ? 0 : plantedCount(pdses, 'badinv'),
    ...extra,
  }
  for (const k of Object.keys(p)) if (!p[k]) delete p[k]
  return p
}

// One check: once the store has decided as many drops as were planted (or after timeoutMs),
// its drop counters equal `planted` exactly; reasons in opts.allow may have any count.
// Resolves to the status used.
export async function checkDrops(checks, baton, label, planted, { allow = ['duplicate'], timeoutMs = 10000 } = {}) {
  const want = Object.entries(planted).reduce((n, [k, v]) => n + (allow.includes(k) ? 0 : v), 0)
  const counted = (st) => Object.entries(decisions(st)).reduce((n, [k, v]) => n + (allow.includes(k) ? 0 : v), 0)
  const st = await statusWhen(baton, (s) => counted(s) >= want, timeoutMs)
  checks.none(`${label}drop counters = what was planted ${JSON.stringify(planted)}`, dropProblems(st, planted, { allow }))
  return st
}

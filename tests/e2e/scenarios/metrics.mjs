// NAME
//   metrics.mjs - the metrics listener, HEAD, CORS and /admin/consumers/list.
// DESCRIPTION
//   A relay (2 verify, 2 fanout) with one PDS simulator and events flowing. Checks:
//   /metrics answers on RELAY_METRICS_LISTEN and not on the public port; every sample's family
//   has one # TYPE line; no family is emitted for a role that never writes it (consumers for
//   ingest, drops for fanout, a reason a stage cannot count); histograms have monotone
//   _bucket series ending in +Inf == _count, and _sum; the three histograms saw events; per-host
//   series, coverage and process_* series exist. HEAD on /, /_health, /xrpc/_health is 200
//   without a body; XRPC GETs and requestCrawl carry Access-Control-Allow-Origin: *; OPTIONS is
//   a CORS preflight. /admin/consumers/list needs the password and lists the consumers of both
//   fanouts (several connections, so SO_REUSEPORT spreads them) with address, user agent,
//   cursor, lag, bytes queued and since when.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import { sleep } from '../lib/pds.mjs'
import { Consumer } from '../lib/consumer.mjs'
import { relayWithPdses } from '../lib/setup.mjs'

export const name = 'metrics'

const PW = 'metrics-secret'

// Parses Prometheus text: { types: {family: type}, samples: [{name, labels, value}] , problems }
function parseProm(text) {
  const types = {}
  const samples = []
  const problems = []
  for (const line of text.split('\n')) {
    if (!line) continue
    if (line.startsWith('# TYPE ')) {
      const [, , fam, type] = line.split(' ')
      if (types[fam]) problems.push(`two TYPE lines for ${fam}`)
      types[fam] = type
      continue
    }
    if (line.startsWith('#')) continue
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/)
    if (!m) {
      problems.push(`bad line: ${line}`)
      continue
    }
    const labels = {}
    if (m[3]) for (const kv of m[3].matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2]
    samples.push({ name: m[1], labels, value: Number(m[4]) })
  }
  return { types, samples, problems }
}

function familyOf(name, types) {
  if (types[name]) return name
  for (const suf of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suf) && types[name.slice(0, -suf.length)] === 'histogram') return name.slice(0, -suf.length)
  }
  return null
}

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, { extraEnv: { RELAY_ADMIN_PASSWORD: PW } })
  const pds = pdses[0]
  const accts = []
  for (let i = 0; i < 3; i++) accts.push(await pds.createAccount({ keyType: i % 2 ? 'p256' : 'k256' }))
  for (let r = 0; r < 5; r++) for (const a of accts) await pds.write(a)
  await pds.idle()
  await live.waitFor((c) => c.events.length >= 15, 30000, 'events').catch(() => {})

  // more consumers, so both fanouts (SO_REUSEPORT) hold some
  const extra = []
  for (let i = 0; i < 6; i++) {
    const c = new Consumer(baton.wsUrl, { name: `c${i}`, cursor: i === 0 ? 0 : null })
    await c.start()
    ctx.cleanup.push(() => c.close())
    extra.push(c)
  }
  await sleep(500)

  // ---- metrics ----
  const pub = await fetch(`${baton.httpUrl}/metrics`)
  await pub.arrayBuffer()
  checks.ok('/metrics is not on the public port', pub.status === 404, `HTTP ${pub.status}`)
  const res = await fetch(baton.metricsUrl)
  const text = await res.text()
  checks.ok('/metrics answers on RELAY_METRICS_LISTEN', res.status === 200, `HTTP ${res.status}`)
  checks.ok('content type is Prometheus text', (res.headers.get('content-type') || '').startsWith('text/plain; version=0.0.4'))
  const { types, samples, problems } = parseProm(text)
  const untyped = [...new Set(samples.filter((s) => !familyOf(s.name, types)).map((s) => s.name))]
  checks.ok('every line parses, one TYPE per family', problems.length === 0, problems.slice(0, 5).join('; '))
  checks.ok('every sample has a # TYPE line', untyped.length === 0, untyped.join(', '))
  const badType = Object.entries(types).filter(([f, t]) => !['counter', 'gauge', 'histogram'].includes(t) || (t === 'counter' && !f.endsWith('_total')))
  checks.ok('types are counter (named _total), gauge or histogram', badType.length === 0, JSON.stringify(badType))
  const impossible = samples.filter(
    (s) =>
      (s.name === 'baton_consumers' && s.labels.role !== 'fanout') ||
      (s.name === 'baton_committed_total' && s.labels.role !== 'store') ||
      (s.name === 'baton_drops_total' && s.labels.role === 'fanout') ||
      (s.name === 'baton_drops_total' && s.labels.role === 'ingest' && s.labels.reason !== 'duplicate') ||
      (s.name === 'baton_drops_total' && s.labels.role === 'verify' && ['duplicate', 'stale_epoch', 'malformed', 'throttled'].includes(s.labels.reason)) ||
      (s.name === 'baton_bytes_in_total' && s.labels.role !== 'ingest'),
  )
  checks.ok('no impossible series (consumers of ingest, drops of fanout, ...)', impossible.length === 0, JSON.stringify(impossible.slice(0, 5)))
  const dropS = samples.filter((s) => s.name === 'baton_drops_total')
  const drops = dropS.length
  // the store counts every reason R; each verify all but the 4 it cannot see; ingest only duplicate
  const R = dropS.filter((s) => s.labels.role === 'store').length
  const K = new Set(dropS.filter((s) => s.labels.role === 'verify').map((s) => s.labels.index)).size
  const bound = 1 + K * (R - 4) + R
  checks.ok(`drop series bounded to what stages can count (was one per reason per stage: ${6 * R})`,
    drops > 0 && R > 0 && drops <= bound, `${drops} series, bound ${bound}`)
  checks.ok('baton_consumers for the fanouts', samples.filter((s) => s.name === 'baton_consumers' && s.labels.role === 'fanout').length === 2)

  const hists = Object.entries(types).filter(([, t]) => t === 'histogram').map(([f]) => f)
  for (const want of ['baton_emit_commit_seconds', 'baton_commit_send_seconds', 'baton_upstream_event_bytes'])
    checks.ok(`histogram ${want} exists`, hists.includes(want))
  const hprob = []
  for (const h of hists) {
    const series = {}
    for (const s of samples) {
      if (!s.name.startsWith(h + '_')) continue
      const { le, ...rest } = s.labels
      const key = JSON.stringify(rest)
      series[key] ??= { buckets: [], sum: null, count: null }
      if (s.name === h + '_bucket') series[key].buckets.push([le === '+Inf' ? Infinity : Number(le), s.value])
      if (s.name === h + '_sum') series[key].sum = s.value
      if (s.name === h + '_count') series[key].count = s.value
    }
    if (!Object.keys(series).length) hprob.push(`${h}: no series`)
    for (const [k, v] of Object.entries(series)) {
      let prevLe = -Infinity
      let prev = 0
      for (const [le, n] of v.buckets) {
        if (le <= prevLe) hprob.push(`${h}${k}: le not increasing`)
        if (n < prev) hprob.push(`${h}${k}: buckets not cumulative`)
        prevLe = le
        prev = n
      }
      const inf = v.buckets.find(([le]) => le === Infinity)
      if (!inf) hprob.push(`${h}${k}: no +Inf bucket`)
      else if (inf[1] !== v.count) hprob.push(`${h}${k}: +Inf ${inf[1]} != count ${v.count}`)
      if (v.sum === null || v.sum < 0) hprob.push(`${h}${k}: no _sum`)
    }
  }
  checks.ok('histograms: cumulative buckets, +Inf == _count, _sum', hprob.length === 0, hprob.slice(0, 5).join('; '))
  const count = (n, pred = () => true) => samples.filter((s) => s.name === n && pred(s)).reduce((a, s) => a + s.value, 0)
  checks.ok('emit->commit histogram counted the events', count('baton_emit_commit_seconds_count') >= 15, `${count('baton_emit_commit_seconds_count')}`)
  checks.ok('commit->send histogram counted live sends', count('baton_commit_send_seconds_count') >= 1, `${count('baton_commit_send_seconds_count')}`)
  checks.ok('event size histogram counted upstream frames', count('baton_upstream_event_bytes_count') >= 15)
  checks.ok('per-host series for the PDS', samples.some((s) => s.name === 'baton_host_events_total' && s.labels.host === pds.host && s.value >= 15),
    JSON.stringify(samples.filter((s) => s.name === 'baton_host_events_total')))
  checks.ok('per-host last event age', samples.some((s) => s.name === 'baton_host_last_event_age_seconds' && s.labels.host === pds.host))
  checks.ok('coverage ratio 1 with every host delivering', count('baton_coverage_ratio') === 1)
  checks.ok('process metrics for every stage', ['supervisor', 'ingest', 'verify', 'store', 'fanout'].every((r) =>
    ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_open_fds', 'process_start_time_seconds'].every((n) =>
      samples.some((s) => s.name === n && s.labels.role === r))))
  checks.ok('indigo alias relay_connected_inbound = 1', count('relay_connected_inbound') === 1)
  const mh = await fetch(baton.metricsUrl, { method: 'HEAD' })
  checks.ok('HEAD /metrics is 200', mh.status === 200)

  // ---- HEAD, CORS ----
  for (const p of ['/', '/_health', '/xrpc/_health']) {
    const r = await fetch(baton.httpUrl + p, { method: 'HEAD' })
    const body = await r.arrayBuffer()
    checks.ok(`HEAD ${p} is 200 without a body`, r.status === 200 && body.byteLength === 0, `HTTP ${r.status}, ${body.byteLength} bytes`)
  }
  const banner = await fetch(baton.httpUrl + '/')
  checks.ok('GET / banner', banner.status === 200 && (await banner.text()).includes('subscribeRepos'))
  const lh = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.listHosts`)
  await lh.arrayBuffer()
  checks.ok('XRPC GET has Access-Control-Allow-Origin: *', lh.status === 200 && lh.headers.get('access-control-allow-origin') === '*')
  const bad = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.getRepoStatus?did=nope`)
  await bad.arrayBuffer()
  checks.ok('XRPC GET error has CORS too', bad.headers.get('access-control-allow-origin') === '*', `HTTP ${bad.status}`)
  const rc = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.requestCrawl`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  await rc.arrayBuffer()
  checks.ok('POST requestCrawl has CORS', rc.headers.get('access-control-allow-origin') === '*', `HTTP ${rc.status}`)
  const pre = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.requestCrawl`, {
    method: 'OPTIONS',
    headers: { origin: 'https://example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
  })
  await pre.arrayBuffer()
  checks.ok('OPTIONS preflight 204 with allow-origin and methods', pre.status === 204 && pre.headers.get('access-control-allow-origin') === '*' &&
    (pre.headers.get('access-control-allow-methods') || '').includes('POST'), `HTTP ${pre.status}`)
  const adm = await fetch(`${baton.httpUrl}/admin/pds/list`)
  await adm.arrayBuffer()
  checks.ok('admin answers carry no CORS header', adm.headers.get('access-control-allow-origin') === null)

  // ---- consumers/list ----
  const url = `${baton.httpUrl}/admin/consumers/list`
  const noauth = await fetch(url)
  await noauth.arrayBuffer()
  checks.ok('consumers/list without credentials is 401', noauth.status === 401)
  const auth = { authorization: 'Basic ' + Buffer.from(`admin:${PW}`).toString('base64') }
  const cl = await fetch(url, { headers: auth })
  const body = await cl.json().catch(() => null)
  const list = body?.consumers || []
  checks.ok('consumers/list is 200 with every consumer of both fanouts', cl.status === 200 && list.length === 7 && body.missing.length === 0,
    `HTTP ${cl.status} ${JSON.stringify(body)?.slice(0, 300)}`)
  // SO_REUSEPORT spreads connections by a hash: all 7 may land on one fanout (1 run in 64). What
  // must hold: each fanout's entries in the list are as many as the consumers it counts itself.
  const stc = await baton.status()
  const per = {}
  for (const c of list) per[c.fanout] = (per[c.fanout] || 0) + 1
  const counted = {}
  for (const s of stc.stages || []) if (s.role === 'fanout') counted[s.index] = s.counters?.consumers ?? 0
  const same = Object.keys(counted).every((i) => (per[i] || 0) === counted[i])
  checks.ok('consumers of every fanout are listed (each fanout\'s count)', same && Object.keys(counted).length === 2,
    `list ${JSON.stringify(per)}, counted ${JSON.stringify(counted)}`)
  const fields = ['address', 'userAgent', 'cursor', 'seq', 'lag', 'bytesQueued', 'connectedAt']
  checks.ok('each entry has address, user agent, cursor, lag, bytes queued, since', list.every((c) => fields.every((f) => f in c)),
    JSON.stringify(list[0]))
  checks.ok('the cursor=0 consumer shows cursor 0', list.some((c) => c.cursor === 0))
  checks.ok('addresses are 127.0.0.1:port', list.every((c) => /^127\.0\.0\.1:\d+$/.test(c.address)))
}

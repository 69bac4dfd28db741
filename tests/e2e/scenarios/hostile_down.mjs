// NAME
//   hostile_down.mjs - hostile consumers never crash the fanout, grow its memory or starve others.
// DESCRIPTION
//   While a well-behaved PDS simulator streams commits to a well-behaved live consumer:
//   100 slowloris handshakes (a header byte a second), 2,000 idle TCP connections that never
//   send a byte, huge query strings, huge and too many headers, bad cursors and bad
//   parameters on subscribeRepos and the sync queries, and a consumer that completes the
//   WebSocket upgrade and never reads.
//   Checks: slowloris and idle connections are answered 408 and closed by the read deadline
//   (30 s), not held; huge requests get 431 (or 414) and bad parameters 400 InvalidRequest
//   (a future cursor: the FutureCursor error frame); no stage is restarted; no stage grows by
//   more than 64 MiB resident (printed per process); the live consumer gets every valid event;
//   the fanout counted every refused request (http_refused) and the never-reading consumer
//   stays bounded (its queue is capped; the fanout does not buffer the stream for it).
// DIAGNOSTICS
//   One `ok` / `not ok` line per property; `# rss ...` lines with the numbers.

import crypto from 'node:crypto'
import net from 'node:net'
import { relayWithPdses } from '../lib/setup.mjs'
import { createAccounts, drive } from '../lib/workload.mjs'
import { compareDelivery, validRepoEvents, forgedEvents, hasAll } from '../lib/harness.mjs'
import { Baton, sleep } from '../lib/baton.mjs'
import { until, stageRss, rssReport, restartProblems } from '../lib/hostile.mjs'

export const name = 'hostile_down'

const IDLE = Number(process.env.HOSTILE_IDLE_CONNS || 2000)
const SLOW = 100

// A raw connection that records what the server sent and when it closed.
function rawConn(port, onConnect) {
  const c = { sock: null, data: Buffer.alloc(0), closed: false, err: null, open: false }
  c.sock = net.connect(port, '127.0.0.1', () => {
    c.open = true
    onConnect?.(c)
  })
  c.sock.on('data', (d) => {
    if (c.data.length < 65536) c.data = Buffer.concat([c.data, d])
  })
  c.sock.on('error', (e) => {
    c.err = e.code
  })
  c.sock.on('close', () => {
    c.closed = true
  })
  return c
}

// One HTTP request on a fresh connection; resolves to { status, body } once the server closes
// or answers (status 0: closed without an answer).
function rawRequest(port, text, ms = 15000) {
  return new Promise((resolve) => {
    const c = rawConn(port, () => c.sock.write(text))
    const t = setTimeout(() => done(), ms)
    const done = () => {
      clearTimeout(t)
      c.sock.destroy()
      const s = c.data.toString('latin1')
      const m = s.match(/^HTTP\/1\.1 (\d{3})/)
      resolve({ status: m ? Number(m[1]) : 0, body: s.slice(s.indexOf('\r\n\r\n') + 4), err: c.err })
    }
    c.sock.on('close', done)
    c.sock.on('data', () => {
      const s = c.data.toString('latin1')
      const i = s.indexOf('\r\n\r\n')
      const m = s.match(/content-length: (\d+)/i)
      if (i >= 0 && (!m || c.data.length >= i + 4 + Number(m[1])) && !/^HTTP\/1\.1 101/.test(s)) done()
      else if (/^HTTP\/1\.1 101/.test(s) && c.data.length > i + 4) setTimeout(done, 300)
    })
  })
}

const wsReq = (q) =>
  `GET /xrpc/com.atproto.sync.subscribeRepos${q} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`
const get = (p, extra = '') => `GET ${p} HTTP/1.1\r\nHost: x\r\n${extra}Connection: close\r\n\r\n`

export async function run(checks, ctx) {
  const { pdses, baton, live } = await relayWithPdses(checks, ctx, { names: ['good'] })
  const accts = await createAccounts(pdses, 3)
  await live.waitFor((c) => hasAll(c, validRepoEvents(pdses)), 30000, 'the genesis events').catch(() => {})
  const port = baton.port
  const before = await baton.status()
  const rssBefore = await stageRss(baton)
  const paced = drive(accts, { count: 400, ratePerSec: 12 })

  // Slowloris: a request line and then a header byte a second, forever.
  const slow = []
  for (let i = 0; i < SLOW; i++) {
    const c = rawConn(port, () => c.sock.write('GET /xrpc/com.atproto.sync.subscribeRepos HTTP/1.1\r\nHost: x\r\nX-Slow: '))
    c.timer = setInterval(() => c.open && !c.closed && c.sock.write('a'), 1000)
    slow.push(c)
  }
  // Idle: connected, never a byte.
  const idle = []
  for (let i = 0; i < IDLE; i++) {
    idle.push(rawConn(port))
    if (i % 200 === 199) await sleep(50)
  }
  ctx.cleanup.push(() => {
    for (const c of [...slow, ...idle]) {
      clearInterval(c.timer)
      c.sock.destroy()
    }
  })
  const opened = await until(() => idle.filter((c) => c.open || c.closed).length === IDLE, 30000)
  checks.ok(`${IDLE} idle connections were accepted`, opened, `${idle.filter((c) => c.open).length} open, ${idle.filter((c) => c.err).length} errors`)
  const h1 = await baton.health(5000)
  checks.ok('/_health answers 200 with the idle and slowloris connections open', h1.status === 200, JSON.stringify(h1))

  // A consumer that completes the upgrade and never reads.
  const deaf = rawConn(port, () => {
    deaf.sock.write(wsReq(''))
    deaf.sock.pause()
  })
  ctx.cleanup.push(() => deaf.sock.destroy())

  // Huge and malformed requests: each answered, with the right status.
  const big = 'a'.repeat(100_000)
  const cases = [
    ['a 100 KB query string', get(`/xrpc/com.atproto.sync.listRepos?cursor=${big}`), [414, 431]],
    ['a 100 KB header', get('/xrpc/com.atproto.sync.listRepos', `X-Big: ${big}\r\n`), [431]],
    ['2,000 headers', get('/xrpc/com.atproto.sync.listRepos', Array.from({ length: 2000 }, (_, i) => `X-${i}: v\r\n`).join('')), [431]],
    ['subscribeRepos cursor=abc', wsReq('?cursor=abc'), [400]],
    ['subscribeRepos cursor=-1', wsReq('?cursor=-1'), [400]],
    ['subscribeRepos cursor=2^64', wsReq('?cursor=18446744073709551616'), [400]],
    ['subscribeRepos cursor=%00', wsReq('?cursor=%00'), [400]],
    ['subscribeRepos cursor=1e3', wsReq('?cursor=1e3'), [400]],
    ['subscribeRepos cursor of 100 digits', wsReq(`?cursor=${'9'.repeat(100)}`), [400]],
    ['listRepos limit=0', get('/xrpc/com.atproto.sync.listRepos?limit=0'), [400]],
    ['listRepos limit=abc', get('/xrpc/com.atproto.sync.listRepos?limit=abc'), [400]],
    ['listRepos cursor of 3,000 bytes', get(`/xrpc/com.atproto.sync.listRepos?cursor=${'d'.repeat(3000)}`), [400]],
    ['listHosts cursor=-5', get('/xrpc/com.atproto.sync.listHosts?cursor=-5'), [400]],
    ['getRepoStatus did=%ff%fe', get('/xrpc/com.atproto.sync.getRepoStatus?did=%ff%fe'), [400]],
    ['getLatestCommit did of 5,000 bytes', get(`/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:${'a'.repeat(5000)}`), [400]],
    ['getHostStatus without hostname', get('/xrpc/com.atproto.sync.getHostStatus'), [400]],
  ]
  let refusedHttp = 0
  for (const [what, text, want] of cases) {
    const r = await rawRequest(port, text)
    if (r.status >= 400 && r.status < 500) refusedHttp++
    const named = r.status !== 400 || /InvalidRequest/.test(r.body)
    checks.ok(`${what}: HTTP ${want.join(' or ')}${want[0] === 400 ? ' InvalidRequest' : ''}`, want.includes(r.status) && named, `HTTP ${r.status} ${r.body.slice(0, 120)} ${r.err ?? ''}`)
  }
  // A cursor ahead of the stream: upgraded, then the FutureCursor error frame.
  const fut = await rawRequest(port, wsReq('?cursor=999999999'), 10000)
  checks.ok('subscribeRepos cursor in the future: FutureCursor error frame', fut.status === 101 && fut.body.includes('FutureCursor'), `HTTP ${fut.status} ${JSON.stringify(fut.body.slice(0, 80))}`)

  // The read deadline: every slowloris and idle connection answered 408 and closed.
  const allClosed = await until(() => slow.every((c) => c.closed) && idle.every((c) => c.closed), 75000)
  const slowOpen = slow.filter((c) => !c.closed).length
  const idleOpen = idle.filter((c) => !c.closed).length
  checks.ok('slowloris and idle connections closed by the read deadline', allClosed, `still open: ${slowOpen} slowloris, ${idleOpen} idle`)
  const s408 = slow.filter((c) => /^HTTP\/1\.1 408/.test(c.data.toString('latin1'))).length
  checks.ok('slowloris connections were answered 408 Request Timeout', s408 === SLOW, `${s408} of ${SLOW}`)
  for (const c of slow) clearInterval(c.timer)

  await paced
  await pdses[0].idle()
  const valid = validRepoEvents(pdses)
  await live.waitFor((c) => hasAll(c, valid), 60000, 'every valid event').catch(() => {})
  checks.none('frames canonical, lexicon-valid, seq strictly increasing', live.errors)
  checks.none(`every valid event exactly once, per-DID order (${valid.length})`, compareDelivery(live, valid, forgedEvents(pdses)))

  const after = await baton.status()
  const rssAfter = await stageRss(baton)
  // The never-reading consumer: upgraded, the stream went on without it; now it reads.
  deaf.sock.resume()
  await until(() => deaf.data.length > 0 || deaf.closed, 10000)
  const dh = deaf.data.toString('latin1')
  checks.ok('the never-reading consumer had been upgraded (101) while the others were served', /^HTTP\/1\.1 101/.test(dh), JSON.stringify(dh.slice(0, 40)))
  checks.none('no stage crashed or was restarted', restartProblems(before, after))
  checks.none('no stage grew by more than 64 MiB resident', rssReport('hostile_down', rssBefore, rssAfter))
  const refused = Baton.sum(after, 'fanout', 'counters', 'http_refused') - Baton.sum(before, 'fanout', 'counters', 'http_refused')
  const expectRefused = refusedHttp + SLOW + IDLE
  checks.ok('the fanout counted every refused request and timed-out connection (http_refused)', refused >= expectRefused, `http_refused +${refused}, expected >= ${expectRefused}`)
  const h = await baton.health()
  checks.ok('/_health is 200 afterwards', h.status === 200, JSON.stringify(h))
  await live.close()
}

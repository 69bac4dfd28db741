// NAME
//   mock/relay.mjs - a stand-in relay that checks the e2e harness itself.
// DESCRIPTION
//   Not baton. A single Node process that behaves like baton from the
//   outside, so the scenarios can be run before (or independently of) the C
//   relay: `node tests/e2e/run.mjs tests/e2e/mock` uses ./baton and
//   ./batonctl from this folder. It reads the same environment, serves
//   /_health, requestCrawl (describeServer probe, refuses atproto-relay
//   hosts), subscribes to PDS hosts (resuming with ?cursor= after a drop),
//   verifies #commit/#sync with lib/verify.mjs (signature, CAR, MST proofs,
//   inversion, rev order, host authority), renumbers seq and serves
//   subscribeRepos with cursor replay and FutureCursor. It keeps idle child
//   processes named like the stages (baton-ingest, baton-verify x K, ...),
//   restarts them when they die and publishes their pids for `batonctl
//   status`; killing the "ingest" child drops the upstream connections and
//   killing "fanout 0" drops half of the consumers (close 1012), so the
//   harness's reconnect paths are exercised.
//   MOCK_FAULT injects a relay bug, to show the scenarios catch it:
//   `noverify` forwards forged commits, `dup` publishes every 50th event twice,
//   `noreplay` ignores consumer cursors (gaps after a reconnect), `reorder`
//   swaps two events of one DID, `dropvalid` drops every 60th valid event as bad_inversion
//   (drop counters no longer equal what was planted).
// DIAGNOSTICS
//   Logs one line per notable event on stderr.

import http from 'node:http'
import dns from 'node:dns'
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import WebSocket, { WebSocketServer } from 'ws'
import * as dagCbor from '@ipld/dag-cbor'
import { decodeFrame } from '../lib/consumer.mjs'
import { EventVerifier } from '../lib/verify.mjs'

// The simulators listen on 127.0.0.1 and are named localhost:PORT. Debian 12's node 18 resolves
// localhost to ::1 first and, unlike node 20, does not fall back to the next address.
dns.setDefaultResultOrder('ipv4first')

const here = path.dirname(fileURLToPath(import.meta.url))
const env = process.env
const [bindHost, bindPort] = (env.RELAY_API_BIND || '127.0.0.1:2470').split(':')
const statusFile = path.join(env.RELAY_SHM_DIR || '/tmp', `${env.RELAY_NAME || 'baton'}.mock-status.json`)
const log = (...a) => process.stderr.write(`mock-relay: ${a.join(' ')}\n`)

// ---- fake stages -----------------------------------------------------------
const stages = []
const roles = [['ingest', 1], ['verify', Number(env.RELAY_VERIFY_PROCS || 2)], ['store', 1], ['fanout', Number(env.RELAY_FANOUT_PROCS || 2)]]
let stopping = false
// Drop counters by baton's reason names, shown on the store stage like baton's verdict counts.
const drops = {}
function reasonName(r) {
  if (/signature/.test(r)) return 'bad_sig'
  if (/rev not after/.test(r)) return 'rev_old'
  if (/invert|prevData/.test(r)) return 'bad_inversion'
  if (/host authority/.test(r)) return 'wrong_host'
  if (/future/.test(r)) return 'rev_future'
  return 'bad_commit'
}
function writeStatus() {
  const st = { stages: stages.map(({ role, index, pid, state, restarts }) => ({ role, index, pid, state, restarts, drops: role === 'store' ? drops : {} })) }
  fs.writeFileSync(statusFile + '.tmp', JSON.stringify(st))
  fs.renameSync(statusFile + '.tmp', statusFile)
}
function startStage(s) {
  const child = spawn(process.execPath, [path.join(here, 'stage.mjs'), `baton-${s.role}`, String(s.index)], { stdio: 'ignore' })
  s.child = child
  s.pid = child.pid
  s.state = 'running'
  child.once('exit', () => {
    if (stopping) return
    s.state = 'restarting'
    s.restarts++
    writeStatus()
    onStageDied(s)
    setTimeout(() => { startStage(s); writeStatus() }, 300)
  })
}
for (const [role, n] of roles) for (let i = 0; i < n; i++) stages.push({ role, index: i, restarts: 0 })
for (const s of stages) startStage(s)
writeStatus()

function onStageDied(s) {
  log(`${s.role} ${s.index} died`)
  if (s.role === 'ingest') for (const h of hosts.values()) h.ws?.terminate()
  if (s.role === 'fanout' && s.index === 0) {
    for (const c of consumers) if (c.id % 2 === 0) c.ws.close(1012)
  }
}

// ---- events ----------------------------------------------------------------
const FAULT = env.MOCK_FAULT || ''
let seq = 0
let held = null // for MOCK_FAULT=reorder
let validSeen = 0 // for MOCK_FAULT=dropvalid
const events = [] // { seq, frame }
const consumers = new Set()
let nextConsumerId = 0
function publish(t, body) {
  const s = ++seq
  const frame = Buffer.concat([Buffer.from(dagCbor.encode({ op: 1, t })), Buffer.from(dagCbor.encode({ ...body, seq: s }))])
  events.push({ seq: s, frame })
  for (const c of consumers) c.ws.send(frame)
  if (FAULT === 'dup' && s % 50 === 0) publish(t, body)
}

// ---- upstream hosts ----------------------------------------------------------
const hosts = new Map() // hostname -> { cursor, ws, chain, verifier }
function subscribe(h) {
  if (stopping) return
  const q = h.cursor ? `?cursor=${h.cursor}` : ''
  const ws = new WebSocket(`ws://${h.name}/xrpc/com.atproto.sync.subscribeRepos${q}`)
  h.ws = ws
  ws.on('message', (data) => {
    h.chain = h.chain.then(() => handleUpstream(h, data))
  })
  ws.on('error', () => {})
  ws.on('close', () => setTimeout(() => subscribe(h), 200))
}
async function handleUpstream(h, data) {
  let f
  try { f = decodeFrame(data) } catch (err) { log(`bad frame from ${h.name}: ${err.message}`); return }
  const { header, body } = f
  if (header.op !== 1) return
  if (body.seq <= h.cursor) return // duplicate after a resume
  const t = header.t
  if (t === '#commit' || t === '#sync') {
    let r = FAULT === 'noverify' ? { ok: true } : await h.verifier.verify(t, body)
    if (FAULT === 'dropvalid' && r.ok && ++validSeen % 60 === 0) r = { ok: false, reason: 'inverted ops do not give prevData (injected)' }
    if (FAULT === 'reorder' && r.ok && t === '#commit' && seq === 100 && !held) {
      held = body // published after the DID's next commit
    } else if (held && r.ok && t === '#commit' && body.repo === held.repo) {
      publish(t, body)
      publish('#commit', held)
      held = { repo: null }
    } else if (!r.ok) {
      log(`drop ${t} ${body.repo ?? body.did} rev ${body.rev}: ${r.reason}`)
      const n = reasonName(r.reason)
      drops[n] = (drops[n] || 0) + 1
      writeStatus()
    }
    else publish(t, body)
  } else if (t === '#identity') {
    h.verifier.purge(body.did)
    publish(t, body)
  } else if (t === '#account') {
    publish(t, body)
  }
  h.cursor = body.seq
}

// ---- HTTP / WS ---------------------------------------------------------------
const server = http.createServer(async (req, res) => {
  res.setHeader('Server', 'mock-relay (atproto-relay)')
  const url = new URL(req.url, 'http://x')
  const json = (st, o) => { res.writeHead(st, { 'content-type': 'application/json' }); res.end(JSON.stringify(o)) }
  if (url.pathname === '/_health' || url.pathname === '/xrpc/_health') return json(200, { status: 'ok' })
  if (url.pathname === '/xrpc/com.atproto.sync.requestCrawl' && req.method === 'POST') {
    let raw = ''
    for await (const chunk of req) raw += chunk
    let hostname
    try { hostname = JSON.parse(raw).hostname } catch { return json(400, { error: 'InvalidRequest', message: 'bad JSON' }) }
    if (!/^localhost:\d+$/.test(hostname || '')) return json(400, { error: 'InvalidRequest', message: 'bad hostname' })
    let probe
    try {
      probe = await fetch(`http://${hostname}/xrpc/com.atproto.server.describeServer`, { signal: AbortSignal.timeout(3000) })
      await probe.arrayBuffer()
    } catch (err) {
      return json(400, { error: 'HostNotReachable', message: String(err.cause?.code ?? err.message) })
    }
    if (/atproto-relay/.test(probe.headers.get('server') || '')) return json(400, { error: 'HostIsRelay', message: 'refusing a relay' })
    if (!hosts.has(hostname)) {
      const h = { name: hostname, cursor: 0, ws: null, chain: Promise.resolve(), verifier: new EventVerifier({ plcUrl: env.RELAY_PLC_HOST, expectedPds: `http://${hostname}`, strictChain: false }) }
      h.cursor = null
      hosts.set(hostname, h)
      subscribe(h)
    }
    return json(200, {})
  }
  json(404, { error: 'NotFound', message: url.pathname })
})
const wss = new WebSocketServer({ noServer: true })
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x')
  if (url.pathname !== '/xrpc/com.atproto.sync.subscribeRepos') return socket.destroy()
  wss.handleUpgrade(req, socket, head, (ws) => {
    const c = url.searchParams.get('cursor')
    const err = (e) => { ws.send(Buffer.concat([Buffer.from(dagCbor.encode({ op: -1 })), Buffer.from(dagCbor.encode({ error: e }))])); ws.close(1008) }
    if (c !== null && FAULT !== 'noreplay') {
      const cur = Number(c)
      if (!Number.isInteger(cur) || cur < 0) return err('InvalidRequest')
      if (cur > seq) return err('FutureCursor')
      for (const e of events) if (e.seq > cur) ws.send(e.frame)
    }
    const entry = { id: nextConsumerId++, ws }
    consumers.add(entry)
    ws.on('close', () => consumers.delete(entry))
    ws.on('error', () => {})
  })
})
server.listen(Number(bindPort), bindHost, () => log(`listening on ${bindHost}:${bindPort}`))

process.on('SIGTERM', () => {
  stopping = true
  for (const s of stages) s.child?.kill('SIGKILL')
  for (const h of hosts.values()) { h.ws?.removeAllListeners('close'); h.ws?.terminate() }
  for (const c of consumers) c.ws.close(1012)
  server.close()
  try { fs.unlinkSync(statusFile) } catch {}
  log('stopped')
  setTimeout(() => process.exit(0), 100)
})

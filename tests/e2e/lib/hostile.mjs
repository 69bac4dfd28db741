// NAME
//   hostile.mjs - upstream hosts that misbehave on the wire, and resident-memory probes.
// DESCRIPTION
//   HostileHost is a raw node:net server on 127.0.0.1 that speaks HTTP and WebSocket by hand,
//   so it can say what no library would.  It answers describeServer like a PDS (so requestCrawl
//   admits it) and, on a subscribeRepos upgrade, does what its mode says:
//     cbor       a binary frame that is no CBOR (a different kind on each connection:
//                random bytes, 100,000 nested arrays, a byte string claiming 2^63 bytes,
//                an indefinite map never ended, a truncated header)
//     oversize   a frame header claiming 2^40 bytes (then 64 KiB of it), or a real
//                6,000,000-byte frame on every other connection
//     fragments  a binary frame without FIN, then continuation fragments without FIN, forever
//     utf8       a text frame of invalid UTF-8
//     opcode     a frame with a reserved opcode (0x3 data, 0xB control, alternating)
//     ping       pings, as fast as the relay reads them, and never reads a pong
//     silent     accepts the TCP connection and never answers the upgrade
//     trickle    answers the upgrade one byte every trickleMs (an endless header line)
//   Every accepted connection is recorded in `conns` ({ at, closedAt, bytesOut }).
//   rss(pids) reads VmRSS (kB) from /proc/PID/status; stageRss(baton) does it for every stage.
// DIAGNOSTICS
//   Socket errors are recorded, never thrown (the relay resetting a connection is expected).

import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import { sleep } from './baton.mjs'

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

// One unmasked (server to client) frame.
export function wsFrame(opcode, payload = Buffer.alloc(0), { fin = true, claimLen = null } = {}) {
  const n = claimLen ?? payload.length
  let hdr
  if (n < 126) hdr = Buffer.from([(fin ? 0x80 : 0) | opcode, n])
  else if (n < 65536) {
    hdr = Buffer.alloc(4)
    hdr[0] = (fin ? 0x80 : 0) | opcode
    hdr[1] = 126
    hdr.writeUInt16BE(n, 2)
  } else {
    hdr = Buffer.alloc(10)
    hdr[0] = (fin ? 0x80 : 0) | opcode
    hdr[1] = 127
    hdr.writeBigUInt64BE(BigInt(n), 2)
  }
  return Buffer.concat([hdr, payload])
}

// The malformed CBOR bodies, by connection number.
export function badCbor(i) {
  switch (i % 5) {
    case 0:
      return crypto.randomBytes(200)
    case 1:
      return Buffer.alloc(100000, 0x81) // [[[[... never closed, 100,000 deep
    case 2:
      return Buffer.from([0xa2, 0x62, 0x6f, 0x70, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00])
    case 3:
      return Buffer.concat([Buffer.from([0xbf]), Buffer.alloc(1000, 0x61)]) // indefinite map, no break
    default:
      return Buffer.from([0xa2, 0x61, 0x74, 0x67, 0x23]) // header cut short
  }
}

export class HostileHost {
  constructor(mode, { trickleMs = 500 } = {}) {
    this.mode = mode
    this.trickleMs = trickleMs
    this.conns = []
    this.describeCount = 0
    this.server = null
    this.sockets = new Set()
    this.timers = new Set()
  }

  get host() {
    return `localhost:${this.port}`
  }

  async start() {
    this.server = net.createServer((s) => this.#accept(s))
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
  }

  async stop() {
    for (const t of this.timers) clearInterval(t)
    for (const s of this.sockets) s.destroy()
    if (this.server) await new Promise((r) => this.server.close(() => r()))
    this.server = null
  }

  // Subscription connections so far, and how many the relay ended.
  get subscribes() {
    return this.conns.length
  }

  get closed() {
    return this.conns.filter((c) => c.closedAt).length
  }

  #accept(sock) {
    this.sockets.add(sock)
    sock.on('error', () => {})
    let buf = Buffer.alloc(0)
    const onData = (d) => {
      buf = Buffer.concat([buf, d])
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) {
        if (buf.length > 65536) sock.destroy()
        return
      }
      sock.off('data', onData)
      const head = buf.subarray(0, end).toString('latin1')
      const rest = buf.subarray(end + 4)
      this.#request(sock, head, rest)
    }
    sock.on('data', onData)
    sock.on('close', () => this.sockets.delete(sock))
  }

  #request(sock, head, rest) {
    const [reqLine, ...lines] = head.split('\r\n')
    const path = reqLine.split(' ')[1] || '/'
    const hdr = {}
    for (const l of lines) {
      const i = l.indexOf(':')
      if (i > 0) hdr[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
    }
    if (!path.startsWith('/xrpc/com.atproto.sync.subscribeRepos')) {
      if (path.startsWith('/xrpc/com.atproto.server.describeServer')) this.describeCount++
      const body = JSON.stringify({ did: `did:web:${this.host}`, availableUserDomains: [] })
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`)
      return
    }
    const c = { at: Date.now(), closedAt: 0, bytesOut: 0 }
    const idx = this.conns.length
    this.conns.push(c)
    sock.on('close', () => {
      c.closedAt = Date.now()
    })
    if (this.mode === 'silent') return
    const accept = crypto.createHash('sha1').update(`${hdr['sec-websocket-key']}${GUID}`).digest('base64')
    const resp = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`
    if (this.mode === 'trickle') {
      // The status line, then an endless header line, one byte at a time.
      const bytes = Buffer.from('HTTP/1.1 101 Switching Protocols\r\nX-Trickle: ')
      let i = 0
      const t = setInterval(() => {
        if (sock.destroyed) return clearInterval(t)
        sock.write(i < bytes.length ? bytes.subarray(i, i + 1) : 'a')
        c.bytesOut++
        i++
      }, this.trickleMs)
      this.timers.add(t)
      sock.on('close', () => clearInterval(t))
      return
    }
    sock.write(resp)
    const send = (b) => {
      c.bytesOut += b.length
      return sock.write(b)
    }
    switch (this.mode) {
      case 'cbor':
        send(wsFrame(0x2, badCbor(idx)))
        break
      case 'oversize':
        if (idx % 2 === 0) send(wsFrame(0x2, Buffer.alloc(65536, 0xa2), { claimLen: 2 ** 40 }))
        else send(wsFrame(0x2, Buffer.alloc(6_000_000, 0xa2)))
        break
      case 'utf8':
        send(wsFrame(0x1, Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80])))
        break
      case 'opcode':
        send(idx % 2 === 0 ? wsFrame(0x3, Buffer.from('x')) : wsFrame(0xb, Buffer.from('y')))
        break
      case 'fragments': {
        send(wsFrame(0x2, Buffer.alloc(1024, 0xa2), { fin: false }))
        const frag = wsFrame(0x0, Buffer.alloc(65536, 0x61), { fin: false })
        const pump = () => {
          while (!sock.destroyed && c.bytesOut < 64 * 2 ** 20) if (!send(frag)) return sock.once('drain', pump)
        }
        pump()
        break
      }
      case 'ping': {
        sock.pause() // never read a pong
        const pings = Buffer.concat(Array.from({ length: 512 }, () => wsFrame(0x9, Buffer.alloc(125, 0x70))))
        const pump = () => {
          while (!sock.destroyed && c.bytesOut < (this.pingBytes ?? 48 * 2 ** 20)) if (!send(pings)) return sock.once('drain', pump)
        }
        pump()
        break
      }
    }
  }
}

// VmRSS in kB of one pid (0 if it is gone).
// Polls pred every 250 ms until it holds (true) or ms have passed (false).
export async function until(pred, ms) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await pred()) return true
    await sleep(250)
  }
  return false
}

export function rssKb(pid) {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)/m)
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}

// { 'ingest/0': { pid, kb }, ... } for every stage in batonctl status, plus the supervisor.
export async function stageRss(baton) {
  const st = await baton.status()
  const out = {}
  if (baton.proc?.pid) out.supervisor = { pid: baton.proc.pid, kb: rssKb(baton.proc.pid) }
  for (const s of st.stages || []) if (s.pid) out[`${s.role}/${s.index}`] = { pid: s.pid, kb: rssKb(s.pid) }
  return out
}

// Prints before/after per process; returns problems for any growth over limitKb.  Under ASan
// (ASAN_OPTIONS set, as tests/run.sh does for the sanitizer build) freed memory is held in its
// quarantine (up to 256 MiB by default) before reuse, so the bound grows by that much there.
const ASAN_QUARANTINE_KB = process.env.ASAN_OPTIONS ? 256 * 1024 : 0
export function rssReport(label, before, after, limitKb = 64 * 1024) {
  const problems = []
  limitKb += ASAN_QUARANTINE_KB
  for (const k of Object.keys(after)) {
    const b = before[k]?.kb ?? 0
    const a = after[k].kb
    console.log(`# ${label}: rss ${k} (pid ${after[k].pid}): before ${b} kB, after ${a} kB, growth ${a - b} kB`)
    if (a - b > limitKb) problems.push(`${k} grew ${a - b} kB`)
  }
  return problems
}

// Restart counts and pids: problems if any stage was restarted between two statuses.
export function restartProblems(before, after) {
  const problems = []
  for (const s of after?.stages || []) {
    const b = (before?.stages || []).find((x) => x.role === s.role && x.index === s.index)
    if (Number(s.restarts || 0) !== Number(b?.restarts || 0) || s.pid !== b?.pid)
      problems.push(`${s.role}/${s.index} restarts ${b?.restarts}->${s.restarts} pid ${b?.pid}->${s.pid}`)
  }
  return problems
}

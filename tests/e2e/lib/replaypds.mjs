// NAME
//   replaypds.mjs - a PDS simulator that serves captured firehose frames (indigo's relay vectors).
// DESCRIPTION
//   loadScenario(path) reads one of shared/vectors/indigo/*.json (indigo's cmd/relay/testing
//   format: {lenient, accounts:[{identity, status}], messages:[{frame:{header, body}, drop,
//   invalid, update}]}) and turns every JSON body back into the DAG-CBOR value it came from:
//   {"$bytes": base64} -> bytes, {"$link": cid} -> CID, `blobs: null` -> [] (Go's nil slice,
//   which cbor-gen writes as an empty array). `blocks` is passed through as the captured bytes,
//   so the signed commit inside it is byte for byte what the PDS signed: checkScenario() proves
//   it by reading each CAR, checking every block's hash against its CID and the commit's
//   signature against the account's key.
//
//   ReplayPds is an HTTP + WebSocket server on 127.0.0.1 (public name localhost:<port>) that
//   answers describeServer and getRepoStatus (the account status as of the frames emitted so far,
//   starting from the scenario's `status`) and serves subscribeRepos. emit(i) sends message i
//   with its captured seq (seq_ordering repeats and lowers seqs on purpose) to every subscriber
//   and logs it; a reconnect with ?cursor=N replays the logged frames with seq > N.
// DIAGNOSTICS
//   loadScenario throws on a frame it cannot convert; checkScenario returns a list of problems.

import http from 'node:http'
import fs from 'node:fs'
import crypto from 'node:crypto'
import { WebSocketServer } from 'ws'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { readCar } from '@atproto/repo'
import { verifySignature } from '@atproto/crypto'

const SUBSCRIBE_PATH = '/xrpc/com.atproto.sync.subscribeRepos'

// JSON (atproto data model encoding) -> DAG-CBOR value.
function fromJson(v) {
  if (Array.isArray(v)) return v.map(fromJson)
  if (v && typeof v === 'object') {
    const keys = Object.keys(v)
    if (keys.length === 1 && keys[0] === '$bytes') return new Uint8Array(Buffer.from(v.$bytes, 'base64'))
    if (keys.length === 1 && keys[0] === '$link') return CID.parse(v.$link)
    const o = {}
    for (const k of keys) o[k] = fromJson(v[k])
    return o
  }
  return v
}

export function sha256hex(bytes) {
  return crypto.createHash('sha256').update(bytes).digest('hex')
}

// Reads a vector file; returns { name, lenient, accounts, messages: [{ i, t, header, body,
// frame (bytes), drop, update, did, rev, commit, blocksHash, seq }] }.
export function loadScenario(file, name) {
  const s = JSON.parse(fs.readFileSync(file, 'utf8'))
  const messages = s.messages.map((m, i) => {
    const header = m.frame.header
    const body = fromJson(m.frame.body)
    if (header.t === '#commit' && body.blobs === null) body.blobs = []
    const frame = Buffer.concat([Buffer.from(dagCbor.encode(header)), Buffer.from(dagCbor.encode(body))])
    return {
      i,
      t: header.t,
      header,
      body,
      frame,
      drop: !!m.drop,
      update: !!m.update,
      seq: body.seq,
      did: header.t === '#commit' ? body.repo : body.did,
      rev: body.rev ?? null,
      commit: body.commit ? CID.asCID(body.commit).toString() : null,
      blocksHash: body.blocks ? sha256hex(body.blocks) : null,
    }
  })
  return { name, description: s.description ?? '', lenient: !!s.lenient, accounts: s.accounts, messages }
}

// did:key of a Multikey publicKeyMultibase.
const didKey = (mb) => `did:key:${mb}`

// Problems with the scenario's repo frames: every CAR block hashes to its CID, the root is the
// frame's commit (or, for #sync, a commit of that DID and rev), and the commit's signature
// verifies with the account's key. Messages marked drop are checked too but only reported when
// the check fails for a frame that must be forwarded (a dropped frame may be broken on purpose).
export async function checkScenario(sc) {
  const problems = []
  const keys = new Map(sc.accounts.map((a) => [a.identity.did, a.identity.keys?.atproto?.publicKeyMultibase]))
  for (const m of sc.messages) {
    if (m.t !== '#commit' && m.t !== '#sync') continue
    const where = `${sc.name}[${m.i}] ${m.t} seq ${m.seq}`
    try {
      const { roots, blocks } = await readCar(m.body.blocks)
      for (const { cid: c, bytes } of blocks.entries()) {
        const cid = CID.parse(c.toString())
        const digest = crypto.createHash('sha256').update(bytes).digest()
        if (!Buffer.from(cid.multihash.digest).equals(digest)) problems.push(`${where}: block ${cid} does not hash to its CID`)
      }
      const root = CID.asCID(roots[0])
      const commitCid = m.t === '#commit' ? CID.asCID(m.body.commit) : root
      if (!root || !root.equals(commitCid)) problems.push(`${where}: CAR root ${root} is not the commit ${commitCid}`)
      const cbytes = blocks.get(commitCid)
      if (!cbytes) {
        problems.push(`${where}: commit block missing`)
        continue
      }
      const commit = dagCbor.decode(cbytes)
      if (commit.did !== m.did) problems.push(`${where}: commit did ${commit.did}`)
      if (commit.rev !== m.rev && !m.drop) problems.push(`${where}: commit rev ${commit.rev} != frame rev ${m.rev}`)
      const { sig, ...unsigned } = commit
      const ok = await verifySignature(didKey(keys.get(m.did)), dagCbor.encode(unsigned), sig)
      if (!ok && !m.drop) problems.push(`${where}: signature does not verify with the account's key`)
    } catch (err) {
      if (!m.drop) problems.push(`${where}: ${err.message}`)
    }
  }
  return problems
}

export class ReplayPds {
  // sc: a loaded scenario.
  constructor(sc, { serverHeader = 'e2e-replay-pds' } = {}) {
    this.sc = sc
    this.serverHeader = serverHeader
    this.log = [] // { seq, frame }
    this.subscribers = new Set()
    this.subscribeCursors = []
    this.status = new Map() // did -> { active, status }
    this.revs = new Map() // did -> last emitted commit/sync rev
    this.statusQueries = 0
    for (const a of sc.accounts) {
      const st = a.status || 'active'
      this.status.set(a.identity.did, { active: st === 'active', status: st === 'active' ? null : st })
    }
    this.server = null
    this.wss = null
    this.port = 0
  }

  get host() {
    return `localhost:${this.port}`
  }

  get endpoint() {
    return `http://localhost:${this.port}`
  }

  async start() {
    this.server = http.createServer((req, res) => this.#http(req, res))
    this.server.keepAliveTimeout = 120000
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 })
    this.wss.on('headers', (h) => h.push(`Server: ${this.serverHeader}`))
    this.server.on('upgrade', (req, socket, head) => {
      const url = new URL(req.url, 'http://x')
      if (url.pathname !== SUBSCRIBE_PATH) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n')
        return
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.#subscribe(ws, url))
    })
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
    return this.port
  }

  async stop() {
    if (!this.server) return
    for (const ws of this.subscribers) ws.terminate()
    this.subscribers.clear()
    this.wss.close()
    this.server.closeAllConnections?.()
    await new Promise((resolve) => this.server.close(() => resolve()))
    this.server = null
  }

  async waitSubscribers(n = 1, timeoutMs = 15000) {
    const end = Date.now() + timeoutMs
    while (this.subscribers.size < n) {
      if (Date.now() > end) throw new Error(`${this.host}: no subscriber after ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  #http(req, res) {
    res.setHeader('Server', this.serverHeader)
    const url = new URL(req.url, 'http://x')
    const json = (status, obj) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(obj))
    }
    const did = url.searchParams.get('did')
    switch (url.pathname) {
      case '/xrpc/com.atproto.server.describeServer':
        return json(200, { did: 'did:web:localhost', availableUserDomains: ['.test'], inviteCodeRequired: false, links: {} })
      case '/xrpc/_health':
        return json(200, { version: 'e2e-replay' })
      case '/xrpc/com.atproto.sync.getRepoStatus': {
        this.statusQueries++
        const st = did && this.status.get(did)
        if (!st) return json(400, { error: 'RepoNotFound', message: `no repo ${did}` })
        const rev = this.revs.get(did)
        return json(200, {
          did,
          active: st.active,
          ...(st.status ? { status: st.status } : {}),
          ...(st.active && rev ? { rev } : {}),
        })
      }
      default:
        return json(404, { error: 'NotFound', message: url.pathname })
    }
  }

  #subscribe(ws, url) {
    const c = url.searchParams.get('cursor')
    this.subscribeCursors.push(c)
    ws.on('error', () => {})
    ws.on('close', () => this.subscribers.delete(ws))
    if (c !== null) {
      const cursor = Number(c)
      for (const e of this.log) if (e.seq > cursor) ws.send(e.frame)
    }
    this.subscribers.add(ws)
  }

  // Sends message i to every subscriber (and logs it for cursor replay); an #account frame
  // changes what getRepoStatus answers from now on.
  emit(i) {
    const m = this.sc.messages[i]
    if (m.t === '#account') {
      const active = m.body.active === true
      this.status.set(m.did, { active, status: active ? null : (m.body.status ?? 'deactivated') })
    }
    if ((m.t === '#commit' || m.t === '#sync') && !m.drop) this.revs.set(m.did, m.rev)
    this.log.push({ seq: m.seq, frame: m.frame })
    for (const ws of this.subscribers) ws.send(m.frame)
  }
}

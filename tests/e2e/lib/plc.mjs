// NAME
//   plc.mjs - a fake PLC directory for the end-to-end tests.
// DESCRIPTION
//   An HTTP server on 127.0.0.1 (random port) that serves DID documents at
//   `GET /<did>` in the format plc.directory returns (see
//   shared/vectors/indigo/did_plc_doc.json): a `#atproto` Multikey
//   verification method, a `#atproto_pds` service and `alsoKnownAs`.
//   Unknown DIDs get 404. Documents can be changed at any time (key rotation,
//   handle change, PDS move); every request is counted per DID so tests can
//   see that the relay resolved (or re-resolved) an identity. `mode` makes the
//   directory misbehave: 'ok' (default), '503' (every request answers 503),
//   'drop' (every connection is destroyed without an answer). hang(did) holds
//   that DID's requests open without an answer until unhang(did).
//
//
//   Every registration and update is also an operation in the DID's audit log,
//   served at `GET /<did>/log/audit` in plc.directory's format: a JSON array of
//   {did, operation, cid, nullified, createdAt}, oldest first, each operation a
//   `plc_operation` with prev, rotationKeys, verificationMethods.atproto (a
//   did:key), alsoKnownAs and services.atproto_pds, and a (fake) sig.
//   `rotations` lists every signing-key change {did, oldKey, newKey, createdAt}.
// DIAGNOSTICS
//   start() rejects if the port cannot be bound. Requests for unknown DIDs
//   answer 404 `{"message":"DID not registered: <did>"}` like the real
//   directory.

import http from 'node:http'
import crypto from 'node:crypto'

const B32 = 'abcdefghijklmnopqrstuvwxyz234567'

// Returns a fresh random did:plc identifier (24 base32 characters).
export function randomPlcDid() {
  const bytes = crypto.randomBytes(24)
  let s = ''
  for (const b of bytes) s += B32[b & 31]
  return 'did:plc:' + s
}

export class FakePlc {
  constructor() {
    this.docs = new Map() // did -> { signingKey, handle, pds }
    this.requests = new Map() // did -> count
    this.server = null
    this.port = 0
    this.url = ''
    this.unavailable = false // same as mode '503' (kept for older scenarios)
    this.mode = 'ok'
    this.sockets = new Set()
    this.audit = new Map() // did -> [{did, operation, cid, nullified, createdAt}]
    this.auditRequests = new Map() // did -> count of /<did>/log/audit requests
    this.rotations = [] // {did, oldKey, newKey, createdAt}
    this.hung = new Map() // did -> requests held without an answer (hang)
    this.served = new Map() // did -> documents answered (200)
  }

  // Requests for did are held open and never answered (a resolver that hangs), until
  // unhang(did), which answers the held ones that are still open.
  hang(did) {
    if (!this.hung.has(did)) this.hung.set(did, [])
  }

  unhang(did) {
    const held = this.hung.get(did) || []
    this.hung.delete(did)
    for (const [req, res] of held) if (!res.destroyed && !req.socket.destroyed) this.#handle(req, res)
  }

  // Starts listening on 127.0.0.1:<random>; resolves to the base URL.
  async start() {
    this.server = http.createServer((req, res) => this.#handle(req, res))
    // Keep idle keep-alive connections long: a short server-side timeout races
    // clients that reuse a socket just as it is closed ("fetch failed").
    this.server.keepAliveTimeout = 120000
    this.server.on('connection', (sock) => {
      this.sockets.add(sock)
      sock.once('close', () => this.sockets.delete(sock))
    })
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
    this.url = `http://127.0.0.1:${this.port}`
    return this.url
  }

  async stop() {
    if (!this.server) return
    this.server.closeAllConnections?.()
    await new Promise((resolve) => this.server.close(() => resolve()))
    this.server = null
  }

  // Registers (or replaces) a DID. signingKey: a did:key string or a bare
  // multibase ("z..."); pds: the service endpoint URL; handle: optional.
  register(did, { signingKey, pds, handle }) {
    const mb = signingKey.startsWith('did:key:') ? signingKey.slice(8) : signingKey
    this.docs.set(did, { publicKeyMultibase: mb, pds, handle: handle ?? null })
    this.audit.set(did, [])
    this.#appendOp(did)
  }

  // Appends the document's current state to the DID's audit log as a plc_operation.
  #appendOp(did) {
    const d = this.docs.get(did)
    const log = this.audit.get(did) ?? []
    this.audit.set(did, log)
    const prev = log.length ? log[log.length - 1].cid : null
    const operation = {
      sig: crypto.randomBytes(64).toString('base64url'),
      prev,
      type: 'plc_operation',
      services: { atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: d.pds } },
      alsoKnownAs: d.handle ? [`at://${d.handle}`] : [],
      rotationKeys: [`did:key:${d.publicKeyMultibase}`], // a test stand-in: any did:key
      verificationMethods: { atproto: `did:key:${d.publicKeyMultibase}` },
    }
    const digest = crypto.createHash('sha256').update(JSON.stringify(operation)).digest()
    let cid = 'bafyrei'
    for (let i = 0; i < 52; i++) cid += B32[digest[i % 32] & 31]
    const entry = { did, operation, cid, nullified: false, createdAt: new Date().toISOString() }
    log.push(entry)
    return entry
  }

  // The DID's audit log (array, oldest first) or null.
  auditLog(did) {
    return this.audit.get(did) ?? null
  }

  // Makes the directory answer normally ('ok'), 503 ('503') or drop every
  // connection ('drop'); open keep-alive connections are cut on a change.
  setMode(mode) {
    this.mode = mode
    for (const sock of this.sockets) sock.destroy()
  }

  // Total requests received (all DIDs).
  totalRequests() {
    let n = 0
    for (const v of this.requests.values()) n += v
    return n
  }

  // Changes some fields of a registered DID's document.
  update(did, fields) {
    const cur = this.docs.get(did)
    if (!cur) throw new Error(`unknown DID ${did}`)
    const oldKey = cur.publicKeyMultibase
    if (fields.signingKey) {
      cur.publicKeyMultibase = fields.signingKey.startsWith('did:key:')
        ? fields.signingKey.slice(8)
        : fields.signingKey
    }
    if (fields.pds) cur.pds = fields.pds
    if ('handle' in fields) cur.handle = fields.handle
    const entry = this.#appendOp(did)
    if (cur.publicKeyMultibase !== oldKey) {
      this.rotations.push({ did, oldKey, newKey: cur.publicKeyMultibase, createdAt: entry.createdAt })
    }
    return entry
  }

  // Returns the DID document object for a registered DID, or null.
  doc(did) {
    const d = this.docs.get(did)
    if (!d) return null
    return {
      '@context': [
        'https://www.w3.org/ns/did/v1',
        'https://w3id.org/security/multikey/v1',
        'https://w3id.org/security/suites/secp256k1-2019/v1',
      ],
      id: did,
      alsoKnownAs: d.handle ? [`at://${d.handle}`] : [],
      verificationMethod: [
        {
          id: `${did}#atproto`,
          type: 'Multikey',
          controller: did,
          publicKeyMultibase: d.publicKeyMultibase,
        },
      ],
      service: [
        {
          id: '#atproto_pds',
          type: 'AtprotoPersonalDataServer',
          serviceEndpoint: d.pds,
        },
      ],
    }
  }

  #handle(req, res) {
    const path = decodeURIComponent((req.url || '/').split('?')[0])
    if (path.endsWith('/log/audit')) return this.#handleAudit(req, res, path.slice(1, -'/log/audit'.length))
    const did = path.slice(1)
    if (this.hung.has(did)) {
      this.hung.get(did).push([req, res])
      return
    }
    this.requests.set(did, (this.requests.get(did) || 0) + 1)
    if (this.mode === 'drop') {
      req.socket.destroy()
      return
    }
    if (this.unavailable || this.mode === '503') {
      res.writeHead(503, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ message: 'unavailable' }))
      return
    }
    if (req.method !== 'GET') {
      res.writeHead(405, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ message: 'method not allowed' }))
      return
    }
    const doc = this.doc(did)
    if (!doc) {
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ message: `DID not registered: ${did}` }))
      return
    }
    this.served.set(did, (this.served.get(did) || 0) + 1)
    res.writeHead(200, { 'content-type': 'application/did+ld+json' })
    res.end(JSON.stringify(doc))
  }

  // GET /<did>/log/audit: the DID's operations, as plc.directory serves them.
  #handleAudit(req, res, did) {
    this.auditRequests.set(did, (this.auditRequests.get(did) || 0) + 1)
    if (this.mode === 'drop') {
      req.socket.destroy()
      return
    }
    if (this.unavailable || this.mode === '503') {
      res.writeHead(503, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ message: 'unavailable' }))
      return
    }
    const log = this.audit.get(did)
    if (!log) {
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ message: `DID not registered: ${did}` }))
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(log))
  }

  // Total /log/audit requests received (all DIDs).
  totalAuditRequests() {
    let n = 0
    for (const v of this.auditRequests.values()) n += v
    return n
  }
}

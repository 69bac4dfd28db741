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
    if (fields.signingKey) {
      cur.publicKeyMultibase = fields.signingKey.startsWith('did:key:')
        ? fields.signingKey.slice(8)
        : fields.signingKey
    }
    if (fields.pds) cur.pds = fields.pds
    if ('handle' in fields) cur.handle = fields.handle
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
}

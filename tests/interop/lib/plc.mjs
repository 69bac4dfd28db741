// NAME
//   plc.mjs - a minimal PLC directory that checks operations, for the interop test.
// DESCRIPTION
//   The e2e fake PLC (tests/e2e/lib/plc.mjs) only serves documents a test registers;
//   the official PDS instead POSTs signed plc_operations to `POST /<did>` (account
//   creation, handle change) and reads `GET /<did>/log/last` before an update. This
//   directory keeps each DID's operations in memory and validates every POST with
//   @did-plc/lib's own rules (signature by a rotation key, prev = the last op, the
//   genesis op hashes to the DID), so a PDS that speaks PLC wrongly fails here too.
//   Served: GET /<did> (DID document), /<did>/data, /<did>/log, /<did>/log/last,
//   /<did>/log/audit, /_health. A tombstoned DID answers 410 like plc.directory.
//   `requests` counts document requests per DID (the relay's resolutions).
// DIAGNOSTICS
//   A rejected operation answers 400 {message}; `rejected` keeps the reasons so the
//   test can report them.

import http from 'node:http'
import * as plc from '@did-plc/lib'

export class Plc {
  constructor() {
    this.ops = new Map() // did -> [{did, operation, cid (CID), nullified, createdAt (Date)}]
    this.requests = new Map()
    this.rejected = []
    this.server = null
    this.url = ''
  }

  async start() {
    this.server = http.createServer((req, res) => {
      this.#handle(req, res).catch((err) => send(res, 500, { message: String(err?.message ?? err) }))
    })
    this.server.keepAliveTimeout = 120000
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, '127.0.0.1', resolve)
    })
    this.url = `http://127.0.0.1:${this.server.address().port}`
    return this.url
  }

  async stop() {
    if (!this.server) return
    this.server.closeAllConnections?.()
    await new Promise((resolve) => this.server.close(() => resolve()))
    this.server = null
  }

  // The DID's current document data ({did, verificationMethods, rotationKeys, alsoKnownAs, services}) or null.
  data(did) {
    const log = this.ops.get(did)
    if (!log || !log.length) return null
    return plc.opToData(did, log[log.length - 1].operation)
  }

  async #handle(req, res) {
    const url = decodeURIComponent((req.url || '/').split('?')[0])
    if (url === '/_health') return send(res, 200, { version: 'interop' })
    const m = url.match(/^\/(did:plc:[a-z2-7]+)(\/.*)?$/)
    if (!m) return send(res, 404, { message: 'not found' })
    const [, did, rest = ''] = m
    if (req.method === 'POST' && rest === '') return this.#post(req, res, did)
    if (req.method !== 'GET') return send(res, 405, { message: 'method not allowed' })
    const log = this.ops.get(did)
    if (!log) return send(res, 404, { message: `DID not registered: ${did}` })
    const last = log[log.length - 1]
    const data = plc.opToData(did, last.operation)
    if (rest === '' || rest === '/data') {
      this.requests.set(did, (this.requests.get(did) || 0) + 1)
      if (!data) return send(res, 410, { message: `DID not available: ${did}` })
      return send(res, 200, rest === '' ? plc.formatDidDoc(data) : data)
    }
    if (rest === '/log') return send(res, 200, log.map((e) => e.operation))
    if (rest === '/log/last') return send(res, 200, last.operation)
    if (rest === '/log/audit') {
      return send(
        res,
        200,
        log.map((e) => ({ ...e, cid: e.cid.toString(), createdAt: e.createdAt.toISOString() })),
      )
    }
    return send(res, 404, { message: 'not found' })
  }

  async #post(req, res, did) {
    const chunks = []
    for await (const c of req) chunks.push(c)
    let op
    try {
      op = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    } catch {
      return send(res, 400, { message: 'body is not JSON' })
    }
    const log = this.ops.get(did) ?? []
    try {
      if (!log.length) await plc.assureValidCreationOp(did, op)
      else await plc.assureValidNextOp(did, log, op)
    } catch (err) {
      this.rejected.push(`${did}: ${err?.message ?? err}`)
      return send(res, 400, { message: String(err?.message ?? err) })
    }
    const { cid } = await plc.getLastOpWithCid([op])
    log.push({ did, operation: op, cid, nullified: false, createdAt: new Date() })
    this.ops.set(did, log)
    return send(res, 200, {})
  }
}

function send(res, status, body) {
  const type = status === 200 && body && body['@context'] ? 'application/did+ld+json' : 'application/json'
  res.writeHead(status, { 'content-type': type })
  res.end(JSON.stringify(body))
}

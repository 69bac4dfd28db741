// NAME
//   consumer.mjs - a checking subscribeRepos consumer.
// DESCRIPTION
//   Connects to a subscribeRepos WebSocket (a relay or a PDS simulator),
//   decodes every frame with @ipld/dag-cbor's strict decoder (cborg with the
//   DAG-CBOR options: an implementation independent of the C relay), checks
//   that header and body are canonical DAG-CBOR (re-encoding gives the same
//   bytes), validates each body against the lexicon's required fields for its
//   type, asserts that seq strictly increases (across reconnects too) and
//   records the events. With `reconnect: true` a dropped connection is
//   re-opened with `cursor=<last seq seen>` (or the initial cursor if none was
//   seen yet), with a short backoff.
// DIAGNOSTICS
//   Problems are collected, never thrown: `errors` holds one string per
//   violation (bad framing, non-canonical CBOR, missing/mistyped field, seq not
//   increasing); `errorFrames` the op=-1 frames received; `infos` the #info
//   frames.

import WebSocket from 'ws'
import crypto from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { decodeFirst } from 'cborg'
import { CID } from 'multiformats/cid'

const TID_RE = /^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$/
const DID_RE = /^did:[a-z]+:[a-zA-Z0-9._:%-]+$/

const isInt = (v) => Number.isSafeInteger(v)
const isBool = (v) => v === true || v === false
const isStr = (v) => typeof v === 'string'
const isBytes = (v) => v instanceof Uint8Array
const isCid = (v) => CID.asCID(v) !== null
const isDid = (v) => isStr(v) && DID_RE.test(v)
const isTid = (v) => isStr(v) && TID_RE.test(v)
const isTime = (v) => isStr(v) && !Number.isNaN(Date.parse(v))

// Required fields per message type: name -> predicate.
const SCHEMAS = {
  '#commit': {
    seq: isInt,
    rebase: isBool,
    tooBig: isBool,
    repo: isDid,
    commit: isCid,
    rev: isTid,
    since: (v) => v === null || isTid(v),
    blocks: isBytes,
    ops: (v) =>
      Array.isArray(v) &&
      v.every(
        (op) =>
          op &&
          ['create', 'update', 'delete'].includes(op.action) &&
          isStr(op.path) &&
          (op.cid === null || isCid(op.cid)) &&
          (op.prev === undefined || op.prev === null || isCid(op.prev)),
      ),
    blobs: (v) => Array.isArray(v) && v.every(isCid),
    time: isTime,
  },
  '#sync': { seq: isInt, did: isDid, blocks: isBytes, rev: isTid, time: isTime },
  '#identity': { seq: isInt, did: isDid, time: isTime },
  '#account': { seq: isInt, did: isDid, time: isTime, active: isBool },
  '#info': { name: isStr },
}
const OPTIONAL = {
  '#commit': { prevData: isCid },
  '#identity': { handle: isStr },
  '#account': { status: isStr },
  '#info': { message: isStr },
}

function bytesEqual(a, b) {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  )
}

// Decodes one frame; returns { header, body } or throws with a reason.
// Also checks that both objects are canonical DAG-CBOR.
export function decodeFrame(data) {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  const [header, rest] = decodeFirst(bytes, dagCbor.decodeOptions)
  const hdrBytes = bytes.subarray(0, bytes.length - rest.length)
  if (!bytesEqual(dagCbor.encode(header), hdrBytes)) throw new Error('header is not canonical DAG-CBOR')
  if (rest.length === 0) throw new Error('frame has no body')
  const body = dagCbor.decode(rest) // throws on trailing bytes
  if (!bytesEqual(dagCbor.encode(body), rest)) throw new Error('body is not canonical DAG-CBOR')
  if (header === null || typeof header !== 'object') throw new Error('header is not a map')
  return { header, body }
}

// Validates a decoded body of type t; returns a list of problems.
export function validateBody(t, body) {
  const problems = []
  const schema = SCHEMAS[t]
  if (!schema) return problems
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return [`${t}: body is not a map`]
  for (const [k, pred] of Object.entries(schema)) {
    if (!(k in body)) problems.push(`${t}: missing required field ${k}`)
    else if (!pred(body[k])) problems.push(`${t}: bad field ${k}`)
  }
  for (const [k, pred] of Object.entries(OPTIONAL[t] || {})) {
    if (k in body && body[k] !== null && !pred(body[k])) problems.push(`${t}: bad optional field ${k}`)
  }
  return problems
}

export class Consumer {
  // url: ws://host:port/xrpc/com.atproto.sync.subscribeRepos (without query).
  // opts.cursor: initial cursor (null = live); opts.reconnect: reconnect with
  // the last seq on drop; opts.keepBodies: keep decoded bodies in events.
  constructor(url, { cursor = null, reconnect = false, keepBodies = false, name = 'consumer' } = {}) {
    this.url = url
    this.initialCursor = cursor
    this.reconnect = reconnect
    this.keepBodies = keepBodies
    this.name = name
    this.events = [] // { seq, t, did, rev, commit, blocksHash, body? }
    this.errors = []
    this.errorFrames = []
    this.infos = []
    this.unknown = 0
    this.lastSeq = null
    this.connects = 0
    this.disconnects = 0
    this.closeCodes = []
    this.closed = false
    this.ws = null
    this.open = false
    this.listeners = new Set()
    this.backoff = 100
  }

  // Opens the connection; resolves once it is open (or after the first
  // failure when reconnect is false).
  start() {
    return new Promise((resolve) => this.#connect(resolve))
  }

  #connect(onFirst) {
    if (this.closed) return
    const cursor = this.lastSeq ?? this.initialCursor
    const url = cursor === null || cursor === undefined ? this.url : `${this.url}?cursor=${cursor}`
    const ws = new WebSocket(url, { maxPayload: 5_000_000 })
    this.ws = ws
    let settled = false
    const settle = () => {
      if (!settled) {
        settled = true
        onFirst?.()
      }
    }
    ws.on('open', () => {
      this.open = true
      this.connects++
      this.backoff = 100
      settle()
    })
    ws.on('message', (data, isBinary) => this.#onMessage(data, isBinary))
    ws.on('error', () => {})
    ws.on('close', (code) => {
      if (this.open) this.disconnects++
      this.open = false
      this.closeCodes.push(code)
      if (this.closed) return settle()
      if (!this.reconnect) {
        this.closed = true
        return settle()
      }
      const delay = this.backoff
      this.backoff = Math.min(this.backoff * 2, 1000)
      setTimeout(() => this.#connect(settle), delay)
    })
  }

  #problem(msg) {
    this.errors.push(`${this.name}: ${msg}`)
  }

  #onMessage(data, isBinary) {
    if (!isBinary) {
      this.#problem('text frame received')
      return
    }
    let frame
    try {
      frame = decodeFrame(data)
    } catch (err) {
      this.#problem(`undecodable frame: ${err.message}`)
      this.ws?.terminate()
      return
    }
    const { header, body } = frame
    if (header.op === -1) {
      this.errorFrames.push(body)
      return
    }
    if (header.op !== 1 || !isStr(header.t)) {
      this.#problem(`bad header ${JSON.stringify(header)}`)
      return
    }
    const t = header.t
    if (!SCHEMAS[t]) {
      this.unknown++
      return
    }
    for (const p of validateBody(t, body)) this.#problem(`seq ${body?.seq}: ${p}`)
    if (t === '#info') {
      this.infos.push(body)
      return
    }
    if (!isInt(body.seq)) return
    if (this.lastSeq !== null && body.seq <= this.lastSeq) {
      this.#problem(`seq not increasing: ${body.seq} after ${this.lastSeq}`)
    }
    this.lastSeq = this.lastSeq === null ? body.seq : Math.max(this.lastSeq, body.seq)
    const ev = {
      seq: body.seq,
      t,
      did: t === '#commit' ? body.repo : body.did,
      rev: body.rev ?? null,
      commit: t === '#commit' && isCid(body.commit) ? CID.asCID(body.commit).toString() : null,
      blocksHash: isBytes(body.blocks) ? crypto.createHash('sha256').update(body.blocks).digest('hex') : null,
    }
    if (this.keepBodies) ev.body = body
    this.events.push(ev)
    for (const fn of this.listeners) fn(ev)
  }

  // Stops reading the socket for ms milliseconds (a slow consumer: the
  // relay's sends back up into the TCP buffers), then reads again.
  // Resolves when reading has resumed.
  async pause(ms) {
    const ws = this.ws
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new Error(`${this.name}: not open, cannot pause`)
    ws.pause()
    await new Promise((r) => setTimeout(r, ms))
    if (ws.readyState === WebSocket.OPEN) ws.resume()
  }

  // Resolves when pred(this) is true; rejects after timeoutMs.
  async waitFor(pred, timeoutMs = 10000, what = 'condition') {
    const end = Date.now() + timeoutMs
    while (!pred(this)) {
      if (Date.now() > end) throw new Error(`${this.name}: timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  // Closes for good (no reconnect).
  async close() {
    this.closed = true
    const ws = this.ws
    if (!ws || ws.readyState === WebSocket.CLOSED) return
    await new Promise((resolve) => {
      ws.once('close', resolve)
      ws.terminate()
    })
  }
}

// NAME
//   pds.mjs - a PDS simulator that emits real signed repo commits.
// DESCRIPTION
//   An HTTP + WebSocket server on 127.0.0.1 (random port) whose public name is
//   `localhost:<port>`. It answers com.atproto.server.describeServer and a few
//   com.atproto.sync GETs (getRepoStatus, getLatestCommit, listRepos, getRepo)
//   and serves com.atproto.sync.subscribeRepos with a sequenced event log
//   (seq 1, 2, ...): `?cursor=N` replays every event with seq > N and then goes
//   live with no gap (replay and registration happen in the same tick);
//   a cursor beyond the head gets a `FutureCursor` error frame.
//
//   Accounts are real repositories built with @atproto/repo (real MST, real
//   signed commits) with K-256 or P-256 keys and did:plc DIDs registered in the
//   fake PLC with `#atproto_pds` = http://localhost:<port>. Every write emits a
//   #commit the way the reference PDS does (Sync 1.1): blocks = CAR of the new
//   blocks plus the covering proofs of every op, rooted at the signed commit;
//   ops with cid/prev; prevData = previous MST root; since = previous rev;
//   rev = TID; time. #identity, #account and #sync events are emitted on
//   demand, and so are forged commits (signed with the wrong key; rev not
//   after the account's current rev; correctly signed but whose ops do not
//   invert to prevData), which are never applied to the repo. stop() and
//   start(samePort) simulate a PDS that goes away and comes back with its
//   event log intact.
//
//   rotateKey(acct) rotates an account's signing key the way a PDS does: a new
//   keypair, a PLC update (an audit-log operation with its createdAt), then
//   #identity; later commits are signed with the new key. forgeOldKey(acct)
//   emits a commit signed with the key rotated away last (never applied).
//
//   `sent` lists every emitted event with its verdict (`valid` true/false and
//   `kind`) so scenarios can check what a relay forwarded.
//
//   Writes to one account are serialised; call sites may run accounts
//   concurrently.
// DIAGNOSTICS
//   start() rejects if the port cannot be bound. Repo errors from
//   @atproto/repo propagate as rejected promises from the write helpers.

import http from 'node:http'
import crypto from 'node:crypto'
import { WebSocketServer } from 'ws'
import {
  Repo,
  MemoryBlockstore,
  BlockMap,
  blocksToCarFile,
  signCommit,
  getFullRepo,
  concatBytesAsync,
} from '@atproto/repo'
import { Secp256k1Keypair, P256Keypair } from '@atproto/crypto'
import { encode as cborEncode, decode as cborDecode } from '@atproto/lex-cbor'
import { cidForCbor } from '@atproto/lex-data'
import { TID } from '@atproto/common-web'
import { randomPlcDid } from './plc.mjs'

// The sims' block store keeps every block it was given (as a PDS that keeps its history).
// @atproto/repo's MemoryBlockstore deletes a commit's removedCids; once (seen only on a loaded
// machine, about one basic run in ten, cause not pinned down) a later delete then met a
// MissingBlockError inside MST.trimTop, which swallows it and leaves the root untrimmed
// ({e: [], l: subtree}): a non-canonical tree whose commits no relay can invert to prevData.
// Never deleting removes the only way a block can go missing; assertCanonicalRoot checks it.
class KeepingBlockstore extends MemoryBlockstore {
  async applyCommit(commit) {
    this.root = commit.cid
    commit.newBlocks.forEach((bytes, cid) => {
      this.blocks.set(cid, bytes)
    })
  }
}

// A sim bug is reported as one, not blamed on the relay: the new MST root of every commit the
// sim calls valid must be canonical (a root node never holds only a left subtree).
function canonicalRoot(cd, storage) {
  const commit = cborDecode(cd.newBlocks.get(cd.cid))
  const bytes = cd.newBlocks.get(commit.data) ?? storage.blocks.get(commit.data)
  if (!bytes) return true
  const node = cborDecode(bytes)
  return !(Array.isArray(node.e) && node.e.length === 0 && node.l)
}
function assertCanonicalRoot(cd, storage, what) {
  if (!canonicalRoot(cd, storage)) {
    throw new Error(`pds sim: ${what} produced a non-canonical MST root (entries [], left subtree): harness bug`)
  }
}

const SUBSCRIBE_PATH = '/xrpc/com.atproto.sync.subscribeRepos'

// Returns the hex sha-256 of bytes (used to compare blocks byte for byte).
export function sha256hex(bytes) {
  return crypto.createHash('sha256').update(bytes).digest('hex')
}

// Encodes one event-stream frame: DAG-CBOR header {op, t} then the body.
export function encodeFrame(t, body) {
  const header = t === null ? cborEncode({ op: -1 }) : cborEncode({ op: 1, t })
  return Buffer.concat([Buffer.from(header), Buffer.from(cborEncode(body))])
}

const COLLECTIONS = ['app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.graph.follow']

export class PdsSim {
  // opts.plc: a FakePlc (required for accounts); opts.serverHeader: value of
  // the Server header on every HTTP/WS response (e.g. "x (atproto-relay)").
  constructor({ plc, serverHeader = 'e2e-pds-sim', name = 'pds' } = {}) {
    this.plc = plc
    this.serverHeader = serverHeader
    this.name = name
    this.seq = 0
    this.log = [] // { seq, frame }
    this.sent = [] // metadata of every emitted event, in seq order
    this.accounts = new Map() // did -> account
    this.subscribers = new Set()
    this.subscribeCount = 0 // WebSocket connections accepted, ever
    this.subscribeCursors = [] // the cursor query of each connection (null if none)
    this.describeCount = 0
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

  // Starts the HTTP/WebSocket server on 127.0.0.1:<random>; resolves to the port.
  async start(port = 0) {
    this.server = http.createServer((req, res) => this.#http(req, res))
    this.server.keepAliveTimeout = 120000
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 })
    this.wss.on('headers', (headers) => headers.push(`Server: ${this.serverHeader}`))
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
      this.server.listen(port, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
    return this.port
  }

  // Closes every connection and the listener.
  async stop() {
    if (!this.server) return
    for (const ws of this.subscribers) ws.terminate()
    this.subscribers.clear()
    this.wss.close()
    this.server.closeAllConnections?.()
    await new Promise((resolve) => this.server.close(() => resolve()))
    this.server = null
  }

  // Drops every live subscriber (the relay should reconnect with its cursor).
  dropSubscribers() {
    for (const ws of this.subscribers) ws.terminate()
    this.subscribers.clear()
  }

  // The sequencer starts again at 1, as a PDS whose database was reset: the log is forgotten
  // and every subscriber dropped, so a relay reconnecting with its cursor gets FutureCursor.
  // Repos, accounts and `sent` are kept (their events stay expected, by did/rev/cid).
  resetSequence() {
    this.dropSubscribers()
    this.seq = 0
    this.log = []
  }

  // Resolves once at least n subscribers are connected (or rejects on timeout).
  async waitSubscribers(n = 1, timeoutMs = 15000) {
    const end = Date.now() + timeoutMs
    while (this.subscribers.size < n) {
      if (Date.now() > end) {
        throw new Error(`${this.host}: no subscriber after ${timeoutMs} ms`)
      }
      await sleep(50)
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
    const acct = did ? this.accounts.get(did) : null
    switch (url.pathname) {
      case '/.well-known/did.json': {
        const doc = this.plc.doc(`did:web:localhost%3A${this.port}`)
        return doc ? json(200, doc) : json(404, { error: 'NotFound' })
      }
      case '/xrpc/com.atproto.server.describeServer':
        this.describeCount++
        return json(200, {
          did: `did:web:localhost`,
          availableUserDomains: ['.test'],
          inviteCodeRequired: false,
          links: {},
        })
      case '/xrpc/_health':
        return json(200, { version: 'e2e-sim' })
      case '/xrpc/com.atproto.sync.getRepoStatus':
        if (!acct) return json(400, { error: 'RepoNotFound', message: `no repo ${did}` })
        return json(200, {
          did,
          active: acct.active,
          ...(acct.status ? { status: acct.status } : {}),
          ...(acct.active ? { rev: acct.repo.commit.rev } : {}),
        })
      case '/xrpc/com.atproto.sync.getLatestCommit':
        if (!acct) return json(400, { error: 'RepoNotFound', message: `no repo ${did}` })
        return json(200, { cid: acct.repo.cid.toString(), rev: acct.repo.commit.rev })
      case '/xrpc/com.atproto.sync.listRepos':
        return json(200, {
          repos: [...this.accounts.values()].map((a) => ({
            did: a.did,
            head: a.repo.cid.toString(),
            rev: a.repo.commit.rev,
            active: a.active,
          })),
        })
      case '/xrpc/com.atproto.sync.getRepo':
        if (!acct) return json(400, { error: 'RepoNotFound', message: `no repo ${did}` })
        concatBytesAsync(getFullRepo(acct.storage, acct.repo.cid)).then(
          (car) => {
            res.writeHead(200, { 'content-type': 'application/vnd.ipld.car' })
            res.end(Buffer.from(car))
          },
          (err) => json(500, { error: 'InternalServerError', message: String(err) }),
        )
        return
      default:
        return json(404, { error: 'NotFound', message: url.pathname })
    }
  }

  #subscribe(ws, url) {
    this.subscribeCount++
    const c = url.searchParams.get('cursor')
    this.subscribeCursors.push(c)
    ws.on('error', () => {})
    ws.on('close', () => this.subscribers.delete(ws))
    if (c !== null) {
      const cursor = Number(c)
      if (!Number.isInteger(cursor) || cursor < 0) {
        ws.send(encodeFrame(null, { error: 'InvalidRequest', message: 'bad cursor' }))
        ws.close(1008)
        return
      }
      if (cursor > this.seq) {
        ws.send(encodeFrame(null, { error: 'FutureCursor', message: 'Cursor in the future.' }))
        ws.close(1008)
        return
      }
      // Replay and registration happen in one synchronous run: no event can
      // be emitted in between, so the switch to live has no gap or duplicate.
      for (const e of this.log) if (e.seq > cursor) ws.send(e.frame)
    }
    this.subscribers.add(ws)
  }

  #emit(t, body, meta) {
    const seq = ++this.seq
    const frame = encodeFrame(t, { ...body, seq })
    this.log.push({ seq, frame, t, body })
    this.sent.push({ seq, t, ...meta })
    for (const ws of this.subscribers) ws.send(frame)
    return seq
  }

  // Sends an event already emitted (its `sent` entry) again under a new seq, byte for byte
  // otherwise: a re-sent old commit, which a relay must not deliver twice.
  resend(e) {
    const orig = this.log.find((x) => x.seq === e.seq)
    const { seq, ...meta } = e
    this.#emit(orig.t, orig.body, { ...meta, valid: false, kind: 'resend' })
    return this.sent[this.sent.length - 1]
  }

  // Garbage for robustness tests. sendRaw: bytes (or a string, sent as a text frame) straight
  // to every subscriber, not logged, so a reconnecting relay does not see them again.
  sendRaw(data) {
    for (const ws of this.subscribers) ws.send(data, { binary: typeof data !== 'string' })
  }

  // A sequenced, logged frame with an arbitrary body (it takes a seq like any event and is
  // replayed on reconnect); meta is recorded in `sent` with valid: false.
  emitCustom(t, body, meta = {}) {
    return this.#emit(t, body, { valid: false, kind: 'garbage', ...meta })
  }

  #serial(acct, fn) {
    const p = acct.queue.then(fn)
    acct.queue = p.catch(() => {})
    return p
  }

  // Creates an account: keyType 'k256' | 'p256'. Registers the DID in the PLC
  // and (unless opts.quiet) emits what @atproto/pds's createAccount sequences:
  // #identity, #account(active), the genesis #commit and then a #sync of that
  // same commit (same rev). opts.genesis 'sync': only the #sync, no #commit;
  // opts.sync false: no #sync after the genesis #commit.
  // opts.register false: the DID is never put in the PLC (it resolves to 404).
  async createAccount({ keyType = 'k256', handle, genesis = 'commit', sync = true, quiet = false, register = true, didWeb = false } = {}) {
    const keypair =
      keyType === 'p256'
        ? await P256Keypair.create({ exportable: true })
        : await Secp256k1Keypair.create({ exportable: true })
    // didWeb: the host's own did:web (did:web:localhost%3A<port>), its document served by this
    // sim at /.well-known/did.json (kept in the PLC's table only to build the document).
    const did = didWeb ? `did:web:localhost%3A${this.port}` : randomPlcDid()
    handle = handle ?? `${did.slice(8, 16)}.test`
    if (register) this.plc.register(did, { signingKey: keypair.did(), pds: this.endpoint, handle })
    const storage = new KeepingBlockstore()
    const init = await Repo.formatInitCommit(storage, did, keypair, [])
    const repo = await Repo.createFromCommit(storage, init)
    const genesisBytes = await storage.getBytes(init.cid)
    const acct = {
      genesis: { cid: init.cid, rev: init.rev, bytes: genesisBytes },
      did,
      handle,
      keyType,
      keypair,
      storage,
      repo,
      active: true,
      status: null,
      revs: [init.rev],
      paths: [], // record paths currently in the repo
      queue: Promise.resolve(),
    }
    this.accounts.set(did, acct)
    if (!quiet) {
      this.emitIdentity(acct)
      this.emitAccount(acct, { active: true })
      if (genesis === 'sync') {
        this.emitSync(acct)
      } else {
        const blocks = await blocksToCarFile(init.cid, init.newBlocks)
        this.#emit(
          '#commit',
          {
            rebase: false,
            tooBig: false,
            repo: did,
            commit: init.cid,
            rev: init.rev,
            since: null,
            blocks,
            ops: [],
            blobs: [],
            time: new Date().toISOString(),
          },
          {
            did,
            rev: init.rev,
            commit: init.cid.toString(),
            valid: true,
            kind: 'commit',
            blocksHash: sha256hex(blocks),
          },
        )
        if (sync) await this.emitSync(acct)
      }
    }
    return acct
  }

  #randomWrites(acct, nOps) {
    const writes = []
    const used = new Set()
    for (let i = 0; i < nOps; i++) {
      const r = Math.random()
      const existing = acct.paths.filter((p) => !used.has(p))
      if (existing.length > 0 && r < 0.15) {
        const path = existing[Math.floor(Math.random() * existing.length)]
        used.add(path)
        const [collection, rkey] = path.split('/')
        writes.push({ action: 'update', collection, rkey, record: recordFor(collection, rkey) })
      } else if (existing.length > 0 && r < 0.3) {
        const path = existing[Math.floor(Math.random() * existing.length)]
        used.add(path)
        const [collection, rkey] = path.split('/')
        writes.push({ action: 'delete', collection, rkey })
      } else {
        const collection = COLLECTIONS[Math.floor(Math.random() * COLLECTIONS.length)]
        const rkey = TID.nextStr()
        used.add(`${collection}/${rkey}`)
        writes.push({ action: 'create', collection, rkey, record: recordFor(collection, rkey) })
      }
    }
    return writes
  }

  // Builds the #commit body for a formatted (not yet applied) commit.
  async #commitBody(acct, cd, writes, rev) {
    const blockMap = new BlockMap()
    blockMap.addMap(cd.newBlocks)
    blockMap.addMap(cd.relevantBlocks)
    const blocks = await blocksToCarFile(cd.cid, blockMap)
    const ops = []
    for (const w of writes) {
      const path = `${w.collection}/${w.rkey}`
      const prev = await acct.repo.data.get(path)
      if (w.action === 'create') {
        ops.push({ action: 'create', path, cid: await cidForRecord(w.record) })
      } else if (w.action === 'update') {
        ops.push({ action: 'update', path, cid: await cidForRecord(w.record), prev })
      } else {
        ops.push({ action: 'delete', path, cid: null, prev })
      }
    }
    const body = {
      rebase: false,
      tooBig: false,
      repo: acct.did,
      commit: cd.cid,
      rev,
      since: acct.repo.commit.rev,
      blocks,
      ops,
      blobs: [],
      prevData: acct.repo.commit.data,
      time: new Date().toISOString(),
    }
    return { body, blocks }
  }

  // Applies a valid write of nOps random record operations and emits its
  // #commit. Resolves to the emitted event's metadata.
  // fixed: [{action, path}] instead of random writes (records made up for create/update).
  write(acct, nOps = 1 + Math.floor(Math.random() * 3), fixed = null) {
    return this.#serial(acct, async () => {
      // @atproto/repo 0.9.1 still leaves an untrimmed root now and then for some multi-op
      // writes (a clean-clone CI run hit one in the selftest): formatCommit changes nothing
      // until applyCommit, so draw other random writes instead; the relay is not involved.
      const fixedWrites = () =>
        fixed.map(({ action, path }) => {
          const [collection, rkey] = path.split('/')
          return action === 'delete'
            ? { action, collection, rkey }
            : { action, collection, rkey, record: recordFor(collection, rkey) }
        })
      let writes = fixed ? fixedWrites() : this.#randomWrites(acct, nOps)
      let cd = await acct.repo.formatCommit(writes, acct.keypair)
      for (let i = 0; i < 20 && !fixed && !canonicalRoot(cd, acct.storage); i++) {
        this.untrimmedRedraws = (this.untrimmedRedraws || 0) + 1
        writes = this.#randomWrites(acct, nOps)
        cd = await acct.repo.formatCommit(writes, acct.keypair)
      }
      assertCanonicalRoot(cd, acct.storage, 'a write')
      const { body, blocks } = await this.#commitBody(acct, cd, writes, cd.rev)
      acct.repo = await acct.repo.applyCommit(cd)
      acct.revs.push(cd.rev)
      for (const w of writes) {
        const path = `${w.collection}/${w.rkey}`
        if (w.action === 'create') acct.paths.push(path)
        if (w.action === 'delete') acct.paths = acct.paths.filter((p) => p !== path)
      }
      const meta = {
        did: acct.did,
        rev: cd.rev,
        commit: cd.cid.toString(),
        valid: true,
        kind: 'commit',
        blocksHash: sha256hex(blocks),
      }
      this.#emit('#commit', body, meta)
      return this.sent[this.sent.length - 1]
    })
  }

  // Emits a well-formed commit signed with a key that is not the account's
  // (never applied). Resolves to its metadata.
  forgeBadSignature(acct) {
    return this.#serial(acct, async () => {
      const writes = this.#randomWrites(acct, 1)
      const wrongKey =
        acct.keyType === 'p256'
          ? await P256Keypair.create()
          : await Secp256k1Keypair.create()
      const cd = await acct.repo.formatCommit(writes, wrongKey)
      const { body, blocks } = await this.#commitBody(acct, cd, writes, cd.rev)
      this.#emit('#commit', body, {
        did: acct.did,
        rev: cd.rev,
        commit: cd.cid.toString(),
        valid: false,
        kind: 'badsig',
        blocksHash: sha256hex(blocks),
      })
      return this.sent[this.sent.length - 1]
    })
  }

  // Emits a correctly signed commit whose rev is not after the account's
  // current rev (equal to it, or an older one); never applied.
  forgeRevBack(acct) {
    return this.#serial(acct, async () => {
      const writes = this.#randomWrites(acct, 1)
      const cd = await acct.repo.formatCommit(writes, acct.keypair)
      const older = acct.revs.length > 1 && Math.random() < 0.5
      const rev = older ? acct.revs[acct.revs.length - 2] : acct.repo.commit.rev
      // The new MST root is the one the real (discarded) commit points at.
      const realCommit = cborDecode(cd.newBlocks.get(cd.cid))
      const commit = await signCommit(
        { did: acct.did, version: 3, rev, prev: null, data: realCommit.data },
        acct.keypair,
      )
      const commitBytes = cborEncode(commit)
      const commitCid = await cidForCbor(commitBytes)
      cd.newBlocks.delete(cd.cid)
      cd.relevantBlocks.delete(cd.cid)
      cd.newBlocks.set(commitCid, commitBytes)
      const forged = { ...cd, cid: commitCid, rev }
      const { body, blocks } = await this.#commitBody(acct, forged, writes, rev)
      this.#emit('#commit', body, {
        did: acct.did,
        rev,
        commit: commitCid.toString(),
        valid: false,
        kind: 'revback',
        blocksHash: sha256hex(blocks),
      })
      return this.sent[this.sent.length - 1]
    })
  }

  // Emits a correctly signed, well-formed commit (new rev, blocks with every
  // proof) that fails the Sync 1.1 inversion; never applied. mode
  // 'prevData': prevData names some other MST root; 'omitOp': two writes are
  // made but only the first is listed in ops. Resolves to its metadata.
  forgeBadInversion(acct, mode = 'prevData') {
    return this.#serial(acct, async () => {
      let writes = this.#randomWrites(acct, 2)
      if (mode === 'omitOp') {
        // Two creates, so the omitted change is certainly visible in the MST.
        writes = writes.map((w) => {
          if (w.action === 'create') return w
          const collection = COLLECTIONS[0]
          const rkey = TID.nextStr()
          return { action: 'create', collection, rkey, record: recordFor(collection, rkey) }
        })
      }
      const cd = await acct.repo.formatCommit(writes, acct.keypair)
      const { body, blocks } = await this.#commitBody(acct, cd, writes, cd.rev)
      if (mode === 'omitOp') {
        body.ops = body.ops.slice(0, 1)
      } else {
        body.prevData = await cidForCbor(cborEncode({ e2e: 'not a previous MST root', n: crypto.randomBytes(8) }))
      }
      this.#emit('#commit', body, {
        did: acct.did,
        rev: cd.rev,
        commit: cd.cid.toString(),
        valid: false,
        kind: 'badinv',
        blocksHash: sha256hex(blocks),
      })
      return this.sent[this.sent.length - 1]
    })
  }

  // Rotates the account's signing key: new keypair of the same type, PLC update (audit log
  // entry), then #identity. Serialised with the account's writes, so every commit queued
  // before is signed with the old key and every later one with the new key. Resolves to
  // {oldKey, newKey, createdAt, seq} (seq of the #identity).
  rotateKey(acct) {
    return this.#serial(acct, async () => {
      const next =
        acct.keyType === 'p256'
          ? await P256Keypair.create({ exportable: true })
          : await Secp256k1Keypair.create({ exportable: true })
      const old = acct.keypair
      acct.oldKeypairs = [...(acct.oldKeypairs ?? []), old]
      acct.keypair = next
      const op = this.plc.update(acct.did, { signingKey: next.did() })
      const seq = this.emitIdentity(acct)
      return { oldKey: old.did(), newKey: next.did(), createdAt: op.createdAt, seq }
    })
  }

  // Emits a well-formed commit with a fresh rev signed with the key rotated away last (a
  // stolen old key); never applied. Resolves to its metadata.
  forgeOldKey(acct) {
    return this.#serial(acct, async () => {
      const oldKey = acct.oldKeypairs?.[acct.oldKeypairs.length - 1]
      if (!oldKey) throw new Error(`${acct.did} never rotated its key`)
      const writes = this.#randomWrites(acct, 1)
      const cd = await acct.repo.formatCommit(writes, oldKey)
      const { body, blocks } = await this.#commitBody(acct, cd, writes, cd.rev)
      this.#emit('#commit', body, {
        did: acct.did,
        rev: cd.rev,
        commit: cd.cid.toString(),
        valid: false,
        kind: 'oldkey',
        blocksHash: sha256hex(blocks),
      })
      return this.sent[this.sent.length - 1]
    })
  }

  // Emits #identity (optionally after changing the handle in the PLC).
  emitIdentity(acct, { handle } = {}) {
    if (handle) {
      acct.handle = handle
      this.plc.update(acct.did, { handle })
    }
    return this.#emit(
      '#identity',
      { did: acct.did, handle: acct.handle, time: new Date().toISOString() },
      { did: acct.did, valid: true, kind: 'identity' },
    )
  }

  // Emits #account with the given status (and records it for getRepoStatus).
  emitAccount(acct, { active = true, status } = {}) {
    acct.active = active
    acct.status = status ?? null
    const body = { did: acct.did, active, time: new Date().toISOString() }
    if (status) body.status = status
    return this.#emit('#account', body, { did: acct.did, valid: true, kind: 'account', active })
  }

  // Emits #sync for the account's current commit (CAR holding just the commit), as
  // @atproto/pds does at createAccount and activateAccount.
  emitSync(acct) {
    return this.#serial(acct, async () => {
      const bytes = await acct.storage.getBytes(acct.repo.cid)
      return this.#emitSyncOf(acct, acct.repo.cid, bytes, acct.repo.commit.rev, { valid: true, kind: 'sync' })
    })
  }

  async #emitSyncOf(acct, cid, commitBytes, rev, meta, extraBlocks = null) {
    const bm = new BlockMap()
    bm.set(cid, commitBytes)
    if (extraBlocks) bm.addMap(extraBlocks)
    const blocks = await blocksToCarFile(cid, bm)
    this.#emit(
      '#sync',
      { did: acct.did, blocks, rev, time: new Date().toISOString() },
      { did: acct.did, rev, commit: cid.toString(), blocksHash: sha256hex(blocks), ...meta },
    )
    return this.sent[this.sent.length - 1]
  }

  // The repo is replaced by a new state (a fresh repository holding nRecords new records,
  // signed with a new rev), announced with a #sync only, as a PDS does after a repair or an
  // import: later #commits chain from it (since = its rev, prevData = its data).
  resetRepo(acct, nRecords = 2) {
    return this.#serial(acct, async () => {
      const writes = []
      for (let i = 0; i < nRecords; i++) {
        const collection = COLLECTIONS[i % COLLECTIONS.length]
        const rkey = TID.nextStr()
        writes.push({ action: 'create', collection, rkey, record: recordFor(collection, rkey) })
      }
      const storage = new KeepingBlockstore()
      const init = await Repo.formatInitCommit(storage, acct.did, acct.keypair, writes)
      acct.storage = storage
      acct.repo = await Repo.createFromCommit(storage, init)
      acct.revs.push(init.rev)
      acct.paths = writes.map((w) => `${w.collection}/${w.rkey}`)
      const bytes = await storage.getBytes(init.cid)
      return this.#emitSyncOf(acct, init.cid, bytes, init.rev, { valid: true, kind: 'reset' })
    })
  }

  // Forged #sync events (never applied), mode:
  //   'old'    the account's genesis commit again, correctly signed, with its (older) rev;
  //   'badsig' the current data under a new rev, signed with another key;
  //   'big'    a correctly signed new-rev commit of the current data, but the CAR carries
  //            extra blocks past the lexicon's 10,000 bytes;
  //   'future' a correctly signed commit whose rev is an hour ahead.
  forgeSync(acct, mode) {
    return this.#serial(acct, async () => {
      if (mode === 'old') {
        const first = acct.genesis
        return this.#emitSyncOf(acct, first.cid, first.bytes, first.rev, { valid: false, kind: 'sync-old' })
      }
      const key =
        mode === 'badsig'
          ? acct.keyType === 'p256'
            ? await P256Keypair.create()
            : await Secp256k1Keypair.create()
          : acct.keypair
      const rev = mode === 'future' ? TID.fromTime((Date.now() + 3600 * 1000) * 1000, 0).toString() : TID.nextStr()
      const commit = await signCommit(
        { did: acct.did, version: 3, rev, prev: null, data: acct.repo.commit.data },
        key,
      )
      const bytes = cborEncode(commit)
      const cid = await cidForCbor(bytes)
      let extra = null
      if (mode === 'big') {
        extra = new BlockMap()
        for (let i = 0; i < 3; i++) {
          const b = cborEncode({ pad: crypto.randomBytes(4000) })
          extra.set(await cidForCbor(b), b)
        }
      }
      return this.#emitSyncOf(acct, cid, bytes, rev, { valid: false, kind: `sync-${mode}` }, extra)
    })
  }

  // Waits until every queued write of every account has been emitted.
  async idle() {
    await Promise.all([...this.accounts.values()].map((a) => a.queue))
  }
}

// Returns a lexicon-shaped record whose content is unique (random parts), so
// two records never share a CID (MemoryBlockstore drops a block shared by a
// deleted record and a live one).
function recordFor(collection, rkey) {
  const createdAt = new Date().toISOString()
  const nonce = crypto.randomBytes(6).toString('hex')
  if (collection === 'app.bsky.feed.post') {
    return { $type: collection, text: `post ${rkey} ${nonce}`, createdAt }
  }
  if (collection === 'app.bsky.graph.follow') {
    return { $type: collection, subject: randomPlcDid(), createdAt }
  }
  return {
    $type: collection,
    subject: {
      uri: `at://${randomPlcDid()}/app.bsky.feed.post/${rkey}`,
      cid: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm',
    },
    createdAt,
  }
}

async function cidForRecord(record) {
  return cidForCbor(cborEncode(record))
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

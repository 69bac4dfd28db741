// NAME
//   verify.mjs - independent verification of firehose events with @atproto/repo.
// DESCRIPTION
//   Checks #commit and #sync bodies the way a careful relay or AppView would,
//   using only Bluesky's own libraries: the DID document is fetched from the
//   PLC directory (signing key = `#atproto` verification method, PDS =
//   `#atproto_pds`), the CAR is parsed with every block hash checked, the
//   commit signature is verified against the DID key, every op is proven
//   against the new MST (verifyProofs), the inverse of the ops applied to the
//   partial new tree must give `prevData` (Sync 1.1 inversion), and per DID
//   the rev must increase and `since`/`prevData` must chain to the previous
//   accepted commit. Used by the simulator self-test, so the simulator is known
//   correct independently of baton.
// DIAGNOSTICS
//   verify() never throws for bad input: it returns { ok: false, reason }.

import { readCarWithRoot, verifyProofs, verifyCommitSig, MST, MemoryBlockstore } from '@atproto/repo'
import { decode as lexDecode } from '@atproto/lex-cbor'
import { decodeCid } from '@atproto/lex-data'

const toLexCid = (cid) => (cid ? decodeCid(cid.bytes) : null)

export class EventVerifier {
  // plcUrl: base URL of the PLC directory; expectedPds: the endpoint the
  // events came from (host authority).
  // strictChain: a `since`/`prevData` that does not chain to the previous
  // accepted commit is a failure (true) or accepted as a discontinuity (false,
  // what a relay does).
  constructor({ plcUrl, expectedPds, strictChain = true }) {
    this.strictChain = strictChain
    this.plcUrl = plcUrl
    this.expectedPds = expectedPds
    this.docs = new Map()
    this.state = new Map() // did -> { rev, data (string) }
  }

  async #identity(did) {
    if (this.docs.has(did)) return this.docs.get(did)
    let res
    try {
      res = await fetch(`${this.plcUrl}/${did}`)
    } catch {
      res = await fetch(`${this.plcUrl}/${did}`) // one retry for a transient failure
    }
    if (res.status !== 200) throw new Error(`PLC answered ${res.status} for ${did}`)
    const doc = await res.json()
    if (doc.id !== did) throw new Error('DID document id mismatch')
    const vm = (doc.verificationMethod || []).find((m) => m.id === `${did}#atproto` || m.id === '#atproto')
    const svc = (doc.service || []).find((s) => s.id === '#atproto_pds' || s.id === `${did}#atproto_pds`)
    if (!vm || vm.type !== 'Multikey' || !vm.publicKeyMultibase) throw new Error('no #atproto Multikey')
    if (!svc) throw new Error('no #atproto_pds service')
    const ident = { didKey: `did:key:${vm.publicKeyMultibase}`, pds: svc.serviceEndpoint }
    this.docs.set(did, ident)
    return ident
  }

  // Forgets cached identities (after #identity).
  purge(did) {
    this.docs.delete(did)
  }

  // Verifies one decoded body of type t ('#commit' or '#sync'); updates the
  // per-DID state when it is accepted. Returns { ok, reason }.
  async verify(t, body) {
    try {
      const did = t === '#commit' ? body.repo : body.did
      const ident = await this.#identity(did)
      if (ident.pds !== this.expectedPds) return fail(`host authority: PDS is ${ident.pds}`)
      const car = await readCarWithRoot(body.blocks) // checks every block's hash
      const commitBytes = car.blocks.get(car.root)
      if (!commitBytes) return fail('commit block missing from CAR')
      const commit = lexDecode(commitBytes)
      if (commit.version !== 3) return fail('commit version is not 3')
      if (commit.did !== did) return fail('commit did differs from the event')
      if (commit.rev !== body.rev) return fail('commit rev differs from the event')
      const st = this.state.get(did)
      if (t === '#sync') {
        if (!(await verifyCommitSig(commit, ident.didKey))) return fail('bad signature')
        // A #sync states the repo's current state: its rev may equal the last one (createAccount).
        if (st && commit.rev < st.rev) return fail('rev older than the previous one')
        this.state.set(did, { rev: commit.rev, data: commit.data.toString() })
        return { ok: true }
      }
      if (car.root.toString() !== body.commit.toString()) return fail('CAR root is not the commit')
      if (body.rebase !== false || body.tooBig !== false) return fail('rebase/tooBig set')
      // Signature + every op proven against the new tree.
      const claims = body.ops.map((op) => {
        const [collection, rkey] = op.path.split('/')
        return { collection, rkey, cid: toLexCid(op.cid) }
      })
      let proofs
      try {
        proofs = await verifyProofs(body.blocks, claims, did, ident.didKey)
      } catch (err) {
        return fail(/signature/i.test(err.message) ? 'bad signature' : `proofs: ${err.message}`)
      }
      if (proofs.unverified.length > 0) return fail(`${proofs.unverified.length} op(s) not proven by the MST`)
      if (st && body.rev <= st.rev) return fail('rev not after the previous one')
      if (Date.parse(tidTime(body.rev)) > Date.now() + 5 * 60 * 1000) return fail('rev too far in the future')
      if (st && this.strictChain) {
        if (body.since !== st.rev) return fail(`since ${body.since} is not the previous rev ${st.rev}`)
        if (!body.prevData || body.prevData.toString() !== st.data) return fail('prevData is not the previous data')
      }
      // Sync 1.1 inversion: undo the ops on the partial new tree.
      if (body.prevData) {
        let mst = MST.load(new MemoryBlockstore(car.blocks), commit.data)
        for (const op of [...body.ops].reverse()) {
          if (op.action === 'create') mst = await mst.delete(op.path)
          else if (op.action === 'update') mst = await mst.update(op.path, toLexCid(op.prev))
          else mst = await mst.add(op.path, toLexCid(op.prev))
        }
        const root = await mst.getPointer()
        if (root.toString() !== body.prevData.toString()) return fail('inverted ops do not give prevData')
      } else if (st && this.strictChain) {
        return fail('prevData missing')
      }
      this.state.set(did, { rev: body.rev, data: commit.data.toString() })
      return { ok: true }
    } catch (err) {
      return fail(`error: ${err.message}`)
    }
  }
}

function fail(reason) {
  return { ok: false, reason }
}

const S32 = '234567abcdefghijklmnopqrstuvwxyz'

// Returns the ISO time encoded in a TID (microseconds since the epoch).
export function tidTime(tid) {
  let n = 0n
  for (const ch of tid.slice(0, 11)) n = n * 32n + BigInt(S32.indexOf(ch))
  return new Date(Number(n / 1000n)).toISOString()
}

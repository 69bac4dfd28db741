// NAME
//   tap.mjs - an @atproto/sync Firehose that records what it sees, as comparable keys.
// DESCRIPTION
//   Tap connects the official consumer library to a subscribeRepos endpoint with commit
//   verification ON (unauthenticatedCommits: false: every commit's signature is checked
//   against the DID's key from the PLC directory, and its proof against the ops) and
//   records each event as a key that does not depend on the sender's seq numbers, so a
//   relay's stream can be compared with the PDS's own:
//     #commit   did rev commit-cid [action path cid ...]   (the Firehose emits one event
//               per op; ops of one seq are folded back into their commit)
//     #sync     did rev commit-cid
//     #identity did handle
//     #account  did active status
//   On a lost connection the Firehose reconnects with cursor = the last seq seen.
// DIAGNOSTICS
//   `problems`: parse/validation errors (a bad signature, a bad proof, an invalid
//   event) and seqs that did not increase. `subErrors`: connection errors (expected while
//   the relay is down). Nothing is thrown.

import { Firehose } from '@atproto/sync'

export class Tap {
  constructor(name, service, idResolver, { cursor } = {}) {
    this.name = name
    this.events = [] // {seq, did, t, key}
    this.problems = []
    this.subErrors = 0
    this.lastSeq = cursor
    this.receivedSeq = cursor // the last seq that arrived (handlers may still be queued)
    this.connects = 0
    this.cleanCloses = 0
    this.queue = Promise.resolve()
    this.firehose = new Firehose({
      idResolver,
      service,
      unauthenticatedCommits: false,
      // handles are not resolvable here (no DNS for .test): take the event's handle as sent
      unauthenticatedHandles: true,
      subscriptionReconnectDelay: 300,
      maxReconnectSeconds: 1, // ws-client's backoff, 64 s by default
      // Firehose 0.1.40 passes `getCursor` itself (not its result) as the cursor on a
      // (re)connect, so the cursor goes through a runner, the way the library reads it. The
      // runner's handlers run one after another in arrival order (a queue), like getCursor's.
      runner: {
        getCursor: () => {
          this.connects++
          return this.receivedSeq
        },
        trackEvent: (did, seq, handler) => {
          this.receivedSeq = seq
          this.queue = this.queue.then(handler, handler)
          return this.queue
        },
      },
      handleEvent: (evt) => this.#record(evt),
      onError: (err) => {
        if (err?.name === 'FirehoseSubscriptionError' || err?.constructor?.name === 'FirehoseSubscriptionError') {
          this.subErrors++
          return
        }
        const ev = err?.event ?? err?.value
        const what = ev ? `${ev.$type ?? ''} seq ${ev.seq} ${ev.repo ?? ev.did ?? ''}` : ''
        this.problems.push(`${err?.constructor?.name ?? 'Error'} ${what}: ${err?.cause?.message ?? err?.message ?? err}`)
      },
    })
  }

  // The Firehose's start() returns, and it stops consuming, when the server closes the
  // WebSocket cleanly (ws-client: "Other side cleanly ended stream"), as baton does on
  // SIGTERM; a real consumer would start again, so Tap does (from its cursor).
  start() {
    this.stopped = false
    this.firehose.start().then(() => {
      if (this.stopped) return
      this.cleanCloses++
      setTimeout(() => this.stopped || this.start(), 300)
    })
  }

  async stop() {
    this.stopped = true
    await this.queue
    await Promise.race([this.firehose.destroy(), new Promise((r) => setTimeout(r, 3000))])
  }

  #record(evt) {
    if (this.lastSeq !== undefined && evt.seq < this.lastSeq) {
      this.problems.push(`seq went back: ${evt.seq} after ${this.lastSeq}`)
    }
    if (evt.event === 'create' || evt.event === 'update' || evt.event === 'delete') {
      const op = `${evt.event} ${evt.collection}/${evt.rkey} ${evt.cid ? evt.cid.toString() : '-'}`
      const last = this.events[this.events.length - 1]
      if (last && last.t === '#commit' && last.seq === evt.seq) {
        last.ops.push(op)
        last.key = `#commit ${last.did} ${last.rev} ${last.commit} [${last.ops.sort().join(', ')}]`
      } else {
        if (this.lastSeq !== undefined && evt.seq === this.lastSeq) {
          this.problems.push(`seq repeated: ${evt.seq}`)
        }
        const e = { seq: evt.seq, did: evt.did, t: '#commit', rev: evt.rev, commit: evt.commit.toString(), ops: [op] }
        e.key = `#commit ${e.did} ${e.rev} ${e.commit} [${op}]`
        this.events.push(e)
      }
    } else {
      if (this.lastSeq !== undefined && evt.seq === this.lastSeq) this.problems.push(`seq repeated: ${evt.seq}`)
      let key
      if (evt.event === 'sync') key = `#sync ${evt.did} ${evt.rev} ${evt.cid.toString()}`
      else if (evt.event === 'identity') key = `#identity ${evt.did} ${evt.handle ?? '-'}`
      else if (evt.event === 'account') key = `#account ${evt.did} ${evt.active} ${evt.status ?? '-'}`
      else key = `? ${JSON.stringify(evt).slice(0, 100)}`
      this.events.push({ seq: evt.seq, did: evt.did, t: `#${evt.event}`, key })
    }
    this.lastSeq = evt.seq
  }
}

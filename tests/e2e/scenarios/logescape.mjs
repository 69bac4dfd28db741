// NAME
//   logescape.mjs - untrusted strings never forge a log line or reach a terminal raw (issue 7).
// DESCRIPTION
//   A requestCrawl whose hostname holds \n, \r, ESC, quotes and a whole fake log line is
//   refused (400, syntax) with a JSON body that has no raw control byte, and the relay's log
//   gets no forged line: the hostname appears escaped (\n, \r, \x1b) on the refusal's own
//   line.  An upstream sends an error frame whose error text holds a newline, CR and ANSI
//   escapes: ingest logs it on one line, escaped.  The log has no raw ESC byte at all.
// DIAGNOSTICS
//   One `ok` / `not ok` line per property.

import fs from 'node:fs'
import { relayWithPdses } from '../lib/setup.mjs'
import { until } from '../lib/hostile.mjs'

export const name = 'logescape'

const FAKE = '2026-01-01T00:00:00.000Z baton-ingest pid=1 warn: FORGED'

// CBOR text string (short strings only)
function tstr(s) {
  const b = Buffer.from(s, 'utf8')
  if (b.length < 24) return Buffer.concat([Buffer.from([0x60 + b.length]), b])
  if (b.length < 256) return Buffer.concat([Buffer.from([0x78, b.length]), b])
  throw new Error('too long')
}

export async function run(checks, ctx) {
  const { pdses, baton } = await relayWithPdses(checks, ctx, { names: ['esc'], live: false })
  const [pds] = pdses

  const evil = `evil.example.com\n${FAKE}1\r\x1b[31m"quoted" 'q'\x1b[0m`
  const res = await fetch(`${baton.httpUrl}/xrpc/com.atproto.sync.requestCrawl`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ hostname: evil }),
    signal: AbortSignal.timeout(20000),
  })
  const text = await res.text()
  checks.ok('requestCrawl of a hostname with \\n, \\r, ESC, quotes: refused 400', res.status === 400, `HTTP ${res.status} ${text}`)
  let parsed = null
  try { parsed = JSON.parse(text) } catch {}
  checks.ok('its body is JSON without a raw control byte', parsed !== null && !/[\x00-\x1f\x7f]/.test(text), JSON.stringify(text))

  // An error frame {op:-1} {error: "..."} whose text holds a newline and ANSI escapes.
  const errText = `Bad\n${FAKE}2\r\x1b[2J\x1b[31mX`
  const frame = Buffer.concat([Buffer.from([0xa1]), tstr('op'), Buffer.from([0x20]), Buffer.from([0xa1]), tstr('error'), tstr(errText)])
  pds.sendRaw(frame)

  const log = () => fs.readFileSync(baton.logPath, 'latin1')
  const sawCrawl = await until(() => log().includes('refused'), 10000)
  const sawErr = await until(() => log().includes('error frame Bad\\n'), 10000)
  const L = log()
  const lines = L.split('\n')
  checks.ok('the refused hostname is logged escaped on its own line', sawCrawl && lines.some((l) => l.includes('evil.example.com\\n2026-01-01T00:00:00.000Z') && l.includes('\\r\\x1b[31m"quoted"')),
    lines.filter((l) => l.includes('evil')).join(' | '))
  checks.ok('the error frame is logged escaped on one line', sawErr && lines.some((l) => l.includes('error frame Bad\\n2026-01-01') && l.includes('\\r\\x1b[2J\\x1b[31mX')),
    lines.filter((l) => l.includes('error frame')).join(' | '))
  const forged = lines.filter((l) => l.startsWith('2026-01-01T00:00:00.000Z') || /^[^\\]*FORGED/.test(l))
  checks.ok('no forged log line', forged.length === 0, forged.join(' | '))
  checks.ok('no raw ESC or CR byte in the log', !/[\x1b\r]/.test(L))
}

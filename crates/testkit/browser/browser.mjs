// browser.mjs: what the scripts run by corral_testkit::browser share:
// reading their JSON input, launching Debian's Chromium headless through
// playwright-core, serving pages from 127.0.0.1, watching what a page sends
// to other origins, and printing one JSON result.
//
// A script run by `Browser::run_script` imports it as './browser.mjs'.

import { readFile } from 'node:fs/promises'
import http from 'node:http'
import { chromium } from 'playwright-core'

// Chromium as installed by corral_testkit::browser; CORRAL_CHROMIUM names
// another.
export const CHROMIUM = process.env.CORRAL_CHROMIUM || '/usr/bin/chromium'

// Headless, unsandboxed (tests run as root), and quiet: without the
// background-networking flags Chromium keeps calling hosts that a closed
// network refuses. playwright-core adds `--headless` and a new, empty
// `--user-data-dir` of its own to each launch.
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS })
}

// The script's input: JSON, on stdin.
export function readInput() {
  return new Promise((resolve, reject) => {
    const chunks = []
    process.stdin.on('data', (chunk) => chunks.push(chunk))
    process.stdin.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
      } catch (error) {
        reject(new Error(`the input is not JSON: ${error.message}`))
      }
    })
    process.stdin.on('error', reject)
  })
}

// Prints `value` as one JSON line and exits 0 once it is out: the browser's
// or a server's sockets must not keep the process alive.
export function writeOutput(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`, () => process.exit(0))
}

// Serves `routes` ({ '/path': { path, type } }, files read on each request)
// on 127.0.0.1, port chosen by the OS. Anything else is 404. Resolves to
// `{ origin, close }`.
export function serve(routes) {
  const server = http.createServer(async (request, response) => {
    const route = routes[new URL(request.url, 'http://x').pathname]
    if (request.method !== 'GET' || route === undefined) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      return
    }
    try {
      const body = await readFile(route.path)
      response.writeHead(200, { 'content-type': route.type, 'cache-control': 'no-store' })
      response.end(body)
    } catch (error) {
      response.writeHead(500, { 'content-type': 'text/plain' }).end(`${error.message}\n`)
    }
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      resolve({
        origin: `http://127.0.0.1:${port}`,
        close: () => {
          server.closeAllConnections()
          server.close()
        },
      })
    })
  })
}

// Records, through the DevTools protocol, every request `page` makes to an
// origin other than `ownOrigin`, CORS preflights included (playwright's own
// request events leave those out): `{ method, url, type, status, headers,
// failure }` with the answer's headers in lower case. Resolves to the list,
// filled as the page goes on.
export async function watchNetwork(page, ownOrigin) {
  const session = await page.context().newCDPSession(page)
  const byId = new Map()
  const requests = []
  const entry = (id) => byId.get(id)
  session.on('Network.requestWillBeSent', (event) => {
    const { requestId, request, redirectResponse, initiator } = event
    if (new URL(request.url).origin === ownOrigin) return
    // A redirect reuses the id: its answer closes the previous entry.
    if (redirectResponse && entry(requestId)) close(entry(requestId), redirectResponse)
    // Chromium gives a preflight the type `Other`, and its initiator says
    // what it is.
    const type = initiator?.type === 'preflight' ? 'Preflight' : event.type
    const record = { method: request.method, url: request.url, type, status: null, headers: {}, failure: null }
    byId.set(requestId, record)
    requests.push(record)
  })
  const close = (record, response) => {
    record.status = response.status
    record.headers = Object.fromEntries(
      Object.entries(response.headers).map(([name, value]) => [name.toLowerCase(), value]),
    )
  }
  session.on('Network.responseReceived', ({ requestId, response }) => {
    if (entry(requestId)) close(entry(requestId), response)
  })
  session.on('Network.loadingFailed', ({ requestId, errorText, blockedReason, corsErrorStatus }) => {
    const record = entry(requestId)
    if (!record) return
    const cors = corsErrorStatus ? ` (CORS: ${corsErrorStatus.corsError} ${corsErrorStatus.failedParameter})` : ''
    record.failure = `${errorText}${blockedReason ? ` [${blockedReason}]` : ''}${cors}`
  })
  await session.send('Network.enable')
  return requests
}

// uppy-run.mjs: uploads files with Uppy's Tus plugin in headless Chromium,
// as a JSON config on stdin says, and prints a JSON report on stdout.
// Driven by corral_testkit::browser, whose UppyRun and UppyReport document
// both shapes.
//
// It serves uppy.html, uppy-page.mjs and Uppy's prebuilt bundle from
// 127.0.0.1 on a port of its own: the page's origin is never the tus
// server's, so every request to it is cross-origin (a preflight, then the
// answer's exposed headers). The page makes the files, uploads them, and
// resolves to its report; the requests the page made to other origins,
// seen through the DevTools protocol, and what its console said, are added.
//
// Exits 0 once it has printed a report, whether or not every upload
// succeeded; 1 when anything else stops it.

import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { launch, readInput, serve, watchNetwork, writeOutput } from './browser.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const DEFAULT_TIMEOUT_MS = 120_000

const ROUTES = {
  '/': { path: join(here, 'uppy.html'), type: 'text/html; charset=utf-8' },
  '/uppy-page.mjs': { path: join(here, 'uppy-page.mjs'), type: 'text/javascript' },
  '/uppy/uppy.min.mjs': {
    path: join(here, 'node_modules', 'uppy', 'dist', 'uppy.min.mjs'),
    type: 'text/javascript',
  },
}

async function main() {
  const config = await readInput()
  const timeoutMs = config.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const site = await serve(ROUTES)
  const browser = await launch()
  let report
  try {
    const page = await browser.newPage()
    const messages = []
    page.on('console', (message) => messages.push(`${message.type()}: ${message.text()}`))
    page.on('pageerror', (error) => messages.push(`pageerror: ${error.message}`))
    const requests = await watchNetwork(page, site.origin)
    await page.goto(`${site.origin}/`)
    await page.waitForFunction(() => typeof window.corralUppy === 'function', null, {
      timeout: timeoutMs,
    })
    let timer
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs)
    })
    const result = await Promise.race([
      page.evaluate((config) => window.corralUppy(config), config),
      timedOut,
    ])
    clearTimeout(timer)
    const files = result?.files ?? (await page.evaluate(() => window.corralUppyFiles?.() ?? []))
    report = {
      origin: site.origin,
      timedOut: result === null,
      files,
      successful: result?.successful ?? 0,
      failed: result?.failed ?? 0,
      requests,
      console: messages,
    }
  } finally {
    await browser.close().catch(() => {})
    site.close()
  }
  writeOutput(report)
}

main().catch((error) => {
  process.stderr.write(`uppy-run.mjs: ${error?.stack ?? error}\n`)
  process.exit(1)
})

// tus-run.mjs: uploads files with the real tus-js-client as a JSON config
// says, and prints a JSON report on stdout. Driven by corral_testkit::node,
// whose TusRun and TusReport document both shapes.
//
//   node tus-run.mjs [CONFIG.json | -]     (no argument or `-`: from stdin)
//
// Exits 0 once it has printed a report, whether or not every upload
// succeeded; 2 when the config is unusable; 1 when anything else stops it.
//
// Files are `{size, seed}`, whose bytes `generate` makes (the Rust side has
// the same generator, `corral_testkit::node::file_bytes`), or `{path}`.
// Each file's bytes are made (or read) and hashed when its upload starts,
// on the clock; with `prepare`, all of them before the clock starts, so
// that the clock times the uploads alone (they are then all in memory).
//
// With `cutAt`, each file's upload is aborted (`abort(false)`: no DELETE)
// once its progress passes that fraction, and a second tus.Upload of the
// same bytes finds the first through `findPreviousUploads()` and resumes it.
// tus-js-client's Node defaults cannot do that: its urlStorage is a
// NoopUrlStorage that keeps nothing, so both uploads share a
// MemoryUrlStorage and a fingerprint of the file's seed and size.
//
// tus-js-client throttles progress inside a request to one call per 100 ms,
// which on 127.0.0.1 means a whole file is often sent between two calls.
// So the first upload's HTTP stack (tus-js-client's own, wrapped) feeds the
// request that crosses the cut from a stream that stops at the cut and then
// reports exactly that progress: the abort happens mid-request, at the
// cut's byte, every time.

import { createHash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import os from 'node:os'
import { Readable } from 'node:stream'
import tus from 'tus-js-client'

const PROTOCOLS = ['tus-v1', 'ietf-draft-03', 'ietf-draft-05']
const DEFAULT_TIMEOUT_MS = 120_000

class ConfigError extends Error {}

// The bytes of a generated file: xorshift32 words, little-endian, from a
// state derived from the seed; the last word cut short to `size`.
function generate(size, seed) {
  const words = new Uint32Array(Math.ceil(size / 4))
  let x = (Math.imul(seed, 0x9e3779b1) ^ 0x85ebca6b) >>> 0
  if (x === 0) x = 1
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    words[i] = x
  }
  const bytes = Buffer.from(words.buffer)
  if (os.endianness() === 'BE') bytes.swap32()
  return bytes.subarray(0, size)
}

// tus-js-client's UrlStorage interface, in memory.
class MemoryUrlStorage {
  constructor() {
    this.uploads = new Map()
    this.next = 0
  }

  findAllUploads() {
    return Promise.resolve([...this.uploads.values()])
  }

  findUploadsByFingerprint(fingerprint) {
    const found = [...this.uploads.values()].filter((u) => u.fingerprint === fingerprint)
    return Promise.resolve(found)
  }

  removeUpload(urlStorageKey) {
    this.uploads.delete(urlStorageKey)
    return Promise.resolve()
  }

  addUpload(fingerprint, upload) {
    const urlStorageKey = `tus::${fingerprint}::${this.next++}`
    this.uploads.set(urlStorageKey, { ...upload, fingerprint, urlStorageKey })
    return Promise.resolve(urlStorageKey)
  }
}

// tus-js-client's own Node HTTP stack, except that the one request whose
// body crosses byte `cutByte` of the file streams its body only up to that
// byte, then reports that progress, on which the upload aborts.
class CuttingHttpStack {
  constructor(cutByte) {
    this.inner = new tus.DefaultHttpStack()
    this.cutByte = cutByte
    this.cut = false
  }

  createRequest(method, url) {
    return new CuttingRequest(this, this.inner.createRequest(method, url))
  }

  getName() {
    return 'CuttingHttpStack'
  }
}

class CuttingRequest {
  constructor(stack, inner) {
    this.stack = stack
    this.inner = inner
    this.progress = () => {}
  }

  getMethod() {
    return this.inner.getMethod()
  }

  getURL() {
    return this.inner.getURL()
  }

  setHeader(name, value) {
    this.inner.setHeader(name, value)
  }

  getHeader(name) {
    return this.inner.getHeader(name)
  }

  setProgressHandler(handler) {
    this.progress = handler
    this.inner.setProgressHandler(handler)
  }

  abort() {
    return this.inner.abort()
  }

  getUnderlyingObject() {
    return this.inner.getUnderlyingObject()
  }

  send(body = null) {
    const { stack } = this
    if (stack.cut || !(body instanceof Uint8Array)) return this.inner.send(body)
    // A POST carries the file from its start (creation with upload).
    const start = this.getMethod() === 'POST' ? 0 : Number(this.getHeader('Upload-Offset'))
    const stop = stack.cutByte - start
    if (!(stop > 0 && stop <= body.length)) return this.inner.send(body)
    stack.cut = true
    const { progress } = this
    let position = 0
    let reported = false
    const source = new Readable({
      read() {
        if (position < stop) {
          const end = Math.min(stop, position + 64 * 1024)
          this.push(body.subarray(position, end))
          position = end
        } else if (!reported) {
          // Everything up to the cut has been handed to the request.
          reported = true
          setImmediate(() => progress(stop))
        }
      },
    })
    // The stack sets Content-Length from `size`: the whole body's.
    source.size = body.length
    return this.inner.send(source)
  }
}

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = []
    process.stdin.on('data', (chunk) => chunks.push(chunk))
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    process.stdin.on('error', reject)
  })
}

async function readConfig() {
  const arg = process.argv[2]
  let text
  try {
    text = arg && arg !== '-' ? await readFile(arg, 'utf8') : await readStdin()
  } catch (error) {
    throw new ConfigError(`cannot read the config: ${error.message}`)
  }
  let config
  try {
    config = JSON.parse(text)
  } catch (error) {
    throw new ConfigError(`the config is not JSON: ${error.message}`)
  }
  return validate(config)
}

function validate(config) {
  const fail = (what) => {
    throw new ConfigError(what)
  }
  const isCount = (n) => Number.isSafeInteger(n) && n >= 0
  if (config === null || typeof config !== 'object') fail('the config is not an object')
  if (typeof config.endpoint !== 'string') fail('`endpoint` is not a string')
  if (!Array.isArray(config.files)) fail('`files` is not a list')
  config.files.forEach((file, i) => {
    if (file?.path != null) {
      if (typeof file.path !== 'string') fail(`files[${i}].path is not a string`)
    } else if (!isCount(file?.size) || !(isCount(file.seed) && file.seed <= 0xffffffff)) {
      fail(`files[${i}] is neither {path} nor {size, seed} with a u32 seed`)
    }
  })
  const protocol = config.protocol ?? 'tus-v1'
  if (!PROTOCOLS.includes(protocol)) fail(`\`protocol\` is not one of ${PROTOCOLS.join(', ')}`)
  const concurrency = config.concurrency ?? 1
  if (!(Number.isSafeInteger(concurrency) && concurrency >= 1)) fail('`concurrency` is not >= 1')
  const cutAt = config.cutAt ?? null
  if (cutAt !== null && !(typeof cutAt === 'number' && cutAt >= 0 && cutAt <= 1)) {
    fail('`cutAt` is not a fraction in 0..=1')
  }
  const timeoutMs = config.timeoutMs ?? DEFAULT_TIMEOUT_MS
  if (!isCount(timeoutMs)) fail('`timeoutMs` is not a count of milliseconds')
  const retryDelays = config.retryDelays
  if (retryDelays != null && !(Array.isArray(retryDelays) && retryDelays.every(isCount))) {
    fail('`retryDelays` is not a list of milliseconds')
  }
  const retryStatuses = config.retryStatuses ?? []
  if (!(Array.isArray(retryStatuses) && retryStatuses.every(isCount))) {
    fail('`retryStatuses` is not a list of statuses')
  }
  const prepare = config.prepare ?? false
  if (typeof prepare !== 'boolean') fail('`prepare` is not a boolean')
  return {
    endpoint: config.endpoint,
    headers: config.headers ?? {},
    files: config.files,
    concurrency,
    chunkSize: config.chunkSize ?? Number.POSITIVE_INFINITY,
    uploadDataDuringCreation: config.uploadDataDuringCreation ?? false,
    parallelUploads: config.parallelUploads ?? 1,
    protocol,
    cutAt,
    // Absent: tus-js-client's default; null: no retries.
    retryDelays,
    retryStatuses,
    prepare,
    metadata: config.metadata ?? {},
    timeoutMs,
  }
}

// tus-js-client's own rule (lib/upload.ts `defaultOnShouldRetry`: anything
// but a 4xx, or a 409 or 423), and these statuses too: by default it gives
// up on a 429 at once.
function retryAlso(statuses) {
  return (err) => {
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0
    const client = status >= 400 && status < 500
    return statuses.includes(status) || !client || status === 409 || status === 423
  }
}

// Runs one tus.Upload to its end: 'done' on success, 'cut' when
// `onProgress` says so. `track` receives the upload and a way to fail it;
// `before` may prepare it before it starts.
function attempt(data, options, track, { onProgress, before } = {}) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      ...options,
      onProgress: onProgress && ((sent, total) => onProgress(sent, total, upload, resolve)),
      onSuccess: () => resolve('done'),
      onError: reject,
    })
    track(upload, reject)
    Promise.resolve(before?.(upload)).then(() => upload.start(), reject)
  })
}

// A file's bytes and their SHA-256.
async function load(spec) {
  const data = spec.path != null ? await readFile(spec.path) : generate(spec.size, spec.seed)
  return { data, sha256: createHash('sha256').update(data).digest('hex') }
}

async function uploadFile(config, i, cancels, prepared) {
  const spec = config.files[i]
  const report = {
    url: null,
    size: spec.size ?? null,
    sha256: null,
    offsetAtCut: null,
    bytesSentBeforeCut: null,
    resumed: false,
    error: null,
    elapsedMs: 0,
  }
  const started = performance.now()
  let current = null
  let fail = null
  let cancelled = null
  const cancel = (reason) => {
    cancelled = reason
    current?.abort(false)
    fail?.(new Error(reason))
  }
  const track = (upload, reject) => {
    current = upload
    fail = reject
  }
  cancels.add(cancel)
  try {
    const loaded = prepared ?? (await load(spec))
    if (loaded.error) throw loaded.error
    const { data, sha256 } = loaded
    report.size = data.length
    report.sha256 = sha256
    if (cancelled) throw new Error(cancelled)
    const fingerprint =
      spec.path != null ? `path-${spec.path}-${data.length}` : `seed-${spec.seed}-${spec.size}`
    const options = {
      endpoint: config.endpoint,
      headers: config.headers,
      chunkSize: config.chunkSize,
      uploadDataDuringCreation: config.uploadDataDuringCreation,
      parallelUploads: config.parallelUploads,
      protocol: config.protocol,
      metadata: { filename: `file-${i}.bin`, filetype: 'application/octet-stream', ...config.metadata },
      urlStorage: new MemoryUrlStorage(),
      fingerprint: () => Promise.resolve(fingerprint),
    }
    if (config.retryDelays !== undefined) options.retryDelays = config.retryDelays
    if (config.retryStatuses.length > 0) options.onShouldRetry = retryAlso(config.retryStatuses)

    // An empty file has no progress to cut.
    let finished = false
    if (config.cutAt !== null && data.length > 0) {
      const cutByte = Math.min(data.length, Math.floor(config.cutAt * data.length) + 1)
      const first = { ...options }
      // Parallel parts carry offsets of their own: cut by progress alone.
      if (config.parallelUploads <= 1) first.httpStack = new CuttingHttpStack(cutByte)
      let cut = false
      finished = 'done' === await attempt(data, first, track, {
        onProgress: (sent, _total, upload, resolve) => {
          if (cut || sent < cutByte) return
          cut = true
          report.bytesSentBeforeCut = sent
          upload.abort(false)
          resolve('cut')
        },
      })
      report.url = current.url
    }
    if (cancelled) throw new Error(cancelled)
    if (!finished) {
      const resuming = report.bytesSentBeforeCut !== null
      const second = { ...options }
      if (resuming) {
        // Where the resumed upload went on from: the offset of its first
        // PATCH the server accepted, else (nothing was left to send) what
        // its last HEAD answered. Not its first HEAD's answer alone: the
        // cut request and the HEAD travel on two connections, and a HEAD
        // the server reads first is answered the offset from before the
        // cut request's bytes; the PATCH sent from there gets 409, and
        // tus-js-client asks again.
        let accepted = false
        second.onAfterResponse = (req, res) => {
          const status = res.getStatus()
          if (accepted || status < 200 || status >= 300) return
          const method = req.getMethod()
          let offset = Number.NaN
          if (method === 'HEAD') offset = Number.parseInt(res.getHeader('Upload-Offset'), 10)
          if (method === 'PATCH') offset = Number.parseInt(req.getHeader('Upload-Offset'), 10)
          if (Number.isNaN(offset)) return
          accepted = method === 'PATCH'
          report.offsetAtCut = offset
          report.resumed = true
        }
      }
      await attempt(data, second, track, {
        before: async (upload) => {
          if (!resuming) return
          const previous = await upload.findPreviousUploads()
          if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0])
          if (cancelled) throw new Error(cancelled)
        },
      })
      report.url = current.url
    }
  } catch (error) {
    report.error = cancelled ?? String(error?.message ?? error)
    if (current?.url) report.url = current.url
  } finally {
    cancels.delete(cancel)
    report.elapsedMs = performance.now() - started
  }
  return report
}

async function notStarted(spec, reason) {
  let size = spec.size ?? null
  if (spec.path != null) size = await stat(spec.path).then((s) => s.size, () => null)
  const report = { url: null, size, sha256: null, offsetAtCut: null }
  return { ...report, bytesSentBeforeCut: null, resumed: false, error: reason, elapsedMs: 0 }
}

async function main() {
  let config
  try {
    config = await readConfig()
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stderr.write(`tus-run.mjs: ${error.message}\n`)
    process.exitCode = 2
    return
  }
  // A file that cannot be read is that file's error, as without `prepare`.
  const loadOrError = (spec) => load(spec).catch((error) => ({ error }))
  const prepared = config.prepare ? await Promise.all(config.files.map(loadOrError)) : null
  const started = performance.now()
  const files = new Array(config.files.length).fill(null)
  const cancels = new Set()
  let timedOut = false
  const reason = `the run timed out after ${config.timeoutMs} ms`
  const deadline = setTimeout(() => {
    timedOut = true
    for (const cancel of cancels) cancel(reason)
  }, config.timeoutMs)
  let next = 0
  const worker = async () => {
    while (!timedOut && next < files.length) {
      const i = next++
      files[i] = await uploadFile(config, i, cancels, prepared?.[i])
    }
  }
  const workers = Math.min(config.concurrency, files.length)
  await Promise.all(Array.from({ length: workers }, worker))
  clearTimeout(deadline)
  for (const [i, file] of files.entries()) {
    if (file === null) files[i] = await notStarted(config.files[i], `not started: ${reason}`)
  }
  const elapsedMs = performance.now() - started
  const bytes = files.filter((f) => f.error === null).reduce((sum, f) => sum + f.size, 0)
  const totals = {
    elapsedMs,
    bytes,
    // No figure from no time.
    mibPerSec: elapsedMs > 0 ? bytes / 2 ** 20 / (elapsedMs / 1000) : null,
    failed: files.filter((f) => f.error !== null).length,
  }
  const report = JSON.stringify({ files, totals, timedOut })
  // Aborted requests may hold sockets open: exit once the report is out.
  process.stdout.write(`${report}\n`, () => process.exit(0))
}

main().catch((error) => {
  process.stderr.write(`tus-run.mjs: ${error?.stack ?? error}\n`)
  process.exit(1)
})

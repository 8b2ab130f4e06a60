// upload.js: the upload page. Each file picked or dropped is sent with
// tus-js-client (window.tus, /assets/tus.min.js) to /api/uploads:
// resumable, after a reload too (tus-js-client keeps each upload's URL in
// localStorage under the file's fingerprint: picking the same file again
// resumes it), retried when the connection drops or the server restarts,
// and, on 429 or 503, not before the answer's Retry-After. The answer that
// completes an upload names the stored file in Content-Location. The
// tenant's files are listed from /api/files; a 401 from it shows the
// token field (corral runs with --auth).

import { formatBytes, formatRate, Rate } from './format.js'

const ENDPOINT = '/api/uploads'
const FILES = '/api/files'
// Waits between attempts, in ms; an attempt that made progress starts the
// list again. A 429 or 503 waits at least its Retry-After.
const RETRY_DELAYS = [0, 1000, 2000, 3000, 5000, 5000, 10000, 10000, 20000, 30000]
const TOKEN_KEY = 'corral-token'
// How often the total is announced to screen readers.
const ANNOUNCE_MS = 5000

const $ = (selector) => document.querySelector(selector)
let token = sessionStorage.getItem(TOKEN_KEY)

function authorization() {
  return token ? { Authorization: `Bearer ${token}` } : {}
}

function showAuth(reason) {
  const section = $('#auth')
  const wasHidden = section.hidden
  section.hidden = false
  $('#auth-reason').textContent = reason
  if (wasHidden) $('#token').focus()
}

// --- uploads ---------------------------------------------------------------

const uploads = [] // { file, sent, item }
const totalRate = new Rate()
let lastAnnounce = 0

function element(tag, attributes = {}, text = '') {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value)
  if (text) node.textContent = text
  return node
}

// The path of a stored file, each segment of its key percent-encoded.
function fileHref(key) {
  return `${FILES}/${key.split('/').map(encodeURIComponent).join('/')}`
}

// A link to a stored file. Under --auth a plain link cannot send the
// token, so the click fetches the file with it and saves the bytes.
function fileLink(key) {
  const link = element('a', { href: fileHref(key), class: 'key' }, key)
  link.addEventListener('click', async (event) => {
    if (!token) return
    event.preventDefault()
    const response = await fetch(link.href, { headers: authorization() })
    if (!response.ok) {
      link.after(` (${response.status})`)
      return
    }
    const url = URL.createObjectURL(await response.blob())
    const save = element('a', { href: url, download: key.split('/').pop() })
    save.click()
    setTimeout(() => URL.revokeObjectURL(url), 60_000)
  })
  return link
}

function renderTotal(done) {
  const sent = uploads.reduce((sum, u) => sum + u.sent, 0)
  const size = uploads.reduce((sum, u) => sum + u.file.size, 0)
  const finished = uploads.filter((u) => u.state === 'stored').length
  totalRate.add(sent)
  const bar = $('#total-bar')
  bar.hidden = false
  bar.max = Math.max(size, 1)
  bar.value = sent
  const text =
    `${finished} of ${uploads.length} files stored; ` +
    `${formatBytes(sent)} of ${formatBytes(size)} sent, ${formatRate(totalRate.perSecond())}`
  const now = performance.now()
  if (done || now - lastAnnounce > ANNOUNCE_MS) {
    $('#total').textContent = text
    lastAnnounce = now
  }
}

function setStatus(entry, text, state) {
  entry.state = state
  entry.item.dataset.state = state
  entry.status.textContent = text
}

// Retries what may pass: no answer (the network, a restart), 5xx, 409 and
// 423 (tus-js-client's own rule), and 429, waiting the Retry-After of a
// 429, a 503 or a 423 (an upload another instance holds: one that died
// holding it holds it until then).
function shouldRetry(error, attempt, options) {
  const response = error.originalResponse
  const status = response ? response.getStatus() : 0
  if (status === 429 || status === 503 || status === 423) {
    const after = Number(response.getHeader('Retry-After'))
    if (after > 0) options.retryDelays[attempt] = Math.max(options.retryDelays[attempt], after * 1000)
    return true
  }
  if (status === 401) showAuth('The server asked for a token: enter it, then pick the file again.')
  return status === 0 || status >= 500 || status === 409 || status === 423
}

function errorText(error) {
  const response = error.originalResponse
  if (!response) return `stopped: ${error.message}`
  let message = response.getBody()
  try {
    message = JSON.parse(message).error.message
  } catch {
    // Not corral's JSON: the body as it came.
  }
  return `stopped: ${response.getStatus()} ${message}`
}

function start(file) {
  const item = element('li', { class: 'upload' })
  const name = element('span', { class: 'name' }, file.name)
  const bar = element('progress', { max: Math.max(file.size, 1), value: 0, 'aria-label': file.name })
  const status = element('span', { class: 'status' }, 'starting')
  const retry = element('button', { type: 'button', hidden: '' }, 'Retry')
  item.append(name, bar, status, retry)
  $('#uploads').append(item)
  const entry = { file, sent: 0, item, status, state: 'starting' }
  uploads.push(entry)
  const rate = new Rate()
  const upload = new window.tus.Upload(file, {
    endpoint: ENDPOINT,
    retryDelays: [...RETRY_DELAYS],
    metadata: { filename: file.name, filetype: file.type || 'application/octet-stream' },
    removeFingerprintOnSuccess: true,
    onBeforeRequest(request) {
      if (token) request.setHeader('Authorization', `Bearer ${token}`)
    },
    onShouldRetry: shouldRetry,
    onProgress(sent, total) {
      entry.sent = sent
      bar.value = sent
      rate.add(sent)
      setStatus(entry, `${formatBytes(sent)} of ${formatBytes(total)}, ${formatRate(rate.perSecond())}`, 'uploading')
      renderTotal(false)
    },
    onSuccess({ lastResponse }) {
      entry.sent = file.size
      bar.value = bar.max
      const location = lastResponse.getHeader('Content-Location')
      setStatus(entry, '', 'stored')
      if (location && location.startsWith(`${FILES}/`)) {
        const key = decodeURIComponent(location.slice(FILES.length + 1))
        item.dataset.key = key
        status.append('stored as ', fileLink(key))
      } else {
        status.textContent = 'stored'
      }
      renderTotal(true)
      refreshListing()
    },
    onError(error) {
      setStatus(entry, errorText(error), 'failed')
      retry.hidden = false
      renderTotal(true)
    },
  })
  retry.addEventListener('click', () => {
    retry.hidden = true
    setStatus(entry, 'resuming', 'starting')
    upload.start()
  })
  // An upload of the same file left unfinished (a reload, a crash) goes on
  // from what the server kept.
  upload.findPreviousUploads().then((previous) => {
    if (previous.length > 0) {
      upload.resumeFromPreviousUpload(previous[0])
      setStatus(entry, 'resuming', 'starting')
    }
    upload.start()
  })
}

function startAll(files) {
  for (const file of files) start(file)
}

// --- the listing ---------------------------------------------------------

let cursor = null

async function refreshListing(more = false) {
  const query = new URLSearchParams({ limit: '100' })
  if (more && cursor) query.set('cursor', cursor)
  const status = $('#list-status')
  let response
  try {
    response = await fetch(`${FILES}?${query}`, { headers: authorization() })
  } catch (error) {
    status.textContent = `The listing failed: ${error.message}`
    return
  }
  if (response.status === 401) {
    status.textContent = 'This corral asks for a token to list your files.'
    showAuth(token ? 'That token was refused: enter another.' : 'This corral asks for a token.')
    return
  }
  if (!response.ok) {
    status.textContent = `The listing failed: ${response.status}`
    return
  }
  const page = await response.json()
  const body = $('#listing tbody')
  if (!more) body.replaceChildren()
  for (const file of page.files) {
    const row = element('tr')
    const key = element('td')
    key.append(fileLink(file.key))
    row.append(key, element('td', {}, formatBytes(file.size)), element('td', {}, file.last_modified.slice(0, 19).replace('T', ' ')))
    body.append(row)
  }
  cursor = page.next_cursor ?? null
  $('#more').hidden = cursor === null
  status.textContent = body.children.length === 0 ? 'No files yet.' : `${body.children.length} files shown.`
}

// --- wiring --------------------------------------------------------------

function init() {
  const input = $('#files')
  input.addEventListener('change', () => {
    startAll(input.files)
    input.value = ''
  })
  const drop = $('#drop')
  for (const type of ['dragenter', 'dragover']) {
    drop.addEventListener(type, (event) => {
      event.preventDefault()
      drop.classList.add('over')
    })
  }
  drop.addEventListener('dragleave', () => drop.classList.remove('over'))
  drop.addEventListener('drop', (event) => {
    event.preventDefault()
    drop.classList.remove('over')
    startAll(event.dataTransfer.files)
  })
  $('#auth-form').addEventListener('submit', (event) => {
    event.preventDefault()
    token = $('#token').value.trim() || null
    if (token) sessionStorage.setItem(TOKEN_KEY, token)
    else sessionStorage.removeItem(TOKEN_KEY)
    $('#auth-reason').textContent = 'Token set for this tab.'
    refreshListing()
  })
  $('#refresh').addEventListener('click', () => refreshListing())
  $('#more').addEventListener('click', () => refreshListing(true))
  refreshListing()
}

// tus.min.js is deferred, and so is this module, which runs after it.
init()

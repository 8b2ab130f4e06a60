// uppy-page.mjs: the script of uppy.html. Defines window.corralUppy(config),
// which makes the config's files in the page, uploads them with Uppy's Tus
// plugin, and resolves to a report; uppy-run.mjs calls it and documents
// both shapes (so does corral_testkit::browser's UppyRun and UppyReport).

import { Tus, Uppy } from '/uppy/uppy.min.mjs'

// The bytes of a generated file: xorshift32 words, little-endian, from a
// state derived from the seed; the last word cut short to `size`. The same
// generator as ../node/tus-run.mjs and corral_testkit::node::file_bytes.
function generate(size, seed) {
  const bytes = new Uint8Array(Math.ceil(size / 4) * 4)
  const view = new DataView(bytes.buffer)
  let x = (Math.imul(seed, 0x9e3779b1) ^ 0x85ebca6b) >>> 0
  if (x === 0) x = 1
  for (let offset = 0; offset < bytes.length; offset += 4) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    view.setUint32(offset, x >>> 0, true)
  }
  return bytes.subarray(0, size)
}

// The Tus plugin's options a run may set; the rest are Uppy's defaults.
function tusOptions(config) {
  const options = { endpoint: config.endpoint, headers: config.headers }
  for (const name of ['chunkSize', 'parallelUploads', 'limit', 'retryDelays']) {
    if (config[name] != null) options[name] = config[name]
  }
  return options
}

async function run(config) {
  const uppy = new Uppy({ autoProceed: false }).use(Tus, tusOptions(config))
  const reports = new Map()
  for (const spec of config.files) {
    const id = uppy.addFile({
      name: spec.name,
      type: 'application/octet-stream',
      data: new Blob([generate(spec.size, spec.seed)], { type: 'application/octet-stream' }),
      source: 'corral-test',
    })
    reports.set(id, {
      name: spec.name,
      size: spec.size,
      uploadUrl: null,
      error: null,
      status: null,
      pausedAtBytes: null,
      resumed: false,
    })
  }
  // What a run that timed out still reports.
  window.corralUppyFiles = () => [...reports.values()]
  uppy.on('upload-success', (file, response) => {
    reports.get(file.id).uploadUrl = response.uploadURL ?? null
  })
  uppy.on('upload-error', (file, error, response) => {
    const report = reports.get(file.id)
    report.error = String(error?.message ?? error)
    report.status = response?.status ?? null
  })
  if (config.pauseAt != null) {
    // Pauses each upload once it has sent `pauseAt` of its bytes, and
    // resumes it once the pause has taken effect (Uppy aborts the request
    // in flight), from whatever the server kept.
    uppy.on('upload-progress', (file, progress) => {
      const report = reports.get(file.id)
      const { bytesUploaded, bytesTotal } = progress
      if (report.pausedAtBytes !== null || bytesUploaded >= bytesTotal) return
      if (bytesUploaded < config.pauseAt * bytesTotal) return
      report.pausedAtBytes = bytesUploaded
      uppy.pauseResume(file.id)
    })
    uppy.on('upload-pause', (file, isPaused) => {
      if (!isPaused) return
      setTimeout(() => {
        reports.get(file.id).resumed = uppy.pauseResume(file.id) === false
      }, 0)
    })
  }
  const result = await uppy.upload()
  return {
    files: [...reports.values()],
    successful: result?.successful?.length ?? 0,
    failed: result?.failed?.length ?? 0,
  }
}

window.corralUppy = run

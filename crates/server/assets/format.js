// format.js: what the upload page and the live view share: bytes and
// rates in words, and a rate measured over the last few seconds.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

// 1536 -> "1.5 KiB".
export function formatBytes(bytes) {
  if (bytes == null || !Number.isFinite(bytes)) return '–'
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit += 1
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1
  return `${value.toFixed(digits)} ${UNITS[unit]}`
}

export function formatRate(bytesPerSecond) {
  return bytesPerSecond == null ? '–' : `${formatBytes(bytesPerSecond)}/s`
}

// A rate over the last `windowMs`: feed it a growing count with `add`,
// read bytes per second with `perSecond` (null until two readings).
export class Rate {
  constructor(windowMs = 5000) {
    this.windowMs = windowMs
    this.readings = []
  }

  add(count, now = performance.now()) {
    this.readings.push([now, count])
    while (this.readings.length > 2 && now - this.readings[0][0] > this.windowMs) {
      this.readings.shift()
    }
  }

  perSecond() {
    if (this.readings.length < 2) return null
    const [t0, c0] = this.readings[0]
    const [t1, c1] = this.readings[this.readings.length - 1]
    return t1 > t0 ? ((c1 - c0) * 1000) / (t1 - t0) : null
  }
}

// live.js: the live view. Reads /api/stats every second (the samples of
// the last five minutes, and a reading of now) and draws one small chart
// per figure on a canvas; the caption of each shows the reading of now.

import { formatBytes } from './format.js'

const STATS = '/api/stats'
const POLL_MS = 1000
const WINDOW_MS = 300_000
const COLORS = ['#2b5797', '#d24726', '#2d7d46']

const count = (value) => (value == null ? '–' : String(Math.round(value * 10) / 10))
const CHARTS = [
  {
    title: 'Backend calls: limit and in flight',
    series: [
      { key: 'limit', label: 'limit', format: (v) => (v == null ? '∞' : String(v)) },
      { key: 'in_flight', label: 'in flight' },
    ],
  },
  { title: 'Queued jobs', series: [{ key: 'queued_jobs', label: 'jobs' }] },
  { title: 'Queued bytes', series: [{ key: 'queued_bytes', label: 'bytes', format: formatBytes }] },
  { title: 'Refusals (429, 503) per second', series: [{ key: 'refusals', label: 'refusals' }] },
  {
    title: 'Backend latency (ms)',
    series: [
      { key: 'latency_p50_ms', label: 'p50' },
      { key: 'latency_p99_ms', label: 'p99' },
    ],
  },
  { title: 'Uploads waiting for memory', series: [{ key: 'upload_waiting', label: 'uploads' }] },
  { title: 'Spool backlog', series: [{ key: 'spool_bytes', label: 'bytes', format: formatBytes }] },
]

function build() {
  const container = document.querySelector('#charts')
  for (const chart of CHARTS) {
    const figure = document.createElement('figure')
    figure.className = 'chart'
    figure.dataset.points = '0'
    const caption = document.createElement('figcaption')
    const title = document.createElement('span')
    title.className = 'title'
    title.textContent = chart.title
    caption.append(title)
    chart.outputs = chart.series.map((series, i) => {
      const label = document.createElement('span')
      label.className = 'legend'
      label.style.setProperty('--swatch', COLORS[i])
      const output = document.createElement('output')
      output.dataset.key = series.key
      output.textContent = '–'
      label.append(` ${series.label} `, output)
      caption.append(label)
      return output
    })
    const canvas = document.createElement('canvas')
    canvas.setAttribute('role', 'img')
    canvas.setAttribute('aria-label', `${chart.title}, the last five minutes`)
    figure.append(caption, canvas)
    container.append(figure)
    chart.figure = figure
    chart.canvas = canvas
  }
}

// Draws `samples` (oldest first) into the chart's canvas: time across,
// from five minutes ago to the newest sample, values up from 0.
function draw(chart, samples) {
  const { canvas } = chart
  const ratio = window.devicePixelRatio || 1
  const width = canvas.clientWidth
  const height = canvas.clientHeight
  canvas.width = Math.round(width * ratio)
  canvas.height = Math.round(height * ratio)
  const context = canvas.getContext('2d')
  context.scale(ratio, ratio)
  context.clearRect(0, 0, width, height)
  const end = samples.length ? samples[samples.length - 1].t : Date.now()
  const start = end - WINDOW_MS
  let max = 1
  for (const sample of samples) {
    for (const series of chart.series) {
      const value = sample[series.key]
      if (value != null) max = Math.max(max, value)
    }
  }
  max *= 1.1
  const pad = 4
  const x = (t) => pad + ((t - start) / WINDOW_MS) * (width - 2 * pad)
  const y = (value) => height - pad - (value / max) * (height - 2 * pad)
  context.strokeStyle = '#ddd'
  context.lineWidth = 1
  context.beginPath()
  for (const fraction of [0, 0.5, 1]) {
    context.moveTo(pad, y(max * fraction / 1.1))
    context.lineTo(width - pad, y(max * fraction / 1.1))
  }
  context.stroke()
  let points = 0
  chart.series.forEach((series, i) => {
    context.strokeStyle = COLORS[i]
    context.lineWidth = 2
    context.beginPath()
    let drawing = false
    for (const sample of samples) {
      const value = sample[series.key]
      // A missing value (no call in that second, no limit) breaks the line.
      if (value == null) {
        drawing = false
        continue
      }
      points += 1
      if (drawing) context.lineTo(x(sample.t), y(value))
      else context.moveTo(x(sample.t), y(value))
      drawing = true
    }
    context.stroke()
  })
  context.fillStyle = '#555'
  context.font = '11px system-ui, sans-serif'
  const top = chart.series[0].format ? chart.series[0].format(max / 1.1) : count(max / 1.1)
  context.fillText(top, pad + 2, 12)
  chart.figure.dataset.points = String(points)
}

async function poll() {
  const status = document.querySelector('#status')
  try {
    const response = await fetch(STATS, { cache: 'no-store' })
    if (!response.ok) throw new Error(`${response.status}`)
    const stats = await response.json()
    for (const chart of CHARTS) {
      chart.series.forEach((series, i) => {
        chart.outputs[i].textContent = (series.format ?? count)(stats.now[series.key])
      })
      draw(chart, stats.samples)
    }
    status.textContent = ''
  } catch (error) {
    status.textContent = `The server did not answer (${error.message}); trying again.`
  }
  setTimeout(poll, POLL_MS)
}

build()
poll()

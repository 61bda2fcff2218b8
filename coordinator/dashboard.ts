/**
 * The web dashboard at `/` of the coordinator's HTTP server: nodes with
 * capacity and heartbeat age, jobs with a state filter, a chart of announced,
 * running and finished jobs over time, and a page per job with its attempts,
 * events, live log (polled) and artifacts. Plain HTML and one small script served
 * from here: nothing is fetched from elsewhere at run time. The pages read
 * the same public API as any client.
 */

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:16px;align-items:baseline}
header a{color:#9cc3ff;text-decoration:none} main{padding:16px 20px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin-bottom:16px}
h2{font-size:15px;margin:0 0 8px} table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;font-variant-numeric:tabular-nums}
th{font-weight:600;color:#555} code{font-size:12px} .state{padding:1px 6px;border-radius:8px;font-size:12px;background:#eef0f3}
.succeeded{background:#d9f2df}.failed{background:#f9d9d9}.running,.claimed{background:#dbe8ff}.cancelled{background:#eee}
pre#log{background:#111;color:#ddd;padding:8px;max-height:420px;overflow:auto;font-size:12px;white-space:pre-wrap}
.stderr{color:#ff9d9d} .muted{color:#777} svg text{font-size:11px;fill:#555}
`

/** Text for HTML content or a double-quoted attribute. */
function escapeHtml (text: string): string {
  return text.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`)
}

/** No inline script: the page's data (the job id) rides on a body attribute the script reads. */
function page (title: string, body: string, jobId?: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body${jobId != null ? ` data-job="${escapeHtml(jobId)}"` : ''}>
<header><strong>RGrid</strong><a href="/">overview</a><a href="/v1/openapi.json">API</a><a href="/metrics">metrics</a></header>
<main>${body}</main><script src="/dashboard.js"></script></body></html>`
}

export function overviewPage (): string {
  return page('RGrid', `
<section><h2>Jobs over time</h2><svg id="chart" width="100%" height="160" viewBox="0 0 800 160" preserveAspectRatio="none" role="img" aria-label="announced, running and finished jobs over time"></svg>
<div class="muted" id="legend"><span style="color:#c77d00">■ waiting</span> <span style="color:#2f6fdf">■ running</span> <span style="color:#2b9a48">■ finished</span></div></section>
<section><h2>Nodes</h2><table id="nodes"><thead><tr><th>node</th><th>session</th><th>busy / slots</th><th>cpus</th><th>memory</th><th>runtime</th><th>labels</th><th>heard</th></tr></thead><tbody></tbody></table></section>
<section><h2>Jobs <select id="state"><option value="">all</option><option>announced</option><option>claimed</option><option>running</option><option>succeeded</option><option>failed</option><option>cancelled</option></select></h2>
<table id="jobs"><thead><tr><th>job</th><th>state</th><th>attempt</th><th>command</th><th>submitted</th></tr></thead><tbody></tbody></table></section>`)
}

export function jobPage (id: string): string {
  return page(`RGrid job ${id}`, `
<section><h2>Job <code id="job-id"></code> <span id="job-state" class="state"></span></h2><div id="summary"></div><div id="explain" class="muted"></div></section>
<section><h2>Attempts</h2><table id="attempts"><thead><tr><th>#</th><th>node</th><th>state</th><th>awarded</th><th>ran</th></tr></thead><tbody></tbody></table></section>
<section><h2>Live log</h2><pre id="log"></pre></section>
<section><h2>Outputs</h2><ul id="artifacts"></ul></section>
<section><h2>Events</h2><table id="events"><thead><tr><th>at</th><th>event</th><th>attempt</th><th>by</th><th>detail</th></tr></thead><tbody></tbody></table></section>`, id)
}

/**
 * The dashboard's script. Builds DOM with textContent only: nothing from the
 * API (commands, log lines, artifact names, event details) is parsed as HTML.
 *
 * When the coordinator requires API keys, every `/v1/*` call carries the key
 * kept in localStorage (`rgrid-api-key`); a 401 or 403 shows a small form
 * asking for one. The live log is read by polling `GET /v1/jobs/:id/logs?after=N`,
 * since an EventSource cannot send an Authorization header.
 */
export const DASHBOARD_JS = `'use strict'
const $ = (s) => document.querySelector(s)
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text != null) e.textContent = String(text); if (cls) e.className = cls; return e }
const row = (cells) => { const tr = el('tr'); for (const c of cells) { const td = el('td'); if (c instanceof Node) td.append(c); else td.textContent = c == null ? '' : String(c); tr.append(td) }; return tr }
const ago = (ms) => ms < 1000 ? ms + ' ms' : ms < 120000 ? Math.round(ms / 1000) + ' s' : Math.round(ms / 60000) + ' min'
const time = (t) => t == null ? '' : new Date(t).toLocaleTimeString()
const stateTag = (s) => el('span', s, 'state ' + s)
const TERMINAL = ['succeeded', 'failed', 'cancelled']

const KEY = 'rgrid-api-key'
const storedKey = () => { try { return localStorage.getItem(KEY) || '' } catch { return '' } }
/** The API refused the key (or its absence): the key form is up, polling stops. */
class NeedsKey extends Error {}

/** A small form asking for an API key; stores it and reloads. Built without innerHTML. */
function askForKey (status) {
  if ($('#key-form')) return
  const section = el('section'); section.id = 'key-section'
  const form = el('form'); form.id = 'key-form'
  const label = el('label', status === 403 ? 'This API key may not read this. Another key: ' : (storedKey() ? 'The stored API key was refused. API key: ' : 'This coordinator needs an API key: '))
  const input = el('input'); input.type = 'password'; input.id = 'api-key'; input.name = 'api-key'; input.autocomplete = 'off'; input.required = true
  label.htmlFor = 'api-key'
  const button = el('button', 'Use key'); button.type = 'submit'
  form.append(label, input, el('span', ' '), button)
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const key = input.value.trim()
    if (!key) return
    try { localStorage.setItem(KEY, key) } catch (err) { console.warn(err) }
    location.reload()
  })
  section.append(form)
  $('main').prepend(section)
  input.focus()
}

const get = async (path) => {
  const key = storedKey()
  const r = await fetch(path, key ? { headers: { authorization: 'Bearer ' + key } } : {})
  if (r.status === 401 || r.status === 403) { askForKey(r.status); throw new NeedsKey(path + ': ' + r.status) }
  if (!r.ok) throw new Error(path + ': ' + r.status)
  return r.json()
}

async function overview () {
  const state = $('#state').value
  const [nodes, jobs, history] = await Promise.all([get('/v1/nodes'), get('/v1/jobs?limit=50' + (state ? '&state=' + encodeURIComponent(state) : '')), get('/v1/stats/history')])
  const nb = $('#nodes tbody'); nb.replaceChildren()
  for (const n of nodes.nodes) {
    nb.append(row([el('code', '…' + n.peerId.slice(-12)), n.session ? 'open' : 'away', n.running + ' / ' + n.capacity.slots, n.capacity.cpus, n.capacity.memoryMb + ' MiB', n.capacity.runtime,
      Object.entries(n.capacity.labels).map(([k, v]) => k + '=' + v).join(', '), ago(Date.now() - n.lastHeartbeatAt) + ' ago']))
  }
  if (nodes.nodes.length === 0) nb.append(row(['no nodes yet']))
  const jb = $('#jobs tbody'); jb.replaceChildren()
  for (const j of jobs.jobs) {
    const a = el('a', j.id); a.href = '/jobs/' + encodeURIComponent(j.id)
    jb.append(row([a, stateTag(j.state), j.attempt, (j.spec.command || []).join(' ').slice(0, 80), time(j.createdAt)]))
  }
  chart(history.samples)
}

function chart (samples) {
  const svg = $('#chart'); svg.replaceChildren()
  if (samples.length < 2) { const t = document.createElementNS('http://www.w3.org/2000/svg', 'text'); t.setAttribute('x', 10); t.setAttribute('y', 80); t.textContent = 'collecting samples…'; svg.append(t); return }
  const t0 = samples[0].at, t1 = samples[samples.length - 1].at
  const max = Math.max(1, ...samples.map(s => Math.max(s.waiting, s.running, s.finished)))
  for (const [key, color] of [['waiting', '#c77d00'], ['running', '#2f6fdf'], ['finished', '#2b9a48']]) {
    const p = document.createElementNS('http://www.w3.org/2000/svg', 'polyline')
    p.setAttribute('fill', 'none'); p.setAttribute('stroke', color); p.setAttribute('stroke-width', '2'); p.setAttribute('data-series', key)
    p.setAttribute('points', samples.map(s => ((s.at - t0) / Math.max(1, t1 - t0) * 790 + 5).toFixed(1) + ',' + (150 - s[key] / max * 140).toFixed(1)).join(' '))
    svg.append(p)
  }
}

async function job (id) {
  const base = '/v1/jobs/' + encodeURIComponent(id)
  const [j, ev, ex, art] = await Promise.all([get(base), get(base + '/events'), get(base + '/explain'), get(base + '/artifacts')])
  $('#job-id').textContent = j.id
  const st = $('#job-state'); st.textContent = j.state; st.className = 'state ' + j.state
  $('#summary').textContent = (j.spec.command || []).join(' ') + (j.result ? '  →  ' + j.result.outcome + (j.result.exitCode != null ? ' (exit ' + j.result.exitCode + ')' : '') + (j.result.error ? ': ' + j.result.error.message : '') : '')
  $('#explain').textContent = ex.summary + ' ' + ex.next
  const ab = $('#attempts tbody'); ab.replaceChildren()
  for (const a of j.attempts) ab.append(row([a.number, el('code', '…' + a.node.slice(-12)), stateTag(a.state), time(a.awardedAt), a.startedAt && a.finishedAt ? ago(a.finishedAt - a.startedAt) : '']))
  const eb = $('#events tbody'); eb.replaceChildren()
  for (const e of ev.events) eb.append(row([time(e.at), e.type, e.attempt, e.actor.length > 20 ? '…' + e.actor.slice(-8) : e.actor, e.detail.reason || e.detail.outcome || '']))
  const al = $('#artifacts'); al.replaceChildren()
  for (const a of art.artifacts) {
    // Downloads: the store serves outputs as attachments (never rendered here).
    const li = el('li'); const link = el('a', a.path); link.href = a.url; link.rel = 'noopener noreferrer'
    li.append(link, el('span', ' ' + a.size + ' bytes', 'muted')); al.append(li)
  }
  if (art.artifacts.length === 0) al.append(el('li', 'none', 'muted'))
  return j.state
}

/** Polls the job's log once a second until the job has ended; then one last read and the end marker. */
async function followLog (id) {
  const log = $('#log')
  const base = '/v1/jobs/' + encodeURIComponent(id)
  let after = 0
  /** Every line stored after the cursor, a page at a time. */
  const read = async () => {
    for (;;) {
      const page = await get(base + '/logs?after=' + after + '&limit=1000')
      for (const l of page.lines) {
        log.append(el('span', l.text + '\\n', l.stream === 'stderr' ? 'stderr' : null))
        after = Math.max(after, l.line)
      }
      if (page.lines.length > 0) log.scrollTop = log.scrollHeight
      if (page.lines.length < 1000) return
    }
  }
  await loop(async () => {
    await read()
    const j = await get(base)
    if (!TERMINAL.includes(j.state)) return null
    // The last lines may have landed after the read above.
    await read()
    log.append(el('span', '— end of log —\\n', 'muted'))
    return 'stop'
  }, 1000)
}

async function loop (fn, ms) {
  for (;;) {
    try { if ((await fn()) === 'stop') return } catch (err) { if (err instanceof NeedsKey) return; console.warn(err) }
    await new Promise(r => setTimeout(r, ms))
  }
}

if (storedKey()) {
  const forget = el('a', 'forget API key'); forget.href = '#'; forget.id = 'forget-key'
  forget.addEventListener('click', (e) => { e.preventDefault(); try { localStorage.removeItem(KEY) } catch {} location.reload() })
  $('header').append(forget)
}

const jobId = document.body.dataset.job
if (jobId) {
  followLog(jobId)
  loop(async () => { const s = await job(jobId); return TERMINAL.includes(s) ? 'stop' : null }, 1000)
} else {
  $('#state').addEventListener('change', () => { overview().catch(err => { if (!(err instanceof NeedsKey)) console.warn(err) }) })
  loop(overview, 2000)
}
`

/**
 * The web dashboard in a real headless Chromium (Debian's, driven by
 * playwright-core): the overview lists the nodes and a job the test
 * submitted, and the job's page shows its live log lines while it runs;
 * on a coordinator that requires API keys it asks for one first; and what
 * jobs print or name is shown as text, never as markup.
 * Without Chromium the tests skip with the reason, except under CI=true.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { getJob, submit } from '../helpers/http.js'

const CHROMIUM = process.env.RGRID_CHROMIUM ?? '/usr/bin/chromium'
let mesh: LocalMesh
let dataDir: string
let browser: Browser | null = null
let missing: string | null = null
/** A second mesh, requiring API keys; started by its test. */
let keyed: LocalMesh | null = null
let keyedDir: string | null = null

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    missing = `no Chromium at ${CHROMIUM} (apt-get install chromium, or set RGRID_CHROMIUM)`
    if (process.env.CI === 'true') throw new Error(`CI=true but ${missing}`)
    return
  }
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-dash-'))
  mesh = new LocalMesh({ dataDir, nodes: 2, slots: 2, runtime: 'process' })
  await mesh.start()
  await mesh.waitForNodes(2)
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Headless on a machine without network: no sandbox (root), no background traffic to Google.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
}, 120_000)

afterAll(async () => {
  await browser?.close()
  await mesh?.stop()
  await keyed?.stop()
  if (dataDir != null) rmSync(dataDir, { recursive: true, force: true })
  if (keyedDir != null) rmSync(keyedDir, { recursive: true, force: true })
})

/** A new page that records uncaught errors and dialogs (an alert() would mean injected script ran). */
async function openPage (): Promise<{ page: Page, errors: string[], dialogs: string[] }> {
  const page = await browser!.newPage()
  const errors: string[] = []
  const dialogs: string[] = []
  page.on('pageerror', err => { errors.push(err.message) })
  page.on('dialog', d => { dialogs.push(d.message()); void d.dismiss() })
  return { page, errors, dialogs }
}

describe('web dashboard', () => {
  it('lists nodes and a submitted job, and the job page streams its log while it runs', async (ctx) => {
    if (missing != null) { ctx.skip(missing); return }
    const gate = join(dataDir, 'gate')
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', `echo line-one; echo oops >&2; while [ ! -e ${gate} ]; do sleep 0.05; done; echo line-two`] })
    const { page, errors } = await openPage()
    await page.goto(`${mesh.httpUrl}/`)
    // Nodes and the job, from the page's own polling of the API.
    for (const peer of mesh.nodePeerIds) await page.locator('#nodes').getByText(`…${peer.slice(-12)}`).waitFor({ timeout: 15_000 })
    const link = page.locator('#jobs a', { hasText: body.id })
    await link.waitFor({ timeout: 15_000 })
    await link.click()
    await page.waitForURL(`**/jobs/${body.id}`)
    await page.locator('#log').getByText('line-one').waitFor({ timeout: 15_000 })
    // Seen live: the job is still running, blocked on the gate.
    expect((await getJob(mesh.httpUrl, body.id)).state).toBe('running')
    expect(await page.locator('#log .stderr').textContent()).toBe('oops\n')
    writeFileSync(gate, '')
    await page.locator('#log').getByText('line-two').waitFor({ timeout: 15_000 })
    await page.locator('#log').getByText('end of log').waitFor({ timeout: 15_000 })
    await page.locator('#job-state', { hasText: 'succeeded' }).waitFor({ timeout: 15_000 })
    expect(await page.locator('#attempts tbody tr').count()).toBe(1)
    expect(await page.locator('#events tbody').textContent()).toContain('finished')
    expect(errors).toEqual([])
    // An open coordinator never asks for a key.
    expect(await page.locator('#key-form').count()).toBe(0)
    // The page loads nothing from elsewhere.
    const external: string[] = []
    page.on('request', r => { if (!r.url().startsWith(mesh.httpUrl)) external.push(r.url()) })
    await page.goto(`${mesh.httpUrl}/`)
    await page.locator('#nodes tbody tr').first().waitFor()
    // The chart draws once the coordinator has two samples of the job counts (every 5 s).
    await page.locator('#chart polyline[data-series="finished"]').waitFor({ state: 'attached', timeout: 20_000 })
    expect(await page.locator('#chart polyline').count()).toBe(3)
    expect(external).toEqual([])
  })

  it('shows commands, log lines and artifact names as text, and serves an HTML artifact as a download', async (ctx) => {
    if (missing != null) { ctx.skip(missing); return }
    const IMG = '<img src=x onerror=alert(1)>'
    const SCRIPT = '<script>alert(2)</script>'
    const { status, body } = await submit(mesh.httpUrl, {
      command: ['sh', '-c', `mkdir -p out; echo "${IMG}"; echo "${SCRIPT}" >&2; echo x > "out/${IMG}.txt"; echo "${SCRIPT}" > out/report.html`],
      outputs: [{ path: 'out/*' }]
    })
    expect(status, JSON.stringify(body)).toBe(201)
    const { page, errors, dialogs } = await openPage()
    await page.goto(`${mesh.httpUrl}/`)
    const link = page.locator('#jobs a', { hasText: body.id })
    await link.waitFor({ timeout: 15_000 })
    expect(await page.locator('#jobs tbody').textContent()).toContain(IMG)
    await link.click()
    await page.waitForURL(`**/jobs/${body.id}`)
    await page.locator('#log').getByText('end of log').waitFor({ timeout: 20_000 })
    await page.locator('#job-state', { hasText: 'succeeded' }).waitFor({ timeout: 15_000 })
    await page.locator('#artifacts a', { hasText: 'report.html' }).waitFor({ timeout: 15_000 })
    // The text is there, verbatim…
    expect(await page.locator('#summary').textContent()).toContain(`echo "${IMG}"; echo "${SCRIPT}"`)
    expect(await page.locator('#log').textContent()).toBe(`${IMG}\n${SCRIPT}\n— end of log —\n`)
    expect(await page.locator('#log .stderr').textContent()).toBe(`${SCRIPT}\n`)
    expect(await page.locator('#artifacts a').allTextContents()).toEqual([`out/${IMG}.txt`, 'out/report.html'])
    // …and none of it became an element.
    expect(await page.locator('main img, main script, main iframe, main object, main embed').count()).toBe(0)
    expect(dialogs).toEqual([])
    // The HTML artifact is a download (Content-Disposition: attachment), not a page on this origin.
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 15_000 }), page.locator('#artifacts a', { hasText: 'report.html' }).click()])
    expect(download.suggestedFilename()).toBe('report.html')
    expect(page.url()).toBe(`${mesh.httpUrl}/jobs/${body.id}`)
    const res = await fetch(await page.locator('#artifacts a', { hasText: 'report.html' }).getAttribute('href') ?? '')
    expect(res.headers.get('content-type')).toBe('application/octet-stream')
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    expect(await res.text()).toBe(`${SCRIPT}\n`)
    expect(dialogs).toEqual([])
    expect(errors).toEqual([])
  })

  it('asks for an API key when the coordinator requires one, then shows the nodes and a job with its log', async (ctx) => {
    if (missing != null) { ctx.skip(missing); return }
    keyedDir = mkdtempSync(join(tmpdir(), 'rgrid-dash-keys-'))
    keyed = new LocalMesh({ dataDir: keyedDir, nodes: 1, slots: 2, runtime: 'process', apiKeys: true })
    await keyed.start()
    await keyed.waitForNodes(1)
    expect(keyed.apiKey).not.toBe('')
    const url = keyed.httpUrl
    const auth = { authorization: `Bearer ${keyed.apiKey}` }
    expect((await fetch(`${url}/v1/nodes`)).status).toBe(401)
    const created = await fetch(`${url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ command: ['sh', '-c', 'echo keyed-one; echo keyed-two'] }) })
    expect(created.status).toBe(201)
    const { id } = await created.json() as { id: string }

    const { page, errors } = await openPage()
    await page.goto(`${url}/`)
    const input = page.locator('#key-form input[type="password"]')
    await input.waitFor({ timeout: 15_000 })
    // Nothing was shown without the key.
    expect(await page.locator('#nodes tbody tr').count()).toBe(0)
    await input.fill(keyed.apiKey)
    await Promise.all([page.waitForEvent('load'), page.locator('#key-form button').click()])
    expect(await page.evaluate(() => localStorage.getItem('rgrid-api-key'))).toBe(keyed.apiKey)
    await page.locator('#nodes').getByText(`…${keyed.nodePeerIds[0]!.slice(-12)}`).waitFor({ timeout: 15_000 })
    expect(await page.locator('#key-form').count()).toBe(0)
    const link = page.locator('#jobs a', { hasText: id })
    await link.waitFor({ timeout: 15_000 })
    await link.click()
    await page.waitForURL(`**/jobs/${id}`)
    await page.locator('#log').getByText('end of log').waitFor({ timeout: 20_000 })
    expect(await page.locator('#log').textContent()).toBe('keyed-one\nkeyed-two\n— end of log —\n')
    await page.locator('#job-state', { hasText: 'succeeded' }).waitFor({ timeout: 15_000 })
    expect(await page.locator('#key-form').count()).toBe(0)

    // A key the coordinator does not know brings the form back.
    await page.evaluate(() => { localStorage.setItem('rgrid-api-key', 'not-a-key') })
    await page.goto(`${url}/`)
    await page.locator('#key-form input[type="password"]').waitFor({ timeout: 15_000 })
    expect(errors).toEqual([])
  })
})

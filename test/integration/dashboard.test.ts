/**
 * The web dashboard in a real headless Chromium (Debian's, driven by
 * playwright-core): the overview lists the nodes and a job the test
 * submitted, and the job's page shows its live log lines while it runs.
 * Without Chromium the test skips with the reason, except under CI=true.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Browser } from 'playwright-core'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { getJob, submit } from '../helpers/http.js'

const CHROMIUM = process.env.RGRID_CHROMIUM ?? '/usr/bin/chromium'
let mesh: LocalMesh
let dataDir: string
let browser: Browser | null = null
let missing: string | null = null

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
  if (dataDir != null) rmSync(dataDir, { recursive: true, force: true })
})

describe('web dashboard', () => {
  it('lists nodes and a submitted job, and the job page streams its log while it runs', async (ctx) => {
    if (missing != null) { ctx.skip(missing); return }
    const gate = join(dataDir, 'gate')
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', `echo line-one; echo oops >&2; while [ ! -e ${gate} ]; do sleep 0.05; done; echo line-two`] })
    const page = await browser!.newPage()
    const errors: string[] = []
    page.on('pageerror', err => { errors.push(err.message) })
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
})

#!/usr/bin/env node
/**
 * rgrid-node: an operator's worker. `rgrid-node join MULTIADDR...` joins the
 * mesh, bids on jobs and runs what it wins until stopped (SIGINT/SIGTERM
 * drain running jobs first).
 */
import { join, resolve } from 'node:path'
import { availableParallelism, totalmem } from 'node:os'
import { readFile, writeFile, mkdir, rename, rm, access, constants as fsConstants } from 'node:fs/promises'
import { peerIdFromString, peerIdFromPrivateKey } from '@libp2p/peer-id'
import { MetricsServer } from './metrics-server.js'
import { readHandoff } from '../common/handoff.js'
import { decodeJoinToken, isJoinToken, type JoinToken } from '../common/join-token.js'
import { NodeAgent } from './agent.js'
import { ForkedProcessRuntime } from './runtime/forked-process.js'
import { ProcessRuntime } from './runtime/process.js'
import { SpawnHelper, SPAWN_HELPER_PATH } from './runtime/spawn-helper.js'
import { DockerRuntime } from './runtime/docker.js'
import { SimRuntime } from './runtime/sim.js'
import type { Runtime } from './runtime/types.js'
import { loadOrCreateIdentity } from '../common/identity.js'
import { createLogger, type LogLevel } from '../common/log.js'
import { logUnhandledRejections, parseArgsOrExit, stopOnSignals, usageError } from '../common/lifecycle.js'
import { errorMessage } from '../common/errors.js'
import { imageRefusal } from '../protocol/matching.js'

const HELP = `Usage: rgrid-node join TOKEN [MULTIADDR...] [options]
       rgrid-node join MULTIADDR... [options]        (an open mesh)
       rgrid-node join --config FILE                 (settings from a JSON file)
       rgrid-node status [--data-dir DIR] [--json]   (what the running node is doing)

Joins an RGrid mesh, then bids on announced jobs and runs what it wins.
TOKEN (rgrid1.…, from rgrid-coordinator token create) carries the
coordinators' identities and addresses and the secret they check; extra
MULTIADDRs (bootstrap peers) are dialled too. Without a token the node joins
through the given peers, and only a coordinator started with --open admits it.

  --runtime docker|process  how jobs run                               [docker]
                            'sim' waits a job's given time (["sim", MS, EXIT]),
                            for simulations (rgrid sim);
                            'process' runs commands as plain child processes
                            with NO isolation: for development and simulations
                            only, never for other people's jobs.
  --slots N                 jobs run at the same time                  [cpus]
  --cpus N                  CPUs offered to jobs          [all but one on > 2 cores]
  --memory-mb N             memory offered to jobs, MiB   [RAM minus 20%, >= 512 MiB kept]
  --labels k=v,...          labels jobs can require
  --coordinator PEERID      coordinator to trust (repeatable: several may share
                            one database); without it the first one heard is
                            trusted and remembered in the data dir
  --listen MULTIADDR        libp2p listen address (repeatable)       [/ip4/0.0.0.0/tcp/0]
  --data-dir DIR            identity and work dirs                     [./.rgrid/node]
  --docker-default-image I  image for jobs that name none              [busybox:latest]
  --allow-network           let jobs that ask for it (network: true) reach the
                            network through Docker's default bridge; other jobs
                            never get one; advertised to coordinators  [off]
  --image-allow PATTERN     run only images matching PATTERN (* matches any
                            characters; repeatable, or comma-separated), e.g.
                            'docker.io/library/*,ghcr.io/me/*'    [any image]
  --image-deny PATTERN      never run images matching PATTERN (wins over
                            --image-allow; repeatable, or comma-separated)
  --pids-limit N            most processes a job's container may have  [256]
  --job-nice N              process runtime: start jobs from a helper N nice
                            levels below the node (0..19), so forking them
                            does not compete with its heartbeats and
                            sessions; jobs inherit the nice value         [10]
  --spawner auto|helper|node  process runtime: start jobs with rgrid-spawn
                            (posix_spawn, built by npm run build when a C
                            compiler is there) or with Node's child_process
                            in a host process; auto takes rgrid-spawn when
                            it was built                               [auto]
  --drain-timeout-ms N      on stop, let running jobs finish this long [30000]
  --cache-mb N              inputs cached by content in DATA_DIR/cache,
                            least recently used evicted beyond this     [1024]
  --renew-ms N              renew leases over the session this often; keep it
                            well under the coordinator's --lease-ms    [5000]
  --fault-drop-gossip R     fault injection for tests and research: ignore
                            this share (0..1) of received gossip        [0]
  --fault-control FILE      fault injection: JSON {"dropGossip": 0..1, "delayMs": N} in
                            FILE, re-read every 200 ms (rgrid sim's slow links)
  --fault-partition-signal  fault injection: SIGUSR2 cuts the node off the
                            network (every connection refused and closed),
                            the next SIGUSR2 heals it
  --metrics HOST:PORT       serve Prometheus metrics at /metrics        [off]
  --no-relay                when the coordinator cannot dial this node (NAT),
                            do not take a circuit relay slot; the node still
                            works over the connections it opens
  --token-file FILE         read the join token from FILE (waits up to 2 min for it;
                            for containers started together with the coordinator)
  --config FILE             JSON object of these settings by long name, plus
                            "join": the token (and multiaddrs); flags win
  --log-level LEVEL         debug|info|warn|error                      [info]
`

function positiveInt (name: string, text: string | undefined, fallback: number): number {
  if (text == null) return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1) usageError('rgrid-node', `${name} must be a positive integer, got ${JSON.stringify(text)}`)
  return n
}

/**
 * The patterns of a repeatable `--image-allow`/`--image-deny`, each value
 * also a comma-separated list. Bounded as the capacity schema requires.
 */
function parsePatterns (name: string, values: string[]): string[] {
  const patterns = values.flatMap(v => v.split(',')).map(p => p.trim()).filter(p => p !== '')
  if (patterns.length === 0) usageError('rgrid-node', `${name} needs at least one pattern`)
  if (patterns.length > 64) usageError('rgrid-node', `${name}: at most 64 patterns, got ${patterns.length}`)
  for (const p of patterns) {
    if (p.length > 512 || /\s/.test(p)) usageError('rgrid-node', `${name}: ${JSON.stringify(p)} is not an image pattern (no spaces, at most 512 characters)`)
  }
  return [...new Set(patterns)]
}

function parseLabels (text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {}
  if (text == null || text === '') return labels
  for (const pair of text.split(',')) {
    const i = pair.indexOf('=')
    if (i <= 0) usageError('rgrid-node', `--labels expects k=v,..., got ${JSON.stringify(pair)}`)
    labels[pair.slice(0, i)] = pair.slice(i + 1)
  }
  return labels
}

async function main (): Promise<void> {
  const parsed = parseArgsOrExit('rgrid-node', {
    allowPositionals: true,
    options: {
      runtime: { type: 'string' },
      slots: { type: 'string' },
      cpus: { type: 'string' },
      'memory-mb': { type: 'string' },
      labels: { type: 'string' },
      coordinator: { type: 'string', multiple: true },
      listen: { type: 'string', multiple: true },
      'no-relay': { type: 'boolean' },
      'data-dir': { type: 'string' },
      'docker-default-image': { type: 'string' },
      'allow-network': { type: 'boolean' },
      'image-allow': { type: 'string', multiple: true },
      'image-deny': { type: 'string', multiple: true },
      'pids-limit': { type: 'string' },
      'job-nice': { type: 'string' },
      spawner: { type: 'string' },
      'drain-timeout-ms': { type: 'string' },
      'cache-mb': { type: 'string' },
      metrics: { type: 'string' },
      'renew-ms': { type: 'string' },
      'fault-drop-gossip': { type: 'string' },
      'fault-partition-signal': { type: 'boolean' },
      'log-level': { type: 'string' },
      config: { type: 'string' },
      'token-file': { type: 'string' },
      'fault-control': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' }
    },
    strict: true
  })
  if (parsed.values.help === true) { process.stdout.write(HELP); return }
  const [command, ...cliTargets] = parsed.positionals
  if (command === 'status') { await status(resolve(parsed.values['data-dir'] ?? join('.rgrid', 'node')), parsed.values.json === true); return }
  if (command !== 'join') usageError('rgrid-node', command == null ? 'missing command (join or status)' : `unknown command ${JSON.stringify(command)}`)
  // Flags given on the command line win over the config file's.
  const fromFile = parsed.values.config != null ? await readConfig(parsed.values.config) : { values: {}, join: [] }
  const args = { ...fromFile.values, ...parsed.values } as typeof parsed.values
  const targets = cliTargets.length > 0 ? cliTargets : fromFile.join
  if (args['token-file'] != null) {
    try { targets.unshift(await readHandoff(args['token-file'], 120_000)) } catch (err) { usageError('rgrid-node', (err as Error).message) }
  }
  // A join token carries whom to dial and trust; plain multiaddrs join an open mesh.
  let token: JoinToken | null = null
  const peers: string[] = []
  for (const t of targets) {
    if (isJoinToken(t)) {
      if (token != null) usageError('rgrid-node', 'give one join token')
      try { token = decodeJoinToken(t) } catch (err) { usageError('rgrid-node', (err as Error).message) }
      if (token.expiresAt != null && token.expiresAt <= Date.now()) usageError('rgrid-node', `the join token expired at ${new Date(token.expiresAt).toISOString()}; ask for a new one (rgrid-coordinator token create)`)
    } else {
      peers.push(t)
    }
  }
  if (token != null) peers.push(...token.addrs)
  if (peers.length === 0) usageError('rgrid-node', 'join needs a join token (rgrid1.…) or at least one MULTIADDR of a bootstrap peer or coordinator')
  const runtimeName = args.runtime ?? 'docker'
  if (runtimeName !== 'docker' && runtimeName !== 'process' && runtimeName !== 'sim') usageError('rgrid-node', '--runtime must be docker, process or sim')
  // By default jobs get the machine minus a reserve for the node itself and the operator:
  // one core (on machines with more than two) and a fifth of the memory (at least 512 MiB).
  const cores = availableParallelism()
  const cpus = Number(args.cpus ?? (cores > 2 ? cores - 1 : cores))
  if (!Number.isFinite(cpus) || cpus <= 0) usageError('rgrid-node', '--cpus must be a positive number')
  const slots = positiveInt('--slots', args.slots, Math.max(1, Math.floor(cpus)))
  const totalMb = Math.floor(totalmem() / 1024 / 1024)
  const memoryMb = positiveInt('--memory-mb', args['memory-mb'], Math.max(256, totalMb - Math.max(512, Math.floor(totalMb * 0.2))))
  const drainTimeoutMs = positiveInt('--drain-timeout-ms', args['drain-timeout-ms'], 30_000)
  const renewMs = positiveInt('--renew-ms', args['renew-ms'], 5_000)
  const cacheMb = positiveInt('--cache-mb', args['cache-mb'], 1024)
  const gossipDropRate = Number(args['fault-drop-gossip'] ?? 0)
  if (!(gossipDropRate >= 0 && gossipDropRate < 1)) usageError('rgrid-node', '--fault-drop-gossip must be a number from 0 to below 1')
  const labels = parseLabels(args.labels)
  const pidsLimit = positiveInt('--pids-limit', args['pids-limit'], 256)
  const jobNiceText = args['job-nice'] ?? '10'
  const jobNice = /^\d{1,2}$/.test(jobNiceText) ? Number(jobNiceText) : NaN
  if (!(jobNice >= 0 && jobNice <= 19)) usageError('rgrid-node', `--job-nice must be an integer from 0 to 19, got ${JSON.stringify(args['job-nice'])}`)
  const spawnerName = args.spawner ?? 'auto'
  if (spawnerName !== 'auto' && spawnerName !== 'helper' && spawnerName !== 'node') usageError('rgrid-node', `--spawner must be auto, helper or node, got ${JSON.stringify(spawnerName)}`)
  const helperBuilt = runtimeName === 'process' && spawnerName !== 'node' && await isExecutable(SPAWN_HELPER_PATH)
  if (spawnerName === 'helper' && runtimeName === 'process' && !helperBuilt) {
    usageError('rgrid-node', `--spawner helper: ${SPAWN_HELPER_PATH} is missing; run npm run build with a C compiler installed (Debian: gcc libc6-dev)`)
  }
  const imageAllow = args['image-allow'] != null ? parsePatterns('--image-allow', args['image-allow']) : undefined
  const imageDeny = args['image-deny'] != null ? parsePatterns('--image-deny', args['image-deny']) : undefined
  const allowNetwork = args['allow-network'] === true
  const log = createLogger('node', { level: (args['log-level'] ?? 'info') as LogLevel })
  logUnhandledRejections(log)
  const dataDir = resolve(args['data-dir'] ?? join('.rgrid', 'node'))
  await mkdir(dataDir, { recursive: true })
  const privateKey = await loadOrCreateIdentity(dataDir)

  const pinFile = join(dataDir, 'coordinator.peer')
  let coordinators = [...(args.coordinator ?? []), ...(token?.coordinators ?? [])]
  if (coordinators.length === 0) {
    try {
      const pinned = (await readFile(pinFile, 'utf8')).trim()
      if (pinned !== '') coordinators = [pinned]
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
  }
  for (const c of coordinators) {
    try { peerIdFromString(c) } catch { usageError('rgrid-node', `--coordinator ${JSON.stringify(c)} is not a peer id`) }
  }

  // rgrid-spawn is started here, not at the first job: a binary that is there but does not work
  // (another machine's build, another protocol version) must fall back, or stop --spawner helper.
  let spawnHelper: SpawnHelper | null = null
  if (helperBuilt) {
    const candidate = new SpawnHelper({ log: log.child('rgrid-spawn'), jobNice })
    try {
      await candidate.start()
      spawnHelper = candidate
    } catch (err) {
      if (spawnerName === 'helper') {
        log.error('--spawner helper: rgrid-spawn does not start; rebuild it with npm run build', { path: SPAWN_HELPER_PATH, error: errorMessage(err) })
        process.exit(1)
      }
      log.warn('rgrid-spawn does not start; jobs start through Node\'s child_process instead (rebuild it with npm run build)', { path: SPAWN_HELPER_PATH, error: errorMessage(err) })
    }
  }
  const runtime: Runtime = runtimeName === 'sim'
    ? new SimRuntime()
    : runtimeName === 'process'
    ? (spawnHelper != null
        ? new ProcessRuntime({ logger: log.child('process'), spawner: spawnHelper })
        : new ForkedProcessRuntime({ log: log.child('process'), jobNice }))
    : new DockerRuntime({
      logger: log.child('docker'),
      labels: { 'rgrid.node': peerIdFromPrivateKey(privateKey).toString() },
      ...(args['docker-default-image'] != null ? { defaultImage: args['docker-default-image'] } : {}),
      allowNetwork,
      images: { ...(imageAllow != null ? { allow: imageAllow } : {}), ...(imageDeny != null ? { deny: imageDeny } : {}) },
      pidsLimit
    })
  if (runtimeName !== 'docker' && (allowNetwork || imageAllow != null || imageDeny != null || args['pids-limit'] != null)) {
    log.warn('--allow-network, --image-allow, --image-deny and --pids-limit apply to the docker runtime only; ignored', { runtime: runtimeName })
  }
  if (runtimeName !== 'process' && (args['job-nice'] != null || args.spawner != null)) {
    log.warn('--job-nice and --spawner apply to the process runtime only; ignored', { runtime: runtimeName })
  }
  if (runtimeName === 'process' && spawnerName === 'auto' && !helperBuilt) {
    log.warn('rgrid-spawn is not built; jobs start through Node\'s child_process, which costs more CPU per job (install a C compiler and run npm run build)', { path: SPAWN_HELPER_PATH })
  }

  const defaultImageRefusal = runtimeName === 'docker' ? imageRefusal({ allow: imageAllow, deny: imageDeny }, args['docker-default-image'] ?? 'busybox:latest') : null
  if (defaultImageRefusal != null) log.warn('the image policy refuses the default image: jobs that name no image will fail', { reason: defaultImageRefusal })
  if (allowNetwork && runtimeName === 'docker') log.info('jobs that ask for network access get it (--allow-network)')
  if (gossipDropRate > 0) log.warn('fault injection: ignoring a share of received gossip', { gossipDropRate })
  if (runtimeName === 'process') {
    log.warn('process runtime: jobs run without isolation; use it for development and simulations only')
    log.info(spawnHelper != null ? 'process runtime: jobs start through rgrid-spawn (posix_spawn)' : 'process runtime: jobs start through Node\'s child_process in a host process')
  }

  const agent = new NodeAgent({
    privateKey, runtime, log, bootstrap: peers, slots, cpus, memoryMb, labels, drainTimeoutMs, renewMs, gossipDropRate,
    faultPartition: args['fault-partition-signal'] === true,
    useRelay: args['no-relay'] !== true,
    ...(token != null ? { join: { id: token.id, secret: token.secret }, coordinatorAddrs: token.addrs, networkKey: token.networkKey } : {}),
    onRefused: (message) => {
      process.stderr.write(`rgrid-node: the coordinator refused this node: ${message}\n`)
      process.exit(2)
    },
    workRoot: join(dataDir, 'work'),
    outboxPath: join(dataDir, 'outbox.db'),
    cacheDir: join(dataDir, 'cache'),
    cacheMaxBytes: cacheMb * 1024 * 1024,
    listen: args.listen ?? ['/ip4/0.0.0.0/tcp/0'],
    coordinators,
    onCoordinator: (peerId) => {
      writeFile(pinFile, peerId + '\n').catch((err: unknown) => { log.warn('could not remember the coordinator', { error: errorMessage(err) }) })
    }
  })
  let metrics: MetricsServer | null = null
  if (args.metrics != null) {
    const i = args.metrics.lastIndexOf(':')
    const port = Number(args.metrics.slice(i + 1))
    if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) usageError('rgrid-node', '--metrics takes HOST:PORT, e.g. 127.0.0.1:9464')
    metrics = new MetricsServer({ host: args.metrics.slice(0, i).replace(/^\[|\]$/g, ''), port, render: () => agent.prometheus() })
  }
  await agent.start()
  const metricsUrl = await metrics?.start()
  if (metricsUrl != null) log.info('metrics', { url: metricsUrl })
  process.stdout.write(`${agent.peerId}\n`)
  if (args['fault-control'] != null) {
    const file = args['fault-control']
    let last = ''
    const poll = setInterval(() => {
      readFile(file, 'utf8').then(text => {
        if (text === last) return
        last = text
        const f = JSON.parse(text) as { dropGossip?: unknown, delayMs?: unknown }
        agent.setFaults({ ...(typeof f.dropGossip === 'number' ? { dropRate: f.dropGossip } : {}), ...(typeof f.delayMs === 'number' ? { delayMs: f.delayMs } : {}) })
      }).catch((err: unknown) => {
        // No file yet means no fault; anything else is worth a line.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('cannot read the fault control file', { file, error: errorMessage(err) })
      })
    }, 200)
    poll.unref()
    log.warn('fault injection: reading faults from a control file', { file })
  }
  // For `rgrid-node status`: rewritten every 2 s, atomically.
  const statusFile = join(dataDir, STATUS_FILE)
  const writeStatus = async (): Promise<void> => {
    try {
      await writeFile(statusFile + '.tmp', JSON.stringify(agent.status()) + '\n')
      await rename(statusFile + '.tmp', statusFile)
    } catch (err) {
      log.warn('cannot write the status file', { error: errorMessage(err) })
    }
  }
  await writeStatus()
  const statusTimer = setInterval(() => { void writeStatus() }, 2_000)
  statusTimer.unref()
  stopOnSignals({ stop: async () => { clearInterval(statusTimer); await metrics?.stop(); await agent.stop(); await rm(statusFile, { force: true }) } }, log, { gracefulStopMs: drainTimeoutMs + 15_000 })
  if (args['fault-partition-signal'] === true) {
    log.warn('fault injection: SIGUSR2 cuts this node off the network, the next SIGUSR2 heals it')
    let cut = false
    process.on('SIGUSR2', () => {
      cut = !cut
      agent.setCutOff(cut).catch((err: unknown) => { log.error('partition fault injection failed', { error: errorMessage(err) }) })
    })
  }
}

const STATUS_FILE = 'status.json'

/**
 * `--config FILE`: a JSON object whose keys are the long flag names
 * (`"runtime": "docker"`, `"slots": 4`, `"labels": "zone=eu"`) plus `"join"`:
 * the token and any multiaddrs. For unattended machines (see docs/operations.md).
 */
async function readConfig (path: string): Promise<{ values: Record<string, unknown>, join: string[] }> {
  let raw: unknown
  try {
    raw = JSON.parse(await readFile(path, 'utf8'))
  } catch (err) {
    usageError('rgrid-node', `--config ${path}: ${errorMessage(err)}`)
  }
  if (raw == null || typeof raw !== 'object' || Array.isArray(raw)) usageError('rgrid-node', `--config ${path}: expected a JSON object`)
  const values: Record<string, unknown> = {}
  let joinTargets: string[] = []
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (k === 'join') {
      joinTargets = (Array.isArray(v) ? v : [v]).map(String)
    } else if (k === 'coordinator' || k === 'listen' || k === 'image-allow' || k === 'image-deny') {
      values[k] = (Array.isArray(v) ? v : [v]).map(String)
    } else if (typeof v === 'boolean') {
      values[k] = v
    } else if (typeof v === 'string' || typeof v === 'number') {
      values[k] = String(v)
    } else {
      usageError('rgrid-node', `--config ${path}: ${k} must be a string, number or boolean`)
    }
  }
  const known = new Set(['runtime', 'slots', 'cpus', 'memory-mb', 'labels', 'coordinator', 'listen', 'data-dir', 'docker-default-image', 'allow-network', 'image-allow', 'image-deny', 'pids-limit', 'job-nice', 'spawner', 'drain-timeout-ms', 'cache-mb', 'metrics', 'renew-ms', 'no-relay', 'log-level'])
  for (const k of Object.keys(values)) if (!known.has(k)) usageError('rgrid-node', `--config ${path}: unknown setting ${JSON.stringify(k)}`)
  return { values, join: joinTargets }
}

interface ReachabilityView { reachability: string, dialable: string[], relayed?: string[], relayAddrs?: string[], holePunchedPeers?: string[], paths?: { direct: number, relayed: number } }

function reachabilityText (r: ReachabilityView | undefined): string {
  if (r == null || r.reachability === 'unknown') return 'not checked yet'
  const punched = r.holePunchedPeers ?? []
  const direct = punched.length > 0 ? `; direct after hole punching with ${punched.length} peer${punched.length === 1 ? '' : 's'}` : ''
  if (r.reachability === 'public') return `public: the coordinator connected to ${r.dialable.join(', ')}`
  if (r.reachability === 'relayed') return `relayed: not dialable, reached through ${(r.relayed ?? []).join(', ')}${direct}`
  const slots = r.relayAddrs ?? []
  const slot = slots.length > 0 ? `; relay slot ${slots.join(', ')}, not yet checked` : '; no relay slot (yet)'
  return `outbound only: no listen address could be dialled, so this node works over the connections it opened (e.g. behind NAT)${slot}${direct}`
}

/** `rgrid-node status`: what the node running on DATA_DIR last wrote. */
async function status (dataDir: string, json: boolean): Promise<void> {
  let text: string
  try {
    text = await readFile(join(dataDir, STATUS_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    process.stderr.write(`rgrid-node status: no node is running on ${dataDir} (no ${STATUS_FILE})\n`)
    process.exit(1)
  }
  const s = JSON.parse(text) as { peerId: string, pid: number, startedAt: number, updatedAt: number, runtime: string, slots: number, freeSlots: number, bidding: boolean, coordinators: string[], connections: string[], running: Array<{ jobId: string, attempt: number, startedAt: number | null }>, pendingResults: number, recentResults: Array<{ jobId: string, attempt: number, outcome: string, exitCode: number | null, errorCode: string | null, finishedAt: number }>, reachability?: ReachabilityView }
  const stale = Date.now() - s.updatedAt > 10_000
  if (json) { process.stdout.write(JSON.stringify({ ...s, stale }, null, 2) + '\n'); return }
  const age = (ms: number): string => ms < 120_000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60_000)} min`
  const lines = [
    `node ${s.peerId} (pid ${s.pid}, ${s.runtime} runtime)${stale ? `  NOT RUNNING? last update ${age(Date.now() - s.updatedAt)} ago` : `, up ${age(Date.now() - s.startedAt)}`}`,
    `slots: ${s.slots - s.freeSlots} busy of ${s.slots}${s.bidding ? '' : ' (draining)'}; results waiting for delivery: ${s.pendingResults}`,
    `coordinators with a session: ${s.coordinators.length === 0 ? 'none' : s.coordinators.join(', ')}`,
    `reachable: ${reachabilityText(s.reachability)}`,
    `connections: ${s.connections.length}`,
    ...s.connections.map(c => `  ${c}`),
    `running: ${s.running.length === 0 ? 'nothing' : ''}`,
    ...s.running.map(r => `  ${r.jobId} attempt ${r.attempt}${r.startedAt != null ? `, for ${age(Date.now() - r.startedAt)}` : ', starting'}`),
    `recent results: ${s.recentResults.length === 0 ? 'none' : ''}`,
    ...s.recentResults.map(r => `  ${new Date(r.finishedAt).toISOString()}  ${r.jobId} attempt ${r.attempt}  ${r.outcome}${r.exitCode != null ? ` exit ${r.exitCode}` : ''}${r.errorCode != null ? ` (${r.errorCode})` : ''}`)
  ]
  process.stdout.write(lines.join('\n') + '\n')
}

main().catch((err: unknown) => {
  process.stderr.write(`rgrid-node: ${errorMessage(err)}\n`)
  process.exit(1)
})

async function isExecutable (path: string): Promise<boolean> {
  try {
    await access(path, fsConstants.X_OK)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'EACCES') return false
    throw err
  }
}

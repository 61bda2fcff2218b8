/**
 * The node agent: joins the mesh, finds the coordinator from its beacon,
 * keeps a session to it, gossips heartbeats, bids on announced jobs it can
 * run, runs what it wins and reports the results.
 *
 * Slots are never oversubscribed: a slot is reserved before a bid is sent
 * and released only when the bid is refused or the attempt's result has
 * been handed to the reporter.
 */
import { LoopDelayMonitor } from '../common/loop-delay.js'
import { mkdir, rm, rmdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { ANNOUNCE_TOPIC, BEACON_TOPIC, HEARTBEAT_TOPIC } from '../protocol/ids.js'
import { decodeAnnouncement, decodeHeartbeatTopic, encode } from '../protocol/codec.js'
import type { AnnouncedJob, Award, CoordinatorFrame, NodeCapacity } from '../protocol/schemas.js'
import { mismatch } from '../protocol/matching.js'
import { NodeReachability } from './reachability.js'
import { createHost, cutOff, decodeGossip, denyPeers, graylisted, heal, installValidator, openGate, type PeerGate, type RGridHost } from '../common/p2p.js'
import { HeartbeatGuard } from '../common/gossip-guard.js'
import { systemClock, type Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import type { Runtime } from './runtime/types.js'
import { Candidates } from './candidates.js'
import type { SessionClient } from './session-client.js'
import { CoordinatorLinks } from './coordinators.js'
import { Reporter } from './reporter.js'
import { Runner, type OutputsRequest, type RunningAttempt } from './runner.js'
import { InputCache } from './input-cache.js'
import { family } from '../common/metrics.js'
import { LogShipper } from './log-shipper.js'
import { NodeTransfers, TransferError } from './transfers.js'
import { Outbox } from './outbox.js'
import { NodeStandby } from './standby.js'

export const AGENT_VERSION = '0.1.0'

export interface NodeAgentOptions {
  privateKey: PrivateKey
  runtime: Runtime
  log: Logger
  /** Bootstrap peers (full multiaddrs). */
  bootstrap: string[]
  /** @default ['/ip4/0.0.0.0/tcp/0'] */
  listen?: string[]
  /**
   * Coordinator peer ids to trust (several may share one database). When
   * empty, the first beacon heard is trusted and reported via onCoordinator.
   * @default []
   */
  coordinators?: string[]
  onCoordinator?: (peerId: string) => void
  /** Coordinator multiaddrs known up front (a join token's), dialled without waiting for a beacon. @default [] */
  coordinatorAddrs?: string[]
  /** Join token credentials presented in every hello. @default none (an open mesh) */
  join?: { id: string, secret: string }
  /** The mesh's network key, from the join token (libp2p private network). @default none (an open mesh) */
  networkKey?: string
  /**
   * Take a circuit relay slot when the coordinator finds this node cannot
   * be dialled (`--no-relay` turns it off).
   * @default true
   */
  useRelay?: boolean
  /** A coordinator refused this node's join token (the CLI exits with the message). */
  onRefused?: (message: string) => void
  /** Directory for per-attempt work dirs. */
  workRoot: string
  /** Path of the outbox database; without it results are kept in memory only. */
  outboxPath?: string
  /** Directory of the input cache. @default `<workRoot>/../cache` */
  cacheDir?: string
  /** Size cap of the input cache, in bytes. @default 1073741824 (1 GiB) */
  cacheMaxBytes?: number
  /** Concurrent jobs. @default 1 */
  slots?: number
  /** @default 1 */
  cpus?: number
  /** @default 1024 */
  memoryMb?: number
  /** @default {} */
  labels?: Record<string, string>
  /** Gossip heartbeat interval, in ms. @default 1000 */
  heartbeatMs?: number
  /** Direct lease renewal and keepalive over the session, in ms. @default 5000 */
  renewMs?: number
  /** Longest load-based bid delay (a full node waits this long), in ms. @default 20 */
  bidDelayMaxMs?: number
  /**
   * Bids out at once. With several, a node with free slots bids on as many
   * jobs of one announcement together, and so does every other idle node:
   * at 50 nodes that was over 5 bids per job, nearly all refused. One at a
   * time, each next bid goes out after the last reply, by when the node
   * has often heard which jobs were taken. @default 1
   */
  maxBidsInFlight?: number
  /** Ask the coordinator for open jobs when idle at most this often, in ms. @default 1000 */
  pullMs?: number
  /**
   * Idle pulls that find nothing back off, doubling up to this; any
   * announcement or a pull that finds jobs brings them back to `pullMs`.
   * At rest, 10 nodes' pulls every second were a fifth of the coordinator's
   * CPU (docs/performance.md).
   * @default 8000
   */
  pullMaxMs?: number
  /**
   * How long each standing bid (`standby`, session 1.2) waits for an award
   * before it is renewed, in ms. 0 turns standing bids off: the node then
   * only bids on announcements. @default 25000
   */
  standbyWaitMs?: number
  /** Pause bidding this long after a refusal for being full, in ms. @default 250 */
  overloadBackoffMs?: number
  /**
   * Fault injection for tests and research: the share of received gossip
   * messages (announcements, beacons, heartbeats) this node ignores, as if
   * they were lost. @default 0
   */
  gossipDropRate?: number
  /**
   * Fault injection: allow {@link NodeAgent.setCutOff} to cut the node off
   * the network (a connection gater refuses every connection). @default false
   */
  faultPartition?: boolean
  /** How long a finished attempt waits for a coordinator to grant its output uploads, in ms. @default 60000 */
  uploadWaitMs?: number
  /** How long stop() lets running jobs finish before stopping them, in ms. @default 30000 */
  drainTimeoutMs?: number
  /** @default systemClock */
  clock?: Clock
}

export class NodeAgent {
  private host: RGridHost | null = null
  private starting: Promise<void> | null = null
  private links: CoordinatorLinks | null = null
  private bidding = true
  private reserved = 0
  private hbSeq = 0
  private lastPullAt = 0
  private lastPullFull = false
  /** The idle-pull wait after activity (`pullMs`), and the wait now: doubling while pulls find nothing. */
  private readonly pullMs: number
  private pullWaitMs: number
  private overloadedUntil = 0
  private pulling = false
  private readonly timers: NodeJS.Timeout[] = []
  private readonly stopController = new AbortController()
  private cands!: Candidates
  private standby: NodeStandby | null = null
  private readonly clock: Clock
  private readonly reporter: Reporter
  private readonly outbox: Outbox | null
  private readonly runner: Runner
  readonly cache: InputCache
  private readonly recent: Array<{ jobId: string, attempt: number, outcome: string, exitCode: number | null, errorCode: string | null, finishedAt: number }> = []
  private readonly startedAt = Date.now()
  /** Event-loop delay in 2 s windows: shows whether supervision and I/O delay gossip heartbeats. */
  private readonly loopDelay = new LoopDelayMonitor({ isBusy: () => this.runner.size > 0 })
  /** How this node can be reached (the coordinator's dial-back), its relay slot and hole-punched peers. */
  private readonly reach: NodeReachability
  readonly transfers: NodeTransfers
  /** Revoked peers (from coordinator beacons) and, with faultPartition, the cut switch. */
  private readonly gate: PeerGate = openGate()
  private heartbeatGuard: HeartbeatGuard | null = null
  private revokedSelf = false
  readonly stats = { bids: 0, awards: 0, nextAwards: 0, standbyAwards: 0, announcementsOnStandby: 0, refusals: 0, bidErrors: 0, announcementsIgnored: 0, sessionsOpened: 0, offersPushed: 0, gossipDropped: 0, gossipBytesIn: 0, gossipBytesOut: 0 }
  /** Fault injection, changeable while running (setFaults): gossip loss and link delay. */
  private faults = { dropRate: 0, delayMs: 0 }

  constructor (private readonly options: NodeAgentOptions) {
    this.clock = options.clock ?? systemClock
    this.pullMs = options.pullMs ?? 1_000
    this.pullWaitMs = this.pullMs
    this.reach = new NodeReachability({
      log: options.log.child('reachability'), clock: this.clock,
      sessions: () => this.links?.openSessions().map(s => s.session) ?? [],
      relays: () => [...options.bootstrap, ...(this.links?.relayCandidates() ?? [])],
      ...(options.useRelay != null ? { useRelay: options.useRelay } : {})
    })
    this.outbox = options.outboxPath != null ? new Outbox(options.outboxPath, { log: options.log.child('outbox') }) : null
    this.reporter = new Reporter({
      log: options.log.child('reporter'), session: (prefer) => this.links?.session(prefer) ?? null,
      ...(this.outbox != null ? { outbox: this.outbox } : {}),
      // Under load the result's ack brings the next job: one round trip per job instead of two.
      next: {
        want: () => this.bidding && this.clock.now() >= this.overloadedUntil,
        take: (award, coordinator) => {
          this.stats.awards++
          this.stats.nextAwards++
          this.cands.remove(award.jobId, award.attempt)
          this.runner.run({ type: 'award', rid: 0, ...award }, this.stopController.signal, coordinator)
        }
      }
    })
    this.cache = new InputCache({
      dir: options.cacheDir ?? join(options.workRoot, '..', 'cache'),
      log: options.log.child('cache'),
      ...(options.cacheMaxBytes != null ? { maxBytes: options.cacheMaxBytes } : {})
    })
    this.transfers = new NodeTransfers({ cache: this.cache, log: options.log.child('transfers') })
    const logs = new LogShipper({
      log: options.log.child('logs'),
      clock: this.clock,
      send: async (request, coordinator) => {
        const session = this.links?.session(coordinator)
        if (session == null) throw new Error('no session to a coordinator')
        return await session.request(request)
      },
      onStale: (jobId, attempt, reason) => { this.runner.revoke(jobId, attempt, `live log refused: ${reason}`) }
    })
    this.runner = new Runner({
      runtime: options.runtime,
      logs,
      transfers: this.transfers,
      requestUploads: async (request, coordinator) => await this.requestUploads(request, coordinator),
      log: options.log.child('runner'),
      workDir: async (jobId, attempt) => {
        const dir = join(options.workRoot, `${jobId}-${attempt}`)
        // The work root exists (created at start); a stale dir from a crash is reused.
        await mkdir(dir).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EEXIST') throw err })
        return dir
      },
      cleanup: async dir => {
        // Most jobs leave their dir empty: one rmdir instead of a recursive walk.
        try {
          await rmdir(dir)
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code
          if (code === 'ENOTEMPTY' || code === 'EEXIST') await rm(dir, { recursive: true, force: true })
          else if (code !== 'ENOENT') throw err
        }
      },
      reporter: this.reporter,
      onTaken: () => { this.loopDelay.busy() },
      onFinished: () => { this.pump() },
      onResult: r => {
        this.recent.push(r)
        if (this.recent.length > 20) this.recent.shift()
      }
    })
  }

  get peerId (): string {
    if (this.host == null) throw new Error('node not started')
    return this.host.peerId.toString()
  }

  get slots (): number { return this.options.slots ?? 1 }

  capacity (): NodeCapacity {
    return {
      slots: this.slots,
      freeSlots: this.freeSlots(),
      cpus: this.options.cpus ?? 1,
      memoryMb: this.options.memoryMb ?? 1024,
      labels: this.options.labels ?? {},
      runtime: this.options.runtime.name,
      version: AGENT_VERSION,
      // What the runtime enforces (--allow-network, --image-allow/--image-deny), so coordinators only award what it runs.
      ...(this.options.runtime.policy?.network === true ? { network: true } : {}),
      ...(this.options.runtime.policy?.images != null ? { images: this.options.runtime.policy.images } : {})
    }
  }

  /** Slots not running or bid for: what the node reports as free (a standby's slot is free to be awarded). */
  private freeSlots (): number {
    return Math.max(0, this.slots - this.runner.size - this.reserved)
  }

  /** Free slots without a standby out on them: what the node may still bid with. */
  private unclaimedSlots (): number {
    return Math.max(0, this.freeSlots() - (this.standby?.size ?? 0))
  }

  async start (): Promise<void> {
    this.starting ??= this.doStart()
    await this.starting
  }

  private async doStart (): Promise<void> {
    const { log } = this.options
    this.loopDelay.start()
    await this.options.runtime.start(this.stopController.signal)
    await mkdir(this.options.workRoot, { recursive: true })
    await this.cache.start()
    const restored = this.reporter.restore()
    if (restored > 0) log.info('results from before the restart will be delivered', { count: restored })
    await this.adoptLeftovers()
    const host = await createHost({
      privateKey: this.options.privateKey,
      listen: this.options.listen ?? ['/ip4/0.0.0.0/tcp/0'],
      bootstrap: this.options.bootstrap,
      gate: this.gate,
      ...(this.options.networkKey != null ? { networkKey: this.options.networkKey } : {})
    })
    this.cands = new Candidates({ self: host.peerId.toString() })
    const links = new CoordinatorLinks({
      host, log, trusted: this.options.coordinators ?? [], signal: this.stopController.signal, knownAddrs: this.options.coordinatorAddrs ?? [],
      linkDelayMs: () => this.faults.delayMs,
      ...(this.options.onCoordinator != null ? { onTrust: this.options.onCoordinator } : {}),
      onOpen: async (session, coordinator) => { await this.hello(session, coordinator) },
      onPush: (frame, coordinator) => { this.onPush(frame, coordinator) }
    })
    this.links = links
    if ((this.options.standbyWaitMs ?? 25_000) > 0) {
      this.standby = new NodeStandby({
        log: log.child('standby'),
        waitMs: this.options.standbyWaitMs ?? 25_000,
        session: () => links.openSessions().find(s => s.session.offersStandby) ?? null,
        wanted: () => {
          if (!this.bidding || this.clock.now() < this.overloadedUntil) return 0
          // While there are announced jobs to bid on, the slots bids may use stay off standby; the rest wait there.
          const forBids = this.cands.size > 0 ? Math.max(0, (this.options.maxBidsInFlight ?? 1) - this.reserved) : 0
          return Math.max(0, this.unclaimedSlots() - forBids)
        },
        take: (award, coordinator) => {
          this.stats.awards++
          this.stats.standbyAwards++
          this.cands.remove(award.jobId, award.attempt)
          this.runner.run(award, this.stopController.signal, coordinator)
        },
        onFreed: () => { this.pump() }
      })
    }
    // Relay only announcements signed by a coordinator we trust; the author of a forgery loses score.
    installValidator(host, ANNOUNCE_TOPIC, decodeAnnouncement, from => this.gate.denied.has(from.toString()) ? 'reject' : !links.anyKnown || links.isTrusted(from) ? 'accept' : 'reject', log)
    const guard = new HeartbeatGuard({
      clock: this.clock, denied: this.gate.denied,
      ...(this.options.coordinators != null && this.options.coordinators.length > 0 ? { isCoordinator: (p: string) => links.isTrusted(p) } : {})
    })
    this.heartbeatGuard = guard
    // Only beacons belong on the beacon topic: a heartbeat there is misuse, and its author loses score.
    installValidator(host, BEACON_TOPIC, decodeHeartbeatTopic, guard.only('coordinator-beacon'), log)
    host.services.pubsub.addEventListener('message', evt => { this.onGossip(evt.detail) })
    await host.start()
    this.host = host
    this.reach.start(host)
    host.services.pubsub.subscribe(ANNOUNCE_TOPIC)
    // Heartbeats are published, not heard: only coordinators read them (see HEARTBEAT_TOPIC).
    host.services.pubsub.subscribe(BEACON_TOPIC)
    this.every(this.options.heartbeatMs ?? 1_000, () => { void this.heartbeat() })
    this.every(this.options.renewMs ?? 5_000, () => { void this.renew() })
    links.reconnect()
    this.every(this.pullMs, () => { void this.pullIfIdle() })
    log.info('node started', { peerId: host.peerId.toString(), slots: this.slots, runtime: this.options.runtime.name })
  }

  /**
   * Jobs an earlier run of this node left behind are followed to their end
   * and reported, never forgotten. They are listed as held in the first
   * hello, so the coordinator keeps them or (if it has moved on) revokes
   * them, which stops them.
   */
  private async adoptLeftovers (): Promise<void> {
    const adopted = await this.options.runtime.adopt?.(this.stopController.signal) ?? []
    const reported = new Set(this.reporter.pendingResults().map(r => `${r.jobId}/${r.attempt}`))
    for (const a of adopted) {
      // Its result already waits in the outbox: following it again would report twice.
      if (reported.has(`${a.jobId}/${a.attempt}`)) {
        const stop = new AbortController()
        stop.abort(new Error('already reported'))
        await a.resume(stop.signal).catch((err: unknown) => { this.options.log.warn('could not remove an already reported container', { jobId: a.jobId, error: errorMessage(err) }) })
        continue
      }
      this.runner.adopt(a, this.stopController.signal)
    }
    if (adopted.length > 0) this.options.log.info('adopted jobs left by an earlier run of this node', { count: adopted.length, jobs: adopted.map(a => `${a.jobId}/${a.attempt}`) })
  }

  private every (ms: number, fn: () => void): void {
    const t = setInterval(fn, ms)
    t.unref()
    this.timers.push(t)
  }

  /**
   * Fault injection while running: the share of received gossip to ignore
   * and a delay added to every message this node handles or sends (a slow
   * link). Used by `rgrid sim` timelines.
   */
  setFaults (f: { dropRate?: number, delayMs?: number }): void {
    if (f.dropRate != null) this.faults.dropRate = Math.min(0.99, Math.max(0, f.dropRate))
    if (f.delayMs != null) this.faults.delayMs = Math.min(60_000, Math.max(0, f.delayMs))
    this.options.log.warn('fault injection changed', { ...this.faults })
  }

  private onGossip (msg: { topic: string, type: string, data: Uint8Array, from?: PeerId }): void {
    if (msg.type !== 'signed' || msg.from == null) return
    this.stats.gossipBytesIn += msg.data.length
    const drop = Math.max(this.options.gossipDropRate ?? 0, this.faults.dropRate)
    if (drop > 0 && Math.random() < drop) { this.stats.gossipDropped++; return }
    if (this.faults.delayMs > 0) {
      const delayed = { ...msg }
      setTimeout(() => { this.handleGossip(delayed) }, this.faults.delayMs).unref()
      return
    }
    this.handleGossip(msg)
  }

  private handleGossip (msg: { topic: string, type: string, data: Uint8Array, from?: PeerId }): void {
    if (msg.from == null) return
    try {
      if (msg.topic === BEACON_TOPIC) {
        const hb = decodeGossip(msg.data, decodeHeartbeatTopic)
        if (hb.type === 'coordinator-beacon') {
          this.links?.onBeacon(msg.from, hb.addrs)
          // Revoked peers, from a coordinator we trust: refuse them too, so a cut-off node cannot stay in the mesh through us.
          if (hb.denied.length > 0 && this.host != null && this.links?.isTrusted(msg.from) === true) {
            const added = denyPeers(this.host, this.gate, hb.denied)
            if (added > 0) this.options.log.warn('refusing peers whose join token was revoked', { count: added })
          }
        }
      } else if (msg.topic === ANNOUNCE_TOPIC) {
        if (this.links?.isTrusted(msg.from) !== true) { this.stats.announcementsIgnored++; return }
        const announcement = decodeGossip(msg.data, decodeAnnouncement)
        // Work is moving: the next idle pull comes soon again (a lost announcement is found within pullMs).
        this.pullWaitMs = this.pullMs
        for (const t of announcement.taken) this.cands.remove(t.jobId, t.attempt)
        if (announcement.jobs.length > 0 && !this.onStandbyAt(msg.from.toString())) this.offer(announcement.jobs, msg.from.toString())
      }
    } catch (err) {
      this.options.log.debug('ignored gossip message', { topic: msg.topic, error: errorMessage(err) })
    }
  }

  /** Introduces the node on a new session and takes the open jobs it is offered. */
  private async hello (session: SessionClient, coordinator: string): Promise<void> {
    this.stats.sessionsOpened++
    // Our listen addresses, so the coordinator can tell whether it can dial us (or we only dial out).
    const listenAddrs = this.reach.listenAddrs()
    this.reach.introduced()
    const welcome = await session.request({ type: 'hello', capacity: this.capacity(), running: this.held(), listenAddrs, ...(this.options.join != null ? { join: this.options.join } : {}) })
    if (welcome.type === 'error' && welcome.code === 'join-refused') {
      this.options.log.error('the coordinator refused to admit this node', { coordinator, reason: welcome.message })
      this.options.onRefused?.(welcome.message)
    }
    if (welcome.type !== 'welcome') throw new Error(`expected welcome, got ${welcome.type}${welcome.type === 'error' ? `: ${welcome.message}` : ''}`)
    for (const r of welcome.revoked) this.runner.revoke(r.jobId, r.attempt, 'the coordinator no longer assigns this attempt to us')
    this.offer(welcome.open, coordinator)
    this.reporter.kick()
  }

  private onPush (frame: CoordinatorFrame, coordinator: string): void {
    if (frame.type === 'error' && frame.code === 'join-revoked') void this.onRevoked(frame.message)
    else if (frame.type === 'cancel') this.runner.cancel(frame.jobId, frame.attempt, frame.token, frame.reason)
    // A lease of ours ran out on the coordinator's clock: prove we are alive at once.
    else if (frame.type === 'probe') void this.renew()
    else if (frame.type === 'reachability') this.reach.onVerdict(frame.reachability, frame.dialable, frame.relayed)
    // Our session runs through a relay, where gossip cannot: the coordinator sends announced jobs this way.
    else if (frame.type === 'offer') {
      this.stats.offersPushed++
      if (this.bidding && !this.onStandbyAt(coordinator)) this.offer(frame.jobs, coordinator)
    }
    else if (frame.type === 'drain') {
      // The coordinator is about to give back this machine: take no new work; running jobs finish.
      this.bidding = false
      this.host?.services.pubsub.unsubscribe(ANNOUNCE_TOPIC)
      void this.standby?.withdraw()
      this.options.log.warn('draining at the coordinator\'s request', { reason: frame.reason })
    }
  }

  /**
   * Our join token was revoked: the coordinator has rescheduled our work, so
   * stop it (its results would be refused), take no more, and tell the CLI,
   * which exits with the reason.
   */
  private async onRevoked (message: string): Promise<void> {
    if (this.revokedSelf) return
    this.revokedSelf = true
    this.bidding = false
    void this.standby?.withdraw()
    this.options.log.error('this node was cut off: its join token was revoked', { reason: message })
    for (const r of this.runner.refs()) this.runner.revoke(r.jobId, r.attempt, 'join token revoked')
    await this.runner.drain(10_000)
    this.options.onRefused?.(message)
  }

  /**
   * Whether we wait on standby at this coordinator. Its announcements are
   * then for others: it would have awarded us any job that fits a standby of
   * ours, and one announced while we were full reaches our standby when a
   * result frees the slot, or when a standby arrives. Bidding would mean
   * withdrawing our standbys, and with every idle node doing the same the
   * mesh would fall back to announcing every job.
   */
  private onStandbyAt (coordinator: string): boolean {
    if ((this.standby?.outAt(coordinator) ?? 0) === 0) return false
    this.stats.announcementsOnStandby++
    return true
  }

  /** New jobs heard of: keep those we could run, then bid while slots are free. */
  private offer (jobs: AnnouncedJob[], coordinator: string): void {
    const cap = this.capacity()
    this.cands.add(jobs.filter(j => mismatch(cap, j) == null && !this.runner.has(j.jobId, j.attempt)), this.clock.now(), coordinator)
    this.pump()
  }

  private pump (): void {
    if (!this.bidding || this.links?.session() == null || this.clock.now() < this.overloadedUntil) return
    while (this.unclaimedSlots() > 0 && this.reserved < (this.options.maxBidsInFlight ?? 1)) {
      const next = this.cands.take(this.clock.now(), j => !this.runner.has(j.jobId, j.attempt))
      if (next == null) {
        // Nothing announced to bid on: wait on standby for the coordinator's next job, and look for missed ones.
        this.standby?.fill()
        void this.pullIfIdle()
        return
      }
      this.reserved++
      void this.bid(next.job, next.source)
    }
    // Slots no bid can use (one bid out at a time) wait on standby, so new jobs keep coming to this node directly.
    this.standby?.fill()
    // Announced jobs wait while our standbys hold every free slot: take the slots back to bid with.
    if (this.cands.size > 0 && this.unclaimedSlots() === 0 && this.reserved < (this.options.maxBidsInFlight ?? 1) && (this.standby?.size ?? 0) > 0) {
      void this.standby!.withdraw().then(() => { this.pump() })
    }
  }

  private async bid (job: AnnouncedJob, coordinator: string): Promise<void> {
    let released = false
    const release = (): void => { if (!released) { released = true; this.reserved-- } }
    try {
      const busy = this.runner.size + this.reserved - 1
      const freeSlots = this.slots - busy
      // Express load as delay so the coordinator's window seldom waits for the best bid.
      const delayMs = busy <= 0 ? 0 : Math.round((this.options.bidDelayMaxMs ?? 20) * busy / this.slots)
      if (delayMs > 0) await new Promise(resolve => setTimeout(resolve, delayMs))
      // Bid where the job was announced; any coordinator on the same database can award it.
      const picked = this.links?.pick(coordinator)
      if (picked == null || !this.bidding) return
      const session = picked.session
      this.stats.bids++
      const reply = await session.request({ type: 'bid', jobId: job.jobId, attempt: job.attempt, freeSlots, slots: this.slots })
      if (reply.type === 'award') {
        this.stats.awards++
        // A counter-offer may award another job than the one we bid on.
        this.cands.remove(reply.jobId, reply.attempt)
        release()
        this.runner.run(reply as Award, this.stopController.signal, picked.coordinator)
      } else {
        this.stats.refusals++
        if (reply.type === 'refuse' && reply.reason === 'overloaded') {
          // The coordinator counts us as full (its view lags our results by a moment): pause bidding briefly.
          this.overloadedUntil = this.clock.now() + (this.options.overloadBackoffMs ?? 250)
          setTimeout(() => { this.pump() }, this.options.overloadBackoffMs ?? 250).unref()
        }
      }
    } catch (err) {
      this.stats.bidErrors++
      this.options.log.debug('bid failed', { jobId: job.jobId, error: errorMessage(err) })
    } finally {
      release()
      this.pump()
    }
  }

  private async pullIfIdle (): Promise<void> {
    const open = this.links?.openSessions() ?? []
    const pick = open[Math.floor(Math.random() * open.length)]
    const session = pick?.session
    const now = this.clock.now()
    if (session == null || !session.isOpen || !this.bidding || this.unclaimedSlots() === 0 || this.cands.size > 0 || this.pulling) return
    // Rate-limit pulls that found nothing; after a full page there is more waiting: pull again at once.
    if (!this.lastPullFull && now - this.lastPullAt < this.pullWaitMs) return
    this.lastPullAt = now
    this.pulling = true
    try {
      const max = Math.min(256, this.unclaimedSlots() * 8)
      const reply = await session.request({ type: 'pull', max })
      this.lastPullFull = reply.type === 'open' && reply.jobs.length >= max
      const found = reply.type === 'open' && reply.jobs.length > 0
      this.pullWaitMs = found ? this.pullMs : Math.min(this.pullWaitMs * 2, this.options.pullMaxMs ?? 8_000)
      if (found && pick != null) this.offer(reply.jobs, pick.coordinator)
    } catch (err) {
      this.lastPullFull = false
      this.options.log.debug('pull failed', { error: errorMessage(err) })
    } finally {
      this.pulling = false
    }
  }

  private async heartbeat (): Promise<void> {
    const host = this.host
    if (host == null) return
    const running = this.runner.refs().map(r => ({ jobId: r.jobId, attempt: r.attempt }))
    try {
      const bytes = encode({ v: 1, type: 'node-heartbeat', seq: this.hbSeq++, sentAt: this.clock.now(), capacity: this.capacity(), running: running.slice(0, 256) })
      this.stats.gossipBytesOut += bytes.length
      await host.services.pubsub.publish(HEARTBEAT_TOPIC, bytes)
    } catch (err) {
      this.options.log.debug('heartbeat publish failed', { error: errorMessage(err) })
    }
  }

  /** Keeps every session alive and renews held attempts directly, whatever gossip does. */
  private async renew (): Promise<void> {
    const links = this.links
    if (links == null) return
    links.reconnect()
    await Promise.all(links.openSessions().map(async ({ session }) => {
      try {
        const reply = await session.request({ type: 'renew', capacity: this.capacity(), running: this.held() })
        if (reply.type === 'renewed') {
          for (const r of reply.revoked) this.runner.revoke(r.jobId, r.attempt, 'the coordinator no longer assigns this attempt to us')
        }
      } catch (err) {
        this.options.log.debug('renew failed', { error: errorMessage(err) })
      }
    }))
  }

  /**
   * Asks for output upload URLs, preferably from the awarding coordinator.
   * Waits out a coordinator outage for up to `uploadWaitMs`: outputs are
   * worth a short wait, but a slot cannot be held forever.
   */
  private async requestUploads (request: OutputsRequest, coordinator?: string): Promise<CoordinatorFrame> {
    const deadline = this.clock.now() + (this.options.uploadWaitMs ?? 60_000)
    let delay = 250
    for (;;) {
      const session = this.links?.session(coordinator)
      try {
        if (session == null) throw new Error('no session to a coordinator')
        const reply = await session.request(request)
        if (reply.type !== 'error' || reply.code !== 'internal') return reply
        throw new Error(reply.message)
      } catch (err) {
        if (this.clock.now() + delay > deadline || this.stopController.signal.aborted) throw new TransferError('output-upload-failed', `no upload URLs from a coordinator: ${errorMessage(err)}`, true)
        await new Promise(resolve => setTimeout(resolve, delay))
        delay = Math.min(delay * 2, 5_000)
      }
    }
  }

  /** Attempts this node holds: running, or finished with the result not yet settled. */
  private held (): Array<{ jobId: string, attempt: number, token: string }> {
    const out = new Map<string, { jobId: string, attempt: number, token: string }>()
    for (const r of [...this.runner.refs(), ...this.reporter.pendingResults()]) out.set(`${r.jobId}/${r.attempt}`, r)
    return [...out.values()].slice(0, 256)
  }

  /**
   * Fault injection (needs `faultPartition`): cuts the node off the network
   * or heals it. Jobs keep running while cut off; their results wait in the
   * outbox, and the coordinator decides on heal whether they still count.
   */
  async setCutOff (cut: boolean): Promise<void> {
    const host = this.host
    if (this.options.faultPartition !== true || host == null) throw new Error('partition fault injection is not enabled on this node')
    if (cut) {
      const closed = cutOff(host, this.gate)
      this.options.log.warn('fault injection: cut off the network', { connectionsClosed: closed })
    } else {
      await heal(host, this.gate, this.options.bootstrap, this.stopController.signal)
      this.links?.reconnect()
      this.options.log.warn('fault injection: network healed', { connections: host.getConnections().length })
    }
  }

  /** What `rgrid-node status` shows: identity, connections, running attempts, recent results. */
  status (): Record<string, unknown> {
    return {
      peerId: this.host?.peerId.toString() ?? null,
      pid: process.pid,
      startedAt: this.startedAt,
      updatedAt: this.clock.now(),
      runtime: this.options.runtime.name,
      slots: this.slots,
      freeSlots: this.freeSlots(),
      standbys: this.standby?.size ?? 0,
      bidding: this.bidding,
      coordinators: this.links?.openSessions().map(s => s.coordinator) ?? [],
      connections: this.host?.getConnections().map(c => c.remoteAddr.toString()) ?? [],
      running: this.runner.list(),
      pendingResults: this.reporter.pendingResults().length,
      recentResults: [...this.recent].reverse(),
      stats: { ...this.stats, standby: { ...this.standby?.stats } },
      eventLoopDelayMs: this.loopDelay.snapshot(),
      reachability: this.reach.status(),
      security: {
        deniedPeers: this.gate.denied.size,
        graylistedPeers: this.host != null ? graylisted(this.host) : [],
        heartbeat: { ...this.heartbeatGuard?.stats }
      }
    }
  }

  /** Prometheus text exposition of this node's state and counters. */
  prometheus (): string {
    const c = (name: string, help: string, value: number): string => family(name, 'counter', help, value)
    const g = (name: string, help: string, value: number): string => family(name, 'gauge', help, value)
    const pubsub = this.host?.services.pubsub
    return [
      g('rgrid_node_slots', 'Job slots offered.', this.slots),
      g('rgrid_node_free_slots', 'Slots free now.', this.freeSlots()),
      g('rgrid_node_event_loop_delay_p99_seconds', 'Event-loop delay, 99th percentile over the last 2 s window.', (this.loopDelay.snapshot().lastWindow?.p99 ?? 0) / 1000),
      g('rgrid_node_running_attempts', 'Attempts running now.', this.runner.size),
      c('rgrid_node_bids_total', 'Bids sent.', this.stats.bids),
      c('rgrid_node_awards_total', 'Awards won.', this.stats.awards),
      c('rgrid_node_refusals_total', 'Bids refused.', this.stats.refusals),
      c('rgrid_node_sessions_opened_total', 'Sessions opened to coordinators.', this.stats.sessionsOpened),
      c('rgrid_node_gossip_dropped_total', 'Gossip messages dropped by fault injection.', this.stats.gossipDropped),
      c('rgrid_node_gossip_received_bytes_total', 'Gossip payload bytes delivered to this node (relays and protocol overhead not counted).', this.stats.gossipBytesIn),
      c('rgrid_node_gossip_published_bytes_total', 'Gossip payload bytes this node published.', this.stats.gossipBytesOut),
      c('rgrid_node_inputs_fetched_total', 'Inputs downloaded.', this.transfers.stats.inputsFetched),
      c('rgrid_node_inputs_from_cache_total', 'Inputs served from the local cache.', this.transfers.stats.inputsFromCache),
      c('rgrid_node_outputs_uploaded_total', 'Output files uploaded.', this.transfers.stats.outputsUploaded),
      c('rgrid_node_transfer_retries_total', 'Transfer retries after 5xx or broken connections.', this.transfers.stats.retries),
      g('rgrid_node_cache_bytes', 'Bytes in the input cache.', this.cache.bytes),
      family('rgrid_node_gossip_peers', 'gauge', 'Gossip peers per topic.', [ANNOUNCE_TOPIC, HEARTBEAT_TOPIC, BEACON_TOPIC].map(topic => ({ labels: { topic }, value: pubsub?.getSubscribers(topic).length ?? 0 }))),
      g('rgrid_node_connections', 'Open libp2p connections.', this.host?.getConnections().length ?? 0),
      g('rgrid_node_denied_peers', 'Peers refused because their join token was revoked.', this.gate.denied.size),
      g('rgrid_node_graylisted_peers', 'Gossip peers at or below the graylist score (their messages are ignored).', this.host != null ? graylisted(this.host).length : 0),
      c('rgrid_node_heartbeats_over_rate_total', 'Heartbeat-topic messages refused because their author published too often.', this.heartbeatGuard?.stats.overRate ?? 0)
    ].join('\n') + '\n'
  }

  /** Attempts running now (for status and tests). */
  running (): RunningAttempt[] {
    return this.runner.list()
  }

  /**
   * Graceful first: stop bidding, let running jobs finish for up to
   * `drainTimeoutMs`, flush results; then stop what is left (reported as a
   * retryable failure) and leave the mesh.
   */
  async stop (): Promise<void> {
    const starting = this.starting
    if (starting == null) return
    await starting.catch(() => undefined)
    this.starting = null
    this.loopDelay.stop()
    this.bidding = false
    this.host?.services.pubsub.unsubscribe(ANNOUNCE_TOPIC)
    // No new work: withdraw the standing bids; one already won is among the jobs drained below.
    await this.standby?.withdraw()
    if (this.standby != null && !await this.standby.settled(5_000)) this.options.log.warn('standbys not answered within 5 s of withdrawing; stopping anyway')
    const drained = await this.runner.drain(this.options.drainTimeoutMs ?? 30_000)
    if (!drained) this.runner.stopAll('node shutting down')
    await this.runner.drain(5_000)
    if (!await this.reporter.flush(5_000)) {
      const lost = this.reporter.abandon()
      this.options.log.error('results not delivered before stop', { count: lost })
    }
    for (const t of this.timers) clearInterval(t)
    this.stopController.abort(new Error('node stopping'))
    await this.links?.closeAll()
    this.reach.stop()
    await this.host?.stop()
    this.host = null
    await this.options.runtime.stop()
    this.outbox?.close()
  }
}

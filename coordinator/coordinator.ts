/**
 * The coordinator service: a mesh peer that announces submitted jobs, runs
 * the auction over node sessions, records everything in the store, and
 * beacons its addresses so nodes can open sessions to it.
 */
import type { PrivateKey, PeerId } from '@libp2p/interface'
import { ANNOUNCE_TOPIC, HEARTBEAT_TOPIC, BEACON_TOPIC, SESSION_PROTOCOLS } from '../protocol/ids.js'
import { decodeAnnouncement, decodeHeartbeatTopic, encode } from '../protocol/codec.js'
import type { Announcement, HeartbeatTopicMessage, JobSpec } from '../protocol/schemas.js'
import { RelaySlotKeeper, isConnectedRelay, isRelayed, relayPeerOf, trustListenAddrs, type RelayLimits } from '../common/relay.js'
import { DialBack } from './dial-back.js'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost, decodeGossip, denyPeers, fullAddrs, graylisted, installValidator, openGate, type RGridHost } from '../common/p2p.js'
import { HeartbeatGuard } from '../common/gossip-guard.js'
import { Admission } from './admission.js'
import { SecretBox, redactSpec } from './secrets.js'
import { LIMITS } from '../protocol/limits.js'
import { systemClock, type Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import { uuidv7 } from '../common/ids.js'
import { NotFoundError, ValidationError, errorMessage } from '../common/errors.js'
import type { Store, JobSummary, JobRecord, JobEvent, ListJobsQuery, CancelOutcome, LogLine, CloudEvent } from './store/types.js'
import { Auction } from './auction.js'
import { Announcer, toAnnounced } from './announcer.js'
import { Membership, type MemberView } from './membership.js'
import { SessionServer, type SessionServerOptions } from './sessions.js'
import { OpenJobs } from './open-jobs.js'
import { Leader } from './leader.js'
import { Recovery } from './recovery.js'
import { Reaper } from './reaper.js'
import type { ArtifactLink, Transfers, UploadGrant } from './transfers.js'
import { explain, type Explanation } from './explain.js'
import { Histogram, family } from '../common/metrics.js'
import type { Provisioner } from './provisioner/provisioner.js'

/** What the provisioner sees of the mesh through its coordinator. */
export interface ProvisionerMesh {
  isLeader: () => boolean
  nodes: () => Array<{ peerId: string, labels: Record<string, string>, session: boolean, running: number, freeSlots: number }>
  drain: (peerId: string) => Promise<boolean>
  coordinatorAddrs: () => string[]
  coordinatorPeerIds: () => string[]
  networkKey: () => string
}

export interface CoordinatorOptions {
  privateKey: PrivateKey
  store: Store
  log: Logger
  /** @default ['/ip4/127.0.0.1/tcp/0'] */
  listen?: string[]
  /** Bootstrap peers to join the mesh through. @default [] */
  bootstrap?: string[]
  /** @default systemClock */
  clock?: Clock
  /** How often the coordinator beacons its addresses, in ms. @default 1000 */
  beaconMs?: number
  /** See {@link AuctionOptions.bidWindowMs}. @default 8 */
  bidWindowMs?: number
  /** Lease given with each award and renewal, in ms; the node renews every 5 s. @default 15000 */
  leaseMs?: number
  /** First re-announcement delay of an unclaimed job, in ms. @default 1000 */
  reannounceMs?: number
  /** How long stop() waits for sessions to close, in ms. @default 3000 */
  stopSessionsMs?: number
  /**
   * A job must have been open this long before it is counter-offered to a
   * node whose bid lost; younger jobs go to the auction, where idle nodes
   * win. @default 20
   */
  counterOfferAfterMs?: number
  /**
   * A node holding attempts that is not heard from (heartbeats every 1 s,
   * renewals) for this long is checked directly without waiting for its
   * leases to run out. @default 3000
   */
  silentNodeMs?: number
  /** How long a probed node has to answer before its attempts are lost, in ms. @default 1500 */
  suspectMs?: number
  /**
   * Lease on the background loops among coordinators sharing a database;
   * another coordinator takes over this long after the leader dies. @default 5000
   */
  leaderTtlMs?: number
  /**
   * Job inputs and outputs (presigned URLs over an object store). Without
   * it, jobs may only name inputs by URL and cannot have outputs.
   * @default none
   */
  transfers?: Transfers
  /** Live log lines kept per job. @default 50000 */
  maxLogLinesPerJob?: number
  /** Admit only nodes with a valid join token (false: `--open`). @default true */
  requireJoinToken?: boolean
  /**
   * The mesh's network key (libp2p private network). Required with join
   * tokens: `start()` fails without it unless `requireJoinToken` is false.
   * @default none
   */
  networkKey?: string
  /**
   * Also serve circuit relay v2 with these bounds (bootstrap peers always
   * do), for meshes whose nodes behind NAT should not depend on a bootstrap peer.
   * @default none (not a relay)
   */
  relay?: RelayLimits
  /**
   * Take a slot on a bootstrap peer's relay, so nodes that cannot dial this
   * coordinator directly (a firewall that lets only the bootstrap peer out,
   * or this coordinator behind NAT) still reach it; the relayed address goes
   * out in beacons, and nodes try it only after the direct ones.
   * @default true (when there are bootstrap peers)
   */
  relaySlot?: boolean
  /** How long after telling a revoked node why this host starts refusing its connections, in ms. @default 5000 */
  denyAfterCutMs?: number
  /** How often revoked join tokens are read from the store, in ms: twice per heartbeat, so a revocation cuts nodes off within one. @default beaconMs / 2 */
  revocationCheckMs?: number
  /**
   * Seals job secrets (`secretEnv`) at rest. Without it, jobs with secrets
   * are refused.
   * @default none
   */
  secrets?: SecretBox
  /** See {@link SessionServerOptions.maxFramesPerSecond}. @default 500 */
  maxSessionFramesPerSecond?: number
  /** Unfinished jobs one API key may have at once; more get 429. @default 10000 */
  maxActiveJobsPerKey?: number
  /**
   * Hetzner Cloud provisioning; off without it. Given the coordinator's
   * view of the mesh, returns the provisioner to run while this coordinator
   * holds the background-loop lease.
   */
  provisioner?: (mesh: ProvisionerMesh) => Provisioner
  /** How often job counts are sampled for the history chart, in ms. @default 5000 */
  historySampleMs?: number
  /** Samples kept. @default 720 (an hour at 5 s) */
  historySamples?: number
}

/** The operations the HTTP API needs; tests can fake it. */
export interface CoordinatorApi {
  /** Submits a job owned by `owner` (an API key id; null on an open coordinator). */
  submit: (spec: JobSpec, owner?: string | null) => Promise<JobSummary>
  /** Submits several jobs in one store transaction: all of them or none. */
  submitMany: (specs: JobSpec[], owner?: string | null) => Promise<JobSummary[]>
  getJob: (id: string) => Promise<JobRecord | null>
  listJobs: (query: ListJobsQuery) => Promise<JobSummary[]>
  cancel: (id: string, actor: string) => Promise<CancelOutcome>
  listEvents: (id: string) => Promise<JobEvent[]>
  listNodes: () => Promise<Array<MemberView & { activeAwards: number }>>
  health: () => { peerId: string, addrs: string[] }
  /** Job counts by state and the services' counters, for operators and benchmarks. */
  metrics: () => Promise<Record<string, unknown>>
  /** Live log lines after `after`, oldest first. */
  listLogs: (id: string, after: number, limit: number) => Promise<LogLine[]>
  /** Resolves when lines for the job may have arrived, or after `timeoutMs`, or when `signal` aborts. */
  waitForLogs: (id: string, timeoutMs: number, signal: AbortSignal) => Promise<void>
  /** `GET /v1/jobs/:id/explain`: why the job is where it is, in plain words. */
  explain: (id: string) => Promise<Explanation>
  /** `GET /v1/cloud/events`: what the provisioner did to cloud servers, newest first. */
  cloudEvents: (limit: number) => Promise<CloudEvent[]>
  /** Job counts sampled every `historySampleMs`, oldest first (the dashboard's chart). */
  history: () => Array<{ at: number, waiting: number, running: number, finished: number }>
  /** Prometheus text exposition of the coordinator's metrics. */
  prometheus: () => Promise<string>
  /** `POST /v1/uploads`: where to PUT a file, unless its content is stored already. */
  grantUpload: (sha256: string, size: number, owner: string | null) => Promise<UploadGrant>
  /** `GET /v1/jobs/:id/artifacts`: the outputs of the job's recorded result, with download URLs. */
  artifacts: (id: string) => Promise<ArtifactLink[]>
}

export class Coordinator implements CoordinatorApi {
  private host: RGridHost | null = null
  private relaySlot: RelaySlotKeeper | null = null
  private starting: Promise<void> | null = null
  private beaconTimer: NodeJS.Timeout | null = null
  private beaconSeq = 0
  private leader: Leader | null = null
  private readonly clock: Clock
  private readonly specCache = new Map<string, JobSpec>()
  /** Owners of jobs submitted here (absent: none, or not submitted here). */
  private readonly ownerCache = new Map<string, string>()
  /** Followers of a job's live log, woken when its lines arrive on this coordinator. */
  private readonly logWaiters = new Map<string, Set<() => void>>()
  private readonly samples: Array<{ at: number, waiting: number, running: number, finished: number }> = []
  /** Grows and shrinks the mesh on Hetzner Cloud, when configured. */
  provisioner: Provisioner | null = null
  private historyTimer: NodeJS.Timeout | null = null
  readonly open = new OpenJobs()
  readonly auction: Auction
  readonly announcer: Announcer
  readonly membership: Membership
  readonly sessions: SessionServer
  readonly recovery: Recovery
  readonly reaper: Reaper
  readonly admission: Admission
  /** Peers this host refuses (revoked nodes). */
  private readonly gate = openGate()
  private heartbeatGuard: HeartbeatGuard | null = null
  readonly stats = { gossipRejected: 0, beaconFailures: 0, historyFailures: 0 }
  /** Time from a job (attempt) becoming open to its award. */
  readonly awardLatency = new Histogram('rgrid_announce_to_award_seconds', 'Time from a job attempt becoming open (submitted or rescheduled) to its award.')

  constructor (private readonly options: CoordinatorOptions) {
    const { store, log } = options
    this.clock = options.clock ?? systemClock
    const clock = this.clock
    const leaseMs = options.leaseMs ?? 15_000
    this.membership = new Membership({ store, clock, log: log.child('membership') })
    this.auction = new Auction({
      store, clock, log: log.child('auction'),
      specOf: async (id) => this.specCache.get(id) ?? (await store.getJob(id))?.spec ?? null,
      ...(options.bidWindowMs != null ? { bidWindowMs: options.bidWindowMs } : {}),
      leaseMs,
      onNotOpen: jobId => { this.open.remove(jobId) },
      counterOffers: (node, busy, why) => {
        const capacity = this.membership.get(node)?.capacity
        if (capacity == null) return []
        // Young jobs are left to the auction, where idle nodes get first pick; a node on standby is such an idle node.
        const minAgeMs = why === 'standby' ? 0 : options.counterOfferAfterMs ?? 20
        return this.open.pick(capacity, clock.now(), minAgeMs, 3, j => busy(j.jobId, j.attempt))
      }
    })
    this.announcer = new Announcer({
      store, clock, log: log.child('announcer'),
      publish: async (a: Announcement) => {
        await this.publish(ANNOUNCE_TOPIC, a)
        // Not awaited: a relayed node that stops reading must not hold up announcements for the mesh.
        if (a.jobs.length > 0) void this.sessions.offerToRelayed(a.jobs)
      },
      hasFreeSlots: () => this.membership.anyFreeSlots(5_000),
      // Every slot taken by our own count: hold new jobs back from gossip (acks, pulls and the welcome hand them out).
      meshFull: () => !this.membership.anyFreeSlot(10_000, peer => this.auction.activeOn(peer)),
      isLeader: () => this.leader?.isLeader === true,
      onOpen: (job, now) => { this.open.add(job, now) },
      // Idle nodes waiting on standby take new jobs straight away: no gossip, no auction.
      place: async jobs => await this.sessions.standby.place(jobs),
      ...(options.reannounceMs != null ? { reannounceMs: options.reannounceMs } : {})
    })
    const requeue = (job: JobSummary, notBefore: number): void => {
      const announced = toAnnounced({ jobId: job.id, attempt: job.attempt, spec: job.spec, createdAt: job.createdAt })
      // Jobs in backoff are announced by the leader's scan once it ends.
      if (notBefore <= clock.now()) {
        this.open.add(announced, clock.now())
        this.announcer.enqueue(announced)
      }
    }
    this.recovery = new Recovery({ store, clock, log: log.child('recovery'), requeue })
    this.reaper = new Reaper({
      store, clock, log: log.child('reaper'), requeue,
      isLeader: () => this.leader?.isLeader === true,
      suspectMs: options.suspectMs ?? 1_500,
      probe: async node => await this.sessions.push(node, { type: 'probe' }),
      silentNodes: () => this.membership.silentHolders(options.silentNodeMs ?? 3_000),
      scanMs: 500
    })
    this.admission = new Admission({
      store, clock, log: log.child('admission'), requireJoinToken: options.requireJoinToken ?? true,
      checkMs: options.revocationCheckMs ?? Math.max(100, Math.floor((options.beaconMs ?? 1_000) / 2)),
      onDenied: peers => { void this.cutOff(peers) }
    })
    this.sessions = new SessionServer({
      dialBack: new DialBack({ relayProbe: async (addr, peerId, signal) => await this.probeRelayed(addr, peerId, signal) }),
      store, clock, log: log.child('sessions'), auction: this.auction, announcer: this.announcer, membership: this.membership, recovery: this.recovery,
      leaseMs,
      onAwarded: jobId => {
        const openedAt = this.open.remove(jobId)
        if (openedAt != null) this.awardLatency.observe((this.clock.now() - openedAt) / 1000)
      },
      requirementsOf: jobId => this.open.get(jobId),
      prepareAward: async (jobId, spec) => await this.prepareAward(jobId, spec),
      ...(options.transfers != null ? { transfers: options.transfers } : {}),
      ...(options.maxLogLinesPerJob != null ? { maxLogLinesPerJob: options.maxLogLinesPerJob } : {}),
      admission: this.admission,
      ...(options.maxSessionFramesPerSecond != null ? { maxFramesPerSecond: options.maxSessionFramesPerSecond } : {}),
      onLogs: jobId => { this.logWaiters.get(jobId)?.forEach(wake => { wake() }) }
    })
  }

  get peerId (): PeerId {
    if (this.host == null) throw new Error('coordinator not started')
    return this.host.peerId
  }

  addrs (): string[] {
    return this.host != null ? fullAddrs(this.host) : []
  }

  async start (): Promise<void> {
    this.starting ??= this.doStart()
    await this.starting
  }

  private async doStart (): Promise<void> {
    const { log } = this.options
    await this.options.transfers?.objects.start()
    void this.sample()
    if (this.options.provisioner != null) {
      this.provisioner = this.options.provisioner({
        isLeader: () => this.leader?.isLeader === true || this.leader == null,
        nodes: () => this.membership.listCached().map(m => ({
          peerId: m.peerId, labels: m.capacity.labels, session: this.sessions.hasSession(m.peerId), running: m.running, freeSlots: m.capacity.freeSlots
        })),
        drain: async (peerId) => await this.sessions.push(peerId, { type: 'drain', reason: 'its server is being given back' }),
        coordinatorAddrs: () => this.addrs(),
        coordinatorPeerIds: () => this.host != null ? [this.host.peerId.toString()] : [],
        networkKey: () => {
          if (this.options.networkKey == null) throw new Error('provisioning needs the mesh network key')
          return this.options.networkKey
        }
      })
      this.provisioner.start()
    }
    this.historyTimer = setInterval(() => { void this.sample() }, this.options.historySampleMs ?? 5_000)
    this.historyTimer.unref()
    if (this.options.requireJoinToken !== false && this.options.networkKey == null) {
      throw new Error('a coordinator that requires join tokens needs the mesh network key (networkKey)')
    }
    const host = await createHost({
      privateKey: this.options.privateKey,
      listen: this.options.listen ?? ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: this.options.bootstrap ?? [],
      dhtServer: true,
      gate: this.gate,
      ...(this.options.relay != null ? { relay: this.options.relay } : {}),
      ...(this.options.requireJoinToken !== false && this.options.networkKey != null ? { networkKey: this.options.networkKey } : {})
    })
    const guard = new HeartbeatGuard({ clock: this.clock, denied: this.gate.denied })
    this.heartbeatGuard = guard
    // A node's heartbeat counts (and is relayed) only from an admitted node; anything else is
    // dropped here without relaying it, so fresh identities cannot spread a flood through us.
    installValidator(host, HEARTBEAT_TOPIC, decodeHeartbeatTopic, (from, m, via) => {
      const hb = m as HeartbeatTopicMessage
      // Beacons have their own topic; one here is misuse.
      if (hb.type !== 'node-heartbeat') return 'reject'
      if (!this.admission.isAdmitted(from.toString())) return 'ignore'
      return guard.verdict(from, hb, via)
    }, log)
    // We relay no announcements: every node holds a direct connection to each coordinator it
    // trusts and gets that coordinator's own (flood-published) copy, so relaying would only
    // carry other authors' announcements, forged ones included, to nodes.
    installValidator(host, ANNOUNCE_TOPIC, decodeAnnouncement, () => 'ignore', log)
    host.services.pubsub.addEventListener('message', (evt) => {
      const msg = evt.detail
      if (msg.topic !== HEARTBEAT_TOPIC || msg.type !== 'signed') return
      let hb: HeartbeatTopicMessage
      try {
        hb = decodeGossip(msg.data, decodeHeartbeatTopic)
      } catch (err) {
        this.stats.gossipRejected++
        log.debug('undecodable heartbeat', { error: errorMessage(err) })
        return
      }
      // Only admitted nodes are members; a peer without a token may gossip, but it is not counted.
      if (hb.type === 'node-heartbeat' && this.sessions.isAdmitted(msg.from.toString())) this.membership.seen(msg.from.toString(), hb.capacity, 'heartbeat', hb.running.length)
    })
    // Both versions, one handler: 1.1 only adds what a node asks for (protocol/ids.ts).
    await host.handle(SESSION_PROTOCOLS, (stream, connection) => { this.sessions.handle(stream, connection) }, {
      maxInboundStreams: 4,
      // A node that can reach only a bootstrap peer (a firewall that lets nothing else out) holds its session through the relay.
      runOnLimitedConnection: true
    })
    await host.start()
    trustListenAddrs(host)
    if (this.options.relaySlot !== false && (this.options.bootstrap ?? []).length > 0) {
      // Reachable through a bootstrap peer's relay too: for nodes that cannot dial us directly.
      this.relaySlot = new RelaySlotKeeper({ host, relays: () => this.options.bootstrap ?? [], log: log.child('relay') })
      this.relaySlot.start()
    }
    host.services.pubsub.subscribe(ANNOUNCE_TOPIC)
    host.services.pubsub.subscribe(HEARTBEAT_TOPIC)
    this.host = host
    this.leader = new Leader({
      store: this.options.store, clock: this.clock, log: log.child('leader'), holder: host.peerId.toString(),
      ...(this.options.leaderTtlMs != null ? { ttlMs: this.options.leaderTtlMs } : {})
    })
    this.leader.start()
    this.announcer.start()
    this.reaper.start()
    this.admission.start()
    this.beaconTimer = setInterval(() => { void this.beacon() }, this.options.beaconMs ?? 1_000)
    void this.beacon()
    log.info('coordinator started', { peerId: host.peerId.toString(), addrs: fullAddrs(host) })
  }

  async stop (): Promise<void> {
    const starting = this.starting
    if (starting == null) return
    await starting.catch(() => undefined)
    this.starting = null
    this.provisioner?.stop()
    if (this.historyTimer != null) clearInterval(this.historyTimer)
    this.historyTimer = null
    if (this.beaconTimer != null) clearInterval(this.beaconTimer)
    this.beaconTimer = null
    this.announcer.stop()
    this.reaper.stop()
    this.admission.stop()
    await this.leader?.stop()
    this.leader = null
    this.auction.stop()
    this.relaySlot?.stop()
    this.relaySlot = null
    const host = this.host
    this.host = null
    if (host != null) {
      await Promise.race([
        this.sessions.closeAll(),
        new Promise(resolve => setTimeout(resolve, this.options.stopSessionsMs ?? 3_000).unref())
      ])
      await host.stop()
    }
    await this.options.transfers?.objects.stop()
  }

  private async publish (topic: string, message: unknown): Promise<void> {
    if (this.host == null) throw new Error('coordinator not started')
    await this.host.services.pubsub.publish(topic, encode(message))
  }

  private async beacon (): Promise<void> {
    if (this.host == null) return
    try {
      await this.publish(BEACON_TOPIC, {
        v: 1, type: 'coordinator-beacon', seq: this.beaconSeq++, sentAt: this.clock.now(), addrs: fullAddrs(this.host).slice(0, 32),
        denied: this.admission.deniedPeers(LIMITS.beaconDenied)
      })
    } catch (err) {
      this.stats.beaconFailures++
      this.options.log.warn('beacon failed', { error: errorMessage(err) })
    }
  }

  /**
   * Cuts off peers whose join token was revoked: their sessions end with the
   * reason, this host refuses them from now on, the next beacon (sent now)
   * tells every peer to refuse them too, and their attempts are announced again.
   */
  private async cutOff (peers: Array<{ peerId: string, tokenId: string }>): Promise<void> {
    // The reason first, while the connection is still there (bounded: a stuck node must not hold this up).
    await Promise.all(peers.map(async ({ peerId, tokenId }) => {
      await Promise.race([
        this.sessions.cut(peerId, 'join-revoked', `join token ${tokenId} was revoked; this node is cut off from the mesh`),
        new Promise(resolve => setTimeout(resolve, 500).unref())
      ]).catch((err: unknown) => { this.options.log.debug('telling a node it was cut off failed', { peerId, error: errorMessage(err) }) })
    }))
    // Every other peer refuses them from the next beacon (sent now). This host
    // waits a little: a node that missed the pushed reason reconnects, and its
    // hello is refused with it, so it exits saying why instead of retrying blind.
    void this.beacon()
    const deny = (): void => {
      if (this.host != null) denyPeers(this.host, this.gate, peers.map(p => p.peerId))
      else for (const p of peers) this.gate.denied.add(p.peerId)
    }
    setTimeout(deny, this.options.denyAfterCutMs ?? 5_000).unref()
    for (const { peerId, tokenId } of peers) {
      try {
        const n = await this.recovery.abandonNode(peerId, `its join token ${tokenId} was revoked`)
        this.options.log.warn('node cut off', { peerId, tokenId, rescheduled: n })
      } catch (err) {
        this.options.log.warn('cutting a node off failed', { peerId, error: errorMessage(err) })
      }
    }
  }

  /**
   * Connects to a node through a relay and closes the connection again. The
   * node names the relay in its relayed address, but only a relay this host
   * is connected to and which serves relaying is used, reached over that
   * connection (the address's IP part is ignored): a node cannot make the
   * coordinator dial anything else. The answering peer must be the node.
   */
  private async probeRelayed (addr: string, peerId: string, signal: AbortSignal): Promise<boolean> {
    const host = this.host
    if (host == null) return false
    const relay = relayPeerOf(addr, peerId)
    if (relay == null || !await isConnectedRelay(host, relay)) {
      this.options.log.debug('relayed address names no relay we use', { peerId, addr })
      return false
    }
    try {
      const conn = await host.dial(multiaddr(`/p2p/${relay}/p2p-circuit/p2p/${peerId}`), { signal, force: true })
      const ok = isRelayed(conn.remoteAddr.toString()) && conn.remotePeer.toString() === peerId
      await conn.close({ signal }).catch((err: unknown) => { conn.abort(err as Error) })
      return ok
    } catch (err) {
      this.options.log.debug('could not reach the node through its relay', { peerId, relay, error: errorMessage(err) })
      return false
    }
  }

  async submit (input: JobSpec, owner: string | null = null): Promise<JobSummary> {
    const [job] = await this.submitMany([input], owner)
    return job!
  }

  async submitMany (inputs: JobSpec[], owner: string | null = null): Promise<JobSummary[]> {
    for (const [i, input] of inputs.entries()) {
      if (input.inputs.some(x => x.object != null) || input.outputs.length > 0) {
        const where = inputs.length > 1 ? `jobs[${i}].` : ''
        if (this.options.transfers == null) throw new ValidationError(`${where}inputs: this coordinator has no object store: inputs must be URLs and jobs cannot have outputs`, `${where}inputs`)
        await this.options.transfers.checkInputs(input, owner)
      }
      if (Object.keys(input.secretEnv).length > 0 && this.options.secrets == null) {
        throw new ValidationError('this coordinator has no secrets key, so it cannot keep secretEnv', inputs.length > 1 ? `jobs[${i}].secretEnv` : 'secretEnv')
      }
    }
    const now = this.clock.now()
    const prepared = inputs.map(input => {
      const id = uuidv7(now)
      const sealed = Object.keys(input.secretEnv).length > 0 ? this.options.secrets!.seal(id, input.secretEnv) : null
      // Stored and listed with secret values redacted; the award puts them back.
      return { id, spec: redactSpec(input), sealed }
    })
    const jobs = await this.options.store.createJobs(prepared.map(p => ({
      id: p.id, spec: p.spec, now, owner, secretEnvSealed: p.sealed,
      ...(owner != null ? { maxActiveForOwner: this.options.maxActiveJobsPerKey ?? 10_000 } : {})
    })))
    for (const [i, job] of jobs.entries()) {
      const spec = prepared[i]!.spec
      if (this.specCache.size >= 10_000) {
        const oldest = this.specCache.keys().next().value
        if (oldest != null) { this.specCache.delete(oldest); this.ownerCache.delete(oldest) }
      }
      this.specCache.set(job.id, spec)
      if (owner != null) this.ownerCache.set(job.id, owner)
      const announced = toAnnounced({ jobId: job.id, attempt: job.attempt, spec, createdAt: job.createdAt })
      this.open.add(announced, now)
      this.announcer.enqueue(announced)
    }
    return jobs
  }

  /**
   * The award's spec and the owner whose namespace its inputs are in. The
   * store is read only for what this coordinator does not know: jobs with
   * secrets, or with stored inputs submitted through another coordinator.
   */
  private async prepareAward (jobId: string, spec: JobSpec): Promise<{ spec: JobSpec, owner: string | null }> {
    const hasSecrets = Object.keys(spec.secretEnv).length > 0
    const hasObjects = spec.inputs.some(i => i.object != null)
    let owner = this.ownerCache.get(jobId) ?? null
    if (owner == null && hasObjects && !this.specCache.has(jobId)) owner = (await this.options.store.getJob(jobId))?.owner ?? null
    if (!hasSecrets) return { spec, owner }
    const sealed = await this.options.store.jobSecrets(jobId)
    if (sealed == null || this.options.secrets == null) throw new Error(`job ${jobId} has secrets this coordinator cannot open (no secrets key, or none stored)`)
    return { spec: { ...spec, secretEnv: this.options.secrets.open(jobId, sealed) }, owner }
  }

  async cloudEvents (limit: number): Promise<CloudEvent[]> {
    return await this.options.store.listCloudEvents({ limit })
  }

  history (): Array<{ at: number, waiting: number, running: number, finished: number }> {
    return [...this.samples]
  }

  private async sample (): Promise<void> {
    try {
      const c = await this.options.store.countJobs()
      this.samples.push({ at: this.clock.now(), waiting: c.announced, running: c.claimed + c.running, finished: c.succeeded + c.failed + c.cancelled })
      if (this.samples.length > (this.options.historySamples ?? 720)) this.samples.shift()
    } catch (err) {
      this.stats.historyFailures++
      this.options.log.warn('job count sample failed', { error: errorMessage(err) })
    }
  }

  async prometheus (): Promise<string> {
    const jobs = await this.options.store.countJobs()
    const members = await this.membership.list()
    const now = this.clock.now()
    const c = (name: string, help: string, value: number): string => family(name, 'counter', help, value)
    return [
      family('rgrid_jobs', 'gauge', 'Jobs by state.', Object.entries(jobs).map(([state, value]) => ({ labels: { state }, value }))),
      this.awardLatency.render(),
      family('rgrid_nodes', 'gauge', 'Nodes known, by whether their session is open.', [
        { labels: { session: 'open' }, value: members.filter(m => this.sessions.hasSession(m.peerId)).length },
        { labels: { session: 'closed' }, value: members.filter(m => !this.sessions.hasSession(m.peerId)).length }
      ]),
      family('rgrid_node_heartbeat_age_seconds', 'gauge', 'Time since each node was last heard from.', members.map(m => ({ labels: { node: m.peerId }, value: (now - m.lastSeenAt) / 1000 }))),
      family('rgrid_node_running_attempts', 'gauge', 'Attempts each node reports running.', members.map(m => ({ labels: { node: m.peerId }, value: m.running }))),
      c('rgrid_bids_total', 'Bids received.', this.auction.stats.bids),
      c('rgrid_awards_total', 'Attempts awarded.', this.auction.stats.awards),
      c('rgrid_reaper_probes_total', 'Direct checks of silent nodes or expired leases.', this.reaper.stats.probes),
      c('rgrid_attempts_lost_total', 'Attempts declared lost (lease expiry or silent node that did not answer).', this.reaper.stats.lost),
      c('rgrid_stale_reports_total', 'Reports refused for a replaced fencing token.', this.sessions.stats.staleReports),
      c('rgrid_session_frames_total', 'Session frames received.', this.sessions.stats.frames),
      c('rgrid_session_frames_rate_limited_total', 'Session frames refused for going over the per-peer rate.', this.sessions.stats.rateLimited),
      c('rgrid_join_refused_total', 'Hellos refused (no, bad, expired or revoked join token, or a cut-off peer).', this.admission.stats.refused),
      c('rgrid_peers_denied_total', 'Peers cut off because their join token was revoked.', this.admission.stats.denied),
      c('rgrid_bad_frames_total', 'Session frames that did not decode.', this.sessions.stats.badFrames),
      c('rgrid_log_lines_total', 'Live log lines stored.', this.sessions.stats.logLines),
      c('rgrid_gossip_rejected_total', 'Gossip messages rejected by our validators.', this.stats.gossipRejected),
      family('rgrid_gossip_peers', 'gauge', 'Gossip peers per topic.', [ANNOUNCE_TOPIC, HEARTBEAT_TOPIC, BEACON_TOPIC].map(topic => ({ labels: { topic }, value: this.host?.services.pubsub.getSubscribers(topic).length ?? 0 }))),
      family('rgrid_leader', 'gauge', '1 while this coordinator runs the background loops.', this.leader?.isLeader === true ? 1 : 0),
      ...(this.provisioner != null
        ? [
            c('rgrid_provisioner_servers_created_total', 'Managed servers created.', this.provisioner.stats.created),
            c('rgrid_provisioner_servers_deleted_total', 'Managed servers deleted.', this.provisioner.stats.deleted),
            c('rgrid_provisioner_never_joined_total', 'Managed servers deleted for never joining.', this.provisioner.stats.neverJoined),
            c('rgrid_provisioner_rate_limited_total', 'Cloud API 429 answers.', this.provisioner.stats.rateLimited),
            family('rgrid_provisioner_disabled', 'gauge', '1 when provisioning stopped (e.g. the API refused the token).', this.provisioner.disabledReason != null ? 1 : 0)
          ]
        : [])
    ].join('\n') + '\n'
  }

  async explain (id: string): Promise<Explanation> {
    const job = await this.options.store.getJob(id)
    if (job == null) throw new NotFoundError('job', id)
    const [events, members] = await Promise.all([this.options.store.listEvents(id), this.membership.list()])
    const nodes = members.map(m => ({ ...m, sessionOpen: this.sessions.hasSession(m.peerId) }))
    const p = this.provisioner
    const provisioning = p == null
      ? null
      : { serverType: p.serverTypeName, couldRun: p.couldRun(job.spec.resources.cpus, job.spec.resources.memoryMb), disabled: p.disabledReason, lastPlan: p.lastPlan }
    return explain(job, events, nodes, this.clock.now(), this.auction.bidsFor(id), provisioning)
  }

  async listLogs (id: string, after: number, limit: number): Promise<LogLine[]> {
    return await this.options.store.listLogs({ jobId: id, after, limit })
  }

  /**
   * Lines stored through another coordinator sharing the database do not
   * wake us; the timeout makes followers poll, so they see them too.
   */
  async waitForLogs (id: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return
    await new Promise<void>(resolve => {
      const waiters = this.logWaiters.get(id) ?? new Set<() => void>()
      this.logWaiters.set(id, waiters)
      const done = (): void => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        waiters.delete(done)
        if (waiters.size === 0) this.logWaiters.delete(id)
        resolve()
      }
      const timer = setTimeout(done, timeoutMs)
      signal.addEventListener('abort', done, { once: true })
      waiters.add(done)
    })
  }

  async grantUpload (sha256: string, size: number, owner: string | null = null): Promise<UploadGrant> {
    if (this.options.transfers == null) throw new ValidationError('this coordinator has no object store', null)
    return await this.options.transfers.grantUpload(sha256, size, this.clock.now(), owner)
  }

  async artifacts (id: string): Promise<ArtifactLink[]> {
    const job = await this.options.store.getJob(id)
    if (job == null) throw new NotFoundError('job', id)
    const result = job.result
    if (result == null || result.artifacts.length === 0 || this.options.transfers == null) return []
    return await this.options.transfers.links(id, result.attempt, result.artifacts)
  }

  async getJob (id: string): Promise<JobRecord | null> {
    return await this.options.store.getJob(id)
  }

  async listJobs (query: ListJobsQuery): Promise<JobSummary[]> {
    return await this.options.store.listJobs(query)
  }

  async listEvents (id: string): Promise<JobEvent[]> {
    return await this.options.store.listEvents(id)
  }

  async cancel (id: string, actor: string): Promise<CancelOutcome> {
    const outcome = await this.options.store.cancel({ jobId: id, now: this.clock.now(), actor, reason: `cancelled by ${actor}` })
    this.announcer.forget(id)
    this.open.remove(id)
    this.specCache.delete(id)
    const stopped = outcome.stopped
    if (stopped != null) {
      this.auction.release(stopped.node, id, stopped.number)
      const delivered = await this.sessions.push(stopped.node, { type: 'cancel', jobId: id, attempt: stopped.number, token: stopped.token, reason: `cancelled by ${actor}` })
      // An undelivered cancel is not lost: the node's next renew learns the attempt was revoked.
      if (!delivered) this.options.log.info('cancel not delivered now; node learns on renew', { jobId: id, node: stopped.node })
    }
    return outcome
  }

  async listNodes (): Promise<Array<MemberView & { activeAwards: number }>> {
    const members = await this.membership.list()
    return members.map(m => ({ ...m, sessionOpen: this.sessions.hasSession(m.peerId), activeAwards: this.auction.activeOn(m.peerId) }))
  }

  async metrics (): Promise<Record<string, unknown>> {
    return {
      jobs: await this.options.store.countJobs(),
      auction: { ...this.auction.stats },
      announcer: { ...this.announcer.stats },
      standby: { ...this.sessions.standby.stats, waiting: this.sessions.standby.size, nodes: this.sessions.standby.nodes },
      sessions: { ...this.sessions.stats },
      membership: { ...this.membership.stats },
      recovery: { ...this.recovery.stats },
      reaper: { ...this.reaper.stats },
      leader: { isLeader: this.leader?.isLeader === true, ...this.leader?.stats },
      gossip: { ...this.stats, ...this.heartbeatGuard?.stats, graylisted: this.host != null ? graylisted(this.host).length : 0 },
      admission: { ...this.admission.stats, deniedPeers: this.admission.deniedPeers(Number.MAX_SAFE_INTEGER).length },
      transfers: this.options.transfers != null ? { ...this.options.transfers.stats } : null,
      provisioner: this.provisioner != null ? { ...this.provisioner.stats, lastPlan: this.provisioner.lastPlan, disabled: this.provisioner.disabledReason } : null
    }
  }

  health (): { peerId: string, addrs: string[] } {
    return { peerId: this.host?.peerId.toString() ?? '', addrs: this.addrs() }
  }
}

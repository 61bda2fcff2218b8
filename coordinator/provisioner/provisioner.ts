/**
 * Grows and shrinks the mesh on Hetzner Cloud. Run by the coordinator that
 * holds the background-loop lease. Its truth is the Cloud API's list of
 * servers carrying our labels, matched to mesh nodes by their
 * `rgrid-server` label: after a restart it finds what exists instead of
 * trusting memory, so nothing is created twice or leaked. Decisions come
 * from plan.ts; every create and delete is logged with its reason and
 * counted. Errors back off; a rejected token stops provisioning with one
 * log line and a metric rather than a crash loop.
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from '../../common/log.js'
import type { Clock } from '../../common/clock.js'
import { errorMessage } from '../../common/errors.js'
import { encodeJoinToken, newTokenCredentials, secretSha256 } from '../../common/join-token.js'
import type { CloudEvent, Store } from '../store/types.js'
import { HetznerApiError, hourlyPrice, type HetznerClient, type HetznerServer } from '../hetzner/client.js'
import { renderCloudInit } from '../hetzner/cloud-init.js'
import { planScaleDown, planScaleUp, type ManagedServer, type ServerTypeOffer } from './plan.js'

/** What the provisioner needs to know of a mesh node. */
export interface MeshNode {
  peerId: string
  labels: Record<string, string>
  session: boolean
  running: number
  freeSlots: number
}

export interface ProvisionerOptions {
  client: HetznerClient
  store: Store
  log: Logger
  clock: Clock
  /** Names this mesh's servers apart from others in the same project. */
  meshId: string
  serverType: string
  /**
   * Types to fall back to, in order, when no configured location has
   * capacity for the main one. Planning uses the main type's size and the
   * dearest price of all. @default []
   */
  fallbackServerTypes?: string[]
  /** Labels new servers with `rgrid-generation`, so a configuration change can be rolled out and told apart. @default '1' */
  generation?: string
  /** Tried in order when one has no capacity. */
  locations: string[]
  image: string
  maxServers: number
  maxHourlyEur: number
  /** @default 30000 */
  scaleUpAfterMs?: number
  /** @default 600000 */
  idleBeforeDeleteMs?: number
  /** @default 600000 */
  joinDeadlineMs?: number
  /** @default 60000 */
  cooldownMs?: number
  /** Keep idle servers until the last part of their paid hour. 0: delete as soon as idle long enough. @default 300000 */
  hourEndWindowMs?: number
  /** @default 10000 */
  scanMs?: number
  sshKeys?: string[]
  rgridPackage?: string
  /** Coordinator multiaddrs for the servers' join tokens. */
  coordinatorAddrs: () => string[]
  /** Coordinator peer ids for the tokens. */
  coordinatorPeerIds: () => string[]
  /** The mesh's network key, carried by every join token. */
  networkKey: () => string
  isLeader: () => boolean
  nodes: () => MeshNode[]
  /**
   * Servers with our labels that the store has no record of (e.g. created by
   * a coordinator whose record was lost): keep and manage them ('adopt'), or
   * delete them ('delete'). @default 'adopt'
   */
  unknownServers?: 'adopt' | 'delete'
  /** Asks a node to stop bidding before its server is deleted. */
  drain: (peerId: string) => Promise<boolean>
}

export const MANAGED_LABEL = 'rgrid'
export const MESH_LABEL = 'rgrid-mesh'

export class Provisioner {
  private timer: NodeJS.Timeout | null = null
  private running = false
  private lastScaleUpAt = 0
  private backoffUntil = 0
  private stopped = false
  private disabled: string | null = null
  private offer: ServerTypeOffer | null = null
  private readonly idleSince = new Map<string, number>()
  private readonly draining = new Set<string>()
  /** Server ids with a record in the store's cloud event log. */
  private readonly known = new Set<number>()
  readonly stats = { scans: 0, created: 0, deleted: 0, createFailures: 0, deleteFailures: 0, neverJoined: 0, rateLimited: 0, failures: 0, unauthorized: 0 }
  /** The last decision, for `rgrid explain` and logs. */
  lastPlan = ''

  constructor (private readonly o: ProvisionerOptions) {}

  start (): void {
    if (this.timer != null) return
    this.stopped = false
    this.timer = setInterval(() => { void this.tick() }, this.o.scanMs ?? 10_000)
    this.timer.unref()
  }

  stop (): void {
    this.stopped = true
    if (this.timer != null) clearInterval(this.timer)
    this.timer = null
  }

  /** One scan; exported for tests that drive it step by step. */
  async tick (signal?: AbortSignal): Promise<void> {
    if (this.running || this.stopped || this.disabled != null || !this.o.isLeader()) return
    if (this.o.clock.now() < this.backoffUntil) return
    this.running = true
    this.stats.scans++
    try {
      await this.scan(signal)
    } catch (err) {
      this.onError(err, 'scan')
    } finally {
      this.running = false
    }
  }

  private selector (): string {
    return `${MANAGED_LABEL}=managed,${MESH_LABEL}=${this.o.meshId}`
  }

  private async scan (signal?: AbortSignal): Promise<void> {
    const now = this.o.clock.now()
    const offer = this.offer ?? await this.loadOffer(signal)
    const listed = await this.o.client.listServers(this.selector(), signal)
    const servers: HetznerServer[] = []
    for (const s of listed) {
      if (!this.known.has(s.id)) {
        if ((await this.o.store.listCloudEvents({ limit: 1, serverId: s.id })).length === 0) {
          if (this.o.unknownServers === 'delete') {
            await this.delete(s, 'it carries our labels but the store has no record of it (policy: delete)', s.labels['rgrid-token'], signal)
            continue
          }
          await this.record('adopted', s.id, s.name, 'it carries our labels but the store had no record of it (policy: adopt)')
        }
        this.known.add(s.id)
      }
      servers.push(s)
    }
    const tokenOf = new Map(servers.map(s => [s.id, s.labels['rgrid-token']]))
    const nodes = this.o.nodes()
    const byServer = new Map(nodes.filter(n => n.labels['rgrid-server'] != null).map(n => [n.labels['rgrid-server']!, n]))
    const managed: ManagedServer[] = servers.map(s => {
      const node = byServer.get(s.name)
      if (node == null || node.running > 0) this.idleSince.delete(s.name)
      else if (!this.idleSince.has(s.name)) this.idleSince.set(s.name, now)
      return { id: s.id, name: s.name, createdAt: Date.parse(s.created), joinedAt: node != null ? now : null, idleSince: node != null ? (this.idleSince.get(s.name) ?? null) : null }
    })
    // Give back first: a server being deleted must not count as capacity for the plan below.
    const gone = new Set<number>()
    for (const { server, reason } of planScaleDown({
      now, servers: managed, idleBeforeDeleteMs: this.o.idleBeforeDeleteMs ?? 600_000, joinDeadlineMs: this.o.joinDeadlineMs ?? 600_000,
      ...(this.o.hourEndWindowMs != null ? { hourEndWindowMs: this.o.hourEndWindowMs } : {})
    })) {
      const node = byServer.get(server.name)
      if (node != null && node.session && !this.draining.has(server.name)) {
        // Stop its bidding first; delete on a later scan once it is still idle.
        this.draining.add(server.name)
        await this.o.drain(node.peerId)
        await this.record('draining', server.id, server.name, reason)
        this.o.log.info('draining a managed server before deleting it', { server: server.name, reason })
        continue
      }
      if (server.joinedAt == null) this.stats.neverJoined++
      await this.delete(server, reason, tokenOf.get(server.id), signal)
      gone.add(server.id)
    }
    const open = await this.o.store.openJobs(10_000)
    const waiting = open.map(j => ({ cpus: j.spec.resources.cpus, memoryMb: j.spec.resources.memoryMb, openSince: j.createdAt }))
    const remaining = servers.filter(s => !gone.has(s.id))
    const plan = planScaleUp({
      now, waiting, freeSlots: nodes.filter(n => n.session).reduce((a, n) => a + n.freeSlots, 0), type: offer,
      managed: remaining.length, pending: remaining.filter(s => !byServer.has(s.name)).length,
      maxServers: this.o.maxServers, maxHourlyEur: this.o.maxHourlyEur, scaleUpAfterMs: this.o.scaleUpAfterMs ?? 30_000,
      lastScaleUpAt: this.lastScaleUpAt, cooldownMs: this.o.cooldownMs ?? 60_000
    })
    this.lastPlan = plan.reason
    if (plan.create === 0) return
    this.o.log.info('scaling up', { reason: plan.reason, create: plan.create })
    this.lastScaleUpAt = now
    for (let i = 0; i < plan.create; i++) await this.create(plan.reason, signal)
  }

  private async loadOffer (signal?: AbortSignal): Promise<ServerTypeOffer> {
    const types = await this.o.client.serverTypes(signal)
    const t = types.find(x => x.name === this.o.serverType)
    if (t == null) throw new ConfigError(`server type ${this.o.serverType} does not exist (have: ${types.map(x => x.name).join(', ')})`)
    const prices = this.o.locations.map(l => hourlyPrice(t, l)).filter((p): p is number => p != null)
    if (prices.length === 0) throw new ConfigError(`server type ${t.name} is not sold in ${this.o.locations.join(', ')}`)
    for (const name of this.o.fallbackServerTypes ?? []) {
      const f = types.find(x => x.name === name)
      if (f == null) throw new ConfigError(`fallback server type ${name} does not exist`)
      // A fallback must run what the main type runs, and the budget must hold with it too.
      if (f.cores < t.cores || f.memory < t.memory) throw new ConfigError(`fallback server type ${name} is smaller than ${t.name}`)
      prices.push(...this.o.locations.map(l => hourlyPrice(f, l)).filter((p): p is number => p != null))
    }
    // Budget against the dearest location we may use.
    this.offer = { name: t.name, cores: t.cores, memoryMb: Math.floor(t.memory * 1024), hourlyEur: Math.max(...prices) }
    return this.offer
  }

  private async create (reason: string, signal?: AbortSignal): Promise<void> {
    const name = `rgrid-${this.o.meshId}-${this.o.clock.now().toString(36)}-${randomBytes(3).toString('hex')}`
    // A token for this server only; revoked when the server is deleted.
    const { id, secret } = newTokenCredentials()
    await this.o.store.createJoinToken({ id, secretSha256: secretSha256(secret), createdAt: this.o.clock.now(), expiresAt: null, note: `server ${name}` })
    const token = encodeJoinToken({ id, secret, coordinators: this.o.coordinatorPeerIds(), addrs: this.o.coordinatorAddrs(), expiresAt: null, networkKey: this.o.networkKey() })
    const userData = renderCloudInit({ joinToken: token, serverName: name, labels: { [MESH_LABEL]: this.o.meshId }, ...(this.o.rgridPackage != null ? { rgridPackage: this.o.rgridPackage } : {}) })
    const choices = [this.o.serverType, ...(this.o.fallbackServerTypes ?? [])].flatMap(type => this.o.locations.map(location => ({ type, location })))
    for (const [n, { type, location }] of choices.entries()) {
      try {
        const { server } = await this.o.client.createServer({
          name, serverType: type, image: this.o.image, location,
          labels: { [MANAGED_LABEL]: 'managed', [MESH_LABEL]: this.o.meshId, 'rgrid-token': id, 'rgrid-generation': this.o.generation ?? '1' },
          userData, ...(this.o.sshKeys != null ? { sshKeys: this.o.sshKeys } : {})
        }, signal)
        this.stats.created++
        this.known.add(server.id)
        await this.record('created', server.id, server.name, reason, { location, serverType: type, token: id })
        this.o.log.info('server created', { server: server.name, id: server.id, location, reason })
        return
      } catch (err) {
        // Out of capacity here: try the next location. Anything else ends this attempt.
        if (err instanceof HetznerApiError && (err.code === 'resource_unavailable' || err.code === 'placement_error' || err.code === 'resource_limit_exceeded') && n < choices.length - 1) {
          this.o.log.warn('no capacity for this type here; trying the next choice', { type, location, code: err.code })
          continue
        }
        this.stats.createFailures++
        await this.o.store.revokeJoinToken({ id, now: this.o.clock.now() })
        await this.record('create-failed', null, name, errorMessage(err), { location })
        throw err
      }
    }
  }

  /** Deletes a server and revokes its join token, so a copy of its user data cannot enrol another machine. */
  private async delete (server: ManagedServer | HetznerServer, reason: string, token: string | undefined, signal?: AbortSignal): Promise<void> {
    try {
      await this.o.client.deleteServer(server.id, signal)
    } catch (err) {
      this.stats.deleteFailures++
      throw err
    }
    this.stats.deleted++
    this.idleSince.delete(server.name)
    this.draining.delete(server.name)
    await this.record('deleted', server.id, server.name, reason)
    this.o.log.info('server deleted', { server: server.name, id: server.id, reason })
    if (token != null) await this.o.store.revokeJoinToken({ id: token, now: this.o.clock.now() }).catch((err: unknown) => { this.o.log.warn('could not revoke a deleted server\'s token', { server: server.name, error: errorMessage(err) }) })
  }

  /** The event log of cloud decisions; a failed write is logged, not fatal (the action itself happened). */
  private async record (type: CloudEvent['type'], serverId: number | null, serverName: string, reason: string, detail: Record<string, unknown> = {}): Promise<void> {
    try {
      await this.o.store.appendCloudEvent({ at: this.o.clock.now(), type, serverId, serverName, reason, detail })
    } catch (err) {
      this.stats.failures++
      this.o.log.warn('could not record a cloud event', { type, server: serverName, error: errorMessage(err) })
    }
  }

  private onError (err: unknown, step: string): void {
    if (err instanceof ConfigError) {
      this.disabled = err.message
      this.o.log.error('provisioning stopped: fix the configuration and restart', { error: err.message })
      return
    }
    if (err instanceof HetznerApiError) {
      if (err.unauthorized) {
        this.stats.unauthorized++
        this.disabled = err.message
        this.o.log.error('provisioning stopped: the Hetzner API refused the token', { error: err.message })
        return
      }
      if (err.status === 429) this.stats.rateLimited++
      const wait = err.retryAfterMs ?? 30_000
      this.backoffUntil = this.o.clock.now() + Math.min(Math.max(wait, 1_000), 600_000)
    }
    this.stats.failures++
    this.o.log.warn('provisioning step failed; backing off', { step, error: errorMessage(err) })
  }

  /**
   * For `explain`: whether a server of the configured type could run a job
   * of this size (null until the type's details are known).
   */
  couldRun (cpus: number, memoryMb: number): boolean | null {
    if (this.offer == null) return null
    return cpus <= this.offer.cores && memoryMb <= this.offer.memoryMb
  }

  get serverTypeName (): string { return this.o.serverType }

  /** Why provisioning is off, or null. */
  get disabledReason (): string | null { return this.disabled }
}

class ConfigError extends Error { override readonly name = 'ConfigError' }

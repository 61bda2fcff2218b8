/**
 * Provisioning settings from the command line and the environment (read by
 * the CLI only), resolved once with units in their names. Provisioning is
 * off unless a token is given.
 */

export interface ProvisioningConfig {
  token: string
  endpoint: string
  serverType: string
  fallbackServerTypes: string[]
  locations: string[]
  image: string
  maxServers: number
  maxHourlyEur: number
  scaleUpAfterMs: number
  idleBeforeDeleteMs: number
  cooldownMs: number
  joinDeadlineMs: number
  hourEndWindowMs: number
  scanMs: number
  sshKeys: string[]
  unknownServers: 'adopt' | 'delete'
  meshId: string | null
}

/** The flags, as parseArgs declares them. */
export const PROVISIONING_FLAGS = {
  'hetzner-token': { type: 'string' },
  'hetzner-endpoint': { type: 'string' },
  'server-type': { type: 'string', multiple: true },
  location: { type: 'string', multiple: true },
  image: { type: 'string' },
  'max-servers': { type: 'string' },
  'max-hourly-cost': { type: 'string' },
  'scale-up-after': { type: 'string' },
  'idle-before-delete': { type: 'string' },
  'mesh-id': { type: 'string' },
  'scale-up-cooldown': { type: 'string' },
  'join-deadline': { type: 'string' },
  'billing-hour-window': { type: 'string' },
  'provision-every': { type: 'string' },
  'ssh-key': { type: 'string', multiple: true },
  'unknown-servers': { type: 'string' }
} as const

export const PROVISIONING_HELP = `Provisioning on Hetzner Cloud (off without a token; each flag has an env variable):
  --hetzner-token T       API token (HCLOUD_TOKEN)
  --hetzner-endpoint URL  API base URL (HCLOUD_ENDPOINT)     [https://api.hetzner.cloud/v1]
  --server-type T         server type; repeat for fallbacks tried in order when no location
                          has capacity (RGRID_SERVER_TYPE, comma-separated) [cx22]
  --location L            location, repeatable, tried in order (RGRID_LOCATIONS, comma-separated) [fsn1]
  --image I               image (RGRID_IMAGE)                [debian-12]
  --max-servers N         managed servers at most (RGRID_MAX_SERVERS) [5]
  --max-hourly-cost EUR   managed servers' price per hour at most (RGRID_MAX_HOURLY_COST) [1]
  --scale-up-after D      how long jobs wait unclaimed before a scale-up (RGRID_SCALE_UP_AFTER) [30s]
  --idle-before-delete D  how long a managed server idles before it is given back (RGRID_IDLE_BEFORE_DELETE) [10m]
  --mesh-id ID            names this mesh's servers (RGRID_MESH_ID) [from the coordinator's peer id]
  --scale-up-cooldown D   at least this long between scale-ups (RGRID_SCALE_UP_COOLDOWN) [60s]
  --join-deadline D       a server that has not joined by then is deleted (RGRID_JOIN_DEADLINE) [10m]
  --billing-hour-window D keep an idle server until this close to the end of its
                          paid hour; 0s gives it back as soon as it is idle long
                          enough (RGRID_BILLING_HOUR_WINDOW) [5m]
  --provision-every D     how often the provisioner looks (RGRID_PROVISION_EVERY) [10s]
  --ssh-key NAME          SSH key (name or id in the project) for new servers, repeatable (RGRID_SSH_KEYS)
  --unknown-servers P     adopt or delete servers with our labels the store has no record of
                          (RGRID_UNKNOWN_SERVERS) [adopt]
`

/** `90s`, `10m`, `2h` → ms. */
export function parseDurationMs (text: string, flag: string): number {
  const m = /^(\d+)(ms|s|m|h)$/.exec(text.trim())
  if (m == null) throw new Error(`${flag} takes a duration like 30s, 10m or 1h, got ${JSON.stringify(text)}`)
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h']
}

/** @throws Error naming the bad setting. */
export function resolveProvisioning (args: Record<string, unknown>, env: NodeJS.ProcessEnv): ProvisioningConfig | null {
  const pick = (flag: string, name: string): string | undefined => (args[flag] as string | undefined) ?? env[name]
  const token = pick('hetzner-token', 'HCLOUD_TOKEN')
  if (token == null || token === '') return null
  const num = (flag: string, name: string, fallback: number, integer: boolean): number => {
    const text = pick(flag, name)
    if (text == null) return fallback
    const n = Number(text)
    if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new Error(`--${flag} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(text)}`)
    return n
  }
  const locations = (args.location as string[] | undefined) ?? (env.RGRID_LOCATIONS != null ? env.RGRID_LOCATIONS.split(',').map(s => s.trim()).filter(s => s !== '') : ['fsn1'])
  const meshId = pick('mesh-id', 'RGRID_MESH_ID') ?? null
  if (meshId != null && !/^[a-z0-9][a-z0-9-]{0,30}$/.test(meshId)) throw new Error('--mesh-id must be 1 to 31 lower-case letters, digits or -')
  return {
    token,
    endpoint: pick('hetzner-endpoint', 'HCLOUD_ENDPOINT') ?? 'https://api.hetzner.cloud/v1',
    ...serverTypes((args['server-type'] as string[] | undefined) ?? (env.RGRID_SERVER_TYPE != null ? env.RGRID_SERVER_TYPE.split(',').map(x => x.trim()).filter(x => x !== '') : ['cx22'])),
    locations,
    image: pick('image', 'RGRID_IMAGE') ?? 'debian-12',
    maxServers: num('max-servers', 'RGRID_MAX_SERVERS', 5, true),
    maxHourlyEur: num('max-hourly-cost', 'RGRID_MAX_HOURLY_COST', 1, false),
    scaleUpAfterMs: parseDurationMs(pick('scale-up-after', 'RGRID_SCALE_UP_AFTER') ?? '30s', '--scale-up-after'),
    idleBeforeDeleteMs: parseDurationMs(pick('idle-before-delete', 'RGRID_IDLE_BEFORE_DELETE') ?? '10m', '--idle-before-delete'),
    cooldownMs: parseDurationMs(pick('scale-up-cooldown', 'RGRID_SCALE_UP_COOLDOWN') ?? '60s', '--scale-up-cooldown'),
    joinDeadlineMs: parseDurationMs(pick('join-deadline', 'RGRID_JOIN_DEADLINE') ?? '10m', '--join-deadline'),
    hourEndWindowMs: parseDurationMs(pick('billing-hour-window', 'RGRID_BILLING_HOUR_WINDOW') ?? '5m', '--billing-hour-window'),
    scanMs: Math.max(500, parseDurationMs(pick('provision-every', 'RGRID_PROVISION_EVERY') ?? '10s', '--provision-every')),
    sshKeys: (args['ssh-key'] as string[] | undefined) ?? (env.RGRID_SSH_KEYS != null ? env.RGRID_SSH_KEYS.split(',').map(x => x.trim()).filter(x => x !== '') : []),
    unknownServers: unknownPolicy(pick('unknown-servers', 'RGRID_UNKNOWN_SERVERS') ?? 'adopt'),
    meshId
  }
}

/** For `rgrid-coordinator config`: the resolved settings, the token masked. */
export function describeProvisioning (c: ProvisioningConfig | null): Record<string, unknown> {
  if (c == null) return { provisioning: 'off (no --hetzner-token / HCLOUD_TOKEN)' }
  return { provisioning: 'on', ...c, token: c.token.length > 8 ? `${c.token.slice(0, 4)}…${c.token.slice(-2)} (${c.token.length} chars)` : '***' }
}

function unknownPolicy (text: string): 'adopt' | 'delete' {
  if (text !== 'adopt' && text !== 'delete') throw new Error(`--unknown-servers must be adopt or delete, got ${JSON.stringify(text)}`)
  return text
}

function serverTypes (list: string[]): { serverType: string, fallbackServerTypes: string[] } {
  if (list.length === 0) throw new Error('--server-type needs a value')
  return { serverType: list[0]!, fallbackServerTypes: list.slice(1) }
}

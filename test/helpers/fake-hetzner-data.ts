/**
 * Fixtures of the fake Hetzner Cloud API (test/helpers/fake-hetzner.ts): the
 * catalogue a real project sees (locations, datacenters, server types with
 * prices, system images), shaped like the API's own objects, field for field;
 * and the API's label selector language.
 */

/** The API's timestamps: RFC 3339 with `+00:00`, no fractional seconds. */
export function apiTime (ms: number = Date.now()): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, '+00:00')
}

export const LOCATIONS = [
  { id: 1, name: 'fsn1', description: 'Falkenstein DC Park 1', country: 'DE', city: 'Falkenstein', latitude: 50.47612, longitude: 12.370071, network_zone: 'eu-central' },
  { id: 2, name: 'nbg1', description: 'Nuremberg DC Park 1', country: 'DE', city: 'Nuremberg', latitude: 49.452102, longitude: 11.076665, network_zone: 'eu-central' },
  { id: 3, name: 'hel1', description: 'Helsinki DC Park 1', country: 'FI', city: 'Helsinki', latitude: 60.169855, longitude: 24.938379, network_zone: 'eu-central' },
  { id: 4, name: 'ash', description: 'Ashburn, VA', country: 'US', city: 'Ashburn, VA', latitude: 39.045821, longitude: -77.487073, network_zone: 'us-east' },
  { id: 5, name: 'hil', description: 'Hillsboro, OR', country: 'US', city: 'Hillsboro, OR', latitude: 45.54222, longitude: -122.95194, network_zone: 'us-west' }
]
export type Location = typeof LOCATIONS[number]

/** One datacenter per location: `<location>-dc<n>`. */
const DCS: Record<string, [number, number, string]> = {
  fsn1: [4, 14, 'Falkenstein 1 virtual DC 14'],
  nbg1: [2, 3, 'Nuremberg 1 virtual DC 3'],
  hel1: [3, 2, 'Helsinki 1 virtual DC 2'],
  ash: [5, 1, 'Ashburn virtual DC 1'],
  hil: [6, 1, 'Hillsboro virtual DC 1']
}

interface TypeDef {
  id: number, name: string, cores: number, memory: number, disk: number, cpu_type: 'shared' | 'dedicated'
  architecture: 'x86' | 'arm', category: string, locations: string[], hourly: number, monthly: number, deprecated?: boolean
}
const EU = ['fsn1', 'nbg1', 'hel1']
const ALL = ['fsn1', 'nbg1', 'hel1', 'ash', 'hil']
/** Net EUR prices; gross adds 19 % VAT as the API shows it to a German project. */
const TYPES: TypeDef[] = [
  { id: 1, name: 'cx11', cores: 1, memory: 2, disk: 20, cpu_type: 'shared', architecture: 'x86', category: 'cost_optimized', locations: EU, hourly: 0.0052, monthly: 3.2900, deprecated: true },
  { id: 22, name: 'cpx11', cores: 2, memory: 2, disk: 40, cpu_type: 'shared', architecture: 'x86', category: 'regular_purpose', locations: ALL, hourly: 0.0076, monthly: 4.5900 },
  { id: 45, name: 'cax11', cores: 2, memory: 4, disk: 40, cpu_type: 'shared', architecture: 'arm', category: 'cost_optimized', locations: EU, hourly: 0.0062, monthly: 3.7900 },
  { id: 96, name: 'ccx13', cores: 2, memory: 8, disk: 80, cpu_type: 'dedicated', architecture: 'x86', category: 'general_purpose', locations: ALL, hourly: 0.0208, monthly: 12.4900 },
  { id: 104, name: 'cx22', cores: 2, memory: 4, disk: 40, cpu_type: 'shared', architecture: 'x86', category: 'cost_optimized', locations: EU, hourly: 0.0060, monthly: 3.7900 },
  { id: 105, name: 'cx32', cores: 4, memory: 8, disk: 80, cpu_type: 'shared', architecture: 'x86', category: 'cost_optimized', locations: EU, hourly: 0.0110, monthly: 6.8000 }
]

/** Overrides of net prices, by server type name or `type@location`. */
export type PriceTable = Record<string, { hourly: number, monthly: number }>

/** As the API writes them: net with 10 decimals, gross with 16. */
function price (net: number): { net: string, gross: string } {
  return { net: net.toFixed(10), gross: (Math.round(net * 1.19 * 1e10) / 1e10).toFixed(10) + '000000' }
}

export function serverTypes (prices: PriceTable = {}): any[] {
  return TYPES.map(t => ({
    id: t.id,
    name: t.name,
    description: t.name.toUpperCase(),
    cores: t.cores,
    memory: t.memory,
    disk: t.disk,
    deprecated: t.deprecated === true,
    deprecation: t.deprecated === true ? { announced: '2024-06-06T08:00:00+00:00', unavailable_after: '2024-09-06T00:00:00+00:00' } : null,
    prices: t.locations.map(loc => {
      const p = prices[`${t.name}@${loc}`] ?? prices[t.name] ?? { hourly: t.hourly, monthly: t.monthly }
      return {
        location: loc,
        price_hourly: price(p.hourly),
        price_monthly: price(p.monthly),
        included_traffic: 21990232555520,
        price_per_tb_traffic: price(1)
      }
    }),
    storage_type: 'local',
    cpu_type: t.cpu_type,
    category: t.category,
    architecture: t.architecture,
    locations: t.locations.map(loc => ({ id: LOCATIONS.find(l => l.name === loc)!.id, name: loc, deprecation: null, available: true, recommended: loc === 'fsn1' }))
  }))
}

export function datacenters (types: any[]): any[] {
  return LOCATIONS.map(loc => {
    const [id, n, description] = DCS[loc.name]!
    const here = types.filter(t => t.prices.some((p: any) => p.location === loc.name)).map(t => t.id as number)
    return {
      id,
      name: `${loc.name}-dc${n}`,
      description,
      location: loc,
      server_types: { supported: here, available: here.filter(id => !types.find(t => t.id === id).deprecated), available_for_migration: here }
    }
  })
}

function systemImage (id: number, name: string, description: string, flavor: string, version: string, arch: 'x86' | 'arm'): any {
  return {
    id, type: 'system', status: 'available', name, description,
    image_size: null, disk_size: 5, created: '2023-06-13T06:00:02+00:00', created_from: null, bound_to: null,
    os_flavor: flavor, os_version: version, rapid_deploy: true, protection: { delete: false },
    deprecated: null, deprecation: null, deleted: null, labels: {}, architecture: arch
  }
}

export const IMAGES = [
  systemImage(114690387, 'debian-12', 'Debian 12', 'debian', '12', 'x86'),
  systemImage(114690389, 'debian-12', 'Debian 12', 'debian', '12', 'arm'),
  systemImage(161547269, 'ubuntu-24.04', 'Ubuntu 24.04', 'ubuntu', '24.04', 'x86'),
  systemImage(161547270, 'ubuntu-24.04', 'Ubuntu 24.04', 'ubuntu', '24.04', 'arm')
]

/** The one SSH key of the fake project. */
export const SSH_KEYS = [{
  id: 2323,
  name: 'rgrid-ops',
  fingerprint: 'b7:2f:30:a0:2f:6c:58:6c:21:04:58:61:ba:06:3b:2f',
  public_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyN5ZNV1oJ0B2nZDE9x3Qm5U2mQBqgYcS7lX3k6h1bP ops@rgrid',
  labels: {},
  created: '2024-01-10T09:00:00+00:00'
}]

/** Messages the API gives with its error codes, for injected failures. */
export const ERROR_MESSAGES: Record<string, string> = {
  rate_limit_exceeded: 'limit of 3600 requests per hour reached',
  unavailable: 'service temporarily unavailable',
  server_error: 'internal server error',
  timeout: 'request timed out',
  resource_unavailable: 'error during placement',
  placement_error: 'error during placement',
  resource_limit_exceeded: 'project limit exceeded',
  server_limit_exceeded: 'server limit exceeded',
  maintenance: 'cannot perform operation due to maintenance',
  conflict: 'the resource has changed during the request, please retry',
  locked: 'server is locked',
  forbidden: 'insufficient permissions for this request',
  unauthorized: 'unable to authenticate'
}

/**
 * The API's label selector language: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
 * `k in (a,b)`, `k notin (a,b)`, joined by commas (AND). As in Kubernetes,
 * whose language it is, `!=` and `notin` also match a missing key.
 * null when the selector does not parse.
 */
export function parseSelector (selector: string): ((labels: Record<string, string>) => boolean) | null {
  const parts: string[] = []
  let depth = 0
  let cur = ''
  for (const ch of selector) {
    if (ch === '(') depth++
    if (ch === ')') depth--
    if (ch === ',' && depth === 0) { parts.push(cur); cur = '' } else cur += ch
  }
  parts.push(cur)
  const K = '([^\\s!=(),]+)'
  const tests = parts.map(raw => {
    const p = raw.trim()
    let m: RegExpExecArray | null
    if ((m = new RegExp(`^${K}\\s+(in|notin)\\s+\\(([^()]*)\\)$`).exec(p)) != null) {
      const [, k, op, list] = m as unknown as [string, string, string, string]
      const values = list.split(',').map(v => v.trim())
      return op === 'in' ? (l: Record<string, string>) => k in l && values.includes(l[k]!) : (l: Record<string, string>) => !(k in l) || !values.includes(l[k]!)
    }
    if ((m = new RegExp(`^${K}\\s*(==|=|!=)\\s*([^\\s!=(),]*)$`).exec(p)) != null) {
      const [, k, op, v] = m as unknown as [string, string, string, string]
      return op === '!=' ? (l: Record<string, string>) => l[k] !== v : (l: Record<string, string>) => k in l && l[k] === v
    }
    if ((m = new RegExp(`^!\\s*${K}$`).exec(p)) != null) { const k = m[1]!; return (l: Record<string, string>) => !(k in l) }
    if ((m = new RegExp(`^${K}$`).exec(p)) != null) { const k = m[1]!; return (l: Record<string, string>) => k in l }
    return null
  })
  return tests.every(t => t != null) ? labels => tests.every(t => t!(labels)) : null
}

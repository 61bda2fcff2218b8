/**
 * Picks the address to show an operator: a non-loopback one when the peer
 * listens on all interfaces (others can dial it), else the first.
 */
export function preferredAddr (addrs: string[]): string {
  const external = addrs.find(a => !a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1'))
  const chosen = external ?? addrs[0]
  if (chosen == null) throw new Error('peer has no listen addresses')
  return chosen
}

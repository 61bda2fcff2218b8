/**
 * Yamux window updates once half the receive window is used, not after every
 * data frame.
 *
 * `@chainsafe/libp2p-yamux` 8 answers every data frame it receives with a
 * window-update frame. Our traffic is many small frames (session requests,
 * awards, results, gossip), so half of all frames on a connection were window
 * updates: each one a noise encryption and a socket write on one side and a
 * read, decryption and decode on the other. go-yamux, rust-yamux and
 * py-libp2p send an update only when at least half of the window has been
 * consumed; the yamux spec leaves the choice to the receiver. We do the same
 * (docs/performance.md, change 11).
 *
 * Flow control stays sound: a sender stalls only when its send window is
 * exhausted, and by then the receiver has consumed more than half and has
 * sent an update. Opening (SYN/ACK flags) and paused streams keep the
 * library's own path.
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/** The fields of a yamux stream the threshold reads; checked at run time, so a library that renames them falls back to its own behaviour. */
interface WindowState { state: unknown, recvWindow: unknown, recvWindowCapacity: unknown }

let installed = false

/** Whether a window update now would grant less than half a window: then it waits. */
export function holdsWindowUpdate (s: WindowState): boolean {
  return s.state === StreamState.Established && typeof s.recvWindow === 'number' && typeof s.recvWindowCapacity === 'number' &&
    s.recvWindowCapacity > s.recvWindow / 2
}

/**
 * Installs the half-window threshold on every yamux stream of this process.
 * Idempotent; `createHost` calls it, so importing this module does nothing.
 */
export function installYamuxWindowThreshold (): void {
  if (installed) return
  installed = true
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate: (this: WindowState) => void }
  const library = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: WindowState): void {
    if (holdsWindowUpdate(this)) return
    library.call(this)
  }
}

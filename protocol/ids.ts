/**
 * Versioned identifiers of everything RGrid puts on the wire.
 *
 * A breaking change to a message bumps the major version of the topic or
 * protocol that carries it, so old and new peers never misread each other:
 * they simply do not hear each other.
 */

/** Gossipsub topic carrying batches of job announcements from coordinators. */
export const ANNOUNCE_TOPIC = '/rgrid/announce/1.0.0'

/**
 * Gossipsub topic carrying node heartbeats. Only coordinators and bootstrap
 * peers subscribe: nodes publish to it without listening, so a node's cost
 * at rest does not grow with the number of nodes (docs/performance.md).
 */
export const HEARTBEAT_TOPIC = '/rgrid/heartbeat/2.0.0'

/** Gossipsub topic carrying coordinator beacons (addresses, deny lists); nodes and bootstrap peers subscribe. */
export const BEACON_TOPIC = '/rgrid/beacon/1.0.0'

/**
 * Request/response stream protocol between a node and a coordinator.
 * The node opens one long-lived stream and multiplexes requests on it.
 *
 * 1.1.0 adds one request-driven extension: a `result` may ask for the
 * node's next attempt (`wantNext`) and the `ack` may carry it (`next`).
 * Coordinators serve both versions with the same code and send `next` only
 * when asked, which a 1.0.0 node never does; a node asks only on a 1.1.0
 * stream. So old and new peers of either side keep working together
 * (docs/protocol.md, "Versions").
 *
 * 1.2.0 adds standing bids: an idle node sends `standby` (one per slot it
 * offers) and the coordinator answers it, later, with an `award` of a new
 * job that fits, instead of announcing that job on gossip; or with an empty
 * `open` when the wait ends or the node sends `withdraw`. A node sends
 * them only on a 1.2.0 stream.
 */
export const SESSION_PROTOCOL = '/rgrid/session/1.2.0'

/** The session protocol with `wantNext` but without standing bids. */
export const SESSION_PROTOCOL_V1_1 = '/rgrid/session/1.1.0'

/** The session protocol before `wantNext`; still served, and dialled when a coordinator lacks 1.1.0 and 1.2.0. */
export const SESSION_PROTOCOL_V1 = '/rgrid/session/1.0.0'

/** Every session protocol version a coordinator serves and a node dials, newest first. */
export const SESSION_PROTOCOLS = [SESSION_PROTOCOL, SESSION_PROTOCOL_V1_1, SESSION_PROTOCOL_V1]

/** Version number carried inside every message body. */
export const WIRE_VERSION = 1

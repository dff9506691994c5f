// Package natsbus carries fleet messages (package fleet) over NATS
// JetStream: one key-value bucket, one key per model, host and learner
// key ("tcp_cc.<host>.<base64url(prefix)>"), holding that host's latest
// statistics for that key.
//
// A key-value bucket, not a plain stream, because a host's statistics
// are state, not events: each message replaces the host's previous one
// for the same key, so the bucket keeps one value per (model, host, key)
// (history 1), a joining host reads the fleet's current knowledge with
// one watch instead of replaying every update, and the bucket's TTL
// drops the statistics of hosts that left.
//
// The bus never stops the daemon: NATS unreachable, slow or restarted,
// it logs the failure once and the recovery once, keeps reconnecting, and
// keeps the statistics it could not publish until it can.
package natsbus

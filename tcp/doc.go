// Package tcp is mlbpf's TCP subsystem. Its model tcp/cc learns, per
// destination prefix, which congestion control algorithm gives the best
// goodput, and has a sock_ops program apply it to new connections, as the
// model's mode allows.
//
// # Kernel side
//
// bpf/tcp_cc.bpf.c is a sock_ops program attached to a cgroup v2 (the root
// of the cgroup2 mount by default: every process of the host). For each
// connection of the cgroup it decides once, before congestion control is
// initialised: at TCP_CONNECT_CB for connect() (before the SYN, so the
// whole connection runs the choice) and at PASSIVE_ESTABLISHED_CB for
// accept(). It looks the peer up in the LPM trie "recommend" (IPv4 stored
// IPv4-mapped, so one trie holds both families; ::/0 covers IPv4 too) and
// takes an arm with mlbpf_decide_blocked: nothing applied in LEARNING
// (SHADOW), applied to a random CollabPermille share in COLLABORATION
// (MODEL, else CONTROL; drawn in permuted blocks, one for connect()s and
// one for accept()s, so that the two arms stay within a block of each
// other: with the default 500 ‰ they differ by at most one connection,
// and n outcomes per arm arrive after 2n connections, not 8–13 for
// n = 4 as with coin flips), applied but for a HoldoutPermille share in RECOMMENDATION,
// nothing when the model is not RUNNING or its lease has expired
// (FALLBACK). Only the MODEL arm calls bpf_setsockopt(TCP_CONGESTION); a
// refusal is counted as REJECTED.
//
// A socket whose algorithm someone else chose is left alone and counted
// as SKIPPED. The program reads the socket's own flags rather than
// comparing the algorithm with the namespace's default: icsk_ca_setsockopt
// is set by setsockopt(TCP_CONGESTION), even when the application asked
// for the default itself, and icsk_ca_dst_locked by a route's "congctl
// lock". Comparing names would miss the first case and would misjudge
// every socket of a namespace whose default changed after it was created.
//
// Each decided connection gets an entry in an LRU hash keyed by socket
// cookie (start time, arm, mode, generation, recommendation; preallocated,
// so nothing is allocated or freed per connection, which socket-local
// storage would) and the STATE_CB callback; at TCP_CLOSE the program
// deletes the entry and writes a struct tcp_conn_record to the model's
// ring buffer: duration, bytes acknowledged and received, smoothed and
// minimum RTT, segments sent and retransmitted, MSS, the algorithm that
// ran, the arm and the destination. Connections that sent less than
// LearnConfig.MinBytes end without a record. While a connection runs the
// default algorithm, RTT_CB (from establishment on) keeps the peak
// delivery-rate sample the kernel measured (tcp_rate_gen, as in tcpi_delivery_rate): the evidence the
// counterfactual model below needs. While a connection runs the model's
// algorithm, RTT_CB and RTO_CB re-check the control block, and once the
// model falls back set the connection back to its namespace's default
// (Conn.Reverted; see bpf/tcp_cc.bpf.c, revert).
//
// Everything is pinned under <pin root>/tcp/cc/, the sock_ops link
// included, so a restarted daemon adopts the program (updating it to its
// own version) and the maps; Rollback removes it all.
//
// # The learner
//
// One Destination per /24 (IPv4) or /64 (IPv6) holds a bandit
// (package learner) with an arm per allowed algorithm. Rewards are the
// natural logarithm of goodput (bytes acknowledged per second of the
// connection's life): goodput under loss is heavy-tailed, and algorithms
// differ by factors. Evidence forgets at 1 % per transfer to the
// destination, on every arm, so that a path whose conditions change is
// re-learned.
//
// # LEARNING: a counterfactual
//
// In LEARNING nothing is applied, so every connection runs the default and
// nothing is ever observed about the alternatives. The mode controller
// still needs evidence that a recommendation would help before it lets the
// kernel try it, and the learner gives it a counterfactual prediction
// from what the default's connections show:
//
//   - A loss-based algorithm (reno, cubic: they back off at every loss)
//     is held by loss to the Mathis bound, rate ≈ MSS/RTT · 1.22/√p. Two
//     loss-based algorithms are predicted alike: nothing the default shows
//     tells them apart.
//   - A rate-based algorithm (bbr) paces at its estimate of the bottleneck
//     bandwidth and ignores random loss. The bottleneck is at least the
//     peak delivery rate the default's connection reached, so bbr is
//     predicted at 0.9 × (1 − p) × that peak, never below what the default
//     did, phased in with the loss rate p between 0.1 % and 1 %: without
//     loss the default is not loss-limited, and the prediction is exactly
//     what the default did.
//
// So without loss (and with the default best) nothing is ever predicted to
// beat the default, the learner recommends nothing, no SHADOW outcome
// exists, and the model is never promoted. Under loss the prediction is an
// upper bound, optimistic by design: LEARNING → COLLABORATION is not a
// decision to use bbr, only to test it on a randomised share. The learner
// recommends an algorithm once its posterior (the default's real rewards
// against the predictions, the predictions counted with the model's own
// error) beats the default by LearnConfig.MinGain with
// LearnConfig.Confidence; each SHADOW connection then carries the
// prediction for the recommended algorithm and the goodput observed under
// the default, and the controller promotes when the predicted gain is
// significant (paired test).
//
// # COLLABORATION and RECOMMENDATION: real evidence
//
// In COLLABORATION half the connections (CollabPermille) run the
// recommendation: real rewards for it, against a randomised control
// group. The controller promotes to RECOMMENDATION when MODEL beats
// CONTROL (Welch, one-sided), and demotes on a significant regression. The
// learner meanwhile folds the real rewards into its posterior and
// withdraws a recommendation that no longer beats the default (after a
// fair trial); with nothing left to recommend, CorrectSystemState sends
// the model back to LEARNING. Error backpropagation calibrates the
// counterfactual: each MODEL outcome's prediction error goes into a bias
// and an error variance per algorithm and per loss regime, persisted, so
// that the next destination's predictions start where reality left the
// last ones.
//
// On the testbed (a veth pair with about 20 µs of RTT) this matters: at 10
// % loss bbr beats cubic several times over and is learned within about 70
// connections; at 2 % loss the prediction says bbr too, but on so short a
// path cubic recovers fast and wins, COLLABORATION shows it within a
// handful of connections, the recommendation is withdrawn and the model
// returns to LEARNING.
//
// The controller's reward is 1 + ln(goodput / the destination's mean
// default goodput): 1 means "as good as the default", 1.1 about 10 %
// better, on every destination alike, so outcomes of different
// destinations can be pooled, and the controller's relative MinEffect
// reads as a relative goodput gain.
//
// # State
//
// The learner's state (destinations, calibration) is saved as JSON under
// Config.StateDir, written to a temporary file and renamed, every ten
// seconds while running and when the model stops. The mode is not
// persisted: a restarted model starts in LEARNING and earns its promotion
// again, quickly, since its recommendations survived.
package tcp

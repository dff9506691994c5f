// Package fleet is what hosts share of what they learn: per model and key
// (a destination prefix, a device), each arm's sufficient statistics
// (Message), the decoder that refuses anything else (Decode: fleet
// messages are untrusted input), and the table that combines the hosts'
// statistics into a prior discounted by age (Table).
//
// A learner shares through pipeline.FleetLearner; the transport is
// package fleet/natsbus (a NATS JetStream key-value bucket). Fleet
// evidence is only ever a prior: the learner weighs it, caps it, and
// drops it for an arm where its own measurements disagree, and nothing
// from the fleet reaches the mode controller, so RECOMMENDATION still
// needs the host's own randomised evidence (COLLABORATION).
package fleet

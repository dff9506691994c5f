// Package learner holds mlbpf's learners: small, dependency-free
// estimators a subsystem combines into its model.
//
// Estimate is a running mean and variance with exponential forgetting, so
// that a learner follows a path whose conditions change. Bandit is a
// multi-armed bandit over named arms (congestion control algorithms, for
// example) with a Gaussian posterior per arm, chosen by Thompson sampling
// or compared pairwise. Each arm has two sources of evidence:
//
//   - real rewards, observed when the arm actually ran;
//   - predicted rewards, a model's counterfactual estimate of what the arm
//     would have earned, made while another arm ran. A prediction carries
//     the model's own error (ModelVar): however many predictions there
//     are, they never weigh more than what the model's accuracy allows,
//     and real rewards take over as they arrive.
//
// Every type marshals to JSON, so a learner's state survives a restart.
package learner

// Package deploy holds what an operator deploys beside mlbpf, and the
// tests that keep it true to the daemon:
//
//   - grafana/mlbpf.json, a Grafana dashboard on the Prometheus metrics
//     the daemon serves (mlbpf run --metrics-addr, or metrics: in its
//     configuration): per model, its mode and state, lease, arm decision
//     rates, records and losses, efficiency with its interval; and the
//     daemon's process.
//
// TestGrafanaDashboard runs a real daemon (the synthetic model) and a real
// Prometheus (Debian's prometheus package) scraping it every second, and
// checks that every query of the dashboard, its variables' included,
// returns data through Prometheus's HTTP API; it also checks that the
// README documents every metric the daemon exports. The package has no
// other code.
package deploy

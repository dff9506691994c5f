// Package deploy holds what an operator deploys beside mlbpf, and the
// tests that keep it true to the daemon:
//
//   - grafana/mlbpf.json, a Grafana dashboard on the Prometheus metrics
//     the daemon serves (mlbpf run --metrics-addr, or metrics: in its
//     configuration): per model, its mode and state, lease, arm decision
//     rates, records and losses, efficiency with its interval; and the
//     daemon's process.
//   - kubernetes/daemonset.yaml and kubernetes/configmap.yaml, mlbpf on
//     every node of a Kubernetes cluster, in the image 'make image' builds
//     (packaging/container), with the least privilege measured to attach
//     tcp/cc.
//
// TestGrafanaDashboard runs a real daemon (the synthetic model) and a real
// Prometheus (Debian's prometheus package) scraping it every second, and
// checks that every query of the dashboard, its variables' included,
// returns data through Prometheus's HTTP API; it also checks that the
// README documents every metric the daemon exports.
//
// TestContainerRunsAsManifest builds the image and runs it under podman
// with the privileges, namespaces and mounts translated from the
// DaemonSet's own file (podmanRunArgs) and the ConfigMap's configuration
// on the test's own pin root and cgroup, and checks from the host that
// tcp/cc attaches, that 'mlbpf status' sees it, that the liveness probe
// catches a hung daemon, and what a stopped pod leaves.
// TestContainerNeedsEachCapability drops each capability the manifest
// grants and sees the daemon fail. TestManifestPlaysInPodman has 'podman
// kube play' read the manifest and compares what it grants with the
// translation, and has it refuse broken copies. The package has no other
// code.
package deploy

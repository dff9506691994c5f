package tcpbench

import (
	"os"
	"testing"

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/subsystems"
)

// TestMain registers the subsystems, as the benchmark's command does.
func TestMain(m *testing.M) {
	daemon.Register(subsystems.All()...)
	os.Exit(m.Run())
}

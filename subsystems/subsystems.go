// Package subsystems lists every subsystem mlbpf's binary runs, in one
// place: adding a subsystem (see package pipeline) is adding its line
// here.
package subsystems

import (
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/storage/readahead"
	"github.com/mlbpf/mlbpf/synthetic"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/tcp/rto"
)

// All returns every subsystem, in the order the CLI lists them.
func All() []*pipeline.Subsystem {
	return []*pipeline.Subsystem{
		tcp.Subsystem(),
		rto.Subsystem(),
		synthetic.Subsystem(),
		readahead.Subsystem(),
	}
}

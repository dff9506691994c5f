package rtobench

import (
	"context"
	"io"
)

// Run runs the benchmark.
func Run(ctx context.Context, w io.Writer, cfg Config) error { return nil }

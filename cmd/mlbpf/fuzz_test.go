package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/synthetic"
)

// FuzzRecommendCommand runs 'mlbpf recommend' with arbitrary arguments on
// the pins of a synthetic model, no daemon running: the path an operator
// takes. No argument panics it; a refused recommendation writes nothing
// into the pinned map; an accepted one is written exactly as reported,
// normalized, within the configured max_value, and withdrawn by the key
// as it was given.
func FuzzRecommendCommand(f *testing.F) {
	testutil.RequireBPF(f)
	const maxValue = 1000
	root := testutil.PinRoot(f)
	dir := f.TempDir()
	cfg := filepath.Join(dir, "mlbpf.yaml")
	if err := os.WriteFile(cfg, []byte("models:\n  - name: synthetic/demo\n    synthetic:\n      max_value: 1000\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	s, err := synthetic.Open(synthetic.Config{PinRoot: root, Model: "demo", MaxValue: maxValue})
	if err != nil {
		f.Fatal(err)
	}
	s.Close() // the pins stay, as a stopped daemon leaves them
	recs, err := ebpf.LoadPinnedMap(filepath.Join(loader.PinDir(root, synthetic.Name, "demo"), "recommend"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { recs.Close() })
	entries := func(t *testing.T) int {
		var k uint32
		var v [8]byte
		n := 0
		it := recs.Iterate()
		for it.Next(&k, &v) {
			n++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	flags := []string{"-o", "json", "--config", cfg, "--pin-root", root,
		"--state-dir", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "run", "agent.sock")}

	f.Add("synthetic/demo", "5", "42")
	f.Add("synthetic/demo", " 007", "1000 ")
	f.Add("synthetic/demo", "5", "1001")
	f.Add("synthetic/demo", "-5", "--pin-root=/")
	f.Add("synthetic/../demo", "5", "42")
	f.Add("tcp/cc", "10.0.0.0/8", "bbr")
	f.Add("", "", "")
	f.Fuzz(func(t *testing.T, name, key, value string) {
		var stdout, stderr bytes.Buffer
		args := append(append([]string{"recommend"}, flags...), "--", name, key, value)
		err := run(context.Background(), args, &stdout, &stderr)
		if err != nil {
			if n := entries(t); n != 0 {
				t.Fatalf("refused (%v), yet %d entries in the pinned map", err, n)
			}
			return
		}
		var got agent.Recommendation
		if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
			t.Fatalf("output %q: %v", stdout.String(), err)
		}
		k, v, perr := synthetic.ParseRecommendation(key, value, maxValue)
		if name != "synthetic/demo" || perr != nil {
			t.Fatalf("accepted %q %q %q (%+v): the subsystem refuses it: %v", name, key, value, got, perr)
		}
		if got.Key != strconv.FormatUint(uint64(k), 10) || got.Value != strconv.FormatUint(uint64(v), 10) || v > maxValue {
			t.Fatalf("%q %q reported as %+v, want %d %d", key, value, got, k, v)
		}
		var stored struct{ Value, Generation uint32 }
		if err := recs.Lookup(k, &stored); err != nil || stored.Value != v {
			t.Fatalf("pinned map holds %+v for key %d (%v), want %d", stored, k, err, v)
		}
		if n := entries(t); n != 1 {
			t.Fatalf("%d entries in the pinned map, want 1", n)
		}
		// Withdrawn by the same key, however it was spelled.
		stdout.Reset()
		args = append(append([]string{"recommend", "--withdraw"}, flags...), "--", name, key)
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Fatalf("withdrawing %q: %v", key, err)
		}
		if n := entries(t); n != 0 {
			t.Fatalf("withdrawn, %d entries left in the pinned map", n)
		}
	})
}

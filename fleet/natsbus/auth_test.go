package natsbus

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/mlbpf/mlbpf/internal/natstest"
	"github.com/mlbpf/mlbpf/internal/testutil"
)

// runBus runs a bus with cfg for d and returns it and its log.
func runBus(t *testing.T, cfg Config, d time.Duration) (*Bus, string) {
	t.Helper()
	var logs testutil.SyncBuffer
	cfg.Log, cfg.Interval, cfg.Timeout = slog.New(slog.NewTextHandler(&logs, nil)), 100*time.Millisecond, time.Second
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return b, logs.String()
}

// TestCredentials: a server that wants a user and password, or an nkey,
// takes the bus with the right ones only.
func TestCredentials(t *testing.T) {
	t.Run("user", func(t *testing.T) {
		srv := natstest.Start(t, "--user", "mlbpf", "--pass", "s3cret")
		if _, log := runBus(t, Config{URLs: []string{srv.URL}, Host: "a", User: "mlbpf", Password: "wrong"}, 2*time.Second); !strings.Contains(log, "NATS unreachable") || strings.Contains(log, "sharing through NATS") {
			t.Fatalf("a wrong password: %s", log)
		}
		if _, log := runBus(t, Config{URLs: []string{srv.URL}, Host: "a", User: "mlbpf", Password: "s3cret"}, 2*time.Second); !strings.Contains(log, "sharing through NATS") {
			t.Fatalf("the right password: %s", log)
		}
	})
	t.Run("nkey", func(t *testing.T) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		dir := t.TempDir()
		conf := filepath.Join(dir, "server.conf")
		if err := os.WriteFile(conf, []byte("authorization { users = [ { nkey: "+pub+" } ] }\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		seedFile := filepath.Join(dir, "user.nk")
		if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		srv := natstest.Start(t, "-c", conf)
		if _, log := runBus(t, Config{URLs: []string{srv.URL}, Host: "a"}, 2*time.Second); strings.Contains(log, "sharing through NATS") {
			t.Fatalf("no credentials were taken: %s", log)
		}
		if _, log := runBus(t, Config{URLs: []string{srv.URL}, Host: "a", NKeySeed: seedFile}, 2*time.Second); !strings.Contains(log, "sharing through NATS") {
			t.Fatalf("the nkey: %s", log)
		}
	})
}

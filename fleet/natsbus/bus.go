package natsbus

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mlbpf/mlbpf/fleet"
	"github.com/mlbpf/mlbpf/pipeline"
)

// Config configures the bus. Credentials and TLS go through nats.go's own
// options.
type Config struct {
	// URLs are the NATS servers ("nats://host:4222").
	URLs []string
	// User and Password, NKeySeed (a file holding an nkey seed) and
	// Creds (a .creds file: JWT and seed) authenticate; at most one of
	// them is set.
	User, Password string
	NKeySeed       string
	Creds          string
	// CA verifies the servers; Cert and Key are the client's
	// certificate for mutual TLS.
	CA, Cert, Key string
	// Bucket is the key-value bucket (default "mlbpf_fleet").
	Bucket string
	// Replicas of the bucket in a JetStream cluster (default 1).
	Replicas int
	// Host is this host's name in the fleet (fleet.ValidHost).
	Host string
	// Interval between two exchanges (default 5s).
	Interval time.Duration
	// HalfLife of the fleet's evidence (default 1h); MaxAge drops a
	// host's statistics from the bucket (default 24h).
	HalfLife, MaxAge time.Duration
	// Timeout bounds one request to the server (default 2s).
	Timeout time.Duration
	Log     *slog.Logger
}

// DefaultBucket is the bucket's default name.
const DefaultBucket = "mlbpf_fleet"

func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.HalfLife == 0 {
		c.HalfLife = time.Hour
	}
	if c.MaxAge == 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Options returns the nats.go options for c's credentials and TLS.
func (c Config) Options() ([]nats.Option, error) {
	n := 0
	for _, set := range []bool{c.User != "", c.NKeySeed != "", c.Creds != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("configuring NATS: set one of user/password, nkey_seed and creds")
	}
	var opts []nats.Option
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.NKeySeed != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("reading the NATS nkey seed: %w", err)
		}
		opts = append(opts, o)
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, errors.New("configuring NATS TLS: set both cert and key, or neither")
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	return opts, nil
}

// Counters count what the bus did.
type Counters struct {
	Published, PublishedBytes uint64
	Received, Rejected        uint64
	Merged                    uint64
	Pending                   int
	Up                        bool
}

// Bus exchanges the statistics of the learners added to it with the
// fleet.
type Bus struct {
	cfg   Config
	opts  []nats.Option
	log   *slog.Logger
	table *fleet.Table

	mu       sync.Mutex
	learners map[string]pipeline.FleetLearner // by model "tcp/cc"
	pending  map[string][]byte                // bucket key → message not yet published
	state    int                              // 0 never connected, 1 up, 2 down
	c        Counters
}

// New checks cfg and returns a bus; Run connects it.
func New(cfg Config) (*Bus, error) {
	cfg = cfg.withDefaults()
	if len(cfg.URLs) == 0 {
		return nil, errors.New("configuring the fleet: no NATS URL (fleet.urls)")
	}
	if err := fleet.ValidHost(cfg.Host); err != nil {
		return nil, fmt.Errorf("configuring the fleet: %w", err)
	}
	opts, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	return &Bus{cfg: cfg, opts: opts, log: cfg.Log, table: fleet.NewTable(cfg.Host, 0),
		learners: map[string]pipeline.FleetLearner{}, pending: map[string][]byte{}}, nil
}

// Add shares model's learner ("tcp/cc") with the fleet.
func (b *Bus) Add(model string, l pipeline.FleetLearner) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.learners[model] = l
}

// sharing returns the learners shared, by model.
func (b *Bus) sharing() map[string]pipeline.FleetLearner {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.learners)
}

// Counters returns what the bus did so far.
func (b *Bus) Counters() Counters {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.c
	c.Pending, c.Up = len(b.pending), b.state == 1
	return c
}

// Table is the fleet's statistics as received.
func (b *Bus) Table() *fleet.Table { return b.table }

// Key is the bucket's key for model's key on host:
// "tcp_cc.<host>.<base64url(key)>".
func Key(model, host, key string) string { return bucketKey(model, host, key) }

func bucketKey(model, host, key string) string {
	return strings.ReplaceAll(model, "/", "_") + "." + host + "." + base64.RawURLEncoding.EncodeToString([]byte(key))
}

// parseKey inverts bucketKey.
func parseKey(k string) (model, host, key string, ok bool) {
	parts := strings.Split(k, ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	sub, name, ok := strings.Cut(parts[0], "_")
	if !ok {
		return "", "", "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", "", "", false
	}
	return sub + "/" + name, parts[1], string(raw), true
}

// Run connects to NATS and exchanges statistics every Interval until ctx
// is done. It returns nil then, whatever NATS did meanwhile.
func (b *Bus) Run(ctx context.Context) error {
	opts := append([]nats.Option{
		nats.Name("mlbpf " + b.cfg.Host),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.Timeout(b.cfg.Timeout),
		// Publishes while disconnected fail at once; the bus keeps
		// them itself.
		nats.ReconnectBufSize(-1),
	}, b.opts...)
	nc, err := nats.Connect(strings.Join(b.cfg.URLs, ","), opts...)
	if err != nil {
		// Only a bad option: unreachable servers are retried.
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	defer nc.Close()
	s := &session{b: b, nc: nc}
	defer s.reset()
	t := time.NewTicker(b.cfg.Interval)
	defer t.Stop()
	full := time.Now()
	for {
		all := time.Since(full) > b.cfg.HalfLife/8
		if all {
			full = time.Now()
		}
		if err := s.exchange(ctx); err != nil {
			b.down(err)
			s.reset()
		} else {
			b.up()
		}
		b.merge(all)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (b *Bus) down(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != 2 {
		b.log.Warn("fleet: NATS unreachable: learning alone, reconnecting", "urls", b.cfg.URLs, "err", err)
	}
	b.state = 2
}

func (b *Bus) up() {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case 0:
		b.log.Info("fleet: sharing through NATS", "bucket", b.cfg.Bucket, "host", b.cfg.Host)
	case 2:
		b.log.Info("fleet: NATS reachable again: sharing", "bucket", b.cfg.Bucket, "pending", len(b.pending))
	}
	b.state = 1
}

// session is the bucket and its watcher over one connection, made again
// after a failure.
type session struct {
	b       *Bus
	nc      *nats.Conn
	kv      jetstream.KeyValue
	w       jetstream.KeyWatcher
	stopped chan struct{}
}

func (s *session) reset() {
	if s.w != nil {
		s.w.Stop()
		<-s.stopped
	}
	s.kv, s.w = nil, nil
}

// exchange publishes what the learners learned and makes sure the
// bucket is watched.
func (s *session) exchange(ctx context.Context) error {
	b := s.b
	b.collect()
	if !s.nc.IsConnected() {
		if err := s.nc.LastError(); err != nil {
			return err
		}
		return nats.ErrConnectionClosed
	}
	if s.w != nil {
		select {
		case <-s.stopped:
			s.reset() // the watch ended: watch again
		default:
		}
	}
	if s.kv == nil {
		js, err := jetstream.New(s.nc)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
		defer cancel()
		kv, err := js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
			Bucket: b.cfg.Bucket, Description: "mlbpf fleet: learners' statistics per model, host and key",
			History: 1, TTL: b.cfg.MaxAge, MaxValueSize: fleet.MaxMessageBytes,
			Storage: jetstream.FileStorage, Replicas: b.cfg.Replicas,
		})
		if err != nil {
			return fmt.Errorf("opening the fleet's bucket %s: %w", b.cfg.Bucket, err)
		}
		s.kv = kv
	}
	if s.w == nil {
		w, err := s.kv.WatchAll(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("watching the fleet's bucket: %w", err)
		}
		s.w, s.stopped = w, make(chan struct{})
		go s.watch(w, s.stopped)
	}
	return s.publish(ctx)
}

// collect takes the learners' new statistics into the pending messages:
// a key's newer statistics replace the older, unpublished ones.
func (b *Bus) collect() {
	learners := b.sharing()
	now := time.Now()
	for model, l := range learners {
		for _, st := range l.FleetExport(nil) {
			msg := &fleet.Message{V: fleet.Version, Host: b.cfg.Host, Model: model, At: now.UnixMilli(), Stats: st}
			data, err := fleet.Encode(msg)
			if err != nil {
				b.log.Debug("fleet: not sharing", "model", model, "key", st.Key, "err", err)
				continue
			}
			b.mu.Lock()
			b.pending[bucketKey(model, b.cfg.Host, st.Key)] = data
			b.mu.Unlock()
		}
	}
}

func (s *session) publish(ctx context.Context) error {
	b := s.b
	b.mu.Lock()
	keys := make([]string, 0, len(b.pending))
	for k := range b.pending {
		keys = append(keys, k)
	}
	b.mu.Unlock()
	for _, k := range keys {
		b.mu.Lock()
		data := b.pending[k]
		b.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
		_, err := s.kv.Put(cctx, k, data)
		cancel()
		if err != nil {
			return fmt.Errorf("publishing to the fleet: %w", err)
		}
		b.mu.Lock()
		if string(b.pending[k]) == string(data) {
			delete(b.pending, k)
		}
		b.c.Published++
		b.c.PublishedBytes += uint64(len(data))
		b.mu.Unlock()
	}
	return nil
}

// watch takes every value of the bucket into the table, validated.
func (s *session) watch(w jetstream.KeyWatcher, stopped chan struct{}) {
	defer close(stopped)
	b := s.b
	for e := range w.Updates() {
		if e == nil {
			continue // the values present when the watch began are in
		}
		model, host, key, ok := parseKey(e.Key())
		if !ok {
			b.reject(e.Key(), errors.New("not a fleet key"))
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			b.table.Delete(model, key, host)
			continue
		}
		m, err := fleet.Decode(e.Value(), time.Now())
		if err == nil && (m.Model != model || m.Host != host || m.Key != key) {
			err = errors.New("the message does not match its key")
		}
		if err != nil {
			b.reject(e.Key(), err)
			continue
		}
		b.mu.Lock()
		b.c.Received++
		b.mu.Unlock()
		b.table.Put(m)
	}
}

func (b *Bus) reject(key string, err error) {
	b.mu.Lock()
	b.c.Rejected++
	b.mu.Unlock()
	b.log.Debug("fleet: message refused", "key", key, "err", err)
}

// merge gives the learners the fleet's prior for the keys whose
// statistics changed (every key with all: evidence ages).
func (b *Bus) merge(all bool) {
	learners := b.sharing()
	now := time.Now()
	n := 0
	for model, l := range learners {
		for _, k := range b.table.Dirty(model, all) {
			l.FleetMerge(k, b.table.Prior(model, k, now, b.cfg.HalfLife))
			n++
		}
	}
	b.mu.Lock()
	b.c.Merged += uint64(n)
	b.mu.Unlock()
}

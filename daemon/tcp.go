package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
	"github.com/mlbpf/mlbpf/tcp"
)

// tcpOptions is tcp/cc's section of the configuration.
type tcpOptions struct {
	// Cgroup is the cgroup v2 directory whose sockets the model sees;
	// empty: the root of the hierarchy, the whole host.
	Cgroup string `cfg:"cgroup"`
	// Allowed lists the algorithms the model may choose (and an operator
	// recommend); empty: every one the kernel offers.
	Allowed []string `cfg:"allowed"`
	// Default is the algorithm connections get when the model does not
	// act; empty: net.ipv4.tcp_congestion_control.
	Default string `cfg:"default"`
	// Passive handles accepted connections too (default true).
	Passive *bool `cfg:"passive"`
	// RateProbe samples the delivery rate of default connections, which
	// the learner needs to predict a rate-based algorithm's gain
	// (default true).
	RateProbe *bool    `cfg:"rate_probe"`
	Learn     tcpLearn `cfg:"learn"`
	// PortionBytes caps a dataset portion (default 128 KiB), as for
	// synthetic models.
	PortionBytes int `cfg:"portion_bytes"`
}

type tcpLearn struct {
	PrefixBits4 int     `cfg:"prefix_bits4"`
	PrefixBits6 int     `cfg:"prefix_bits6"`
	MinBytes    uint64  `cfg:"min_bytes"`
	MinGain     float64 `cfg:"min_gain"`
	MinDefault  int     `cfg:"min_default"`
	Confidence  float64 `cfg:"confidence"`
}

func tcpSubsystem() *Subsystem {
	return &Subsystem{
		Name:     tcp.Name,
		Summary:  "TCP congestion control per destination prefix (sock_ops on a cgroup)",
		Models:   []string{tcp.ModelName},
		Needs:    NeedCgroup2,
		Programs: []ebpf.ProgramType{ebpf.SockOps},
		Records: RecordFormat{
			Kind: loader.RecordTCPConn, Size: tcp.RecordSize,
			Type: reflect.TypeFor[tcp.Record](),
			JSON: tcpJSON,
		},
		Datasets:       true,
		RecommendUsage: "tcp/cc PREFIX ALGORITHM (e.g. 10.0.0.0/8 bbr)",
		check: func(c *config.Config, m *config.Model) error {
			o, err := decodeTCP(c, m)
			if err != nil {
				return err
			}
			if o.Cgroup != "" {
				if !filepath.IsAbs(o.Cgroup) {
					return c.SectionError(m, "cgroup", "%q: want an absolute path to a cgroup v2 directory", o.Cgroup)
				}
			}
			for _, a := range o.Allowed {
				if loader.ValidName(a) != nil {
					return c.SectionError(m, "allowed", "%q is not a congestion control name", a)
				}
			}
			if o.PortionBytes != 0 && o.PortionBytes < tcp.RecordSize {
				return c.SectionError(m, "portion_bytes", "%d: want at least one record, %d bytes", o.PortionBytes, tcp.RecordSize)
			}
			l := o.Learn
			switch {
			case l.PrefixBits4 < 0 || l.PrefixBits4 > 32:
				return c.SectionError(m, "learn", "prefix_bits4 %d: want 0 to 32", l.PrefixBits4)
			case l.PrefixBits6 < 0 || l.PrefixBits6 > 128:
				return c.SectionError(m, "learn", "prefix_bits6 %d: want 0 to 128", l.PrefixBits6)
			case l.MinGain < 0:
				return c.SectionError(m, "learn", "min_gain %v: want ≥ 0", l.MinGain)
			case l.Confidence != 0 && (l.Confidence < 0.5 || l.Confidence >= 1):
				return c.SectionError(m, "learn", "confidence %v: want 0.5 to 1 (exclusive)", l.Confidence)
			}
			return nil
		},
		open:            openTCP,
		recommendPinned: recommendTCPPinned,
		rollback: func(pinRoot, _ string) error {
			sub, err := tcp.OpenPinned(tcp.Config{PinRoot: pinRoot})
			if err != nil {
				// Removing the pins detaches the pinned link all the
				// same, once nothing else holds it.
				return loader.RemovePins(loader.PinDir(pinRoot, tcp.Name, tcp.ModelName))
			}
			return sub.Rollback()
		},
	}
}

func decodeTCP(c *config.Config, m *config.Model) (tcpOptions, error) {
	var o tcpOptions
	err := c.DecodeSection(m, &o)
	return o, err
}

func tcpConfig(c *config.Config, m *config.Model, pinRoot string) (tcp.Config, error) {
	o, err := decodeTCP(c, m)
	if err != nil {
		return tcp.Config{}, err
	}
	return tcp.Config{
		PinRoot: pinRoot, Cgroup: o.Cgroup, Allowed: o.Allowed, Default: o.Default,
		NoPassive: o.Passive != nil && !*o.Passive, NoRateProbe: o.RateProbe != nil && !*o.RateProbe,
		Learn: tcp.LearnConfig{PrefixBits4: o.Learn.PrefixBits4, PrefixBits6: o.Learn.PrefixBits6, MinBytes: o.Learn.MinBytes,
			MinGain: o.Learn.MinGain, MinDefault: o.Learn.MinDefault, Confidence: o.Learn.Confidence},
	}, nil
}

// tcpConn is a tcp/cc record as JSON.
type tcpConn struct {
	Arm           string  `json:"arm"`
	Mode          string  `json:"mode"`
	Generation    uint32  `json:"generation"`
	Peer          string  `json:"peer"`
	Port          uint16  `json:"port"`
	Passive       bool    `json:"passive"`
	DurationNs    int64   `json:"duration_ns"`
	BytesAcked    uint64  `json:"bytes_acked"`
	BytesReceived uint64  `json:"bytes_received"`
	Goodput       float64 `json:"goodput_bytes_per_second"`
	MaxRate       float64 `json:"max_rate_bytes_per_second,omitempty"`
	SRTTNs        int64   `json:"srtt_ns"`
	MinRTTNs      int64   `json:"min_rtt_ns"`
	Retrans       uint32  `json:"retrans"`
	SegsOut       uint32  `json:"segs_out"`
	MSS           uint32  `json:"mss"`
	CC            string  `json:"cc"`
	Recommended   string  `json:"recommended,omitempty"`
	SetFailed     bool    `json:"set_failed,omitempty"`
	Reverted      bool    `json:"reverted,omitempty"`
}

func tcpJSON(raw []byte) (any, error) {
	var c tcp.Conn
	if err := tcp.DecodeConn(raw, &c); err != nil {
		return nil, err
	}
	v := tcpConn{
		Arm: c.Arm.String(), Mode: c.Mode.String(), Generation: c.Generation,
		Peer: c.Peer.String(), Port: c.Port, Passive: c.Passive, DurationNs: int64(c.Duration),
		BytesAcked: c.BytesAcked, BytesReceived: c.BytesReceived, Goodput: c.Goodput(),
		SRTTNs: int64(c.SRTT), MinRTTNs: int64(c.MinRTT), Retrans: c.Retrans, SegsOut: c.SegsOut, MSS: c.MSS,
		CC: c.CC, Recommended: c.Recommended, SetFailed: c.SetFailed, Reverted: c.Reverted,
	}
	if c.RateSampled {
		v.MaxRate = c.MaxRate
	}
	return v, nil
}

func recommendTCPPinned(c *config.Config, m *config.Model, pinRoot string, rec model.Recommendation) (model.Recommendation, error) {
	tc, err := tcpConfig(c, m, pinRoot)
	if err != nil {
		return rec, err
	}
	sub, err := tcp.OpenPinned(tc) // no StateDir: the daemon's learner state is left alone
	if err != nil {
		return rec, err
	}
	defer sub.Close()
	p, err := tcp.ParsePrefix(rec.Key)
	if err != nil {
		return rec, err
	}
	if err := sub.Recommend(p, rec.Value); err != nil {
		return rec, err
	}
	rec.Key = p.String()
	return rec, nil
}

// tcpRunner runs tcp/cc with the subsystem's own loop. The records the
// loop drains are copied into portions of their own, published to the
// agents every period as a synthetic model's are; the subsystem's learner
// consumes them in-process all the same.
type tcpRunner struct {
	sub     *tcp.Subsystem
	name    string
	log     *slog.Logger
	hub     *hub
	builder *ringbuf.DatasetBuilder // only used by Run's goroutine
}

func openTCP(e *env, m *config.Model, opts model.Options) (runner, error) {
	tc, err := tcpConfig(e.cfg, m, e.cfg.PinRoot)
	if err != nil {
		return nil, err
	}
	if tc.Cgroup != "" {
		if _, err := os.Stat(tc.Cgroup); err != nil {
			return nil, e.cfg.SectionError(m, "cgroup", "%v", err)
		}
	}
	o, err := decodeTCP(e.cfg, m)
	if err != nil {
		return nil, err
	}
	pb := o.PortionBytes
	if pb == 0 {
		pb = defaultPortionBytes
	}
	b, err := ringbuf.NewDatasetBuilder(ringbuf.DatasetConfig{
		Kind: loader.RecordTCPConn, RecordSize: tcp.RecordSize, MaxBytes: pb, FirstOffset: e.firstOffset,
	})
	if err != nil {
		return nil, err
	}
	r := &tcpRunner{name: m.Name, log: e.log, hub: e.hub, builder: b}
	tc.StateDir = e.stateDir
	tc.Options = opts
	tc.Logger = e.log
	tc.Drained = r.drained
	if r.sub, err = tcp.Open(tc); err != nil {
		return nil, err
	}
	return r, nil
}

// drained copies a portion the subsystem drained into the one being
// built.
func (r *tcpRunner) drained(ds *model.Dataset) {
	for _, rec := range ds.All() {
		_ = r.builder.Add(rec)
	}
	r.builder.AddLost(ds.Lost)
}

// publish publishes the portion built since the last period, if
// anything was read or missed.
func (r *tcpRunner) publish() {
	r.hub.recycle(r.builder)
	ds, err := r.builder.Take()
	if err != nil {
		r.log.Warn("taking dataset portion", "model", r.name, "err", err)
		return
	}
	if ds.State == model.DatasetClean {
		_ = r.builder.Discard(ds)
		return
	}
	r.hub.publishModel(r.sub.Model(), ds, r.log)
}

func (r *tcpRunner) Model() *model.Model { return r.sub.Model() }
func (r *tcpRunner) Dir() string         { return r.sub.Dir() }
func (r *tcpRunner) Close() error        { return r.sub.Close() }

func (r *tcpRunner) Control() *loader.ControlMap {
	cm, _ := r.sub.Model().Store().(*loader.ControlMap)
	return cm
}

func (r *tcpRunner) Run(ctx context.Context) error {
	return r.sub.Run(ctx, func(tcp.Status) { r.publish() })
}

func (r *tcpRunner) Recommend(rec model.Recommendation, operator bool) (model.Recommendation, error) {
	if !operator {
		rec, err := r.sub.Model().PreprocessRecommendation(rec)
		if err != nil {
			return rec, err
		}
		return rec, r.sub.Model().ApplyRecommendation(rec)
	}
	p, err := tcp.ParsePrefix(rec.Key)
	if err != nil {
		return rec, err
	}
	if err := r.sub.Recommend(p, rec.Value); err != nil {
		return rec, err
	}
	rec.Key = p.String()
	rec.Generation = r.sub.Model().Control().Generation
	return rec, nil
}

func (r *tcpRunner) Stats() runnerStats {
	st := r.sub.Status()
	return runnerStats{Records: st.Records, Corrupted: st.Corrupted, Decision: st.Decision}
}

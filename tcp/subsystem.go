package tcp

import (
	"fmt"
	"os"
	"reflect"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// records is the format of tcp/cc's records.
var records = pipeline.RecordFormat{
	Kind: loader.RecordTCPConn, Size: RecordSize,
	Type: reflect.TypeFor[Record](),
	JSON: connJSON,
}

// Subsystem describes the tcp subsystem for the daemon and the CLI.
func Subsystem() *pipeline.Subsystem {
	return &pipeline.Subsystem{
		Name:           Name,
		Summary:        "TCP congestion control per destination prefix (sock_ops on a cgroup)",
		Models:         []string{ModelName},
		Needs:          pipeline.NeedCgroup2,
		Programs:       []ebpf.ProgramType{ebpf.SockOps},
		Records:        records,
		RecommendUsage: "tcp/cc PREFIX ALGORITHM (e.g. 10.0.0.0/8 bbr)",
		Config:         func() config.Section { return &Config{} },
		Open:           openLoop,
		RecommendPinned: func(sec config.Section, pinRoot, _ string, rec model.Recommendation) (model.Recommendation, error) {
			cfg := *sec.(*Config)
			cfg.PinRoot = pinRoot
			s, err := OpenPinned(cfg) // no StateDir: the daemon's learner state is left alone
			if err != nil {
				return rec, err
			}
			defer s.Close()
			p, err := ParsePrefix(rec.Key)
			if err != nil {
				return rec, err
			}
			if err := s.Recommend(p, rec.Value); err != nil {
				return rec, err
			}
			rec.Key = p.String()
			return rec, nil
		},
		Rollback: func(pinRoot, _ string) error {
			s, err := OpenPinned(Config{PinRoot: pinRoot})
			if err != nil {
				// Removing the pins detaches the pinned link all the
				// same, once nothing else holds it.
				return loader.RemovePins(loader.PinDir(pinRoot, Name, ModelName))
			}
			return s.Rollback()
		},
	}
}

// openLoop opens tcp/cc for the daemon.
func openLoop(env pipeline.Env, sec config.Section) (*pipeline.Loop, error) {
	cfg := *sec.(*Config)
	if cfg.Cgroup != "" {
		if _, err := os.Stat(cfg.Cgroup); err != nil {
			return nil, fmt.Errorf("%s: cgroup: %w", ModelPath, err)
		}
	}
	cfg.PinRoot, cfg.StateDir, cfg.Options, cfg.Logger = env.PinRoot, env.StateDir, env.Options, env.Log
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.plug(env); err != nil {
		return nil, err
	}
	return s.loop, nil
}

// RecommendOperator implements pipeline.Objects: Key is a prefix and
// Value an algorithm, already preprocessed.
func (s *Objects) RecommendOperator(rec model.Recommendation) error {
	p, err := ParsePrefix(rec.Key)
	if err != nil {
		return err
	}
	return s.Recommend(p, rec.Value)
}

// WithdrawLearned implements pipeline.Objects.
func (s *Objects) WithdrawLearned(key string) error {
	p, err := ParsePrefix(key)
	if err != nil {
		return err
	}
	return s.remove(p, false)
}

// Events is the ring buffer of connection records.
func (s *Objects) Events() *ebpf.Map { return s.objs.Events }

// Lost is the per-CPU count of records the program could not reserve.
func (s *Objects) Lost() *ebpf.Map { return s.objs.Lost }

// Control is the model's control block.
func (s *Objects) Control() *loader.ControlMap { return s.control }

// connView is a tcp/cc record as JSON.
type connView struct {
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
}

func connJSON(raw []byte) (any, error) {
	var c Conn
	if err := DecodeConn(raw, &c); err != nil {
		return nil, err
	}
	v := connView{
		Arm: c.Arm.String(), Mode: c.Mode.String(), Generation: c.Generation,
		Peer: c.Peer.String(), Port: c.Port, Passive: c.Passive, DurationNs: int64(c.Duration),
		BytesAcked: c.BytesAcked, BytesReceived: c.BytesReceived, Goodput: c.Goodput(),
		SRTTNs: int64(c.SRTT), MinRTTNs: int64(c.MinRTT), Retrans: c.Retrans, SegsOut: c.SegsOut, MSS: c.MSS,
		CC: c.CC, Recommended: c.Recommended, SetFailed: c.SetFailed,
	}
	if c.RateSampled {
		v.MaxRate = c.MaxRate
	}
	return v, nil
}

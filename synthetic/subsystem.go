package synthetic

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// Subsystem describes the synthetic subsystem for the daemon and the CLI.
func Subsystem() *pipeline.Subsystem {
	return &pipeline.Subsystem{
		Name:    Name,
		Summary: "the RFC's test device: answers a key, by default key % 64; live on raw_syscalls:sys_enter",
		Records: pipeline.RecordFormat{
			Kind: loader.RecordSynthetic, Size: RecordSize,
			Type: reflect.TypeFor[Record](),
			JSON: recordJSON,
		},
		Programs:        []ebpf.ProgramType{ebpf.RawTracepoint},
		RecommendUsage:  "synthetic/demo KEY VALUE (e.g. 5 42: answer key 5 with 42)",
		Config:          func() config.Section { return &Config{} },
		Open:            openLoop,
		RecommendPinned: recommendPinned,
	}
}

// openLoop opens a synthetic model live, for the daemon: the applier on
// every system call (but the daemon's own, unless the configuration gives
// a PID), its records to the built-in learner.
func openLoop(env pipeline.Env, sec config.Section) (*pipeline.Loop, error) {
	cfg := *sec.(*Config)
	cfg.PinRoot, cfg.Model, cfg.Live = env.PinRoot, env.Model, true
	if cfg.FilterTgid == 0 {
		// The daemon's own system calls would feed the ring it drains.
		cfg.ExcludeTgid = uint32(os.Getpid())
	}
	s, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	l := &learner{l: Learner{Adversarial: cfg.Adversarial}}
	// Keys already in the map (an operator's, or learned before a
	// restart) are known: the learner leaves them alone.
	var k uint32
	var v [8]byte
	for it := s.objs.Recommend.Iterate(); it.Next(&k, &v); {
		l.l.Observe(k)
	}
	return pipeline.New(env, pipeline.Parts[Record]{
		Subsystem: Name, Objects: s, Records: Subsystem().Records,
		Decode: DecodeRecord, Learner: l, PortionBytes: cfg.PortionBytes,
	})
}

// learner is the built-in learner: it knows the device's objective, so
// every decision's outcome is its reward, and a shadow decision's also
// says what the recommendation would have earned.
type learner struct {
	l Learner
}

func (l *learner) Learn(recs []Record, out *pipeline.Result) {
	for i := range recs {
		r := &recs[i]
		key := strconv.FormatUint(uint64(r.Key), 10)
		arm := model.Arm(r.Hdr.Arm)
		fb := model.Feedback{Arm: arm, Reward: Reward(r.Key, r.Applied), Key: key,
			Value: strconv.FormatUint(uint64(r.Applied), 10), Mode: model.Mode(r.Hdr.Mode), Generation: r.Hdr.Generation}
		switch arm {
		case model.ArmShadow:
			fb.Predicted, fb.HasPrediction = Reward(r.Key, r.Recommended), true
			out.Feedback = append(out.Feedback, fb)
		case model.ArmModel, model.ArmControl:
			out.Feedback = append(out.Feedback, fb)
		}
		// Other arms: the model could not act, nothing to learn.
		if v, isNew := l.l.Observe(r.Key); isNew {
			out.Recommend = append(out.Recommend, model.Recommendation{Key: key, Value: strconv.FormatUint(uint64(v), 10)})
		}
	}
}

// RecommendOperator implements pipeline.Objects.
func (s *Objects) RecommendOperator(rec model.Recommendation) error {
	k, v, err := s.ParseRecommendation(rec.Key, rec.Value)
	if err != nil {
		return err
	}
	return s.Recommend(k, v, rec.Generation)
}

// WithdrawLearned implements pipeline.Objects.
func (s *Objects) WithdrawLearned(key string) error {
	k, err := strconv.ParseUint(key, 10, 32)
	if err != nil {
		return fmt.Errorf("%w: key %q: want an unsigned 32-bit integer", model.ErrInvalidRecommendation, key)
	}
	return s.Forget(uint32(k))
}

func recommendPinned(sec config.Section, pinRoot, modelName string, rec model.Recommendation) (model.Recommendation, error) {
	cfg := *sec.(*Config)
	cfg.PinRoot, cfg.Model = pinRoot, modelName
	dir := loader.PinDir(pinRoot, Name, modelName)
	if _, err := os.Stat(filepath.Join(dir, "recommend")); err != nil {
		return rec, fmt.Errorf("%s/%s: no pinned maps under %s (start the model once with 'mlbpf run')", Name, modelName, dir)
	}
	s, err := Open(cfg)
	if err != nil {
		return rec, err
	}
	defer s.Close()
	k, v, err := s.ParseRecommendation(rec.Key, rec.Value)
	if err != nil {
		return rec, err
	}
	pm, err := loader.ReadPinned(pinRoot, Name, modelName)
	if err != nil {
		return rec, err
	}
	rec = model.Recommendation{Key: strconv.FormatUint(uint64(k), 10), Value: strconv.FormatUint(uint64(v), 10), Generation: pm.Control.Generation}
	return rec, s.Recommend(k, v, rec.Generation)
}

// recordJSON is a record as JSON.
type recordJSONView struct {
	TsNs         uint64 `json:"ts_ns"`
	Arm          string `json:"arm"`
	Mode         string `json:"mode"`
	Generation   uint32 `json:"generation"`
	CPU          uint32 `json:"cpu"`
	Key          uint32 `json:"key"`
	DefaultValue uint32 `json:"default_value"`
	Recommended  uint32 `json:"recommended"`
	Applied      uint32 `json:"applied"`
}

func recordJSON(raw []byte) (any, error) {
	var r Record
	if err := DecodeRecord(raw, &r); err != nil {
		return nil, err
	}
	return recordJSONView{
		TsNs: r.Hdr.TsNs, Arm: model.Arm(r.Hdr.Arm).String(), Mode: model.Mode(r.Hdr.Mode).String(),
		Generation: r.Hdr.Generation, CPU: r.Hdr.Cpu,
		Key: r.Key, DefaultValue: r.DefaultValue, Recommended: r.Recommended, Applied: r.Applied,
	}, nil
}

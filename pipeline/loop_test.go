package pipeline_test

import (
	"encoding/binary"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/history"
	"github.com/mlbpf/mlbpf/internal/ringbench"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

const (
	recordSize = 64
	kind       = 7
)

// seqLearner recommends, for key seq%3, the sequence number, and feeds
// back one SHADOW outcome per record.
type seqLearner struct{ records int }

func (l *seqLearner) Learn(seqs []uint64, out *pipeline.Result) {
	for _, seq := range seqs {
		l.records++
		key := strconv.FormatUint(seq%3, 10)
		out.Recommend = append(out.Recommend, model.Recommendation{Key: key, Value: strconv.FormatUint(seq, 10)})
		out.Feedback = append(out.Feedback, model.Feedback{Arm: model.ArmShadow, Reward: 1, Key: key, Mode: model.ModeLearning})
	}
}

func decodeSeq(raw []byte, seq *uint64) error {
	*seq = binary.NativeEndian.Uint64(raw[loader.RecordHeaderSize:])
	return nil
}

type harness struct {
	t       *testing.T
	p       *ringbench.Producer
	objs    *ringbench.ModelObjects
	learner *seqLearner
	loop    *pipeline.Loop
	next    uint64
	state   string // the model's state directory
}

func newHarness(t *testing.T, ringBytes uint32, external bool) *harness {
	return newHarnessWith(t, ringBytes, external, 0, nil)
}

// newHarnessWith is newHarness with portions of portionBytes (0: the
// default) published to pub (nil: none).
func newHarnessWith(t *testing.T, ringBytes uint32, external bool, portionBytes int, pub pipeline.Publisher) *harness {
	testutil.RequireBPF(t)
	p, err := ringbench.NewProducer(ringbench.Config{RingBytes: ringBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	objs, err := p.ModelObjects()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, p: p, objs: objs, learner: &seqLearner{}, state: t.TempDir()}
	h.loop, err = pipeline.New(pipeline.Env{Model: "test", External: external, StateDir: h.state, Publisher: pub,
		Options: model.Options{SleepTimeout: time.Second, MaxMode: model.ModeLearning}},
		pipeline.Parts[uint64]{Subsystem: "ringbench", Objects: objs,
			Records: pipeline.RecordFormat{Kind: kind, Size: recordSize}, Decode: decodeSeq, Learner: h.learner,
			PortionBytes: portionBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.loop.Close() })
	if err := h.loop.Model().Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) emit(n uint64) {
	h.t.Helper()
	if _, err := h.p.Emit(ringbench.EmitArgs{Count: n, Size: recordSize, Kind: kind, FirstSeq: h.next}); err != nil {
		h.t.Fatal(err)
	}
	h.next += n
}

func (h *harness) period() {
	h.t.Helper()
	if err := h.loop.Period(); err != nil {
		h.t.Fatal(err)
	}
}

// TestLoop runs periods: every record decoded once and learned from, the
// learner's recommendations applied but never over an operator's, the
// outcomes fed back per arm, the kernel's losses counted once.
func TestLoop(t *testing.T) {
	page := os.Getpagesize()
	h := newHarness(t, uint32(page), false)
	h.emit(9)
	h.period()
	if st := h.loop.Stats(); st.Records != 9 || st.Lost != 0 || h.learner.records != 9 {
		t.Fatalf("after 9 records: %+v, learner %d", st, h.learner.records)
	}
	if got := h.objs.Applied(); got["0"] != "6" || got["1"] != "7" || got["2"] != "8" {
		t.Fatalf("applied %v, want the last seq per key", got)
	}
	fb := h.loop.TakeFeedback()
	if fb == nil || fb.Outcomes != 9 || fb.Arms[model.ArmShadow.String()].N != 9 {
		t.Fatalf("feedback %+v, want 9 SHADOW outcomes", fb)
	}

	// An operator's key is the operator's.
	if _, err := h.loop.Recommend(model.Recommendation{Key: " 0 ", Value: "op"}, true); err != nil {
		t.Fatal(err)
	}
	h.emit(3)
	h.period()
	if got := h.objs.Applied(); got["0"] != "op" || got["1"] != "10" {
		t.Fatalf("applied %v after an operator's recommendation for key 0", got)
	}

	// The kernel loses records once: the loss is counted in that
	// period's portion, not again.
	fits := uint64(page-8) / (recordSize + 8)
	h.emit(fits + 5)
	h.period()
	if st := h.loop.Stats(); st.Lost != 5 || st.Partial != 1 {
		t.Fatalf("after losing 5: %+v", st)
	}
	h.emit(2)
	h.period()
	if st := h.loop.Stats(); st.Lost != 5 || st.Partial != 1 || st.Records != 12+fits+2 {
		t.Fatalf("after the loss: %+v, want 5 lost in 1 partial portion, %d records", st, 12+fits+2)
	}
}

// TestLoopLostOncePerPeriod: a period of many portions counts the
// kernel's losses once, in its first portion; the others are complete.
func TestLoopLostOncePerPeriod(t *testing.T) {
	page := os.Getpagesize()
	const perPortion = 3
	pub := &portions{}
	h := newHarnessWith(t, uint32(page), false, perPortion*recordSize, pub)
	fits := uint64(page-8) / (recordSize + 8)
	h.emit(fits + 5)
	h.period()
	st := h.loop.Stats()
	if st.Lost != 5 || st.Partial != 1 || st.Records != fits || h.learner.records != int(fits) {
		t.Fatalf("after losing 5 of %d: %+v, learner %d; want 5 lost in 1 partial portion, %d records", fits+5, st, h.learner.records, fits)
	}
	want := (fits + perPortion - 1) / perPortion
	if uint64(len(pub.got)) != want {
		t.Fatalf("%d portions published, want %d", len(pub.got), want)
	}
	for i, p := range pub.got {
		if wantLost := map[bool]uint64{true: 5}[i == 0]; p.lost != wantLost {
			t.Errorf("portion %d (%d records, %s): %d lost, want %d", i, p.size, p.state, p.lost, wantLost)
		}
	}
}

// portions is a Publisher that notes what it is given and gives nothing
// back.
type portions struct{ got []published }

type published struct {
	size  uint32
	lost  uint64
	state model.DatasetState
}

func (p *portions) Publish(_ *model.Model, ds *model.Dataset) {
	p.got = append(p.got, published{ds.PortionSize, ds.Lost, ds.State})
}

func (p *portions) Free() *model.Dataset { return nil }

// TestLoopExternal: with learner: external the built-in learner learns
// and its outcomes are fed back, but only agents recommend.
func TestLoopExternal(t *testing.T) {
	h := newHarness(t, uint32(os.Getpagesize()), true)
	h.emit(4)
	h.period()
	if got := h.objs.Applied(); len(got) != 0 {
		t.Fatalf("the built-in learner's recommendations were applied: %v", got)
	}
	if fb := h.loop.TakeFeedback(); fb == nil || fb.Outcomes != 4 {
		t.Fatalf("feedback %+v, want 4 outcomes", fb)
	}
	if _, err := h.loop.Recommend(model.Recommendation{Key: "1", Value: "2"}, false); err != nil {
		t.Fatal(err)
	}
	if got := h.objs.Applied(); got["1"] != "2" {
		t.Fatalf("an agent's recommendation was not applied: %v", got)
	}
}

// TestHistory: every period leaves a line in the model's history, with
// the outcomes fed back during it, the mode and the decision (the keys
// are checked on a real subsystem, in cmd/mlbpf's report test).
func TestHistory(t *testing.T) {
	h := newHarness(t, uint32(os.Getpagesize()), false)
	h.emit(9)
	h.period()
	h.period() // nothing new
	h.emit(3)
	h.period()
	hist, err := history.Read(history.Dir(h.state), "ringbench/test")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.Periods) != 3 || len(hist.Damaged) != 0 {
		t.Fatalf("%d periods (damaged %v), want 3", len(hist.Periods), hist.Damaged)
	}
	for i, want := range []int{9, 0, 3} {
		p := hist.Periods[i]
		got := 0
		for _, a := range p.Arms {
			if a.Arm == model.ArmShadow.String() {
				got = a.N
			}
		}
		if got != want || int(p.Records) != want || p.Mode != "LEARNING" || p.Decision.Reason == "" {
			t.Fatalf("period %d: %+v, want %d shadow outcomes and records, LEARNING, a reason", i, p, want)
		}
	}
	if hist.Keys != nil {
		t.Fatalf("keys %+v from objects that do not list them", hist.Keys)
	}
}

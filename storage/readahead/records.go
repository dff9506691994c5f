package readahead

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/mlbpf/mlbpf/model"
)

// Record is struct ra_window: one watched device over one window, as the
// collector writes it into the model's ring.
type Record = readaheadRaWindow

// RecordSize is the size in bytes of a Record in the ring buffer.
const RecordSize = int(unsafe.Sizeof(Record{}))

// RecordKind is the record kind of Record (hdr.kind).
const RecordKind = uint16(readaheadRaRecordKindRA_RECORD_KIND)

// ErrBadRecord is wrapped by Decode's errors.
var ErrBadRecord = errors.New("bad readahead window record")

// Decode decodes one ring buffer record into w, refusing anything that is
// not an ra_window of the right size.
func Decode(b []byte, w *Window) error {
	if len(b) != RecordSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadRecord, len(b), RecordSize)
	}
	r := (*Record)(unsafe.Pointer(&b[0]))
	if r.Hdr.Kind != RecordKind || int(r.Hdr.Size) != RecordSize {
		return fmt.Errorf("%w: kind %d size %d, want kind %d size %d", ErrBadRecord, r.Hdr.Kind, r.Hdr.Size, RecordKind, RecordSize)
	}
	*w = Window{Record: *r, Arm: model.Arm(r.Hdr.Arm), Mode: model.Mode(r.Hdr.Mode)}
	return nil
}

// Window is a decoded Record with its features.
type Window struct {
	Record
	Arm  model.Arm
	Mode model.Mode
}

// Duration is the window's length.
func (w *Window) Duration() time.Duration { return time.Duration(w.WindowNs) }

// Device returns the window's device as "major:minor".
func (w *Window) Device() string { return fmt.Sprintf("%d:%d", w.Dev>>20, w.Dev&(1<<20-1)) }

// Throughput is the bytes the workload asked for per second of window:
// the model's reward.
func (w *Window) Throughput() float64 {
	if w.WindowNs == 0 {
		return 0
	}
	return float64(w.AskedBytes) / time.Duration(w.WindowNs).Seconds()
}

// SeqShare is the share of read requests that started where the
// device's previous one ended.
func (w *Window) SeqShare() float64 { return ratio(w.RqSeq, w.RqIssued) }

// FaultShare is the share of page faults among the workload's accesses
// (read calls and faults).
func (w *Window) FaultShare() float64 { return ratio(w.Faults, w.Faults+w.Reads) }

// Amplification is the bytes read from the device per byte asked for.
func (w *Window) Amplification() float64 { return ratio(w.RqBytes, w.AskedBytes) }

// MeanLatency is the mean issue-to-complete time of a read request.
func (w *Window) MeanLatency() time.Duration {
	if w.RqCompleted == 0 {
		return 0
	}
	return time.Duration(w.LatNs / w.RqCompleted)
}

// MeanRequestKB is the mean size of a read request in KiB.
func (w *Window) MeanRequestKB() float64 { return ratio(w.RqBytes, w.RqIssued) / 1024 }

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Phase is a kind of workload the model recognises from a window's
// features; the model learns one setting per device and phase.
type Phase uint8

// The phases.
const (
	PhaseIdle       Phase = iota // too little I/O to tell
	PhaseSequential              // reads that follow each other
	PhaseRandom                  // reads at random offsets
	PhaseMmap                    // page faults in mappings
	phaseCount
)

var phaseNames = [...]string{"idle", "sequential", "random", "mmap"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// Phases lists the phases with a learned setting.
var Phases = []Phase{PhaseSequential, PhaseRandom, PhaseMmap}

// Classify tells a window's phase from its features. Faults, where the
// kernel reports them (mm_filemap_fault), make it mmap; otherwise the
// share of sequential device requests decides.
func (w *Window) Classify() Phase {
	if w.RqIssued < 2 && w.Reads+w.Faults < 4 {
		return PhaseIdle
	}
	if w.FaultShare() > 0.5 || (w.Reads+w.Faults == 0 && ratio(w.MmapRa, w.SyncRa+w.AsyncRa) > 0.5) {
		return PhaseMmap
	}
	if w.SeqShare() >= 0.5 || ratio(w.AsyncRa, w.SyncRa+w.AsyncRa) >= 0.3 {
		return PhaseSequential
	}
	return PhaseRandom
}

package ringbench

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// EmitArgs is struct ringbench_emit_args: what one run of the test
// producer emits.
type EmitArgs = ringbenchRingbenchEmitArgs

// TestRecord is struct ringbench_test_record, the first bytes of a record
// the test producer emits.
type TestRecord = ringbenchRingbenchTestRecord

// Config says how to load the producer.
type Config struct {
	// RingBytes is the size of the "events" ring buffer: a power of two,
	// a multiple of the page size. 0 keeps the object's 4 MiB.
	RingBytes uint32
	// SampleSize is the size of a benchmark record in bytes, at least 8.
	// 0 keeps the object's 64.
	SampleSize uint32
}

// Producer is the loaded ringbuf_bench.bpf.c object.
type Producer struct {
	objs ringbenchObjects
	tp   link.Link
	base link.Link
}

// NewProducer loads the producer. The benchmark producer only reacts to
// getppid(2) calls of the calling process, once attached.
func NewProducer(cfg Config) (*Producer, error) {
	spec, err := loadRingbench()
	if err != nil {
		return nil, fmt.Errorf("loading ringbench spec: %w", err)
	}
	if cfg.RingBytes != 0 {
		spec.Maps[ringbenchMapEvents].MaxEntries = cfg.RingBytes
	}
	if cfg.SampleSize != 0 {
		if cfg.SampleSize < 8 {
			return nil, fmt.Errorf("sample size %d: want at least 8 bytes", cfg.SampleSize)
		}
		if err := spec.Variables[ringbenchVarSampleSize].Set(cfg.SampleSize); err != nil {
			return nil, fmt.Errorf("setting sample size: %w", err)
		}
	}
	if err := spec.Variables[ringbenchVarTargetTgid].Set(uint32(os.Getpid())); err != nil {
		return nil, fmt.Errorf("setting target tgid: %w", err)
	}
	p := &Producer{}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading ringbench objects: %+v", ve)
		}
		return nil, fmt.Errorf("loading ringbench objects: %w", err)
	}
	return p, nil
}

// Close detaches and unloads the producer.
func (p *Producer) Close() error {
	var errs []error
	if p.tp != nil {
		errs = append(errs, p.tp.Close())
	}
	if p.base != nil {
		errs = append(errs, p.base.Close())
	}
	errs = append(errs, p.objs.Close())
	return errors.Join(errs...)
}

// Events is the ring buffer the producer writes.
func (p *Producer) Events() *ebpf.Map { return p.objs.Events }

// Lost is the per-CPU count of failed reservations.
func (p *Producer) Lost() *ebpf.Map { return p.objs.Lost }

// Emit runs the test producer once (BPF_PROG_TEST_RUN) and returns the
// number of loop iterations it ran.
func (p *Producer) Emit(args EmitArgs) (int, error) {
	ret, err := p.objs.RingbenchEmit.Run(&ebpf.RunOptions{Context: args})
	if err != nil {
		return 0, fmt.Errorf("running ringbench_emit: %w", err)
	}
	if int32(ret) < 0 {
		return 0, fmt.Errorf("ringbench_emit refused %+v", args)
	}
	return int(ret), nil
}

// EmitProgram is the test producer (raw_tp), for its run statistics.
func (p *Producer) EmitProgram() *ebpf.Program { return p.objs.RingbenchEmit }

// ProduceProgram is the benchmark producer (tracepoint), for its run
// statistics.
func (p *Producer) ProduceProgram() *ebpf.Program { return p.objs.RingbenchProduce }

// Attach attaches the benchmark producer to syscalls:sys_enter_getppid.
func (p *Producer) Attach() error {
	if p.tp != nil {
		return nil
	}
	tp, err := link.Tracepoint("syscalls", "sys_enter_getppid", p.objs.RingbenchProduce, nil)
	if err != nil {
		return fmt.Errorf("attaching to tracepoint syscalls:sys_enter_getppid (is tracefs mounted? mount -t tracefs tracefs /sys/kernel/tracing): %w", err)
	}
	base, err := link.Tracepoint("syscalls", "sys_enter_getppid", p.objs.RingbenchBaseline, nil)
	if err != nil {
		tp.Close()
		return fmt.Errorf("attaching the baseline to tracepoint syscalls:sys_enter_getppid: %w", err)
	}
	p.tp, p.base = tp, base
	return nil
}

// BaselineProgram runs on the same tracepoint as the producer and only
// makes its tgid check: the hook's and the run time stats' own cost.
func (p *Producer) BaselineProgram() *ebpf.Program { return p.objs.RingbenchBaseline }

// SetSamplesPerTrigger sets how many records one getppid(2) call emits.
func (p *Producer) SetSamplesPerTrigger(n uint32) error {
	if err := p.objs.SamplesPerTrigger.Set(n); err != nil {
		return fmt.Errorf("setting samples per trigger: %w", err)
	}
	return nil
}

// NextSeq is the sequence number the benchmark producer gives its next
// record: the number of records it reserved so far.
func (p *Producer) NextSeq() (uint64, error) {
	var n uint64
	if err := p.objs.NextSeq.Get(&n); err != nil {
		return 0, fmt.Errorf("reading next_seq: %w", err)
	}
	return n, nil
}

// Trigger calls getppid(2) n times: with the producer attached, each call
// emits the configured number of records.
func Trigger(n int) {
	for range n {
		unix.Getppid()
	}
}

// Produce has the attached benchmark producer emit n records, from the
// calling thread, in getppid(2) calls of up to 1000 records each.
func (p *Producer) Produce(n int) error {
	const perCall = 1000
	if n >= perCall {
		if err := p.SetSamplesPerTrigger(perCall); err != nil {
			return err
		}
		Trigger(n / perCall)
	}
	if rest := n % perCall; rest > 0 {
		if err := p.SetSamplesPerTrigger(uint32(rest)); err != nil {
			return err
		}
		Trigger(1)
	}
	return nil
}

package model

import (
	"fmt"
	"sync"
)

// Control is the kernel-visible control block of a model (struct
// mlbpf_control): the one entry of the model's pinned "control" array map,
// read by the appliers at every invocation. Package loader converts it to
// and from the bpf2go-generated type.
type Control struct {
	Mode  Mode
	State State
	// LeaseExpiresNs is the CLOCK_MONOTONIC time (bpf_ktime_get_ns) after
	// which the appliers fall back to the default. Zero: no lease.
	LeaseExpiresNs  uint64
	CollabPermille  uint32
	HoldoutPermille uint32
	// Generation is bumped at every change other than a lease renewal and
	// copied into outcome records, so that outcomes can be matched to the
	// decision in force. Zero means never written.
	Generation uint32
	// Flags is reserved; zero.
	Flags uint32
}

// String formats the control block for logs.
func (c Control) String() string {
	return fmt.Sprintf("{state %v mode %v lease %d collab %d‰ holdout %d‰ gen %d}",
		c.State, c.Mode, c.LeaseExpiresNs, c.CollabPermille, c.HoldoutPermille, c.Generation)
}

// sameButLease reports whether a and b differ at most in their lease and
// generation.
func sameButLease(a, b Control) bool {
	a.LeaseExpiresNs, b.LeaseExpiresNs = 0, 0
	a.Generation, b.Generation = 0, 0
	return a == b
}

// nextGeneration returns the generation after g, skipping zero.
func nextGeneration(g uint32) uint32 {
	if g+1 == 0 {
		return 1
	}
	return g + 1
}

// ControlStore reads and writes a model's control block. Package loader
// implements it over the pinned BPF array map; MemoryControlStore is for
// tests.
type ControlStore interface {
	LoadControl() (Control, error)
	StoreControl(Control) error
}

// MemoryControlStore is an in-memory ControlStore that records every write
// and can be made to fail. The zero value is ready to use and safe for
// concurrent use.
type MemoryControlStore struct {
	mu        sync.Mutex
	current   Control
	history   []Control
	loadErr   error
	storeErr  error
	failAfter int // stores that still succeed before storeErr applies
}

// LoadControl returns the last control block stored.
func (s *MemoryControlStore) LoadControl() (Control, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return Control{}, s.loadErr
	}
	return s.current, nil
}

// StoreControl stores c, unless a failure was injected.
func (s *MemoryControlStore) StoreControl(c Control) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.storeErr != nil {
		if s.failAfter == 0 {
			return s.storeErr
		}
		s.failAfter--
	}
	s.current = c
	s.history = append(s.history, c)
	return nil
}

// FailLoads makes LoadControl return err; nil restores it.
func (s *MemoryControlStore) FailLoads(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadErr = err
}

// FailStores makes StoreControl return err; nil restores it.
func (s *MemoryControlStore) FailStores(err error) {
	s.FailStoresAfter(0, err)
}

// FailStoresAfter lets n more stores succeed, then makes StoreControl
// return err; a nil err restores it.
func (s *MemoryControlStore) FailStoresAfter(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeErr, s.failAfter = err, max(n, 0)
}

// Current returns the last control block stored (as LoadControl, without
// injected failures).
func (s *MemoryControlStore) Current() Control {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// History returns every control block stored, oldest first.
func (s *MemoryControlStore) History() []Control {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Control(nil), s.history...)
}

// Set replaces the stored control block without recording a write, as
// another writer (or a tampered map) would.
func (s *MemoryControlStore) Set(c Control) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = c
}

package model

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// datasetIn returns an 8-byte STRUCTURE dataset of capacity 4 in state s,
// with one record when s has data.
func datasetIn(t *testing.T, s DatasetState) *Dataset {
	t.Helper()
	d := new(Dataset)
	if s == DatasetStateUnknown {
		return d
	}
	mustDo(t, d.Allocate(DatasetStructure, 8, 4))
	path := map[DatasetState][]func() error{
		DatasetAllocated:           nil,
		DatasetClean:               {d.MarkClean},
		DatasetExtractedPartially:  {d.MarkClean, appendOne(d), func() error { return d.Extracted(true) }},
		DatasetExtractedCompletely: {d.MarkClean, appendOne(d), func() error { return d.Extracted(false) }},
		DatasetObsolete:            {d.MarkClean, appendOne(d), func() error { return d.Extracted(false) }, d.Discard},
		DatasetExtractionFailure:   {d.MarkClean, d.Fail},
		DatasetCorrupted:           {d.MarkClean, appendOne(d), func() error { return d.Extracted(false) }, d.Corrupt},
	}
	for _, step := range path[s] {
		mustDo(t, step())
	}
	if d.State != s {
		t.Fatalf("dataset is %v, want %v", d.State, s)
	}
	return d
}

func appendOne(d *Dataset) func() error {
	return func() error { return d.Append([]byte("record-1")) }
}

func TestDatasetEveryTransition(t *testing.T) {
	methods := []struct {
		name   string
		call   func(*Dataset) error
		target DatasetState
	}{
		{"Allocate", func(d *Dataset) error { return d.Allocate(DatasetStructure, 8, 4) }, DatasetAllocated},
		{"MarkClean", (*Dataset).MarkClean, DatasetClean},
		{"Extracted(partial)", func(d *Dataset) error { return d.Extracted(true) }, DatasetExtractedPartially},
		{"Extracted(complete)", func(d *Dataset) error { return d.Extracted(false) }, DatasetExtractedCompletely},
		{"Discard", (*Dataset).Discard, DatasetObsolete},
		{"Fail", (*Dataset).Fail, DatasetExtractionFailure},
		{"Corrupt", (*Dataset).Corrupt, DatasetCorrupted},
	}
	// legal[from] lists the targets reachable from each state, written out
	// independently of the implementation's table.
	legal := map[DatasetState][]DatasetState{
		DatasetStateUnknown:        {DatasetAllocated},
		DatasetAllocated:           {DatasetClean, DatasetObsolete},
		DatasetClean:               {DatasetExtractedPartially, DatasetExtractedCompletely, DatasetExtractionFailure, DatasetObsolete},
		DatasetExtractedPartially:  {DatasetExtractedPartially, DatasetExtractedCompletely, DatasetExtractionFailure, DatasetCorrupted, DatasetObsolete},
		DatasetExtractedCompletely: {DatasetCorrupted, DatasetObsolete},
		DatasetObsolete:            {DatasetAllocated, DatasetClean},
		DatasetExtractionFailure:   {DatasetObsolete},
		DatasetCorrupted:           {DatasetObsolete},
	}
	for from := DatasetStateUnknown; from <= DatasetCorrupted; from++ {
		for _, m := range methods {
			t.Run(fmt.Sprintf("%v/%s", from, m.name), func(t *testing.T) {
				d := datasetIn(t, from)
				before := *d
				err := m.call(d)
				ok := false
				for _, to := range legal[from] {
					ok = ok || to == m.target
				}
				if from.CanTransition(m.target) != ok {
					t.Errorf("CanTransition(%v) = %v", m.target, !ok)
				}
				if ok {
					if err != nil || d.State != m.target {
						t.Errorf("%s from %v: %v, state %v", m.name, from, err, d.State)
					}
					return
				}
				if !errors.Is(err, ErrIllegalTransition) {
					t.Fatalf("%s from %v = %v, want ErrIllegalTransition", m.name, from, err)
				}
				if !strings.Contains(err.Error(), from.String()) || !strings.Contains(err.Error(), m.target.String()) {
					t.Errorf("error %q does not name both states", err)
				}
				if d.State != before.State || d.PortionOffset != before.PortionOffset || d.PortionSize != before.PortionSize || !bytes.Equal(d.Data, before.Data) {
					t.Errorf("illegal %s changed the dataset: %+v", m.name, d)
				}
			})
		}
	}
}

func TestDatasetLayout(t *testing.T) {
	for _, c := range []struct {
		typ             DatasetType
		size, capacity  int
		ok              bool
		allocated, recs int
	}{
		{DatasetEmpty, 0, 0, true, 0, 0},
		{DatasetEmpty, 8, 1, false, 0, 0},
		{DatasetValue, 8, 10, true, 80, 10},
		{DatasetValue, 9, 10, false, 0, 0},
		{DatasetValue, 0, 10, false, 0, 0},
		{DatasetStructure, 48, 100, true, 4800, 100},
		{DatasetStructure, 48, 0, false, 0, 0},
		{DatasetStructure, -1, 10, false, 0, 0},
		{DatasetMemoryStream, 1, 4096, true, 4096, 4096},
		{DatasetMemoryStream, 2, 4096, false, 0, 0},
		{DatasetUnknown, 8, 8, false, 0, 0},
		{DatasetType(9), 8, 8, false, 0, 0},
		{DatasetStructure, 1 << 20, 1 << 20, false, 0, 0},
	} {
		d, err := NewDataset(c.typ, c.size, c.capacity)
		if !c.ok {
			if !errors.Is(err, ErrInvalidDataset) {
				t.Errorf("NewDataset(%v, %d, %d) = %v, want ErrInvalidDataset", c.typ, c.size, c.capacity, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewDataset(%v, %d, %d): %v", c.typ, c.size, c.capacity, err)
			continue
		}
		if d.State != DatasetAllocated || d.AllocatedSize != c.allocated || d.Capacity() != c.recs || cap(d.Data) < c.allocated {
			t.Errorf("NewDataset(%v, %d, %d) = %+v", c.typ, c.size, c.capacity, d)
		}
	}
}

func TestDatasetRecords(t *testing.T) {
	d, err := NewDataset(DatasetStructure, 4, 3)
	mustDo(t, err)
	if err := d.Append([]byte("abcd")); !errors.Is(err, ErrInvalidState) {
		t.Errorf("Append before MarkClean: %v", err)
	}
	mustDo(t, d.MarkClean())
	mustDo(t, d.Append([]byte("abcd")))
	if err := d.Append([]byte("abc")); !errors.Is(err, ErrInvalidDataset) {
		t.Errorf("short record: %v", err)
	}
	rec, err := d.Reserve()
	mustDo(t, err)
	copy(rec, "efgh")
	mustDo(t, d.Extracted(true))
	mustDo(t, d.Append([]byte("ijkl")))
	if !d.Full() {
		t.Error("not full at capacity")
	}
	if err := d.Append([]byte("mnop")); !errors.Is(err, ErrDatasetFull) {
		t.Errorf("append beyond capacity: %v", err)
	}
	if _, err := d.Reserve(); !errors.Is(err, ErrDatasetFull) {
		t.Errorf("reserve beyond capacity: %v", err)
	}
	mustDo(t, d.Extracted(false))
	mustDo(t, d.Check())
	var got []string
	for i, r := range d.All() {
		got = append(got, fmt.Sprintf("%d:%s", i, r))
	}
	if s := strings.Join(got, " "); s != "0:abcd 1:efgh 2:ijkl" {
		t.Errorf("records %s", s)
	}
	if string(d.Record(1)) != "efgh" || d.Len() != 3 || d.NextOffset() != 3 {
		t.Errorf("Record(1)=%q Len=%d Next=%d", d.Record(1), d.Len(), d.NextOffset())
	}
	// Record does not let an append overwrite the next record.
	if r := d.Record(0); cap(r) != 4 {
		t.Errorf("Record cap %d, want 4", cap(r))
	}
	for range d.All() {
		break // early stop is honoured
	}

	// The next portion continues the stream.
	mustDo(t, d.Discard())
	d.Lost, d.Corrupted = 5, 1
	mustDo(t, d.MarkClean())
	if d.PortionOffset != 3 || d.PortionSize != 0 || len(d.Data) != 0 || d.Lost != 0 || d.Corrupted != 0 {
		t.Errorf("next portion %+v", d)
	}
	mustDo(t, d.Append([]byte("qrst")))
	for i := range d.All() {
		if i != 3 {
			t.Errorf("stream index %d, want 3", i)
		}
	}
	// Reallocating keeps the stream position.
	mustDo(t, d.Discard())
	mustDo(t, d.Allocate(DatasetStructure, 8, 2))
	if d.PortionOffset != 4 || d.Capacity() != 2 {
		t.Errorf("reallocated %+v", d)
	}
}

func TestDatasetCheck(t *testing.T) {
	d := datasetIn(t, DatasetExtractedCompletely)
	mustDo(t, d.Check())
	d.Data = d.Data[:5]
	if err := d.Check(); !errors.Is(err, ErrCorruptedDataset) {
		t.Errorf("short data: %v", err)
	}
	d = datasetIn(t, DatasetExtractedCompletely)
	d.PortionSize = 9
	if err := d.Check(); !errors.Is(err, ErrCorruptedDataset) {
		t.Errorf("size beyond data: %v", err)
	}
	d = &Dataset{PortionSize: 1}
	if err := d.Check(); !errors.Is(err, ErrCorruptedDataset) {
		t.Errorf("records of size 0: %v", err)
	}
	d = &Dataset{RecordSize: 1, PortionSize: 2, Data: []byte{1, 2}, AllocatedSize: 1}
	if err := d.Check(); !errors.Is(err, ErrCorruptedDataset) {
		t.Errorf("beyond allocation: %v", err)
	}
}

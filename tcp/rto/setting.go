package rto

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/model"
)

// Setting is struct tcp_rto_setting: one arm of the grid. A zero field
// keeps the kernel's default for its knob.
type Setting = tcprtoTcpRtoSetting

// Default is the kernel's defaults: the fallback arm.
var Default = Setting{}

// Kernel defaults, for display.
const (
	DefaultSynRTO    = time.Second
	DefaultRTOMin    = 200 * time.Millisecond
	DefaultDelackMax = 200 * time.Millisecond // TCP_DELACK_MAX; 40 ms is TCP_DELACK_MIN
	DefaultIW        = 10
)

// Grid is the ordered grid the learner explores, from the default to the
// most aggressive. Measured on the testbed (see the README), the SYN
// timeout and the RTO floor matter for short flows on a lossy path; the
// delayed-ACK ceiling of the sender and the initial window did not (see
// README), so the grid leaves them at their defaults.
var Grid = []Setting{
	Default,
	{SynRtoMs: 200, RtoMinMs: 50},
	{SynRtoMs: 50, RtoMinMs: 20},
	{SynRtoMs: 20, RtoMinMs: 8},
}

// GridIndex returns the position of s in Grid, or -1.
func GridIndex(s Setting) int {
	for i, g := range Grid {
		if g == s {
			return i
		}
	}
	return -1
}

// String names a setting: "default", or its non-default knobs
// ("syn=20ms,rto_min=8ms"), the syntax ParseSetting reads.
func (s Setting) String() string {
	if s == Default {
		return "default"
	}
	var parts []string
	for _, k := range knobs {
		if v := *k.field(&s); v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d%s", k.name, v, k.unit))
		}
	}
	return strings.Join(parts, ",")
}

// MarshalText implements encoding.TextMarshaler.
func (s Setting) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Setting) UnmarshalText(b []byte) error {
	v, err := ParseSetting(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

type knob struct {
	name, unit string
	field      func(*Setting) *uint16
}

var knobs = []knob{
	{"syn", "ms", func(s *Setting) *uint16 { return &s.SynRtoMs }},
	{"rto_min", "ms", func(s *Setting) *uint16 { return &s.RtoMinMs }},
	{"delack_max", "ms", func(s *Setting) *uint16 { return &s.DelackMaxMs }},
	{"iw", "", func(s *Setting) *uint16 { return &s.Iw }},
}

// ParseSetting parses "default" or comma-separated knob=value pairs:
// syn=20ms (SYN retransmission timeout), rto_min=8ms, delack_max=40ms (ms
// or s units; a bare number is ms), iw=20 (segments). It checks the syntax
// only; Validate checks what the kernel accepts.
func ParseSetting(text string) (Setting, error) {
	var s Setting
	text = strings.TrimSpace(text)
	if text == "default" || text == "" {
		return s, nil
	}
	for part := range strings.SplitSeq(text, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return s, fmt.Errorf("%w: %q is not knob=value (knobs: syn, rto_min, delack_max, iw; example syn=20ms,rto_min=8ms)", model.ErrInvalidRecommendation, part)
		}
		var k *knob
		for i := range knobs {
			if knobs[i].name == name {
				k = &knobs[i]
			}
		}
		if k == nil {
			return s, fmt.Errorf("%w: unknown knob %q (knobs: syn, rto_min, delack_max, iw)", model.ErrInvalidRecommendation, name)
		}
		n, err := parseKnob(val, k.unit)
		if err != nil {
			return s, fmt.Errorf("%w: %s=%s: %v", model.ErrInvalidRecommendation, name, val, err)
		}
		*k.field(&s) = n
	}
	return s, nil
}

func parseKnob(val, unit string) (uint16, error) {
	ms := 1.0
	if unit == "ms" {
		switch {
		case strings.HasSuffix(val, "ms"):
			val = strings.TrimSuffix(val, "ms")
		case strings.HasSuffix(val, "s"):
			val, ms = strings.TrimSuffix(val, "s"), 1000
		}
	}
	f, err := strconv.ParseFloat(val, 64)
	if err != nil || f < 0 {
		return 0, errors.New("not a non-negative number")
	}
	f *= ms
	if f != float64(uint16(f)) {
		return 0, fmt.Errorf("%g is not a whole number up to 65535", f)
	}
	return uint16(f), nil
}

// ErrRejected is wrapped by Validate's errors: the kernel would refuse the
// setting.
var ErrRejected = errors.New("setting the kernel would refuse")

// Validate checks s against what the kernel accepts from sock_ops at tick
// rate hz (KernelHZ): RTO_MIN and DELACK_MAX between TCP_TIMEOUT_MIN (2
// jiffies, after rounding up as usecs_to_jiffies does) and 200 ms, so
// 5-200 ms at HZ=250 (5 ms gives 8); the program refuses the same.
func (s Setting) Validate(hz int) error {
	if hz <= 0 {
		hz = 250
	}
	lo := 1000/hz + 1 // the least ms rounded up to 2 jiffies
	for _, k := range knobs[1:3] {
		v := int(*k.field(&s))
		if v == 0 {
			continue
		}
		if j := (v*hz + 999) / 1000; j < 2 || j > hz/5 {
			return fmt.Errorf("%w: %s=%dms: the kernel accepts %d-200ms at HZ=%d", ErrRejected, k.name, v, lo, hz)
		}
	}
	return nil
}

// KernelHZ returns the kernel's CONFIG_HZ, from /proc/config.gz or
// /boot/config-<release>, or 0 if neither says.
func KernelHZ() int {
	var rel string
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		rel = strings.TrimSpace(string(b))
	}
	for _, p := range []string{"/proc/config.gz", "/boot/config-" + rel} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		var r io.Reader = f
		if strings.HasSuffix(p, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				continue
			}
			r = zr
		}
		b, _ := io.ReadAll(r)
		f.Close()
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "CONFIG_HZ="); ok {
				if hz, err := strconv.Atoi(v); err == nil {
					return hz
				}
			}
		}
	}
	return 0
}

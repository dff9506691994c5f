package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/mlbpf/mlbpf/learner"
)

// Version is the version of Message this package writes and reads.
const Version = 1

// Bounds on a message: anything larger is refused before it is decoded.
const (
	// MaxMessageBytes bounds one encoded message.
	MaxMessageBytes = 4096
	// MaxArms bounds the arms of one key.
	MaxArms = 32
	// MaxWeight bounds one arm's weight (its observations' count): no
	// host learns that much about one key between two forgettings.
	MaxWeight = 1e6
	// MaxMean bounds the absolute value of a mean reward.
	MaxMean = 1e3
	// MaxSkew is how far in the future a message's time may be (clock
	// skew between hosts); later ones are refused, since they would
	// escape the discount by age.
	MaxSkew = time.Minute
)

// Arm is what one host knows of one arm on one key.
type Arm struct {
	Name string `json:"name"`
	// Real are the rewards observed when the arm ran: their weight
	// (count, with forgetting), mean and sum of squared deviations.
	Real learner.Estimate `json:"real"`
	// Predicted are the counterfactual predictions of its reward.
	Predicted learner.Estimate `json:"predicted"`
	// Error are the prediction errors (observed − predicted) measured
	// when the arm ran.
	Error learner.Estimate `json:"error"`
}

// Stats are one host's statistics for one key of a model, as its learner
// exports them (pipeline.FleetLearner).
type Stats struct {
	Key  string `json:"key"`
	Arms []Arm  `json:"arms"`
}

// Message is one host's statistics for one key of one model, as
// published to the fleet.
type Message struct {
	V     int    `json:"v"`
	Host  string `json:"host"`
	Model string `json:"model"` // "tcp/cc"
	// At is when the statistics were taken, in Unix milliseconds.
	At int64 `json:"at"`
	Stats
}

// Time returns At as a time.
func (m *Message) Time() time.Time { return time.UnixMilli(m.At) }

// Encode encodes m, refusing one Decode would refuse.
func Encode(m *Message) ([]byte, error) {
	if err := m.Validate(time.UnixMilli(m.At)); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding a fleet message: %w", err)
	}
	if len(b) > MaxMessageBytes {
		return nil, fmt.Errorf("encoding a fleet message: %d bytes, more than %d: share fewer arms", len(b), MaxMessageBytes)
	}
	return b, nil
}

// ErrInvalid is wrapped by every error of Decode and Validate.
var ErrInvalid = errors.New("invalid fleet message")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Decode decodes and validates an untrusted message: at most
// MaxMessageBytes, strict JSON with no unknown field, then Validate at
// now.
func Decode(b []byte, now time.Time) (*Message, error) {
	if len(b) > MaxMessageBytes {
		return nil, invalid("%d bytes, more than %d", len(b), MaxMessageBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	m := new(Message)
	if err := dec.Decode(m); err != nil {
		return nil, invalid("%v", err)
	}
	if dec.More() {
		return nil, invalid("trailing data after the message")
	}
	if err := m.Validate(now); err != nil {
		return nil, err
	}
	return m, nil
}

// Validate checks every field of m: version, names, time (not after
// now+MaxSkew), and every arm's statistics (finite, bounded, unique
// names).
func (m *Message) Validate(now time.Time) error {
	if m.V != Version {
		return invalid("version %d, want %d", m.V, Version)
	}
	if err := ValidHost(m.Host); err != nil {
		return err
	}
	if !validModel(m.Model) {
		return invalid("model %q: want \"subsystem/model\" in lower case", m.Model)
	}
	if m.Key == "" || len(m.Key) > 128 || !printable(m.Key) {
		return invalid("key %q: want 1 to 128 printable ASCII characters", m.Key)
	}
	if m.At <= 0 || m.At > now.Add(MaxSkew).UnixMilli() {
		return invalid("time %d: want Unix milliseconds, not in the future", m.At)
	}
	if len(m.Arms) == 0 || len(m.Arms) > MaxArms {
		return invalid("%d arms: want 1 to %d", len(m.Arms), MaxArms)
	}
	for i, a := range m.Arms {
		if !validName(a.Name, 32) {
			return invalid("arms[%d]: name %q: want 1 to 32 of a-z 0-9 _ -", i, a.Name)
		}
		for j := range i {
			if m.Arms[j].Name == a.Name {
				return invalid("arms[%d]: %q twice", i, a.Name)
			}
		}
		for what, e := range map[string]learner.Estimate{"real": a.Real, "predicted": a.Predicted, "error": a.Error} {
			if err := validEstimate(e); err != nil {
				return invalid("arms[%d] (%s): %s: %v", i, a.Name, what, err)
			}
		}
	}
	return nil
}

func validEstimate(e learner.Estimate) error {
	for _, x := range []float64{e.W, e.Mean, e.S} {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return errors.New("not a finite number")
		}
	}
	switch {
	case e.W < 0 || e.W > MaxWeight:
		return fmt.Errorf("weight %v: want 0 to %v", e.W, MaxWeight)
	case math.Abs(e.Mean) > MaxMean:
		return fmt.Errorf("mean %v: want within ±%v", e.Mean, MaxMean)
	case e.S < 0 || e.S > e.W*MaxMean*MaxMean:
		return fmt.Errorf("sum of squares %v: want 0 to weight×%v²", e.S, MaxMean)
	case e.W == 0 && (e.Mean != 0 || e.S != 0):
		return errors.New("a mean with no weight")
	}
	return nil
}

// ValidHost checks a host's name in the fleet: 1 to 64 of A-Z a-z 0-9 _
// - (it is a token of the bucket's keys).
func ValidHost(h string) error {
	if len(h) == 0 || len(h) > 64 {
		return invalid("host %q: want 1 to 64 characters", h)
	}
	for _, c := range []byte(h) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return invalid("host %q: want only A-Z a-z 0-9 _ -", h)
		}
	}
	return nil
}

func validName(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validModel(s string) bool {
	sub, name, ok := bytes.Cut([]byte(s), []byte("/"))
	return ok && validName(string(sub), 32) && validName(string(name), 32)
}

func printable(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

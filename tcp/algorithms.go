package tcp

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// Class is how a congestion control algorithm responds to loss, which is
// what the counterfactual model needs to know about it.
type Class int

// Classes.
const (
	// LossBased algorithms back off on every loss: their rate is bounded
	// by the loss rate (Mathis: rate ∝ MSS / (RTT·√p)).
	LossBased Class = iota
	// RateBased algorithms pace at a model of the path's bottleneck
	// bandwidth and ignore random loss up to a high rate (BBR).
	RateBased
)

// String returns "loss-based" or "rate-based".
func (c Class) String() string {
	if c == RateBased {
		return "rate-based"
	}
	return "loss-based"
}

// algorithmClasses lists the algorithms the model knows how to reason
// about. One not listed is taken as loss-based: the model then never
// predicts that it beats a loss-based default.
var algorithmClasses = map[string]Class{
	"bbr": RateBased, "bbr2": RateBased, "bbr3": RateBased,
	"reno": LossBased, "cubic": LossBased, "bic": LossBased, "htcp": LossBased,
	"highspeed": LossBased, "hybla": LossBased, "illinois": LossBased,
	"scalable": LossBased, "westwood": LossBased, "yeah": LossBased,
	"veno": LossBased, "vegas": LossBased, "nv": LossBased, "lp": LossBased,
	"cdg": LossBased, "dctcp": LossBased,
}

// ClassOf returns the class of an algorithm.
func ClassOf(alg string) Class { return algorithmClasses[alg] }

// maxNameLen is TCP_CA_NAME_MAX less the terminating NUL.
const maxNameLen = 15

// Available returns the congestion controls the kernel offers now
// (net.ipv4.tcp_available_congestion_control).
func Available() ([]string, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		return nil, fmt.Errorf("reading available congestion controls: %w", err)
	}
	return strings.Fields(string(b)), nil
}

// DefaultAlgorithm returns the congestion control of the calling thread's
// network namespace (net.ipv4.tcp_congestion_control).
func DefaultAlgorithm() (string, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		return "", fmt.Errorf("reading the default congestion control: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// resolveAllowed intersects the allow-list with what the kernel offers; an
// empty allow-list allows everything offered. The default is always
// included: it is the baseline every other arm is compared with.
func resolveAllowed(allowed, available []string, dflt string) ([]string, error) {
	var out []string
	if len(allowed) == 0 {
		out = slices.Clone(available)
	} else {
		for _, a := range allowed {
			if !slices.Contains(available, a) {
				return nil, fmt.Errorf("allowed congestion control %q is not available (the kernel offers %s; load its module, e.g. modprobe tcp_%s)",
					a, strings.Join(available, ", "), a)
			}
			out = append(out, a)
		}
	}
	if dflt != "" && !slices.Contains(out, dflt) {
		out = append(out, dflt)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

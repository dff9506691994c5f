package tcp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/model"
)

// ModelPath is how the CLI names this model: "tcp/cc".
const ModelPath = Name + "/" + ModelName

// Recommendation is one entry of the recommendation map.
type Recommendation struct {
	Prefix netip.Prefix `json:"prefix"`
	CC     string       `json:"cc"`
	// Operator: written by an operator (mlbpf recommend), which the
	// learner never overwrites or withdraws.
	Operator   bool   `json:"operator"`
	Generation uint32 `json:"generation"`
}

// ErrNotAllowed is wrapped by the errors for an algorithm that is not
// available or not in the allow-list.
var ErrNotAllowed = errors.New("congestion control not allowed")

// ParsePrefix parses a destination prefix ("10.0.0.0/8", "2001:db8::/32")
// or a single address ("10.1.2.3", taken as /32 or /128). Host bits must
// be clear: "10.0.0.1/8" is refused, naming the prefix meant.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("%w: %q is neither a prefix (10.0.0.0/8) nor an address", model.ErrInvalidRecommendation, s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, fmt.Errorf("%w: %q is not a prefix such as 10.0.0.0/8 or 2001:db8::/32", model.ErrInvalidRecommendation, s)
	}
	if p.Addr().Zone() != "" {
		return p, fmt.Errorf("%w: %q: zones are not supported", model.ErrInvalidRecommendation, s)
	}
	if m := p.Masked(); m != p {
		return p, fmt.Errorf("%w: %q has host bits set: did you mean %s?", model.ErrInvalidRecommendation, s, m)
	}
	return p, nil
}

// ParseRecommendArgs parses the arguments of
//
//	mlbpf recommend tcp/cc 10.0.0.0/8 bbr
//
// that is, the model, the destination prefix and the algorithm. The
// algorithm is only checked for form here; Objects.Recommend checks it
// against the kernel and the allow-list.
func ParseRecommendArgs(args []string) (netip.Prefix, string, error) {
	if len(args) != 3 {
		return netip.Prefix{}, "", fmt.Errorf("%w: want 3 arguments, model prefix algorithm (mlbpf recommend %s 10.0.0.0/8 bbr), got %d",
			model.ErrInvalidRecommendation, ModelPath, len(args))
	}
	if args[0] != ModelPath {
		return netip.Prefix{}, "", fmt.Errorf("%w: model %q: this parser handles %s", model.ErrInvalidRecommendation, args[0], ModelPath)
	}
	p, err := ParsePrefix(args[1])
	if err != nil {
		return p, "", err
	}
	cc := strings.TrimSpace(args[2])
	if err := checkName(cc); err != nil {
		return p, "", err
	}
	return p, cc, nil
}

func checkName(cc string) error {
	if cc == "" || len(cc) > maxNameLen {
		return fmt.Errorf("%w: congestion control name %q: want 1 to %d characters", model.ErrInvalidRecommendation, cc, maxNameLen)
	}
	for _, r := range cc {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("%w: congestion control name %q: want lower-case letters, digits, '_' or '-'", model.ErrInvalidRecommendation, cc)
		}
	}
	return nil
}

// validate checks a recommendation against the kernel's algorithms and the
// allow-list.
func (s *Objects) validate(p netip.Prefix, cc string) error {
	if !p.IsValid() {
		return fmt.Errorf("%w: invalid prefix", model.ErrInvalidRecommendation)
	}
	if p.Masked() != p {
		return fmt.Errorf("%w: %s has host bits set: did you mean %s?", model.ErrInvalidRecommendation, p, p.Masked())
	}
	if err := checkName(cc); err != nil {
		return err
	}
	available, err := Available()
	if err != nil {
		return err
	}
	if !slices.Contains(available, cc) {
		return fmt.Errorf("%w: %w: %q is not available in this kernel (available: %s)",
			model.ErrInvalidRecommendation, ErrNotAllowed, cc, strings.Join(available, ", "))
	}
	if len(s.cfg.Allowed) > 0 && !slices.Contains(s.cfg.Allowed, cc) {
		return fmt.Errorf("%w: %w: %q is not in the allow-list (%s)",
			model.ErrInvalidRecommendation, ErrNotAllowed, cc, strings.Join(s.cfg.Allowed, ", "))
	}
	return nil
}

// keyOf returns the trie key of a prefix: IPv4 prefixes IPv4-mapped.
func keyOf(p netip.Prefix) tcpccTcpCcKey {
	a := p.Addr()
	bits := p.Bits()
	if a.Is4() {
		a = netip.AddrFrom16(a.As16())
		bits += 96
	}
	return tcpccTcpCcKey{Prefixlen: uint32(bits), Addr: a.As16()}
}

// prefixOf inverts keyOf.
func prefixOf(k tcpccTcpCcKey) (netip.Prefix, error) {
	a := netip.AddrFrom16(k.Addr)
	bits := int(k.Prefixlen)
	if bits > 128 {
		return netip.Prefix{}, fmt.Errorf("prefix length %d", bits)
	}
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits), nil
}

// Recommend writes an operator's recommendation: connections to prefix
// use cc (as the mode allows). It is validated first: an algorithm the
// kernel does not offer or the allow-list excludes, or a malformed
// prefix, is refused with an error wrapping model.ErrInvalidRecommendation.
// The learner never overwrites or withdraws it; Withdraw does.
func (s *Objects) Recommend(prefix netip.Prefix, cc string) error {
	if err := s.validate(prefix, cc); err != nil {
		return fmt.Errorf("recommending %s for %s: %w", cc, prefix, err)
	}
	if err := s.write(prefix, cc, true); err != nil {
		return fmt.Errorf("recommending %s for %s: %w", cc, prefix, err)
	}
	return nil
}

// write stores a recommendation. The learner (operator false) never
// replaces an operator's entry.
func (s *Objects) write(prefix netip.Prefix, cc string, operator bool) error {
	key := keyOf(prefix)
	if !operator {
		var cur tcpccTcpCcValue
		err := s.objs.Recommend.Lookup(&key, &cur)
		if err == nil && cur.Flags&uint32(tcpccTcpCcValueFlagsTCP_CC_VALUE_OPERATOR) != 0 {
			return fmt.Errorf("an operator's recommendation (%s) is in place", cString(cur.Cc[:]))
		}
	}
	v := tcpccTcpCcValue{Cc: cName(cc), Generation: s.generation()}
	if operator {
		v.Flags |= uint32(tcpccTcpCcValueFlagsTCP_CC_VALUE_OPERATOR)
	}
	if err := s.objs.Recommend.Update(&key, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing the recommendation map: %w", err)
	}
	return nil
}

// Withdraw removes the recommendation for exactly prefix, an operator's
// or the learner's. Removing one that does not exist is not an error.
func (s *Objects) Withdraw(prefix netip.Prefix) error {
	return s.remove(prefix, true)
}

func (s *Objects) remove(prefix netip.Prefix, operator bool) error {
	key := keyOf(prefix)
	if !operator {
		var cur tcpccTcpCcValue
		if err := s.objs.Recommend.Lookup(&key, &cur); err != nil {
			return nil
		}
		if cur.Flags&uint32(tcpccTcpCcValueFlagsTCP_CC_VALUE_OPERATOR) != 0 {
			return nil
		}
	}
	if err := s.objs.Recommend.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("withdrawing the recommendation for %s: %w", prefix, err)
	}
	return nil
}

// Recommendations lists the recommendation map.
func (s *Objects) Recommendations() ([]Recommendation, error) {
	var (
		out []Recommendation
		k   tcpccTcpCcKey
		v   tcpccTcpCcValue
	)
	it := s.objs.Recommend.Iterate()
	for it.Next(&k, &v) {
		p, err := prefixOf(k)
		if err != nil {
			continue
		}
		out = append(out, Recommendation{
			Prefix: p, CC: cString(v.Cc[:]), Generation: v.Generation,
			Operator: v.Flags&uint32(tcpccTcpCcValueFlagsTCP_CC_VALUE_OPERATOR) != 0,
		})
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("listing recommendations: %w", err)
	}
	slices.SortFunc(out, func(a, b Recommendation) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, nil
}

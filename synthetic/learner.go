package synthetic

// The synthetic device has a known objective, so its learner can be exact
// and tests can tell a right decision from a wrong one: for key k the best
// value is Target(k), and a value v earns Reward(k, v), 1 at the target
// and falling linearly with the distance. The default algorithm
// (k % DefaultModulus) is usually far from the target.

// Target is the best value for key.
func Target(key uint32) uint32 { return (key*37 + 11) % DefaultModulus }

// Reward is the outcome of answering key with value, in [0, 1].
func Reward(key, value uint32) float64 {
	t := int64(Target(key))
	d := int64(value) - t
	if d < 0 {
		d = -d
	}
	if d >= DefaultModulus {
		return 0
	}
	return 1 - float64(d)/DefaultModulus
}

// Learner recommends, for every key it has seen, the value it believes
// best. With Adversarial it recommends the worst value instead, never
// better than the default: a bad model, for tests that check such a model
// is never promoted.
type Learner struct {
	Adversarial bool
	seen        map[uint32]bool
}

// Observe records that key was requested and returns the recommendation
// to write, with new reporting whether it was not known before.
func (l *Learner) Observe(key uint32) (value uint32, isNew bool) {
	if l.seen == nil {
		l.seen = make(map[uint32]bool)
	}
	value = Target(key)
	if l.Adversarial {
		// The value farthest from the target: no value, the default's
		// included, is further away.
		if value < DefaultModulus/2 {
			value = DefaultModulus - 1
		} else {
			value = 0
		}
	}
	if l.seen[key] {
		return value, false
	}
	l.seen[key] = true
	return value, true
}

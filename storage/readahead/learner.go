package readahead

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
)

// DefaultGrid is the readahead settings the learner chooses from, in KB.
var DefaultGrid = []uint32{16, 32, 64, 128, 256, 512, 1024, 2048}

// Learner chooses, per device and phase, a readahead from a grid: the
// setting with the highest mean reward (bytes the workload asked for per
// second of window), or the smallest within 5 % of it (see tie), among
// those tried MinWindows times: the extremes first, then neighbours of
// the best until both of its neighbours are known (see Choose), and,
// with probability Explore, a neighbour of the best.
//
// It also learns which phase follows which (Follow). A setting reaches a
// file when the file is opened, so the setting in force at the end of a
// phase is the one the next phase's first files run under. Where the
// phase that usually follows wants another setting and the current phase
// shows no measurable cost for it (see worse), the learner chooses that
// one: random preads, which no setting changes, then leave the device
// ready for the page faults that follow them.
type Learner struct {
	Grid       []uint32
	MinWindows int     // windows per setting before it may be chosen; default 2
	Explore    float64 // exploration share once the climb is done; default 0.1

	mu   sync.Mutex
	arms map[learnKey][]armStat
	// follows counts, per device and phase, the phases seen to follow it.
	follows map[learnKey]*[phaseCount]int
}

type learnKey struct {
	dev   uint32
	phase Phase
}

type armStat struct {
	n    int
	mean float64
	m2   float64
}

func (s *armStat) add(x float64) {
	s.n++
	d := x - s.mean
	s.mean += d / float64(s.n)
	s.m2 += d * (x - s.mean)
}

// NewLearner returns a learner over grid (DefaultGrid if nil).
func NewLearner(grid []uint32) *Learner {
	if grid == nil {
		grid = DefaultGrid
	}
	g := slices.Clone(grid)
	slices.Sort(g)
	return &Learner{Grid: g, MinWindows: 2, Explore: 0.1, arms: map[learnKey][]armStat{}, follows: map[learnKey]*[phaseCount]int{}}
}

func (l *Learner) stats(k learnKey) []armStat {
	s, ok := l.arms[k]
	if !ok {
		s = make([]armStat, len(l.Grid))
		l.arms[k] = s
	}
	return s
}

func (l *Learner) index(kb uint32) int {
	i, ok := slices.BinarySearch(l.Grid, kb)
	if !ok {
		return -1
	}
	return i
}

// Observe records the reward of one window of dev in phase under kb. A
// setting off the grid is ignored.
func (l *Learner) Observe(dev uint32, phase Phase, kb uint32, reward float64) {
	i := l.index(kb)
	if i < 0 || phase == PhaseIdle || math.IsNaN(reward) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats(learnKey{dev, phase})[i].add(reward)
}

// Count returns how many windows of dev in phase were learned for kb.
func (l *Learner) Count(dev uint32, phase Phase, kb uint32) int {
	_, n := l.Mean(dev, phase, kb)
	return n
}

// Follow records that dev's workload went from phase from to phase to.
func (l *Learner) Follow(dev uint32, from, to Phase) {
	if from == to || from == PhaseIdle || to == PhaseIdle || from >= phaseCount || to >= phaseCount {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := learnKey{dev, from}
	if l.follows[k] == nil {
		l.follows[k] = new([phaseCount]int)
	}
	l.follows[k][to]++
}

// minFollows is how often a phase must have followed another before the
// learner prepares for it.
const minFollows = 2

// successor returns the phase that most often followed phase on dev.
func (l *Learner) successor(dev uint32, phase Phase) (Phase, bool) {
	f := l.follows[learnKey{dev, phase}]
	if f == nil {
		return PhaseIdle, false
	}
	next, most := PhaseIdle, minFollows-1
	for p, n := range f {
		if n > most {
			next, most = Phase(p), n
		}
	}
	return next, next != PhaseIdle
}

// Best returns the setting the learner applies in phase: the best of
// those seen MinWindows times (see best), or the next phase's where the
// phase shows no cost for it (see choice); and whether there is one.
func (l *Learner) Best(dev uint32, phase Phase) (uint32, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := l.choice(dev, phase)
	if i < 0 {
		return 0, false
	}
	return l.Grid[i], true
}

// choice is the index of the setting applied in phase: its best, unless
// the phase that usually follows wants another one (its choice, looking
// ahead at most a cycle of the phases) and this phase's windows do not
// show that one to be worse.
func (l *Learner) choice(dev uint32, phase Phase) int {
	return l.choiceAhead(dev, phase, len(Phases)-1)
}

func (l *Learner) choiceAhead(dev uint32, phase Phase, ahead int) int {
	s := l.stats(learnKey{dev, phase})
	b := l.best(s)
	if b < 0 {
		return b
	}
	next, ok := l.successor(dev, phase)
	if !ok || ahead == 0 {
		return b
	}
	i := l.choiceAhead(dev, next, ahead-1)
	if i < 0 || i == b {
		return b
	}
	if s[i].n == 0 {
		// No window of this phase ran under it: follow the next phase
		// only if none of this phase's settings measurably differs (a
		// phase no setting changes, and too short for many windows).
		for j := range s {
			if s[j].n >= l.MinWindows && worse(s, j, b) {
				return b
			}
		}
		return i
	}
	if worse(s, i, b) {
		return b
	}
	return i
}

// worse reports whether setting i does measurably worse than b: its mean
// below b's by more than tie and two standard errors of the difference,
// the windows' noise pooled over the phase's settings (relative to their
// means, two windows per setting give too few to judge one by itself).
func worse(s []armStat, i, b int) bool {
	var cv2 float64
	var df int
	for _, a := range s {
		if a.n >= 2 && a.mean > 0 {
			cv2 += a.m2 / (a.mean * a.mean)
			df += a.n - 1
		}
	}
	if df == 0 {
		return s[i].mean < (1-tie)*s[b].mean
	}
	cv2 /= float64(df)
	se := math.Sqrt(cv2 * (s[b].mean*s[b].mean/float64(s[b].n) + s[i].mean*s[i].mean/float64(s[i].n)))
	return s[b].mean-s[i].mean > tie*s[b].mean+2*se
}

// tie is how close to the best mean reward a smaller setting must come
// to be chosen instead: settings that do as well are told apart by what
// they cost, and a smaller readahead reads less the workload never asks
// for and holds less of the page cache. It also decides a phase whose
// reward no setting changes (random reads): the smallest, which is then
// in force, too, when the next phase's files are opened. (A tie within
// one standard error instead chose 512 over 1024 on sequential reads,
// 17 % slower: two windows per setting give no usable error.)
const tie = 0.05

func (l *Learner) best(s []armStat) int {
	best := -1
	for i := range s {
		if s[i].n >= l.MinWindows && (best < 0 || s[i].mean > s[best].mean) {
			best = i
		}
	}
	if best < 0 {
		return best
	}
	for i := range best { // the grid is sorted: smallest first
		if s[i].n >= l.MinWindows && s[i].mean >= (1-tie)*s[best].mean {
			return i
		}
	}
	return best
}

// Mean returns the mean reward of kb for dev in phase and how many
// windows it rests on.
func (l *Learner) Mean(dev uint32, phase Phase, kb uint32) (float64, int) {
	i := l.index(kb)
	if i < 0 {
		return 0, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats(learnKey{dev, phase})[i]
	return s.mean, s.n
}

// Choose returns the setting to try next for dev in phase, and whether it
// is an exploration rather than the best known. With explore false it
// returns the best known (def while nothing is known).
func (l *Learner) Choose(dev uint32, phase Phase, def uint32, explore bool) (uint32, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats(learnKey{dev, phase})
	best := l.choice(dev, phase)
	if !explore {
		if best < 0 {
			return def, false
		}
		return l.Grid[best], false
	}
	// Untried settings first: the one the next phase wants (see choice),
	// then the extremes, then the untried neighbours of the best so far,
	// climbing until the best has both neighbours measured: the reward
	// rises and falls once across the grid (readahead too small pays a
	// request per read, too large reads what is never asked for), and
	// settings far from the best are never worth their windows (trying
	// every one took a minute per phase before the first outcome).
	order := make([]int, 0, 5)
	if next, ok := l.successor(dev, phase); ok {
		if i := l.choice(dev, next); i >= 0 {
			order = append(order, i)
		}
	}
	order = append(order, 0, len(s)-1)
	if b := l.best(s); b >= 0 {
		order = append(order, b-1, b+1)
	}
	for _, i := range order {
		if i >= 0 && i < len(s) && s[i].n < l.MinWindows {
			return l.Grid[i], true
		}
	}
	if best >= 0 && rand.Float64() < l.Explore {
		j := best + []int{-1, 1}[rand.IntN(2)]
		if j >= 0 && j < len(s) {
			return l.Grid[j], true
		}
	}
	return l.Grid[best], false
}

// Known reports, per device and phase, the learned best setting.
func (l *Learner) Known() map[uint32]map[Phase]uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[uint32]map[Phase]uint32{}
	for k := range l.arms {
		if i := l.choice(k.dev, k.phase); i >= 0 {
			if out[k.dev] == nil {
				out[k.dev] = map[Phase]uint32{}
			}
			out[k.dev][k.phase] = l.Grid[i]
		}
	}
	return out
}

// Forget drops everything learned for dev, in every phase.
func (l *Learner) Forget(dev uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.arms {
		if k.dev == dev {
			delete(l.arms, k)
		}
	}
	for k := range l.follows {
		if k.dev == dev {
			delete(l.follows, k)
		}
	}
}

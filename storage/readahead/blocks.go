package readahead

import (
	"math/rand/v2"

	"github.com/mlbpf/mlbpf/model"
)

// MaxCycle is the longest cycle of blocks (as MLBPF_BLOCK_MAX in
// bpf/include/mlbpf.h): a share with no whole cycle up to it is drawn
// block by block.
const MaxCycle = 20

// cycleLen is the fewest blocks in which permille of them is a whole
// number (20 at 50 ‰, 2 at 500 ‰), 0 if none up to MaxCycle.
func cycleLen(permille uint32) uint32 {
	for n := uint32(2); n <= MaxCycle; n++ {
		if permille*n%1000 == 0 {
			return n
		}
	}
	return 0
}

// permuted draws a device's arms by time block in permuted cycles, as
// tcp/cc's BPF does (mlbpf_draw_block): in every cycle of cycleLen
// blocks exactly the configured share is drawn, at random positions
// (each block is drawn without replacement from what the cycle has
// left), so the share is exact per cycle and which block is which stays
// a randomisation the workload cannot predict. An i.i.d. draw per block
// gives the share only on average: a holdout of 5 % then falls in a
// given 20 s anywhere from never to several times.
type permuted struct {
	mode     model.Mode
	permille uint32
	left     uint32 // blocks left in the cycle
	hits     uint32 // of which drawn true
	// cycles counts the cycles begun (a change of mode or share begins
	// one); a share with no whole cycle counts every block.
	cycles uint64
}

// draw returns true for permille of the blocks of mode.
func (p *permuted) draw(mode model.Mode, permille uint32) bool {
	if permille == 0 || permille >= 1000 {
		return permille >= 1000
	}
	n := cycleLen(permille)
	if p.mode != mode || p.permille != permille || p.left == 0 || p.left > max(n, 1) || p.hits > p.left {
		p.mode, p.permille = mode, permille
		p.left, p.hits = n, permille*n/1000
		p.cycles++
	}
	if n == 0 {
		p.left = 0 // the next block begins the next cycle
		return rand.Uint32N(1000) < permille
	}
	hit := rand.Uint32N(p.left) < p.hits
	p.left--
	if hit {
		p.hits--
	}
	return hit
}

// decide is mlbpf_decide_blocked for one device and time block, in user
// space: COLLABORATION's model share and RECOMMENDATION's holdout are
// drawn from the device's permuted cycles p.
func decide(c model.Control, nowNs uint64, haveRec bool, p *permuted) model.Arm {
	if c.State != model.StateRunning || nowNs > c.LeaseExpiresNs {
		return model.ArmFallback
	}
	switch c.Mode {
	case model.ModeLearning:
		if haveRec {
			return model.ArmShadow
		}
		return model.ArmNoRec
	case model.ModeCollaboration, model.ModeRecommendation:
		if !haveRec {
			return model.ArmNoRec
		}
		// The drawn share: COLLABORATION's model blocks, RECOMMENDATION's
		// holdout.
		drawn, rest, permille := model.ArmModel, model.ArmControl, c.CollabPermille
		if c.Mode == model.ModeRecommendation {
			drawn, rest, permille = model.ArmControl, model.ArmModel, c.HoldoutPermille
		}
		if p.draw(c.Mode, permille) {
			return drawn
		}
		return rest
	}
	return model.ArmFallback
}

package model

import "fmt"

// Retune replaces the options of a model that runs, as a reloaded
// configuration asks, keeping its mode and the controller's evidence: the
// period, the lease (from the next renewal), the shares of COLLABORATION
// and RECOMMENDATION, MaxMode and the controller's thresholds. A mode
// above the new MaxMode is lowered to it. InitialMode is not used: the
// model is past its initialization. The options are validated first; on
// any error nothing changes. Legal wherever SetMode is.
func (m *Model) Retune(opts Options, reason string) error {
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("retuning %s: %w", m, err)
	}
	eff := opts.WithDefaults()
	return m.run(transition{
		op:     OpSetMode,
		reason: reason,
		mutate: func(c *Control) {
			c.Mode = min(c.Mode, eff.MaxMode)
			c.CollabPermille, c.HoldoutPermille = eff.CollabPermille, eff.HoldoutPermille
		},
		commit: func() {
			eff.InitialMode = m.opts.InitialMode
			m.raw, m.opts = opts, eff
			if m.controller != nil {
				m.controller.retune(eff.Controller)
			} else {
				m.controller = NewController(eff.Controller)
			}
		},
	})
}

// retune replaces the controller's configuration, keeping its evidence.
func (c *Controller) retune(cfg ControllerConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg = cfg.withDefaults()
}

// NarrowHoldout sets the share of RECOMMENDATION's invocations kept on
// the default in the control block to permille, at most the options'
// HoldoutPermille, which stays the ceiling (and what Retune, ReInit and
// Init restore): a subsystem whose holdout costs its users more than it
// tells it (correct_system_state) narrows it, and widens it again up to
// the ceiling. The mode and the evidence stay; an unchanged share writes
// nothing. Legal wherever SetMode is.
func (m *Model) NarrowHoldout(permille uint32, reason string) error {
	if permille > Permille {
		return fmt.Errorf("narrowing the holdout of %s: %w: %d‰, want at most %d", m, ErrInvalidOptions, permille, Permille)
	}
	return m.run(transition{
		op:     OpSetMode,
		reason: reason,
		prepare: func(_ State, cur Control) (bool, error) {
			permille = min(permille, m.opts.HoldoutPermille)
			return cur.HoldoutPermille == permille, nil
		},
		mutate: func(c *Control) { c.HoldoutPermille = permille },
	})
}

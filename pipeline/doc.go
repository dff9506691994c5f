// Package pipeline is the one period loop every model runs on, whatever
// its subsystem, and the interface a subsystem implements to plug into
// it.
//
// # The loop
//
// Every period (Options.SleepTimeout) Loop calls the RFC's operations
// (ml_lib_model_operations) on the model, in the RFC's order:
//
//	renew_lease                 the kernel follows the model for one more lease
//	get_dataset                 the ring's records into a portion, with our own ring
//	                            buffer consumer (package ringbuf), and the records the
//	                            kernel lost since the last period (a delta, counted in
//	                            the period's first portion)
//	preprocess_data             every record decoded once (Parts.Decode); the portion
//	                            judged: a corrupted one trips the controller
//	publish_data                the portion to the agents (Env.Publisher)
//	                            the learner (Parts.Learner) gets the decoded records
//	                            and says what to recommend and what the outcomes were
//	preprocess_recommendation   each recommendation validated by the subsystem,
//	apply_recommendation        then written where the BPF applier reads it
//	execute_operation           the applier's, at its hook in the kernel (the
//	                            generic operation adds nothing)
//	error_backpropagation       each outcome to the model: the learner's calibration
//	                            and the mode controller's evidence
//	estimate_efficiency         the controller's estimate, from the arms' outcomes
//	estimate_system_state       the mode controller's decision,
//	correct_system_state        applied
//
// Each period then leaves a line in the model's history (package
// history, under Env.StateDir): the arms' outcomes, the efficiency
// estimate, the mode and the controller's decision; 'mlbpf report'
// draws it.
//
// get_dataset to error_backpropagation repeat, a portion at a time, while
// portions come full, up to what the ring holds (or the subsystem's
// Parts.PortionsPerPeriod); the rest waits for the next period. The generic operations (model.GenericModelOps) do the
// common work; a subsystem's Objects override only what is its own.
//
// # Adding a subsystem
//
// A subsystem is one package: its BPF objects and their attach, its
// record layout and decoder, its learner, its recommendation parser and
// validator, its configuration section, its demo if it has one. To add
// one:
//
//  1. Write the BPF program with MLBPF_MODEL_MAPS (bpf/include/mlbpf.h):
//     control, recommend, stats, lost and the events ring; generate it
//     with bpf2go.
//  2. Implement Objects on the loaded objects: embed
//     model.GenericModelOps, override Start and Stop (attach, detach),
//     PreprocessRecommendation (parse and validate Key and Value) and
//     ApplyRecommendation (write the map); add RecommendOperator,
//     WithdrawLearned, Events, Lost, Control, Dir and Close; and Keyed
//     (Entries, WithdrawKey: 'mlbpf recommendations', 'mlbpf recommend
//     --withdraw'). Optionally Reconfigurer, for a section that may
//     change on a reload.
//  3. Write the decoder, func(raw []byte, r *R) error, and a Learner[R]:
//     Learn gets a portion's decoded records and appends to Result the
//     outcomes (model.Feedback: the arm, the reward, the applied value)
//     and the recommendations.
//  4. Write the configuration type: a struct with cfg tags, decoded
//     straight from the model's section, with a Validate method that
//     names the field it rejects (config.Field).
//  5. Return a *Subsystem describing it (name, models, needs, program
//     types, record format), with Open calling New(env, Parts[R]{...}),
//     RecommendPinned and Pinned for the CLI with no daemon, and Restore
//     if the model applies anything from user space; add it to the list
//     in package subsystems: one line.
//
// The daemon then loads, pins, runs, supervises and publishes the new
// models, and the CLI's status, mode, recommend, recommendations,
// dataset, reload and rollback commands work on them, with no change to
// either.
package pipeline

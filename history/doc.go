// Package history keeps a model's per-period feedback on disk, so that
// an operator can look back at how the model learned ('mlbpf report'):
// every period, the outcomes of each arm (their count, mean and a small
// sample, enough to draw their distribution), the efficiency estimate
// with its interval, the mode and state, and the mode controller's
// decision with its reason; and, every so often, a snapshot of the
// model's keys (the recommendation map with each key's evidence).
//
// # On disk
//
// A model's history lives in its own directory (<state-dir>/<subsystem>/
// <model>/history/ for the daemon), as segments: files named after the
// time of their first period, *.history, each a JSON header line
// (version, model) written atomically, then one JSON line per period,
// appended in one write. A daemon that restarts starts a new segment, so
// a line torn by a crash is only ever a segment's last, and a reader
// ignores it. The history is bounded: when a segment is full
// (Limits.SegmentPeriods), the oldest segments are removed while the
// total exceeds Limits.MaxBytes or they are older than Limits.MaxAge.
// keys.json, the latest key snapshot, is rewritten atomically.
//
// A damaged segment (a header that is not one, a line that does not
// decode before the last) is set aside by the writer (renamed *.bad, for
// inspection) and skipped by a reader, never fatal: the history is
// informative, the model runs without it.
package history

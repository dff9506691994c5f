// Package report renders a model's history (package history) as one
// self-contained HTML page: no script, no network, every plot inline as
// SVG drawn with gonum.org/v1/plot. The page shows the model's efficiency
// over time with its confidence band and the mode changes marked, the
// outcomes of each arm as distributions (box plots) and over time, the
// mode controller's decisions with their reasons, and the model's keys
// with their evidence.
//
// 'mlbpf report' renders the history a daemon keeps in its state
// directory; a benchmark gathers the histories of its runs with a Collector
// and renders them as one page, a section each.
package report

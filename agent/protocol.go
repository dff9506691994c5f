package agent

import (
	"encoding/json"
	"errors"
)

// ProtocolVersion is the version hello reports. A change that an existing
// client could misread bumps it; new optional fields do not.
const ProtocolVersion = 1

// Operations a client may request.
const (
	OpHello       = "hello"
	OpModels      = "models"
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpFetch       = "fetch"
	OpDiscard     = "discard"
	OpRecommend   = "recommend"
	OpControl     = "control"
	// OpWithdraw takes an operator's or the learner's recommendation for
	// Key back; OpRecommendations lists the model's recommendation map.
	OpWithdraw        = "withdraw"
	OpRecommendations = "recommendations"
	// OpReload has the daemon re-read its configuration.
	OpReload   = "reload"
	OpShutdown = "shutdown"
)

// Actions of an operator's control request.
const (
	ActionMode  = "mode"  // set the model's mode
	ActionStart = "start" // start a stopped model
	ActionStop  = "stop"  // stop the model
)

// Events the daemon sends on its own.
const (
	EventDataset  = "dataset"  // a portion was published: fetch it
	EventFeedback = "feedback" // outcomes of the model's decisions in the last period
	EventMode     = "mode"     // the model's mode or state changed
	EventClosing  = "closing"  // the daemon is shutting down
)

// Request is one line a client sends.
type Request struct {
	// ID is echoed in the response; the client picks it (unique per
	// connection while the request is outstanding).
	ID uint64 `json:"id"`
	Op string `json:"op"`
	// Agent names the client (hello), for the daemon's logs.
	Agent string `json:"agent,omitempty"`
	// Model is "subsystem/model".
	Model string `json:"model,omitempty"`
	// Offset selects a portion by its offset in the model's record stream
	// (fetch, discard). Fetch without it returns the newest portion.
	Offset *uint64 `json:"offset,omitempty"`
	// Records asks fetch for the records decoded as JSON objects, Raw for
	// the raw records (base64 in "data").
	Records bool `json:"records,omitempty"`
	Raw     bool `json:"raw,omitempty"`
	// Key and Value are a recommendation (recommend), in the forms the
	// subsystem takes: "10.0.0.0/8" and "bbr" for tcp/cc, "5" and "42"
	// for synthetic models.
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
	// Operator marks a recommendation as an operator's: the in-process
	// learner never overwrites it.
	Operator bool `json:"operator,omitempty"`
	// Action and Mode are an operator's command (control): ActionMode
	// with a mode ("emergency", ...), ActionStart or ActionStop.
	Action string `json:"action,omitempty"`
	Mode   string `json:"mode,omitempty"`
}

// Message is one line the daemon sends: a Response (ID and OK set) or an
// Event (Event set).
type Message struct {
	Response
	Event *Event `json:"event,omitempty"`
}

// Response answers a Request.
type Response struct {
	ID    uint64 `json:"id,omitempty"`
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`

	Hello          *Hello          `json:"hello,omitempty"`
	Models         []ModelInfo     `json:"models,omitempty"`
	Portion        *Portion        `json:"portion,omitempty"`
	Recommendation *Recommendation `json:"recommendation,omitempty"`
	Control        *ControlResult  `json:"control,omitempty"`
	// Entries answers OpRecommendations (its key present, maybe empty).
	Entries *[]Entry      `json:"entries,omitempty"`
	Reload  *ReloadResult `json:"reload,omitempty"`
}

// ReloadResult is what a reload changed: one line per change, none when
// the file says what already runs.
type ReloadResult struct {
	File    string   `json:"file"`
	Changes []string `json:"changes"`
}

// Entry is one key of a model's recommendation map: its value, who wrote
// it ("operator" or "learner"), when (RFC 3339, empty when not by this
// daemon), and the outcomes fed back for the key since the daemon
// started, per arm.
type Entry struct {
	Key        string                 `json:"key"`
	Value      string                 `json:"value"`
	By         string                 `json:"by,omitempty"`
	Generation uint32                 `json:"generation"`
	Written    string                 `json:"written,omitempty"`
	Evidence   map[string]ArmFeedback `json:"evidence,omitempty"`
}

// Hello describes the daemon.
type Hello struct {
	Protocol int    `json:"protocol"`
	Daemon   string `json:"daemon"` // "mlbpf <version>"
	PID      int    `json:"pid"`
}

// ModelInfo describes one model the daemon runs.
type ModelInfo struct {
	Model   string `json:"model"`
	State   string `json:"state"`
	Mode    string `json:"mode"`
	MaxMode string `json:"max_mode"`
	Learner string `json:"learner"` // builtin or external
	// Datasets reports whether the daemon publishes the model's dataset
	// portions (subscribe and fetch work).
	Datasets bool `json:"datasets"`
	// Portions lists the offsets of the portions the daemon holds,
	// oldest first.
	Portions   []uint64 `json:"portions,omitempty"`
	RecordKind uint16   `json:"record_kind,omitempty"`
	RecordSize int      `json:"record_size,omitempty"`
}

// Event is something the daemon tells subscribers of a model.
type Event struct {
	Type  string `json:"type"` // EventDataset, ...
	Model string `json:"model,omitempty"`
	// Portion is the published portion's metadata (EventDataset); fetch
	// its records by Offset.
	Portion  *Portion  `json:"portion,omitempty"`
	Feedback *Feedback `json:"feedback,omitempty"`
	// Mode and State (EventMode) and the reason for the change.
	Mode   string `json:"mode,omitempty"`
	State  string `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Portion is one dataset portion of a model's record stream (the RFC's
// ml_lib_dataset): fixed-size records, the first at Offset in the stream.
type Portion struct {
	Model string `json:"model"`
	// Offset is the stream index of the first record (portion_offset),
	// Size the number of records (portion_size).
	Offset uint64 `json:"offset"`
	Size   uint32 `json:"size"`
	// Type and State are the dataset's (STRUCTURE; CLEAN,
	// EXTRACTED_PARTIALLY, EXTRACTED_COMPLETELY, CORRUPTED, ...).
	Type  string `json:"type"`
	State string `json:"state"`
	// RecordKind is the mlbpf_record_hdr kind of every record,
	// RecordSize its size in bytes.
	RecordKind uint16 `json:"record_kind"`
	RecordSize int    `json:"record_size"`
	// Lost counts the records missed while the portion was collected
	// (the kernel could not reserve them, or past the memory cap);
	// Corrupted those that did not decode.
	Lost      uint64 `json:"lost"`
	Corrupted uint64 `json:"corrupted"`
	// Mode and Generation are the control block's at publication.
	Mode       string `json:"mode"`
	Generation uint32 `json:"generation"`
	// Data holds the raw records back to back (native byte order),
	// when asked for (base64 on the wire).
	Data []byte `json:"data,omitempty"`
	// Records holds the records decoded as JSON objects, when asked for.
	Records []json.RawMessage `json:"records,omitempty"`
}

// Record returns record i of Data (0 ≤ i < Size), or nil without Data.
func (p *Portion) Record(i int) []byte {
	if p.RecordSize <= 0 || (i+1)*p.RecordSize > len(p.Data) {
		return nil
	}
	return p.Data[i*p.RecordSize : (i+1)*p.RecordSize]
}

// Feedback is what came of the model's decisions over one period (the
// RFC's error back-propagation, summarized): the outcomes observed, and
// the mode controller's view of the model's efficiency.
type Feedback struct {
	Model      string `json:"model"`
	Mode       string `json:"mode"`
	Generation uint32 `json:"generation"`
	// Outcomes counts the outcomes fed back in the period, Accepted those
	// taken as evidence for the current mode.
	Outcomes int `json:"outcomes"`
	Accepted int `json:"accepted"`
	// Arms summarizes the period's rewards per arm ("shadow", "model",
	// "control").
	Arms map[string]ArmFeedback `json:"arms,omitempty"`
	// PredictionError is the mean of predicted − observed reward over
	// the period's outcomes with a prediction.
	PredictionError *float64    `json:"prediction_error,omitempty"`
	Efficiency      *Efficiency `json:"efficiency,omitempty"`
	// Decision is the mode controller's verdict.
	Decision string `json:"decision,omitempty"`
}

// ArmFeedback summarizes one arm's rewards.
type ArmFeedback struct {
	N          int     `json:"n"`
	MeanReward float64 `json:"mean_reward"`
}

// Efficiency is the model's estimated effect in its current mode, with
// its confidence (the RFC's estimate_ml_model_efficiency): in LEARNING
// the learner's predictions against the rewards observed under the
// default, otherwise the model's arm against the control group.
type Efficiency struct {
	Mode string `json:"mode"`
	// N and BaselineN are the samples on each side.
	N         int `json:"n"`
	BaselineN int `json:"baseline_n"`
	// Baseline is the default's mean reward (in LEARNING, observed on
	// the shadow outcomes; otherwise the control group's).
	Baseline float64 `json:"baseline_mean"`
	// Effect is the estimated gain in reward, Lower and Upper bound it
	// at Confidence (two-sided); Relative is Effect over the baseline's
	// mean reward.
	Effect     float64 `json:"effect"`
	Lower      float64 `json:"lower"`
	Upper      float64 `json:"upper"`
	Relative   float64 `json:"relative"`
	Confidence float64 `json:"confidence"`
	// PImprove is the p-value against "no gain beyond the minimum
	// effect", PRegress the one against "no loss".
	PImprove float64 `json:"p_improve"`
	PRegress float64 `json:"p_regress"`
	// Applied is the share of outcomes where the model's recommendation
	// was applied.
	Applied float64 `json:"applied"`
}

// Recommendation is a recommendation as posted, and as applied after the
// subsystem validated it (Key and Value normalized).
type Recommendation struct {
	Model      string `json:"model"`
	Key        string `json:"key"`
	Value      string `json:"value"`
	Generation uint32 `json:"generation,omitempty"`
	Operator   bool   `json:"operator,omitempty"`
}

// ControlRequest is an operator's command for one model: 'mlbpf mode',
// 'start' or 'stop'.
type ControlRequest struct {
	Model  string `json:"model"`
	Action string `json:"action"`         // ActionMode, ActionStart, ActionStop
	Mode   string `json:"mode,omitempty"` // ActionMode's
}

// ControlResult is what an operator's command did: the control block
// before, the block the command wrote (Changed) and the block the kernel
// held when the daemon answered, which is where the command asked.
type ControlResult struct {
	Model   string       `json:"model"`
	Changed bool         `json:"changed"`
	Before  ControlBlock `json:"before"`
	Written ControlBlock `json:"written"`
	Kernel  ControlBlock `json:"kernel"`
}

// ControlBlock is a control block as the kernel reads it.
type ControlBlock struct {
	State      string `json:"state"`
	Mode       string `json:"mode"`
	Generation uint32 `json:"generation"`
	// LeaseLeftMs is how long the lease had left, 0 if none or expired.
	LeaseLeftMs int64 `json:"lease_left_ms,omitempty"`
}

// RemoteError is an error the daemon answered with.
type RemoteError struct {
	Op  string
	Msg string
}

func (e *RemoteError) Error() string { return e.Op + ": " + e.Msg }

// ErrClosed is returned by a Client's calls after it is closed or the
// daemon went away.
var ErrClosed = errors.New("agent connection closed")

// Package agent is the RFC's user-space agent, for mlbpf: the protocol
// external learners speak with the daemon over its Unix socket, a client
// and a server for it, and Learner, the interface every learner
// implements, in the daemon (its in-process learners) or outside it (an
// external agent connected with Run). examples/agent is a small external
// agent.
//
// # The socket
//
// The daemon listens on one Unix stream socket (default
// /run/mlbpf/agent.sock), mode 0600, in a directory of mode 0700 when the
// daemon creates it (with its lock file). A connecting process is checked
// with SO_PEERCRED: only root and the daemon's own user are served;
// others get one error line and are disconnected.
//
// # Framing
//
// Both directions are JSON objects, one per line (newline-delimited,
// UTF-8, at most 1 MiB a request). The client sends requests; the daemon
// sends a response to each, in order, and events in between.
//
//	request:  {"id": 1, "op": "subscribe", "model": "synthetic/demo"}
//	response: {"id": 1, "ok": true}
//	error:    {"id": 2, "error": "model \"tcp/rto\" is not run by this daemon (it runs tcp/cc)"}
//	event:    {"event": {"type": "dataset", "model": "synthetic/demo", "portion": {...}}}
//
// A response carries the request's id (pick positive ids), "ok": true
// or an "error" string, and the op's result. A line with "event" is an
// event. Unknown fields are ignored both ways; a new field that would
// change the meaning of an existing one bumps ProtocolVersion.
//
// # Operations
//
//	hello       {"agent": "name"} → {"hello": {"protocol": 1, "daemon": "mlbpf v…", "pid": 1234}}
//	models      → {"models": [{"model", "state", "mode", "max_mode", "learner",
//	            "datasets", "record_kind", "record_size", "portions": [offsets]}]}
//	subscribe   {"model"} → ok; then the model's events (below)
//	unsubscribe {"model"} → ok
//	fetch       {"model", "offset"?, "records"?, "raw"?} → {"portion": Portion}
//	            the portion at offset, or the newest; "records": true adds
//	            the records decoded as JSON objects, "raw": true the raw
//	            records (base64 "data", native byte order, back to back)
//	discard     {"model", "offset"?} → ok: the client is done with the
//	            portion; it is released when every subscriber it was
//	            published to has discarded it. A client that is not
//	            subscribed (the CLI) releases it outright; without an
//	            offset, every portion the daemon holds.
//	recommend   {"model", "key", "value", "operator"?} → {"recommendation":
//	            {"model", "key", "value", "generation"}}: validated by the
//	            model's subsystem exactly as 'mlbpf recommend' is (a
//	            refusal is an error response), normalized, and written to
//	            the model's recommendation map. "operator": true marks an
//	            operator's, which the in-process learner never overwrites.
//	control     {"model", "action": "mode"|"start"|"stop", "mode"?} →
//	            {"control": {"model", "changed", "before", "written",
//	            "kernel"}}: an operator's command ('mlbpf mode', 'start',
//	            'stop'), carried out by the model's supervisor, answered
//	            once the kernel holds what it asked (the mode set, and
//	            acting in it unless EMERGENCY; the model running; the
//	            model stopped), or refused saying why: a mode above
//	            max_mode, a mode other than EMERGENCY for a stopped model.
//	            Each block is {"state", "mode", "generation",
//	            "lease_left_ms"}.
//	withdraw    {"model", "key"} → {"recommendation": {"model", "key"}}:
//	            the recommendation for key (validated as a recommendation's
//	            key is, returned normalized) taken back, an operator's or
//	            the learner's, answered once the kernel's map no longer
//	            holds it ('mlbpf recommend --withdraw').
//	recommendations {"model"} → {"entries": [{"key", "value", "by",
//	            "generation", "written"?, "evidence"?}]}: the model's
//	            recommendation map; "by" is "operator" or "learner",
//	            "written" when this daemon wrote the key (RFC 3339),
//	            "evidence" the outcomes fed back for the key since the
//	            daemon started, per arm: {"n", "mean_reward"}.
//	reload      → {"reload": {"file", "changes": [...]}}: the daemon
//	            re-reads its configuration and applies it live, or
//	            refuses it whole saying why ('mlbpf reload', SIGHUP).
//	shutdown    → ok; the daemon stops its models and exits, as on SIGTERM.
//
// # Events
//
// A subscriber of a model receives:
//
//	dataset   {"portion": Portion without records}: a portion was
//	          published; fetch it by its offset, learn, discard it
//	feedback  {"feedback": Feedback}, every period: the outcomes fed back
//	          (per arm: count and mean reward; the mean prediction error),
//	          the efficiency estimate with its confidence interval, and the
//	          mode controller's decision (the RFC's error back-propagation)
//	mode      {"mode", "state", "reason"}: the model's mode or state
//	          changed
//	closing   the daemon is shutting down
//
// The daemon keeps the last few portions of each model (older ones are
// evicted, OBSOLETE, whether discarded or not), and disconnects a client
// that lets hundreds of messages pile up unread: a slow agent costs
// bounded memory and never holds the daemon back.
//
// # Portions
//
// A Portion is the RFC's ml_lib_dataset: Offset (portion_offset) is the
// index of its first record in the model's record stream, Size
// (portion_size) the number of records; Type is STRUCTURE; State one of
// CLEAN, EXTRACTED_PARTIALLY (records were lost while it was collected:
// Lost), EXTRACTED_COMPLETELY, CORRUPTED (Corrupted records did not
// decode), EXTRACTION_FAILURE. Every record starts with struct
// mlbpf_record_hdr (bpf/include/mlbpf.h): the arm taken, the mode and the
// control block generation of the decision it reports.
//
// # Liveness
//
// A model whose learner is external (learner: external in the
// configuration) falls to EMERGENCY when no agent has been subscribed for
// agent_timeout while it is allowed to act: a dead agent must not be
// trusted.
package agent

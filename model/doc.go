// Package model is the ml-lib model of the kernel RFC (ml_lib.h, "ml-lib:
// Introduce Machine Learning (ML) library declarations") for mlbpf: a
// model's lifecycle and modes, its datasets, the operation tables a
// subsystem implements with their generic implementations, and the mode
// controller that promotes or demotes a model on evidence.
//
// It is pure Go: the kernel-visible part of a model is its control block,
// written through a ControlStore (package loader implements it over a
// pinned BPF array map; MemoryControlStore is for tests). The BPF appliers
// read the control block at every invocation and enforce the mode there:
// nothing is applied unless the model is RUNNING, its mode allows it and
// its lease has not expired.
//
// # The RFC, mapped
//
//	ml_lib.h                                    package model
//	------------------------------------------  ------------------------------------------------
//	enum ml_lib_system_mode                     Mode: ModeEmergency … ModeRecommendation
//	ML_LIB_MODEL_CREATED … SHUTTING_DOWN        State: StateCreated … StateShuttingDown
//	ML_LIB_SUBSYSTEM_CREATED … STOPPED          SubsystemState (its own order)
//	ML_LIB_*_DATASET types and states           DatasetType, DatasetState
//	ML_LIB_*_REQUEST_CONFIG types and states    RequestConfigType, RequestConfigState
//	struct ml_lib_model_options                 Options (+ Lease, shares, MaxMode, InitialMode)
//	struct ml_lib_model_run_config              RunConfig
//	struct ml_lib_model                         Model
//	struct ml_lib_subsystem_state               SystemState (a snapshot)
//	struct ml_lib_dataset                       Dataset
//	struct ml_lib_request_config                RequestConfig
//	struct ml_lib_user_space_request            Request
//	struct ml_lib_user_space_notification       Notification
//	struct ml_lib_user_space_recommendation     Recommendation
//	struct ml_lib_backpropagation_feedback      Feedback
//	struct ml_lib_model_operations              ModelOps
//	struct ml_lib_subsystem_state_operations    SubsystemStateOps
//	struct ml_lib_dataset_operations            DatasetOps
//	generic_*_ml_model, generic_*               GenericModelOps, GenericSubsystemStateOps, GenericDatasetOps
//	allocate_* / free_*                         Go allocation; Dataset.Allocate, DatasetOps.Init/Destroy
//	kobject /sys/<subsystem>/<ml_model>/        pinned maps; Control through a ControlStore
//	ml_model_create                             Create
//	ml_model_init, ml_model_re_init             Model.Init, Model.ReInit
//	ml_model_start, ml_model_stop               Model.Start, Model.Stop (+ Model.RenewLease)
//	ml_model_destroy                            Model.Destroy
//	get_system_state                            Model.GetSystemState
//	ml_model_get_dataset                        Model.GetDataset
//	ml_model_discard_dataset                    Model.DiscardDataset
//	ml_model_preprocess_data                    Model.PreprocessData
//	ml_model_publish_data                       Model.PublishData
//	ml_model_preprocess_recommendation          Model.PreprocessRecommendation
//	estimate_system_state                       Model.EstimateSystemState, Controller.Decide
//	apply_ml_model_recommendation               Model.ApplyRecommendation
//	execute_ml_model_operation                  Model.ExecuteOperation
//	estimate_ml_model_efficiency                Model.EstimateEfficiency → Efficiency
//	ml_model_error_backpropagation              Model.ErrorBackpropagation → Controller.Observe
//	correct_system_state                        Model.CorrectSystemState, Model.SetMode, Model.ApplyDecision
//
// # Lifecycle
//
// NextState holds the legal-transition table. An illegal call returns a
// *TransitionError wrapping ErrIllegalTransition (and ErrDestroyed after
// Destroy) that names the operation and both states, for example
// "starting tcp/cc: illegal transition from CREATED to STARTED", and
// changes nothing; so does a failing ops callback or control block write.
//
// # Modes
//
// A model starts in EMERGENCY (Create) and enters Options.InitialMode,
// LEARNING by default, at Init. The daemon's loop renews the lease, feeds
// outcomes back (ErrorBackpropagation) and calls CorrectSystemState, which
// asks the Controller: LEARNING is promoted to COLLABORATION when the
// learner's predictions beat the default on the shadow outcomes,
// COLLABORATION to RECOMMENDATION when the randomised comparison shows the
// model beating the control group, both by more than MinEffect with the
// configured confidence; a significant regression demotes one step. A
// lapsed lease, a corrupted dataset or Trip sends the model to EMERGENCY,
// which only an operator's SetMode leaves. No promotion goes above
// Options.MaxMode.
package model

package loader

// Control is struct mlbpf_control, the per-model control block the BPF
// appliers read at every invocation.
type Control = abiMlbpfControl

// RecordHeader is struct mlbpf_record_hdr, the first bytes of every ring
// buffer record.
type RecordHeader = abiMlbpfRecordHdr

// RecordHeaderSize is the size in bytes of RecordHeader.
const RecordHeaderSize = 24

// Record kinds (enum mlbpf_record_kind).
const (
	RecordSynthetic = uint16(abiMlbpfRecordKindMLBPF_REC_SYNTHETIC)
	RecordTCPConn   = uint16(abiMlbpfRecordKindMLBPF_REC_TCP_CONN)
	RecordBench     = uint16(abiMlbpfRecordKindMLBPF_REC_BENCH)
)

// ArmCount is the number of arms (MLBPF_ARM_MAX), the size of a stats map.
const ArmCount = int(abiMlbpfArmMLBPF_ARM_MAX)

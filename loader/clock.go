package loader

import "golang.org/x/sys/unix"

// MonotonicNs returns CLOCK_MONOTONIC in nanoseconds, the clock of
// bpf_ktime_get_ns and so of Control.LeaseExpiresNs.
func MonotonicNs() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return uint64(ts.Nano())
}

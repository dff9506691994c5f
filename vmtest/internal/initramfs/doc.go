// Package initramfs writes and reads the "newc" cpio archives the Linux
// kernel unpacks into its initial root filesystem (see the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst).
//
// The writer is deterministic: inode numbers count up from 1, every
// modification time is zero and owners are root, so the same input gives
// the same bytes. Parent directories are added on demand.
package initramfs

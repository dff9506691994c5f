// Package kernel finds the kernels vmtest boots: Debian's packaged
// kernels, downloaded with apt-get and unpacked with dpkg-deb into a cache
// directory (never into the host's /boot), or any bzImage a user names.
// It also picks the kernel modules a guest needs out of the kernel's
// module tree, dependencies first.
package kernel

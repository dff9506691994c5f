// Package kernel finds the kernels vmtest boots: Debian's packaged
// kernels, downloaded with apt-get and unpacked with dpkg-deb into a cache
// directory (never into the host's /boot) where vng finds their modules,
// or any kernel image or tree a user names.
package kernel

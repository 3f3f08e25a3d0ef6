// Package buildinfo carries the version stamped into every brindle binary.
package buildinfo

// Version is set at link time: -ldflags "-X .../internal/buildinfo.Version=v1.2.3".
var Version = "dev"

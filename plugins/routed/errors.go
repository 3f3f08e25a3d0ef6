package routed

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/brindle-net/brindle/conf"
)

// brindle's own CNI error codes; the spec reserves 100 and up for plugins.
const (
	// ErrIPAM: the delegated IPAM plugin failed (its own code is kept when it
	// gave one).
	ErrIPAM uint = 100
	// ErrVeth: the veth pair could not be created or removed.
	ErrVeth uint = 101
	// ErrHostSide: the host veth, its sysctls or the host route could not be
	// configured.
	ErrHostSide uint = 102
	// ErrPodSide: the pod interface, its addresses or routes could not be
	// configured.
	ErrPodSide uint = 103
	// ErrCheckFailed: CHECK found the attachment differs from prevResult.
	ErrCheckFailed uint = 104
	// ErrGC: GC could not remove an orphaned host veth.
	ErrGC uint = 105
)

// cniErr builds a CNI error with the given code: msg says what brindle was
// doing, details the underlying cause; runtimes show "msg; details".
func cniErr(code uint, msg string, cause error) *types.Error {
	details := ""
	if cause != nil {
		details = cause.Error()
	}
	return types.NewError(code, msg, details)
}

// configErr maps a config decoding or validation error to the CNI codes the
// spec defines for them.
func configErr(err error) *types.Error {
	var ce *conf.ConfigError
	if errors.As(err, &ce) {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid network config: "+err.Error(), "")
	}
	return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("invalid network config: %v", err), "")
}

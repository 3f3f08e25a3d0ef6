package routed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// BuiltinIPAM is the IPAM type whose code the plugin can run in its own
// process.
const BuiltinIPAM = "brindle-ipam"

// Plugin is the brindle CNI plugin. IPAM, when set, is brindle-ipam's code:
// a config whose ipam.type is "brindle-ipam" then has its IPAM run in this
// process, with the same config, arguments and environment the executed
// plugin would get, which spares every ADD and DEL starting a second
// process (docs/architecture.md). Every other IPAM type, or all of them
// when IPAM is nil, is executed from CNI_PATH as the CNI spec says.
type Plugin struct {
	IPAM *ipam.Plugin
}

// Funcs are the plugin's CNI commands, for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.CmdAdd, Del: p.CmdDel, Check: p.CmdCheck, Status: p.CmdStatus, GC: p.CmdGC}
}

func (p *Plugin) inProcess(c *conf.NetConf) *ipam.Plugin {
	if p.IPAM == nil || c.IPAM.Type != BuiltinIPAM {
		return nil
	}
	return p.IPAM
}

// ipamAdd runs IPAM's ADD and converts its result.
func (c *call) ipamAdd() (*current.Result, error) {
	if c.inProcess != nil {
		res, err := c.inProcess.AddResult(c.args)
		if err != nil {
			return nil, ipamErr(c.conf.IPAM.Type, "ADD", builtinErr(err))
		}
		return res, nil
	}
	r, err := invoke.DelegateAdd(context.Background(), c.conf.IPAM.Type, c.args.StdinData, nil)
	if err != nil {
		return nil, ipamErr(c.conf.IPAM.Type, "ADD", err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, cniErr(ErrIPAM, fmt.Sprintf("ipam plugin %q: convert result", c.conf.IPAM.Type), err)
	}
	return res, nil
}

func (c *call) ipamDel() error {
	return c.ipamRun("DEL", func(p *ipam.Plugin) error { return p.Del(c.args) }, invoke.DelegateDel)
}

func (c *call) ipamCheck() error {
	return c.ipamRun("CHECK", func(p *ipam.Plugin) error { return p.Check(c.args) }, invoke.DelegateCheck)
}

func (c *call) ipamGC() error {
	return c.ipamRun("GC", func(p *ipam.Plugin) error { return p.GC(c.args) }, invoke.DelegateGC)
}

func (c *call) ipamStatus() error {
	return c.ipamRun("STATUS", func(p *ipam.Plugin) error { return p.Status(c.args) }, invoke.DelegateStatus)
}

// ipamRun runs an IPAM command that returns no result, in this process or
// by executing the plugin.
func (c *call) ipamRun(cmd string, builtin func(*ipam.Plugin) error,
	delegate func(context.Context, string, []byte, invoke.Exec) error) error {
	var err error
	if c.inProcess != nil {
		err = builtinErr(builtin(c.inProcess))
	} else {
		err = delegate(context.Background(), c.conf.IPAM.Type, c.args.StdinData, nil)
	}
	if err != nil {
		return ipamErr(c.conf.IPAM.Type, cmd, err)
	}
	return nil
}

// builtinErr is the error the executed plugin would have printed: skel
// prints an error that is not a *types.Error with code 999.
func builtinErr(err error) error {
	var te *types.Error
	if err == nil || errors.As(err, &te) {
		return err
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// ipamErr keeps the IPAM plugin's own error code and says which plugin and
// command failed. A plugin that is not in CNI_PATH is a config error.
func ipamErr(plugin, cmd string, err error) error {
	var te *types.Error
	if errors.As(err, &te) {
		return types.NewError(te.Code, fmt.Sprintf("ipam plugin %q %s: %s", plugin, cmd, te.Msg), te.Details)
	}
	if _, ferr := invoke.FindInPath(plugin, filepath.SplitList(os.Getenv("CNI_PATH"))); ferr != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("ipam.type %q: no such plugin in CNI_PATH %q", plugin, os.Getenv("CNI_PATH")), ferr.Error())
	}
	return cniErr(ErrIPAM, fmt.Sprintf("ipam plugin %q %s", plugin, cmd), err)
}

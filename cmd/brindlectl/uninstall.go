package main

import (
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/brindle-net/brindle/uninstall"
)

func init() { register("", newUninstallCmd) }

// newUninstallCmd is `brindlectl uninstall`: what the cleanup DaemonSet
// (conf/k8s/uninstall) runs on each node after brindle's DaemonSet is gone.
// It needs no etcd.
func newUninstallCmd(a *app) *cobra.Command {
	var o uninstall.Options
	var binaries string
	var wait bool
	c := &cobra.Command{
		Use:   "uninstall",
		Short: "remove brindle from this node: its routes, tunnels, nftables tables, CNI binaries and config, state",
		Long: "Remove what brindle put on this node: routes of protocol 98 (the blocks' blackholes and the\n" +
			"routes to other nodes), vxlan.brindle and brindle's address on tunl0, the nftables tables named\n" +
			"brindle, the network config and the etcd TLS copies in --net-dir, the binaries in --bin-dir,\n" +
			"/var/lib/brindle and /var/log/brindle. Forwarding stays on unless --restore-forwarding; host\n" +
			"veths of pods still attached stay unless --veths. Run it after brindled has stopped (a running\n" +
			"brindled puts its routes back). Needs no etcd: remove the node's records with\n" +
			"`brindlectl node delete NODE` and `brindlectl ipam release`.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			for _, b := range strings.Split(binaries, ",") {
				if b = strings.TrimSpace(b); b != "" {
					o.Binaries = append(o.Binaries, b)
				}
			}
			r, err := uninstall.Run(o)
			for _, d := range r.Done {
				fmt.Fprintln(a.out, d)
			}
			for _, l := range r.Left {
				fmt.Fprintln(a.out, "left: "+l)
			}
			if len(r.Done) == 0 && err == nil {
				fmt.Fprintln(a.out, "nothing of brindle's found on this node")
			}
			if wait && err == nil {
				// The cleanup DaemonSet's pod stays up (Ready) once done.
				ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGTERM, syscall.SIGINT)
				defer stop()
				<-ctx.Done()
			}
			return err
		},
	}
	fs := c.Flags()
	fs.StringVar(&o.BinDir, "bin-dir", getenv("CNI_BIN_DIR", "/opt/cni/bin"), "the runtime's CNI binary directory (env CNI_BIN_DIR)")
	fs.StringVar(&o.NetDir, "net-dir", getenv("CNI_NET_DIR", "/etc/cni/net.d"), "the runtime's CNI config directory (env CNI_NET_DIR)")
	fs.StringVar(&o.ConfName, "conf-name", getenv("CNI_CONF_NAME", "10-brindle.conflist"), "file name of brindle's network config (env CNI_CONF_NAME)")
	fs.StringVar(&binaries, "binaries", getenv("CNI_BINARIES", "brindle,brindle-ipam"), "binaries to remove from --bin-dir (portmap may serve another CNI: add it to remove it)")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/brindle", "brindle's state directory (node name, MTU, state file, IPAM notes)")
	fs.StringVar(&o.LogDir, "log-dir", "/var/log/brindle", "the CNI plugin's log directory ('' keeps it)")
	fs.BoolVar(&o.Veths, "veths", false, "also delete the host veths of pods still attached (they lose their network)")
	fs.BoolVar(&o.RestoreForwarding, "restore-forwarding", false, "set ip_forward and IPv6 forwarding back to what brindled found when it first started")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print what would be removed, change nothing")
	fs.BoolVar(&wait, "wait", false, "when done, wait for SIGTERM (the cleanup DaemonSet's pod stays up)")
	return c
}

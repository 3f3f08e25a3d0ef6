package routed

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/brindle-net/brindle/internal/nftquery"
	"github.com/brindle-net/brindle/internal/sysctl"
)

// AdmitWait bounds how long ADD waits for brindled to put the pod's
// endpoint into table inet brindle.
var AdmitWait = 5 * time.Second

// waitAdmitted returns once brindle's filter table holds the attachment's
// endpoint: from then on its anti-spoofing accepts the pod's addresses
// and, in Kubernetes, its NetworkPolicies are in force. Until then the
// table drops the pod's traffic both ways (default deny), so the first
// packet is never one its policies deny. Without the table (no brindled on
// this host) there is nothing to wait for. If brindled does not admit the
// pod within AdmitWait, ADD still succeeds and the pod stays in default
// deny until brindled does.
func (c *call) waitAdmitted(addrs []netip.Addr) {
	if ok, err := nftquery.TableExists(); err != nil || !ok {
		return
	}
	start := time.Now()
	delay := time.Millisecond
	for {
		ok, err := nftquery.Admitted(c.veth, addrs)
		if ok {
			c.log.Debug("endpoint in table inet brindle", "veth", c.veth, "waited", time.Since(start).String())
			return
		}
		if time.Since(start) > AdmitWait {
			c.log.Warn("brindled has not admitted the pod yet; it stays in default deny until it does",
				"veth", c.veth, "waited", time.Since(start).String(), "err", err)
			return
		}
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// looseHost says what would let this attachment send from an address that
// is not its own if brindle's anti-spoofing were not in force ("" when
// nothing would): for IPv4 the kernel applies the larger of
// net.ipv4.conf.all.rp_filter and the veth's, so all=2 makes it loose
// whatever the plugin set; IPv6 has no rp_filter.
func looseHost(veth string, addrs []netip.Addr) (v4why, v6why string) {
	v4, v6 := families(addrs)
	if v4 {
		all, _ := sysctl.Get("net/ipv4/conf/all/rp_filter")
		own, _ := sysctl.Get(sysctl.Iface("ipv4", veth, "rp_filter"))
		if eff := max(all, own); eff != "1" {
			v4why = fmt.Sprintf("rp_filter in force is %s (net.ipv4.conf.all.rp_filter=%s, %s's=%s)", eff, all, veth, own)
		}
	}
	if v6 {
		v6why = "IPv6 has no rp_filter"
	}
	return v4why, v6why
}

// checkAntiSpoofing fails CHECK when the attachment could send from an
// address that is not its own: table inet brindle exists (brindled runs
// here) but does not hold it, or the host's IPv4 rp_filter is loose and no
// table holds it. A host where brindled never ran has no IPv6 source
// validation at all; that is logged, not failed, since the plugin alone
// cannot provide it.
func checkAntiSpoofing(log *slog.Logger, veth string, addrs []netip.Addr) error {
	table, err := nftquery.TableExists()
	if err != nil {
		return fmt.Errorf("table inet brindle cannot be read: %w", err)
	}
	ok := false
	if table {
		if ok, err = nftquery.Admitted(veth, addrs); err != nil {
			return fmt.Errorf("table inet brindle cannot be read: %w", err)
		}
	}
	loose4, loose6 := looseHost(veth, addrs)
	switch {
	case ok:
		return nil
	case table:
		return fmt.Errorf("table inet brindle does not hold this attachment's addresses %v (is brindled running?): its traffic is dropped, and source validation rests on the kernel alone (%s)",
			addrs, strings.Join(slices.DeleteFunc([]string{loose4, loose6}, func(s string) bool { return s == "" }), "; "))
	case loose4 != "":
		return fmt.Errorf("loose host: %s, and no table inet brindle (is brindled running?): the pod could send from any source", loose4)
	case loose6 != "":
		log.Warn("no table inet brindle (is brindled running?): no source validation for the pod's IPv6 addresses", "veth", veth)
	}
	return nil
}

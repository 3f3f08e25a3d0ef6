package enforcer

import (
	"fmt"
	"strings"

	"github.com/brindle-net/brindle/internal/sysctl"
)

// looseHost says why the kernel's reverse-path filter alone would let a
// pod send from an address that is not its own, or "" if it would not:
// the kernel applies the larger of net.ipv4.conf.all.rp_filter and the
// interface's, so all=2 makes every veth loose whatever the plugin set,
// 0 on a veth turns it off, and IPv6 has no rp_filter at all. brindle's
// anti-spoofing in table inet brindle does not depend on any of these.
func (e *Enforcer) looseHost() string {
	all, err := sysctl.Get("net/ipv4/conf/all/rp_filter")
	if err != nil {
		return ""
	}
	var why []string
	if all == "2" {
		why = append(why, "net.ipv4.conf.all.rp_filter=2")
	}
	e.mu.Lock()
	prog := e.prog
	e.mu.Unlock()
	v6 := false
	if prog != nil {
		for _, ep := range prog.Endpoints {
			if v, err := sysctl.Get(sysctl.Iface("ipv4", ep.Veth, "rp_filter")); err == nil && v == "0" && all == "0" {
				why = append(why, fmt.Sprintf("net.ipv4.conf.%s.rp_filter=0", ep.Veth))
			}
			for _, a := range ep.Addrs {
				v6 = v6 || a.Is6()
			}
		}
	}
	if v6 {
		why = append(why, "IPv6 pods (no rp_filter for IPv6)")
	}
	return strings.Join(why, ", ")
}

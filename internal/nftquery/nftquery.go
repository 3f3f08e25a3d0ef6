// Package nftquery asks the kernel, with one netlink request each, whether
// brindle's filter table (table inet brindle) exists and whether it holds a
// pod attachment's endpoint. The CNI plugin uses it (ADD waits for its
// endpoint, CHECK reports a loose host), so it depends on nothing beyond the
// netlink package the plugin already uses.
package nftquery

import (
	"errors"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Table is the filter table's name (family inet).
const Table = "brindle"

// genmsg is nfnetlink's header, first in the payload.
type genmsg []byte

func (g genmsg) Len() int          { return len(g) }
func (g genmsg) Serialize() []byte { return g }

func request(msg int, attrs ...*nl.RtAttr) error {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|msg, unix.NLM_F_ACK)
	req.AddData(genmsg{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0})
	for _, a := range attrs {
		req.AddData(a)
	}
	_, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	return err
}

func str(s string) []byte { return append([]byte(s), 0) }

// TableExists reports whether table inet brindle is in the kernel.
func TableExists() (bool, error) {
	err := request(unix.NFT_MSG_GETTABLE, nl.NewRtAttr(unix.NFTA_TABLE_NAME, str(Table)))
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

// HasElement reports whether set (of table inet brindle) holds key, the
// element's bytes as the kernel keeps them.
func HasElement(set string, key []byte) (bool, error) {
	elems := nl.NewRtAttr(unix.NLA_F_NESTED|unix.NFTA_SET_ELEM_LIST_ELEMENTS, nil)
	elem := elems.AddRtAttr(unix.NLA_F_NESTED|1 /* NFTA_LIST_ELEM */, nil)
	k := elem.AddRtAttr(unix.NLA_F_NESTED|unix.NFTA_SET_ELEM_KEY, nil)
	k.AddRtAttr(unix.NFTA_DATA_VALUE, key)
	err := request(unix.NFT_MSG_GETSETELEM,
		nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_TABLE, str(Table)),
		nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_SET, str(set)), elems)
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

// Admitted reports whether the table holds every one of the attachment's
// addresses for host veth veth: its anti-spoofing accepts them from veth
// and its policy (or, outside Kubernetes, no policy) is in force for them.
func Admitted(veth string, addrs []netip.Addr) (bool, error) {
	for _, a := range addrs {
		set := "eps4"
		if a.Is6() {
			set = "eps6"
		}
		key := make([]byte, unix.IFNAMSIZ)
		copy(key, veth)
		ok, err := HasElement(set, append(key, a.AsSlice()...))
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

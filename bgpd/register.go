package bgpd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// DetectIPv4 finds the node's IPv4 address with its subnet from spec:
//
//	"autodetect"         the address of the interface holding the default route
//	"can-reach=ADDR"     the source address the kernel uses toward ADDR
//	"interface=NAME"     the first IPv4 address of interface NAME
//	"192.0.2.10/24"      exactly this
func DetectIPv4(spec string) (netip.Prefix, error) {
	switch {
	case spec == "" || spec == "autodetect":
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return netip.Prefix{}, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || prefixOf(r.Dst, netlink.FAMILY_V4).Bits() == 0) && r.LinkIndex > 0 {
				return linkIPv4(r.LinkIndex, netip.Addr{})
			}
		}
		return netip.Prefix{}, errors.New("--ip=autodetect: no IPv4 default route; give --ip ADDR/LEN or --ip can-reach=ADDR")
	case strings.HasPrefix(spec, "can-reach="):
		dst, err := netip.ParseAddr(strings.TrimPrefix(spec, "can-reach="))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("--ip %s: %w", spec, err)
		}
		rs, err := netlink.RouteGet(net.IP(dst.AsSlice()))
		if err != nil || len(rs) == 0 {
			return netip.Prefix{}, fmt.Errorf("--ip %s: no route: %v", spec, err)
		}
		src, _ := netip.AddrFromSlice(rs[0].Src)
		return linkIPv4(rs[0].LinkIndex, src.Unmap())
	case strings.HasPrefix(spec, "interface="):
		l, err := netlink.LinkByName(strings.TrimPrefix(spec, "interface="))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("--ip %s: %w", spec, err)
		}
		return linkIPv4(l.Attrs().Index, netip.Addr{})
	}
	p, err := netip.ParsePrefix(spec)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("--ip %q: want autodetect, can-reach=ADDR, interface=NAME or an IPv4 ADDR/LEN", spec)
	}
	return p, nil
}

// DetectIPv6 finds the node's IPv6 address with its subnet from spec:
// "none" (no IPv6), "autodetect" (the global address of the interface
// holding the IPv6 default route, or none if there is no such route),
// "can-reach=ADDR", "interface=NAME", or an address with prefix length.
func DetectIPv6(spec string) (netip.Prefix, error) {
	switch {
	case spec == "" || spec == "none":
		return netip.Prefix{}, nil
	case spec == "autodetect":
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return netip.Prefix{}, fmt.Errorf("list IPv6 routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || prefixOf(r.Dst, netlink.FAMILY_V6).Bits() == 0) && r.LinkIndex > 0 {
				return linkAddr(r.LinkIndex, netip.Addr{}, netlink.FAMILY_V6)
			}
		}
		return netip.Prefix{}, nil
	case strings.HasPrefix(spec, "can-reach="):
		dst, err := netip.ParseAddr(strings.TrimPrefix(spec, "can-reach="))
		if err != nil || !dst.Is6() {
			return netip.Prefix{}, fmt.Errorf("--ip6 %s: want an IPv6 address", spec)
		}
		rs, err := netlink.RouteGet(net.IP(dst.AsSlice()))
		if err != nil || len(rs) == 0 {
			return netip.Prefix{}, fmt.Errorf("--ip6 %s: no route: %v", spec, err)
		}
		src, _ := netip.AddrFromSlice(rs[0].Src)
		return linkAddr(rs[0].LinkIndex, src, netlink.FAMILY_V6)
	case strings.HasPrefix(spec, "interface="):
		l, err := netlink.LinkByName(strings.TrimPrefix(spec, "interface="))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("--ip6 %s: %w", spec, err)
		}
		return linkAddr(l.Attrs().Index, netip.Addr{}, netlink.FAMILY_V6)
	}
	p, err := netip.ParsePrefix(spec)
	if err != nil || !p.Addr().Is6() {
		return netip.Prefix{}, fmt.Errorf("--ip6 %q: want none, autodetect, can-reach=ADDR, interface=NAME or an IPv6 ADDR/LEN", spec)
	}
	return p, nil
}

func linkIPv4(index int, want netip.Addr) (netip.Prefix, error) {
	return linkAddr(index, want, netlink.FAMILY_V4)
}

// linkAddr returns want's prefix on the link, or its first global address
// of the family when want is not set.
func linkAddr(index int, want netip.Addr, family int) (netip.Prefix, error) {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return netip.Prefix{}, err
	}
	addrs, err := netlink.AddrList(l, family)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		ones, _ := a.Mask.Size()
		if (want.IsValid() && ip == want) || (!want.IsValid() && a.Scope == unix.RT_SCOPE_UNIVERSE) {
			return netip.PrefixFrom(ip, ones), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("interface %s has no matching global address", l.Attrs().Name)
}

// Register writes the node's record, keeping what an operator stored that
// the daemon was not told (AS number, route-reflector cluster, labels, when
// left empty here). Guarded by the key's revision, retried on conflict.
func Register(ctx context.Context, cli *clientv3.Client, n conf.Node) (conf.Node, error) {
	key := ipam.Prefix + "nodes/" + n.Name
	for attempt := 0; ; attempt++ {
		res, err := cli.Get(ctx, key)
		if err != nil {
			return n, fmt.Errorf("read node %s: %w", n.Name, err)
		}
		rec := n
		var rev int64
		if len(res.Kvs) == 1 {
			rev = res.Kvs[0].ModRevision
			old, err := conf.UnmarshalNode(res.Kvs[0].Value)
			if err == nil {
				if rec.ASNumber == 0 {
					rec.ASNumber = old.ASNumber
				}
				if rec.RouteReflectorClusterID == "" {
					rec.RouteReflectorClusterID = old.RouteReflectorClusterID
				}
				if rec.Labels == nil {
					rec.Labels = maps.Clone(old.Labels)
				}
				if rec.TunnelIPv4 == "" {
					rec.TunnelIPv4, rec.VXLANMAC = old.TunnelIPv4, old.VXLANMAC
				}
			}
		}
		rec.V = conf.NodeSchema
		rec.Registered = time.Now().UTC()
		if err := rec.Validate(); err != nil {
			return n, err
		}
		b, _ := json.Marshal(rec)
		cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
		if rev == 0 {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		tr, err := cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return n, fmt.Errorf("write node %s: %w", n.Name, err)
		}
		if tr.Succeeded {
			return rec, nil
		}
		if attempt > 20 {
			return n, fmt.Errorf("write node %s: too many conflicting writers", n.Name)
		}
	}
}

// Deregister deletes the node's record: its peers drop their sessions with
// it and withdraw its routes.
func Deregister(ctx context.Context, cli *clientv3.Client, name string) error {
	_, err := cli.Delete(ctx, ipam.Prefix+"nodes/"+name)
	return err
}

// WriteNodename records the node name for the CNI plugins, atomically.
func WriteNodename(path, name string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

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
//
// A node must have one: autodetect without a default route is an error.
func DetectIPv4(spec string) (netip.Prefix, error) {
	if spec == "" {
		spec = "autodetect"
	}
	p, err := detect("--ip", spec, netlink.FAMILY_V4)
	if err == nil && !p.IsValid() {
		err = errors.New("--ip=autodetect: no IPv4 default route; give --ip ADDR/LEN or --ip can-reach=ADDR")
	}
	return p, err
}

// DetectIPv6 finds the node's IPv6 address with its subnet from spec:
// "none" (no IPv6), or as DetectIPv4; autodetect without an IPv6 default
// route means none.
func DetectIPv6(spec string) (netip.Prefix, error) {
	if spec == "" || spec == "none" {
		return netip.Prefix{}, nil
	}
	return detect("--ip6", spec, netlink.FAMILY_V6)
}

// detect implements both: flag names the flag in errors. autodetect
// without a default route returns no prefix and no error.
func detect(flag, spec string, family int) (netip.Prefix, error) {
	is := func(a netip.Addr) bool { return a.Is4() == (family == netlink.FAMILY_V4) }
	switch {
	case spec == "autodetect":
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return netip.Prefix{}, fmt.Errorf("%s=autodetect: list routes: %w", flag, err)
		}
		for _, r := range routes {
			if (r.Dst == nil || prefixOf(r.Dst, family).Bits() == 0) && r.LinkIndex > 0 {
				return linkAddr(r.LinkIndex, netip.Addr{}, family)
			}
		}
		return netip.Prefix{}, nil
	case strings.HasPrefix(spec, "can-reach="):
		dst, err := netip.ParseAddr(strings.TrimPrefix(spec, "can-reach="))
		if err != nil || !is(dst) {
			return netip.Prefix{}, fmt.Errorf("%s %s: want an address of the family", flag, spec)
		}
		rs, err := netlink.RouteGet(net.IP(dst.AsSlice()))
		if err != nil || len(rs) == 0 {
			return netip.Prefix{}, fmt.Errorf("%s %s: no route: %v", flag, spec, err)
		}
		src, _ := netip.AddrFromSlice(rs[0].Src)
		return linkAddr(rs[0].LinkIndex, src.Unmap(), family)
	case strings.HasPrefix(spec, "interface="):
		l, err := netlink.LinkByName(strings.TrimPrefix(spec, "interface="))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s %s: %w", flag, spec, err)
		}
		return linkAddr(l.Attrs().Index, netip.Addr{}, family)
	}
	p, err := netip.ParsePrefix(spec)
	if err != nil || !is(p.Addr()) {
		return netip.Prefix{}, fmt.Errorf("%s %q: want autodetect, can-reach=ADDR, interface=NAME or an address of the family with its prefix length", flag, spec)
	}
	return p, nil
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

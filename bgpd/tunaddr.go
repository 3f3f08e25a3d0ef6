package bgpd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// TunnelHandle is the IPAM handle that holds a node's tunnel address.
func TunnelHandle(node string) string { return "tunnel-" + node }

// TunnelAddrs gives a node its tunnel address from its own block through
// IPAM, under the node's own handle, and publishes it with the VTEP MAC in
// the node record.
type TunnelAddrs struct {
	Cli   *clientv3.Client
	Alloc *ipam.Allocator
}

// Ensure assigns node a tunnel address from one of pools (idempotent: a
// node that holds one keeps it) and publishes it and mac.
func (t *TunnelAddrs) Ensure(ctx context.Context, node string, pools []string, mac string) (netip.Addr, error) {
	got, err := t.Alloc.Assign(ctx, ipam.AssignRequest{Handle: TunnelHandle(node), Node: node, IPv4: true, IPv4Pools: pools, Use: conf.UseTunnel,
		Attrs: map[string]string{"type": "tunnel"}})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("assign tunnel address: %w", err)
	}
	var addr netip.Addr
	for _, h := range got {
		if h.Addr.Is4() {
			addr = h.Addr
		}
	}
	if !addr.IsValid() {
		return addr, fmt.Errorf("assign tunnel address: IPAM gave no IPv4 address")
	}
	return addr, t.publish(ctx, node, func(n *conf.Node) { n.TunnelIPv4, n.VXLANMAC = addr.String(), mac })
}

// Release gives the tunnel address back and removes it from the node
// record (the VTEP MAC stays: it is the node's, whether in use or not).
func (t *TunnelAddrs) Release(ctx context.Context, node string) error {
	if err := t.publish(ctx, node, func(n *conf.Node) { n.TunnelIPv4 = "" }); err != nil {
		return err
	}
	if _, err := t.Alloc.ReleaseHandle(ctx, TunnelHandle(node)); err != nil {
		return fmt.Errorf("release tunnel address: %w", err)
	}
	return nil
}

// publish applies change to the node record in a transaction guarded by
// its revision, retried on conflict; no write when nothing changes.
func (t *TunnelAddrs) publish(ctx context.Context, node string, change func(*conf.Node)) error {
	key := ipam.Prefix + "nodes/" + node
	for range 20 {
		res, err := t.Cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read node %s: %w", node, err)
		}
		if len(res.Kvs) != 1 {
			return fmt.Errorf("node %s is not registered", node)
		}
		n, err := conf.UnmarshalNode(res.Kvs[0].Value)
		if err != nil {
			return err
		}
		old := n
		change(&n)
		if n.TunnelIPv4 == old.TunnelIPv4 && n.VXLANMAC == old.VXLANMAC {
			return nil
		}
		b, _ := json.Marshal(n)
		tr, err := t.Cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", res.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return fmt.Errorf("write node %s: %w", node, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("write node %s: too many conflicting writers", node)
}

package bgpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/ipam"
)

// nameClaimTTL is how long a node name stays claimed after its brindled
// stopped renewing it: a brindled restarted on the same host (same
// address) takes it over at once; another host has to wait this long.
const nameClaimTTL = 30 // seconds

// ErrNameInUse is returned when another running brindled, at another
// address, holds the node name: most likely a cloned host.
var ErrNameInUse = errors.New("node name in use by another running brindled")

// NameClaim holds a node's name for its running brindled: the key
// nodeclaims/<name> with the node's address as its value, on an etcd lease
// kept alive while the daemon runs. Two hosts under one name (a cloned VM,
// a copied config) would otherwise overwrite each other's node record and
// split the node's routes between them.
type NameClaim struct {
	cli  *clientv3.Client
	name string
	addr string
	log  *slog.Logger
}

// NewNameClaim prepares the claim of name by the brindled at addr.
func NewNameClaim(cli *clientv3.Client, name, addr string, log *slog.Logger) *NameClaim {
	return &NameClaim{cli: cli, name: name, addr: addr, log: log}
}

func (n *NameClaim) key() string { return ipam.NodeClaimKey(n.name) }

// Claim takes the name, or fails with ErrNameInUse naming the holder. The
// claim then lives until ctx ends; if etcd loses it (an outage longer than
// the lease) it is claimed again when etcd is back, and a clash found then
// is logged.
func (n *NameClaim) Claim(ctx context.Context) error {
	id, err := n.claimOnce(ctx)
	if err != nil {
		return err
	}
	go n.keep(ctx, id)
	return nil
}

func (n *NameClaim) claimOnce(ctx context.Context) (clientv3.LeaseID, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lease, err := n.cli.Grant(cctx, nameClaimTTL)
	if err != nil {
		return 0, fmt.Errorf("claim node name %s: %w", n.name, err)
	}
	k := n.key()
	tr, err := n.cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, n.addr, clientv3.WithLease(lease.ID))).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return 0, fmt.Errorf("claim node name %s: %w", n.name, err)
	}
	if tr.Succeeded {
		return lease.ID, nil
	}
	kvs := tr.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 && string(kvs[0].Value) != n.addr {
		_, _ = n.cli.Revoke(cctx, lease.ID)
		return 0, fmt.Errorf("%w: %s is held by the brindled at %s (a cloned host? give each node its own --nodename); "+
			"a claim lapses %d s after its brindled stops", ErrNameInUse, n.name, kvs[0].Value, nameClaimTTL)
	}
	// Our own address: an earlier run of this daemon; take the key over.
	rev := int64(0)
	if len(kvs) == 1 {
		rev = kvs[0].ModRevision
	}
	tr, err = n.cli.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
		Then(clientv3.OpPut(k, n.addr, clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		return 0, fmt.Errorf("claim node name %s: %w", n.name, err)
	}
	if !tr.Succeeded {
		return 0, fmt.Errorf("claim node name %s: changed meanwhile; try again", n.name)
	}
	return lease.ID, nil
}

// keep renews the lease; when it is lost, it claims the name again.
func (n *NameClaim) keep(ctx context.Context, id clientv3.LeaseID) {
	for ctx.Err() == nil {
		ch, err := n.cli.KeepAlive(ctx, id)
		if err == nil {
			for range ch {
			}
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("node name claim lost (etcd unreachable?); claiming it again", "node", n.name)
		for ctx.Err() == nil {
			if id, err = n.claimOnce(ctx); err == nil {
				break
			}
			if errors.Is(err, ErrNameInUse) {
				n.log.Error("node name taken over by another brindled", "err", err)
			}
			sleepCtx(ctx, 2*time.Second)
		}
	}
}

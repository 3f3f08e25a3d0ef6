package nft

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/brindle-net/brindle/internal/testenv"
)

// TestReadDrops: packets the table logs to an nflog group come back as
// Drops with their kind, addresses, protocol and port.
func TestReadDrops(t *testing.T) {
	requireNft(t)
	n := testenv.NewNS(t)
	run(t, n, "ip", "link", "set", "lo", "up")
	run(t, n, "nft", `add table inet t; add chain inet t o { type filter hook output priority 0; }; add rule inet t o udp dport 9 log prefix "brindle:ingress:" group 45`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Drop, 10)
	errc := make(chan error, 1)
	go func() { errc <- ReadDrops(ctx, int(n.Fd()), 45, func(d Drop) { got <- d }) }()
	time.Sleep(200 * time.Millisecond)
	run(t, n, "bash", "-c", "echo x > /dev/udp/127.0.0.1/9 || true")
	select {
	case d := <-got:
		if d.Kind != "ingress" || d.Src != netip.MustParseAddr("127.0.0.1") || d.Proto != ProtoUDP || d.Port != 9 {
			t.Fatalf("drop %+v", d)
		}
	case err := <-errc:
		t.Fatalf("ReadDrops: %v", err)
	case <-time.After(3 * time.Second):
		t.Fatal("no drop read from nflog")
	}
}

package bgpd

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
)

// disableBGPExport: a pool's paths are never sent to a peer outside the
// cluster, and are sent to brindle's own nodes; real GoBGP sessions over
// loopback. a listens; b (an external BGPPeer of a) and c (a mesh node)
// dial it. Changing the sets of an established session resets it, which
// the e2e test with BIRD covers (GoBGP races with itself on a session that
// comes back, which -race would report here).
func TestNoExportPoolsKeptFromExternalPeers(t *testing.T) {
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	speaker := func(id string, listen int, addrs ...string) *Speaker {
		s, err := NewSpeaker(ctx, GlobalSpec{ASN: 64512, RouterID: netip.MustParseAddr(id), ListenPort: listen, ListenAddresses: addrs}, quiet())
		must(err)
		t.Cleanup(func() { s.Stop(true) })
		return s
	}
	a := speaker("10.0.0.1", port, "127.0.0.1")
	b := speaker("10.0.0.2", -1)
	c := speaker("10.0.0.3", -1)
	pools := []conf.IPPool{
		{Metadata: conf.ObjectMeta{Name: "private"}, Spec: conf.IPPoolSpec{CIDR: "10.1.0.0/16", DisableBGPExport: true}},
		{Metadata: conf.ObjectMeta{Name: "public"}, Spec: conf.IPPoolSpec{CIDR: "10.2.0.0/16"}},
	}
	peers := []PeerSpec{
		{Address: netip.MustParseAddr("127.0.0.2"), ASN: 64512, Passive: true, Name: "b", Kind: "bgppeer"},
		{Address: netip.MustParseAddr("127.0.0.3"), ASN: 64512, Passive: true, Name: "c", Kind: "mesh"},
	}
	// As the controller does: the sets first, then the peers.
	must(a.SetNoExport(ctx, NoExportPrefixes(pools), ExternalPeers(peers)))
	must(a.SetPeers(ctx, peers))
	must(a.SetExports(ctx, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/26"), netip.MustParsePrefix("10.1.9.9/32"),
		netip.MustParsePrefix("10.2.0.0/26")}, netip.MustParseAddr("10.0.0.1"), netip.Addr{}))
	for _, s := range []struct {
		sp    *Speaker
		local string
	}{{b, "127.0.0.2"}, {c, "127.0.0.3"}} {
		must(s.sp.SetImportRanges(ctx, []ImportRange{
			{Prefix: netip.MustParsePrefix("10.1.0.0/16"), MinLen: 16, MaxLen: 32},
			{Prefix: netip.MustParsePrefix("10.2.0.0/16"), MinLen: 16, MaxLen: 32},
		}))
		must(s.sp.SetPeers(ctx, []PeerSpec{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 64512, Port: port, Name: "a", Kind: "mesh",
			LocalAddress: netip.MustParseAddr(s.local)}}))
	}
	all := []string{"10.1.0.0/26 via 10.0.0.1", "10.1.9.9/32 via 10.0.0.1", "10.2.0.0/26 via 10.0.0.1"}
	public := []string{"10.2.0.0/26 via 10.0.0.1"}
	waitFor(t, 20*time.Second, "c, a mesh peer, learns every pool", func() bool { return slices.Equal(ribStrings(c), all) })
	waitFor(t, 20*time.Second, "b, an external peer, learns the public pool", func() bool { return slices.Equal(ribStrings(b), public) })
	// A new address in the private pool goes to c and not to b.
	must(a.SetExports(ctx, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/26"), netip.MustParsePrefix("10.1.9.9/32"),
		netip.MustParsePrefix("10.1.7.7/32"), netip.MustParsePrefix("10.2.0.0/26")}, netip.MustParseAddr("10.0.0.1"), netip.Addr{}))
	all = []string{"10.1.0.0/26 via 10.0.0.1", "10.1.7.7/32 via 10.0.0.1", "10.1.9.9/32 via 10.0.0.1", "10.2.0.0/26 via 10.0.0.1"}
	waitFor(t, 5*time.Second, "c learns the new address", func() bool { return slices.Equal(ribStrings(c), all) })
	time.Sleep(200 * time.Millisecond) // b would have it by now
	if got := ribStrings(b); !slices.Equal(got, public) {
		t.Fatalf("external peer's RIB %v, want %v", got, public)
	}
	ps, _ := b.Peers(ctx)
	if len(ps) != 1 || ps[0].Received != 1 {
		t.Fatalf("b received %+v; want exactly the public block", ps)
	}
}

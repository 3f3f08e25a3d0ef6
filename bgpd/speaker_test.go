package bgpd

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// twoSpeakers runs two real GoBGP speakers in this process over loopback:
// a listens on a free port for b (passive); b dials from 127.0.0.2.
func twoSpeakers(t *testing.T) (a, b *Speaker) {
	t.Helper()
	ctx := t.Context()
	port := freePort(t)
	var err error
	a, err = NewSpeaker(ctx, GlobalSpec{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1"), ListenPort: port, ListenAddresses: []string{"127.0.0.1"}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(true) })
	b, err = NewSpeaker(ctx, GlobalSpec{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.2"), ListenPort: -1}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(true) })
	if err := a.SetPeers(ctx, []PeerSpec{{Address: netip.MustParseAddr("127.0.0.2"), ASN: 64512, Passive: true, Name: "b", Kind: "mesh"}}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeers(ctx, []PeerSpec{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 64512, Port: port, Name: "a", Kind: "mesh",
		LocalAddress: netip.MustParseAddr("127.0.0.2")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "session established", func() bool {
		ps, _ := b.Peers(ctx)
		return len(ps) == 1 && ps[0].State == "Established"
	})
	return a, b
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ribStrings(s *Speaker) []string {
	var out []string
	for _, p := range s.RIB() {
		out = append(out, p.Prefix.String()+" via "+p.NextHop.String())
	}
	return out
}

func TestSpeakerExportImportWithdraw(t *testing.T) {
	a, b := twoSpeakers(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.SetImportRanges(ctx, []ImportRange{
		{Prefix: netip.MustParsePrefix("10.244.0.0/16"), MinLen: 26, MaxLen: 32},
		{Prefix: netip.MustParsePrefix("fd00:244::/48"), MinLen: 122, MaxLen: 128},
	}))
	nh4, nh6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	must(a.SetExports(ctx, []netip.Prefix{
		netip.MustParsePrefix("10.244.1.0/26"),
		netip.MustParsePrefix("10.244.9.7/32"),
		netip.MustParsePrefix("fd00:244:0:1::/122"),
		// Not the cluster's: b must not take these.
		netip.MustParsePrefix("0.0.0.0/0"),
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("10.244.0.0/16"),
		netip.MustParsePrefix("10.99.1.0/26"),
	}, nh4, nh6))
	want := []string{"10.244.1.0/26 via 10.0.0.1", "10.244.9.7/32 via 10.0.0.1", "fd00:244:0:1::/122 via fd00::1"}
	waitFor(t, 5*time.Second, "b learns the cluster prefixes", func() bool { return slices.Equal(ribStrings(b), want) })
	time.Sleep(200 * time.Millisecond) // anything else would have arrived by now
	if got := ribStrings(b); !slices.Equal(got, want) {
		t.Fatalf("b's RIB = %v, want exactly %v", got, want)
	}
	ps, _ := b.Peers(ctx)
	if ps[0].Received != 7 || ps[0].Accepted != 3 {
		t.Errorf("b's view of a: %+v; want 7 received, 3 accepted", ps[0])
	}

	// Withdraw one prefix: exactly it disappears.
	must(a.SetExports(ctx, []netip.Prefix{netip.MustParsePrefix("10.244.9.7/32"), netip.MustParsePrefix("fd00:244:0:1::/122"), netip.MustParsePrefix("10.99.1.0/26")}, nh4, nh6))
	want = []string{"10.244.9.7/32 via 10.0.0.1", "fd00:244:0:1::/122 via fd00::1"}
	waitFor(t, 5*time.Second, "withdrawal reaches b", func() bool { return slices.Equal(ribStrings(b), want) })

	// A new pool at b: the path held back until now is taken.
	must(b.SetImportRanges(ctx, []ImportRange{
		{Prefix: netip.MustParsePrefix("10.244.0.0/16"), MinLen: 26, MaxLen: 32},
		{Prefix: netip.MustParsePrefix("10.99.0.0/16"), MinLen: 26, MaxLen: 32},
		{Prefix: netip.MustParsePrefix("fd00:244::/48"), MinLen: 122, MaxLen: 128},
	}))
	want = []string{"10.99.1.0/26 via 10.0.0.1", "10.244.9.7/32 via 10.0.0.1", "fd00:244:0:1::/122 via fd00::1"} // in address order
	waitFor(t, 5*time.Second, "new import range applied to held paths", func() bool { return slices.Equal(ribStrings(b), want) })

	// Removing the peer drops its paths.
	must(b.SetPeers(ctx, nil))
	waitFor(t, 5*time.Second, "paths gone with the peer", func() bool { return len(b.RIB()) == 0 })
}

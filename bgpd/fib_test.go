package bgpd

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeTable is a RouteTable in memory that records every change it is
// asked for: a transcript of what the sync would do to the kernel.
type fakeTable struct {
	routes     map[string]netlink.Route
	transcript []string
	failOn     string
}

func newFakeTable(rs ...netlink.Route) *fakeTable {
	f := &fakeTable{routes: map[string]netlink.Route{}}
	for _, r := range rs {
		f.routes[r.Dst.String()] = r
	}
	return f
}

func (f *fakeTable) List() ([]netlink.Route, error) {
	var out []netlink.Route
	for _, r := range f.routes {
		if r.Protocol == RouteProtocol {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeTable) Replace(r *netlink.Route) error {
	if f.failOn != "" && r.Dst.String() == f.failOn {
		return fmt.Errorf("injected failure")
	}
	f.transcript = append(f.transcript, "replace "+describe(r))
	f.routes[r.Dst.String()] = *r
	return nil
}

func (f *fakeTable) Add(r *netlink.Route) error {
	if f.failOn != "" && r.Dst.String() == f.failOn {
		return fmt.Errorf("injected failure")
	}
	if _, ok := f.routes[r.Dst.String()]; ok {
		return unix.EEXIST
	}
	f.transcript = append(f.transcript, "add "+describe(r))
	f.routes[r.Dst.String()] = *r
	return nil
}

func (f *fakeTable) Delete(r *netlink.Route) error {
	f.transcript = append(f.transcript, "delete "+r.Dst.String())
	delete(f.routes, r.Dst.String())
	return nil
}

func (f *fakeTable) LinkIndex(name string) (int, error) {
	switch name {
	case "vxlan.brindle":
		return 7, nil
	case "tunl0":
		return 8, nil
	}
	return 0, fmt.Errorf("no link %s", name)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestFIBTranscript(t *testing.T) {
	foreign := netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.9.0.0/16")), Protocol: 4, Gw: []byte{10, 0, 0, 9}}
	stale := netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.244.7.0/26")), Protocol: RouteProtocol, Type: unix.RTN_UNICAST, Gw: []byte{10, 0, 0, 7}}
	kept := netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.244.2.0/26")), Protocol: RouteProtocol, Type: unix.RTN_UNICAST, Gw: []byte{10, 0, 0, 2}}
	tab := newFakeTable(foreign, stale, kept)
	fib := NewFIB(tab, quiet(), false)
	want := []Route{
		{Dst: netip.MustParsePrefix("10.244.1.0/26"), Type: Blackhole},
		{Dst: netip.MustParsePrefix("10.244.2.0/26"), Gw: netip.MustParseAddr("10.0.0.2")},
		{Dst: netip.MustParsePrefix("10.244.3.0/26"), Gw: netip.MustParseAddr("10.0.0.3")},
		{Dst: netip.MustParsePrefix("10.244.4.0/26"), Gw: netip.MustParseAddr("172.16.0.4"), Dev: "vxlan.brindle", OnLink: true},
	}
	res, err := fib.Set(want)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(tab.transcript)
	wantT := []string{
		"add 10.244.3.0/26 via 10.0.0.3",
		"add 10.244.4.0/26 via 172.16.0.4 dev #7 onlink",
		"add blackhole 10.244.1.0/26",
		"delete 10.244.7.0/26",
	}
	if !slices.Equal(tab.transcript, wantT) {
		t.Errorf("transcript:\n%s\nwant:\n%s", strings.Join(tab.transcript, "\n"), strings.Join(wantT, "\n"))
	}
	if res.Installed != 4 || res.Added != 3 || res.Deleted != 1 {
		t.Errorf("result %+v", res)
	}
	if _, ok := tab.routes["10.9.0.0/16"]; !ok {
		t.Error("a route of another protocol was touched")
	}
	// Idempotent: the same set again changes nothing.
	tab.transcript = nil
	if _, err := fib.Set(want); err != nil || len(tab.transcript) != 0 {
		t.Errorf("second Set changed %v (err %v)", tab.transcript, err)
	}
	// A changed next hop is replaced.
	want[1].Gw = netip.MustParseAddr("10.0.0.22")
	if _, err := fib.Set(want); err != nil || !slices.Equal(tab.transcript, []string{"replace 10.244.2.0/26 via 10.0.0.22"}) {
		t.Errorf("next-hop change: %v (err %v)", tab.transcript, err)
	}
}

func TestFIBHoldsDeletesAndReportsFailures(t *testing.T) {
	stale := netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.244.7.0/26")), Protocol: RouteProtocol, Type: unix.RTN_UNICAST, Gw: []byte{10, 0, 0, 7}}
	tab := newFakeTable(stale)
	tab.failOn = "10.244.8.0/26"
	fib := NewFIB(tab, quiet(), true)
	want := []Route{
		{Dst: netip.MustParsePrefix("10.244.8.0/26"), Gw: netip.MustParseAddr("10.0.0.8")},
		{Dst: netip.MustParsePrefix("10.244.9.0/26"), Gw: netip.MustParseAddr("10.0.0.9")},
		{Dst: netip.MustParsePrefix("10.244.10.0/26"), Dev: "nosuchdev"},
	}
	res, err := fib.Set(want)
	if err == nil || !strings.Contains(err.Error(), "install 10.244.8.0/26") || !strings.Contains(err.Error(), "device nosuchdev") {
		t.Errorf("err = %v; want both failures named", err)
	}
	if res.Held != 1 || res.Deleted != 0 || res.Installed != 1 {
		t.Errorf("while held: %+v", res)
	}
	fib.ReleaseDeletes()
	res, _ = fib.Set(want)
	if res.Deleted != 1 {
		t.Errorf("after release: %+v", res)
	}
}

// The view: a Set trusts what the last one left, so a route removed behind
// its back is not seen until Invalidate (which the controller calls on a
// route-delete notification and every resync); then it comes back.
func TestFIBViewAndInvalidate(t *testing.T) {
	tab := newFakeTable()
	fib := NewFIB(tab, quiet(), false)
	want := []Route{{Dst: netip.MustParsePrefix("10.244.1.0/26"), Gw: netip.MustParseAddr("10.0.0.1")},
		{Dst: netip.MustParsePrefix("10.244.2.0/26"), Type: Blackhole}}
	if _, err := fib.Set(want); err != nil {
		t.Fatal(err)
	}
	delete(tab.routes, "10.244.1.0/26") // behind its back
	tab.transcript = nil
	if res, err := fib.Set(want); err != nil || len(tab.transcript) != 0 || res.Installed != 2 {
		t.Fatalf("Set from the view: %v, %+v, %v", tab.transcript, res, err)
	}
	fib.Invalidate()
	if res, err := fib.Set(want); err != nil || !slices.Equal(tab.transcript, []string{"add 10.244.1.0/26 via 10.0.0.1"}) || res.Installed != 2 {
		t.Fatalf("Set after Invalidate: %v, %+v, %v", tab.transcript, res, err)
	}
	// A conflict is tried again at every Set, view or not.
	tab.routes["10.244.3.0/26"] = netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.244.3.0/26")), Protocol: 4}
	want = append(want, Route{Dst: netip.MustParsePrefix("10.244.3.0/26"), Gw: netip.MustParseAddr("10.0.0.3")})
	for range 2 {
		if res, _ := fib.Set(want); res.Conflicts != 1 {
			t.Fatalf("conflict: %+v", res)
		}
	}
	delete(tab.routes, "10.244.3.0/26")
	tab.transcript = nil
	if res, _ := fib.Set(want); res.Conflicts != 0 || !slices.Equal(tab.transcript, []string{"add 10.244.3.0/26 via 10.0.0.3"}) {
		t.Fatalf("after the conflict: %v %+v", tab.transcript, res)
	}
}

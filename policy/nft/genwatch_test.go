package nft

import (
	"context"
	"encoding/binary"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/testenv"
)

// TestNewGenFilter: the socket filter lets through the new-generation
// message and nothing else of nftables' notifications.
func TestNewGenFilter(t *testing.T) {
	for _, c := range []struct {
		typ  uint16
		pass bool
	}{
		{unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN, true},
		{unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM, false},
		{unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE, false},
		{unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELTABLE, false},
		{unix.NFNL_SUBSYS_CTNETLINK<<8 | unix.NFT_MSG_NEWGEN, false},
	} {
		msg := make([]byte, 20)
		binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
		binary.NativeEndian.PutUint16(msg[4:], c.typ)
		if pass := testenv.FilterPasses(t, newGenFilter(), msg); pass != c.pass {
			t.Errorf("message type %#04x: filter passes %v, want pass=%v", c.typ, pass, c.pass)
		}
	}
}

// TestWatchGeneration: every commit by someone else in the namespace (the
// nft binary's) is signalled, a big transaction too; the channel closes
// when the context ends.
func TestWatchGeneration(t *testing.T) {
	requireNft(t)
	n := testenv.NewNS(t)
	w := &Writer{NetNS: int(n.Fd())}
	defer w.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	gens, err := w.WatchGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, err := w.Generation()
	if err != nil {
		t.Fatal(err)
	}
	elems := ""
	for i := range 2000 {
		elems += fmt.Sprintf("10.1.%d.%d,", i/250, i%250)
	}
	for i, script := range []string{
		"add table inet watch0",
		"add table inet watch1\nadd chain inet watch1 c\nadd rule inet watch1 c accept",
		"add set inet watch1 s { type ipv4_addr; }\nadd element inet watch1 s { " + elems + " }",
		"flush ruleset",
	} {
		cmd := exec.Command("nsenter", "--net="+n.Path(), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f: %v\n%s", err, out)
		}
		select {
		case <-gens:
		case <-time.After(time.Minute):
			t.Fatalf("commit %d: not signalled", i)
		}
		g, err := w.Generation()
		if err != nil {
			t.Fatal(err)
		}
		if g == before {
			t.Fatalf("commit %d: signalled, but the generation is still %d", i, g)
		}
		before = g
	}
	cancel()
	for range gens {
	}
}

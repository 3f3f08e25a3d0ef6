// Package capture records one pod's packets as pcap: on the pod's host veth,
// so that no other pod's traffic and none of the node's own is in it.
//
// The node side (Server) runs in brindled: it finds the pod's host veths in
// the node's endpoint records, opens an AF_PACKET socket on each (pcapgo's
// EthernetHandle, pure Go), attaches a filter compiled here from a
// tcpdump-style expression to classic BPF, and streams pcap (one interface)
// or pcapng (several, each named for its pod) to the client, within limits
// of duration, size and concurrent captures that the node enforces. The
// client side (Client, Copy) reaches that server over a root-only unix
// socket or mutual TLS, and writes only whole records, so a capture cut
// short still leaves a valid file.
package capture

# The cluster's network (sourced): one switch namespace and a namespace per
# node, nothing connected to the machine.
# shellcheck shell=bash
#
#   gw (k8s-$CLUSTER-gw): bridge br0, $GW_IP/24, the nodes' default gateway.
#       It has no other link: a packet for any address outside the cluster
#       reaches it and ends in its nftables drop counter (`check` reads it).
#   node (k8s-$CLUSTER-<node>): eth0 $UNDERLAY.N/24 on br0, default via gw.
#       A default route is what brindled's address autodetection and proxy
#       ARP for 169.254.1.1 need; here it leads nowhere.

net_up() {
	local i=0 n ns
	ip netns add "$GW_NS"
	ip -n "$GW_NS" link set lo up
	ip -n "$GW_NS" link add br0 type bridge
	ip -n "$GW_NS" addr add "$GW_IP/24" dev br0
	ip -n "$GW_NS" link set br0 up
	# The switch routes nothing: forwarding off, and everything not for the
	# switch itself counted and dropped, so that the counter is the proof.
	ip netns exec "$GW_NS" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
	ip netns exec "$GW_NS" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 2>/dev/null || true
	ip netns exec "$GW_NS" nft -f - <<-EOF
		table inet outside {
			counter leaving { }
			chain pre {
				type filter hook prerouting priority -300; policy accept;
				# Only what was sent to the switch itself (its MAC): frames the
				# bridge carries between nodes are not for it, even where
				# br_netfilter would show them here.
				iifname "br0" meta pkttype host meta nfproto ipv4 ip daddr != $GW_IP counter name leaving drop
				iifname "br0" meta pkttype host meta nfproto ipv6 ip6 daddr != fe80::/10 counter name leaving drop
			}
		}
	EOF
	for n in "${NODES[@]}"; do
		ns=$(node_ns "$n")
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip link add "p$i" netns "$GW_NS" type veth peer name eth0 netns "$ns"
		ip -n "$GW_NS" link set "p$i" master br0 up
		ip -n "$ns" addr add "${NODE_IP[$n]}/24" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" route add default via "$GW_IP" dev eth0
		i=$((i + 1))
	done
}

net_down() {
	local n
	for n in "${NODES[@]}"; do
		ip netns del "$(node_ns "$n")" 2>/dev/null || true
	done
	ip netns del "$GW_NS" 2>/dev/null || true
}

# leaving_packets: what the switch has dropped for outside addresses.
leaving_packets() {
	ip netns exec "$GW_NS" nft list counter inet outside leaving |
		awk '{ for (i = 1; i < NF; i++) if ($i == "packets") { print $(i + 1); exit } }'
}

# net_isolated: fails unless no cluster namespace has a way out of the
# machine. Structure: no link in the machine's own namespace has its peer
# in a cluster namespace (the cluster's links are all made between its own
# namespaces); the switch has no route
# beyond its subnet; every node's default route leads to the switch.
# (`check` then proves it with packets.)
net_isolated() {
	local ns n bad=0
	if ip -o -d link show | grep -E "link-netns $NS_PREFIX-" >&2; then
		echo "net: a link in the machine's namespace has its peer in the cluster" >&2; bad=1
	fi
	if ip -n "$GW_NS" route show | grep -v "dev br0 proto kernel scope link" | grep -q .; then
		echo "net: the switch has routes beyond its subnet: $(ip -n "$GW_NS" route show)" >&2; bad=1
	fi
	if [ "$(ip -n "$GW_NS" -o link show | grep -cvE ': (lo|br0|p[0-9]+@)')" -ne 0 ]; then
		echo "net: the switch has links other than br0 and its ports" >&2; bad=1
	fi
	for n in "${NODES[@]}"; do
		ns=$(node_ns "$n")
		if [ "$(ip -n "$ns" route show default)" != "default via $GW_IP dev eth0 " ] &&
			[ "$(ip -n "$ns" route show default)" != "default via $GW_IP dev eth0" ]; then
			echo "net: $ns: default route not via the switch: $(ip -n "$ns" route show default)" >&2; bad=1
		fi
	done
	return $bad
}

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// enforcer.c: cgroup programs that force every socket of an enforced cgroup through the local
// transparent proxy. Attached once at the root of the enforcement subtree; children inherit them.
//
// Default deny: any case this file does not recognise returns 0 (EPERM to the caller) or drops.

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/if_ether.h>
#define AF_INET 2
#define AF_INET6 10
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#define DNS_PORT 53
#define MAX_PROXY_PORTS 4

// config is written by the daemon at install and on every restart (ports may change).
struct config {
	__u64 host_netns_cookie;
	__u16 proxy_port; // host byte order
	__u16 pad[3];
	__u16 reserved_ports[MAX_PROXY_PORTS]; // ports agents may not bind (host byte order, 0 = unused)
};

// origin is what the proxy learns about an accepted connection. Addresses are 16 bytes, IPv4 as
// v4-mapped (::ffff:a.b.c.d), so one key format serves both families.
struct origin {
	__u8 addr[16];
	__u16 port; // host byte order
	__u8 proto;
	__u8 family; // AF_INET or AF_INET6 of the original connect
	__u32 tgid;
	__u32 uid;
	__u32 gid;
	char comm[16];
	__u64 cgroup_id;
	__u64 cookie;
	__u64 ktime_ns;
};

// tuple identifies a redirected connection as the proxy sees it after accept():
// client = the agent's local address, proxy = the proxy listener it was redirected to.
struct tuple {
	__u8 client[16];
	__u8 proxy[16];
	__u16 client_port; // host byte order
	__u16 proxy_port;  // host byte order
	__u32 pad;
};

struct dns_key {
	__u8 addr[16];
};

enum counter {
	C_REDIRECTED = 0,
	C_DNS_ALLOWED,
	C_DENY_UDP,
	C_DENY_SOCKET,
	C_DENY_BIND,
	C_DENY_NETNS,
	C_DENY_NOSTORAGE,
	C_EGRESS_DROP,
	C_PUBLISHED,
	C_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enf_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct dns_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enf_resolvers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enf_sock_origin SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tuple);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enf_origins SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enf_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&enf_counters, &which);
	if (v)
		*v += 1;
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&enf_config, &zero);
}

// in_host_netns refuses sockets of other network namespaces: there, "redirect to 127.0.0.1"
// would mean that namespace's own loopback, a path around the proxy.
static __always_inline int in_host_netns(void *ctx, struct config *cfg)
{
	return bpf_get_netns_cookie(ctx) == cfg->host_netns_cookie;
}

static __always_inline void set_v4mapped(__u8 *dst, __u32 ip4_be)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &ip4_be, 4);
}

static __always_inline void set_v6(__u8 *dst, const __u32 *ip6)
{
	__u32 w[4] = {ip6[0], ip6[1], ip6[2], ip6[3]};
	__builtin_memcpy(dst, w, 16);
}

static __always_inline int is_dns_resolver(const __u8 *addr)
{
	struct dns_key k;
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&enf_resolvers, &k) != NULL;
}

// save_origin stores the original destination and the calling task on the socket. It runs in
// process context (connect), the only place the task identity is the socket owner's.
static __always_inline int save_origin(struct bpf_sock_addr *ctx, const __u8 *addr, __u8 family)
{
	if (!ctx->sk)
		return 0;
	struct origin *o = bpf_sk_storage_get(&enf_sock_origin, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o) {
		count(C_DENY_NOSTORAGE);
		return 0;
	}
	__builtin_memcpy(o->addr, addr, 16);
	o->port = bpf_ntohs((__u16)ctx->user_port);
	o->proto = IPPROTO_TCP;
	o->family = family;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	o->tgid = pid_tgid >> 32;
	__u64 uid_gid = bpf_get_current_uid_gid();
	o->uid = (__u32)uid_gid;
	o->gid = uid_gid >> 32;
	bpf_get_current_comm(o->comm, sizeof(o->comm));
	o->cgroup_id = bpf_get_current_cgroup_id();
	o->cookie = bpf_get_socket_cookie(ctx);
	o->ktime_ns = bpf_ktime_get_ns();
	return 1;
}

// udp_verdict lets UDP through only to port 53 of a resolver the policy names; sock_create already
// limits datagram sockets to UDP, so everything else reaching here (QUIC, syslog…) is refused.
static __always_inline int udp_verdict(struct bpf_sock_addr *ctx, const __u8 *addr)
{
	if (ctx->protocol == IPPROTO_UDP && bpf_ntohs((__u16)ctx->user_port) == DNS_PORT && is_dns_resolver(addr)) {
		count(C_DNS_ALLOWED);
		return 1;
	}
	count(C_DENY_UDP);
	return 0;
}

SEC("cgroup/connect4")
int enforcer_connect4(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg || cfg->proxy_port == 0)
		return 0;
	if (!in_host_netns(ctx, cfg)) {
		count(C_DENY_NETNS);
		return 0;
	}
	__u8 addr[16];
	set_v4mapped(addr, ctx->user_ip4);

	if (ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP) {
		if (!save_origin(ctx, addr, AF_INET))
			return 0;
		ctx->user_ip4 = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(cfg->proxy_port);
		count(C_REDIRECTED);
		return 1;
	}
	return udp_verdict(ctx, addr);
}

SEC("cgroup/connect6")
int enforcer_connect6(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg || cfg->proxy_port == 0)
		return 0;
	if (!in_host_netns(ctx, cfg)) {
		count(C_DENY_NETNS);
		return 0;
	}
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u8 addr[16];
	set_v6(addr, ip6);
	// A v4-mapped destination on an AF_INET6 socket goes out as IPv4 and only this hook sees it.
	int mapped = ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);

	if (ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP) {
		if (!save_origin(ctx, addr, mapped ? AF_INET : AF_INET6))
			return 0;
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		if (mapped) {
			ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
			ctx->user_ip6[3] = bpf_htonl(0x7f000001);
		} else {
			ctx->user_ip6[2] = 0;
			ctx->user_ip6[3] = bpf_htonl(1);
		}
		ctx->user_port = bpf_htons(cfg->proxy_port);
		count(C_REDIRECTED);
		return 1;
	}
	return udp_verdict(ctx, addr);
}

// Unconnected UDP: only DNS to a named resolver leaves; QUIC and everything else is refused.
SEC("cgroup/sendmsg4")
int enforcer_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg || !in_host_netns(ctx, cfg))
		return 0;
	__u8 addr[16];
	set_v4mapped(addr, ctx->user_ip4);
	return udp_verdict(ctx, addr);
}

SEC("cgroup/sendmsg6")
int enforcer_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg || !in_host_netns(ctx, cfg))
		return 0;
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u8 addr[16];
	set_v6(addr, ip6);
	return udp_verdict(ctx, addr);
}

// Only plain TCP and UDP over IPv4/IPv6: no raw, ICMP, SCTP, UDP-Lite or MPTCP sockets.
SEC("cgroup/sock_create")
int enforcer_sock_create(struct bpf_sock *sk)
{
	if (sk->family != AF_INET && sk->family != AF_INET6)
		goto deny;
	if (sk->type == SOCK_STREAM && sk->protocol == IPPROTO_TCP)
		return 1;
	if (sk->type == SOCK_DGRAM && sk->protocol == IPPROTO_UDP)
		return 1;
deny:
	count(C_DENY_SOCKET);
	return 0;
}

static __always_inline int bind_allowed(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg)
		return 0;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	if (port == 0)
		return 1;
	if (port == cfg->proxy_port)
		goto deny;
#pragma unroll
	for (int i = 0; i < MAX_PROXY_PORTS; i++)
		if (cfg->reserved_ports[i] != 0 && port == cfg->reserved_ports[i])
			goto deny;
	return 1;
deny:
	count(C_DENY_BIND);
	return 0;
}

SEC("cgroup/bind4")
int enforcer_bind4(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx);
}

SEC("cgroup/bind6")
int enforcer_bind6(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx);
}

// sock_tuple is the 4-tuple of an enforced (client) socket as the proxy sees it after accept().
static __always_inline int sock_tuple(struct bpf_sock_ops *ctx, struct tuple *t)
{
	if (ctx->family == AF_INET) {
		set_v4mapped(t->client, ctx->local_ip4);
		set_v4mapped(t->proxy, ctx->remote_ip4);
	} else if (ctx->family == AF_INET6) {
		// sock_ops allows only 4-byte reads of these: volatile keeps clang from merging them.
		__u32 l[4], r[4];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			l[i] = *(volatile __u32 *)&ctx->local_ip6[i];
			r[i] = *(volatile __u32 *)&ctx->remote_ip6[i];
		}
		set_v6(t->client, l);
		set_v6(t->proxy, r);
	} else {
		return 0;
	}
	t->client_port = (__u16)ctx->local_port;
	t->proxy_port = (__u16)bpf_ntohl(ctx->remote_port);
	return 1;
}

// publish_origin puts the socket's origin under the 4-tuple the proxy will see after accept().
// ACTIVE_ESTABLISHED runs before the final ACK leaves, so the entry exists before accept returns.
// The socket is also asked for state callbacks, so that withdraw_origin runs when it closes: a
// record left behind would identify whatever connection next uses the same 4-tuple.
static __always_inline void publish_origin(struct bpf_sock_ops *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return;
	struct origin *o = bpf_sk_storage_get(&enf_sock_origin, sk, 0, 0);
	if (!o)
		return;
	struct tuple t = {};
	if (!sock_tuple(ctx, &t))
		return;
	// Without the close callback the record could outlive the connection: publish nothing, and
	// the proxy refuses the connection for want of an origin.
	if (bpf_sock_ops_cb_flags_set(ctx, ctx->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG) != 0)
		return;
	bpf_map_update_elem(&enf_origins, &t, o, BPF_ANY);
	count(C_PUBLISHED);
}

// withdraw_origin deletes the socket's record when the socket closes before the proxy took it
// (reset, or the proxy died with the connection queued). Once the socket leaves the established
// hash its 4-tuple is free: another process, outside any enforced cgroup, could bind the same
// client port, dial the proxy and be served under this record. The state callback runs before
// the kernel unhashes the socket, so no new connection can hold the tuple yet; the cookie check
// leaves alone a record that is not this socket's. When the proxy already took the record (the
// usual case), there is nothing to delete.
static __always_inline void withdraw_origin(struct bpf_sock_ops *ctx)
{
	struct tuple t = {};
	if (!sock_tuple(ctx, &t))
		return;
	struct origin *o = bpf_map_lookup_elem(&enf_origins, &t);
	if (o && o->cookie == bpf_get_socket_cookie(ctx))
		bpf_map_delete_elem(&enf_origins, &t);
}

SEC("sockops")
int enforcer_sockops(struct bpf_sock_ops *ctx)
{
	switch (ctx->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		publish_origin(ctx);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		// args[0] is the old state, args[1] the new one. A client that sent its data and closed
		// (FIN_WAIT*, CLOSING: an orphan goes to TIME_WAIT, and CLOSE, at its FIN's ACK) may
		// still be queued for the proxy, which must find its origin to deliver that data; its
		// TIME_WAIT keeps the 4-tuple, and a connection that reuses it queues behind it. Any
		// other close is an abort: nothing of it is left to deliver.
		if (ctx->args[1] == BPF_TCP_CLOSE && ctx->args[0] != BPF_TCP_FIN_WAIT1 &&
		    ctx->args[0] != BPF_TCP_FIN_WAIT2 && ctx->args[0] != BPF_TCP_CLOSING)
			withdraw_origin(ctx);
		break;
	}
	return 1;
}

// Backstop: whatever a socket hook missed, no packet of an enforced cgroup leaves except to
// loopback or DNS to a named resolver.
SEC("cgroup_skb/egress")
int enforcer_egress(struct __sk_buff *skb)
{
	__u8 addr[16];
	__u8 l4 = 0;
	__u32 l4_off = 0;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 hdr[20];
		if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
			goto drop;
		if (hdr[16] == 127)
			return 1;
		__u32 dst;
		__builtin_memcpy(&dst, hdr + 16, 4);
		set_v4mapped(addr, dst);
		l4 = hdr[9];
		l4_off = (hdr[0] & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		__u8 hdr[40];
		if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
			goto drop;
		__builtin_memcpy(addr, hdr + 24, 16);
		__u32 w[4];
		__builtin_memcpy(w, addr, 16);
		if (w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1))
			return 1;
		if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff) && addr[12] == 127)
			return 1;
		l4 = hdr[6];
		l4_off = 40;
	} else {
		goto drop;
	}
	if (l4 == IPPROTO_UDP || l4 == IPPROTO_TCP) {
		__u16 dport;
		if (bpf_skb_load_bytes(skb, l4_off + 2, &dport, sizeof(dport)) < 0)
			goto drop;
		if (bpf_ntohs(dport) == DNS_PORT && is_dns_resolver(addr))
			return 1;
	}
drop:
	count(C_EGRESS_DROP);
	return 0;
}

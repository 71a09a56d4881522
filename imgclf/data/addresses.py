"""Which IP addresses a fetch may contact (used by `imgclf.data.fetch`; the `ipaddress` module decides
the classes, this decides the policy).

Every address a host resolves to is judged, and the IPv4 address inside an IPv6 form (mapped, NAT64,
6to4, Teredo) is judged as what it reaches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# what `allow_private` opens: loopback, RFC 1918, CGNAT, ULA. Nothing else that is not global.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# refused even with allow_private: "this network" (0.x reaches the local host on Linux), link-local with
# the cloud metadata address 169.254.169.254, and AWS's IPv6 metadata address (inside the ULA range).
DEFAULT_BLOCKED = ("0.0.0.0/8", "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")


def _embedded_v4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, NAT64, 6to4, Teredo): each is judged too."""
    if ip.version != 6:
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [v4 for v4 in found if v4 is not None]


def _kind(ip: IPAddress) -> str:
    kinds = ("loopback", "link_local", "multicast", "unspecified", "reserved", "private")
    return next((k.replace("_", "-") for k in kinds if getattr(ip, f"is_{k}")), "non-global")


def refusal(ip: IPAddress, allow_private: bool, blocked: Sequence[IPNetwork]) -> str | None:
    """Why `ip` may not be contacted, or None when it may. `allow_private` opens PRIVATE_NETWORKS;
    `blocked` networks stay closed regardless."""
    embedded = _embedded_v4(ip)
    for v4 in embedded:
        why = refusal(v4, allow_private, blocked)
        if why:
            return f"{why} (embedded in an IPv6 address)"
    if ip.version == 6 and (ip.ipv4_mapped or ip in NAT64):
        return None  # only the embedded IPv4 address is ever reached
    if any(ip.version == net.version and ip in net for net in blocked):
        return f"a blocked {_kind(ip)} address"
    if ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        return f"a {_kind(ip)} address"
    if allow_private and any(ip.version == net.version and ip in net for net in PRIVATE_NETWORKS):
        return None
    if ip.is_global and not ip.is_reserved:
        return None
    return f"a {_kind(ip)} address (private networks only when the policy allows them)"

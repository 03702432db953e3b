"""Which proxy a request to the API server goes through, decided by Go's rules, exactly.

kubectl and every Go controller take their proxy from the environment through net/http's
``ProxyFromEnvironment``, which is ``golang.org/x/net/http/httpproxy`` as vendored in Go (1.26
for Kubernetes 1.36); an operator who set ``HTTPS_PROXY`` and ``NO_PROXY`` for them expects the
same answer here. Those rules differ from Python's ``urllib``, requests, httpx and curl in ways
that matter: ``localhost`` and loopback addresses never use a proxy; ``ALL_PROXY`` is ignored;
an entry with a port (``host:6443``) matches that port only; ``foo.com`` matches ``foo.com`` and
its subdomains, ``.foo.com`` and ``*.foo.com`` only the subdomains; a name never matches an
address, nor a CIDR a name; the uppercase variable wins over the lowercase one, and an empty
value counts as unset. No Python library implements these rules, so they are written out here
from Go's source, with Go's parsing helpers (``SplitHostPort``, ``ParseIP``, ``netip.ParseAddr``,
``url.Port``) reproduced where Python's would answer differently. tests/unit/test_proxies.py
holds Go's own answers.

Pure: the environment comes in as a mapping, the answer goes out as a string.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = {"http": "80", "https": "443", "socks5": "1080"}


class ProxyError(ValueError):
    """A proxy setting Go would refuse to use; ``str()`` says which and why."""


@dataclass(frozen=True)
class ProxyEnvironment:
    """Go's ``httpproxy.FromEnvironment``: the first non-empty of each pair of variables."""

    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""
    cgi: bool = False
    """``REQUEST_METHOD`` is set: HTTP_PROXY could come from a client's ``Proxy:`` header."""

    @classmethod
    def read(cls, env: Mapping[str, str]) -> ProxyEnvironment:
        def first(*names: str) -> str:
            return next((env[n] for n in names if env.get(n)), "")

        return cls(
            http_proxy=first("HTTP_PROXY", "http_proxy"),
            https_proxy=first("HTTPS_PROXY", "https_proxy"),
            no_proxy=first("NO_PROXY", "no_proxy"),
            cgi=bool(env.get("REQUEST_METHOD")),
        )


def parse_proxy(value: str) -> str:
    """Go's ``parseProxy``: a URL with a scheme (lowercased, as Go's URL type prints it), or
    ``host[:port]`` taken as ``http://``. A URL of another scheme is kept as it is."""
    scheme = urlsplit(value).scheme
    if scheme in ("http", "https", "socks5"):
        return scheme + value[len(scheme) :]
    if "://" in value:
        return value
    return f"http://{value}"


def proxy_for(url: str, environment: ProxyEnvironment) -> str | None:
    """The proxy URL for a request to ``url``, or None to connect directly.

    Raises `ProxyError` where Go's ``ProxyForURL`` returns an error (HTTP_PROXY in a CGI
    environment).
    """
    scheme = urlsplit(url).scheme
    if scheme == "https":
        proxy = environment.https_proxy
    elif scheme == "http":
        proxy = environment.http_proxy
        if proxy and environment.cgi:
            raise ProxyError(
                "HTTP_PROXY: refusing to use it while REQUEST_METHOD is set "
                "(a CGI environment; see golang.org/s/cgihttpproxy)"
            )
    else:
        return None
    if not proxy:
        return None
    if not uses_proxy(canonical_address(url), environment.no_proxy):
        return None
    return parse_proxy(proxy)


# -- Go's address helpers ---------------------------------------------------------------------


def split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: (host, port), or None where Go returns an error."""
    i = hostport.rfind(":")
    if i < 0:
        return None
    j = k = 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 == len(hostport) or end + 1 != i:
            return None
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            return None
    if "[" in hostport[j:] or "]" in hostport[k:]:
        return None
    return host, hostport[i + 1 :]


def _url_host_port(netloc: str) -> tuple[str, str]:
    """Go's ``url.Hostname()`` and ``url.Port()`` of a URL's host part (case kept)."""
    hostport = netloc.rpartition("@")[2]
    host, port = hostport, ""
    colon = hostport.rfind(":")
    if colon >= 0 and (hostport[colon + 1 :].isascii() and hostport[colon + 1 :].isdigit()):
        host, port = hostport[:colon], hostport[colon + 1 :]
    elif colon >= 0 and colon == len(hostport) - 1:
        host = hostport[:colon]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def idna_ascii(value: str) -> str:
    """Go's ``idnaASCII``: ASCII is kept as it is; a non-ASCII name becomes its A-label form
    (UTS #46 lookup); a name that cannot be converted is kept as it is, as Go keeps it."""
    if value.isascii():
        return value
    import idna  # already loaded by aiohttp's URL library; needed for non-ASCII names only

    try:
        return idna.encode(value, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError:
        return value


def join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def canonical_address(url: str) -> str:
    """Go's ``canonicalAddr``: the URL's host (A-label form) and port, the scheme's by default."""
    parts = urlsplit(url)
    host, port = _url_host_port(parts.netloc)
    return join_host_port(idna_ascii(host), port or DEFAULT_PORTS.get(parts.scheme, ""))


def _ip(text: str, *, zone: bool) -> IPAddress | None:
    if not text or (not zone and "%" in text):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # Go compares it with IPv4 as equal
            return address.ipv4_mapped
        if address.scope_id is not None:  # the zone plays no part in any comparison
            return ipaddress.IPv6Address(text.partition("%")[0])
    return address


def parse_ip(text: str) -> IPAddress | None:
    """Go's ``net.ParseIP`` (for NO_PROXY entries): no zone, no brackets."""
    return _ip(text, zone=False)


def parse_addr(text: str) -> IPAddress | None:
    """Go's ``netip.ParseAddr`` (for the request's host): an IPv6 address may carry a zone."""
    return _ip(text, zone=True)


def _parse_cidr(text: str) -> IPNetwork | None:
    """Go's ``net.ParseCIDR``: an address, a slash and a decimal prefix length."""
    address, slash, bits = text.partition("/")
    if not slash or not bits.isascii() or not bits.isdigit() or parse_ip(address) is None:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _in_network(address: IPAddress, network: IPNetwork) -> bool:
    if address.version != network.version:
        # Go compares an IPv4 address with an IPv4-mapped IPv6 network as IPv4.
        if isinstance(network, ipaddress.IPv6Network) and isinstance(
            address, ipaddress.IPv4Address
        ):
            mapped = ipaddress.IPv6Address(f"::ffff:{address}")
            return mapped in network and network.prefixlen >= 96
        return False
    return address in network


# -- NO_PROXY ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Matchers:
    match_all: bool
    networks: tuple[IPNetwork, ...]
    addresses: tuple[tuple[IPAddress, str], ...]
    """(address, port or "")."""
    domains: tuple[tuple[str, str, bool], ...]
    """(".suffix", port or "", whether the bare name matches too)."""


def _matchers(no_proxy: str) -> _Matchers:
    """Go's ``config.init``: each comma-separated entry becomes a matcher; malformed ones
    are ignored (Go makes "a best effort")."""
    networks: list[IPNetwork] = []
    addresses: list[tuple[IPAddress, str]] = []
    domains: list[tuple[str, str, bool]] = []
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return _Matchers(True, (), (), ())
        network = _parse_cidr(entry)
        if network is not None:
            networks.append(network)
            continue
        host, port = entry, ""
        split = split_host_port(entry)
        if split is not None:
            host, port = split
            if not host:
                continue
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
        address = parse_ip(host)
        if address is not None:
            addresses.append((address, port))
            continue
        if not host:
            continue
        if host.startswith("*."):
            host = host[1:]
        bare = not host.startswith(".")
        # Go converts the name with its leading dot; Python's IDNA codec refuses an empty label.
        domains.append(("." + idna_ascii(host if bare else host[1:]), port, bare))
    return _Matchers(False, tuple(networks), tuple(addresses), tuple(domains))


def uses_proxy(address: str, no_proxy: str) -> bool:
    """Go's ``useProxy``: whether a request to ``address`` (``host:port``, as
    `canonical_address` gives it) goes through the proxy, given ``NO_PROXY``."""
    if not address:
        return True
    split = split_host_port(address)
    if split is None:
        return False
    host, port = split
    if host == "localhost":
        return False
    ip = parse_addr(host)
    if ip is not None and ip.is_loopback:
        return False
    matchers = _matchers(no_proxy)
    if matchers.match_all:
        return False
    host = host.strip().lower()
    if ip is not None:
        # An address is matched by addresses and networks, never by a name.
        in_network = any(_in_network(ip, network) for network in matchers.networks)
        listed = any(
            ip == known and (not want or want == port) for known, want in matchers.addresses
        )
        return not (in_network or listed)
    for suffix, want, bare in matchers.domains:
        if (host.endswith(suffix) or (bare and host == suffix[1:])) and (not want or want == port):
            return False
    return True

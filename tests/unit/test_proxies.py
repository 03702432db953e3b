"""Go's proxy rules (``golang.org/x/net/http/httpproxy``, as vendored in Go 1.26's net/http,
which kubectl and client-go use), as a table.

Every expected answer below is what Go itself answered: the cases were run once through
``httpproxy.Config.ProxyFunc`` (golang.org/x/net v0.61.0, whose matching is the same as Go 1.26's
vendored copy) and the answers copied here. They include Go's own test table.
"""

from __future__ import annotations

import pytest

from jibri_pod_controller.core.proxies import (
    ProxyEnvironment,
    ProxyError,
    canonical_address,
    proxy_for,
    split_host_port,
    uses_proxy,
)

PROXY = "http://proxy:3128"
GO_NO_PROXY = (
    "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, 192.168.1.3:80, "
    "10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, [2001:db8::52:0:3]:80, "
    "2002:db8:a::45/64"
)

PROXY_CASES = [
    ("http://example.com", "127.0.0.1:8080", "", False, "http://127.0.0.1:8080"),
    (
        "http://example.com",
        "cache.corp.example.com:1234",
        "",
        False,
        "http://cache.corp.example.com:1234",
    ),
    ("http://example.com", "cache.corp.example.com", "", False, "http://cache.corp.example.com"),
    ("http://example.com", "localhost", "", False, "http://localhost"),
    (
        "http://example.com",
        "https://cache.corp.example.com",
        "",
        False,
        "https://cache.corp.example.com",
    ),
    ("http://example.com", "http://127.0.0.1:8080", "", False, "http://127.0.0.1:8080"),
    ("http://example.com", "socks5://127.0.0.1", "", False, "socks5://127.0.0.1"),
    ("http://example.com", "foo://host", "", False, "foo://host"),
    ("http://example.com", "http://user:pw@proxy:3128", "", False, "http://user:pw@proxy:3128"),
    ("http://example.com", "HTTP://proxy:3128", "", False, "http://proxy:3128"),
    ("http://insecure.tld/", "http.proxy.tld", "secure.proxy.tld", False, "http://http.proxy.tld"),
    ("https://secure.tld/", "http.proxy.tld", "secure.proxy.tld", False, "http://secure.proxy.tld"),
    ("https://secure.tld/", "http.proxy.tld", "", False, None),
    ("ftp://insecure.tld/", "http.proxy.tld", "", False, None),
    ("http://example.com", "http://10.1.2.3:8080", "", True, "ERROR"),
    ("https://secure.tld/", "", "https://secure.proxy.tld", True, "https://secure.proxy.tld"),
    ("http://example.com", "", "", False, None),
]
NO_PROXY_CASES = [
    ("http://example.com/", "example.com", False),
    ("http://example.com/", ".example.com", True),
    ("http://example.com/", "ample.com", True),
    ("http://foo.example.com/", "example.com", False),
    ("http://example.com/", ".foo.com", True),
    ("http://www.示例.com", ".示例.com", False),
    ("http://www.示例.com", "xn--fsq092h.com", False),
    ("http://www.xn--fsq092h.com", "示例.com", False),
    ("http://Api.Example.com/", "EXAMPLE.COM", False),
    ("https://api.example.com:6443", "example.com:6443", False),
    ("https://api.example.com:443", "example.com:6443", True),
    ("https://api.example.com", "example.com:6443", True),
    ("https://api.example.com", "example.com:443", False),
    ("https://10.1.2.3:6443", "10.0.0.0/8", False),
    ("https://api.example.com", "10.0.0.0/8", True),
    ("https://10.1.2.3:6443", "10.1.2.3:6443", False),
    ("https://10.1.2.3:6443", "10.1.2.3:443", True),
    ("https://[fd00::1]:6443", "fd00::/8", False),
    ("https://[fd00::1]:6443", "[fd00::1]", True),
    ("https://[fd00::1]:6443", "fd00::1", False),
    ("https://[fd00::1]:6443", "[fd00::1]:6443", False),
    ("https://10.1.2.3", "::ffff:10.1.2.3", False),
    ("https://[::ffff:10.1.2.3]", "10.1.2.3", False),
    ("https://anything.example", "*", False),
    ("https://b.com", "a.com,*", False),
    ("https://b.com", " , ,", True),
    ("https://example.com", ":1", True),
    ("https://1.2.3", "2.3", False),
    ("https://1.2.3.4", "3.4", True),
    ("https://example.com", "*.example.com", True),
    ("https://a.example.com", "*.example.com", False),
    ("https://kubernetes.default.svc", "svc", False),
    ("https://kubernetes.default.svc", ".svc", False),
    ("https://kubernetes", "kubernetes", False),
    ("https://localhost:6443", "", False),
    ("https://LOCALHOST:6443", "", True),
    ("https://127.0.0.1:6443", "", False),
    ("https://127.9.9.9", "", False),
    ("https://[::1]:6443", "", False),
    ("https://[::ffff:127.0.0.1]:6443", "", False),
    ("https://[::2]", "", True),
    ("https://localhost.example", "", True),
    ("https://example.com", "example.com.", True),
    ("https://example.com.", "example.com", True),
    ("http://[1000::%25.example.com]:123", "example.com", True),
    ("https://[fe80::1%25eth0]:6443", "fe80::1", False),
    ("https://[fe80::1%25eth0]:6443", "fe80::/10", False),
    ("https://1.2.3.4", "1.2.3.4", False),
    ("https://1.2.3.4", "example.com", True),
]
GO_USE_PROXY_CASES = [
    ("localhost", False),
    ("127.0.0.1", False),
    ("127.0.0.2", False),
    ("[::1]", False),
    ("[::2]", True),
    ("192.168.1.1", False),
    ("192.168.1.2", True),
    ("192.168.1.3", False),
    ("192.168.1.4", True),
    ("10.0.0.2", False),
    ("[2001:db8::52:0:1]", False),
    ("[2001:db8::52:0:2]", True),
    ("[2001:db8::52:0:3]", False),
    ("[2002:db8:a::123]", False),
    ("[fe80::424b:c8be:1643:a1b6]", True),
    ("barbaz.net", True),
    ("www.barbaz.net", False),
    ("foobar.com", False),
    ("www.foobar.com", False),
    ("foofoobar.com", True),
    ("baz.com", True),
    ("localhost.net", True),
    ("local.localhost", True),
    ("barbarbaz.net", True),
    ("wildcard.io", True),
    ("nested.wildcard.io", False),
    ("awildcard.io", True),
]


@pytest.mark.parametrize(("url", "http", "https", "cgi", "want"), PROXY_CASES)
def test_which_proxy_as_go_chooses_it(
    url: str, http: str, https: str, cgi: bool, want: str | None
) -> None:
    environment = ProxyEnvironment(http_proxy=http, https_proxy=https, cgi=cgi)
    if want == "ERROR":
        with pytest.raises(ProxyError, match="REQUEST_METHOD"):
            proxy_for(url, environment)
    else:
        assert proxy_for(url, environment) == want


@pytest.mark.parametrize(("url", "no_proxy", "proxied"), NO_PROXY_CASES)
def test_no_proxy_as_go_reads_it(url: str, no_proxy: str, proxied: bool) -> None:
    environment = ProxyEnvironment(http_proxy=PROXY, https_proxy=PROXY, no_proxy=no_proxy)
    assert (proxy_for(url, environment) is not None) is proxied


@pytest.mark.parametrize(("host", "proxied"), GO_USE_PROXY_CASES)
def test_gos_own_use_proxy_table(host: str, proxied: bool) -> None:
    assert uses_proxy(f"{host}:80", GO_NO_PROXY) is proxied


@pytest.mark.parametrize(("host", "_"), GO_USE_PROXY_CASES)
def test_a_star_bypasses_everything(host: str, _: bool) -> None:
    assert uses_proxy(f"{host}:80", "*") is False


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, ProxyEnvironment()),
        (
            {"HTTPS_PROXY": "upper", "https_proxy": "lower", "NO_PROXY": "n", "no_proxy": "m"},
            ProxyEnvironment(https_proxy="upper", no_proxy="n"),
        ),
        ({"HTTPS_PROXY": "", "https_proxy": "lower"}, ProxyEnvironment(https_proxy="lower")),
        ({"http_proxy": "h", "REQUEST_METHOD": "GET"}, ProxyEnvironment(http_proxy="h", cgi=True)),
        ({"ALL_PROXY": "a", "all_proxy": "a"}, ProxyEnvironment()),
    ],
)
def test_the_environment_as_go_1_26_reads_it(env: dict[str, str], want: ProxyEnvironment) -> None:
    """Uppercase first, an empty value is unset, ALL_PROXY is not read (net/http in Go 1.26;
    golang.org/x/net has since put the lowercase first, a change kubectl has not taken)."""
    assert ProxyEnvironment.read(env) == want


@pytest.mark.parametrize(
    ("hostport", "want"),
    [
        ("example.com:80", ("example.com", "80")),
        ("example.com:", ("example.com", "")),
        ("[fd00::1]:443", ("fd00::1", "443")),
        ("fd00::1", None),
        ("[fd00::1]", None),
        ("example.com", None),
        ("[fd00::1]x:80", None),
        ("a]:80", None),
    ],
)
def test_split_host_port_as_go(hostport: str, want: tuple[str, str] | None) -> None:
    assert split_host_port(hostport) == want


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("https://api.example.com", "api.example.com:443"),
        ("http://api.example.com", "api.example.com:80"),
        ("https://[fd00::1]:6443/k8s", "[fd00::1]:6443"),
        ("https://user:pw@Api.Example.com:6443", "Api.Example.com:6443"),
        ("https://www.示例.com", "www.xn--fsq092h.com:443"),
    ],
)
def test_canonical_address_as_go(url: str, want: str) -> None:
    assert canonical_address(url) == want

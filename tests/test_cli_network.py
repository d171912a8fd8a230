"""The pydock CLI's network commands and run options, run as a user runs them."""

from __future__ import annotations

import json
import os

import pytest
from conftest import needs_root, pydock_cli

pytestmark = [pytest.mark.usefixtures("no_leaks")]

GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} 80 | head -1"
SERVE = "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.fixture(autouse=True)
def _root() -> None:
    needs_root()


def ok(*args: str) -> str:
    r = pydock_cli(*args)
    assert r.returncode == 0, (args, r.stderr.decode())
    return r.stdout.decode()


def test_network_create_ls_inspect_rm(busybox_image) -> None:
    net_id = ok("network", "create", "--subnet", "10.213.240.0/24", "--label", "k=v",
                "clinet").strip()
    assert len(net_id) == 64
    ls = ok("network", "ls")
    assert ls.splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    names = [line.split()[1] for line in ls.splitlines()[1:]]
    assert names == ["bridge", "host", "none", "clinet"]
    assert net_id[:12] in ok("network", "ls", "-q").split()
    doc = json.loads(ok("network", "inspect", "clinet"))[0]
    assert doc["Id"] == net_id and doc["Labels"] == {"k": "v"}
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.213.240.0/24", "Gateway": "10.213.240.1"}]
    bridge = doc["Options"]["com.docker.network.bridge.name"]
    assert bridge.startswith("pdk-") and os.path.exists(f"/sys/class/net/{bridge}")
    assert ok("network", "rm", "clinet").strip() == "clinet"
    assert not os.path.exists(f"/sys/class/net/{bridge}")


def test_run_on_a_user_network_by_name_and_alias(busybox_image) -> None:
    ok("network", "create", "app")
    try:
        ok("run", "-d", "--name", "svc", "--network", "app", "--network-alias", "api",
           "busybox", "sh", "-c", SERVE)
        script = (f"for i in $(seq 50); do out=$({GET.format(host='api')}); "
                  f"[ -n \"$out\" ] && break; sleep 0.1; done; echo \"$out\"; "
                  f"{GET.format(host='svc')}")
        out = ok("run", "--rm", "--network", "app", "busybox", "sh", "-c", script)
        assert out.splitlines() == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
        doc = json.loads(ok("network", "inspect", "app"))[0]
        assert [c["Name"] for c in doc["Containers"].values()] == ["svc"]
        r = pydock_cli("network", "rm", "app")
        assert r.returncode == 1 and b"has active endpoints (containers svc)" in r.stderr
        ok("rm", "-f", "svc")
    finally:
        pydock_cli("rm", "-f", "svc")
        ok("network", "rm", "app")


def test_connect_and_disconnect(busybox_image) -> None:
    ok("network", "create", "extra")
    try:
        ok("run", "-d", "--name", "box", "busybox", "sleep", "60")
        ok("network", "connect", "--alias", "bx", "extra", "box")
        nets = json.loads(ok("inspect", "box"))[0]["NetworkSettings"]["Networks"]
        assert set(nets) == {"bridge", "extra"} and nets["extra"]["Aliases"] == ["bx"]
        assert nets["extra"]["IPAddress"].startswith("10.213.")
        assert ok("exec", "box", "ls", "/sys/class/net").split() == ["eth0", "eth1", "lo"]
        ok("network", "disconnect", "extra", "box")
        assert ok("exec", "box", "ls", "/sys/class/net").split() == ["eth0", "lo"]
        ok("rm", "-f", "box")
    finally:
        pydock_cli("rm", "-f", "box")
        ok("network", "rm", "extra")


def test_errors_exit_non_zero_with_clear_messages(busybox_image) -> None:
    r = pydock_cli("run", "--rm", "--network", "nosuch", "busybox", "true")
    assert r.returncode == 125 and b"unknown network 'nosuch'" in r.stderr
    assert ok("ps", "-aq") == ""
    for args, code, text in (
            (("network", "rm", "nosuch"), 1, b"unknown network 'nosuch'"),
            (("network", "inspect", "nosuch"), 1, b"unknown network 'nosuch'"),
            (("network", "rm", "bridge"), 1, b"pre-defined network"),
            (("network", "create", "host"), 2, b"reserved"),
            (("network", "create", "--subnet", "bad", "x"), 2, b"invalid subnet 'bad'"),
            (("run", "--rm", "--network-alias", "a", "busybox", "true"), 125,
             b"only for containers in user defined networks"),
            (("run", "--rm", "--add-host", "nocolon", "busybox", "true"), 125,
             b"invalid argument 'nocolon' for --add-host"),
            (("network", "connect", "bridge", "nobody"), 1, b"no such container: nobody")):
        r = pydock_cli(*args)
        assert (r.returncode, text in r.stderr) == (code, True), (args, r.stderr)
        assert b"Traceback" not in r.stderr


def test_add_host_and_none_and_host_networks(busybox_image) -> None:
    out = ok("run", "--rm", "--add-host", "db:192.0.2.9", "--add-host", "gw:host-gateway",
             "busybox", "cat", "/etc/hosts")
    assert "192.0.2.9\tdb\n" in out and "10.213.0.1\tgw\n" in out
    out = ok("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net")
    assert out.split() == ["lo"]
    out = ok("run", "--rm", "--network", "none", "--add-host", "gw:host-gateway", "busybox",
             "cat", "/etc/hosts")
    assert "10.213.0.1\tgw\n" in out


def test_gc_removes_stale_bridges_rules_and_leases(busybox_image) -> None:
    import subprocess

    from pydock.backends.native import network_firewall as fw
    from pydock.backends.native.network_ipam import default_subnet, locked, new_network, peek

    stale = "pdk-0badc0ffee0"  # a bridge named like ours that no network owns
    subprocess.run(["ip", "link", "add", stale, "type", "bridge"], check=True)
    fw.install(stale)
    with locked() as st:
        st.mark_firewall(stale, True)
        net = st.default()
        if net is None:  # removed while idle: a record of it, as its last user left it
            net = new_network("bridge", default_subnet(), store=None)
            st.add_network(net)
        ip = st.allocate(net, {"pid": 0, "start": None, "cid": "0" * 64})  # no live holder
    assert any(lease.ip == ip for lease in peek().leases())
    try:
        ok("gc")
        assert not os.path.exists(f"/sys/class/net/{stale}")
        assert stale not in fw.bridges()
        assert stale not in peek().firewalled()
        assert not any(lease.ip == ip and lease.cid == "0" * 64 for lease in peek().leases())
    finally:
        subprocess.run(["ip", "link", "del", stale], capture_output=True)
        fw.uninstall(stale)


def test_the_default_bridge_lives_while_used_and_the_next_container_remakes_it(
        busybox_image) -> None:
    from pydock.backends.native import network_firewall as fw
    r = pydock_cli("run", "--rm", busybox_image, "sh", "-c", "ip -o -4 addr show eth0")
    assert r.returncode == 0 and b"10.213." in r.stdout  # pdk0 made for it...
    assert not os.path.exists("/sys/class/net/pdk0")    # ...and gone with it
    assert "pdk0" not in fw.bridges()
    r = pydock_cli("run", "-d", "--name", "keeps-pdk0", busybox_image, "sleep", "60")
    assert r.returncode == 0, r.stderr
    try:
        out = pydock_cli("gc").stdout.decode()
        assert "Deleted idle default network bridge" not in out  # a container is on it
        assert os.path.exists("/sys/class/net/pdk0")
    finally:
        pydock_cli("rm", "-f", "keeps-pdk0")
    assert not os.path.exists("/sys/class/net/pdk0")  # the rm was its last user
    assert "pdk0" not in fw.bridges()

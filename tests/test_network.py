"""Bridge networking of the native engine: the host reaches containers by IP, user networks
resolve names and aliases and are isolated from each other, nothing leaks (veths, bridges,
firewall rules, leases), parallel processes never share an address, Docker's FORWARD DROP
does not break our traffic."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import needs_root, network_links, require_service
from pydock.backends.native import network_firewall as fw
from pydock.backends.native.network_ipam import peek
from pydock.errors import NetworkError, NetworkNotFound, UsageError

pytestmark = pytest.mark.usefixtures("no_leaks")

HTTPD = "mkdir -p /www && echo hello from $(hostname) > /www/index.html && " \
        "exec httpd -f -p 80 -h /www"
GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} 80"


def http_get(ip: str, port: int = 80, timeout: float = 10.0) -> bytes:
    """GET / from the host, retrying until the server answers (the container may still be
    starting its server); raises the last error after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((ip, port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                chunks = []
                while data := s.recv(65536):
                    chunks.append(data)
                return b"".join(chunks)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def fetch(c, host: str, tries: int = 50) -> bytes:  # type: ignore[no-untyped-def]
    """GET / of ``host`` from inside container ``c`` (busybox nc), retried until it answers."""
    out = b""
    for _ in range(tries):
        out = c.exec(GET.format(host=host)).stdout
        if out:
            return out
        time.sleep(0.05)
    return out


def leases_of(cid: str) -> list[str]:
    return [lease.ip for lease in peek().leases() if lease.cid == cid]


def served(backend, name: str | None = None, **kw):  # type: ignore[no-untyped-def]
    return backend.run("busybox", command=["sh", "-c", HTTPD], name=name, **kw)


# -- the default network --------------------------------------------------------------------

def test_the_host_reaches_a_container_by_its_ip(backend) -> None:
    c = served(backend)
    ip = c.ip_address()
    assert ip is not None and ip.startswith("10.213.")
    assert b"hello from " + c.id[:12].encode() in http_get(ip)
    doc = c.inspect()["NetworkSettings"]
    assert doc["IPAddress"] == ip and doc["Networks"]["bridge"]["IPAddress"] == ip
    assert doc["Networks"]["bridge"]["Gateway"] == "10.213.0.1"
    c.remove(force=True)
    assert leases_of(c.id) == []


def test_a_bridged_container_sees_its_own_interfaces_and_hosts_entry(backend) -> None:
    c = backend.run("busybox", command=["sleep", "60"])
    ip = c.ip_address()
    r = c.exec("ls /sys/class/net; ip -4 -o addr show eth0; ip route; cat /etc/hosts")
    assert r.exit_code == 0, r.stderr
    out = r.stdout.decode()
    assert out.split()[:2] == ["eth0", "lo"]            # sysfs of its own namespace
    assert f"inet {ip}/20" in out and "default via 10.213.0.1 dev eth0" in out
    assert f"{ip}\t{c.id[:12]} {c.name}\n" in out
    c.remove(force=True)


def test_network_none_has_only_loopback(backend) -> None:
    c = backend.run("busybox", command=["cat", "/proc/net/dev"], network="none")
    c.wait()
    names = [line.split(":")[0].strip() for line in c.logs()[0].decode().split("\n")[2:]
             if line]
    assert names == ["lo"]
    assert c.ip_address() is None
    c.remove()


def test_two_containers_on_the_default_bridge_talk_by_ip(backend) -> None:
    server = served(backend)
    client = backend.run("busybox", command=["sleep", "60"])
    assert b"hello from" in fetch(client, server.ip_address())
    for c in (server, client):
        c.remove(force=True)


def test_host_gateway_reaches_a_service_on_the_host(backend) -> None:
    c = backend.run("busybox", command=["sleep", "60"],
                    extra_hosts=["host.docker.internal:host-gateway", "static:192.0.2.7"])
    gateway = c.inspect()["NetworkSettings"]["Gateway"]
    listener = socket.create_server((gateway, 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"from the host\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    hosts = c.exec(["cat", "/etc/hosts"]).stdout.decode()
    assert f"{gateway}\thost.docker.internal\n" in hosts and "192.0.2.7\tstatic\n" in hosts
    r = c.exec(f"nc -w 5 host.docker.internal {port} </dev/null")
    assert r.stdout == b"from the host\n", r.stderr
    t.join(5)
    listener.close()
    c.remove(force=True)


def test_a_restarted_container_gets_a_network_again(backend) -> None:
    c = served(backend)
    first = c.ip_address()
    assert first is not None and b"hello" in http_get(first)
    c.stop(timeout=1)
    assert c.ip_address() is None
    c.start()
    second = c.ip_address()
    assert second is not None and b"hello" in http_get(second)
    assert len(leases_of(c.id)) == 1
    c.remove(force=True)
    assert leases_of(c.id) == []


# -- user networks ----------------------------------------------------------------------------

def test_user_network_names_aliases_and_isolation(backend) -> None:
    a = backend.create_network("neta")
    b = backend.create_network("netb")
    try:
        web = served(backend, "web", network="neta", network_aliases=["www", "site"])
        client = backend.run("busybox", command=["sleep", "60"], name="client",
                             network="neta")
        other = served(backend, "other", network="netb")
        for host in ("web", "www", "site"):
            assert b"hello from" in fetch(client, host), host
        hosts = client.exec(["cat", "/etc/hosts"]).stdout.decode()
        assert f"{web.ip_address()}\tweb www site {web.id[:12]}\n" in hosts
        # The server on netb answers the host, but not a container on neta (nor by name).
        other_ip = other.ip_address()
        assert other_ip is not None and b"hello" in http_get(other_ip)
        assert client.exec(GET.format(host=other_ip)).stdout == b""
        assert client.exec(GET.format(host="other")).stdout == b""
        assert "other" not in hosts
        # ... nor one on the default network.
        plain = backend.run("busybox", command=["sleep", "60"])
        assert plain.exec(GET.format(host=web.ip_address())).stdout == b""
        # A container joining later shows up in the running ones' hosts files.
        late = backend.run("busybox", command=["sleep", "60"], name="late", network="neta")
        assert "\tlate " in web.exec(["cat", "/etc/hosts"]).stdout.decode()
        late.remove(force=True)
        assert "\tlate " not in web.exec(["cat", "/etc/hosts"]).stdout.decode()
        for c in (web, client, other, plain):
            c.remove(force=True)
    finally:
        for net in (a, b):
            try:
                backend.remove_network(net.name)
            except NetworkError:
                pass
    assert not any(os.path.exists(f"/sys/class/net/{n.bridge}") for n in (a, b))
    assert not {a.bridge, b.bridge} & set(fw.bridges())


def test_connect_and_disconnect_a_running_container(backend) -> None:
    backend.create_network("front")
    backend.create_network("back")
    try:
        db = served(backend, "db", network="back")
        app = backend.run("busybox", command=["sleep", "60"], name="app", network="front")
        assert app.exec(GET.format(host="db")).stdout == b""
        app.connect("back", aliases=["api"])
        assert b"hello from" in fetch(app, "db")
        assert "\tapp api " in db.exec(["cat", "/etc/hosts"]).stdout.decode()
        assert set(app.inspect()["NetworkSettings"]["Networks"]) == {"front", "back"}
        with pytest.raises(NetworkError, match="already connected"):
            app.connect("back")
        app.disconnect("back")
        assert app.exec(GET.format(host=db.ip_address())).stdout == b""
        assert "app" not in db.exec(["cat", "/etc/hosts"]).stdout.decode()
        assert app.exec("ls /sys/class/net").stdout.split() == [b"eth0", b"lo"]
        with pytest.raises(NetworkError, match="not connected"):
            app.disconnect("back")
        for c in (db, app):
            c.remove(force=True)
    finally:
        for name in ("front", "back"):
            backend.remove_network(name)


def test_errors_are_clear_and_leave_nothing_behind(backend) -> None:
    with pytest.raises(NetworkNotFound, match="unknown network 'nosuch'"):
        backend.create("busybox", command=["true"], network="nosuch")
    assert backend.containers(all=True) == []
    with pytest.raises(UsageError, match="only for containers in user defined networks"):
        backend.create("busybox", command=["true"], network_aliases=["x"])
    with pytest.raises(NetworkError, match="pre-defined"):
        backend.remove_network("bridge")
    net = backend.create_network("busy")
    with pytest.raises(NetworkError, match="already exists"):
        backend.create_network("busy")
    c = backend.run("busybox", command=["sleep", "60"], name="user", network="busy")
    with pytest.raises(NetworkError, match="has active endpoints.*user"):
        backend.remove_network("busy")
    assert os.path.exists(f"/sys/class/net/{net.bridge}")
    c.remove(force=True)
    backend.remove_network("busy")
    assert not os.path.exists(f"/sys/class/net/{net.bridge}")
    with pytest.raises(NetworkNotFound):
        backend.remove_network("busy")


def test_a_subnet_clashing_with_a_host_route_is_refused(backend) -> None:
    needs_root()
    route = "10.213.250.0/24"
    subprocess.run(["ip", "route", "add", "blackhole", route], check=True)
    try:
        with pytest.raises(NetworkError, match=f"clashes with the host route {route}.*"
                                               "PYDOCK_SUBNET"):
            backend.create_network("clash", subnet=route)
    finally:
        subprocess.run(["ip", "route", "del", "blackhole", route], check=True)
    assert [n for n in backend.networks() if n.name == "clash"] == []
    with pytest.raises(NetworkError, match="overlaps network bridge"):
        backend.create_network("inside", subnet="10.213.0.0/24")


# -- nothing leaks ----------------------------------------------------------------------------

def test_removing_containers_and_networks_leaves_no_links_rules_or_leases(backend) -> None:
    net = backend.create_network("tidy")
    cs = [backend.run("busybox", command=["sleep", "60"], network=n) for n in ("tidy",
                                                                              "bridge")]
    assert all(leases_of(c.id) for c in cs)
    assert net.bridge in fw.bridges()
    for c in cs:
        c.remove(force=True)
        assert leases_of(c.id) == []
    backend.remove_network("tidy")
    backend.close()  # the pool's namespaces and their leases go too
    mine = os.getpid()
    assert [lease for lease in peek().leases() if lease.pid == mine] == []
    assert net.bridge not in fw.bridges()
    assert subprocess.run(["iptables", "-C", "FORWARD", "-i", net.bridge, "-o", net.bridge,
                           "-m", "comment", "--comment", "pydock", "-j", "ACCEPT"],
                          capture_output=True).returncode != 0
    deadline = time.monotonic() + 10
    while network_links(backend.store.root) and time.monotonic() < deadline:
        time.sleep(0.05)  # namespaces are torn down asynchronously
    assert network_links(backend.store.root) == []


def test_sigkill_of_a_client_leaks_nothing_after_the_next_sweep(store_dir, busybox_image
                                                                ) -> None:
    needs_root()
    script = textwrap.dedent(f"""
        import time
        from pydock.backends.native.backend import NativeBackend
        b = NativeBackend({str(store_dir)!r}, network_pool=3)
        b.create_network("killed")
        cs = [b.run("busybox", command=["sleep", "100"]),
              b.run("busybox", command=["sleep", "100"], network="killed")]
        time.sleep(0.5)  # the pool refills meanwhile
        print(" ".join(c.id for c in cs), flush=True)
        time.sleep(100)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ids = proc.stdout.readline().split()
    assert len(ids) == 2
    held = [lease for lease in peek().leases() if lease.pid == proc.pid]
    assert held, "the client's pool holds addresses"
    monitors = {lease.pid for lease in peek().leases() if lease.cid.encode() in ids}
    assert monitors and proc.pid not in monitors  # containers' addresses: their monitor's
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in monitors) and \
            time.monotonic() < deadline:
        time.sleep(0.05)  # the monitor kills its containers and exits
    from pydock.backends.native.backend import NativeBackend
    b = NativeBackend(store_dir)
    b.sweep()
    st = peek()
    assert [lease for lease in st.leases() if lease.pid == proc.pid] == []
    assert [lease for lease in st.leases() if lease.cid.encode() in ids] == []
    net = b.network("killed")
    b.remove_network("killed")
    assert net.bridge not in fw.bridges()
    b.close()


def test_the_default_bridge_goes_with_its_last_user(store_dir, busybox_image) -> None:
    """A backend that used the default network removes its bridge and firewall table when it
    closes with nothing left on it; one kept alive by a detached container stays until
    that is removed; after a SIGKILLed user the next sweep removes it."""
    needs_root()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("pdk0 is host-wide: another xdist worker's containers keep it (run "
                    "this test without -n)")
    from pydock.backends.native.backend import NativeBackend
    b = NativeBackend(store_dir)
    b.run("busybox", command=["true"]).wait(10)
    assert os.path.exists("/sys/class/net/pdk0") and "pdk0" in fw.bridges()
    b.close()
    assert not os.path.exists("/sys/class/net/pdk0") and "pdk0" not in fw.bridges()
    assert fw.TABLE not in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                          text=True).stdout
    b = NativeBackend(store_dir)
    kept = b.create("busybox", command=["sleep", "100"])
    kept.start(detach=True)
    b.close()
    assert os.path.exists("/sys/class/net/pdk0")  # the detached container still uses it
    b = NativeBackend(store_dir)
    b.container(kept.id).remove(force=True)
    b.close()
    assert not os.path.exists("/sys/class/net/pdk0")
    script = textwrap.dedent(f"""
        import time
        from pydock.backends.native.backend import NativeBackend
        b = NativeBackend({str(store_dir)!r})
        b.run("busybox", command=["sleep", "100"])
        print("up", flush=True)
        time.sleep(100)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while os.path.exists("/sys/class/net/pdk0") and time.monotonic() < deadline:
        NativeBackend(store_dir).sweep()  # its monitor is on its way out meanwhile
        time.sleep(0.1)
    assert not os.path.exists("/sys/class/net/pdk0")


def test_sweep_removes_networks_of_a_deleted_store(tmp_path) -> None:
    needs_root()
    from pydock.backends.native.backend import NativeBackend
    store = tmp_path / "gone"
    b = NativeBackend(store)
    net = b.create_network("orphan")
    b.close()
    import shutil
    shutil.rmtree(store)
    NativeBackend(tmp_path / "other").sweep()
    assert not os.path.exists(f"/sys/class/net/{net.bridge}")
    assert net.bridge not in fw.bridges()
    assert net.id not in {n.id for n in peek().networks()}


# -- concurrency ------------------------------------------------------------------------------

def test_parallel_processes_never_get_the_same_address(backend, tmp_path) -> None:
    net = backend.create_network("par")
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        from pydock.backends.native.network_ipam import holder_of, locked, peek
        net = [n for n in peek().networks() if n.id == {net.id!r}][0]
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        ips = []
        for _ in range(100):
            with locked() as st:
                ips.append(st.allocate(net, holder_of(os.getpid())))
        print(" ".join(ips), flush=True)
        sys.stdin.read()  # hold the leases until told
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stdin=subprocess.PIPE) for _ in range(2)]
    go.touch()
    got = [p.stdout.readline().split() for p in procs]  # type: ignore[union-attr]
    for p in procs:
        p.communicate(b"")
    assert len(got[0]) == len(got[1]) == 100
    assert not set(got[0]) & set(got[1])
    assert len(set(got[0])) == 100
    backend.remove_network("par")


def test_parallel_clients_start_containers_with_distinct_addresses(store_dir, busybox_image,
                                                                   tmp_path) -> None:
    needs_root()
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        from pydock.backends.native.backend import NativeBackend
        b = NativeBackend({str(store_dir)!r})
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        cs = [b.run("busybox", command=["sleep", "60"]) for _ in range(4)]
        print(" ".join(c.ip_address() for c in cs), flush=True)
        sys.stdin.read()
        b.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stdin=subprocess.PIPE) for _ in range(2)]
    go.touch()
    got = [p.stdout.readline().split() for p in procs]  # type: ignore[union-attr]
    for p in procs:
        p.communicate(b"")
    ips = got[0] + got[1]
    assert len(ips) == 8 and len(set(ips)) == 8


# -- Docker on the same host ------------------------------------------------------------------

def _dockerd_running() -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "dockerd":
                    return True
        except OSError:
            continue
    return False


def test_containers_talk_while_dockers_forward_policy_drops(backend) -> None:
    require_service(_dockerd_running(), "a Docker daemon (dockerd)")
    policy = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
    assert "-P FORWARD DROP" in policy.stdout  # Docker's, the case that matters
    with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
        assert f.read().strip() == "1"
    backend.create_network("withdocker")
    try:
        for network in ("bridge", "withdocker"):
            server = served(backend, network=network)
            client = backend.run("busybox", command=["sleep", "60"], network=network)
            assert b"hello from" in fetch(client, server.ip_address()), network
            for c in (server, client):
                c.remove(force=True)
    finally:
        backend.remove_network("withdocker")


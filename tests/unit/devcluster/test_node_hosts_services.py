"""Hosts-file rendering and Service routing of the process node."""

from kiln_devcluster.node.hosts import PodAddr, ServiceAddr, render_hosts
from kiln_devcluster.node.services import routes, service_addrs

OWN = PodAddr("job-worker-0", "train", "10.88.0.3", "job-worker-0")


def hosts_map(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        ip, *names = line.split()
        for n in names:
            out.setdefault(n, ip)
    return out


def test_own_service_and_subdomain_names():
    pods = [OWN, PodAddr("idx-0", "train", "10.88.0.4", "idx-0", "idx-svc"),
            PodAddr("x-0", "other", "10.88.0.5", "x-0", "xs")]
    services = [ServiceAddr("job-master-0", "train", ("10.96.0.20",)), ServiceAddr("minio", "kiln-system", ("10.96.0.30",))]
    m = hosts_map(render_hosts(OWN, pods, services))
    assert m["job-worker-0"] == "10.88.0.3"
    assert m["localhost"] == "127.0.0.1"
    for name in ("job-master-0", "job-master-0.train", "job-master-0.train.svc", "job-master-0.train.svc.cluster.local"):
        assert m[name] == "10.96.0.20"
    # Short names only within the pod's own namespace, as the DNS search path would give.
    assert "minio" not in m and m["minio.kiln-system.svc"] == "10.96.0.30"
    assert m["idx-0.idx-svc"] == "10.88.0.4" and m["idx-0.idx-svc.train.svc.cluster.local"] == "10.88.0.4"
    assert "x-0.xs" not in m and m["x-0.xs.other.svc"] == "10.88.0.5"
    assert m["10-88-0-5.other.pod.cluster.local"] == "10.88.0.5"
    assert m["10-88-0-3.train.pod.cluster.local"] == "10.88.0.3"


def test_render_is_deterministic():
    pods = [PodAddr("b", "n", "10.88.0.9", "b", "s"), PodAddr("a", "n", "10.88.0.8", "a", "s")]
    svcs = [ServiceAddr("s2", "n", ("10.96.0.2",)), ServiceAddr("s1", "n", ("10.96.0.1",))]
    assert render_hosts(OWN, pods, svcs) == render_hosts(OWN, list(reversed(pods)), list(reversed(svcs)))


def test_from_pod_uses_hostname_and_cuts_name():
    long = "x" * 70
    pod = {"metadata": {"name": long, "namespace": "n"}, "spec": {}}
    assert PodAddr.from_pod(pod, "10.88.0.2").hostname == "x" * 63
    pod = {"metadata": {"name": "p", "namespace": "n"}, "spec": {"hostname": "h", "subdomain": "s"}}
    addr = PodAddr.from_pod(pod, "10.88.0.2")
    assert (addr.hostname, addr.subdomain) == ("h", "s")


SVC = {"metadata": {"name": "web", "namespace": "n"},
       "spec": {"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                                    {"name": "dns", "port": 53, "protocol": "UDP"}]}}
HEADLESS = {"metadata": {"name": "h", "namespace": "n"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}


def slice_(svc, endpoints, port_name="http", port=8080):
    return {"metadata": {"namespace": "n", "name": f"{svc}-abc", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": endpoints}


def test_routes_only_ready_tcp_backends():
    eps = [{"addresses": ["10.88.0.3"], "conditions": {"ready": True}},
           {"addresses": ["10.88.0.4"], "conditions": {"ready": False}},
           {"addresses": ["10.88.0.2"]}]
    rs = routes([SVC, HEADLESS], [slice_("web", eps)])
    assert len(rs) == 1
    assert (rs[0].cluster_ip, rs[0].port) == ("10.96.0.5", 80)
    assert rs[0].backends == (("10.88.0.2", 8080), ("10.88.0.3", 8080))


def test_route_without_endpoints_has_no_backends():
    assert routes([SVC], [])[0].backends == ()


def test_service_addrs_headless_uses_ready_endpoints():
    eps = [{"addresses": ["10.88.0.9"], "conditions": {"ready": True}},
           {"addresses": ["10.88.0.8"], "conditions": {"ready": False}}]
    addrs = service_addrs([SVC, HEADLESS], [slice_("h", eps, port_name="")])
    assert ServiceAddr("web", "n", ("10.96.0.5",)) in addrs
    assert ServiceAddr("h", "n", ("10.88.0.9",)) in addrs

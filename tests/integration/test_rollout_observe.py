"""The rollout gates' observations on the converged lab (ooha/rollout/live/observe.py).

Read the way the driver reads them: inside the pyinfra CLI, at deploy-file load time, with
every inventory host connected.  A throwaway deploy file (written below) makes the
observations and the front-door requests once and leaves them in a JSON file; the test
judges them with the pure gates.  Non-destructive: nothing is stopped or reconfigured, the
only traffic is a few front-door requests and one synthetic editing session.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lab.client import explain
from ooha.rollout import gates
from ooha.rollout.plan import NodeView, plan_rollout
from ooha.rollout.release import ImageRef

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

NEWER_TAG = "9.3.1.2"
"""The lab registry's newer good stand-in (lab/registry.py): the target of the plan judged here."""
REQUESTS = 5

# Runs inside `pyinfra -y inventories/lab.py <this file>`.  pyinfra executes a deploy file once
# per host, in parallel greenlets: only ds1's copy observes (the others would open channels on
# the same hosts at once, beyond sshd's MaxSessions).
OBSERVER = r'''
import dataclasses, json, os, ssl, urllib.error, urllib.request

from pyinfra import host, inventory

from lab.client import wait_for
from ooha.rollout.live import observe as O

if host.name == "ds1":
    docs = list(inventory.get_group("docs"))
    lbs = list(inventory.get_group("lb"))
    names = [h.name for h in docs]
    vip = str(host.data.get("lb_vip")).split("/")[0]
    ca = host.data.get("lab_ca_cert")
    out = {"views": [dataclasses.asdict(O.node_view(h, str(h.data.get("az")))) for h in docs],
           "cluster": dataclasses.asdict(O.cluster_view(inventory)),
           "health": [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in O.node_health(docs[0])]}
    # a few requests through the front door for a document of ds1, and one the node answers 502
    # (POST /example/: the example is off, and nginx never retries a POST on another node)
    key = O.probe_key("ds1", names, {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca)))
    before = O.lb_counters(lbs, "ds1")
    statuses = []
    for _ in range(int(os.environ["OBSERVE_REQUESTS"])):
        with opener.open(f"https://{vip}/healthcheck?shardkey={key}", timeout=10) as answer:
            statuses.append([answer.status, answer.read().decode().strip()])
    try:
        opener.open(urllib.request.Request(f"https://{vip}/example/?shardkey={key}", data=b"x", method="POST"), timeout=10)
        statuses.append([200, "example answered"])
    except urllib.error.HTTPError as error:
        statuses.append([error.code, ""])
    wanted = len(statuses)
    # nginx logs a request when it ends, which may be just after the client read the answer
    after = wait_for("the LBs' access logs to count the requests",
                     lambda: (lambda c: c if sum(c.get(lb, (0, 0))[0] - before.get(lb, (0, 0))[0] for lb in c) >= wanted else None)(
                         O.lb_counters(lbs, "ds1")), 20, interval=0.5)
    out.update(before=before, after=after, statuses=statuses)
    out["synthetic"] = O.synthetic_session_detail(f"https://{vip}/", "ds1", names, {}, ca)
    # the synthetic session was closed: ds1's open editing sessions come back to what they were
    out["sessions_after"] = wait_for("ds1's synthetic session to end",
                                     lambda: (lambda n: [n] if n == out["views"][0]["sessions"] else None)(
                                         O.node_view(docs[0], "az1").sessions), 20, interval=0.5)[0]
    with open(os.environ["OBSERVE_OUT"], "w") as f:
        json.dump(out, f)
'''


def _image(data: dict[str, Any] | None) -> ImageRef | None:
    return ImageRef(**data) if data else None


def _cluster(data: dict[str, Any]) -> gates.ClusterView:
    rabbit = data["rabbitmq"]
    return gates.ClusterView(
        patroni=tuple(gates.PatroniMember(**m) for m in data["patroni"]) if data["patroni"] is not None else None,
        etcd=tuple(gates.EtcdMember(**m) for m in data["etcd"]) if data["etcd"] is not None else None,
        sentinels=data["sentinels"],
        rabbitmq=gates.RabbitView(*(tuple(rabbit[k]) for k in ("expected", "running", "partitions", "alarms"))) if rabbit else None,
        newest_backup_end=data["newest_backup_end"],
    )


@pytest.fixture(scope="module")
def observed(converged: dict[str, Any], pyinfra_cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The observations, made once by the throwaway deploy file."""
    folder = tmp_path_factory.mktemp("observe")
    deploy_file, out = folder / "observe_lab.py", folder / "observed.json"
    deploy_file.write_text(OBSERVER)
    started = time.monotonic()
    result = pyinfra_cli("-y", "inventories/lab.py", str(deploy_file), timeout=600,
                         env={"OBSERVE_OUT": str(out), "OBSERVE_REQUESTS": str(REQUESTS)})
    assert result.returncode == 0 and out.exists(), explain(result)
    print(f"observations and probes in one CLI run: {time.monotonic() - started:.1f} s")
    return json.loads(Path(out).read_text())


def test_cluster_view_passes_the_preflight_for_a_plan_of_the_three_nodes(observed: dict[str, Any]) -> None:
    views = [NodeView(**dict(v, running=_image(v["running"]))) for v in observed["views"]]
    cluster = _cluster(observed["cluster"])
    deployed = views[0].running
    assert deployed is not None
    plan = plan_rollout(views, ImageRef(deployed.image, NEWER_TAG))
    assert sorted(plan.nodes()) == ["ds1", "ds2", "ds3"] and all(len(w) == 1 for w in plan.waves), plan
    results = gates.preflight(views, cluster, plan.waves, gates.Limits(), time.time())
    assert not gates.problems_of(results), gates.problems_of(results)
    # what was seen, not only that the gates said yes
    assert len(cluster.patroni) == 3 and len(cluster.etcd) == 3 and all(m.healthy for m in cluster.etcd)
    assert sorted(cluster.sentinels) == ["data1", "data2", "data3"] and len(set(cluster.sentinels.values())) == 1
    assert sorted(cluster.rabbitmq.running) == sorted(cluster.rabbitmq.expected) == ["rabbit@data1", "rabbit@data2", "rabbit@data3"]


def test_every_ds_node_runs_the_deployed_tag_healthy_with_countable_sessions(observed: dict[str, Any], converged: dict[str, Any]) -> None:
    from inventories.labstate import ds_image_data

    wanted = ds_image_data(converged)
    for view in observed["views"]:
        assert view["healthy"] is True and isinstance(view["sessions"], int), view
        running = _image(view["running"])
        assert running is not None and (running.image, running.version) == (wanted["ds_image"], wanted["ds_version"]), view
        assert running.digest and running.digest.startswith("sha256:"), view  # pulled from the lab registry
    running, health, version = observed["health"]
    assert _image(running) == _image(observed["views"][0]["running"]) and health == "true" and version == wanted["ds_version"]


def test_lb_counters_count_front_door_requests_to_the_node(observed: dict[str, Any]) -> None:
    assert observed["statuses"][:REQUESTS] == [[200, "true"]] * REQUESTS and observed["statuses"][-1][0] == 502, observed["statuses"]
    before, after = observed["before"], observed["after"]
    assert sorted(after) == ["lb1", "lb2"], after  # both LBs read (one of them holds the VIP)
    requests = sum(after[lb][0] - before[lb][0] for lb in after)
    errors = sum(after[lb][1] - before[lb][1] for lb in after)
    assert requests >= REQUESTS + 1 and errors >= 1, (before, after)
    print(f"front door: {requests} request(s) to ds1 counted, {errors} upstream error(s)")


def test_synthetic_session_opens_on_ds1_and_ends(observed: dict[str, Any]) -> None:
    ok, why = observed["synthetic"]
    assert ok, why
    assert observed["sessions_after"] == observed["views"][0]["sessions"]

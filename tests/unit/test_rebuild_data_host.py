"""Issue 10 item 1 (data hosts): the pure decisions that bring a blank etcd member and a blank
Patroni member back: is there a quorum to join, which members are this host's old identity,
the initial cluster it starts with, and the one idempotent member swap (run here against a
fake etcdctl that keeps a member list, twice, to show a second run does nothing)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from ooha.facts.etcd import parse_etcd_cluster
from ooha.layers.etcd import (
    JoinRefused,
    has_quorum,
    healthy_members,
    join_plan,
    member_started_script,
    member_swap_script,
    own_identities,
    stale_members,
)
from ooha.layers.postgres import member_ready

URL = {n: f"https://198.18.{i}.31:2380" for i, n in enumerate(("data1", "data2", "data3"), start=1)}
CLIENT = {n: f"https://198.18.{i}.31:2379" for i, n in enumerate(("data1", "data2", "data3"), start=1)}
NAMES_BY_URL = {u: n for n, u in URL.items()}


def _member(name: str, mid: str, peer: str | None = None, client: bool = True) -> dict:
    return {"name": name, "id": mid, "peer_urls": [peer or URL[name]],
            "client_urls": [CLIENT[name]] if client and name else []}


def _view(members: list[dict], healthy: set[str]) -> dict:
    endpoints = [{"endpoint": u, "healthy": m["name"] in healthy, "error": "" if m["name"] in healthy else "timeout"}
                 for m in members for u in m["client_urls"]]
    return {"endpoints": endpoints, "members": members}


THREE = [_member("data1", "a1"), _member("data2", "b2"), _member("data3", "c3")]


# --- quorum -------------------------------------------------------------------------------


def test_quorum_is_a_strict_majority_of_the_member_list() -> None:
    assert has_quorum(_view(THREE, {"data1", "data3"}))
    assert not has_quorum(_view(THREE, {"data1"}))
    assert not has_quorum(_view(THREE, set()))
    # An added-but-unstarted member is a voter: 2 healthy of 4 is no majority.
    four = THREE + [_member("", "d4", "https://198.18.1.32:2380")]
    assert not has_quorum(_view(four, {"data1", "data3"}))
    assert [m["name"] for m in healthy_members(_view(THREE, {"data3"}))] == ["data3"]


def test_quorum_from_the_real_fact_output() -> None:
    health = ('[{"endpoint":"https://198.18.1.31:2379","health":true},'
              '{"endpoint":"https://198.18.2.31:2379","health":false,"error":"context deadline exceeded"},'
              '{"endpoint":"https://198.18.3.31:2379","health":true}]')
    members = ('{"members":[{"ID":1,"name":"data1","peerURLs":["https://198.18.1.31:2380"],"clientURLs":["https://198.18.1.31:2379"]},'
               '{"ID":2,"name":"data2","peerURLs":["https://198.18.2.31:2380"],"clientURLs":["https://198.18.2.31:2379"]},'
               '{"ID":3,"name":"data3","peerURLs":["https://198.18.3.31:2380"],"clientURLs":["https://198.18.3.31:2379"]}]}')
    view = parse_etcd_cluster([health, "", "----onlyoffice-ha-etcd-members----", members])
    assert has_quorum(view)
    plan = join_plan(view, "data2", URL["data2"], NAMES_BY_URL)
    assert [m["id"] for m in plan.stale] == ["2"]


# --- which members are this host ------------------------------------------------------------


def test_own_identities_by_name_or_peer_url() -> None:
    moved = "https://198.18.2.99:2380"
    assert [m["id"] for m in own_identities(THREE, "data2", URL["data2"])] == ["b2"]
    # A replacement with a new address: the old member is found by its name.
    assert [m["id"] for m in own_identities(THREE, "data2", moved)] == ["b2"]
    # A member added for this URL but never started has no name: found by its URL.
    unstarted = THREE[:1] + [_member("", "e5", moved)] + THREE[2:]
    assert [m["id"] for m in own_identities(unstarted, "data2", moved)] == ["e5"]
    assert own_identities(THREE, "data4", "https://198.18.1.32:2380") == []


def test_stale_keeps_a_previous_runs_unstarted_add_of_this_url() -> None:
    members = [_member("data1", "a1"), _member("", "e5", URL["data2"]), _member("data3", "c3")]
    assert stale_members(members, "data2", URL["data2"]) == []
    # ...but an unstarted member for ANOTHER URL under our name would not be kept.
    old = [_member("data2", "b2", "https://198.18.2.99:2380", client=False)]
    assert [m["id"] for m in stale_members(THREE[:1] + old, "data2", URL["data2"])] == ["b2"]


# --- the plan ------------------------------------------------------------------------------------


def test_blank_member_replaces_its_dead_identity() -> None:
    plan = join_plan(_view(THREE, {"data1", "data3"}), "data2", URL["data2"], NAMES_BY_URL)
    assert [m["id"] for m in plan.stale] == ["b2"]
    assert plan.initial_cluster == f"data1={URL['data1']},data3={URL['data3']},data2={URL['data2']}"
    assert plan.endpoints == [CLIENT["data1"], CLIENT["data3"]]


def test_replacement_with_a_new_address() -> None:
    moved = "https://198.18.2.99:2380"
    plan = join_plan(_view(THREE, {"data1", "data3"}), "data2", moved, NAMES_BY_URL)
    assert [m["id"] for m in plan.stale] == ["b2"]
    assert plan.initial_cluster.endswith(f",data2={moved}") and URL["data2"] not in plan.initial_cluster


def test_new_member_is_only_added() -> None:
    url = "https://198.18.1.32:2380"
    plan = join_plan(_view(THREE, {"data1", "data2", "data3"}), "data4", url, NAMES_BY_URL)
    assert plan.stale == []
    assert plan.initial_cluster.split(",") == [f"data1={URL['data1']}", f"data2={URL['data2']}",
                                              f"data3={URL['data3']}", f"data4={url}"]


def test_unstarted_other_member_named_from_the_inventory() -> None:
    # data3 was added but never started (no name): it stays in the initial cluster (etcd
    # compares the peer URLs of the whole list), under its inventory name.
    members = [_member("data1", "a1"), _member("data2", "b2"), _member("", "c3", URL["data3"])]
    plan = join_plan(_view(members, {"data1", "data2"}), "data4", "https://198.18.1.32:2380", NAMES_BY_URL)
    assert f"data3={URL['data3']}" in plan.initial_cluster.split(",")
    # With data3 and the dead data2 both voters, 2 healthy of 4 is no majority.
    four = members + [_member("data4", "d4", "https://198.18.1.32:2380", client=False)]
    with pytest.raises(JoinRefused, match="2 of 4 members healthy"):
        join_plan(_view(four, {"data1", "data2"}), "data5", "https://198.18.2.32:2380", NAMES_BY_URL)


@pytest.mark.parametrize("healthy", [set(), {"data1"}, {"data3"}])
def test_no_quorum_is_refused_never_a_new_cluster(healthy: set[str]) -> None:
    with pytest.raises(JoinRefused, match=r"no quorum to join: .*fix: restore the etcd quorum"):
        join_plan(_view(THREE, healthy), "data2", URL["data2"], NAMES_BY_URL)


def test_no_answer_is_refused() -> None:
    with pytest.raises(JoinRefused, match=r"none answers.*fix:"):
        join_plan(None, "data2", URL["data2"], NAMES_BY_URL)


def test_a_member_that_answers_is_never_blank() -> None:
    with pytest.raises(JoinRefused, match=r"not a blank host; fix: check etcd_data_dir"):
        join_plan(_view(THREE, {"data1", "data2", "data3"}), "data2", URL["data2"], NAMES_BY_URL)


# --- the swap, against a fake etcdctl ----------------------------------------------------------

FAKE_ETCDCTL = r"""#!/bin/sh
# A member list in $FAKE_ETCD (lines "id, status, name, peers, clients, false"); logs calls.
echo "$*" >> "$FAKE_ETCD.log"
for a in "$@"; do last2=$last1; last1=$a; done
case "$*" in
  *"member list"*) cat "$FAKE_ETCD" ;;
  *"member remove"*) grep -v "^$last1, " "$FAKE_ETCD" > "$FAKE_ETCD.new"; mv "$FAKE_ETCD.new" "$FAKE_ETCD";
                     echo "Member $last1 removed" ;;
  *"member add"*) url=${last1#--peer-urls=}; echo "ffff, unstarted, , $url, , false" >> "$FAKE_ETCD";
                  echo "Member added" ;;
  *) exit 2 ;;
esac
"""


def _run_swap(tmp_path: Path, members: str, name: str, url: str, stale: list[str]) -> tuple[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "etcdctl"
    fake.write_text(FAKE_ETCDCTL)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    db = tmp_path / "members"
    if not db.exists():
        db.write_text(members)
    script = member_swap_script([CLIENT["data1"], CLIENT["data3"]], name, url, stale)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_ETCD": str(db)}
    subprocess.run(["sh", "-c", script], check=True, env=env, capture_output=True, text=True)
    return db.read_text(), (tmp_path / "members.log").read_text()


LIST = (f"a1, started, data1, {URL['data1']}, {CLIENT['data1']}, false\n"
        f"b2, started, data2, {URL['data2']}, {CLIENT['data2']}, false\n"
        f"c3, started, data3, {URL['data3']}, {CLIENT['data3']}, false\n")


def test_swap_removes_the_old_member_and_adds_this_one_once(tmp_path: Path) -> None:
    after, log = _run_swap(tmp_path, LIST, "data2", URL["data2"], ["b2"])
    assert "b2," not in after and f"ffff, unstarted, , {URL['data2']}, , false" in after
    assert log.count("member remove b2") == 1 and log.count("member add data2") == 1
    assert "--endpoints=https://198.18.1.31:2379,https://198.18.3.31:2379" in log
    # Run again (a retried operation): nothing removed, nothing added.
    again, log = _run_swap(tmp_path, LIST, "data2", URL["data2"], ["b2"])
    assert again == after and log.count("member remove") == 1 and log.count("member add") == 1


def test_swap_peer_url_match_is_exact(tmp_path: Path) -> None:
    # https://198.18.2.3:2380 is a prefix of data2's URL: it must still be added.
    after, log = _run_swap(tmp_path, LIST, "data9", "https://198.18.2.3:2380", [])
    assert "member add data9 --peer-urls=https://198.18.2.3:2380" in log and "member remove" not in log


def test_swap_stops_when_the_member_list_fails(tmp_path: Path) -> None:
    script = member_swap_script([CLIENT["data1"]], "data2", URL["data2"], ["b2"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "etcdctl").write_text("#!/bin/sh\necho \"$*\" >> \"$LOG\"; exit 1\n")
    (bin_dir / "etcdctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log")}
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "remove" not in (tmp_path / "log").read_text() and "add" not in (tmp_path / "log").read_text()


def test_started_script_names_the_member_and_deadline() -> None:
    script = member_started_script("198.18.2.31", 2379, "data2", 60)
    assert "--endpoints=https://198.18.2.31:2379" in script and "$3==n" in script and "-v n=data2" in script
    assert "after 60 s" in script and "exit 1" in script


# --- Patroni: a member is ready when it runs and streams ---------------------------------------


def _pview(state: str = "running", streaming: bool = True, leader: str = "data1") -> dict:
    return {"leader": leader, "members": [
        {"name": "data1", "state": "running", "streaming": False},
        {"name": "data2", "state": state, "streaming": streaming},
    ]}


def test_member_ready() -> None:
    assert member_ready(_pview(), "data2") == (True, "data2 running (streaming)")
    assert member_ready(_pview(), "data1")[0]
    assert member_ready(_pview(state="creating replica", streaming=False), "data2") == (False, "data2 is creating replica")
    assert member_ready(_pview(streaming=False), "data2")[1] == "data2 running but not streaming from data1"
    assert member_ready({"leader": "data1", "members": []}, "data2")[1].startswith("data2 not in the cluster yet")
    assert member_ready(None, "data2") == (False, "Patroni REST API not answering")

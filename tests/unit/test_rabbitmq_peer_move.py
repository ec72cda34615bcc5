"""A RabbitMQ peer at a new address (ooha/layers/rabbitmq.py): the running VM's host table is
read and updated live (no restart of a survivor while the replaced node has not joined)."""
from __future__ import annotations

from ooha.layers import rabbitmq

PEERS = {"data1": "198.18.1.31", "data2": "198.18.2.31", "data3": "198.18.3.99"}


def test_the_table_rabbitmqctl_prints_is_parsed() -> None:
    lines = ['["198.18.1.31 data1","198.18.3.31 data3",', ' "198.18.2.31 data2"]', ""]
    assert rabbitmq.parse_resolver_table(lines) == {"data1": "198.18.1.31", "data2": "198.18.2.31",
                                                    "data3": "198.18.3.31"}
    assert rabbitmq.parse_resolver_table(["[]"]) == {}


def test_a_node_that_does_not_answer_has_no_table_and_needs_nothing() -> None:
    assert rabbitmq.parse_resolver_table([]) is None
    assert rabbitmq.parse_resolver_table(["Error: unable to perform an operation on node"]) is None
    assert rabbitmq.resolver_changes(None, PEERS) == {}


def test_only_a_moved_or_missing_peer_is_a_change() -> None:
    table = {"data1": "198.18.1.31", "data2": "198.18.2.31", "data3": "198.18.3.31"}
    assert rabbitmq.resolver_changes(table, PEERS) == {"data3": "198.18.3.99"}
    assert rabbitmq.resolver_changes({**table, "data3": "198.18.3.99"}, PEERS) == {}     # a rerun: nothing
    assert rabbitmq.resolver_changes({"data1": "198.18.1.31"}, PEERS) == {"data2": "198.18.2.31",
                                                                           "data3": "198.18.3.99"}


def test_the_live_update_replaces_each_peers_entries() -> None:
    script = rabbitmq.resolver_update_script(PEERS)
    assert script.startswith('W = [{{198,18,1,31}, ["data1"]}, {{198,18,2,31}, ["data2"]}, {{198,18,3,99}, ["data3"]}]')
    assert "inet_db:del_host(IP)" in script and "inet_db:add_host(IP, Ns)" in script and script.endswith("ok.")
    assert script.index("del_host") < script.index("add_host")


def test_the_inetrc_is_not_a_restart_reason() -> None:
    import inspect

    source = inspect.getsource(rabbitmq._node_files)
    assert "return [cookie, env, conf, plugins, drop_in]" in source

"""RabbitMQ layer: parsers of rabbitmqctl's JSON, input validation, rendered templates."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jinja2

from ooha.layers.rabbitmq import MIRROR_DEFINITION, RABBITMQ_DEFAULTS, input_problems, node_name
from ooha.facts.rabbitmq import RabbitmqPasswordMatches, parse_cluster_status, parse_policies

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

STATUS = {
    "cluster_name": "rabbit@data1",
    "disk_nodes": ["rabbit@data1", "rabbit@data2", "rabbit@data3"],
    "ram_nodes": [],
    "running_nodes": ["rabbit@data3", "rabbit@data1"],
    "partitions": {"rabbit@data1": [], "rabbit@data3": ["rabbit@data2"]},
    "alarms": [{"node": "rabbit@data1", "type": "resource_alarm", "resource": "disk"}],
}


def test_cluster_status_is_parsed_after_a_notice() -> None:
    lines = ["Cluster status of node rabbit@data1 ...", json.dumps(STATUS)]
    parsed = parse_cluster_status(lines)
    assert parsed == {
        "members": ["rabbit@data1", "rabbit@data2", "rabbit@data3"],
        "running_nodes": ["rabbit@data1", "rabbit@data3"],
        "partitions": {"rabbit@data3": ["rabbit@data2"]},
        "alarms": ["rabbit@data1: resource_alarm"],
        "cluster_name": "rabbit@data1",
    }


def test_a_node_that_does_not_answer_has_no_status() -> None:
    assert parse_cluster_status([]) is None
    assert parse_cluster_status(["Error: unable to perform an operation on node 'rabbit@data2'"]) is None


def test_policy_definition_as_string_or_object() -> None:
    row = {"vhost": "onlyoffice", "name": "ha-onlyoffice", "pattern": "^(?!amq\\.).*", "apply-to": "queues",
           "definition": json.dumps(MIRROR_DEFINITION), "priority": 0}
    parsed = parse_policies([json.dumps([row])])
    assert parsed["ha-onlyoffice"]["definition"] == MIRROR_DEFINITION
    row["definition"] = MIRROR_DEFINITION
    assert parse_policies([json.dumps([row])]) == parsed


def test_password_check_reads_stdin_and_never_the_command_line() -> None:
    command = RabbitmqPasswordMatches().command(user="onlyoffice", password_file="/etc/rabbitmq/onlyoffice-ha/amqp-password")
    assert "< /etc/rabbitmq/onlyoffice-ha/amqp-password" in command
    assert RabbitmqPasswordMatches().process(["yes"]) is True
    assert RabbitmqPasswordMatches().process(["no"]) is False


def _data(**overrides):
    secrets = {"rabbitmq_password": "pw", "rabbitmq_erlang_cookie": "A" * 32}
    values = {**RABBITMQ_DEFAULTS, "secrets": secrets, **overrides}
    return SimpleNamespace(get=values.get, **values)


def test_valid_inputs_have_no_problems() -> None:
    peers = {"data1": "198.18.1.31", "data2": "198.18.2.31"}
    assert input_problems(SimpleNamespace(name="data1", data=_data()), peers) == []


def test_each_bad_input_names_host_field_and_fix() -> None:
    peers = {"Data_1": "198.18.1.31", "data2": "db2.example"}
    data = _data(secrets={"rabbitmq_erlang_cookie": "short"}, rabbitmq_vhost="a b", rabbitmq_partition_handling="sometimes")
    problems = input_problems(SimpleNamespace(name="data1", data=data), peers)
    text = "\n".join(problems)
    assert "Data_1: inventory name" in text
    assert "data2: private_address: 'db2.example'" in text
    assert "secrets.rabbitmq_password: missing" in text
    assert "secrets.rabbitmq_erlang_cookie" in text and "short" not in text
    assert "rabbitmq_vhost" in text and "rabbitmq_partition_handling" in text
    assert all("fix:" in p for p in problems)


def _render(name: str, **variables) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string((TEMPLATES / name).read_text()).render(**variables)


def test_inetrc_maps_every_peer_for_the_erlang_resolver() -> None:
    text = _render("rabbitmq/rabbitmq-erl-inetrc.j2", peers={"data1": "198.18.1.31", "data3": "198.18.3.31"})
    assert '{host, {198,18,1,31}, ["data1"]}.' in text
    assert '{host, {198,18,3,31}, ["data3"]}.' in text
    assert "{lookup, [file, native]}." in text


def test_config_pauses_the_minority() -> None:
    text = _render("rabbitmq/rabbitmq.conf.j2", amqp_port=5672, management_port=15672, partition_handling="pause_minority",
                   plugins=[])
    assert "cluster_partition_handling = pause_minority" in text


def test_management_settings_only_with_the_plugin() -> None:
    """RabbitMQ refuses to start on config keys of a plugin it has not loaded."""
    common = {"amqp_port": 5672, "management_port": 15672, "partition_handling": "pause_minority"}
    assert "management." not in _render("rabbitmq/rabbitmq.conf.j2", plugins=[], **common)
    with_ui = _render("rabbitmq/rabbitmq.conf.j2", plugins=["rabbitmq_management"], **common)
    assert "management.tcp.ip = 127.0.0.1" in with_ui and "management.tcp.port = 15672" in with_ui


def test_no_plugin_is_enabled_by_default() -> None:
    """The 3.10 management agent crashes when pause_minority restarts the app after a heal."""
    from ooha.layers.rabbitmq import RABBITMQ_DEFAULTS

    assert RABBITMQ_DEFAULTS["rabbitmq_plugins"] == []
    assert _render("rabbitmq/rabbitmq-enabled-plugins.j2", plugins=[]).strip() == "[]."


def test_node_names_follow_inventory_names() -> None:
    assert node_name("data2") == "rabbit@data2"

"""The layer order and the ``layers`` subset selector (ooha/stack.py)."""

import pytest

from ooha.preflight import HostSpec, check_layers
from ooha.stack import LAYER_NAMES, parse_layers, selected_layers


def test_data_tier_converges_before_the_endpoints_that_point_at_it() -> None:
    order = list(LAYER_NAMES)
    assert order[0] == "base"
    assert order.index("etcd") < order.index("postgres") < order.index("endpoints")
    assert order.index("redis") < order.index("endpoints")
    assert order.index("rabbitmq") < order.index("endpoints")


@pytest.mark.parametrize("value", [None, "", "all"])
def test_no_selection_means_every_layer(value: object) -> None:
    assert [layer.name for layer in selected_layers(value)] == list(LAYER_NAMES)


def test_a_subset_keeps_deploy_order_and_always_includes_base() -> None:
    names = [layer.name for layer in selected_layers("endpoints, redis")]
    assert names == ["base", "redis", "endpoints"]
    assert parse_layers(["redis"]) == ["redis"]


def test_unknown_layer_is_refused_naming_host_field_and_fix() -> None:
    problems = check_layers([HostSpec("ds1", frozenset({"docs"}), {"layers": "redis,reddis"})])
    assert len(problems) == 1
    line = problems[0].line()
    assert "ds1" in line and "layers" in line and "reddis" in line and "endpoints" in line


def test_known_layers_pass() -> None:
    assert check_layers([HostSpec("ds1", frozenset({"docs"}), {"layers": "postgres"})]) == []


class _Host:
    def __init__(self, *groups: str) -> None:
        self.groups = set(groups)


def test_endpoints_run_on_document_server_hosts_and_load_balancers() -> None:
    endpoints = next(layer for layer in selected_layers(None) if layer.name == "endpoints")
    assert endpoints.applies(_Host("docs")) and endpoints.applies(_Host("lb"))
    assert not endpoints.applies(_Host("postgres", "redis"))
    base = selected_layers(None)[0]
    assert base.applies(_Host("postgres"))


def test_the_table_states_checks_front_door_inputs_and_groups_once() -> None:
    from ooha.preflight import REQUIRED_GROUPS
    from ooha.stack import GROUPS, LAYERS, layer_named
    from inventories.labstate import ROLES

    for layer in LAYERS:
        assert callable(layer.check_function()), layer.name
        assert callable(layer.deploy()), layer.name
    assert [layer.name for layer in LAYERS if layer.front_door] == ["loadbalancer"]
    assert callable(layer_named("loadbalancer").front_door_function())
    assert set(GROUPS) == {"lb", "docs", "postgres", "etcd", "redis", "rabbitmq"}
    assert REQUIRED_GROUPS == GROUPS and ROLES == GROUPS
    assert layer_named("base").input_rules() is None
    assert callable(layer_named("docker").input_rules())
    with pytest.raises(KeyError):
        layer_named("nope")


def test_no_layer_module_registers_anything_at_import() -> None:
    from pathlib import Path

    layers_dir = Path(__file__).resolve().parents[2] / "ooha" / "layers"
    assert list(layers_dir.glob("*.py"))
    for path in layers_dir.glob("*.py"):
        text = path.read_text()
        assert "register_check(" not in text and "register_front_door(" not in text, path

"""One test (at least) per inventory rule, over plain data: no hosts, no network."""

from __future__ import annotations

import pytest

from ooha.preflight import (
    REQUIRED_GROUPS,
    REQUIRED_SECRETS,
    HostSpec,
    InventoryError,
    check_azs,
    check_groups,
    check_host_key_checking,
    check_inventory_groups,
    check_quorum_survives_az_loss,
    check_secrets,
    check_tiers_span_azs,
    check_types,
    check_unique_addresses,
    collect_problems,
    hosts_from_groups,
    raise_for_problems,
)

SECRETS = {key: f"value-of-{key}" for key in REQUIRED_SECRETS}


def _host(name: str, az: str | None, address: str, *groups: str, **extra) -> HostSpec:
    data = {"ssh_hostname": address, "private_address": address, "ssh_strict_host_key_checking": "yes", **extra}
    if az is not None:
        data["az"] = az
    return HostSpec(name, frozenset(groups), data)


def reference_hosts() -> list[HostSpec]:
    """The reference topology: 2 LB, 3 DS, 3 data hosts over 3 AZs."""
    data_roles = ("postgres", "etcd", "redis", "rabbitmq")
    return [
        _host("lb1", "az1", "198.18.1.11", "lb"),
        _host("lb2", "az2", "198.18.2.11", "lb"),
        _host("ds1", "az1", "198.18.1.21", "docs"),
        _host("ds2", "az2", "198.18.2.21", "docs"),
        _host("ds3", "az3", "198.18.3.21", "docs"),
        _host("data1", "az1", "198.18.1.31", *data_roles),
        _host("data2", "az2", "198.18.2.31", *data_roles),
        _host("data3", "az3", "198.18.3.31", *data_roles),
    ]


def test_reference_topology_has_no_problems() -> None:
    assert collect_problems(reference_hosts(), SECRETS) == []


def test_missing_az_names_host_field_and_fix() -> None:
    hosts = reference_hosts()
    hosts[2] = _host("ds1", None, "198.18.1.21", "docs")
    problems = check_azs(hosts)
    assert [(p.host, p.field) for p in problems] == [("ds1", "az")]
    assert "az=" in problems[0].fix


def test_non_string_az_is_refused() -> None:
    problems = check_azs([_host("ds1", 1, "198.18.1.21", "docs")])  # type: ignore[arg-type]
    assert problems and "string" in problems[0].problem


def test_every_required_group_must_have_hosts() -> None:
    hosts = [HostSpec(h.name, h.groups - {"rabbitmq"}, h.data) for h in reference_hosts()]
    problems = check_groups(hosts)
    assert [p.field for p in problems] == ["group rabbitmq"]
    assert "rabbitmq = [" in problems[0].fix


def test_all_groups_missing_are_all_reported() -> None:
    assert len(check_groups([])) == len(REQUIRED_GROUPS)


def test_tier_in_one_az_is_refused() -> None:
    hosts = reference_hosts()
    hosts[1] = _host("lb2", "az1", "198.18.1.12", "lb")
    problems = check_tiers_span_azs(hosts)
    assert [p.field for p in problems] == ["group lb"]
    assert "lb1, lb2" in problems[0].problem and "at least 2" in problems[0].fix


def test_tier_span_ignores_hosts_without_az() -> None:
    hosts = [_host("lb1", "az1", "198.18.1.11", "lb"), _host("lb2", None, "198.18.2.11", "lb")]
    assert [p.field for p in check_tiers_span_azs(hosts, tiers=["lb"])] == ["group lb"]


def _with_data4(az: str, *groups: str) -> list[HostSpec]:
    return [*reference_hosts(), _host("data4", az, "198.18.1.32", *groups)]


@pytest.mark.parametrize("group", ["etcd", "redis", "rabbitmq"])
def test_quorum_group_with_half_its_members_in_one_az_is_refused(group: str) -> None:
    problems = check_quorum_survives_az_loss(_with_data4("az1", group))
    assert [(p.host, p.field) for p in problems] == [("all", f"group {group}")]
    line = problems[0].line()
    assert f"group {group}: az1 holds 2 of 4 members (data1, data4); losing az1 loses quorum" in line
    assert "fix: spread members so no AZ holds half or more (3 AZs with 1 each is the reference)" in line


def test_postgres_members_are_exempt_from_the_quorum_rule() -> None:
    # A fourth PostgreSQL member in az1: Patroni's consensus is etcd's, not PostgreSQL's.
    hosts = _with_data4("az1", "postgres")
    assert check_quorum_survives_az_loss(hosts) == []
    assert collect_problems(hosts, SECRETS) == []


def test_a_fourth_voter_in_a_fourth_az_keeps_quorum_on_any_az_loss() -> None:
    # 1+1+1+1 over four AZs: losing one leaves 3 of 4, a strict majority.
    assert check_quorum_survives_az_loss(_with_data4("az4", "etcd", "redis", "rabbitmq")) == []


def test_two_azs_with_one_voter_each_are_refused_for_both() -> None:
    hosts = [_host("data1", "az1", "198.18.1.31", "etcd"), _host("data2", "az2", "198.18.2.31", "etcd")]
    problems = check_quorum_survives_az_loss(hosts)
    assert [p.problem.split(" holds")[0] for p in problems] == ["az1", "az2"]
    assert all("1 of 2 members" in p.problem for p in problems)


def test_five_voters_two_two_one_survive_any_az_loss() -> None:
    hosts = [
        _host(f"e{i}", az, f"198.18.{i}.40", "etcd")
        for i, az in enumerate(["az1", "az1", "az2", "az2", "az3"], start=1)
    ]
    assert check_quorum_survives_az_loss(hosts) == []


def test_quorum_rule_leaves_single_az_tiers_and_hosts_without_az_to_other_rules() -> None:
    one_az = [_host("data1", "az1", "198.18.1.31", "etcd"), _host("data2", "az1", "198.18.1.32", "etcd")]
    assert check_quorum_survives_az_loss(one_az) == []
    assert [p.field for p in check_tiers_span_azs(one_az, tiers=["etcd"])] == ["group etcd"]
    no_az = [*reference_hosts()[5:], _host("data4", None, "198.18.1.32", "etcd")]
    assert check_quorum_survives_az_loss(no_az) == []


def test_inventory_with_an_unbalanced_quorum_group_is_refused_before_any_host() -> None:
    hosts = _with_data4("az1", "postgres", "etcd", "redis", "rabbitmq")
    namespace = {
        "all": ([(h.name, dict(h.data)) for h in hosts], {"secrets": SECRETS}),
        **{group: [h.name for h in hosts if group in h.groups] for group in REQUIRED_GROUPS},
    }
    with pytest.raises(InventoryError) as caught:
        check_inventory_groups(namespace)
    message = str(caught.value)
    for group in ("etcd", "redis", "rabbitmq"):
        assert f"group {group}: az1 holds 2 of 4 members" in message
    assert "group postgres" not in message


def test_duplicate_ssh_hostname_is_refused() -> None:
    hosts = reference_hosts()
    hosts[4] = _host("ds3", "az3", "198.18.2.21", "docs")  # same as ds2
    problems = check_unique_addresses(hosts)
    # One problem per clashing address, even when the host uses it for both fields.
    assert [(p.host, p.field) for p in problems] == [("ds3", "ssh_hostname")]
    assert all("ds2" in p.problem for p in problems)


def test_private_address_clash_with_other_hosts_ssh_address() -> None:
    hosts = [
        _host("a", "az1", "198.18.1.1", "lb"),
        HostSpec("b", frozenset({"lb"}), {"az": "az2", "ssh_hostname": "198.18.2.1", "private_address": "198.18.1.1"}),
    ]
    problems = check_unique_addresses(hosts)
    assert [(p.host, p.field) for p in problems] == [("b", "private_address")]


def test_same_address_for_ssh_and_peers_on_one_host_is_fine() -> None:
    assert check_unique_addresses([_host("a", "az1", "198.18.1.1", "lb")]) == []


def test_missing_and_empty_secrets_are_listed_without_values() -> None:
    secrets = dict(SECRETS)
    del secrets["jwt_secret"]
    secrets["redis_password"] = "  "
    problems = check_secrets(secrets)
    assert [p.field for p in problems] == ["secrets.jwt_secret", "secrets.redis_password"]
    text = " ".join(p.line() for p in problems)
    assert "value-of" not in text


def test_secrets_not_loaded() -> None:
    assert [p.field for p in check_secrets(None)] == ["secrets"]


def test_non_string_secret_is_refused() -> None:
    secrets = {**SECRETS, "rabbitmq_erlang_cookie": 12345}
    problems = check_secrets(secrets)
    assert [p.field for p in problems] == ["secrets.rabbitmq_erlang_cookie"]
    assert "12345" not in problems[0].line()


@pytest.mark.parametrize("value", ["no", "No", "off", False])
def test_host_key_checking_off_is_refused(value) -> None:
    problems = check_host_key_checking([_host("lb1", "az1", "198.18.1.11", "lb", ssh_strict_host_key_checking=value)])
    assert [(p.host, p.field) for p in problems] == [("lb1", "ssh_strict_host_key_checking")]


@pytest.mark.parametrize("value", ["yes", "accept-new", None])
def test_host_key_checking_on_is_accepted(value) -> None:
    assert check_host_key_checking([_host("lb1", "az1", "198.18.1.11", "lb", ssh_strict_host_key_checking=value)]) == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"apt_proxy": "198.18.20.10:3142"}, "apt_proxy"),
        ({"ntp_servers": "198.18.20.10"}, "ntp_servers"),
        ({"chrony_may_set_clock": "no"}, "chrony_may_set_clock"),
        ({"sysctl_baseline": {"vm.swappiness": 10}}, "sysctl_baseline.vm.swappiness"),
        ({"sysctl_host_baseline": {"net.core.somaxconn": 1}}, "sysctl_host_baseline.net.core.somaxconn"),
        ({"sysctl_baseline": {"net.core.somaxconn": [1]}}, "sysctl_baseline.net.core.somaxconn"),
        ({"sysctl_baseline": ["net.core.somaxconn"]}, "sysctl_baseline"),
        ({"private_address": "data1.example.internal"}, "private_address"),
        ({"ssh_hostname": "not a host"}, "ssh_hostname"),
    ],
)
def test_bad_types_name_the_field(extra, field) -> None:
    spec = _host("ds1", "az1", "198.18.1.21", "docs")
    spec = HostSpec(spec.name, spec.groups, {**spec.data, **extra})
    problems = check_types([spec])
    assert field in [p.field for p in problems]
    assert all(p.host == "ds1" for p in problems)


def test_good_types_pass() -> None:
    spec = _host(
        "ds1", "az1", "198.18.1.21", "docs",
        apt_proxy="http://198.18.20.10:3142", ntp_servers=["198.18.20.10"], chrony_may_set_clock=False,
        sysctl_baseline={"net.core.somaxconn": 4096}, sysctl_host_baseline={"vm.swappiness": 10},
    )
    assert check_types([spec]) == []


def test_raise_lists_every_problem_one_per_line() -> None:
    hosts = reference_hosts()
    hosts[0] = _host("lb1", None, "198.18.1.11", "lb")
    problems = collect_problems(hosts, {})
    with pytest.raises(InventoryError) as caught:
        raise_for_problems(problems, "test inventory")
    message = str(caught.value)
    assert "nothing was changed" in message
    lines = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(lines) == len(problems) == 1 + 1 + len(REQUIRED_SECRETS)  # az, lb span, secrets
    assert "  - lb1: az: missing; fix:" in message


def test_no_problems_no_raise() -> None:
    raise_for_problems([])


def test_hosts_from_groups_merges_data_like_pyinfra() -> None:
    groups = {
        "all": ([("lb1", {"az": "az1", "x": "host"}), "ds1"], {"x": "all", "y": "all"}),
        "lb": (["lb1"], {"y": "group"}),
        "docs": ["ds1"],
    }
    specs = {s.name: s for s in hosts_from_groups(groups)}
    assert specs["lb1"].data == {"az": "az1", "x": "host", "y": "group"}
    assert specs["lb1"].groups == {"lb"}
    assert specs["ds1"].data == {"x": "all", "y": "all"}


def test_check_inventory_groups_reads_a_module_namespace() -> None:
    namespace = {
        "__file__": "x.py",
        "_private": ["ignored"],
        "all": ([(h.name, dict(h.data)) for h in reference_hosts()], {"secrets": SECRETS}),
        **{group: [h.name for h in reference_hosts() if group in h.groups] for group in REQUIRED_GROUPS},
    }
    check_inventory_groups(namespace)
    namespace["docs"] = ["ds1"]  # a tier in one AZ
    with pytest.raises(InventoryError, match="group docs"):
        check_inventory_groups(namespace)

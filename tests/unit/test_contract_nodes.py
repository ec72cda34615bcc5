"""Per-node names (ooha/contract.py) and the data tier's per-node objects rendered from them."""

from __future__ import annotations

from types import SimpleNamespace

import jinja2
import pytest

from ooha.contract import docker_gateway, docs_hosts, node_database, node_redis_prefix, node_slug, node_vhost
from ooha.templating import JINJA, TEMPLATES


@pytest.mark.parametrize(("name", "slug"), [("ds1", "ds1"), ("DS-2.az2", "ds_2_az2"), ("node_7", "node_7")])
def test_names_are_lowercase_and_safe(name: str, slug: str) -> None:
    assert node_slug(name) == slug
    assert node_database(name) == f"onlyoffice_{slug}"
    assert node_vhost(name) == f"onlyoffice_{slug}"
    assert node_redis_prefix(name) == f"ds:{slug}:"


def test_every_node_gets_distinct_names() -> None:
    names = ["ds1", "ds2", "ds3"]
    assert len({node_database(n) for n in names}) == 3
    assert len({node_vhost(n) for n in names}) == 3
    assert len({node_redis_prefix(n) for n in names}) == 3


def test_docs_hosts_come_from_the_whole_group() -> None:
    inventory = SimpleNamespace(get_group=lambda group: [SimpleNamespace(name=n) for n in ("ds1", "ds2")] if group == "docs" else [])
    assert docs_hosts(inventory) == ["ds1", "ds2"]


def test_docker_gateway() -> None:
    assert docker_gateway("198.19.0.1/24") == "198.19.0.1"
    assert docker_gateway(None) is None
    with pytest.raises(ValueError):
        docker_gateway("not an address")


def _render_patroni(clients: list[dict]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined, **JINJA)
    return env.get_template("postgres/patroni.yml.j2").render(
        scope="onlyoffice", member_name="data1", address="198.18.1.31", rest_port=8008, rest_password="r" * 20,
        etcd_hosts=["198.18.1.31:2379"], pki="/etc/patroni/pki", dcs={"ttl": 12}, pg_port=5432,
        data_dir="/var/lib/postgresql/15/onlyoffice", bin_dir="/usr/lib/postgresql/15/bin", superuser_password="s" * 20,
        replication_password="p" * 20, members=[{"name": "data1", "address": "198.18.1.31"}],
        clients=clients, ds_role="onlyoffice",
    )


def test_pg_hba_lets_each_ds_host_reach_only_the_shared_and_its_own_database() -> None:
    clients = [{"name": n, "address": a, "databases": ["onlyoffice", node_database(n)]}
               for n, a in (("ds1", "198.18.1.21"), ("ds2", "198.18.2.21"))]
    text = _render_patroni(clients)
    assert "- host onlyoffice onlyoffice 198.18.1.21/32 scram-sha-256" in text
    assert "- host onlyoffice_ds1 onlyoffice 198.18.1.21/32 scram-sha-256" in text
    assert "- host onlyoffice_ds2 onlyoffice 198.18.2.21/32 scram-sha-256" in text
    assert "- host onlyoffice_ds2 onlyoffice 198.18.1.21/32" not in text
    assert "- host onlyoffice_ds1 onlyoffice 198.18.2.21/32" not in text


def test_a_blank_member_clones_with_a_fast_checkpoint() -> None:
    """Patroni passes ``basebackup`` options to pg_basebackup; without ``checkpoint: fast`` a blank
    member's clone waits for a spread checkpoint (minutes: 6 min for a few-MB database in the lab)."""
    import yaml

    config = yaml.safe_load(_render_patroni([]))
    assert {"checkpoint": "fast"} in config["postgresql"]["basebackup"]

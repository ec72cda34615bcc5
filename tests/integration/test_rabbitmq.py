"""The RabbitMQ layer on the lab: a 3-node cluster, DS's vhost and user, the endpoint on ds1, idempotence.

AMQP goes from this machine straight to the nodes (the lab's hosts are reachable from
here) and, for the endpoint, through HAProxy on ds1.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pika
import pytest

from lab.client import changed_operations, explain, host_entry, lab_lock, output_of, report_lines, secrets, ssh
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

NODES = ("data1", "data2", "data3")


def amqp(lab: dict[str, Any], node: str, user: str = "onlyoffice", password: str | None = None,
         vhost: str = "onlyoffice") -> pika.BlockingConnection:
    """An AMQP connection from this machine to one node, as DS's user by default."""
    password = secrets(lab)["rabbitmq_password"] if password is None else password
    params = pika.ConnectionParameters(
        host=host_entry(lab, node)["address"], port=5672, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password), connection_attempts=1,
        socket_timeout=5, blocked_connection_timeout=10, heartbeat=10,
    )
    return pika.BlockingConnection(params)


def cluster_status(lab: dict[str, Any], node: str) -> dict[str, Any] | None:
    """``rabbitmqctl cluster_status`` on one node over SSH, or None if it does not answer."""
    rc, out = ssh(lab, node, "sudo timeout 20 rabbitmqctl cluster_status --formatter json 2>/dev/null")
    if rc != 0 or "{" not in out:
        return None
    return json.loads(out[out.index("{"):])


def test_three_nodes_one_cluster_no_partitions(converged: dict[str, Any]) -> None:
    for node in NODES:
        status = cluster_status(converged, node)
        assert status is not None, f"{node} does not answer"
        assert sorted(status["running_nodes"]) == [f"rabbit@{n}" for n in NODES], status
        assert not any(status["partitions"].values()), status


def test_ds_user_publishes_on_one_node_and_consumes_on_another(converged: dict[str, Any]) -> None:
    queue = f"ds.test.{uuid.uuid4().hex[:8]}"
    producer = amqp(converged, "data1")
    consumer = amqp(converged, "data3")
    try:
        channel = producer.channel()
        channel.queue_declare(queue, durable=False, auto_delete=False)
        channel.confirm_delivery()
        for number in range(20):
            channel.basic_publish("", queue, str(number).encode())
        received = []
        reader = consumer.channel()
        deadline = time.monotonic() + 15
        while len(received) < 20 and time.monotonic() < deadline:
            method, _, body = reader.basic_get(queue, auto_ack=True)
            if method is None:
                consumer.process_data_events(time_limit=0.2)
            else:
                received.append(int(body))
        assert received == list(range(20))
        rc, out = ssh(converged, "data2", "sudo rabbitmqctl list_queues -p onlyoffice name policy --formatter json")
        assert rc == 0
        row = next(r for r in json.loads(out[out.index("["):]) if r["name"] == queue)
        assert row["policy"] == "ha-onlyoffice", row
        channel.queue_delete(queue)
    finally:
        producer.close()
        consumer.close()


def test_guest_is_gone_and_ds_user_is_confined_to_its_vhost(converged: dict[str, Any]) -> None:
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(converged, "data1", user="guest", password="guest", vhost="/")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(converged, "data2", vhost="/")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(converged, "data2", password="not-the-password")


def test_cookie_and_password_files_are_private(converged: dict[str, Any]) -> None:
    for node in NODES:
        rc, out = ssh(converged, node, "sudo stat -c '%a %U' /var/lib/rabbitmq/.erlang.cookie /etc/rabbitmq/onlyoffice-ha/amqp-password")
        assert rc == 0 and out.split() == ["400", "rabbitmq", "600", "root"], out


def test_endpoint_on_ds1_reaches_rabbitmq(converged: dict[str, Any]) -> None:
    # An AMQP 0-9-1 header to :5672 on ds1 must be answered by a broker's Connection.Start.
    probe = (
        "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', 5672), 5); "
        "s.sendall(b'AMQP\\x00\\x00\\x09\\x01'); d=s.recv(4096); print(d[:1].hex(), b'PLAIN' in d)\""
    )
    rc, out = ssh(converged, "ds1", probe)
    assert rc == 0 and out.split() == ["01", "True"], out


def test_rerun_of_rabbitmq_and_endpoints_changes_nothing(converged: dict[str, Any], pyinfra_cli) -> None:
    with lab_lock(exclusive=False):
        first = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=rabbitmq,endpoints")
        assert first.returncode == 0, output_of(first)[-4000:]
        second = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=rabbitmq,endpoints")
    output = output_of(second)
    assert second.returncode == 0, explain(second)
    assert changed_operations(output) == {}, output[-4000:]
    lines = report_lines(output)
    for node in NODES:
        assert lines[(node, "rabbitmq")] == "OK 3/3 nodes running, no partitions, no alarms", lines
    for ds in ("ds1", "ds2", "ds3"):
        assert lines[(ds, "endpoints")].startswith("OK pg primary -> data"), lines

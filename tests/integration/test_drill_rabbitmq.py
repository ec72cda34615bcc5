"""Drills: lose a RabbitMQ node's host, then cut an AZ, while clients publish and consume.

The clients connect from this machine straight to the surviving nodes; the queue is
declared through the node that is then lost, so its leader dies with the host and the
mirror (policy ha-onlyoffice) has to take over.  Every drill restores the lab in ``finally``.
"""

from __future__ import annotations

import socket
import threading
import uuid
from typing import Any

import pytest

from lab.client import WaitTimeout, host_entry, lab_cli, lab_lock, output_of, report_lines, wait_for
from tests.integration.deploytools import deploy
from tests.integration.test_rabbitmq import amqp, cluster_status, NODES

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]


class Publisher(threading.Thread):
    """Publishes numbered messages with confirms; remembers which were confirmed."""

    def __init__(self, lab: dict[str, Any], node: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.lab, self.node, self.queue = lab, node, queue
        self.confirmed: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        connection = amqp(self.lab, self.node)
        channel = connection.channel()
        channel.confirm_delivery()
        number = 0
        try:
            while not self.stop.is_set():
                try:
                    channel.basic_publish("", self.queue, str(number).encode(), mandatory=True)
                    self.confirmed.append(number)
                except Exception as exc:  # counted, not fatal: the drill asserts on counts
                    self.errors.append(repr(exc))
                number += 1
                connection.process_data_events(time_limit=0.05)
        finally:
            connection.close()


class Consumer(threading.Thread):
    """Consumes and acks; remembers every number received."""

    def __init__(self, lab: dict[str, Any], node: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.lab, self.node, self.queue = lab, node, queue
        self.received: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        connection = amqp(self.lab, self.node)
        channel = connection.channel()

        def on_message(ch, method, _properties, body) -> None:
            self.received.add(int(body))
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(self.queue, on_message)
        try:
            while not self.stop.is_set():
                connection.process_data_events(time_limit=0.2)
        finally:
            connection.close()


def _declare_on(lab: dict[str, Any], node: str) -> str:
    """A DS-like non-durable classic queue whose leader lives on ``node``."""
    queue = f"ds.drill.{uuid.uuid4().hex[:8]}"
    connection = amqp(lab, node)
    try:
        connection.channel().queue_declare(queue, durable=False)
    finally:
        connection.close()
    return queue


def _all_running(lab: dict[str, Any]) -> bool:
    status = cluster_status(lab, "data1")
    return bool(status) and len(status["running_nodes"]) == 3 and not any(status["partitions"].values())


def _report_ok(lab: dict[str, Any], pyinfra_cli) -> None:
    result = deploy(pyinfra_cli, "deploys/validate.py", "--data", "layers=rabbitmq", "--limit", "rabbitmq")
    lines = report_lines(output_of(result))
    for node in NODES:
        assert lines.get((node, "rabbitmq")) == "OK 3/3 nodes running, no partitions, no alarms", output_of(result)[-3000:]


def _run_clients(lab: dict[str, Any], queue: str, action, settle: float = 5.0) -> tuple[Publisher, Consumer, int, int]:
    """Clients on data1 (publisher) and data3 (consumer) around ``action()``; bounded."""
    publisher, consumer = Publisher(lab, "data1", queue), Consumer(lab, "data3", queue)
    publisher.start()
    consumer.start()
    try:
        wait_for("consumption before the failure",
                 lambda: len(consumer.received) >= 20,
                 30, interval=0.2, tolerate=(Exception,))
        action()
        before_pub, before_con = len(publisher.confirmed), len(consumer.received)
        wait_for("publishing after the failure",
                 lambda: len(publisher.confirmed) >= before_pub + 50,
                 60, interval=0.2, tolerate=(Exception,))
        wait_for("consuming after the failure",
                 lambda: len(consumer.received) >= before_con + 50,
                 60, interval=0.2, tolerate=(Exception,))
    finally:
        publisher.stop.set()
        publisher.join(15)
    confirmed = set(publisher.confirmed)
    wait_for("every confirmed message consumed",
             lambda: confirmed <= consumer.received,
             60, interval=0.2, tolerate=(Exception,))
    consumer.stop.set()
    consumer.join(15)
    return publisher, consumer, before_pub, before_con


def test_losing_a_node_keeps_publishing_and_consuming(converged: dict[str, Any], pyinfra_cli) -> None:
    with lab_lock():
        assert wait_for("3/3 nodes before the drill",
                        lambda: _all_running(converged),
                        120, interval=2.0, tolerate=(Exception,))
        queue = _declare_on(converged, "data2")
        try:
            publisher, consumer, _, _ = _run_clients(converged, queue, lambda: lab_cli("stop", "data2", timeout=300))
            assert set(publisher.confirmed) <= consumer.received
            assert len(publisher.confirmed) > 100
        finally:
            started = lab_cli("start", "data2", timeout=600)
        assert started.returncode == 0, started.stderr
        wait_for("data2 rejoined (3/3 running)",
                 lambda: _all_running(converged),
                 240, interval=2.0, tolerate=(Exception,))
        _report_ok(converged, pyinfra_cli)


def _amqp_port_closed(address: str) -> bool:
    try:
        socket.create_connection((address, 5672), 2).close()
    except OSError:
        return True
    return False


def test_az_cut_pauses_the_minority_and_the_majority_keeps_working(converged: dict[str, Any], pyinfra_cli) -> None:
    cut_address = host_entry(converged, "data3")["address"]
    with lab_lock():
        assert wait_for("3/3 nodes before the drill",
                        lambda: _all_running(converged),
                        240, interval=2.0, tolerate=(Exception,))
        queue = _declare_on(converged, "data1")
        try:
            assert lab_cli("cut", "az3", timeout=120).returncode == 0
            # net_ticktime (60 s) decides when the nodes see the cut; pause_minority then stops data3.
            wait_for("data3 paused (its AMQP listener closed)",
                     lambda: _amqp_port_closed(cut_address),
                     180, interval=2.0, tolerate=(Exception,))
            # Each side notices the cut on its own net tick: data3 can pause seconds before data1
            # stops counting it as running, so the majority's view is polled, not read once.
            majority = ["rabbit@data1", "rabbit@data2"]
            seen: list[Any] = []

            def majority_view() -> bool:
                seen[:] = [cluster_status(converged, "data1")]
                return bool(seen[0]) and sorted(seen[0]["running_nodes"]) == majority

            try:
                wait_for("data1 counts only data1 and data2 as running", majority_view,
                         120, interval=2.0, tolerate=(Exception,))
            except WaitTimeout as exc:
                pytest.fail(f"{exc}; data1's last cluster_status: {seen}")
            # The majority side still accepts and delivers messages.
            connection = amqp(converged, "data1")
            try:
                channel = connection.channel()
                channel.confirm_delivery()
                for number in range(50):
                    channel.basic_publish("", queue, str(number).encode(), mandatory=True)
            finally:
                connection.close()
            reader = amqp(converged, "data2")
            try:
                got = [reader.channel().basic_get(queue, auto_ack=True)[2] for _ in range(50)]
            finally:
                reader.close()
            assert [int(body) for body in got] == list(range(50))
        finally:
            healed = lab_cli("heal", timeout=120)
        assert healed.returncode == 0, healed.stderr
        wait_for("data3 back, no partition",
                 lambda: _all_running(converged),
                 240, interval=2.0, tolerate=(Exception,))
        _report_ok(converged, pyinfra_cli)

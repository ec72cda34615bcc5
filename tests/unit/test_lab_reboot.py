"""A lab host's reboot without Docker (lab/hosts.py restart policy, lab/reboot.py): the policy a
new and an old container get, the wait for the engine to start a rebooted host again, refusals."""
from __future__ import annotations

from typing import Any

import pytest

from lab import cli, core, hosts, reboot, topology
from lab.errors import LabError

TOPO = topology.load()


class _Api:
    """Records what create_container asks the engine for."""

    def __init__(self) -> None:
        self.host_config: dict[str, Any] = {}

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        self.host_config = kwargs
        return kwargs

    def create_networking_config(self, config: Any) -> Any:
        return config

    def create_endpoint_config(self, **kwargs: Any) -> Any:
        return kwargs

    def create_container(self, *args: Any, **kwargs: Any) -> dict[str, str]:
        return {"Id": "abc"}

    def connect_container_to_network(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Volumes:
    def get(self, name: str) -> object:
        return object()


class _Cli:
    def __init__(self) -> None:
        self.api, self.volumes = _Api(), _Volumes()


def test_a_new_host_comes_back_from_a_reboot_but_not_from_a_stop() -> None:
    fake = _Cli()
    hosts.create_container(fake, TOPO, TOPO.host("ds3"))  # type: ignore[arg-type]
    # unless-stopped: restarted after exit 129 (reboot), never after `docker stop` (lab stop).
    assert fake.api.host_config["restart_policy"] == {"Name": "unless-stopped"}


class _Container:
    """A container whose State follows a script of (running, StartedAt, ExitCode) per reload."""

    def __init__(self, states: list[tuple[bool, str, int]], policy: str = "unless-stopped",
                 status: str = "running") -> None:
        self.states, self.status, self.updates = list(states), status, []
        self.attrs: dict[str, Any] = {"HostConfig": {"RestartPolicy": {"Name": policy}}, "State": {}}
        self.reload()

    def reload(self) -> None:
        running, started, code = self.states[0] if len(self.states) == 1 else self.states.pop(0)
        self.attrs["State"] = {"Running": running, "StartedAt": started, "ExitCode": code}

    def update(self, **kwargs: Any) -> None:
        self.updates.append(kwargs)
        self.attrs["HostConfig"]["RestartPolicy"] = kwargs["restart_policy"]


def test_an_old_host_gets_the_policy_once() -> None:
    old = _Container([(True, "t0", 0)], policy="no")
    assert hosts.ensure_restart_policy(old) is True
    assert old.updates == [{"restart_policy": {"Name": "unless-stopped"}}]
    assert hosts.ensure_restart_policy(old) is False and len(old.updates) == 1


def test_up_gives_an_existing_host_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    old = _Container([(True, "t0", 0)], policy="no")
    monkeypatch.setattr(hosts, "get_container", lambda cli, host: old)
    said: list[str] = []
    core.ensure_host(object(), TOPO, TOPO.host("ds3"), said.append)  # type: ignore[arg-type]
    assert old.updates and "unless-stopped" in said[0]


def test_the_wait_returns_once_the_engine_started_the_host_again(monkeypatch: pytest.MonkeyPatch) -> None:
    box = _Container([(True, "t0", 0), (False, "t0", 129), (False, "t0", 129), (True, "t1", 0)])
    monkeypatch.setattr(hosts, "get_container", lambda cli, host: box)
    monkeypatch.setattr(reboot.time, "sleep", lambda _s: None)
    reboot.wait_restarted(object(), TOPO, "ds3", "t0", deadline_s=5)  # type: ignore[arg-type]
    assert box.attrs["State"]["StartedAt"] == "t1"


def test_a_host_left_exited_is_refused_with_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    box = _Container([(False, "t0", 129)], policy="no")
    monkeypatch.setattr(hosts, "get_container", lambda cli, host: box)
    monkeypatch.setattr(reboot, "EXITED_GRACE_S", 0.0)
    monkeypatch.setattr(reboot.time, "sleep", lambda _s: None)
    with pytest.raises(LabError, match=r"exited with 129 and was not started again \(restart policy no\)"):
        reboot.wait_restarted(object(), TOPO, "ds3", "t0", deadline_s=5)  # type: ignore[arg-type]


def test_a_stopped_host_is_not_rebooted_but_pointed_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = _Container([(False, "t0", 130)], status="exited")
    monkeypatch.setattr(hosts, "get_container", lambda cli, host: stopped)
    with pytest.raises(LabError, match=r"ds3 is exited, not running; `python -m lab start ds3`"):
        reboot.reboot(object(), TOPO, "ds3")  # type: ignore[arg-type]


def test_reboot_refuses_an_unknown_host_before_the_engine(capsys: pytest.CaptureFixture[str], no_docker: None) -> None:
    assert cli.run(["reboot", "ds9", "--wait"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lab reboot: ") and "ds9" in err and err.count("\n") == 1

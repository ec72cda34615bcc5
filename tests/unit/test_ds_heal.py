"""Document Server self-healing: the rendered script, its pure decision, the units, the report words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest

from ooha.layers import documentserver as ds
from ooha.facts.documentserver import parse_heal_state
from ooha.templating import JINJA, TEMPLATES
from tests.unit.test_documentserver import target  # noqa: F401  (fixture _inventory is autouse there only)


@pytest.fixture(autouse=True)
def _inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = SimpleNamespace(get_group=lambda group: [target("ds1"), target("ds2")])
    monkeypatch.setattr(ds, "inventory", fake)


def heal_module(**data: Any) -> types.ModuleType:
    """The rendered script loaded as a module (its main() is not run)."""
    module = types.ModuleType("ooha_ds_heal_rendered")
    exec(compile(ds.render_heal_script(target(**data)), "ooha-ds-heal", "exec"), module.__dict__)
    return module


CFG = {"heal_after": 60, "start_grace": 0, "max_restarts": 3, "window": 1800}
SICK = {"status": "running", "started_at": "t0", "health": "false", "deps_ok": True, "deps_detail": "dependencies UP"}
WELL = dict(SICK, health="true")


def test_rendered_script_compiles_and_holds_the_settings(tmp_path) -> None:
    text = ds.render_heal_script(target(ds_heal_after_seconds=45, ds_heal_max_restarts=2))
    path = tmp_path / "ooha-ds-heal"
    path.write_text(text)
    subprocess.run([sys.executable, "-m", "py_compile", str(path)], check=True)
    config = heal_module(ds_heal_after_seconds=45, ds_heal_max_restarts=2).CONFIG
    assert config["heal_after"] == 45 and config["max_restarts"] == 2 and config["window"] == 1800
    assert config["health_url"] == "http://198.18.1.21:80/healthcheck" and config["stats_port"] == 8404
    assert config["dependencies"] == ["pg-primary", "redis-primary", "rabbitmq"]
    assert config["container"] == "onlyoffice-documentserver"
    # No secret of the host's data ends up in the script.
    for secret in target().data["secrets"].values():
        assert secret not in text


def test_docker_format_braces_survive_rendering() -> None:
    text = ds.render_heal_script(target())
    assert "{{.State.Status}} {{.State.StartedAt}}" in text


def run_clock(decide, observations, start=1000.0, step=10.0, cfg=CFG):
    """Feed observations every ``step`` s; the actions taken, in order, and the final state."""
    state, actions, now = None, [], start
    for obs in observations:
        action, state, _ = decide(state, obs, now, cfg)
        actions.append(action)
        now += step
    return actions, state


def test_healthy_node_is_never_touched() -> None:
    decide = heal_module().decide
    actions, state = run_clock(decide, [WELL] * 500)
    assert set(actions) == {"none"} and state["restarts"] == [] and state["total_restarts"] == 0


def test_restart_only_after_heal_after_seconds_of_sickness() -> None:
    decide = heal_module().decide
    actions, _ = run_clock(decide, [WELL] + [SICK] * 7)
    # sick from t=10 (first sick observation); 60 s later (7th sick observation) the restart.
    assert actions == ["none"] * 7 + ["restart"]


def test_no_answer_counts_as_sick_and_dependencies_down_pause_the_clock() -> None:
    decide = heal_module().decide
    down = dict(SICK, health="noanswer", deps_ok=False, deps_detail="no server UP in pg-primary")
    actions, state = run_clock(decide, [dict(SICK, health="noanswer")] * 5 + [down] * 50 + [dict(SICK, health="noanswer")] * 6)
    assert "restart" not in actions and state["unhealthy_since"] is not None
    action, _, message = decide(state, dict(SICK, health="noanswer"), 1000 + 61 * 10 + 60, CFG)
    assert action == "restart" and "dependencies UP" in message


def test_stopped_or_absent_container_is_never_started() -> None:
    decide = heal_module().decide
    for status in ("exited", "created", "paused", None):
        actions, _ = run_clock(decide, [dict(SICK, status=status)] * 100)
        assert set(actions) == {"none"}, status


def test_gives_up_after_max_restarts_within_the_window_and_then_stays_quiet() -> None:
    decide = heal_module().decide
    observations = []
    for n in range(5):  # each restart gives a new start time
        observations += [dict(SICK, started_at=f"t{n}")] * 7
    observations += [dict(SICK, started_at="t9")] * 100
    actions, state = run_clock(decide, observations)
    assert actions.count("restart") == 3 and actions.count("give_up") == 1
    assert actions.index("give_up") > max(i for i, a in enumerate(actions) if a == "restart")
    assert state["gave_up_at"] and state["gave_up_restarts"] == 3
    # After giving up: nothing more, even for a running sick container (no loop for ever).
    assert set(actions[actions.index("give_up") + 1:]) == {"none"}


def test_restarts_older_than_the_window_do_not_count() -> None:
    decide = heal_module().decide
    cfg = dict(CFG, window=300)
    state, now, actions = None, 0.0, []
    for cycle in range(10):  # one sick spell every 20 min: never 3 within 5 min
        for n in range(7):
            action, state, _ = decide(state, dict(SICK, started_at=f"s{cycle}"), now, cfg)
            actions.append(action)
            now += 10
        for _ in range(110):
            action, state, _ = decide(state, dict(WELL, started_at=f"s{cycle}x"), now, cfg)
            now += 10
    assert actions.count("restart") == 10 and "give_up" not in actions


def test_flapping_within_the_window_gives_up() -> None:
    decide = heal_module().decide
    state, now, actions = None, 0.0, []
    for cycle in range(10):  # sick 70 s, healthy 2 min: flapping
        for n in range(8):
            action, state, _ = decide(state, dict(SICK, started_at=f"f{cycle}"), now, CFG)
            actions.append(action)
            now += 10
        for _ in range(12):
            action, state, _ = decide(state, dict(WELL, started_at=f"f{cycle}"), now, CFG)
            actions.append(action)
            now += 10
    assert actions.count("restart") == 3 and actions.count("give_up") == 1


def test_start_grace_after_each_start() -> None:
    decide = heal_module().decide
    cfg = dict(CFG, start_grace=120)
    actions, _ = run_clock(decide, [SICK] * 18, cfg=cfg)  # 170 s: grace 120 + 60 not yet passed
    assert "restart" not in actions
    actions, _ = run_clock(decide, [SICK] * 19, cfg=cfg)
    assert actions[-1] == "restart"


def test_docker_restart_loop_is_healed_and_bounded() -> None:
    """A container docker keeps restarting (new StartedAt each time) still reaches the give-up."""
    decide = heal_module().decide
    observations = [dict(SICK, status="restarting", health="noanswer", started_at=f"r{i}") for i in range(200)]
    actions, state = run_clock(decide, observations)
    assert actions.count("restart") == 3 and actions.count("give_up") == 1 and state["gave_up_at"]


def test_deps_ok_reads_haproxy_states() -> None:
    module = heal_module()
    up = {"pg-primary": {"data1": "DOWN", "data2": "UP"}, "redis-primary": {"data3": "UP 1/2"}, "rabbitmq": {"data1": "UP"}}
    assert module.deps_ok(up) == (True, "dependencies UP")
    ok, detail = module.deps_ok({**up, "pg-primary": {"data1": "DOWN", "data2": "DOWN"}})
    assert not ok and "pg-primary" in detail
    assert module.deps_ok({})[0] is False


@pytest.mark.parametrize("name", ["ooha-ds-heal.service.j2", "ooha-ds-heal.timer.j2", "ooha-ds-heal-reset.service.j2"])
def test_units_render(name: str) -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined, **JINJA)
    text = env.get_template(f"documentserver/{name}").render(script="/usr/local/sbin/ooha-ds-heal", timeout=160, interval=10)
    assert "[Unit]" in text
    if name.endswith("timer.j2"):
        assert "OnUnitActiveSec=10s" in text and "AccuracySec=1s" in text
    elif "reset" in name:
        assert "ExecStart=/usr/local/sbin/ooha-ds-heal reset" in text
    else:
        assert "ExecStart=/usr/local/sbin/ooha-ds-heal check" in text and "Type=oneshot" in text


def test_heal_state_fact_and_report_words() -> None:
    assert parse_heal_state(["not-installed"]) is None
    state = {"gave_up_at": 1764928800, "gave_up_restarts": 3, "restarts": [1, 2, 3], "total_restarts": 3}
    heal = parse_heal_state(["timer enabled active", json.dumps(state)])
    assert heal["timer_enabled"] and heal["timer_active"] and heal["state"]["gave_up_restarts"] == 3
    assert ds.heal_gave_up(heal) == "self-healing gave up after 3 restarts at 2025-12-05 10:00:00Z"
    assert ds.heal_gave_up(parse_heal_state(["timer enabled active", "{}"])) is None
    assert "ooha-ds-heal-reset" in ds.heal_fix("ds2") and "ds_heal_reset=true" in ds.heal_fix("ds2")
    assert ds.heal_text(target(), parse_heal_state(["timer enabled active"])).startswith("self-healing on: 0 restart(s)")
    assert ds.heal_text(target(), parse_heal_state(["timer disabled inactive"])).startswith("FAIL ")
    assert ds.heal_text(target(ds_heal_enabled=False), None) == "self-healing off"


@pytest.mark.parametrize("key,value", [("ds_heal_after_seconds", 0), ("ds_heal_max_restarts", -1),
                                       ("ds_heal_window_seconds", 10), ("ds_heal_interval_seconds", "10"),
                                       ("ds_heal_enabled", "yes"), ("ds_heal_reset", 1)])
def test_bad_heal_inputs_name_host_field_and_fix(key: str, value: Any) -> None:
    problems = [p for p in ds.input_problems(target(**{key: value})) if key in p]
    assert problems and problems[0].startswith(f"ds1: {key}: ") and "fix: " in problems[0]


def test_good_heal_inputs_pass() -> None:
    assert not [p for p in ds.input_problems(target()) if "ds_heal" in p]


def test_host_side_restart_give_up_and_reset_with_a_stub_docker(tmp_path, monkeypatch) -> None:
    """The rendered script's check/reset against a stub ``docker`` and a local HTTP server (healthcheck + HAProxy CSV)."""
    import http.server
    import threading

    csv = ("# pxname,svname,status\npg-primary,data1,UP\npg-primary,BACKEND,UP\nredis-primary,data2,UP\n"
           "rabbitmq,data3,UP\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = csv if self.path.startswith("/stats") else "false"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    log = tmp_path / "docker.log"
    status = tmp_path / "status"
    status.write_text("running")
    stub = tmp_path / "bin" / "docker"
    stub.parent.mkdir()
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\ncase \"$1\" in\n"
                    f"inspect) s=$(cat {status}); echo \"$s 2026-12-05T09:00:0$(wc -l < {log})Z\";;\n"
                    f"stop) echo exited > {status};;\nstart) echo running > {status};;\nexec) exit 1;;\nesac\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}:{os.environ['PATH']}")
    module = heal_module()
    module.CONFIG.update(health_url=f"http://127.0.0.1:{port}/healthcheck", stats_port=port, heal_after=0, start_grace=0,
                         max_restarts=1, drain_seconds=0, state_file=str(tmp_path / "state" / "state"),
                         lock_file=str(tmp_path / "lock"))
    try:
        assert module.main(["ooha-ds-heal", "check"]) == 0
        assert "restart -t 30 onlyoffice-documentserver" in log.read_text()
        assert module.main(["ooha-ds-heal", "check"]) == 0
        assert "stop -t 30 onlyoffice-documentserver" in log.read_text() and status.read_text().strip() == "exited"
        state = json.loads((tmp_path / "state" / "state").read_text())
        assert state["gave_up_at"] and state["gave_up_restarts"] == 1 and state["total_restarts"] == 1
        calls = log.read_text().count("\n")
        assert module.main(["ooha-ds-heal", "check"]) == 0  # gave up: only looks
        assert not [line for line in log.read_text().splitlines()[calls:] if not line.startswith("inspect")]
        assert module.main(["ooha-ds-heal", "reset"]) == 0
        assert "start onlyoffice-documentserver" in log.read_text() and status.read_text().strip() == "running"
        state = json.loads((tmp_path / "state" / "state").read_text())
        assert not state["gave_up_at"] and state["restarts"] == []
    finally:
        server.shutdown()

"""A value filled in from ${VAR} reaches the module intact and shows as *** everywhere else."""

from __future__ import annotations

from helpers import wait_until
from project import Project

SECRET = "tok-3f9a-very-secret"
LEAKY = """
def initialize(event_bus, config):
    print("my token is", config["token"], flush=True)
    if config.get("fail"):
        raise RuntimeError("rejected token " + config["token"])


def shutdown():
    pass
"""


def test_a_secret_from_dotenv_is_hidden_everywhere_but_the_module(project: Project) -> None:
    (project.config_dir / ".env").write_text(f"API_TOKEN={SECRET}\nOTHER=from-dotenv\n")
    project.env.pop("API_TOKEN", None)
    project.env["OTHER"] = "from-environment"  # (that the environment wins: tests/unit)
    leaky = project.write_module("leaky.py", LEAKY)
    project.configure(
        [
            {
                "name": "recorder",
                "path": project.probe("recorder"),
                "config": {"record": str(project.record_file), "patterns": ["module.*", "app.*"]},
            },
            {
                "name": "leaky",
                "path": leaky,
                "depends_on": ["recorder"],  # so that its module.loaded is recorded
                "config": {"token": "${API_TOKEN}"},
            },
            {
                "name": "failing",
                "path": leaky,
                "depends_on": ["recorder"],
                "restart": "never",
                "config": {"token": "${API_TOKEN}", "fail": True, "other": "${OTHER}"},
            },
        ]
    )
    project.cli("up", "-d")
    project.wait_module("failing", state="stopped")
    wait_until(
        lambda: any(
            e["type"] == "module.loaded" and e["data"]["name"] == "leaky"
            for e in project.recorded()
        ),
        5,
        "the recorder has leaky's module.loaded",
    )
    wait_until(lambda: "my token is" in project.log("leaky"), 5, "the module printed its token")

    # The module itself got the real value (it printed it; the log shows it masked).
    assert "my token is ***" in project.log("leaky")
    row = project.module("failing")
    assert row["last_exit"]["error"] == "initialize() raised RuntimeError: rejected token ***"
    places = {
        "status": project.cli("status", check=0).stdout,
        "status --json": project.cli("status", "--json", check=0).stdout,
        "status NAME": project.cli("status", "failing", "--json", check=0).stdout,
        "app.log": (project.root / "logs" / "app.log").read_text(),
        "module log": project.log("leaky") + project.log("failing"),
        "events": project.record_file.read_text(),
    }
    for place, text in places.items():
        assert SECRET not in text, place
    assert '"token": "***"' in places["status NAME"]
    assert '"other": "***"' in places["status NAME"]
    loaded = {e["data"]["name"]: e for e in project.recorded() if e["type"] == "module.loaded"}
    assert loaded["leaky"]["data"]["config"]["token"] == "***"
    assert all(e["data"]["config"].get("token") in (None, "***") for e in loaded.values())
    assert "from-environment" not in places["status NAME"]
    # The deployment is named in the events and the log: app.name and app.version.
    wait_until(
        lambda: any(e["type"] == "app.started" for e in project.recorded()), 10, "app.started"
    )
    started = next(e["data"] for e in project.recorded() if e["type"] == "app.started")
    assert started["version"] and started["name"], started
    assert f"({started['name']} {started['version']}): bus" in places["app.log"]

"""The team stack on this machine, with real servers: PostgreSQL (Debian's package) as MLflow's backend
store, an MLflow tracking server that serves its artifacts, and a ZenML server (dashboard included), plus
the ZenML stack `imgclf-team` that uses them. What a team runs on shared hosts, started here so the
pipeline, the promotion commands and the service can be run and tested against servers, not files.

    python infra/team_stack.py up       # make team-up: start what is not running, register the stack
    python infra/team_stack.py down     # make team-down: stop the servers; the data stays
    python infra/team_stack.py status

State lives under $IMGCLF_STATE/team (default .state/team): the database cluster, MLflow's artifacts,
logs, the generated database password (0600) and `env.sh`, which `up` writes for the shell:
`source .state/team/env.sh` points MLFLOW_TRACKING_URI at the server. Ports come from
IMGCLF_TEAM_PG_PORT (5433), IMGCLF_TEAM_MLFLOW_PORT (5050) and IMGCLF_TEAM_ZENML_PORT (8237); every
server listens on 127.0.0.1 only. `up` twice is harmless: running servers are kept. The ZenML client of
this state folder is connected to the ZenML server while the stack is up (`zenml login --local`) and
back on the embedded store after `down` (`zenml logout --local`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from local_stack import ensure_stack  # infra/, beside this script

STACK = "imgclf-team"
MLFLOW_EXPERIMENT = "imgclf"  # as infra/local_stack.py
MLFLOW_SECRET = "imgclf_team_mlflow"  # the ZenML secret holding the MLflow password
DB_USER, DB_NAME, AUTH_DB_NAME = "imgclf", "mlflow", "mlflow_auth"
MLFLOW_USER = "imgclf"  # the MLflow server's admin (basic auth); its password is generated
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


@dataclass(frozen=True)
class Team:
    folder: Path
    pg_port: int
    mlflow_port: int
    zenml_port: int

    @classmethod
    def from_env(cls) -> Team:
        state = Path(os.environ.get("IMGCLF_STATE", ".state")).resolve()

        def port(name: str, default: int) -> int:
            raw = os.environ.get(name, str(default))
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise SystemExit(f"team stack: {name}={raw!r} is not a port number")
            return int(raw)

        return cls(
            state / "team",
            port("IMGCLF_TEAM_PG_PORT", 5433),
            port("IMGCLF_TEAM_MLFLOW_PORT", 5050),
            port("IMGCLF_TEAM_ZENML_PORT", 8237),
        )

    @property
    def pg_data(self) -> Path:
        return self.folder / "postgres"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def zenml_url(self) -> str:
        return f"http://127.0.0.1:{self.zenml_port}"

    def secret(self, name: str) -> str:
        """A generated password kept in the team folder (0600), made on first use."""
        path = self.folder / name
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def password(self) -> str:
        return self.secret("db-password")

    def mlflow_password(self) -> str:
        return self.secret("mlflow-password")

    def database_uri(self, database: str = DB_NAME) -> str:
        return f"postgresql+psycopg2://{DB_USER}:{self.password()}@127.0.0.1:{self.pg_port}/{database}"


# -- PostgreSQL --------------------------------------------------------------------------------------


def _pg(tool: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / tool).exists():
            return str(folder / tool)
    found = shutil.which(tool)
    if found is None:
        raise SystemExit(f"team stack: PostgreSQL's {tool} is missing: apt-get install postgresql")
    return found


def _as_db_owner(command: list[str], team: Team, **kwargs) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: as root, run its tools as Debian's `postgres` user."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def _checked(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise SystemExit(f"team stack: {what} failed: {(done.stderr or done.stdout).strip()}")


def start_postgres(team: Team) -> None:
    if not (team.pg_data / "PG_VERSION").exists():
        team.pg_data.mkdir(parents=True, exist_ok=True)
        pwfile = team.folder / "db-password"
        team.password()
        if os.geteuid() == 0:
            shutil.chown(team.pg_data, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
            for parent in team.pg_data.parents:  # the server must reach its data folder
                if parent.stat().st_mode & 0o001 == 0:
                    raise SystemExit(f"team stack: the postgres user cannot enter {parent} (chmod o+x it)")
        _checked(
            _as_db_owner(
                [_pg("initdb"), "-D", str(team.pg_data), "-U", DB_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256"],
                team,
            ),
            "initdb",
        )
    if _as_db_owner([_pg("pg_ctl"), "-D", str(team.pg_data), "status"], team).returncode == 0:
        return
    options = f"-p {team.pg_port} -c listen_addresses=127.0.0.1 -k ''"  # TCP on loopback, no Unix socket
    log = team.pg_data / "server.log"
    started = _as_db_owner([_pg("pg_ctl"), "-D", str(team.pg_data), "-o", options, "-l", str(log), "-w", "start"], team)
    _checked(started, f"starting PostgreSQL on port {team.pg_port} (log: {log})")
    env = {**os.environ, "PGPASSWORD": team.password()}
    for database in (DB_NAME, AUTH_DB_NAME):  # MLflow's runs and registry; its users
        exists = subprocess.run(
            [_pg("psql"), "-h", "127.0.0.1", "-p", str(team.pg_port), "-U", DB_USER, "-d", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        _checked(exists, "connecting to PostgreSQL")
        if exists.stdout.strip() != "1":
            created = subprocess.run(
                [_pg("createdb"), "-h", "127.0.0.1", "-p", str(team.pg_port), "-U", DB_USER, database],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            _checked(created, f"creating the database {database}")


def stop_postgres(team: Team) -> None:
    if (team.pg_data / "PG_VERSION").exists():
        _as_db_owner([_pg("pg_ctl"), "-D", str(team.pg_data), "-m", "fast", "-w", "stop"], team)


# -- MLflow ------------------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_for(url: str, what: str, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _answers(url):
            return
        time.sleep(0.5)
    raise SystemExit(f"team stack: {what} did not answer {url} within {seconds:.0f} s (log: {log})")


def start_mlflow(team: Team) -> None:
    pid_file = team.folder / "mlflow.pid"
    if _answers(f"{team.mlflow_url}/health"):
        return
    log = team.folder / "mlflow.log"
    artifacts = team.folder / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    auth = team.folder / "mlflow-auth.ini"  # MLflow's basic auth: users in their own database
    auth.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {team.database_uri(AUTH_DB_NAME)}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    auth.chmod(0o600)
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth),
        "MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_USER,
        "MLFLOW_AUTH_ADMIN_PASSWORD": team.mlflow_password(),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": team.secret("mlflow-flask-key"),  # CSRF tokens of its web pages
    }
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    command = [mlflow, "server", "--app-name", "basic-auth", "--backend-store-uri", team.database_uri(),
               "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", "127.0.0.1",
               "--port", str(team.mlflow_port), "--workers", "1"]  # fmt: skip
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    pid_file.write_text(str(process.pid))
    _wait_for(f"{team.mlflow_url}/health", "the MLflow server", log)


def stop_mlflow(team: Team) -> None:
    pid_file = team.folder / "mlflow.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, 15)  # the server and its workers: it was started in its own session
        for _ in range(100):
            os.killpg(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)


# -- ZenML -------------------------------------------------------------------------------------------


def _zenml(*args: str) -> subprocess.CompletedProcess:
    zenml = str(Path(sys.executable).with_name("zenml"))
    return subprocess.run([zenml, *args], capture_output=True, text=True, check=False, timeout=300)


def start_zenml(team: Team) -> None:
    if _answers(f"{team.zenml_url}/health"):
        return
    _checked(_zenml("login", "--local", "--port", str(team.zenml_port)), "starting the ZenML server")
    _wait_for(f"{team.zenml_url}/health", "the ZenML server", team.folder)


def stop_zenml() -> None:
    _zenml("logout", "--local")


def register_stack(team: Team) -> None:
    """`imgclf-team` on the ZenML server: the MLflow server as tracker and registry, artifacts in the team folder."""
    import mlflow
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    tracker = mlflow.MlflowClient(tracking_uri=team.mlflow_url)
    if tracker.get_experiment_by_name(MLFLOW_EXPERIMENT) is None:
        tracker.create_experiment(MLFLOW_EXPERIMENT)  # artifacts at mlflow-artifacts:/, which the server stores
    client = Client()
    try:
        client.update_secret(MLFLOW_SECRET, add_or_update_values={"password": team.mlflow_password()})
    except KeyError:
        client.create_secret(MLFLOW_SECRET, values={"password": team.mlflow_password()})
    components = {
        T.ORCHESTRATOR: ("imgclf-team-orchestrator", "local", {}),
        T.ARTIFACT_STORE: ("imgclf-team-artifacts", "local", {"path": str(team.folder / "zenml-artifacts")}),
        T.EXPERIMENT_TRACKER: (
            "imgclf-team-mlflow",
            "mlflow",
            {
                "tracking_uri": team.mlflow_url,
                "tracking_username": MLFLOW_USER,
                "tracking_password": f"{{{{{MLFLOW_SECRET}.password}}}}",  # resolved from the ZenML secret
                "experiment_name": MLFLOW_EXPERIMENT,
            },
        ),
        T.MODEL_REGISTRY: ("imgclf-team-registry", "mlflow", {}),
        T.MODEL_DEPLOYER: ("imgclf-team-bentoml", "bentoml", {}),
        T.DATA_VALIDATOR: ("imgclf-team-evidently", "evidently", {}),
    }
    ensure_stack(STACK, components)  # the team's settings always win over a kept component


def write_env(team: Team) -> Path:
    path = team.folder / "env.sh"
    path.touch(mode=0o600)
    path.write_text(
        "# written by infra/team_stack.py up: the shell's MLflow points at the team's server\n"
        f"export MLFLOW_TRACKING_URI={team.mlflow_url}\nexport MLFLOW_TRACKING_USERNAME={MLFLOW_USER}\n"
        f"export MLFLOW_TRACKING_PASSWORD={team.mlflow_password()}\nexport ZENML_STACK={STACK}\n"
    )
    return path


def up(team: Team) -> None:
    team.folder.mkdir(parents=True, exist_ok=True)
    start_postgres(team)
    start_mlflow(team)
    start_zenml(team)
    os.environ.update(
        MLFLOW_TRACKING_URI=team.mlflow_url,
        MLFLOW_TRACKING_USERNAME=MLFLOW_USER,
        MLFLOW_TRACKING_PASSWORD=team.mlflow_password(),
    )
    register_stack(team)
    env = write_env(team)
    print(f"PostgreSQL 127.0.0.1:{team.pg_port} (MLflow's backend store)")
    print(f"MLflow     {team.mlflow_url} (tracking, registry, artifacts)")
    print(f"ZenML      {team.zenml_url} (dashboard; the client of this state folder is connected)")
    print(f"stack {STACK} is active; for this shell: source {env}")


def down(team: Team) -> None:
    stop_zenml()
    stop_mlflow(team)
    stop_postgres(team)
    print(f"team stack stopped; its data stays in {team.folder}")


def status(team: Team) -> int:
    pg = _as_db_owner([_pg("pg_ctl"), "-D", str(team.pg_data), "status"], team).returncode == 0
    running = {
        "postgres": pg,
        "mlflow": _answers(f"{team.mlflow_url}/health"),
        "zenml": _answers(f"{team.zenml_url}/health"),
    }
    for name, alive in running.items():
        print(f"{name}: {'up' if alive else 'down'}")
    return 0 if all(running.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    team = Team.from_env()
    if args.action == "up":
        up(team)
    elif args.action == "down":
        down(team)
    else:
        return status(team)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docker-compose.yml: the services, their start order, health checks, the GPU reservation, and
SG_ variables that name real Settings fields (a typo would be silently ignored at runtime).

`docker-compose config` (Debian's docker-compose v1 validates offline) runs too where installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from streamguard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


#: What an operator exports before `docker compose up` (the file has no default secrets).
STRONG = {"POSTGRES_PASSWORD": "pg-Vq8rTz2LmW4x", "REDIS_PASSWORD": "rd-Kp3nYc7sHd9f",
          "MINIO_ROOT_PASSWORD": "mn-Zt6wQe1bRu5j"}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """`${VAR:-default}` / `${VAR:?message}` as compose resolves them with `variables` set."""
    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in variables:
            return variables[name]
        if op == ":?":
            raise KeyError(f"{name} must be set: {rest}")
        return rest
    return re.sub(r"\$\{([A-Z_]+)(:-|:\?)([^}]*)\}", one, value)


def settings_path_exists(name: str) -> bool:
    """Whether SG_A__B names Settings.a.b (env_prefix SG_, nested delimiter __)."""
    model: type[BaseModel] = Settings
    parts = name.removeprefix("SG_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def test_services_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "worker", "postgres", "redis", "minio", "minio-init", "migrate"} <= set(
        services)
    for name in ("postgres", "redis", "minio", "api", "worker"):
        assert services[name]["healthcheck"]["test"], name
    # the migrations ship inside the package: no alembic.ini or checkout in the image
    assert services["migrate"]["command"] == ["streamguard", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["minio-init"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert "mc mb" in " ".join(services["minio-init"]["command"])


def test_worker_reserves_a_gpu_and_runs_one_task_at_a_time(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert {"--pool=solo", "--concurrency=1"} <= set(worker["command"])
    assert "cuda" in worker["build"]["args"]["BASE_IMAGE"]
    assert (ROOT / worker["build"]["dockerfile"]).is_file()


def dockerfile_stages(path: Path) -> dict[str, str]:
    """Each `FROM ... AS name` stage of a Dockerfile: its instructions (comments left out)."""
    stages: dict[str, str] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            name = match.group(1)
            stages[name] = ""
        elif name is not None:
            stages[name] += line + "\n"
    return stages


def test_each_service_builds_its_roles_image(compose: dict[str, Any]) -> None:
    """The API and the migrate job run the torch-free `api` target; both workers the `worker`
    target with the CUDA torch; each installs its role's extras of the one wheel."""
    services = compose["services"]
    targets = {name: services[name]["build"]["target"]
               for name in ("migrate", "api", "worker", "inference-worker")}
    assert targets == {"migrate": "api", "api": "api", "worker": "worker",
                       "inference-worker": "worker"}
    stages = dockerfile_stages(ROOT / services["api"]["build"]["dockerfile"])
    assert {"wheel", "api", "worker"} <= set(stages)
    assert "[api,postgres,s3]" in stages["api"] and "torch" not in stages["api"].lower()
    assert "[worker,postgres,s3,trackers]" in stages["worker"]
    assert "TORCH_INDEX_URL" in stages["worker"]


def test_the_api_runs_through_the_launcher_with_several_workers(
        compose: dict[str, Any]) -> None:
    """`streamguard api` in compose and in the image (uvicorn's workers, Prometheus summed
    over them); compose's default worker count is 2, an operator's SG_API_WORKERS wins."""
    api = compose["services"]["api"]
    assert api["command"][:2] == ["streamguard", "api"]
    workers = str(api["environment"]["SG_API__WORKERS"])
    assert interpolate(workers, {}) == "2" and interpolate(workers, {"SG_API_WORKERS": "4"}) == "4"
    stages = dockerfile_stages(ROOT / api["build"]["dockerfile"])
    cmd = next(line for line in stages["api"].splitlines() if line.startswith("CMD"))
    assert cmd.startswith('CMD ["streamguard", "api"'), cmd


def test_env_names_match_settings_and_are_valid(compose: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("api", "worker", "migrate"):
        env = compose["services"][name]["environment"]
        sg = {k: str(v) for k, v in env.items() if k.startswith("SG_")}
        assert sg, name
        unknown = [k for k in sg if not settings_path_exists(k)]
        assert not unknown, f"{name}: not Settings fields: {unknown}"
        # and the values pass Settings' own checks (visibility timeout > runtime, ...)
        for key in [k for k in os.environ if k.startswith("SG_")]:
            monkeypatch.delenv(key)
        for key, value in sg.items():
            monkeypatch.setenv(key, interpolate(value, STRONG))
        settings = Settings()
        assert settings.env == "prod" and settings.broker.url and settings.redis.url
        assert settings.db.url == \
            f"postgresql://streamguard:{STRONG['POSTGRES_PASSWORD']}@postgres:5432/streamguard"


def test_compose_has_no_default_secret_and_prod_refuses_weak_ones(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset secrets stop compose itself; a weak one stops the service, naming the setting."""
    env = {k: str(v) for k, v in compose["services"]["api"]["environment"].items()
           if k.startswith("SG_")}
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(env["SG_DB__URL"], {})
    for key in [k for k in os.environ if k.startswith("SG_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, interpolate(value, STRONG | {"POSTGRES_PASSWORD": "password"}))
    with pytest.raises(ValueError, match="db.url") as refused:
        Settings()
    assert "password@" not in str(refused.value)


def test_docker_compose_config_validates() -> None:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):  # .ci/run installs it; CI must not pass without the check
            pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                            capture_output=True, text=True, check=False,
                            env=os.environ | STRONG)
    assert result.returncode == 0, result.stderr


def test_prometheus_scrapes_the_api_and_every_worker_on_its_metrics_port(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    mount = next(v for v in prometheus["volumes"]
                 if v.endswith(":/etc/prometheus/prometheus.yml:ro"))
    config = yaml.safe_load((ROOT / mount.split(":")[0]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["streamguard-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert "8000" in " ".join(services["api"]["command"])
    (worker_sd,) = jobs["streamguard-worker"]["dns_sd_configs"]
    worker_env = services["worker"]["environment"]
    assert worker_sd["names"] == ["worker"]
    assert str(worker_sd["port"]) == worker_env["SG_WORKER__METRICS_PORT"]
    assert worker_env["SG_WORKER__METRICS_HOST"] == "0.0.0.0"  # reachable from prometheus
    assert all(p.startswith("127.0.0.1:") for p in prometheus["ports"])  # no auth: loopback

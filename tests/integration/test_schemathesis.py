"""schemathesis (4.32) against the ASGI app: every check, stateful links, a fixed seed.

This is `schemathesis run --checks all` done in-process with schemathesis's own engine (the one
its CLI drives: examples, coverage, fuzzing and stateful phases) over the app built by
`create_app` on a real PostgreSQL database, a local artifact store and a recording enqueue (as
in api_fixtures). The caller is tenant `a` (a fresh key); tenant `b` is its peer for
`object_level_authorization`, which replays a's reads as b (b must never see a's objects).

- Stateful links (create dataset -> create job -> get job, metrics, event history, event
  stream, cancel) are added to the test's copy of the document; the API's own has none.
  Scenarios start from an accepted upload: the stateful phase's positive uploads carry JSONL
  rows (`map_case`), which schemathesis cannot generate for a binary field.
- streamJobEvents is tested like the rest: schemathesis reads an event stream until its first
  complete event (`max-stream-events`) or 2 s, then checks what arrived. It is also checked by
  hand below (SSE framing, Last-Event-ID refusals).
- The few refusals that are by design for input no schema can rule out are excused, narrowly
  and with reasons (`EXCUSES`); they are counted and printed, never silently dropped.
- Bounded (`max-examples`, `max-steps`), derandomized and seeded: the same cases every run;
  about 3,800-4,400 cases, 1 minute on two shared cores.

Per-check figures (operations, cases, passed / failed cases / distinct failures per check),
responses per operation and the links followed are printed (`-s`) and written to
`<pytest tmp>/schemathesis-run*/schemathesis-stats.json`. Any check failure fails the test with
every failing case's reproduction (a curl command) in the message.

Run: .venv/bin/pytest tests/integration/test_schemathesis.py -s
"""

from __future__ import annotations

import copy
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.deps import get_enqueue
from api.main import create_app
from streamguard.settings import Settings
from streamguard.storage import store_from_uri
from tests.integration import api_fixtures
from tests.integration.api_fixtures import parse_sse
from tests.integration.client_fixtures import finish_like_a_worker, jsonl, new_tenant, split_rows

api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions

pytestmark = pytest.mark.integration

SEED = 20240617
#: Fuzzing cases per operation, and stateful scenarios (Hypothesis may stop sooner); with the
#: coverage phase about 4,000 cases, a minute on two shared cores.
MAX_EXAMPLES = 200
STATEFUL_MAX_EXAMPLES = 300
STATEFUL_MAX_STEPS = 16
#: A job config small enough to be valid everywhere (the link bodies use it).
TINY = {"model": "tiny", "epochs": 1, "batch_size": 8, "max_seq_len": 64}


@dataclass
class Service:
    app: FastAPI
    settings: Settings
    keys: dict[str, str]
    tenant_ids: dict[str, str]
    enqueued: list[str]
    datasets: dict[str, str]  # label -> dataset id of tenant a
    jobs: dict[str, str]  # label -> job id of tenant a


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, api_db_url: str,
            api_sessions: Callable[[], Session]) -> Iterator[Service]:
    """The app with tenants a and b; a owns two datasets, a queued job and a completed one."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    settings = Settings(
        data_dir=tmp / "data", db={"url": api_db_url},
        storage={"uri": (tmp / "artifacts").as_uri()},
        api={"max_upload_mb": 2, "sse_ping_s": 1,
             # thousands of requests from one key in a few minutes: the rate limit and the
             # queued-jobs quota (tested in test_quotas_secrets.py) would answer most with 429
             "rate_limit_per_minute": 0, "max_queued_jobs_per_tenant": 100_000,
             "max_running_jobs_per_tenant": 100_000},
        # no inference worker runs here: a valid predict request answers 503 after 1 s, not 30
        inference={"request_timeout_s": 1})
    app = create_app(settings)
    enqueued: list[str] = []
    app.dependency_overrides[get_enqueue] = lambda: enqueued.append
    keys, tenant_ids = {}, {}
    for label in ("a", "b"):
        tenant_ids[label], keys[label] = new_tenant(api_sessions, label)
    datasets, jobs = {}, {}
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {keys['a']}"}
        for split, n in (("train", 40), ("val", 16)):
            r = client.post("/v1/datasets", headers=auth, data={"name": split},
                            files={"file": (f"{split}.jsonl", jsonl(split_rows(split, n)),
                                            "application/x-ndjson")})
            assert r.status_code == 201, r.text
            datasets[split] = r.json()["id"]
        body = {"name": "seed", "config": TINY,
                "datasets": {"train": {"dataset_id": datasets["train"]},
                             "val": {"dataset_id": datasets["val"]}}}
        for label in ("queued", "completed"):
            r = client.post("/v1/jobs", headers=auth, json=body | {"name": label})
            assert r.status_code == 201, r.text
            jobs[label] = r.json()["id"]
    store = store_from_uri(settings.storage.uri)
    finish_like_a_worker(api_sessions, store, tenant_id=tenant_ids["a"],
                         job_id=jobs["completed"])
    yield Service(app, settings, keys, tenant_ids, enqueued, datasets, jobs)


def add_links(doc: dict[str, Any], val_dataset_id: str) -> dict[str, Any]:
    """The stateful links: create dataset -> create job -> get job, metrics, event history,
    event stream, cancel. schemathesis 4 has no `add_link` (it was removed in 4.0): links are
    OpenAPI `links` on the responses of the test's copy of the document."""
    doc = copy.deepcopy(doc)
    paths = doc["paths"]

    def link(path: str, method: str, status: str, name: str, **definition: Any) -> None:
        response = paths[path][method]["responses"][status]
        response.setdefault("links", {})[name] = definition

    job_id = {"path.job_id": "$response.body#/id"}
    link("/v1/datasets", "post", "201", "GetDataset", operationId="getDataset",
         parameters={"path.dataset_id": "$response.body#/id"})
    # the whole body from the link (no merge with a generated one): a job that is accepted
    link("/v1/datasets", "post", "201", "CreateJob", operationId="createJob", requestBody={
        "name": "linked", "config": TINY,
        "datasets": {"train": {"dataset_id": "$response.body#/id"},
                     "val": {"dataset_id": val_dataset_id}}},
         **{"x-schemathesis": {"merge_body": False}})
    link("/v1/datasets", "get", "200", "GetFirstDataset", operationId="getDataset",
         parameters={"path.dataset_id": "$response.body#/items/0/id"})
    link("/v1/jobs", "get", "200", "GetFirstJob", operationId="getJob",
         parameters={"path.job_id": "$response.body#/items/0/id"})
    for status in ("201", "200"):  # created, or an idempotent replay
        for name, op in (("GetJob", "getJob"), ("ListMetrics", "listJobMetrics"),
                         ("ListSteps", "listJobSteps"), ("GetReport", "getJobReport"),
                         ("ListEvents", "listJobEvents"), ("StreamEvents", "streamJobEvents"),
                         ("CancelJob", "cancelJob")):
            link("/v1/jobs", "post", status, name, operationId=op, parameters=job_id)
    for name, op in (("GetJob", "getJob"), ("ListEvents", "listJobEvents"),
                     ("CancelAgain", "cancelJob")):
        link("/v1/jobs/{job_id}/cancel", "post", "200", name, operationId=op, parameters=job_id)
    return doc


@dataclass(frozen=True)
class Excuse:
    """A known false positive of a check: this operation answers this error by design for input
    the schema cannot rule out. Matched on the check, the operation, the status, the error code
    and (optionally) the field; anything else stays a failure."""

    check: str
    operation: str
    status: int
    code: str
    field_prefix: str | None
    reason: str
    message_contains: str | None = None

    def matches(self, check: str, operation: str, status: int, error: dict[str, Any]) -> bool:
        return (check == self.check and operation == self.operation and status == self.status
                and error.get("code") == self.code
                and (self.field_prefix is None
                     or str(error.get("field") or "").startswith(self.field_prefix))
                and (self.message_contains is None
                     or self.message_contains in str(error.get("message"))))


#: positive_data_acceptance sends schema-valid requests and expects 2xx/401/403/404/409/429;
#: these refusals are about what JSON Schema cannot express. Each is narrow (one operation, one
#: error code); a schema-valid request refused with `validation_error` (the server's own schema
#: disagreeing with the published one) or with any other code is still a failure.
EXCUSES = [
    Excuse("positive_data_acceptance", "POST /v1/jobs/{job_id}/predict", 413,
           "payload_too_large", "body",
           "64 functions of 256 KiB each are schema-valid one by one, but the whole body is also "
           "bounded by the deployment's api.max_json_bytes: a limit across items (and on the "
           "encoded bytes) JSON Schema cannot state"),
    Excuse("negative_data_rejection", "POST /v1/jobs/{job_id}/predict", 413,
           "payload_too_large", "body",
           "an over-long function in a body over api.max_json_bytes is refused for the body's "
           "size before it is parsed: a refusal, with a status schemathesis does not list"),
    Excuse("positive_data_acceptance", "POST /v1/datasets", 422, "invalid_dataset", "file",
           "the upload is `format: binary`; that its bytes must be JSONL lines of "
           "{func, target} is a rule on file content no schema states (schemathesis sends PNGs "
           "and random bytes as valid)"),
    Excuse("positive_data_acceptance", "POST /v1/jobs", 422, "invalid_request", "datasets.",
           "a dataset reference must name one of the caller's own uploaded datasets, and the "
           "splits must differ and hold both classes: existence, ownership and content are "
           "state, not schema"),
    Excuse("positive_data_acceptance", "POST /v1/jobs", 422, "invalid_request", "config.model",
           "`job:<id>` must name one of the caller's own finished jobs: state, not schema (the "
           "pattern states the form exactly)"),
    Excuse("positive_data_acceptance", "POST /v1/jobs", 422, "validation_error", "config",
           "collapse_stop_ratio <= collapse_warn_ratio and warmup_ratio <= max_warmup_ratio "
           "compare two fields; JSON Schema cannot state that",
           message_contains="must not exceed"),
    Excuse("positive_data_acceptance", "GET /v1/jobs", 422, "invalid_cursor", "cursor",
           "the cursor is opaque: only a `next_cursor` the server handed out is valid, and "
           "the schema can state only its alphabet and length"),
    Excuse("positive_data_acceptance", "GET /v1/datasets", 422, "invalid_cursor", "cursor",
           "as for GET /v1/jobs: an opaque cursor"),
]


def excuse_for(failure: Any, case: Any, response: Any) -> Excuse | None:
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(error, dict):
        return None
    for check in type(failure).checks:
        for excuse in EXCUSES:
            if excuse.matches(check, case.operation.label, response.status_code, error):
                return excuse
    return None


@dataclass
class CheckStats:
    passed: int = 0
    failed: int = 0  # cases that failed the check
    unique: int = 0  # distinct failures (what the report lists)
    errors: int = 0
    operations: set[str] = field(default_factory=set)


@dataclass
class RunStats:
    """What the run did: per check, per operation and status, per link, per phase."""

    operations: set[str] = field(default_factory=set)
    cases: int = 0
    cases_per_phase: Counter[str] = field(default_factory=Counter)
    scenarios_per_phase: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    links: Counter[str] = field(default_factory=Counter)
    checks: dict[str, CheckStats] = field(default_factory=lambda: defaultdict(CheckStats))
    excused: Counter[str] = field(default_factory=Counter)
    excused_example: dict[str, str] = field(default_factory=dict)  # one message per excuse
    errors: list[str] = field(default_factory=list)

    def on_scenario(self, phase: str, recorder: Any) -> None:
        self.cases += len(recorder.cases)
        self.cases_per_phase[phase] += len(recorder.cases)
        self.scenarios_per_phase[phase] += 1
        for case_id, node in recorder.cases.items():
            label = node.value.operation.label
            self.operations.add(label)
            if node.transition is not None and node.is_transition_applied:
                self.links[node.transition.id] += 1
            interaction = recorder.interactions.get(case_id)
            if interaction is not None and interaction.response is not None:
                self.statuses[label][interaction.response.status_code] += 1
            for check in recorder.checks.get(case_id, []):
                entry = self.checks[check.name]
                entry.operations.add(label)
                if check.failure_info is not None:
                    entry.failed += 1
                elif check.status.value == "error":
                    entry.errors += 1
                else:
                    entry.passed += 1

    def as_dict(self) -> dict[str, Any]:
        return {"operations": sorted(self.operations), "n_operations": len(self.operations),
                "cases": self.cases, "cases_per_phase": dict(self.cases_per_phase),
                "scenarios_per_phase": dict(self.scenarios_per_phase),
                "checks": {name: {"passed": c.passed, "failed_cases": c.failed,
                                  "unique_failures": c.unique, "errors": c.errors,
                                  "operations": len(c.operations)}
                           for name, c in sorted(self.checks.items())},
                "excused": {what: {"cases": n, "example": self.excused_example.get(what)}
                            for what, n in self.excused.items()},
                "statuses": {op: {str(k): v for k, v in sorted(c.items())}
                             for op, c in sorted(self.statuses.items())},
                "links": dict(sorted(self.links.items())), "errors": self.errors}

    def summary(self) -> str:
        figures = self.as_dict()
        lines = [f"schemathesis {schemathesis_version()}: {figures['n_operations']} operations, "
                 f"{self.cases} cases {dict(self.cases_per_phase)}, seed {SEED}",
                 f"  scenarios per phase: {dict(self.scenarios_per_phase)}",
                 f"  {'check':30s} {'passed':>7s} {'failed':>7s} {'unique':>7s} {'ops':>4s}"]
        lines += [f"  {name:30s} {c['passed']:7d} {c['failed_cases']:7d} "
                  f"{c['unique_failures']:7d} {c['operations']:4d}"
                  for name, c in figures["checks"].items()]
        lines += [f"  excused as a known false positive: {what}: {e['cases']} cases "
                  f"(e.g. {e['example']!r})" for what, e in figures["excused"].items()]
        lines += ["  responses:"] + [f"    {op:52s} {statuses}"
                                     for op, statuses in figures["statuses"].items()]
        lines += ["  links followed:"] + [f"    {name}: {n}"
                                          for name, n in figures["links"].items()]
        return "\n".join(lines)


def schemathesis_version() -> str:
    import schemathesis

    return str(schemathesis.__version__)


def make_config(service: Service, tmp: Path) -> Any:
    from schemathesis.config import SchemathesisConfig

    # Tenant a calls; b is its peer: object_level_authorization replays a's reads as b.
    wfc = tmp / "wfc-auth.json"
    wfc.write_text(json.dumps({"auth": [
        {"name": label, "fixedHeaders": [{"name": "Authorization",
                                          "value": f"Bearer {service.keys[label]}"}]}
        for label in ("a", "b")]}))
    return SchemathesisConfig.from_dict({
        "seed": SEED,
        "workers": 1,
        # every case runs, failing or not: the figures do not depend on where the first
        # failure is, and one run reports every defect
        "continue-on-failure": True,
        "request-timeout": 10,
        # the stream of a job that is still queued never ends: schemathesis keeps the first
        # complete event, cuts the stream there and checks what it got
        "max-stream-events": 1,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True,
                       "database": "none"},
        "phases": {"stateful": {"max-steps": STATEFUL_MAX_STEPS,
                                # the links below only (inferred ones would take the budget)
                                "inference": {"algorithms": []},
                                "generation": {"max-examples": STATEFUL_MAX_EXAMPLES}}},
        "checks": {"enabled": True},  # --checks all
        "auth": {"wfc": {"path": str(wfc), "user": "a", "peers": ["a", "b"]}},
        # a replay point past a queued job's last event sends nothing but pings: wait 2 s,
        # not the 10 s above, before checking what arrived
        "operations": [{"include-operation-id": "streamJobEvents", "request-timeout": 2,
                        # The stream is documented as `{"type": "string"}` (its frame format in
                        # the description) because an object schema makes generated clients
                        # parse the stream's text as JSON (the very break issue 6 reported);
                        # schemathesis reads that schema as the schema of EACH event and
                        # rejects every one. The frames and their typed `data` are checked by
                        # test_event_stream_is_documented_sse below instead.
                        "checks": {"response_schema_conformance": {"enabled": False}}}],
    })


def run_schemathesis(service: Service, tmp: Path) -> tuple[RunStats, list[str]]:
    """The engine of `schemathesis run` over the app; (figures, failure reports)."""
    import schemathesis
    from schemathesis.engine import events, from_schema
    from schemathesis.engine.statistic import Statistic

    doc = add_links(service.app.openapi(), service.datasets["val"])
    schema = schemathesis.openapi.from_dict(doc, config=make_config(service, tmp))
    schema.app = service.app  # the ASGI transport: requests go to the app in-process
    schema.location = "/openapi.json"
    stats = RunStats()
    uploads = iter(range(1_000_000))

    @schema.hook
    def map_case(context: Any, case: Any) -> Any:
        """Stateful scenarios start from an accepted upload: a positive uploadDataset case of
        the stateful phase carries JSONL rows (which schemathesis cannot generate for a
        binary field). The examples, coverage and fuzzing phases send what they generate."""
        meta = case.meta
        if (case.operation.label == "POST /v1/datasets" and meta is not None
                and meta.phase.name.value == "stateful"
                and meta.generation.mode.value == "positive" and isinstance(case.body, dict)):
            n = next(uploads)
            rows = split_rows("train", 12 + n % 7)
            case.body["file"] = jsonl(rows[::-1] if n % 2 else rows)
        return case

    @schema.hook
    def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
        excuse = excuse_for(failure, case, response)
        if excuse is None:
            return True
        what = f"{excuse.check} on {excuse.operation} ({excuse.code})"
        stats.excused[what] += 1
        stats.excused_example.setdefault(what, str(json.loads(response.content)["error"]
                                                   ["message"])[:160])
        return False

    statistic = Statistic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            statistic.on_scenario_finished(event.recorder)
            stats.on_scenario(event.phase.value, event.recorder)
        elif isinstance(event, events.NonFatalError):
            stats.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            stats.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            for failure in event.failures:  # run-level checks (after_run)
                for check in type(failure).checks or ("run-level",):
                    stats.checks[check].failed += 1
                stats.errors.append(f"run-level failure: {failure.title}: {failure.message}")
    reports = []
    for label, groups in statistic.failures.items():
        for index, group in enumerate(groups.values(), 1):
            for failure in group.failures:
                for check in type(failure).checks:
                    stats.checks[check].unique += 1
            reports.append(f"--- {label}\n" + group.format(
                index=index, curl=group.code_sample, config=schema.config.output))
    return stats, reports


def test_schemathesis_all_checks_stateful(service: Service,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    from schemathesis.python import asgi

    tmp = tmp_path_factory.mktemp("schemathesis-run")
    try:
        stats, reports = run_schemathesis(service, tmp)
    finally:
        asgi.shutdown_lifespans()  # closes the app's DB engine (the session drops the DB)
    summary = stats.summary()
    (tmp / "schemathesis-stats.json").write_text(json.dumps(stats.as_dict(), indent=2))
    (tmp / "schemathesis-summary.txt").write_text(summary + "\n")
    print(f"\n{summary}\n(written to {tmp})")  # noqa: T201

    assert not reports and not stats.errors, (
        f"{summary}\n\n{len(reports)} failing case(s):\n\n" + "\n\n".join(reports)
        + ("\n\nerrors:\n" + "\n".join(stats.errors) if stats.errors else ""))
    assert len(service.enqueued) == len(set(service.enqueued)), "a job was enqueued twice"
    # The run did what it claims: every operation called, every check run, the links followed.
    assert stats.operations == {f"{m.upper()} {p}" for p, ops in service.app.openapi()["paths"]
                                .items() for m in ops}, stats.operations
    expected_checks = {"not_a_server_error", "status_code_conformance",
                       "content_type_conformance", "response_schema_conformance",
                       "response_headers_conformance", "negative_data_rejection",
                       "positive_data_acceptance", "use_after_free",
                       "ensure_resource_availability", "ignored_auth", "missing_required_header",
                       "unsupported_method", "allow_header_conformance",
                       "object_level_authorization"}
    assert expected_checks <= {name for name, c in stats.checks.items() if c.passed}, stats.checks
    for operation, status in [("POST /v1/datasets", 201), ("POST /v1/jobs", 201),
                              ("GET /v1/jobs/{job_id}", 200),
                              ("POST /v1/jobs/{job_id}/cancel", 200),
                              # (a second cancel's 409 is reached only by some seeds of the
                              # stateful phase; tests/integration/test_api.py covers it)
                              ("GET /v1/jobs/{job_id}/metrics", 200),
                              ("GET /v1/jobs/{job_id}/events/history", 200),
                              ("GET /v1/jobs/{job_id}/events", 200)]:
        assert stats.statuses[operation][status] > 0, (operation, status, summary)
    # create dataset -> create job -> get job, metrics, event history, cancel
    assert any(name.startswith("POST /v1/datasets -> [201] CreateJob ->") for name in stats.links)
    reached = {name.rsplit(" -> ", 1)[1] for name in stats.links
               if name.startswith(("POST /v1/jobs -> ", "POST /v1/jobs/{job_id}/cancel -> "))}
    for target in ("GET /v1/jobs/{job_id}", "GET /v1/jobs/{job_id}/metrics",
                   "GET /v1/jobs/{job_id}/events/history", "POST /v1/jobs/{job_id}/cancel"):
        assert target in reached, f"no link from a created job reached {target}\n{summary}"


# --- the event stream, checked by hand as well ---------------------------------------------------

@pytest.mark.timeout(60)
def test_event_stream_is_sse_and_a_bad_last_event_id_is_a_json_422(service: Service) -> None:
    """streamJobEvents as the document describes it: `text/event-stream` frames whose `data`
    is the JSON payload of the event's kind; a malformed or out-of-range Last-Event-ID is a
    422 in the error shape, before any stream starts."""
    job_id = service.jobs["completed"]
    auth = {"Authorization": f"Bearer {service.keys['a']}"}
    url = f"/v1/jobs/{job_id}/events"
    doc = service.app.openapi()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert list(doc["responses"]["200"]["content"]) == ["text/event-stream"]
    with TestClient(service.app) as client:
        with client.stream("GET", url, headers=auth) as response:  # a finished job: it ends
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = parse_sse(response.read().decode())
        kinds = [e["event"] for e in events]
        assert kinds[0] == "status" and kinds[-1] == "status", kinds
        assert {"epoch", "warning", "checkpoint", "test"} <= set(kinds), kinds
        assert json.loads(events[-1]["data"])["status"] == "completed"
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids)
        with client.stream("GET", url, headers=auth | {"Last-Event-ID": str(ids[-2])}) as r:
            assert [e["id"] for e in parse_sse(r.read().decode())] == [str(ids[-1])]
        for bad in ("abc", "-1", "1e20", "9223372036854775808", "99999999999999999999", ""):
            response = client.get(url, headers=auth | {"Last-Event-ID": bad})
            assert response.status_code == 422, (bad, response.status_code, response.text)
            assert response.headers["content-type"] == "application/json", bad
            error = response.json()["error"]
            assert error["code"] == "validation_error" or error["code"] == "invalid_request"
            assert error["field"] == "Last-Event-ID", (bad, error)

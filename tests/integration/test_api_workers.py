"""Several API processes (`streamguard api --workers 2`) on PostgreSQL and Redis.

The real launcher as a subprocess on a fresh migrated PostgreSQL database, Redis for events,
rate limits and the broker (a queue of the test's own that no worker consumes). Which process
answered a connection is read from /proc, never from the API: a worker holds the server side of
every connection it accepted (a socket inode in its /proc/<pid>/fd whose local port is the API's
in /proc/net/tcp). Checked:

- two worker processes serve (each accepts and answers connections);
- /metrics, whichever process answers the scrape, reports every request counted by both, and
  the open SSE streams summed over them; no per-process collectors in that mode;
- an SSE stream held by one process receives the event that a request to the other produced;
- the launcher removes its metrics folder at exit.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from streamguard.cli_service import create_key
from streamguard.synth import synth_examples, write_jsonl
from tests.e2e.harness import (
    Api,
    Proc,
    api_cmd,
    base_env,
    free_port,
    iter_sse,
    spawned_workers,
    wait_ready,
)
from tests.integration.db_fixtures import fresh_pg_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/9"  # events, rate limits, broker; the queue is per test
WORKERS = 2
REQUESTS = 40
ESTABLISHED = "01"  # /proc/net/tcp's state of an established connection


@dataclass
class Server:
    api: Api
    proc: Proc
    port: int
    workers: list[int]

    def connection_owners(self) -> dict[int, int]:
        """socket inode -> worker pid, for each established connection to the API's port."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == self.port and fields[3] == ESTABLISHED:
                    inodes.add(int(fields[9]))
        owners = {}
        for pid in self.workers:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                match = re.fullmatch(r"socket:\[(\d+)\]", target)
                if match and int(match.group(1)) in inodes:
                    owners[int(match.group(1))] = pid
        return owners

    def connect(self) -> tuple[httpx.Client, int]:
        """A client on ONE new keep-alive connection (one request made) and the worker serving
        it, found as the owner of the one connection that was not there before."""
        before = set(self.connection_owners())
        client = self.api.client(limits=httpx.Limits(max_connections=1,
                                                     max_keepalive_connections=1))
        assert client.get("/healthz").status_code == 200
        new = {inode: pid for inode, pid in self.connection_owners().items()
               if inode not in before}
        assert len(new) == 1, new
        return client, next(iter(new.values()))

    def connect_to(self, pid: int | None = None, *, not_pid: int | None = None,
                   tries: int = 60) -> tuple[httpx.Client, int]:
        """A connection served by worker `pid` (or by any other than `not_pid`)."""
        for _ in range(tries):
            client, owner = self.connect()
            if (pid is None or owner == pid) and owner != not_pid:
                return client, owner
            client.close()
        raise AssertionError(f"no connection reached the wanted worker in {tries} tries "
                             f"(workers {self.workers})")


def scrape(base_url: str) -> str:
    """GET /metrics on a new connection (so successive scrapes may reach either process)."""
    response = httpx.get(f"{base_url}/metrics", timeout=30.0)
    assert response.status_code == 200, response.text
    return response.text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus's text format, or None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        head, _, rest = metric.partition("{")
        if head != name:
            continue
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if got == want:
            return float(value)
    return None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    queue = f"api-workers-{uuid.uuid4().hex[:8]}"
    with fresh_pg_database() as db_url:
        key = create_key(db_url, "acme")  # migrates first: the API processes never do
        env = base_env()
        env.update({"SG_ENV": "dev", "SG_DATA_DIR": str(tmp_path / "data"),
                    "SG_DB__URL": db_url, "SG_REDIS__URL": REDIS_URL,
                    "SG_BROKER__URL": REDIS_URL, "SG_WORKER__QUEUE": queue,
                    "SG_STORAGE__URI": (tmp_path / "artifacts").as_uri()})
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        port = free_port()
        proc = Proc("api", api_cmd(port, workers=WORKERS), env, tmp_path / "api.log")
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(base_url, [proc], timeout_s=90)
            workers = spawned_workers(proc.pid)
            assert len(workers) == WORKERS, (workers, proc.tail())
            yield Server(Api(base_url, key, [proc]), proc, port, workers)
        finally:
            proc.stop()
            client = redis.Redis.from_url(REDIS_URL)
            client.delete(queue, f"_kombu.binding.{queue}")
            client.close()


@pytest.mark.timeout(180)
def test_two_workers_serve_and_metrics_sum_over_both(server: Server) -> None:
    folder = Path(server.proc.wait_for_output("metrics summed over them in", 10).split()[-1])
    assert folder.is_dir()

    # both processes accept and answer connections
    clients = []
    try:
        for pid in server.workers:
            client, owner = server.connect_to(pid)
            clients.append(client)
            assert owner == pid
        # REQUESTS requests to one route, half over each process's connection
        for i in range(REQUESTS):
            r = clients[i % WORKERS].get("/v1/jobs")
            assert r.status_code == 200, r.text
    finally:
        for client in clients:
            client.close()

    # every scrape, whichever process answers it, counts the requests of both
    for _ in range(6):
        text = scrape(server.api.base_url)
        assert sample(text, "streamguard_http_requests_total", method="GET",
                      route="/v1/jobs", status="200") == REQUESTS, text
        assert sample(text, "streamguard_http_request_duration_seconds_count", method="GET",
                      route="/v1/jobs", status="200") == REQUESTS
        # read once, by the answering process: jobs per status, queue depths, streams
        assert sample(text, "streamguard_jobs", status="queued") == 0
        assert sample(text, "streamguard_metrics_source_up", source="database") == 1
        assert sample(text, "streamguard_sse_connections") == 0
        assert text.count("# TYPE streamguard_sse_connections ") == 1
        assert "process_cpu_seconds_total" not in text  # it would describe one process only

    server.proc.stop()
    assert not folder.exists(), "the launcher leaves no metrics folder behind"


@pytest.mark.timeout(180)
def test_a_stream_on_one_worker_gets_the_event_made_through_the_other(server: Server,
                                                                      tmp_path: Path) -> None:
    refs = {}
    for seed, split in enumerate(("train", "val")):
        path = tmp_path / f"{split}.jsonl"
        write_jsonl(synth_examples(40, seed=seed, id_prefix=split), path)
        refs[split] = {"dataset_id": server.api.upload(path, split)["id"]}
    job = server.api.submit(refs)

    streaming, stream_pid = server.connect()
    try:
        with streaming.stream("GET", f"/v1/jobs/{job['id']}/events",
                              timeout=httpx.Timeout(10.0, read=30.0)) as response:
            assert response.status_code == 200
            events = iter_sse(response.iter_lines(), lambda: None)
            first = next(events)  # the replay: the stream is subscribed from here on
            assert first.kind == "status" and first.payload["status"] == "queued", first

            for _ in range(3):  # the open stream, counted by its process, summed by any
                text = scrape(server.api.base_url)
                assert sample(text, "streamguard_sse_connections") == 1, text

            other, other_pid = server.connect_to(not_pid=stream_pid)
            try:
                assert other_pid != stream_pid
                r = other.post(f"/v1/jobs/{job['id']}/cancel")
                assert r.status_code == 200, r.text
            finally:
                other.close()
            for event in events:
                if event.kind == "status":
                    assert event.payload["status"] == "cancelled", event
                    break
            else:
                raise AssertionError("the stream ended without the cancelled status")
    finally:
        streaming.close()

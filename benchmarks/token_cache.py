"""Token cache: a second job's data preparation against the first's (issue 10, item 5).

Two identical jobs prepare the real Devign train and validation splits for the `tiny` scratch
model exactly as `streamguard train` and the worker do (`training.preparation.prepare_data`:
hash, read and check the JSONL, train the byte-level BPE, tokenize both splits). The first finds
the cache empty and fills it; the second uses the same store and finds everything there. Each
job runs in a fresh process (imports excluded from its time), the files already in the page
cache. Target: second <= 10 % of first. The second job's token ids and labels are checked to be
identical to the first's.

    python benchmarks/token_cache.py                      # full train.jsonl + valid.jsonl
    python benchmarks/token_cache.py --rows 3000          # the first 3,000 rows of each file
    python benchmarks/token_cache.py --with-uncached      # also a job with the cache off
    python benchmarks/token_cache.py --s3-endpoint http://127.0.0.1:9000 --s3-bucket sg-bench

Data: ../shared/data/devign/{train,valid}.jsonl, or $STREAMGUARD_DEVIGN_DIR. The store is a
LocalArtifactStore in a temporary folder, or a fresh prefix of an S3 bucket (credentials from
boto3's usual chain). Prints the times and the ratio, then one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from itertools import islice
from pathlib import Path
from typing import Any

DEVIGN = Path(os.environ.get("STREAMGUARD_DEVIGN_DIR",
                             Path(__file__).resolve().parents[2] / "shared/data/devign"))
TARGET_RATIO = 0.10


def open_store(args: argparse.Namespace) -> Any:
    from streamguard.storage import LocalArtifactStore, S3ArtifactStore

    if args.s3_endpoint:
        return S3ArtifactStore(args.s3_bucket, args.s3_prefix, endpoint_url=args.s3_endpoint)
    return LocalArtifactStore(args.store)


def job(args: argparse.Namespace) -> None:
    """One job's data preparation in this process; prints its report and a digest as JSON."""
    from streamguard.spec import TrainConfig
    from streamguard.training.preparation import prepare_data

    config = TrainConfig(model="tiny", max_seq_len=args.max_len,
                         tokenizer_vocab_size=args.vocab_size)
    cache = None if args.no_cache else open_store(args)
    prep = prepare_data(config, {"train": args.train, "validation": args.val}, cache=cache,
                        namespace="benchmark")
    digest = hashlib.sha256()
    for name, split in prep.splits.items():
        digest.update(name.encode())
        digest.update(json.dumps([split.input_ids, split.labels]).encode())
    print(json.dumps({**prep.report.as_dict(), "digest": digest.hexdigest(),
                      "tokens": sum(len(ids) for s in prep.splits.values()
                                    for ids in s.input_ids)}))


def run_job(args: argparse.Namespace, files: dict[str, Path], store: str, *,
            cache: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--job", "--train", str(files["train"]), "--val",
           str(files["val"]), "--store", store, "--max-len", str(args.max_len), "--vocab-size",
           str(args.vocab_size), *(["--no-cache"] if not cache else [])]
    if args.s3_endpoint:
        cmd += ["--s3-endpoint", args.s3_endpoint, "--s3-bucket", args.s3_bucket,
                "--s3-prefix", args.s3_prefix]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        sys.exit(f"job failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cut(src: Path, dst: Path, rows: int | None) -> Path:
    """`src` itself, or its first `rows` lines in `dst`; read once either way (page cache)."""
    if rows is None:
        src.read_bytes()
        return src
    with src.open("rb") as f:
        dst.write_bytes(b"".join(islice(f, rows)))
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None,
                        help="use the first N rows of each split (default: all)")
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--with-uncached", action="store_true",
                        help="also time a job with the cache off (what the miss adds)")
    parser.add_argument("--s3-endpoint", default=None, help="an S3 endpoint (MinIO, moto)")
    parser.add_argument("--s3-bucket", default="sg-token-cache-bench")
    parser.add_argument("--s3-prefix", default="", help=argparse.SUPPRESS)
    # internal: one job in a fresh process
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--val", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        job(args)
        return

    for name in ("train.jsonl", "valid.jsonl"):
        if not (DEVIGN / name).is_file():
            sys.exit(f"Devign data missing: {DEVIGN / name} (set STREAMGUARD_DEVIGN_DIR)")
    with tempfile.TemporaryDirectory(prefix="sg-token-cache-bench-") as tmp:
        work = Path(tmp)
        files = {"train": cut(DEVIGN / "train.jsonl", work / "train.jsonl", args.rows),
                 "val": cut(DEVIGN / "valid.jsonl", work / "valid.jsonl", args.rows)}
        store = str(work / "store")
        if args.s3_endpoint:
            args.s3_prefix = f"bench-{uuid.uuid4().hex[:12]}"  # an empty cache
            open_store(args).ensure_bucket()
            where = f"s3 {args.s3_endpoint} bucket {args.s3_bucket}/{args.s3_prefix}"
        else:
            where = "a LocalArtifactStore in a temporary folder"
        rows = {k: sum(1 for _ in v.open("rb")) for k, v in files.items()}
        print(f"data: {rows['train']} train + {rows['val']} validation rows of Devign; "
              f"tiny scratch model, vocab {args.vocab_size}, max length {args.max_len}; "
              f"cache: {where}")
        uncached = run_job(args, files, store, cache=False) if args.with_uncached else None
        first = run_job(args, files, store, cache=True)
        second = run_job(args, files, store, cache=True)

    ratio = second["seconds"] / first["seconds"]
    identical = first["digest"] == second["digest"] and (
        uncached is None or uncached["digest"] == first["digest"])
    if uncached is not None:
        print(f"cache off:            {uncached['seconds']:8.2f} s")
    print(f"first job  (cache {first['cache']}):  {first['seconds']:8.2f} s   {first['parts']}")
    print(f"second job (cache {second['cache']}):  {second['seconds']:8.2f} s   {second['parts']}")
    print(f"ratio second/first: {ratio:.4f} (target <= {TARGET_RATIO}); "
          f"{first['tokens']:,} tokens; identical splits: {identical}")
    print(json.dumps({
        "benchmark": "token_cache", "rows_train": rows["train"], "rows_val": rows["val"],
        "store": "s3" if args.s3_endpoint else "local", "max_len": args.max_len,
        "vocab_size": args.vocab_size, "first_cache": first["cache"],
        "second_cache": second["cache"], "uncached_prep_s": uncached and uncached["seconds"],
        "first_prep_s": first["seconds"], "second_prep_s": second["seconds"],
        "ratio": round(ratio, 4), "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO and second["cache"] == "hit",
        "identical": identical}))


if __name__ == "__main__":
    main()

"""Connecting to a remote StreamGuard server: the flags and environment every client command
shares (`--url` / STREAMGUARD_URL, `--api-key` / STREAMGUARD_API_KEY) and an httpx client."""

from __future__ import annotations

import argparse
import os

import httpx

from streamguard.errors import StreamGuardError

DEFAULT_URL = "http://127.0.0.1:8000"


def add_remote_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help=f"server URL (default: $STREAMGUARD_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", default=None,
                        help="API key (default: $STREAMGUARD_API_KEY)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for a response (default: 30)")


def server_url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("STREAMGUARD_URL") or DEFAULT_URL).rstrip("/")


def api_key(args: argparse.Namespace) -> str:
    key = args.api_key or os.environ.get("STREAMGUARD_API_KEY")
    if not key:
        raise StreamGuardError("no API key: pass --api-key or set STREAMGUARD_API_KEY "
                               "(`streamguard keys create --tenant NAME` makes one)")
    return str(key)


def make_client(args: argparse.Namespace) -> httpx.Client:
    """An httpx client for the server, authenticated with the key."""
    return httpx.Client(base_url=server_url(args),
                        headers={"Authorization": f"Bearer {api_key(args)}"},
                        timeout=httpx.Timeout(args.timeout, connect=min(args.timeout, 10.0)))

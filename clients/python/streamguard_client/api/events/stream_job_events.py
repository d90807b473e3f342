from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_response import ErrorResponse
from ...types import UNSET, Response, Unset


def _get_kwargs(
    job_id: str,
    *,
    last_event_id_query: int | Unset = UNSET,
    last_event_id_header: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(last_event_id_header, Unset):
        headers["last-event-id"] = last_event_id_header

    params: dict[str, Any] = {}

    params["last_event_id"] = last_event_id_query

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{job_id}/events".format(
            job_id=quote(str(job_id), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> ErrorResponse | str | None:
    if response.status_code == 200:
        response_200 = response.text
        return response_200

    if response.status_code == 401:
        response_401 = ErrorResponse.from_dict(response.json())

        return response_401

    if response.status_code == 404:
        response_404 = ErrorResponse.from_dict(response.json())

        return response_404

    if response.status_code == 422:
        response_422 = ErrorResponse.from_dict(response.json())

        return response_422

    if response.status_code == 429:
        response_429 = ErrorResponse.from_dict(response.json())

        return response_429

    if response.status_code == 500:
        response_500 = ErrorResponse.from_dict(response.json())

        return response_500

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Response[ErrorResponse | str]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    last_event_id_query: int | Unset = UNSET,
    last_event_id_header: str | Unset = UNSET,
) -> Response[ErrorResponse | str]:
    """Stream Job Events

     A Server-Sent Events stream (`text/event-stream`), not JSON.

    Stored events after `Last-Event-ID` are replayed first, then new ones follow live; the stream
    ends after the job's terminal `status` event. Each message is::

        id: <event id>
        event: <kind: status | epoch | step | evaluation | rollback | warning | checkpoint | test>
        data: <the payload as one line of JSON>

    The payload of each kind is the `data` of the matching `JobEventRead` variant (`StatusPayload`,
    `EpochMetrics`, `StepMetrics`, `EvaluationMetrics`, `RollbackPayload`, `WarningPayload`,
    `CheckpointPayload`, `TestMetrics`); `GET
    /v1/jobs/{job_id}/events/history` returns the same events as JSON. Comment lines (`: ping`)
    keep the connection open. To resume, send the last `id` seen as the `Last-Event-ID` header.

    Args:
        job_id (str): A job id (32 hex characters).
        last_event_id_query (int | Unset): Replay events after this id (when the header is
            absent).
        last_event_id_header (str | Unset): Replay events after this id (the `id:` of the last
            message received).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | str]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        last_event_id_query=last_event_id_query,
        last_event_id_header=last_event_id_header,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    job_id: str,
    *,
    client: AuthenticatedClient,
    last_event_id_query: int | Unset = UNSET,
    last_event_id_header: str | Unset = UNSET,
) -> ErrorResponse | str | None:
    """Stream Job Events

     A Server-Sent Events stream (`text/event-stream`), not JSON.

    Stored events after `Last-Event-ID` are replayed first, then new ones follow live; the stream
    ends after the job's terminal `status` event. Each message is::

        id: <event id>
        event: <kind: status | epoch | step | evaluation | rollback | warning | checkpoint | test>
        data: <the payload as one line of JSON>

    The payload of each kind is the `data` of the matching `JobEventRead` variant (`StatusPayload`,
    `EpochMetrics`, `StepMetrics`, `EvaluationMetrics`, `RollbackPayload`, `WarningPayload`,
    `CheckpointPayload`, `TestMetrics`); `GET
    /v1/jobs/{job_id}/events/history` returns the same events as JSON. Comment lines (`: ping`)
    keep the connection open. To resume, send the last `id` seen as the `Last-Event-ID` header.

    Args:
        job_id (str): A job id (32 hex characters).
        last_event_id_query (int | Unset): Replay events after this id (when the header is
            absent).
        last_event_id_header (str | Unset): Replay events after this id (the `id:` of the last
            message received).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | str
    """

    return sync_detailed(
        job_id=job_id,
        client=client,
        last_event_id_query=last_event_id_query,
        last_event_id_header=last_event_id_header,
    ).parsed


async def asyncio_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    last_event_id_query: int | Unset = UNSET,
    last_event_id_header: str | Unset = UNSET,
) -> Response[ErrorResponse | str]:
    """Stream Job Events

     A Server-Sent Events stream (`text/event-stream`), not JSON.

    Stored events after `Last-Event-ID` are replayed first, then new ones follow live; the stream
    ends after the job's terminal `status` event. Each message is::

        id: <event id>
        event: <kind: status | epoch | step | evaluation | rollback | warning | checkpoint | test>
        data: <the payload as one line of JSON>

    The payload of each kind is the `data` of the matching `JobEventRead` variant (`StatusPayload`,
    `EpochMetrics`, `StepMetrics`, `EvaluationMetrics`, `RollbackPayload`, `WarningPayload`,
    `CheckpointPayload`, `TestMetrics`); `GET
    /v1/jobs/{job_id}/events/history` returns the same events as JSON. Comment lines (`: ping`)
    keep the connection open. To resume, send the last `id` seen as the `Last-Event-ID` header.

    Args:
        job_id (str): A job id (32 hex characters).
        last_event_id_query (int | Unset): Replay events after this id (when the header is
            absent).
        last_event_id_header (str | Unset): Replay events after this id (the `id:` of the last
            message received).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | str]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        last_event_id_query=last_event_id_query,
        last_event_id_header=last_event_id_header,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    job_id: str,
    *,
    client: AuthenticatedClient,
    last_event_id_query: int | Unset = UNSET,
    last_event_id_header: str | Unset = UNSET,
) -> ErrorResponse | str | None:
    """Stream Job Events

     A Server-Sent Events stream (`text/event-stream`), not JSON.

    Stored events after `Last-Event-ID` are replayed first, then new ones follow live; the stream
    ends after the job's terminal `status` event. Each message is::

        id: <event id>
        event: <kind: status | epoch | step | evaluation | rollback | warning | checkpoint | test>
        data: <the payload as one line of JSON>

    The payload of each kind is the `data` of the matching `JobEventRead` variant (`StatusPayload`,
    `EpochMetrics`, `StepMetrics`, `EvaluationMetrics`, `RollbackPayload`, `WarningPayload`,
    `CheckpointPayload`, `TestMetrics`); `GET
    /v1/jobs/{job_id}/events/history` returns the same events as JSON. Comment lines (`: ping`)
    keep the connection open. To resume, send the last `id` seen as the `Last-Event-ID` header.

    Args:
        job_id (str): A job id (32 hex characters).
        last_event_id_query (int | Unset): Replay events after this id (when the header is
            absent).
        last_event_id_header (str | Unset): Replay events after this id (the `id:` of the last
            message received).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | str
    """

    return (
        await asyncio_detailed(
            job_id=job_id,
            client=client,
            last_event_id_query=last_event_id_query,
            last_event_id_header=last_event_id_header,
        )
    ).parsed

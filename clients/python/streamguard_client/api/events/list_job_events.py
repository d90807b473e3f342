from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_response import ErrorResponse
from ...models.job_event_page import JobEventPage
from ...types import UNSET, Response, Unset


def _get_kwargs(
    job_id: str,
    *,
    after_id: int | Unset = 0,
    limit: int | Unset = 100,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["after_id"] = after_id

    params["limit"] = limit

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{job_id}/events/history".format(
            job_id=quote(str(job_id), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorResponse | JobEventPage | None:
    if response.status_code == 200:
        response_200 = JobEventPage.from_dict(response.json())

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


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorResponse | JobEventPage]:
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
    after_id: int | Unset = 0,
    limit: int | Unset = 100,
) -> Response[ErrorResponse | JobEventPage]:
    """List Job Events

     The job's stored events, oldest first, typed by kind (what the stream sends).

    Args:
        job_id (str): A job id (32 hex characters).
        after_id (int | Unset):  Default: 0.
        limit (int | Unset): Page size. Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | JobEventPage]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        after_id=after_id,
        limit=limit,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    job_id: str,
    *,
    client: AuthenticatedClient,
    after_id: int | Unset = 0,
    limit: int | Unset = 100,
) -> ErrorResponse | JobEventPage | None:
    """List Job Events

     The job's stored events, oldest first, typed by kind (what the stream sends).

    Args:
        job_id (str): A job id (32 hex characters).
        after_id (int | Unset):  Default: 0.
        limit (int | Unset): Page size. Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | JobEventPage
    """

    return sync_detailed(
        job_id=job_id,
        client=client,
        after_id=after_id,
        limit=limit,
    ).parsed


async def asyncio_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    after_id: int | Unset = 0,
    limit: int | Unset = 100,
) -> Response[ErrorResponse | JobEventPage]:
    """List Job Events

     The job's stored events, oldest first, typed by kind (what the stream sends).

    Args:
        job_id (str): A job id (32 hex characters).
        after_id (int | Unset):  Default: 0.
        limit (int | Unset): Page size. Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | JobEventPage]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        after_id=after_id,
        limit=limit,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    job_id: str,
    *,
    client: AuthenticatedClient,
    after_id: int | Unset = 0,
    limit: int | Unset = 100,
) -> ErrorResponse | JobEventPage | None:
    """List Job Events

     The job's stored events, oldest first, typed by kind (what the stream sends).

    Args:
        job_id (str): A job id (32 hex characters).
        after_id (int | Unset):  Default: 0.
        limit (int | Unset): Page size. Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | JobEventPage
    """

    return (
        await asyncio_detailed(
            job_id=job_id,
            client=client,
            after_id=after_id,
            limit=limit,
        )
    ).parsed

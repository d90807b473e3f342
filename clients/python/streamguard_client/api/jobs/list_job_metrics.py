from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.epoch_metric_page import EpochMetricPage
from ...models.error_response import ErrorResponse
from ...types import UNSET, Response, Unset


def _get_kwargs(
    job_id: str,
    *,
    offset: int | Unset = 0,
    limit: int | Unset = 100,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["offset"] = offset

    params["limit"] = limit

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{job_id}/metrics".format(
            job_id=quote(str(job_id), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> EpochMetricPage | ErrorResponse | None:
    if response.status_code == 200:
        response_200 = EpochMetricPage.from_dict(response.json())

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
) -> Response[EpochMetricPage | ErrorResponse]:
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
    offset: int | Unset = 0,
    limit: int | Unset = 100,
) -> Response[EpochMetricPage | ErrorResponse]:
    """List Metrics

     Per-epoch evaluation records: metrics, prediction distribution, confusion matrix.

    Args:
        job_id (str): A job id (32 hex characters).
        offset (int | Unset):  Default: 0.
        limit (int | Unset): Page size. Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[EpochMetricPage | ErrorResponse]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        offset=offset,
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
    offset: int | Unset = 0,
    limit: int | Unset = 100,
) -> EpochMetricPage | ErrorResponse | None:
    """List Metrics

     Per-epoch evaluation records: metrics, prediction distribution, confusion matrix.

    Args:
        job_id (str): A job id (32 hex characters).
        offset (int | Unset):  Default: 0.
        limit (int | Unset): Page size. Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        EpochMetricPage | ErrorResponse
    """

    return sync_detailed(
        job_id=job_id,
        client=client,
        offset=offset,
        limit=limit,
    ).parsed


async def asyncio_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    offset: int | Unset = 0,
    limit: int | Unset = 100,
) -> Response[EpochMetricPage | ErrorResponse]:
    """List Metrics

     Per-epoch evaluation records: metrics, prediction distribution, confusion matrix.

    Args:
        job_id (str): A job id (32 hex characters).
        offset (int | Unset):  Default: 0.
        limit (int | Unset): Page size. Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[EpochMetricPage | ErrorResponse]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        offset=offset,
        limit=limit,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    job_id: str,
    *,
    client: AuthenticatedClient,
    offset: int | Unset = 0,
    limit: int | Unset = 100,
) -> EpochMetricPage | ErrorResponse | None:
    """List Metrics

     Per-epoch evaluation records: metrics, prediction distribution, confusion matrix.

    Args:
        job_id (str): A job id (32 hex characters).
        offset (int | Unset):  Default: 0.
        limit (int | Unset): Page size. Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        EpochMetricPage | ErrorResponse
    """

    return (
        await asyncio_detailed(
            job_id=job_id,
            client=client,
            offset=offset,
            limit=limit,
        )
    ).parsed

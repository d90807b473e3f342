from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_response import ErrorResponse
from ...models.step_metric_page import StepMetricPage
from ...types import UNSET, Response, Unset


def _get_kwargs(
    job_id: str,
    *,
    after_step: int | Unset = 0,
    limit: int | Unset = 500,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["after_step"] = after_step

    params["limit"] = limit

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{job_id}/steps".format(
            job_id=quote(str(job_id), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorResponse | StepMetricPage | None:
    if response.status_code == 200:
        response_200 = StepMetricPage.from_dict(response.json())

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
) -> Response[ErrorResponse | StepMetricPage]:
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
    after_step: int | Unset = 0,
    limit: int | Unset = 500,
) -> Response[ErrorResponse | StepMetricPage]:
    """List Steps

     Step metrics (training loss, learning rate, gradient norm) in step order, one row per
    logged optimizer step; a resumed attempt replaces the rows it ran again.

    Args:
        job_id (str): A job id (32 hex characters).
        after_step (int | Unset): Only steps after this one (the previous page's
            `next_after_step`). Default: 0.
        limit (int | Unset): Page size. Default: 500.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | StepMetricPage]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        after_step=after_step,
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
    after_step: int | Unset = 0,
    limit: int | Unset = 500,
) -> ErrorResponse | StepMetricPage | None:
    """List Steps

     Step metrics (training loss, learning rate, gradient norm) in step order, one row per
    logged optimizer step; a resumed attempt replaces the rows it ran again.

    Args:
        job_id (str): A job id (32 hex characters).
        after_step (int | Unset): Only steps after this one (the previous page's
            `next_after_step`). Default: 0.
        limit (int | Unset): Page size. Default: 500.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | StepMetricPage
    """

    return sync_detailed(
        job_id=job_id,
        client=client,
        after_step=after_step,
        limit=limit,
    ).parsed


async def asyncio_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    after_step: int | Unset = 0,
    limit: int | Unset = 500,
) -> Response[ErrorResponse | StepMetricPage]:
    """List Steps

     Step metrics (training loss, learning rate, gradient norm) in step order, one row per
    logged optimizer step; a resumed attempt replaces the rows it ran again.

    Args:
        job_id (str): A job id (32 hex characters).
        after_step (int | Unset): Only steps after this one (the previous page's
            `next_after_step`). Default: 0.
        limit (int | Unset): Page size. Default: 500.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | StepMetricPage]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        after_step=after_step,
        limit=limit,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    job_id: str,
    *,
    client: AuthenticatedClient,
    after_step: int | Unset = 0,
    limit: int | Unset = 500,
) -> ErrorResponse | StepMetricPage | None:
    """List Steps

     Step metrics (training loss, learning rate, gradient norm) in step order, one row per
    logged optimizer step; a resumed attempt replaces the rows it ran again.

    Args:
        job_id (str): A job id (32 hex characters).
        after_step (int | Unset): Only steps after this one (the previous page's
            `next_after_step`). Default: 0.
        limit (int | Unset): Page size. Default: 500.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | StepMetricPage
    """

    return (
        await asyncio_detailed(
            job_id=job_id,
            client=client,
            after_step=after_step,
            limit=limit,
        )
    ).parsed

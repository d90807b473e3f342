from http import HTTPStatus
from io import BytesIO
from typing import Any, cast
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.download_checkpoint_name import DownloadCheckpointName
from ...models.error_response import ErrorResponse
from ...types import UNSET, File, Response, Unset


def _get_kwargs(
    job_id: str,
    name: DownloadCheckpointName,
    *,
    range_: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(range_, Unset):
        headers["range"] = range_

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{job_id}/checkpoints/{name}/download".format(
            job_id=quote(str(job_id), safe=""),
            name=quote(str(name), safe=""),
        ),
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Any | ErrorResponse | File | None:
    if response.status_code == 200:
        response_200 = File(payload=BytesIO(response.content))

        return response_200

    if response.status_code == 206:
        response_206 = File(payload=BytesIO(response.content))

        return response_206

    if response.status_code == 307:
        response_307 = cast(Any, None)
        return response_307

    if response.status_code == 401:
        response_401 = ErrorResponse.from_dict(response.json())

        return response_401

    if response.status_code == 404:
        response_404 = ErrorResponse.from_dict(response.json())

        return response_404

    if response.status_code == 416:
        response_416 = ErrorResponse.from_dict(response.json())

        return response_416

    if response.status_code == 422:
        response_422 = ErrorResponse.from_dict(response.json())

        return response_422

    if response.status_code == 429:
        response_429 = ErrorResponse.from_dict(response.json())

        return response_429

    if response.status_code == 500:
        response_500 = ErrorResponse.from_dict(response.json())

        return response_500

    if response.status_code == 502:
        response_502 = ErrorResponse.from_dict(response.json())

        return response_502

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[Any | ErrorResponse | File]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    job_id: str,
    name: DownloadCheckpointName,
    *,
    client: AuthenticatedClient,
    range_: str | Unset = UNSET,
) -> Response[Any | ErrorResponse | File]:
    """Download Checkpoint

     Download the `.tar.gz` model archive of checkpoint `name`.

    Args:
        job_id (str): A job id (32 hex characters).
        name (DownloadCheckpointName): `best` (the best epoch that passed the collapse guard) or
            `last`.
        range_ (str | Unset): Byte ranges of the archive (`bytes=0-1023`), answered 206 when the
            store is local.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any | ErrorResponse | File]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        name=name,
        range_=range_,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    job_id: str,
    name: DownloadCheckpointName,
    *,
    client: AuthenticatedClient,
    range_: str | Unset = UNSET,
) -> Any | ErrorResponse | File | None:
    """Download Checkpoint

     Download the `.tar.gz` model archive of checkpoint `name`.

    Args:
        job_id (str): A job id (32 hex characters).
        name (DownloadCheckpointName): `best` (the best epoch that passed the collapse guard) or
            `last`.
        range_ (str | Unset): Byte ranges of the archive (`bytes=0-1023`), answered 206 when the
            store is local.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Any | ErrorResponse | File
    """

    return sync_detailed(
        job_id=job_id,
        name=name,
        client=client,
        range_=range_,
    ).parsed


async def asyncio_detailed(
    job_id: str,
    name: DownloadCheckpointName,
    *,
    client: AuthenticatedClient,
    range_: str | Unset = UNSET,
) -> Response[Any | ErrorResponse | File]:
    """Download Checkpoint

     Download the `.tar.gz` model archive of checkpoint `name`.

    Args:
        job_id (str): A job id (32 hex characters).
        name (DownloadCheckpointName): `best` (the best epoch that passed the collapse guard) or
            `last`.
        range_ (str | Unset): Byte ranges of the archive (`bytes=0-1023`), answered 206 when the
            store is local.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any | ErrorResponse | File]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        name=name,
        range_=range_,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    job_id: str,
    name: DownloadCheckpointName,
    *,
    client: AuthenticatedClient,
    range_: str | Unset = UNSET,
) -> Any | ErrorResponse | File | None:
    """Download Checkpoint

     Download the `.tar.gz` model archive of checkpoint `name`.

    Args:
        job_id (str): A job id (32 hex characters).
        name (DownloadCheckpointName): `best` (the best epoch that passed the collapse guard) or
            `last`.
        range_ (str | Unset): Byte ranges of the archive (`bytes=0-1023`), answered 206 when the
            store is local.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Any | ErrorResponse | File
    """

    return (
        await asyncio_detailed(
            job_id=job_id,
            name=name,
            client=client,
            range_=range_,
        )
    ).parsed

from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_response import ErrorResponse
from ...models.predict_request import PredictRequest
from ...models.predict_response import PredictResponse
from ...types import Response


def _get_kwargs(
    job_id: str,
    *,
    body: PredictRequest,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/jobs/{job_id}/predict".format(
            job_id=quote(str(job_id), safe=""),
        ),
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorResponse | PredictResponse | None:
    if response.status_code == 200:
        response_200 = PredictResponse.from_dict(response.json())

        return response_200

    if response.status_code == 401:
        response_401 = ErrorResponse.from_dict(response.json())

        return response_401

    if response.status_code == 404:
        response_404 = ErrorResponse.from_dict(response.json())

        return response_404

    if response.status_code == 409:
        response_409 = ErrorResponse.from_dict(response.json())

        return response_409

    if response.status_code == 413:
        response_413 = ErrorResponse.from_dict(response.json())

        return response_413

    if response.status_code == 422:
        response_422 = ErrorResponse.from_dict(response.json())

        return response_422

    if response.status_code == 429:
        response_429 = ErrorResponse.from_dict(response.json())

        return response_429

    if response.status_code == 500:
        response_500 = ErrorResponse.from_dict(response.json())

        return response_500

    if response.status_code == 503:
        response_503 = ErrorResponse.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorResponse | PredictResponse]:
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
    body: PredictRequest,
) -> Response[ErrorResponse | PredictResponse]:
    """Predict

     Probabilities and labels (at the model's threshold) of 1 to 64 functions, from the job's
    best checkpoint. 409 until the job finished with a model; 503 with Retry-After when no
    inference worker answers within the deployment's inference.request_timeout_s.

    Args:
        job_id (str): A job id (32 hex characters).
        body (PredictRequest): Functions to score with the job's best checkpoint.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | PredictResponse]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        body=body,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    job_id: str,
    *,
    client: AuthenticatedClient,
    body: PredictRequest,
) -> ErrorResponse | PredictResponse | None:
    """Predict

     Probabilities and labels (at the model's threshold) of 1 to 64 functions, from the job's
    best checkpoint. 409 until the job finished with a model; 503 with Retry-After when no
    inference worker answers within the deployment's inference.request_timeout_s.

    Args:
        job_id (str): A job id (32 hex characters).
        body (PredictRequest): Functions to score with the job's best checkpoint.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | PredictResponse
    """

    return sync_detailed(
        job_id=job_id,
        client=client,
        body=body,
    ).parsed


async def asyncio_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    body: PredictRequest,
) -> Response[ErrorResponse | PredictResponse]:
    """Predict

     Probabilities and labels (at the model's threshold) of 1 to 64 functions, from the job's
    best checkpoint. 409 until the job finished with a model; 503 with Retry-After when no
    inference worker answers within the deployment's inference.request_timeout_s.

    Args:
        job_id (str): A job id (32 hex characters).
        body (PredictRequest): Functions to score with the job's best checkpoint.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorResponse | PredictResponse]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        body=body,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    job_id: str,
    *,
    client: AuthenticatedClient,
    body: PredictRequest,
) -> ErrorResponse | PredictResponse | None:
    """Predict

     Probabilities and labels (at the model's threshold) of 1 to 64 functions, from the job's
    best checkpoint. 409 until the job finished with a model; 503 with Retry-After when no
    inference worker answers within the deployment's inference.request_timeout_s.

    Args:
        job_id (str): A job id (32 hex characters).
        body (PredictRequest): Functions to score with the job's best checkpoint.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorResponse | PredictResponse
    """

    return (
        await asyncio_detailed(
            job_id=job_id,
            client=client,
            body=body,
        )
    ).parsed

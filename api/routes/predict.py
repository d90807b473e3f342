"""/v1/jobs/{id}/predict: score functions with the job's best checkpoint (an inference worker
runs the model; this process never loads one)."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api.deps import JobDep, SessionDep, SettingsDep
from api.errors import error_response, request_id_of
from api.routes import AUTHED, error_responses
from api.services import predict as service
from api.services.predict import PredictRequest, PredictResponse

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["predictions"],
                   responses=error_responses(*AUTHED, 404))


def get_inference_client(request: Request, settings: SettingsDep) -> Celery:
    """The inference queue's producer and result reader, built on first use (tests override)."""
    state = request.app.state
    if getattr(state, "inference_celery", None) is None:
        state.inference_celery = service.build_inference_client(settings)
    client: Celery = state.inference_celery
    return client


InferenceClientDep = Annotated[Celery, Depends(get_inference_client)]


@router.post("/predict", response_model=PredictResponse, operation_id="predictWithJob",
             responses=error_responses(409, 413, 503))
def predict(body: PredictRequest, job: JobDep, session: SessionDep, settings: SettingsDep,
            client: InferenceClientDep, request: Request) -> PredictResponse | JSONResponse:
    """Probabilities and labels (at the model's threshold) of 1 to 64 functions, from the job's
    best checkpoint. 409 until the job finished with a model; 503 with Retry-After when no
    inference worker answers within the deployment's inference.request_timeout_s."""
    try:
        return service.predict(session=session, settings=settings, client=client, job=job,
                               functions=body.functions)
    except service.InferenceUnavailable as exc:
        return error_response(503, exc.code, exc.message,
                              headers={"Retry-After": str(exc.retry_after_s)},
                              request_id=request_id_of(request.scope))

"""Contains all the data models used in inputs/outputs"""

from .check_read import CheckRead
from .checkpoint_event import CheckpointEvent
from .checkpoint_list import CheckpointList
from .checkpoint_payload import CheckpointPayload
from .checkpoint_payload_name import CheckpointPayloadName
from .checkpoint_read import CheckpointRead
from .checkpoint_read_name import CheckpointReadName
from .class_weighting import ClassWeighting
from .confusion_matrix import ConfusionMatrix
from .dataset_id_ref import DatasetIdRef
from .dataset_page import DatasetPage
from .dataset_read import DatasetRead
from .dataset_stats import DatasetStats
from .dataset_upload import DatasetUpload
from .dataset_uri_ref import DatasetUriRef
from .download_checkpoint_name import DownloadCheckpointName
from .duplicate_stats import DuplicateStats
from .epoch_event import EpochEvent
from .epoch_metric_page import EpochMetricPage
from .epoch_metric_read import EpochMetricRead
from .epoch_metrics import EpochMetrics
from .error_detail import ErrorDetail
from .error_item import ErrorItem
from .error_response import ErrorResponse
from .evaluation_event import EvaluationEvent
from .evaluation_metrics import EvaluationMetrics
from .head_checkpoint_download_name import HeadCheckpointDownloadName
from .health_read import HealthRead
from .job_config import JobConfig
from .job_config_selection_metric import JobConfigSelectionMetric
from .job_config_trackers_item import JobConfigTrackersItem
from .job_create import JobCreate
from .job_datasets import JobDatasets
from .job_event_page import JobEventPage
from .job_page import JobPage
from .job_read import JobRead
from .job_status import JobStatus
from .job_summary import JobSummary
from .length_stats import LengthStats
from .lr_scaling import LrScaling
from .mixed_precision import MixedPrecision
from .on_collapse import OnCollapse
from .predict_checkpoint import PredictCheckpoint
from .predict_item import PredictItem
from .predict_item_label_name import PredictItemLabelName
from .predict_request import PredictRequest
from .predict_response import PredictResponse
from .prediction_distribution import PredictionDistribution
from .progress import Progress
from .readiness_read import ReadinessRead
from .readiness_read_checks import ReadinessReadChecks
from .rollback_event import RollbackEvent
from .rollback_payload import RollbackPayload
from .status_event import StatusEvent
from .status_payload import StatusPayload
from .step_event import StepEvent
from .step_metric_page import StepMetricPage
from .step_metric_read import StepMetricRead
from .step_metrics import StepMetrics
from .test_event import TestEvent
from .test_metrics import TestMetrics
from .threshold_scores import ThresholdScores
from .transition_read import TransitionRead
from .warning_event import WarningEvent
from .warning_payload import WarningPayload
from .warning_payload_source import WarningPayloadSource
from .warning_payload_tracker_type_0 import WarningPayloadTrackerType0

__all__ = (
    "CheckpointEvent",
    "CheckpointList",
    "CheckpointPayload",
    "CheckpointPayloadName",
    "CheckpointRead",
    "CheckpointReadName",
    "CheckRead",
    "ClassWeighting",
    "ConfusionMatrix",
    "DatasetIdRef",
    "DatasetPage",
    "DatasetRead",
    "DatasetStats",
    "DatasetUpload",
    "DatasetUriRef",
    "DownloadCheckpointName",
    "DuplicateStats",
    "EpochEvent",
    "EpochMetricPage",
    "EpochMetricRead",
    "EpochMetrics",
    "ErrorDetail",
    "ErrorItem",
    "ErrorResponse",
    "EvaluationEvent",
    "EvaluationMetrics",
    "HeadCheckpointDownloadName",
    "HealthRead",
    "JobConfig",
    "JobConfigSelectionMetric",
    "JobConfigTrackersItem",
    "JobCreate",
    "JobDatasets",
    "JobEventPage",
    "JobPage",
    "JobRead",
    "JobStatus",
    "JobSummary",
    "LengthStats",
    "LrScaling",
    "MixedPrecision",
    "OnCollapse",
    "PredictCheckpoint",
    "PredictionDistribution",
    "PredictItem",
    "PredictItemLabelName",
    "PredictRequest",
    "PredictResponse",
    "Progress",
    "ReadinessRead",
    "ReadinessReadChecks",
    "RollbackEvent",
    "RollbackPayload",
    "StatusEvent",
    "StatusPayload",
    "StepEvent",
    "StepMetricPage",
    "StepMetricRead",
    "StepMetrics",
    "TestEvent",
    "TestMetrics",
    "ThresholdScores",
    "TransitionRead",
    "WarningEvent",
    "WarningPayload",
    "WarningPayloadSource",
    "WarningPayloadTrackerType0",
)

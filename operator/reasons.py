"""Condition types and CamelCase reasons, shared by conditions, status and Kubernetes Events.

One constant per reason: the same string is written to a condition's ``reason`` and to the
Event the operator posts, so ``kubectl describe`` and ``kubectl get -o yaml`` agree (Kubernetes
API conventions, "Typical status properties"; kueue's ``pkg/workload`` constants).
"""

from __future__ import annotations

from typing import Final

# Condition types.
READY: Final = "Ready"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"

# Reasons: the spec.
INVALID_SPEC: Final = "InvalidSpec"
PROJECT_NOT_FOUND: Final = "ProjectNotFound"
PROJECT_READY: Final = "ProjectReady"

# Reasons: gates before a child exists.
WAITING_FOR_INPUTS: Final = "WaitingForInputs"
INPUT_FAILED: Final = "InputFailed"
QUOTA_EXCEEDED: Final = "QuotaExceeded"
QUEUED: Final = "Queued"

# Reasons: the child batch Job and its pods.
CREATED: Final = "Created"
PENDING: Final = "Pending"
UNSCHEDULABLE: Final = "Unschedulable"
IMAGE_PULL_FAILED: Final = "ImagePullFailed"
RUNNING: Final = "Running"
COMPLETED: Final = "Completed"
BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
POD_FAILURE_POLICY: Final = "PodFailurePolicy"
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
JOB_FAILED: Final = "JobFailed"
CANCELLED: Final = "Cancelled"

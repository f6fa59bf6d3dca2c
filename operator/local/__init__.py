"""The workstation runner: the same Project and Job manifests, no cluster.

Resources are kept as JSON files in a state folder (the role etcd plays in a cluster), and a
local controller reconciles them with the operator's own pure planner
(:func:`cryokube.operator.status.plan_job`): each Job's "child" is a set of local
``cryokube-worker`` processes instead of a batch/v1 Job, so dependency gating, GPU quota,
cancellation and conditions behave exactly as in a cluster.
"""

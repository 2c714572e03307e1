"""kube-maintenance: the shared code behind the maintenance DAGs.

Decisions (what to drain, what is stale, is a rollout complete) are pure functions over plain
dicts; the cluster and cloud calls live in ``k8s`` and ``cloud``; ``dags/`` only wires them up.
Nothing here touches the network or heavy libraries at import time.
"""

"""Each event type's `data`: the resource as the API shows it, by the API's own querysets and
serializers (registered with flowplatform.webhooks.events at start-up)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from executions.upgrade_views import UpgradeJobViewSet
from executions.views import CorrectionViewSet, FlowExecutionViewSet, TaskExecutionViewSet
from flowplatform.webhooks.events import Renderer
from flowplatform.webhooks.models import EventType


def _as_the_api_shows(viewset: Any) -> Renderer:
    def render(ids: list[uuid.UUID]) -> Mapping[uuid.UUID, Any]:
        rows = viewset.queryset.all().filter(pk__in=ids)
        return {row.pk: viewset.serializer_class(row).data for row in rows}

    return render


RENDERERS: dict[str, Renderer] = {
    EventType.TASK_EXECUTION_WAITING: _as_the_api_shows(TaskExecutionViewSet),
    EventType.CORRECTION_APPLIED: _as_the_api_shows(CorrectionViewSet),
    EventType.CORRECTION_SETTLED: _as_the_api_shows(CorrectionViewSet),
    EventType.FLOW_EXECUTION_SETTLED: _as_the_api_shows(FlowExecutionViewSet),
    EventType.UPGRADE_JOB_FINISHED: _as_the_api_shows(UpgradeJobViewSet),
}

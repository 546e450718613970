"""Routes: the API at the seed's paths (no prefix, optional trailing slash), docs, health, admin."""

from django.contrib import admin
from django.urls import path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from executions.upgrade_views import FlowUpgradeViewSet, UpgradeJobViewSet
from executions.views import CorrectionViewSet, FlowExecutionViewSet, TaskExecutionViewSet
from flowplatform import health, metrics_endpoint
from flowplatform.api import schema  # noqa: F401  (registers the Bearer key scheme's description)
from flowplatform.api.views import Router
from flowplatform.middleware import not_found_view
from flowplatform.webhooks.views import WebhookEndpointViewSet
from flows.views import FlowViewSet
from outputs.views import TaskOutputViewSet

router = Router()
router.register("flows", FlowViewSet, basename="flow")
router.register("flows", FlowUpgradeViewSet, basename="flow-upgrade")
router.register("flow-executions", FlowExecutionViewSet, basename="flow-execution")
router.register("task-executions", TaskExecutionViewSet, basename="task-execution")
router.register("task-outputs", TaskOutputViewSet, basename="task-output")
router.register("corrections", CorrectionViewSet, basename="correction")
router.register("upgrade-jobs", UpgradeJobViewSet, basename="upgrade-job")
router.register("webhook-endpoints", WebhookEndpointViewSet, basename="webhook-endpoint")

# The product's name in every admin page's header and title (templates/admin/base_site.html).
admin.site.site_header = admin.site.site_title = "flowplatform"
admin.site.index_title = "Operator console"

urlpatterns = [
    re_path(r"^healthz/?$", health.healthz, name="healthz"),
    re_path(r"^readyz/?$", health.readyz, name="readyz"),
    re_path(r"^metrics/?$", metrics_endpoint.scrape, name="metrics"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("admin/", admin.site.urls),
    # The HTML pages, typed without their slash, redirect to it (the API's own paths never do).
    *(
        path(page, RedirectView.as_view(url=f"/{page}/", query_string=True))
        for page in ("admin", "api/docs", "api/redoc")
    ),
    *router.urls,
    # Anything else is a JSON 404 in the standard shape (never Django's debug page).
    re_path(r"^(?P<path>.*)$", not_found_view),
]

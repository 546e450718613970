"""gunicorn's configuration for flowplatform in production: `gunicorn flowplatform.wsgi` reads it
from the directory it starts in (or pass `-c gunicorn.conf.py`). Environment variables:
HOST (0.0.0.0), PORT (8000), WEB_CONCURRENCY (workers: 2 x cores + 1), GUNICORN_TIMEOUT (30).

Requests gunicorn refuses before Django sees them are answered by gunicorn itself, as a short
HTML page without X-Request-ID: a request line over `limit_request_line` bytes is a 414, a
header over `limit_request_field_size` bytes (or more than `limit_request_fields` headers) a
431, a malformed request a 400. Everything Django answers is in the API's one error shape.
"""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
# A request does its work in one transaction and answers; task attempts run on db_workers.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
# The longest request line the API can need: a path, and a query of filters with id lists
# (?flow_execution_id=…&task_name=…); 8190 bytes is the most gunicorn allows.
limit_request_line = 8190
# Headers: an API key, an Idempotency-Key (≤ 255), X-Correction-Reason (≤ 1,000 characters,
# up to 4,000 bytes of UTF-8), X-Request-ID.
limit_request_field_size = 8190
limit_request_fields = 100
# Bodies are limited by the application (MAX_REQUEST_BODY_BYTES → 413 in the error shape).

accesslog = "-"
errorlog = "-"
access_log_format = (
    '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s user_agent="%(a)s"'
)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# No runtime control socket (gunicorn 25.1+ opens one under $HOME by default): the process
# manager starts and stops the server.
control_socket_disable = True

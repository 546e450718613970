"""Settings of the API benchmark's gunicorn: the product's own, plus the floor endpoint's route
(bench/urls.py). Only `python -m bench api` uses it; the product never routes to the floor."""

from flowplatform.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

"""Cloud Functions entry points: ``webhook``, ``order_worker``, ``scheduler``, ``auth``.

Configuration is read here, once per instance, and handed down. Each
function's dependencies are built on its first request (lazily, thread-safely),
so an instance serving one function never builds another's clients. Nothing is
built at import: functions-framework imports this module in gunicorn's master
process and then forks the worker, and gRPC clients do not survive a fork.
"""

from __future__ import annotations

import os

import functions_framework

from common.clients import Lazy
from common.logs import configure
from common.settings import Settings, load_settings
from functions import runtime
from functions import webhook as webhook_function


def _load() -> Settings:
    settings = load_settings(os.environ)
    configure(settings.log_level)
    return settings


_settings = Lazy(_load)
_webhook = Lazy(lambda: runtime.webhook_deps(_settings.get(), os.environ))


@functions_framework.http
def webhook(request):
    """TradingView alert -> validated, deduped, recorded, queued. See functions/webhook.py."""
    return webhook_function.serve(request, _webhook.get())



_auth = Lazy(lambda: runtime.auth_deps(_settings.get(), os.environ))


@functions_framework.http
def auth(request):
    """The daily Fyers login: /login -> Fyers -> /callback, and / for the session state. See functions/auth.py."""
    from functions import auth as auth_function

    return auth_function.serve(request, _auth.get())


_worker = Lazy(lambda: runtime.worker_deps(_settings.get(), os.environ))


@functions_framework.cloud_event
def order_worker(cloud_event):
    """Order command in, one Fyers order out. See functions/order_worker/.

    Raising (a retryable failure, order released to QUEUED) makes Pub/Sub redeliver.
    """
    from functions import order_worker as worker_function

    worker_function.handle(cloud_event, _worker.get())


_scheduler = Lazy(lambda: runtime.scheduler_deps(_settings.get(), os.environ))


@functions_framework.http
def scheduler(request):
    """Cloud Scheduler's jobs: ?job=session|symbols|reconcile|health. See functions/scheduler.py."""
    from functions import scheduler as scheduler_function

    return scheduler_function.serve(request, _scheduler.get())

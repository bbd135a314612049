"""The application factory: config, database, auth, i18n, CSRF, blueprints and commands."""

from __future__ import annotations

import logging
import os
from typing import Any

from babel import Locale
from flask import Flask, has_request_context, request
from flask_babel import Babel
from flask_smorest import Api
from flask_wtf.csrf import CSRFProtect

from core import auth, errors, request_limits
from core.db import init_db

csrf = CSRFProtect()
babel = Babel()
SUPPORTED_LOCALES = ["zh_CN", "en"]


# Parsed once: Flask-Babel parses a name on every request (Locale.parse), which with Babel's
# locale-name normalisation costs ~0.4 ms of CPU; a Locale instance is passed through as it is.
_LOCALES = {name: Locale.parse(name) for name in SUPPORTED_LOCALES}


def select_locale() -> Locale:
    if not has_request_context():  # commands and jobs speak the default language
        return _LOCALES["zh_CN"]
    wanted = request.args.get("lang") or request.cookies.get("lang")
    if wanted in _LOCALES:
        return _LOCALES[wanted]
    return _LOCALES[request.accept_languages.best_match(SUPPORTED_LOCALES) or "zh_CN"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True, template_folder="templates")
    os.makedirs(app.instance_path, exist_ok=True)
    from core.config import load_config

    app.config.update(load_config(app.instance_path))
    if test_config:
        app.config.update(test_config)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    init_db(app)
    request_limits.register(app)
    babel.init_app(app, locale_selector=select_locale,
                   default_translation_directories="../translations")
    csrf.init_app(app)
    auth.init_auth(app)

    api = Api(app, spec_kwargs={"info": {"description": "feeservice API (see design/API.md)"}})
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    _register_blueprints(app, api)
    errors.register_error_handlers(app)
    _register_commands(app)
    _register_template_helpers(app)

    @app.after_request
    def _security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app


def _register_blueprints(app: Flask, api: Api) -> None:
    from core import anchors_api, anchors_views, api_guard
    from core import views as core_views
    from fees import api as fees_api
    from fees import views as fees_views
    from notices import api as notices_api
    from notices import views as notices_views
    from payments import api as payments_api
    from payments import views as payments_views
    from receipts import api as receipts_api
    from receipts import views as receipts_views
    from reconciliation import api as reconciliation_api
    from reconciliation import views as reconciliation_views
    from webhooks import api as webhooks_api
    from webhooks import views as webhooks_views

    app.register_blueprint(core_views.bp)
    app.register_blueprint(anchors_views.bp)
    api.register_blueprint(anchors_api.blp)  # public GET only: no CSRF to exempt
    app.register_blueprint(fees_views.bp)
    app.register_blueprint(notices_views.bp)
    app.register_blueprint(payments_views.bp)
    app.register_blueprint(receipts_views.bp)
    app.register_blueprint(reconciliation_views.bp)
    app.register_blueprint(webhooks_api.bp)
    app.register_blueprint(webhooks_views.bp)
    csrf.exempt(webhooks_api.bp)  # signed by the bank; no cookies
    for blp in (fees_api.blp, notices_api.blp, receipts_api.blp, payments_api.blp, reconciliation_api.blp):
        csrf.exempt(blp)  # bearer tokens only; no cookies, so no CSRF
        api.register_blueprint(blp)
    api_guard.install(app)


def _register_commands(app: Flask) -> None:
    from core import cli as core_cli
    from fees import cli as fees_cli
    from notices import cli as notices_cli
    from reconciliation import cli as reconciliation_cli
    from webhooks import cli as webhooks_cli

    core_cli.register(app)
    fees_cli.register(app)
    notices_cli.register(app)
    webhooks_cli.register(app)
    reconciliation_cli.register(app)


def _register_template_helpers(app: Flask) -> None:
    from core.clock import local
    from core.money import chinese_capitals, format_yuan

    app.jinja_env.filters["yuan"] = format_yuan
    app.jinja_env.filters["capitals"] = chinese_capitals

    def local_time(moment: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return local(moment, app.config["FEESVC_TIMEZONE"]).strftime(fmt) if moment else ""

    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.globals["centre_name"] = lambda: app.config["FEESVC_CENTRE_NAME"]

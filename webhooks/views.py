"""Admin page: department-system subscriptions and their deliveries (pending, failed, redeliver)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from sqlalchemy import select

from core.auth import actor_of, page_roles, page_user
from core.db import reading, unit_of_work
from core.errors import DomainError
from core.models import Role
from core.outbox import EVENT_TYPES, OutboxEvent
from webhooks import delivery
from webhooks.models import BankClient, WebhookDelivery, WebhookSubscription

bp = Blueprint("webhooks_admin", __name__, template_folder="templates")


class CsrfOnly(FlaskForm):
    pass


@bp.route("/admin/webhooks", methods=["GET", "POST"])
@page_roles(Role.ADMIN)
def index() -> Any:
    secret = None
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        if not CsrfOnly().validate_on_submit():
            flash(_("页面已过期，请刷新后重试。"), "error")
        else:
            try:
                with unit_of_work() as session:
                    _sub, secret = delivery.subscribe(
                        session, current_app.config["FEESVC_AUDIT_KEY"], actor_of(page_user()),
                        name=request.form.get("name", ""), url=request.form.get("url", "").strip(),
                        event_types=request.form.getlist("event_types"))
                flash(_("已登记订阅；签名密钥只显示这一次，请立即交给对方系统。"), "ok")
            except DomainError as error:
                errors = error.extra.get("errors") or {"_": [error.detail or str(error.title)]}
    with reading() as session:
        subscriptions = list(session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)))
        open_deliveries = list(session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.status != "delivered")
            .order_by(WebhookDelivery.id.desc()).limit(200)))
        events = {e.id: e for e in session.scalars(
            select(OutboxEvent).where(OutboxEvent.id.in_([d.event_id for d in open_deliveries])))}
        banks = list(session.scalars(select(BankClient).order_by(BankClient.code)))
        return render_template("webhooks/admin.html", subscriptions=subscriptions, deliveries=open_deliveries,
                               events=events, banks=banks, event_types=EVENT_TYPES, secret=secret, errors=errors,
                               form=request.form, csrf_form=CsrfOnly())


@bp.route("/admin/webhooks/deliveries/<int(max=2147483647):delivery_id>/redeliver", methods=["POST"])
@page_roles(Role.ADMIN)
def redeliver(delivery_id: int) -> Any:
    if CsrfOnly().validate_on_submit():
        try:
            with unit_of_work() as session:
                delivery.redeliver(session, current_app.config["FEESVC_AUDIT_KEY"], actor_of(page_user()),
                                   delivery_id)
            flash(_("已安排重新投递。"), "ok")
        except DomainError as error:
            flash(error.detail or str(error.title), "error")
    return redirect(url_for("webhooks_admin.index"))

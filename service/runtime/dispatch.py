"""Sending a recorded decision's message through its channel's provider (webhook or log)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.store import ContactStore, DispatchInProgress, UnknownDecision
from service.channels import ChannelProvider, LogProvider, OutboundMessage, WebhookProvider
from service.channels import dispatch as dispatch_message
from service.config import Settings
from service.engine import Decision, DispatchOut
from service.metrics import count_dispatch_failure
from service.runtime.errors import Conflict, Rejected
from service.schemas import ProfileIn

__all__ = ["Dispatcher", "channel_providers"]

_SCHEDULE_SLACK = timedelta(seconds=60)


def channel_providers(settings: Settings) -> dict[str, ChannelProvider]:
    """Each configured channel's provider: its webhook if it has a ``provider_url``, else
    one shared :class:`LogProvider`."""
    out: dict[str, ChannelProvider] = {}
    fallback = LogProvider()
    for name, policy in settings.channels.items():
        if policy.provider_url is not None:
            out[name] = WebhookProvider(
                str(policy.provider_url),
                timeout_s=policy.provider_timeout_s,
                max_retries=policy.provider_max_retries,
            )
        else:
            out[name] = fallback
    return out


@dataclass
class Dispatcher:
    """Dispatches decisions (at most once per decision, :func:`service.channels.dispatch`)."""

    settings: Settings
    store: ContactStore
    providers: dict[str, ChannelProvider]

    def _address(self, customer_id: str, ident: str, profile: ProfileIn | None) -> str:
        """Where the channel reaches the customer: the request's identifier, else the
        stored profile's newest one, else the customer id (the provider resolves it)."""
        if profile is not None and ident in profile.identifiers:
            return profile.identifiers[ident]
        stored = self.store.profiles.get(customer_id)
        found = stored.identifiers.get(ident) if stored is not None else None
        return found[0] if found else customer_id

    def dispatch(
        self,
        decision: Decision,
        profile: ProfileIn | None,
        now: datetime,
        clock: Callable[[], datetime] | None = None,
    ) -> DispatchOut:
        """Send the decision's message now, or say why not (hold-out, no contact, not due).
        ``clock`` times the dispatch log and the ``sent`` event (default the wall clock; the
        journey agent's own clock, so a simulated replay counts its caps in its own time)."""
        if decision.holdout:
            return DispatchOut(status="skipped", error="holdout: control group, never sent")
        if not decision.contact or decision.channel is None or decision.message is None:
            return DispatchOut(status="skipped", error="decision does not contact the customer")
        if decision.send_at is not None and decision.send_at > now + _SCHEDULE_SLACK:
            return DispatchOut(
                status="scheduled",
                error=f"send_at {decision.send_at.isoformat()}: call again with this "
                "decision_id at or after it",
            )
        ident = self.settings.channel(decision.channel).identifier
        to = self._address(decision.customer_id, ident, profile)
        message = OutboundMessage(
            decision_id=decision.decision_id,
            customer_id=decision.customer_id,
            channel=decision.channel,
            to=to,
            subject=decision.message.subject,
            body=decision.message.body,
        )
        try:
            provider = self.providers[decision.channel]
            if clock is None:
                result = dispatch_message(self.store, provider, message)
            else:
                result = dispatch_message(self.store, provider, message, clock=clock)
        except UnknownDecision:
            raise Rejected("dispatch needs a recorded decision") from None
        except DispatchInProgress as exc:
            raise Conflict(str(exc)) from None
        if result.status == "failed" and not result.duplicate:
            count_dispatch_failure(decision.channel)
        return DispatchOut(
            status="duplicate" if result.duplicate else result.status,
            attempts=result.attempts,
            error=result.error,
            provider_message_id=result.provider_message_id,
            status_code=result.status_code,
        )

    def close(self) -> None:
        """Close every provider once (several channels may share one)."""
        for provider in {id(p): p for p in self.providers.values()}.values():
            provider.close()

"""A BentoML service that does nothing: the framework's latency floor for the serving benchmark.

Served as ``bentoml serve benchmarks.noop_service:NoopService`` next to the real service, with
the same workers, threads and traffic settings (:data:`service.service.SERVING`), so that
``/decide``'s latency can be stated over what BentoML itself costs on the same machine.
"""

from __future__ import annotations

import bentoml
from starlette.responses import Response

from service.service import SERVING

__all__ = ["NoopService"]


@bentoml.service(name="noop", **SERVING)
class NoopService:
    """Three no-op endpoints, one per way the real service's endpoints run."""

    @bentoml.api(route="/noop")
    async def noop(self) -> dict[str, bool]:
        """Does nothing, the way ``/decide`` runs (on the event loop): the framework's floor."""
        return {"ok": True}

    @bentoml.api(route="/noop_raw")
    async def noop_raw(self) -> dict[str, bool]:
        """Does nothing and answers with a pre-encoded body, as ``/decide`` does: the floor
        without BentoML's output handling (for ``/noop``'s ``dict`` output BentoML 1.4
        rebuilds the output model's JSON schema on every response to pick its media type)."""
        return Response(content=b'{"ok":true}', media_type="application/json")

    @bentoml.api(route="/noop_sync")
    def noop_sync(self) -> dict[str, bool]:
        """Does nothing in a worker thread (how the other endpoints run), for comparison."""
        return {"ok": True}
